// Tests of the arbiter against real iSCSI targets started by the tests (tests/iscsi_fixture.hpp):
// the record format; COMPARE AND WRITE test-and-set on istgt, raced 500 times by two
// processes; a target restart; a target frozen mid-command; unreachable, wrong and corrupt
// LUNs; fencing by persistent reservations; and the PREEMPT fallback on tgtd, which rejects
// COMPARE AND WRITE.
#define BOOST_TEST_MODULE arbiter
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>

#include "tests/iscsi_fixture.hpp"
#include "xenft/arbiter/arbiter.hpp"
#include "xenft/devices/iscsi_store.hpp"

using namespace xenft;
using namespace xenft::arbiter;
namespace utf = boost::unit_test;

namespace {

constexpr std::uint64_t kVm = 42;

boost::test_tools::assertion_result have_istgt(utf::test_unit_id)
{
    const bool ok = testing::have_program("istgt");
    boost::test_tools::assertion_result r(ok);
    r.message() << "istgt is not installed (apt-get install istgt)";
    return r;
}

boost::test_tools::assertion_result have_tgtd(utf::test_unit_id)
{
    const bool ok = testing::have_program("tgtd") && testing::have_program("tgtadm");
    boost::test_tools::assertion_result r(ok);
    r.message() << "tgt is not installed (apt-get install tgt)";
    return r;
}

ArbiterConfig config(const std::string& url, std::uint32_t host, std::uint32_t peer, int timeout_s = 2)
{
    ArbiterConfig c;
    c.lun.url = url;
    c.lun.initiator_name = "iqn.2026-11.test.xenft:host" + std::to_string(host);
    c.lun.isid_qualifier = static_cast<std::uint16_t>(host);
    c.lun.timeout_s = timeout_s;
    c.vm_id = kVm;
    c.host_id = host;
    c.peer_id = peer;
    return c;
}

Arbiter open_or_fail(const ArbiterConfig& c)
{
    auto a = Arbiter::open(c);
    BOOST_TEST_REQUIRE(a.has_value(), (a ? "" : a.error()));
    return std::move(a).value();
}

template <class R>
std::string error_text(const R& r)
{
    return r.has_value() ? std::string() : r.error();
}

} // namespace

// ---- the record ------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(record_round_trips)
{
    const Record r{kVm, 17, 2, 1'790'000'000'000};
    const auto b = encode_record(r);
    auto back = decode_record(b);
    BOOST_TEST_REQUIRE(back.has_value(), error_text(back));
    BOOST_TEST((*back == r));
    BOOST_TEST(to_string(r).find("VM 42, epoch 17, owner host 2, written 2026") == 0, to_string(r));
}

BOOST_AUTO_TEST_CASE(record_decoder_explains_what_is_wrong)
{
    Block zero{};
    BOOST_TEST(error_text(decode_record(zero)).find("run 'xenft arbiter init'") != std::string::npos);
    auto b = encode_record(Record{kVm, 1, 0, 0});
    auto bad = b;
    bad[0] = 'Y';
    BOOST_TEST(error_text(decode_record(bad)).find("bad magic") != std::string::npos);
    bad = b;
    bad[8] = 2;
    BOOST_TEST(error_text(decode_record(bad)).find("version 2") != std::string::npos);
    bad = b;
    bad[20] ^= 1; // epoch changed behind the checksum's back
    BOOST_TEST(error_text(decode_record(bad)).find("checksum mismatch") != std::string::npos);
    bad = b;
    bad[300] = 1;
    BOOST_TEST(error_text(decode_record(bad)).find("reserved bytes") != std::string::npos);
    BOOST_TEST(error_text(decode_record(std::span(b).first(100))).find("100 bytes") != std::string::npos);
    for (std::size_t i = 0; i < 48; ++i) { // every byte of the header matters
        auto c = b;
        c[i] ^= 0x40;
        BOOST_TEST_REQUIRE(!decode_record(c).has_value(), "byte " << i);
    }
}

// ---- COMPARE AND WRITE on istgt --------------------------------------------------------------

