#include "xenft/backends/xen/dirty_log.hpp"

#include <utility>

namespace xenft::backends::xen {

namespace {

constexpr std::uint64_t kBitsPerPage = 4096 * 8;

// What DECLARE_HYPERCALL_BUFFER sets up (its designated initialisers are C only).
xc_hypercall_buffer_t empty_buffer()
{
    xc_hypercall_buffer_t b{};
    b.hbuf = nullptr;
    b.param_shadow = nullptr;
    b.dir = 0;
    b.ubuf = reinterpret_cast<void*>(~std::uintptr_t{0});
    b.sz = 0;
    return b;
}

} // namespace

int DirtyLog::bitmap_pages() const
{
    return static_cast<int>((pages_ + kBitsPerPage - 1) / kBitsPerPage);
}

Expected<DirtyLog, std::string> DirtyLog::enable(const XenControl& xc, std::uint32_t domid, std::uint64_t pages)
{
    const std::string who = "domain " + std::to_string(domid);
    DirtyLog log(xc, domid, pages);
    log.bitmap_ = empty_buffer();
    if (!xc__hypercall_buffer_alloc_pages(xc.get(), &log.bitmap_, log.bitmap_pages()))
        return unexpected(errno_text(who + ": cannot allocate the dirty bitmap"));
    if (xc_shadow_control(xc.get(), domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, nullptr, 0) != 0)
        return unexpected(errno_text(who + ": cannot turn log-dirty mode on"));
    log.on_ = true;
    return log;
}

DirtyLog::DirtyLog(DirtyLog&& o) noexcept
    : xc_(o.xc_), domid_(o.domid_), pages_(o.pages_), bitmap_(std::exchange(o.bitmap_, empty_buffer())),
      on_(std::exchange(o.on_, false))
{
}

DirtyLog::~DirtyLog()
{
    if (on_)
        (void)xc_shadow_control(xc_->get(), domid_, XEN_DOMCTL_SHADOW_OP_OFF, nullptr, 0);
    if (bitmap_.hbuf)
        xc__hypercall_buffer_free_pages(xc_->get(), &bitmap_, bitmap_pages());
}

Expected<std::vector<std::uint64_t>, std::string> DirtyLog::take()
{
    xc_shadow_op_stats_t stats{};
    if (xc_logdirty_control(xc_->get(), domid_, XEN_DOMCTL_SHADOW_OP_CLEAN, &bitmap_, pages_, 0, &stats) < 0)
        return unexpected(errno_text("domain " + std::to_string(domid_) + ": cannot read the dirty bitmap"));
    const auto* words = static_cast<const unsigned long*>(bitmap_.hbuf);
    constexpr std::uint64_t kBits = sizeof(unsigned long) * 8;
    std::vector<std::uint64_t> dirty;
    for (std::uint64_t w = 0; w * kBits < pages_; ++w) {
        unsigned long bits = words[w];
        while (bits) {
            const std::uint64_t page = w * kBits + static_cast<std::uint64_t>(__builtin_ctzl(bits));
            if (page < pages_)
                dirty.push_back(page);
            bits &= bits - 1;
        }
    }
    return dirty;
}

} // namespace xenft::backends::xen
