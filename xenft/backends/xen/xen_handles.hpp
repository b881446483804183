// RAII owners of the handles of Xen's stable tools libraries that the Xen backend uses:
// libxenctrl (domctls), libxenforeignmemory (guest pages and acquirable resources) and
// libxenevtchn (event channels). Each is closed exactly once; errors name the call and errno.
#pragma once

// Xen's tools headers are C without extern "C" guards.
extern "C" {
#include <xenctrl.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
}

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "xenft/common/expected.hpp"

namespace xenft::backends::xen {

// "what: strerror(errno)", for messages about a failed library call.
std::string errno_text(const std::string& what);

struct XcCloser {
    void operator()(xc_interface* h) const noexcept { xc_interface_close(h); }
};
struct ForeignMemoryCloser {
    void operator()(xenforeignmemory_handle* h) const noexcept { xenforeignmemory_close(h); }
};

class XenControl {
public:
    static Expected<XenControl, std::string> open();
    xc_interface* get() const noexcept { return xc_.get(); }

    // The domain's state, or an error if it does not exist.
    Expected<xc_dominfo_t, std::string> domain_info(std::uint32_t domid) const;
    Expected<bool, std::string> pause(std::uint32_t domid) const;
    Expected<bool, std::string> unpause(std::uint32_t domid) const;
    // As if the guest had shut itself down with `reason` (SHUTDOWN_*): the toolstack then does
    // what the domain's configuration says (on_poweroff=destroy by default).
    Expected<bool, std::string> shut_down(std::uint32_t domid, int reason) const;
    // The last line of Xen's console ring (what `xl dmesg` shows) that names the domain's vCPUs
    // ("d7v0") and contains `text`, without Xen's prefix; empty if the ring has none (it wraps,
    // and Xen's guest_loglvl may leave such lines out).
    std::string console_line(std::uint32_t domid, const std::string& text) const;

private:
    explicit XenControl(xc_interface* h) : xc_(h) {}
    std::unique_ptr<xc_interface, XcCloser> xc_;
};

class ForeignMemory {
public:
    static Expected<ForeignMemory, std::string> open();
    xenforeignmemory_handle* get() const noexcept { return fm_.get(); }

private:
    explicit ForeignMemory(xenforeignmemory_handle* h) : fm_(h) {}
    std::unique_ptr<xenforeignmemory_handle, ForeignMemoryCloser> fm_;
};

// Frames of a domain's acquirable resource (XENMEM_resource_*) mapped into this process.
class ResourceMapping {
public:
    static Expected<ResourceMapping, std::string> map(const ForeignMemory& fm, std::uint32_t domid, unsigned type,
                                                      unsigned id, unsigned long first_frame, unsigned long nr_frames);
    ResourceMapping(ResourceMapping&& o) noexcept;
    ResourceMapping& operator=(ResourceMapping&&) = delete;
    ResourceMapping(const ResourceMapping&) = delete;
    ~ResourceMapping();

    void* address() const noexcept { return address_; }
    std::size_t bytes() const noexcept { return bytes_; }

private:
    ResourceMapping(xenforeignmemory_resource_handle* h, void* address, std::size_t bytes)
        : handle_(h), address_(address), bytes_(bytes) {}
    xenforeignmemory_handle* fm_ = nullptr;
    xenforeignmemory_resource_handle* handle_ = nullptr;
    void* address_ = nullptr;
    std::size_t bytes_ = 0;
};

// Guest-physical pages of a domain mapped into this process (read-only unless asked);
// pages that are not populated are reported in `mapped()` as false.
class GuestPages {
public:
    static Expected<GuestPages, std::string> map_read_only(const ForeignMemory& fm, std::uint32_t domid,
                                                           std::uint64_t first_gfn, std::size_t count)
    {
        return map(fm, domid, first_gfn, count, false);
    }
    static Expected<GuestPages, std::string> map(const ForeignMemory& fm, std::uint32_t domid, std::uint64_t first_gfn,
                                                 std::size_t count, bool writable);
    GuestPages(GuestPages&& o) noexcept;
    GuestPages& operator=(GuestPages&&) = delete;
    GuestPages(const GuestPages&) = delete;
    ~GuestPages();

    std::size_t count() const noexcept { return count_; }
    bool mapped(std::size_t i) const { return errors_[i] == 0; }
    std::span<const std::uint8_t> page(std::size_t i) const;
    // Only for pages mapped writable.
    std::span<std::uint8_t> writable_page(std::size_t i) const;

private:
    GuestPages() = default;
    xenforeignmemory_handle* fm_ = nullptr;
    void* address_ = nullptr;
    std::size_t count_ = 0;
    std::unique_ptr<int[]> errors_;
};

// One interdomain event channel bound to a remote domain's unbound port.
class EventChannel {
public:
    static Expected<EventChannel, std::string> bind(std::uint32_t domid, evtchn_port_t remote_port);
    EventChannel(EventChannel&& o) noexcept;
    EventChannel& operator=(EventChannel&&) = delete;
    EventChannel(const EventChannel&) = delete;
    ~EventChannel();

    evtchn_port_t local_port() const noexcept { return port_; }
    // For poll(2): readable when an event is pending.
    int fd() const;
    Expected<bool, std::string> notify() const;
    // Acknowledges pending events (and unmasks the port) without blocking.
    Expected<bool, std::string> acknowledge() const;

private:
    EventChannel(xenevtchn_handle* h, evtchn_port_t port) : xce_(h), port_(port) {}
    xenevtchn_handle* xce_ = nullptr;
    evtchn_port_t port_ = 0;
};

} // namespace xenft::backends::xen
