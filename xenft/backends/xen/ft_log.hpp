// The controller's side of hvm-patches' deterministic record and replay (XEN_DOMCTL_ft_op):
// FtSession puts a paused single-vCPU HVM/PVH domain into mode RECORD or REPLAY, maps its log
// ring (the acquirable resource XENMEM_resource_ft_ring) and binds its event channel; FtRing
// consumes what Xen recorded on the primary and produces what Xen replays on the backup.
// The ring's layout is Xen's public/hvm/ft.h.
#pragma once

// xenctrl.h (through xen_handles.hpp) first: it declares the tools build ft.h is for.
#include "xenft/backends/xen/xen_handles.hpp"

extern "C" {
#include <xen/hvm/ft.h>
}

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"

namespace xenft::backends::xen {

using FtRecord = xen_ft_record;

class FtRing {
public:
    // Checks the header Xen wrote (magic, version, record size, slots fitting the mapping).
    static Expected<FtRing, std::string> attach(void* base, std::size_t bytes);

    // Xen's count of the vCPU's synchronous exits. Read before produced(): every record of an
    // earlier exit is then in the ring.
    std::uint64_t exits() const;
    std::uint64_t produced() const;
    std::uint64_t consumed() const;
    // Times Xen found the ring full (the recording vCPU then waits for the controller).
    std::uint64_t full_count() const;
    std::size_t slots() const noexcept { return nr_slots_; }

    // RECORD: moves up to `max` records into `out` and frees their slots.
    std::size_t take(std::vector<FtRecord>& out, std::size_t max);
    // REPLAY: writes as many of `records` as fit and publishes them with one update of prod
    // (Xen wants the records of one exit published together).
    std::size_t put(std::span<const FtRecord> records);
    std::size_t room() const;

private:
    FtRing(xen_ft_ring* header, FtRecord* slots, std::size_t nr_slots)
        : header_(header), slots_(slots), nr_slots_(nr_slots) {}
    xen_ft_ring* header_;
    FtRecord* slots_;
    std::size_t nr_slots_;
};

class FtSession {
public:
    enum class Mode : std::uint32_t { record = XEN_DOMCTL_FT_MODE_RECORD, replay = XEN_DOMCTL_FT_MODE_REPLAY };

    // The domain must be paused. ring_pages: a power of two, 2..XEN_DOMCTL_FT_MAX_RING_PAGES.
    static Expected<std::unique_ptr<FtSession>, std::string> enable(const XenControl& xc, const ForeignMemory& fm,
                                                                    std::uint32_t domid, Mode mode,
                                                                    unsigned ring_pages);
    // Unbinds and unmaps, then returns the domain to mode OFF (unless it went live or is gone).
    ~FtSession();
    FtSession(const FtSession&) = delete;
    FtSession& operator=(const FtSession&) = delete;

    std::uint32_t domid() const noexcept { return domid_; }
    FtRing& ring() { return *ring_; }
    const EventChannel& channel() const { return *channel_; }
    // XEN_DOMCTL_FT_OP_GET: mode, ring size and the vCPU's synchronous exits.
    Expected<xen_domctl_ft_op, std::string> state() const;
    // REPLAY: leave replay once the log is consumed ("busy" while records remain).
    Expected<bool, std::string> go_live();

private:
    FtSession(const XenControl& xc, std::uint32_t domid) : xc_(xc), domid_(domid) {}
    const XenControl& xc_;
    std::uint32_t domid_;
    bool enabled_ = false;
    std::optional<ResourceMapping> mapping_;
    std::optional<FtRing> ring_;
    std::optional<EventChannel> channel_;
};

const char* ft_record_type_name(std::uint16_t type);

// The longest prefix of `records` that ends on a whole exit and has at most `limit` records
// (Xen wants the records of one exit published together).
std::size_t whole_exits_prefix(std::span<const FtRecord> records, std::size_t limit);

} // namespace xenft::backends::xen