BOOST_AUTO_TEST_CASE(istgt_capabilities_are_probed_not_assumed, *utf::precondition(have_istgt))
{
    testing::Istgt t;
    auto a = open_or_fail(config(t.url(), 1, 2));
    BOOST_TEST(a.capabilities().compare_and_write);
    BOOST_TEST(a.capabilities().persistent_reservations);
    BOOST_TEST(a.lun().block_size() == 512u);
}

BOOST_AUTO_TEST_CASE(init_show_and_acquire, *utf::precondition(have_istgt))
{
    testing::Istgt t;
    auto a = open_or_fail(config(t.url(), 1, 2));
    auto b = open_or_fail(config(t.url(), 2, 1));
    BOOST_TEST(error_text(a.read()).find("xenft arbiter init") != std::string::npos);
    auto fresh = a.init(1, false);
    BOOST_TEST_REQUIRE(fresh.has_value(), error_text(fresh));
    BOOST_TEST(error_text(a.init(1, false)).find("use --force") != std::string::npos);
    BOOST_TEST(b.read()->epoch == 1u);

    auto r = a.acquire(1, 0);
    BOOST_TEST((r.outcome == Outcome::won), r.detail);
    BOOST_TEST(r.holder.epoch == 2u);
    BOOST_TEST(r.holder.owner == 1u);
    // Host 2 still believes epoch 1: it loses and learns who holds the record.
    r = b.acquire(1, 0);
    BOOST_TEST((r.outcome == Outcome::lost), r.detail);
    BOOST_TEST_REQUIRE(r.holder_known);
    BOOST_TEST(r.holder.epoch == 2u);
    BOOST_TEST(r.holder.owner == 1u);
    // An attempt whose reply was lost and is retried finds the record already its own.
    r = a.acquire(1, 0);
    BOOST_TEST((r.outcome == Outcome::won), r.detail);
    BOOST_TEST(r.detail.find("already ours") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(two_processes_race_500_times_with_exactly_one_winner, *utf::precondition(have_istgt))
{
    testing::Istgt t;
    {
        auto a = open_or_fail(config(t.url(), 1, 2));
        BOOST_TEST_REQUIRE(a.init(1, true).has_value());
    }
    constexpr int kRounds = 500;
    // Each child: its own initiator, ISID and session. Reads "epoch owner" on its pipe, races,
    // answers "outcome epoch owner".
    struct Child {
        pid_t pid;
        int to, from;
    };
    auto start_child = [&](std::uint32_t host, std::uint32_t peer) {
        int down[2], up[2];
        BOOST_TEST_REQUIRE(::pipe(down) == 0);
        BOOST_TEST_REQUIRE(::pipe(up) == 0);
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::close(down[1]);
            ::close(up[0]);
            // COMPARE AND WRITE alone decides here; fencing (whose PREEMPT istgt misapplies)
            // has its own tests.
            ArbiterConfig c = config(t.url(), host, peer);
            c.fencing = false;
            auto a = Arbiter::open(c);
            if (!a)
                std::fprintf(stderr, "host %u: %s\n", host, a.error().c_str());
            std::uint64_t msg[2];
            while (::read(down[0], msg, sizeof msg) == sizeof msg) {
                std::uint64_t reply[3] = {2, 0, 0};
                if (a) {
                    const auto r = a->acquire(msg[0], static_cast<std::uint32_t>(msg[1]));
                    if (r.outcome == Outcome::unknown)
                        std::fprintf(stderr, "host %u: unknown: %s\n", host, r.detail.c_str());
                    reply[0] = static_cast<std::uint64_t>(r.outcome);
                    reply[1] = r.holder_known ? r.holder.epoch : 0;
                    reply[2] = r.holder_known ? r.holder.owner : 0;
                }
                if (::write(up[1], reply, sizeof reply) != sizeof reply)
                    break;
            }
            ::_exit(0);
        }
        ::close(down[0]);
        ::close(up[1]);
        return Child{pid, down[1], up[0]};
    };
    Child c1 = start_child(1, 2), c2 = start_child(2, 1);
    std::uint64_t epoch = 1, owner = 0;
    int wins[3] = {0, 0, 0};
    for (int round = 0; round < kRounds; ++round) {
        const std::uint64_t go[2] = {epoch, owner};
        BOOST_TEST_REQUIRE(::write(c1.to, go, sizeof go) == static_cast<ssize_t>(sizeof go));
        BOOST_TEST_REQUIRE(::write(c2.to, go, sizeof go) == static_cast<ssize_t>(sizeof go));
        std::uint64_t r1[3], r2[3];
        BOOST_TEST_REQUIRE(::read(c1.from, r1, sizeof r1) == static_cast<ssize_t>(sizeof r1));
        BOOST_TEST_REQUIRE(::read(c2.from, r2, sizeof r2) == static_cast<ssize_t>(sizeof r2));
        const auto o1 = static_cast<Outcome>(r1[0]), o2 = static_cast<Outcome>(r2[0]);
        BOOST_TEST_REQUIRE(((o1 == Outcome::won) != (o2 == Outcome::won)),
                           "round " << round << ": " << outcome_name(o1) << " / " << outcome_name(o2));
        const std::uint64_t winner = o1 == Outcome::won ? 1 : 2;
        const std::uint64_t* loser = winner == 1 ? r2 : r1;
        BOOST_TEST_REQUIRE((static_cast<Outcome>(loser[0]) == Outcome::lost),
                           "round " << round << ": the loser's outcome is " << outcome_name(static_cast<Outcome>(loser[0])));
        BOOST_TEST_REQUIRE(loser[2] == winner, "round " << round << ": the loser names host " << loser[2]);
        BOOST_TEST_REQUIRE(loser[1] == epoch + 1);
        ++wins[winner];
        epoch += 1;
        owner = winner;
    }
    ::close(c1.to), ::close(c2.to);
    ::waitpid(c1.pid, nullptr, 0), ::waitpid(c2.pid, nullptr, 0);
    BOOST_TEST_MESSAGE("500 races: host 1 won " << wins[1] << ", host 2 won " << wins[2]);
    BOOST_TEST(wins[1] + wins[2] == kRounds);
    auto check = open_or_fail(config(t.url(), 3, 1));
    BOOST_TEST(check.read()->epoch == 1u + kRounds);
}

BOOST_AUTO_TEST_CASE(the_record_survives_a_target_restart, *utf::precondition(have_istgt))
{
    testing::Istgt t;
    Record held;
    {
        auto a = open_or_fail(config(t.url(), 1, 2));
        BOOST_TEST_REQUIRE(a.init(7, false).has_value());
        auto r = a.acquire(7, 0);
        BOOST_TEST_REQUIRE((r.outcome == Outcome::won), r.detail);
        held = r.holder;
    }
    t.restart();
    auto b = open_or_fail(config(t.url(), 2, 1));
    auto now = b.read();
    BOOST_TEST_REQUIRE(now.has_value(), error_text(now));
    BOOST_TEST((*now == held));
}

BOOST_AUTO_TEST_CASE(a_target_frozen_mid_command_gives_unknown_within_the_timeout, *utf::precondition(have_istgt))
{
    testing::Istgt t;
    auto a = open_or_fail(config(t.url(), 1, 2, 2));
    BOOST_TEST_REQUIRE(a.init(1, false).has_value());
    t.pause(); // the target stops answering, as a hung array would
    const auto start = std::chrono::steady_clock::now();
    const auto r = a.acquire(1, 0);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    t.resume();
    BOOST_TEST((r.outcome == Outcome::unknown), outcome_name(r.outcome) << ": " << r.detail);
    BOOST_TEST(r.detail.find("no reply within 2 s") != std::string::npos, r.detail);
    BOOST_TEST_MESSAGE("unknown after " << s << " s: " << r.detail);
    BOOST_TEST(s < 3.5); // libiscsi counts whole seconds: a 2 s timeout fires after 1-3 s
    // Nothing was won, and the arbiter recovers once the target answers again.
    auto again = a.acquire(1, 0);
    BOOST_TEST((again.outcome == Outcome::won), again.detail);
}

BOOST_AUTO_TEST_CASE(unreachable_wrong_small_and_corrupt_luns_are_explained, *utf::precondition(have_istgt))
{
    const auto port = testing::free_tcp_port();
    auto r = Arbiter::open(config("iscsi://127.0.0.1:" + std::to_string(port) + "/iqn.2026-11.test.xenft:arbiter/0", 1, 2));
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().find("cannot reach portal 127.0.0.1:" + std::to_string(port) + ": Connection refused") !=
                   std::string::npos,
               r.error());
    BOOST_TEST(r.error().find(std::to_string(port)) != std::string::npos, r.error());
    BOOST_TEST(error_text(Arbiter::open(config("http://example/", 1, 2))).find("iscsi://HOST") != std::string::npos);
    // Portals by host name or in brackets are resolved and tried as the network sees them, not
    // left to libiscsi's "Can not reconnect right now".
    const std::string by_name = error_text(
        Arbiter::open(config("iscsi://localhost:" + std::to_string(port) + "/iqn.2026-11.test.xenft:arbiter/0", 1, 2)));
    BOOST_TEST(by_name.find("cannot reach portal localhost:" + std::to_string(port) + ": Connection refused") !=
                   std::string::npos,
               by_name);
    const std::string unresolvable =
        error_text(Arbiter::open(config("iscsi://no-such-host.invalid/iqn.2026-11.test.xenft:arbiter/0", 1, 2)));
    BOOST_TEST(unresolvable.find("cannot resolve no-such-host.invalid") != std::string::npos, unresolvable);

    testing::Istgt t(1);
    // The target by host name: what an administrator writes in xenft.conf.
    std::string named_url = t.url();
    named_url.replace(named_url.find("127.0.0.1"), 9, "localhost");
    BOOST_TEST(error_text(Arbiter::open(config(named_url, 1, 2))).empty(), named_url);
    auto wrong_lun = Arbiter::open(config(t.url().substr(0, t.url().size() - 1) + "5", 1, 2));
    BOOST_TEST_REQUIRE(!wrong_lun.has_value());
    BOOST_TEST(wrong_lun.error().find("/5") != std::string::npos, wrong_lun.error());
    BOOST_TEST(error_text(Arbiter::open(config(t.url(), 1, 2, 1))).find("timeout must be") != std::string::npos);
    ArbiterConfig small = config(t.url(), 1, 2);
    small.record_lba = 4096; // a 1 MB LUN has 2048 blocks
    BOOST_TEST(error_text(Arbiter::open(small)).find("LUN too small") != std::string::npos);

    auto a = open_or_fail(config(t.url(), 1, 2));
    std::vector<std::uint8_t> garbage(512, 0x5a);
    BOOST_TEST_REQUIRE(a.lun().write(0, garbage).ok());
    const auto got = a.acquire(1, 0);
    BOOST_TEST((got.outcome == Outcome::unknown), got.detail);
    BOOST_TEST(got.detail.find("bad magic") != std::string::npos, got.detail);
    BOOST_TEST(error_text(a.init(1, false)).empty()); // an unreadable block may be initialized
}

