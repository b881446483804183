// Xen's log-dirty mode for a domain, as Xen's own migration uses it: the pages the guest (or
// Xen on its behalf) wrote since the last look. The live copy of a protected domain sends all
// memory while the guest runs, then, round by round, what was written meanwhile, so that the
// final pause only has the last round's pages to send (ft_domain.hpp).
//
// Writes xenft's device models make through their foreign mappings are not in Xen's log:
// XenGuestMemory tracks those itself.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xenft/backends/xen/xen_handles.hpp"

namespace xenft::backends::xen {

class DirtyLog {
public:
    // Turns log-dirty mode on for the domain's first `pages` pages.
    static Expected<DirtyLog, std::string> enable(const XenControl& xc, std::uint32_t domid, std::uint64_t pages);
    DirtyLog(DirtyLog&& o) noexcept;
    DirtyLog& operator=(DirtyLog&&) = delete;
    DirtyLog(const DirtyLog&) = delete;
    ~DirtyLog(); // log-dirty mode off, the bitmap freed

    // The pages written since enable() or the last take(), in order; the log starts over.
    Expected<std::vector<std::uint64_t>, std::string> take();

private:
    DirtyLog(const XenControl& xc, std::uint32_t domid, std::uint64_t pages) : xc_(&xc), domid_(domid), pages_(pages) {}
    int bitmap_pages() const;

    const XenControl* xc_;
    std::uint32_t domid_;
    std::uint64_t pages_;
    xc_hypercall_buffer_t bitmap_{};
    bool on_ = false;
};

} // namespace xenft::backends::xen
