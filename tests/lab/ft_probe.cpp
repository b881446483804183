// The lab's record/replay controller (tests/lab/smoke.sh runs it in dom0), built from xenft's
// Xen backend code. It puts domains into hvm-patches' FT modes and moves the log, as xenftd
// will between two hosts:
//
//   pair R P       domain R records, domain P (an identical domain) replays; the log goes
//                  from R's ring into P's as it is written; then `compare`
//   record R --log FILE [--ready FILE]
//                  R (created paused, e.g. by `xl create` with ft=, whose hook starts this)
//                  records into FILE until it stops; FILE gets the replay stream; --ready is
//                  created once FT is on, so the hook can let xl unpause the domain
//   replay P --log FILE [--go-live-after N]
//                  P (created paused) replays FILE until it stops; with --go-live-after, only
//                  the first N records (to a whole exit), then P goes live (the backup's
//                  failover) and must run on to its end by itself
//   compare R P    R and P stopped at the same synchronous exit with the same memory and
//                  registers
//   measure R      records R (running or created paused; paused for the switch) for
//                  --timeout-s S seconds or until SIGTERM, then leaves record mode: prints R's
//                  synchronous exits, Xen's records by type, and the log's rate per second as
//                  Xen's records, as xenft's log entries, and compressed as the logging channel
//                  sends it (docs/linux-guest.md's idle-rate figures)
//
// Both domains run the test guest's mode=replay-check, which ends with CLI; HLT: Xen powers the
// domain off there and the lab's configuration preserves it for the comparison.
// Options: --ring-pages N (16), --timeout-s S (600), --memory-mb M (32), --corrupt-tsc K (flip
// a bit of the K-th TSC value on its way: the lab's check that the comparison notices a replay
// that went elsewhere).
// Prints "ft-probe: ..." lines; exits 0 when all matched, 1 when not, 2 on a usage error.
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "xenft/backends/xen/ft_log.hpp"
#include "xenft/backends/xen/xen_log.hpp"
#include "xenft/channel/wire.hpp"
#include "xenft/logformat/stream.hpp"

namespace xen = xenft::backends::xen;
using xenft::Expected;
using xenft::unexpected;