// Each host has two sessions on the LUN under its key: the arbiter's and its guest disk's,
// which registers first (xenftd opens the disk, then the node its arbiter). istgt 0.4's
// PREEMPT then drops the winner's disk registration (and one of the loser's): the winner
// went live and its guest's every write got RESERVATION CONFLICT (the lab's Linux, after the
// failover: ext4 aborted its journal). The disk session registers again after the PREEMPT.
BOOST_AUTO_TEST_CASE(the_winners_disk_session_can_write_after_it_fenced_the_peer, *utf::precondition(have_istgt))
{
    testing::Istgt t;
    auto disk_of = [&](std::uint32_t host) {
        auto lun = Lun::connect({t.url(), "iqn.2026-11.test.xenft:host" + std::to_string(host),
                                 static_cast<std::uint16_t>(0x1000 + host), 2});
        BOOST_TEST_REQUIRE(lun.has_value(), (lun ? "" : lun.error()));
        auto store = devices::IscsiStore::open(std::move(lun).value(), 64, 64 * 1024, Arbiter::key_of(host));
        BOOST_TEST_REQUIRE(store.has_value(), (store ? "" : store.error()));
        return std::move(store).value();
    };
    std::vector<std::string> logged;
    auto disk_a = disk_of(1);
    auto a = open_or_fail(config(t.url(), 1, 2));
    a.add_own_session([&] { return disk_a.register_again(); });
    BOOST_TEST_REQUIRE(a.init(1, false).has_value());
    BOOST_TEST_REQUIRE((a.acquire(1, 0).outcome == Outcome::won));
    auto disk_b = disk_of(2);
    disk_b.set_log([&](const std::string& line) { logged.push_back(line); });
    auto b = open_or_fail(config(t.url(), 2, 1));
    std::vector<std::uint8_t> data(4096, 0x5a);
    BOOST_TEST_REQUIRE(disk_b.write(0, data), disk_b.last_error());

    // B takes the VM over without re-registering its disk: what the lab saw.
    auto r = b.acquire(2, 1);
    BOOST_TEST_REQUIRE((r.outcome == Outcome::won), r.detail);
    const bool broken = !disk_b.write(0, data);
    BOOST_TEST_MESSAGE("without add_own_session: the winner's disk " << (broken ? "fenced: " + disk_b.last_error() : "writes"));
    if (broken) {
        BOOST_TEST(disk_b.last_error().find("RESERVATION CONFLICT") != std::string::npos, disk_b.last_error());
        BOOST_TEST_REQUIRE(logged.size() == 1u); // once, with the LUN and the cause
        BOOST_TEST(logged[0].find(t.url()) != std::string::npos, logged[0]);
        BOOST_TEST(logged[0].find("the guest gets I/O errors") != std::string::npos, logged[0]);
    }

    // With it: A, its xenftd started again (the loser was fenced), takes the VM back; then B
    // again, and each winner's disk writes after its fencing.
    b.add_own_session([&] { return disk_b.register_again(); });
    BOOST_TEST_REQUIRE(disk_a.register_again().ok());
    auto a2 = open_or_fail(config(t.url(), 1, 2));
    a2.add_own_session([&] { return disk_a.register_again(); });
    auto back = a2.acquire(3, 2);
    BOOST_TEST_REQUIRE((back.outcome == Outcome::won), back.detail);
    const bool a_wrote = disk_a.write(4096, data);
    BOOST_TEST(a_wrote, disk_a.last_error());
    BOOST_TEST_REQUIRE(disk_b.register_again().ok()); // B's xenftd, started again as a backup
    auto b2 = open_or_fail(config(t.url(), 2, 1));
    b2.add_own_session([&] { return disk_b.register_again(); });
    auto again = b2.acquire(4, 1);
    BOOST_TEST_REQUIRE((again.outcome == Outcome::won), again.detail);
    BOOST_TEST(b2.fence_peer().message.find("disk session") == std::string::npos);
    BOOST_TEST(disk_b.write(0, data), disk_b.last_error());
    BOOST_TEST(disk_b.flush(), disk_b.last_error());
    if (broken) {
        BOOST_TEST_REQUIRE(logged.size() == 2u);
        BOOST_TEST(logged[1].find("requests succeed again after") != std::string::npos, logged[1]);
    }
}

