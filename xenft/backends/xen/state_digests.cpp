#include "xenft/backends/xen/state_digests.hpp"

#include <chrono>

namespace xenft::backends::xen {

std::string hex(const Digest& d)
{
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (std::uint8_t b : d) {
        s += digits[b >> 4];
        s += digits[b & 15];
    }
    return s;
}

Expected<std::unique_ptr<StateDigests>, std::string> StateDigests::start(XenDeviceModel& dm)
{
    auto log = DirtyLog::enable(dm.control(), dm.domid(), dm.memory().page_count());
    if (!log)
        return unexpected(log.error());
    dm.memory().track_writes(true);
    return std::unique_ptr<StateDigests>(new StateDigests(dm, std::move(log).value()));
}

StateDigests::StateDigests(XenDeviceModel& dm, DirtyLog log)
    : dm_(dm), dirty_(std::move(log)), pages_(dm.memory().page_count())
{
}

StateDigests::~StateDigests()
{
    dm_.memory().track_writes(false);
}

Expected<DigestTaken, std::string> StateDigests::take()
{
    const auto began = std::chrono::steady_clock::now();
    const std::string who = "domain " + std::to_string(dm_.domid());
    auto written = dirty_.take();
    if (!written)
        return unexpected(written.error());
    XenGuestMemory& mem = dm_.memory();
    const auto round = pages_.update(mem.take_written(std::move(written).value()),
                                     [&mem](std::uint64_t gfn) { return mem.page(gfn); });

    vcpu_guest_context_any_t ctx{};
    if (xc_vcpu_getcontext(dm_.control().get(), dm_.domid(), 0, &ctx) != 0)
        return unexpected(errno_text(who + ": cannot read vCPU 0's registers"));
    const auto& r = ctx.x64.user_regs;
    const std::uint64_t regs[] = {r.rip, r.rflags, r.rsp, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi,
                                  r.rbp, r.r8,     r.r9,  r.r10, r.r11, r.r12, r.r13, r.r14, r.r15};
    std::vector<std::uint8_t> rest(reinterpret_cast<const std::uint8_t*>(regs),
                                   reinterpret_cast<const std::uint8_t*>(regs) + sizeof regs);
    const std::vector<std::uint8_t> devices = dm_.bus().save_state();
    rest.insert(rest.end(), devices.begin(), devices.end());

    DigestTaken t;
    t.digest = pages_.digest(rest);
    t.pages_hashed = round.written + round.swept;
    t.covered = pages_.covered();
    t.pages = pages_.pages();
    t.unlogged = round.unlogged;
    t.unlogged_pages = round.unlogged_pages;
    t.us = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - began).count());
    return t;
}

Expected<DigestTaken, std::string> take_digest(std::unique_ptr<StateDigests>& digests, XenDeviceModel& dm)
{
    if (!digests) {
        auto started = StateDigests::start(dm);
        if (!started)
            return unexpected(started.error());
        digests = std::move(started).value();
    }
    return digests->take();
}

} // namespace xenft::backends::xen