namespace {

struct Options {
    std::string command;
    std::vector<std::uint32_t> domids;
    std::string log_path, ready_path;
    unsigned ring_pages = 16;
    int timeout_s = 600;
    std::uint64_t memory_mb = 32;
    std::uint64_t corrupt_tsc = 0; // 0: none
    std::uint64_t go_live_after = 0; // 0: replay the whole log
};

constexpr const char* kUsage =
    "usage: xenft-ft-probe pair RECORD_DOMID REPLAY_DOMID | record DOMID --log FILE [--ready FILE] |\n"
    "                      replay DOMID --log FILE [--go-live-after N] | compare RECORD_DOMID REPLAY_DOMID |\n"
    "                      measure DOMID\n"
    "       options: --ring-pages N, --timeout-s S, --memory-mb M, --corrupt-tsc K\n";

[[noreturn]] void usage(const std::string& why)
{
    std::fprintf(stderr, "xenft-ft-probe: %s\n%s", why.c_str(), kUsage);
    std::exit(2);
}

std::uint64_t number(const char* s, const std::string& what)
{
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (errno || end == s || *end)
        usage(what + " is not a number: " + s);
    return v;
}

Options parse(int argc, char** argv)
{
    Options o;
    if (argc < 2)
        usage("no command");
    o.command = argv[1];
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--log" && has_value)
            o.log_path = argv[++i];
        else if (a == "--ready" && has_value)
            o.ready_path = argv[++i];
        else if (a == "--ring-pages" && has_value)
            o.ring_pages = static_cast<unsigned>(number(argv[++i], a));
        else if (a == "--timeout-s" && has_value)
            o.timeout_s = static_cast<int>(number(argv[++i], a));
        else if (a == "--memory-mb" && has_value)
            o.memory_mb = number(argv[++i], a);
        else if (a == "--corrupt-tsc" && has_value)
            o.corrupt_tsc = number(argv[++i], a);
        else if (a == "--go-live-after" && has_value)
            o.go_live_after = number(argv[++i], a);
        else if (!a.empty() && a[0] != '-')
            o.domids.push_back(static_cast<std::uint32_t>(number(argv[i], "a domain id")));
        else
            usage("unknown option " + a);
    }
    const std::size_t want = (o.command == "pair" || o.command == "compare") ? 2
                             : (o.command == "record" || o.command == "replay" || o.command == "measure") ? 1 : 0;
    if (!want)
        usage("unknown command " + o.command);
    if (o.domids.size() != want)
        usage(o.command + " takes " + std::to_string(want) + " domain id(s)");
    if ((o.command == "record" || o.command == "replay") && o.log_path.empty())
        usage(o.command + " needs --log FILE");
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

long long ms_since(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
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

enum class DomainState { running, stopped, crashed };

// stopped: the guest reached its end (Xen shut the domain down, the lab preserves it).
Expected<DomainState, std::string> domain_state(const xen::XenControl& xc, std::uint32_t domid)
{
    auto info = xc.domain_info(domid);
    if (!info)
        return unexpected(info.error());
    return info->crashed ? DomainState::crashed : info->shutdown ? DomainState::stopped : DomainState::running;
}

// The recording side: takes what Xen logged and turns it into the replay stream, exit by exit
// (the replaying vCPU must find all values of an exit once it may enter the guest before it)
// with progress records for exits that logged nothing.
class Recorder {
public:
    Recorder(const xen::XenControl& xc, xen::FtSession& session, std::uint64_t corrupt_tsc)
        : xc_(xc), session_(session), corrupt_tsc_(corrupt_tsc) {}

    // Appends what is ready to `stream`; an error when the log is out of order or the domain
    // crashed.
    Expected<bool, std::string> step(std::vector<xen::FtRecord>& stream)
    {
        // `exits` before the records: those of earlier exits are then all in the ring.
        const std::uint64_t exits = session_.ring().exits();
        auto state = domain_state(xc_, session_.domid());
        if (!state)
            return unexpected(state.error());
        if (*state == DomainState::crashed)
            return unexpected(std::string("the recording domain crashed (xl dmesg says why)"));
        const bool stopped = *state == DomainState::stopped;
        const std::size_t before = held_.size();
        if (session_.ring().take(held_, session_.ring().slots()))
            if (auto r = session_.channel().notify(); !r) // room again, should the vCPU wait for it
                return unexpected(r.error());
        const std::uint64_t now = session_.ring().exits();
        for (std::size_t i = before; i < held_.size(); ++i) {
            auto& r = held_[i];
            if (r.exit < last_exit_ || r.exit > now)
                return unexpected("record " + std::to_string(records_ + 1) + " (" + xen::ft_record_type_name(r.type) +
                                  ") has exit " + std::to_string(r.exit) + " after a record of exit " +
                                  std::to_string(last_exit_) + ", with the vCPU at exit " + std::to_string(now));
            last_exit_ = r.exit;
            ++records_;
            if (++by_type_[r.type] == corrupt_tsc_ && r.type == xen::ft_abi::kRecTsc) {
                r.value[0] ^= 1;
                say("changed TSC value " + std::to_string(corrupt_tsc_) + " (exit " + std::to_string(r.exit) + ")");
            }
        }
        // A stopped domain's last exit is complete; otherwise only exits before `exits` are.
        const std::uint64_t passed = stopped ? now : (exits ? exits - 1 : 0);
        std::size_t ready = 0;
        while (ready < held_.size() && held_[ready].exit <= passed)
            ++ready;
        stream.insert(stream.end(), held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(ready));
        held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(ready));
        if (passed > progress_) {
            xen::FtRecord p{};
            p.exit = passed;
            p.type = xen::ft_abi::kRecProgress;
            stream.push_back(p);
            progress_ = passed;
            ++progress_records_;
        }
        stopped_ = stopped;
        return true;
    }

    bool stopped() const { return stopped_; }
    std::string summary() const
    {
        std::string s = std::to_string(records_) + " records (";
        const char* sep = "";
        for (const auto& [type, count] : by_type_) {
            s += sep + std::string(xen::ft_record_type_name(type)) + " " + std::to_string(count);
            sep = ", ";
        }
        return s + ") and " + std::to_string(progress_records_) + " progress records, ring full " +
               std::to_string(session_.ring().full_count()) + " times";
    }
    bool logged_every_kind() const
    {
        return by_type_.count(xen::ft_abi::kRecInject) && by_type_.count(xen::ft_abi::kRecTsc) && by_type_.count(xen::ft_abi::kRecIoRead);
    }
    std::uint64_t exits() const { return session_.ring().exits(); }

private:
    const xen::XenControl& xc_;
    xen::FtSession& session_;
    std::uint64_t corrupt_tsc_;
    std::vector<xen::FtRecord> held_; // records of exits the recorder has not passed yet
    std::map<std::uint16_t, std::uint64_t> by_type_;
    std::uint64_t records_ = 0, progress_records_ = 0, last_exit_ = 0, progress_ = 0;
    bool stopped_ = false;
};

// The replaying side: publishes the stream into the ring whole exits at a time.
class Replayer {
public:
    Replayer(const xen::XenControl& xc, xen::FtSession& session) : xc_(xc), session_(session) {}