BOOST_AUTO_TEST_CASE(fencing_is_checked_not_trusted_on_istgt, *utf::precondition(have_istgt))
{
    // istgt answers GOOD to a PREEMPT that removes the wrong registration. The arbiter checks
    // the registrations afterwards: either the loser really is fenced, or the winner's result
    // says it is not. Either way the winner keeps its own registration and can write.
    testing::Istgt t;
    auto a = open_or_fail(config(t.url(), 1, 2));
    auto b = open_or_fail(config(t.url(), 2, 1));
    BOOST_TEST_REQUIRE(a.init(1, false).has_value());
    auto r = b.acquire(1, 0);
    BOOST_TEST_REQUIRE((r.outcome == Outcome::won), r.detail);
    std::vector<std::uint8_t> data(512, 1);
    const auto loser_write = a.lun().write(100, data);
    const bool fenced = loser_write.kind == ScsiResult::Kind::reservation_conflict;
    BOOST_TEST_MESSAGE("fenced: " << fenced << "; " << r.detail);
    BOOST_TEST((fenced || r.detail.find("not fenced") != std::string::npos), r.detail);
    BOOST_TEST(b.lun().write(100, data).ok());
    // The loser reads the record and learns who holds it.
    const auto back = a.acquire(1, 0);
    BOOST_TEST((back.outcome == Outcome::lost), back.detail);
    BOOST_TEST(back.holder.owner == 2u);
}

