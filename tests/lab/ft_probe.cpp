// The lab's record/replay check (tests/lab/smoke.sh runs it in dom0): domain R runs in FT mode
// RECORD, domain P (an identical domain) in mode REPLAY, and this controller forwards R's log
// ring into P's, as xenftd will between two hosts. Both domains run the test guest's
// mode=replay-check, which ends with CLI; HLT (Xen powers the domain off there; the lab's
// configuration preserves it). Then P must have replayed every record, stopped at the same
// synchronous exit, and hold the same memory and registers as R.
//
// usage: xenft-ft-probe RECORD_DOMID REPLAY_DOMID [--ring-pages N] [--timeout-s S] [--memory-mb M]
//                       [--corrupt-tsc K]
// --corrupt-tsc K flips a bit of the K-th TSC value on its way to the replayer: the lab's check
// that this comparison notices a replay that went elsewhere.
// Prints "ft-probe: ..." lines and exits 0 when the replay matched, 1 when it did not, 2 on a
// usage error.
#include <openssl/evp.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "xenft/backends/xen/ft_log.hpp"

namespace xen = xenft::backends::xen;

namespace {

struct Options {
    std::uint32_t record_domid = 0, replay_domid = 0;
    unsigned ring_pages = 16;
    int timeout_s = 600;
    std::uint64_t memory_mb = 32;
    std::uint64_t corrupt_tsc = 0; // 0: none
};

[[noreturn]] void usage(const char* why)
{
    std::fprintf(stderr, "xenft-ft-probe: %s\nusage: xenft-ft-probe RECORD_DOMID REPLAY_DOMID [--ring-pages N] "
                         "[--timeout-s S] [--memory-mb M] [--corrupt-tsc K]\n", why);
    std::exit(2);
}

std::uint64_t number(const char* s, const char* what)
{
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (errno || end == s || *end)
        usage((std::string(what) + " is not a number: " + s).c_str());
    return v;
}

Options parse(int argc, char** argv)
{
    Options o;
    std::vector<std::uint64_t> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if ((a == "--ring-pages" || a == "--timeout-s" || a == "--memory-mb" || a == "--corrupt-tsc") &&
            i + 1 < argc) {
            const std::uint64_t v = number(argv[++i], a.c_str());
            if (a == "--corrupt-tsc")
                o.corrupt_tsc = v;
            else if (a == "--ring-pages")
                o.ring_pages = static_cast<unsigned>(v);
            else if (a == "--timeout-s")
                o.timeout_s = static_cast<int>(v);
            else
                o.memory_mb = v;
        } else if (!a.empty() && a[0] != '-') {
            positional.push_back(number(argv[i], "a domain id"));
        } else {
            usage(("unknown option " + a).c_str());
        }
    }
    if (positional.size() != 2)
        usage("two domain ids are needed");
    o.record_domid = static_cast<std::uint32_t>(positional[0]);
    o.replay_domid = static_cast<std::uint32_t>(positional[1]);
    return o;
}

void say(const std::string& line)
{
    std::printf("ft-probe: %s\n", line.c_str());
    std::fflush(stdout);
}

int fail(const std::string& why)
{
    say("FAIL " + why);
    return 1;
}

std::string hex(const unsigned char* p, std::size_t n)
{
    std::string s;
    char b[3];
    for (std::size_t i = 0; i < n; ++i) {
        std::snprintf(b, sizeof b, "%02x", p[i]);
        s += b;
    }
    return s;
}

// SHA-256 of the domain's populated pages below memory_mb, and the page count.
struct MemoryDigest {
    std::string sha256;
    std::size_t pages = 0;
    std::vector<std::array<unsigned char, 32>> page_hashes;
};

