// The controller's side of hvm-patches' deterministic record and replay (XEN_DOMCTL_ft_op):
// FtControl issues the FT domctl; FtSession puts a paused single-vCPU HVM/PVH domain into mode
// RECORD or REPLAY, maps its log ring (the acquirable resource XENMEM_resource_ft_ring) and
// binds its event channel; FtRing consumes what Xen recorded on the primary and produces what
// Xen replays on the backup. The interface is ft_abi.hpp's copy of the patches' public headers,
// so this builds against Debian's stock libxen-dev.
#pragma once

// xenctrl.h (through xen_handles.hpp) first: ft_abi.hpp checks itself against the patched
// domctl.h when that is what xenctrl.h brought in.
#include "xenft/backends/xen/xen_handles.hpp"
#include "xenft/backends/xen/ft_abi.hpp"

extern "C" {
#include <xencall.h>
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

using FtRecord = ft_abi::Record;

struct XencallCloser {
    void operator()(xencall_handle* h) const noexcept { xencall_close(h); }
};

// XEN_DOMCTL_ft_op through libxencall (Xen's stable hypercall library), as libxenctrl's own
// do_domctl() issues a domctl: stock libxenctrl has no call for it. Errors name the domain, the
// operation and errno.
class FtControl {
public:
    static Expected<FtControl, std::string> open();

    // Enters RECORD or REPLAY with a ring of ring_pages; returns the event channel's port.
    Expected<std::uint32_t, std::string> enable(std::uint32_t domid, std::uint32_t mode, unsigned ring_pages) const;
    Expected<bool, std::string> disable(std::uint32_t domid) const;
    // Mode, ring size and the vCPU's synchronous exits.
    Expected<ft_abi::DomctlFtOp, std::string> state(std::uint32_t domid) const;
    // Leaves REPLAY (false while records remain: EBUSY), then saves and restores the domain's
    // HVM context so Xen re-arms its timers from the guest's registers.
    Expected<bool, std::string> go_live(const XenControl& xc, std::uint32_t domid) const;

private:
    explicit FtControl(xencall_handle* h) : xcall_(h) {}
    // The domctl's result, or errno.
    Expected<ft_abi::DomctlFtOp, int> call(std::uint32_t domid, const ft_abi::DomctlFtOp& op) const;
    std::unique_ptr<xencall_handle, XencallCloser> xcall_;
};

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
    FtRing(ft_abi::RingHeader* header, FtRecord* slots, std::size_t nr_slots)
        : header_(header), slots_(slots), nr_slots_(nr_slots) {}
    ft_abi::RingHeader* header_;
    FtRecord* slots_;
    std::size_t nr_slots_;
};

class FtSession {
public:
    enum class Mode : std::uint32_t { record = ft_abi::kModeRecord, replay = ft_abi::kModeReplay };

    // The domain must be paused. ring_pages: a power of two, 2..ft_abi::kMaxRingPages.
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
    Expected<ft_abi::DomctlFtOp, std::string> state() const;
    // REPLAY: leave replay once the log is consumed ("busy" while records remain).
    Expected<bool, std::string> go_live();

private:
    FtSession(const XenControl& xc, FtControl control, std::uint32_t domid)
        : xc_(xc), control_(std::move(control)), domid_(domid) {}
    const XenControl& xc_;
    FtControl control_;
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