// ---- tgtd: persistent reservations, no COMPARE AND WRITE --------------------------------------

BOOST_AUTO_TEST_CASE(tgtd_rejects_compare_and_write_and_the_arbiter_knows, *utf::precondition(have_tgtd))
{
    testing::Tgtd t;
    auto a = open_or_fail(config(t.url(), 1, 2));
    BOOST_TEST(!a.capabilities().compare_and_write);
    BOOST_TEST(a.capabilities().persistent_reservations);
}

BOOST_AUTO_TEST_CASE(after_preempt_the_losers_write_gets_reservation_conflict, *utf::precondition(have_tgtd))
{
    testing::Tgtd t;
    auto a = open_or_fail(config(t.url(), 1, 2));
    auto b = open_or_fail(config(t.url(), 2, 1));
    BOOST_TEST_REQUIRE(a.lun().pr_reserve(Arbiter::key_of(1)).ok());
    std::vector<std::uint8_t> data(512, 7);
    BOOST_TEST_REQUIRE(a.lun().write(10, data).ok());
    const auto f = b.fence_peer();
    BOOST_TEST_REQUIRE(f.ok(), f.message);
    const auto w = a.lun().write(10, data);
    BOOST_TEST((w.kind == ScsiResult::Kind::reservation_conflict), w.message);
    BOOST_TEST(b.lun().write(10, data).ok());
    // The deposed host can still read the record, and cannot take it back.
    std::vector<std::uint8_t> block;
    BOOST_TEST(a.lun().read(10, block).ok());
    BOOST_TEST_REQUIRE(b.init(5, false).has_value());
    const auto back = a.acquire(5, 0);
    BOOST_TEST((back.outcome == Outcome::lost), back.detail);
    BOOST_TEST(back.detail.find("fenced") != std::string::npos, back.detail);
}