xenft::Expected<MemoryDigest, std::string> memory_digest(const xen::ForeignMemory& fm, std::uint32_t domid,
                                                          std::uint64_t memory_mb)
{
    const std::size_t count = static_cast<std::size_t>(memory_mb * 256);
    auto pages = xen::GuestPages::map_read_only(fm, domid, 0, count);
    if (!pages)
        return xenft::unexpected(pages.error());
    MemoryDigest d;
    d.page_hashes.resize(count);
    EVP_MD_CTX* all = EVP_MD_CTX_new();
    EVP_DigestInit_ex(all, EVP_sha256(), nullptr);
    for (std::size_t i = 0; i < count; ++i) {
        if (!pages->mapped(i))
            continue;
        ++d.pages;
        const auto page = pages->page(i);
        unsigned int n = 0;
        EVP_Digest(page.data(), page.size(), d.page_hashes[i].data(), &n, EVP_sha256(), nullptr);
        const std::uint64_t gfn = i;
        EVP_DigestUpdate(all, &gfn, sizeof gfn);
        EVP_DigestUpdate(all, page.data(), page.size());
    }
    unsigned char out[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(all, out, &n);
    EVP_MD_CTX_free(all);
    d.sha256 = hex(out, n);
    return d;
}

// vCPU 0's registers as Xen saved them at its last exit. (The HVM save record of the CPU is
// not available once the vCPU is down, as it is after the guest's CLI; HLT.)
xenft::Expected<vcpu_guest_context_x86_64_t, std::string> vcpu_state(const xen::XenControl& xc, std::uint32_t domid)
{
    vcpu_guest_context_any_t ctx{};
    if (xc_vcpu_getcontext(xc.get(), domid, 0, &ctx) != 0)
        return xenft::unexpected(xen::errno_text("domain " + std::to_string(domid) + ": cannot read vCPU 0's context"));
    return ctx.x64;
}

std::string registers_differ(const vcpu_guest_context_x86_64_t& a, const vcpu_guest_context_x86_64_t& b)
{
    const std::pair<const char*, std::uint64_t cpu_user_regs_x86_64_t::*> fields[] = {
        {"rip", &cpu_user_regs_x86_64_t::rip}, {"rsp", &cpu_user_regs_x86_64_t::rsp},
        {"rflags", &cpu_user_regs_x86_64_t::rflags}, {"rax", &cpu_user_regs_x86_64_t::rax},
        {"rbx", &cpu_user_regs_x86_64_t::rbx}, {"rcx", &cpu_user_regs_x86_64_t::rcx},
        {"rdx", &cpu_user_regs_x86_64_t::rdx}, {"rsi", &cpu_user_regs_x86_64_t::rsi},
        {"rdi", &cpu_user_regs_x86_64_t::rdi}, {"rbp", &cpu_user_regs_x86_64_t::rbp},
        {"r8", &cpu_user_regs_x86_64_t::r8}, {"r9", &cpu_user_regs_x86_64_t::r9},
        {"r10", &cpu_user_regs_x86_64_t::r10}, {"r11", &cpu_user_regs_x86_64_t::r11},
        {"r12", &cpu_user_regs_x86_64_t::r12}, {"r13", &cpu_user_regs_x86_64_t::r13},
        {"r14", &cpu_user_regs_x86_64_t::r14}, {"r15", &cpu_user_regs_x86_64_t::r15},
    };
    std::string diff;
    char b1[96];
    for (const auto& [name, field] : fields)
        if (a.user_regs.*field != b.user_regs.*field) {
            std::snprintf(b1, sizeof b1, " %s %#llx/%#llx", name,
                          static_cast<unsigned long long>(a.user_regs.*field),
                          static_cast<unsigned long long>(b.user_regs.*field));
            diff += b1;
        }
    for (int cr : {0, 3, 4})
        if (a.ctrlreg[cr] != b.ctrlreg[cr]) {
            std::snprintf(b1, sizeof b1, " cr%d %#llx/%#llx", cr, static_cast<unsigned long long>(a.ctrlreg[cr]),
                          static_cast<unsigned long long>(b.ctrlreg[cr]));
            diff += b1;
        }
    return diff;
}

// Where in `records` the last complete exit group ends, at most `limit` records in: the
// replaying vCPU must find all values of an exit once it may enter the guest before it.
std::size_t whole_exits_prefix(const std::vector<xen::FtRecord>& records, std::size_t limit)
{
    if (limit >= records.size())
        return records.size();
    std::size_t n = limit;
    while (n > 0 && records[n].exit == records[n - 1].exit)
        --n;
    return n;
}

} // namespace