    Expected<bool, std::string> feed(std::vector<xen::FtRecord>& stream)
    {
        const std::size_t n = xen::whole_exits_prefix(stream, session_.ring().room());
        const std::size_t put = session_.ring().put(std::span(stream.data(), n));
        stream.erase(stream.begin(), stream.begin() + static_cast<std::ptrdiff_t>(put));
        if (put)
            if (auto r = session_.channel().notify(); !r)
                return unexpected(r.error());
        auto state = domain_state(xc_, session_.domid());
        if (!state)
            return unexpected(state.error());
        if (*state == DomainState::crashed)
            return unexpected("the replaying domain crashed at exit " + std::to_string(session_.ring().exits()) +
                              " (xl dmesg names the record)");
        stopped_ = *state == DomainState::stopped;
        return true;
    }
    bool stopped() const { return stopped_; }
    std::uint64_t unreplayed() const { return session_.ring().produced() - session_.ring().consumed(); }
    std::uint64_t exits() const { return session_.ring().exits(); }

private:
    const xen::XenControl& xc_;
    xen::FtSession& session_;
    bool stopped_ = false;
};

void wait_for_events(std::initializer_list<const xen::FtSession*> sessions)
{
    std::vector<pollfd> fds;
    for (const auto* s : sessions)
        fds.push_back({s->channel().fd(), POLLIN, 0});
    ::poll(fds.data(), fds.size(), 20);
    for (const auto* s : sessions)
        (void)s->channel().acknowledge();
}

struct Handles {
    xen::XenControl xc;
    xen::ForeignMemory fm;
};

Expected<Handles, std::string> open_handles()
{
    auto xc = xen::XenControl::open();
    if (!xc)
        return unexpected(xc.error());
    auto fm = xen::ForeignMemory::open();
    if (!fm)
        return unexpected(fm.error());
    return Handles{std::move(*xc), std::move(*fm)};
}

int compare(const Handles& h, std::uint32_t rec, std::uint32_t rep, std::uint64_t memory_mb)
{
    int failures = 0;
    auto control = xen::FtControl::open();
    if (!control)
        return fail(control.error());
    auto rstate = control->state(rec), pstate = control->state(rep);
    if (!rstate || !pstate)
        return fail(!rstate ? rstate.error() : pstate.error());
    const xen::ft_abi::DomctlFtOp rs = *rstate, ps = *pstate;
    say("synchronous exits: recorder " + std::to_string(rs.sync_exits) + ", replayer " + std::to_string(ps.sync_exits));
    if (rs.sync_exits != ps.sync_exits || rs.sync_exits == 0)
        failures += fail("the domains stopped at different exits (or none counted)");

    auto ma = memory_digest(h.fm, rec, memory_mb), mb = memory_digest(h.fm, rep, memory_mb);
    if (!ma || !mb)
        return fail(!ma ? ma.error() : mb.error());
    say("memory: recorder " + ma->sha256.substr(0, 16) + " (" + std::to_string(ma->pages) + " pages), replayer " +
        mb->sha256.substr(0, 16) + " (" + std::to_string(mb->pages) + " pages)");
    if (ma->sha256 != mb->sha256) {
        std::string pages;
        std::size_t differing = 0;
        for (std::size_t i = 0; i < ma->page_hashes.size(); ++i)
            if (ma->page_hashes[i] != mb->page_hashes[i] && ++differing <= 8) {
                char b[24];
                std::snprintf(b, sizeof b, " %#zx", i);
                pages += b;
            }
        failures += fail("memory differs in " + std::to_string(differing) + " pages (gfn" + pages + ")");
    }
    auto ca = vcpu_state(h.xc, rec), cb = vcpu_state(h.xc, rep);
    if (!ca || !cb)
        return fail(!ca ? ca.error() : cb.error());
    if (const std::string diff = registers_differ(*ca, *cb); !diff.empty())
        failures += fail("vCPU registers differ (recorder/replayer):" + diff);
    else
        say("vCPU registers equal (rip " + std::to_string(ca->user_regs.rip) + ")");
    if (failures)
        return 1;
    say("PASS the replay reached the recorder's exit " + std::to_string(rs.sync_exits) + " with the same memory " +
        ma->sha256.substr(0, 16) + " and registers");
    return 0;
}

int run_pair(const Options& o)
{
    auto h = open_handles();
    if (!h)
        return fail(h.error());
    auto rec = xen::FtSession::enable(h->xc, h->fm, o.domids[0], xen::FtSession::Mode::record, o.ring_pages);
    if (!rec)
        return fail(rec.error());
    auto rep = xen::FtSession::enable(h->xc, h->fm, o.domids[1], xen::FtSession::Mode::replay, o.ring_pages);
    if (!rep)
        return fail(rep.error());
    say("domain " + std::to_string(o.domids[0]) + " records, domain " + std::to_string(o.domids[1]) +
        " replays; rings of " + std::to_string((*rec)->ring().slots()) + " records");
    for (auto d : {o.domids[1], o.domids[0]})
        if (auto r = h->xc.unpause(d); !r)
            return fail(r.error());
    Recorder recorder(h->xc, **rec, o.corrupt_tsc);
    Replayer replayer(h->xc, **rep);
    std::vector<xen::FtRecord> stream;
    const auto start = std::chrono::steady_clock::now();
    bool said_stopped = false;
    while (!replayer.stopped()) {
        if (ms_since(start) > o.timeout_s * 1000LL)
            return fail("timed out after " + std::to_string(o.timeout_s) + " s: recorder at exit " +
                        std::to_string(recorder.exits()) + ", replayer at exit " + std::to_string(replayer.exits()));
        wait_for_events({rec->get(), rep->get()});
        if (auto r = recorder.step(stream); !r)
            return fail(r.error());
        if (recorder.stopped() && !said_stopped) {
            say("recording domain stopped at exit " + std::to_string(recorder.exits()) + " after " +
                std::to_string(ms_since(start)) + " ms; " + recorder.summary());
            said_stopped = true;
        }
        if (auto r = replayer.feed(stream); !r)
            return fail(r.error() + " (the recorder was at exit " + std::to_string(recorder.exits()) + ")");
    }
    say("replaying domain stopped after " + std::to_string(ms_since(start)) + " ms");
    int failures = 0;
    if (!recorder.logged_every_kind())
        failures += fail("the log lacks injections, TSC reads or device reads: the check proves little");
    if (replayer.unreplayed() || !stream.empty())
        failures += fail(std::to_string(replayer.unreplayed() + stream.size()) + " records were not replayed");
    return compare(*h, o.domids[0], o.domids[1], o.memory_mb) | (failures ? 1 : 0);
}

int run_record(const Options& o)
{
    auto h = open_handles();
    if (!h)
        return fail(h.error());
    std::ofstream log(o.log_path, std::ios::binary | std::ios::trunc);
    if (!log)
        return fail("cannot create " + o.log_path + ": " + std::strerror(errno));
    auto rec = xen::FtSession::enable(h->xc, h->fm, o.domids[0], xen::FtSession::Mode::record, o.ring_pages);
    if (!rec)
        return fail(rec.error());
    say("domain " + std::to_string(o.domids[0]) + " records into " + o.log_path);
    if (!o.ready_path.empty() && !std::ofstream(o.ready_path))
        return fail("cannot create " + o.ready_path + ": " + std::strerror(errno));
    Recorder recorder(h->xc, **rec, o.corrupt_tsc);
    std::vector<xen::FtRecord> stream;
    const auto start = std::chrono::steady_clock::now();
    while (!recorder.stopped()) {
        if (ms_since(start) > o.timeout_s * 1000LL)
            return fail("timed out after " + std::to_string(o.timeout_s) + " s at exit " + std::to_string(recorder.exits()));
        wait_for_events({rec->get()});
        if (auto r = recorder.step(stream); !r)
            return fail(r.error());
        log.write(reinterpret_cast<const char*>(stream.data()),
                  static_cast<std::streamsize>(stream.size() * sizeof(xen::FtRecord)));
        stream.clear();
        if (!log.flush())
            return fail("cannot write " + o.log_path + ": " + std::strerror(errno));
    }
    say("recording domain stopped at exit " + std::to_string(recorder.exits()) + "; " + recorder.summary());
    return recorder.logged_every_kind() ? 0 : fail("the log lacks injections, TSC reads or device reads");
}

// After going live: the domain runs by itself (Xen's timers re-armed, its TSC continuing) to the
// guest's end.
int run_live(const xen::XenControl& xc, std::uint32_t domid, std::chrono::steady_clock::time_point start,
             int timeout_s)
{
    for (;;) {
        auto state = domain_state(xc, domid);
        if (!state)
            return fail(state.error());
        if (*state == DomainState::crashed)
            return fail("the domain crashed after going live (xl dmesg says why)");
        if (*state == DomainState::stopped) {
            say("the live domain ran to its end after " + std::to_string(ms_since(start)) + " ms");
            return 0;
        }
        if (ms_since(start) > timeout_s * 1000LL)
            return fail("the live domain did not reach its end within " + std::to_string(timeout_s) +
                        " s (are its timers armed?)");
        ::usleep(20000);
    }
}

int run_replay(const Options& o)
{
    std::ifstream in(o.log_path, std::ios::binary);
    std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (!in.good() && !in.eof())
        return fail("cannot read " + o.log_path);
    if (bytes.size() % sizeof(xen::FtRecord))
        return fail(o.log_path + ": " + std::to_string(bytes.size()) + " bytes is not a whole number of records");
    std::vector<xen::FtRecord> stream(bytes.size() / sizeof(xen::FtRecord));
    std::memcpy(stream.data(), bytes.data(), bytes.size());
    auto h = open_handles();
    if (!h)
        return fail(h.error());
    auto rep = xen::FtSession::enable(h->xc, h->fm, o.domids[0], xen::FtSession::Mode::replay, o.ring_pages);
    if (!rep)
        return fail(rep.error());
    const std::uint32_t domid = o.domids[0];
    if (o.go_live_after)
        stream.resize(xen::whole_exits_prefix(stream, o.go_live_after));
    say("domain " + std::to_string(domid) + " replays " + std::to_string(stream.size()) + " records from " +
        o.log_path + (o.go_live_after ? ", then goes live" : ""));
    if (auto r = h->xc.unpause(domid); !r)
        return fail(r.error());
    Replayer replayer(h->xc, **rep);
    const auto start = std::chrono::steady_clock::now();
    while (!replayer.stopped()) {
        if (ms_since(start) > o.timeout_s * 1000LL)
            return fail("timed out after " + std::to_string(o.timeout_s) + " s at exit " + std::to_string(replayer.exits()));
        if (auto r = replayer.feed(stream); !r)
            return fail(r.error());
        if (o.go_live_after && stream.empty() && replayer.unreplayed() <= 1) {
            // The log is consumed (all but an injection Xen holds back for the next entry,
            // which going live delivers): the failover.
            const std::uint64_t exit = replayer.exits();
            if (auto r = h->xc.pause(domid); !r)
                return fail(r.error());
            auto live = (*rep)->go_live();
            if (auto r = h->xc.unpause(domid); !r)
                return fail(r.error());
            if (!live)
                return fail(live.error());
            if (*live) {
                say("domain " + std::to_string(domid) + " went live at exit " + std::to_string(exit) + " after " +
                    std::to_string(ms_since(start)) + " ms");
                return run_live(h->xc, domid, start, o.timeout_s);
            }
        }
        wait_for_events({rep->get()});
    }
    say("replaying domain stopped at exit " + std::to_string(replayer.exits()) + " after " +
        std::to_string(ms_since(start)) + " ms");
    if (replayer.unreplayed() || !stream.empty())
        return fail(std::to_string(replayer.unreplayed() + stream.size()) + " records were not replayed");
    return 0;
}

volatile sig_atomic_t g_stop = 0;

// The log's rate of a domain as it runs, without a backup: Xen's records go through the same
// translation (XenLogWriter, log frames) and compression (zstd level 1, a batch per step) as
// xenftd's logging channel.
int run_measure(const Options& o)
{
    const std::uint32_t domid = o.domids[0];
    auto h = open_handles();
    if (!h)
        return fail(h.error());
    ::signal(SIGTERM, [](int) { g_stop = 1; });
    ::signal(SIGINT, [](int) { g_stop = 1; });
    if (auto r = h->xc.pause(domid); !r)
        return fail(r.error());
    auto rec = xen::FtSession::enable(h->xc, h->fm, domid, xen::FtSession::Mode::record, o.ring_pages);
    if (auto r = h->xc.unpause(domid); !r)
        return fail(r.error());
    if (!rec)
        return fail(rec.error());
    say("domain " + std::to_string(domid) + " records for " + std::to_string(o.timeout_s) + " s (or until SIGTERM)");
    Recorder recorder(h->xc, **rec, 0);
    xen::XenLogWriter writer;
    xenft::channel::LogCompressor compressor(1);
    std::vector<xen::FtRecord> stream;
    std::vector<xenft::logformat::Entry> entries;
    std::vector<std::uint8_t> wire;
    std::uint64_t seq = 0, ft_bytes = 0, entry_bytes = 0, wire_bytes = 0;
    const std::uint64_t exits_before = (*rec)->ring().exits();
    const auto start = std::chrono::steady_clock::now();
    while (!recorder.stopped() && !g_stop && ms_since(start) < o.timeout_s * 1000LL) {
        wait_for_events({rec->get()});
        if (auto r = recorder.step(stream); !r)
            return fail(r.error());
        entries.clear();
        for (const auto& r : stream)
            writer.write(r, entries);
        for (auto& e : entries)
            e.seq = ++seq;
        ft_bytes += stream.size() * sizeof(xen::FtRecord);
        stream.clear();
        if (entries.empty())
            continue;
        const auto encoded = xenft::logformat::encode_frames(entries, 256);
        entry_bytes += encoded.size();
        wire.clear();
        compressor.compress(encoded, false, wire);
        wire_bytes += wire.size();
    }
    const double s = static_cast<double>(ms_since(start)) / 1000.0;
    const std::uint64_t exits = (*rec)->ring().exits() - exits_before;
    const std::string summary = recorder.summary(); // it reads the ring: before record mode ends
    if (auto r = h->xc.pause(domid); !r)
        return fail(r.error());
    rec->reset(); // record mode off
    if (auto r = h->xc.unpause(domid); !r)
        return fail(r.error());
    auto per_s = [s](double v) { return std::to_string(static_cast<std::uint64_t>(v / s + 0.5)); };
    auto mbit = [s](std::uint64_t bytes) {
        char b[32];
        std::snprintf(b, sizeof b, "%.3f", static_cast<double>(bytes) * 8 / 1e6 / s);
        return std::string(b);
    };
    say("measured domain " + std::to_string(domid) + " for " + std::to_string(static_cast<int>(s + 0.5)) + " s: " +
        std::to_string(exits) + " synchronous exits (" + per_s(static_cast<double>(exits)) + "/s); " +
        summary);
    say("log rate: Xen's records " + mbit(ft_bytes) + " Mbit/s, log entries " + std::to_string(seq) + " (" +
        per_s(static_cast<double>(seq)) + "/s) " + mbit(entry_bytes) + " Mbit/s, on the channel (zstd 1) " +
        mbit(wire_bytes) + " Mbit/s");
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    const Options o = parse(argc, argv);
    if (o.command == "pair")
        return run_pair(o);
    if (o.command == "record")
        return run_record(o);
    if (o.command == "replay")
        return run_replay(o);
    if (o.command == "measure")
        return run_measure(o);
    auto h = open_handles();
    if (!h)
        return fail(h.error());
    return compare(*h, o.domids[0], o.domids[1], o.memory_mb);
}