BOOST_AUTO_TEST_CASE(preempt_fallback_has_exactly_one_winner, *utf::precondition(have_tgtd))
{
    testing::Tgtd t;
    {
        auto a = open_or_fail(config(t.url(), 1, 2));
        BOOST_TEST_REQUIRE(a.init(1, false).has_value());
    }
    std::uint64_t epoch = 1;
    std::uint32_t owner = 0;
    for (int round = 0; round < 100; ++round) {
        // Two separate processes race; each reports its outcome as its exit status.
        pid_t pids[2];
        for (std::uint32_t h = 1; h <= 2; ++h) {
            pids[h - 1] = ::fork();
            if (pids[h - 1] == 0) {
                auto a = Arbiter::open(config(t.url(), h, 3 - h));
                ::_exit(a ? static_cast<int>(a->acquire(epoch, owner).outcome) : 9);
            }
        }
        int st[2];
        ::waitpid(pids[0], &st[0], 0);
        ::waitpid(pids[1], &st[1], 0);
        const int o1 = WEXITSTATUS(st[0]), o2 = WEXITSTATUS(st[1]);
        BOOST_TEST_REQUIRE(((o1 == 0) != (o2 == 0)), "round " << round << ": outcomes " << o1 << " and " << o2);
        owner = o1 == 0 ? 1 : 2;
        epoch += 1;
    }
    auto check = open_or_fail(config(t.url(), owner, 3 - owner));
    BOOST_TEST(check.read()->epoch == epoch);
    BOOST_TEST(check.read()->owner == owner);
}

