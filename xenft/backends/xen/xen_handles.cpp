#include "xenft/backends/xen/xen_handles.hpp"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "xenft/backends/xen/xen_console.hpp"

namespace xenft::backends::xen {

std::string errno_text(const std::string& what)
{
    return what + ": " + std::strerror(errno);
}

Expected<XenControl, std::string> XenControl::open()
{
    xc_interface* h = xc_interface_open(nullptr, nullptr, 0);
    if (!h)
        return unexpected(errno_text("cannot open libxenctrl (is this dom0 with privcmd loaded?)"));
    return XenControl(h);
}

Expected<xc_dominfo_t, std::string> XenControl::domain_info(std::uint32_t domid) const
{
    xc_dominfo_t info{};
    if (xc_domain_getinfo(xc_.get(), domid, 1, &info) != 1 || info.domid != domid)
        return unexpected("domain " + std::to_string(domid) + ": no such domain");
    return info;
}

Expected<bool, std::string> XenControl::pause(std::uint32_t domid) const
{
    if (xc_domain_pause(xc_.get(), domid) != 0)
        return unexpected(errno_text("domain " + std::to_string(domid) + ": cannot pause"));
    return true;
}

Expected<bool, std::string> XenControl::unpause(std::uint32_t domid) const
{
    if (xc_domain_unpause(xc_.get(), domid) != 0)
        return unexpected(errno_text("domain " + std::to_string(domid) + ": cannot unpause"));
    return true;
}

Expected<bool, std::string> XenControl::shut_down(std::uint32_t domid, int reason) const
{
    if (xc_domain_shutdown(xc_.get(), domid, reason) != 0)
        return unexpected(errno_text("domain " + std::to_string(domid) + ": cannot shut down"));
    return true;
}

std::string XenControl::console_line(std::uint32_t domid, const std::string& text) const
{
    // The whole ring, neither cleared nor read incrementally: xl dmesg still shows it all.
    std::vector<char> ring(1 << 20);
    unsigned int chars = static_cast<unsigned int>(ring.size());
    std::uint32_t index = 0;
    if (xc_readconsolering(xc_.get(), ring.data(), &chars, 0, 0, &index) != 0)
        return {};
    return console_line_about(std::string_view(ring.data(), std::min<std::size_t>(chars, ring.size())), domid, text);
}

Expected<ForeignMemory, std::string> ForeignMemory::open()
{
    xenforeignmemory_handle* h = xenforeignmemory_open(nullptr, 0);
    if (!h)
        return unexpected(errno_text("cannot open libxenforeignmemory"));
    return ForeignMemory(h);
}

Expected<ResourceMapping, std::string> ResourceMapping::map(const ForeignMemory& fm, std::uint32_t domid, unsigned type,
                                                            unsigned id, unsigned long first_frame,
                                                            unsigned long nr_frames)
{
    void* address = nullptr;
    xenforeignmemory_resource_handle* h = xenforeignmemory_map_resource(
        fm.get(), static_cast<domid_t>(domid), type, id, first_frame, nr_frames, &address, PROT_READ | PROT_WRITE, 0);
    if (!h)
        return unexpected(errno_text("domain " + std::to_string(domid) + ": cannot map resource " +
                                     std::to_string(type) + " (" + std::to_string(nr_frames) + " frames)"));
    ResourceMapping m(h, address, nr_frames * XC_PAGE_SIZE);
    m.fm_ = fm.get();
    return m;
}

ResourceMapping::ResourceMapping(ResourceMapping&& o) noexcept
    : fm_(std::exchange(o.fm_, nullptr)), handle_(std::exchange(o.handle_, nullptr)),
      address_(std::exchange(o.address_, nullptr)), bytes_(std::exchange(o.bytes_, 0))
{
}

ResourceMapping::~ResourceMapping()
{
    if (handle_)
        xenforeignmemory_unmap_resource(fm_, handle_);
}

Expected<GuestPages, std::string> GuestPages::map(const ForeignMemory& fm, std::uint32_t domid, std::uint64_t first_gfn,
                                                  std::size_t count, bool writable)
{
    std::vector<xen_pfn_t> gfns(count);
    for (std::size_t i = 0; i < count; ++i)
        gfns[i] = first_gfn + i;
    GuestPages pages;
    pages.errors_ = std::make_unique<int[]>(count);
    pages.address_ = xenforeignmemory_map(fm.get(), domid, writable ? PROT_READ | PROT_WRITE : PROT_READ, count, gfns.data(),
                                          pages.errors_.get());
    if (!pages.address_)
        return unexpected(errno_text("domain " + std::to_string(domid) + ": cannot map " + std::to_string(count) +
                                     " guest pages"));
    pages.fm_ = fm.get();
    pages.count_ = count;
    return pages;
}

GuestPages::GuestPages(GuestPages&& o) noexcept
    : fm_(std::exchange(o.fm_, nullptr)), address_(std::exchange(o.address_, nullptr)),
      count_(std::exchange(o.count_, 0)), errors_(std::move(o.errors_))
{
}

GuestPages::~GuestPages()
{
    if (address_)
        xenforeignmemory_unmap(fm_, address_, count_);
}

std::span<const std::uint8_t> GuestPages::page(std::size_t i) const
{
    return {static_cast<const std::uint8_t*>(address_) + i * XC_PAGE_SIZE, XC_PAGE_SIZE};
}

std::span<std::uint8_t> GuestPages::writable_page(std::size_t i) const
{
    return {static_cast<std::uint8_t*>(address_) + i * XC_PAGE_SIZE, XC_PAGE_SIZE};
}

Expected<EventChannel, std::string> EventChannel::bind(std::uint32_t domid, evtchn_port_t remote_port)
{
    xenevtchn_handle* h = xenevtchn_open(nullptr, 0);
    if (!h)
        return unexpected(errno_text("cannot open libxenevtchn"));
    xenevtchn_port_or_error_t local = xenevtchn_bind_interdomain(h, domid, remote_port);
    if (local < 0) {
        std::string e = errno_text("domain " + std::to_string(domid) + ": cannot bind event channel port " +
                                   std::to_string(remote_port));
        xenevtchn_close(h);
        return unexpected(std::move(e));
    }
    // Non-blocking, so that acknowledge() can drain what is pending and stop.
    const int fd = xenevtchn_fd(h);
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        std::string e = errno_text("cannot make the event channel device non-blocking");
        xenevtchn_unbind(h, static_cast<evtchn_port_t>(local));
        xenevtchn_close(h);
        return unexpected(std::move(e));
    }
    return EventChannel(h, static_cast<evtchn_port_t>(local));
}

EventChannel::EventChannel(EventChannel&& o) noexcept
    : xce_(std::exchange(o.xce_, nullptr)), port_(std::exchange(o.port_, 0))
{
}

EventChannel::~EventChannel()
{
    if (xce_) {
        xenevtchn_unbind(xce_, port_);
        xenevtchn_close(xce_);
    }
}

int EventChannel::fd() const
{
    return xenevtchn_fd(xce_);
}

Expected<bool, std::string> EventChannel::notify() const
{
    if (xenevtchn_notify(xce_, port_) != 0)
        return unexpected(errno_text("cannot notify event channel port " + std::to_string(port_)));
    return true;
}

Expected<bool, std::string> EventChannel::acknowledge() const
{
    // xenevtchn_pending reads one pending port per call, -1 (EAGAIN) once none is left; a
    // port stays masked until it is unmasked.
    for (;;) {
        xenevtchn_port_or_error_t p = xenevtchn_pending(xce_);
        if (p < 0)
            break;
        if (xenevtchn_unmask(xce_, static_cast<evtchn_port_t>(p)) != 0)
            return unexpected(errno_text("cannot unmask event channel port " + std::to_string(p)));
    }
    return true;
}

} // namespace xenft::backends::xen