int main(int argc, char** argv)
{
    const Options o = parse(argc, argv);
    auto xc = xen::XenControl::open();
    if (!xc)
        return fail(xc.error());
    auto fm = xen::ForeignMemory::open();
    if (!fm)
        return fail(fm.error());
    auto rec = xen::FtSession::enable(*xc, *fm, o.record_domid, xen::FtSession::Mode::record, o.ring_pages);
    if (!rec)
        return fail(rec.error());
    auto rep = xen::FtSession::enable(*xc, *fm, o.replay_domid, xen::FtSession::Mode::replay, o.ring_pages);
    if (!rep)
        return fail(rep.error());
    xen::FtSession& recorder = **rec;
    xen::FtSession& replayer = **rep;
    say("domain " + std::to_string(o.record_domid) + " records, domain " + std::to_string(o.replay_domid) +
        " replays; rings of " + std::to_string(recorder.ring().slots()) + " records");
    for (auto d : {o.replay_domid, o.record_domid})
        if (auto r = xc->unpause(d); !r)
            return fail(r.error());

    const auto start = std::chrono::steady_clock::now();
    std::vector<xen::FtRecord> pending; // taken from the recorder, not yet in the replayer's ring
    std::map<std::uint16_t, std::uint64_t> by_type;
    std::uint64_t taken = 0, forwarded = 0, progress_sent = 0, last_exit = 0;
    std::uint64_t progress_at = 0; // the recorder has passed exit progress_at - 1 (0: nothing sent)
    bool recorder_done = false, replayer_done = false;
    std::uint64_t recorder_final_exits = 0;
    while (!replayer_done) {
        const auto elapsed = std::chrono::steady_clock::now() - start;
        if (elapsed > std::chrono::seconds(o.timeout_s))
            return fail("timed out after " + std::to_string(o.timeout_s) + " s: recorder at exit " +
                        std::to_string(recorder.ring().exits()) + ", replayer at exit " +
                        std::to_string(replayer.ring().exits()) + ", " + std::to_string(pending.size()) +
                        " records not forwarded");
        pollfd fds[2] = {{recorder.channel().fd(), POLLIN, 0}, {replayer.channel().fd(), POLLIN, 0}};
        ::poll(fds, 2, 20);
        if (auto r = recorder.channel().acknowledge(); !r)
            return fail(r.error());
        if (auto r = replayer.channel().acknowledge(); !r)
            return fail(r.error());

        // The recorder's log. `exits` is read before the records: those of earlier exits are all in.
        const std::uint64_t exits = recorder.ring().exits();
        const std::size_t before = pending.size();
        const std::size_t n = recorder.ring().take(pending, recorder.ring().slots());
        if (n) {
            taken += n;
            if (auto r = recorder.channel().notify(); !r) // room again, should it wait
                return fail(r.error());
        }
        for (std::size_t i = before; i < pending.size(); ++i) {
            const auto& r = pending[i];
            if (r.exit < last_exit || r.exit > recorder.ring().exits())
                return fail("record " + std::to_string(taken - n + (i - before)) + " (" +
                            xen::ft_record_type_name(r.type) + ") has exit " + std::to_string(r.exit) +
                            " after a record of exit " + std::to_string(last_exit) + ", with the vCPU at exit " +
                            std::to_string(recorder.ring().exits()));
            last_exit = r.exit;
            if (++by_type[r.type] == o.corrupt_tsc && r.type == XEN_FT_REC_TSC) {
                pending[i].value[0] ^= 1;
                say("changed TSC value " + std::to_string(o.corrupt_tsc) + " (exit " + std::to_string(r.exit) + ")");
            }
        }
        if (!recorder_done) {
            auto info = xc->domain_info(o.record_domid);
            if (!info)
                return fail(info.error());
            if (info->crashed)
                return fail("the recording domain crashed (xl dmesg says why)");
            if (info->shutdown) {
                // Its last exit is done: take what it logged after `exits` was read.
                recorder.ring().take(pending, recorder.ring().slots());
                for (std::size_t i = before + n; i < pending.size(); ++i)
                    ++by_type[pending[i].type];
                taken = 0;
                for (const auto& [type, count] : by_type)
                    taken += count;
                recorder_done = true;
                recorder_final_exits = recorder.ring().exits();
                say("recording domain stopped at exit " + std::to_string(recorder_final_exits) + " after " +
                    std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()) +
                    " ms; " + std::to_string(taken) + " records, ring full " +
                    std::to_string(recorder.ring().full_count()) + " times");
            }
        }

        // Forward whole exits: everything of exits the recorder has passed, all once it stopped.
        std::size_t ready = pending.size();
        if (!recorder_done)
            while (ready > 0 && pending[ready - 1].exit >= exits)
                --ready;
        const std::size_t fit = whole_exits_prefix(pending, std::min(ready, replayer.ring().room()));
        std::size_t put = replayer.ring().put(std::span(pending.data(), fit));
        pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(put));
        forwarded += put;
        // Progress: with nothing of earlier exits left to forward, the replayer may run up to
        // the exit after the one the recorder has passed.
        const std::uint64_t passed = recorder_done ? recorder_final_exits : (exits ? exits - 1 : 0);
        if ((pending.empty() || pending.front().exit > passed) && passed + 1 > progress_at &&
            replayer.ring().room() > 0) {
            xen::FtRecord p{};
            p.exit = passed;
            p.type = XEN_FT_REC_PROGRESS;
            put += replayer.ring().put(std::span(&p, 1));
            progress_at = passed + 1;
            ++progress_sent;
        }
        if (put)
            if (auto r = replayer.channel().notify(); !r)
                return fail(r.error());

        auto info = xc->domain_info(o.replay_domid);
        if (!info)
            return fail(info.error());
        if (info->crashed)
            return fail("the replaying domain crashed at exit " + std::to_string(replayer.ring().exits()) +
                        " (the recorder was at exit " + std::to_string(recorder.ring().exits()) +
                        "; xl dmesg names the record)");
        replayer_done = info->shutdown;
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    say("replaying domain stopped after " + std::to_string(ms.count()) + " ms; " + std::to_string(forwarded) +
        " records and " + std::to_string(progress_sent) + " progress records forwarded");
    std::string types;
    for (const auto& [type, count] : by_type)
        types += std::string(" ") + xen::ft_record_type_name(type) + " " + std::to_string(count);
    say("recorded:" + types);

    int failures = 0;
    auto rs = recorder.state(), ps = replayer.state();
    if (!rs || !ps)
        return fail(!rs ? rs.error() : ps.error());
    say("synchronous exits: recorder " + std::to_string(rs->sync_exits) + ", replayer " +
        std::to_string(ps->sync_exits));
    if (rs->sync_exits != ps->sync_exits || rs->sync_exits == 0)
        failures += fail("the domains stopped at different exits (or none counted)");
    if (by_type[XEN_FT_REC_INJECT] == 0 || by_type[XEN_FT_REC_TSC] == 0 || by_type[XEN_FT_REC_IO_READ] == 0)
        failures += fail("the log lacks injections, TSC reads or device reads: the check proves little");
    if (replayer.ring().consumed() != replayer.ring().produced())
        failures += fail(std::to_string(replayer.ring().produced() - replayer.ring().consumed()) +
                         " records were not replayed");

    auto ma = memory_digest(*fm, o.record_domid, o.memory_mb), mb = memory_digest(*fm, o.replay_domid, o.memory_mb);
    if (!ma || !mb)
        return fail(!ma ? ma.error() : mb.error());
    say("memory: recorder " + ma->sha256.substr(0, 16) + " (" + std::to_string(ma->pages) + " pages), replayer " +
        mb->sha256.substr(0, 16) + " (" + std::to_string(mb->pages) + " pages)");
    if (ma->sha256 != mb->sha256) {
        std::string pages;
        int shown = 0;
        for (std::size_t i = 0; i < ma->page_hashes.size() && shown < 8; ++i)
            if (ma->page_hashes[i] != mb->page_hashes[i]) {
                char b[24];
                std::snprintf(b, sizeof b, " %#zx", i);
                pages += b;
                ++shown;
            }
        std::size_t differing = 0, last = 0;
        for (std::size_t i = 0; i < ma->page_hashes.size(); ++i)
            if (ma->page_hashes[i] != mb->page_hashes[i])
                ++differing, last = i;
        failures += fail("memory differs in " + std::to_string(differing) + " pages, the last " + std::to_string(last) + ", first pages (gfn):" + pages);
    }
    auto ca = vcpu_state(*xc, o.record_domid), cb = vcpu_state(*xc, o.replay_domid);
    if (!ca || !cb)
        return fail(!ca ? ca.error() : cb.error());
    if (const std::string diff = registers_differ(*ca, *cb); !diff.empty())
        failures += fail("vCPU registers differ (recorder/replayer):" + diff);
    else
        say("vCPU registers equal (rip " + std::to_string(ca->user_regs.rip) + ")");
    if (failures)
        return 1;
    say("PASS the replay reached the recorder's exit " + std::to_string(rs->sync_exits) + " with the same memory " +
        ma->sha256.substr(0, 16) + " and registers");
    return 0;
}
