// End-to-end tests of a fault-tolerant pair on the KVM backend, in one process: two nodes
// (xenft/daemon/node.*) with real parts between them: the logging channel over TLS 1.3 on
// loopback, authenticated UDP heartbeats, the arbiter and the guest's disk on a real iSCSI
// LUN (istgt, started here), and the guest's NIC on a real TAP interface that clients reach.
// A "kill" destroys a node without a word to its peer, as a dead host says nothing.
// Scenarios, each repeated: the primary dies under client load (the backup goes live, no
// acknowledged request is lost, the clients' history stays consistent); the backup dies (the
// primary wins the test-and-set and carries on alone); a host that comes back joins as the
// backup through a live copy of the running VM, and the pair then survives the death of either
// host again (re-protection after a failover, both ways).
// Needs /dev/kvm, a TAP interface (root) and istgt.
#define BOOST_TEST_MODULE pair
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <random>
#include <thread>

#include "tests/pair_fixture.hpp"

using namespace xenft;
using namespace xenft::testing;
namespace utf = boost::unit_test;

namespace {

constexpr int kRepeats = 5;

boost::test_tools::assertion_result need_pair_parts(utf::test_unit_id)
{
    std::string missing;
    if (!testing::have_kvm())
        missing = "this machine has no usable /dev/kvm";
    else if (!testing::have_tap())
        missing = "cannot create a TAP interface here (needs /dev/net/tun and CAP_NET_ADMIN)";
    else if (!testing::have_program("istgt"))
        missing = "istgt is not installed (apt-get install istgt)";
    boost::test_tools::assertion_result r(missing.empty());
    r.message() << missing;
    return r;
}

} // namespace

namespace {

// Every request the clients made was answered, and their histories form one.
void expect_answered_and_consistent(const std::vector<KvCall>& calls, Logbook& logbook)
{
    std::size_t unanswered = 0;
    for (const auto& c : calls)
        unanswered += !c.answered;
    BOOST_TEST(unanswered == 0u);
    const auto verdict = check_history(calls);
    BOOST_TEST(!verdict.has_value(), verdict.value_or("") << "\n" << logbook.all());
}

} // namespace

BOOST_AUTO_TEST_CASE(the_primary_dies_under_load_and_the_backup_goes_live, *utf::precondition(need_pair_parts))
{
    for (int run = 1; run <= kRepeats; ++run) {
        BOOST_TEST_CONTEXT("run " << run)
        {
            PairRig rig;
            auto backup = start_node(rig.node_config(2, PairRig::Start::backup));
            auto primary = start_node(rig.node_config(1, PairRig::Start::primary));
            Clients clients(rig.net, 1000u * static_cast<unsigned>(run));
            BOOST_TEST_REQUIRE(clients.wait_answered(40, 60), "the protected guest did not answer 40 requests\n"
                                                                  << rig.logbook.all());
            const auto before = primary->status();
            BOOST_TEST_REQUIRE((before.role == protocol::Role::primary_protected), protocol::role_name(before.role) << "\n" << rig.logbook.all());
            BOOST_TEST(before.acked > 0u);

            const int answered_before = clients.answered;
            const auto killed = Clock::now();
            primary.reset(); // the host dies: nothing more is sent
            const bool live = wait_for([&] { return backup->status().role == protocol::Role::primary_alone; }, 15);
            BOOST_TEST_REQUIRE(live, "the backup did not go live\n" << rig.logbook.all());
            const double live_ms = std::chrono::duration<double, std::milli>(Clock::now() - killed).count();
            BOOST_TEST(clients.wait_answered(answered_before + 30, 60), "clients stalled after the failover\n"
                                                                            << rig.logbook.all());
            clients.finish();
            const auto calls = clients.all();
            expect_answered_and_consistent(calls, rig.logbook);
            BOOST_TEST(backup->status().failure.empty(), backup->status().failure);
            BOOST_TEST(rig.logbook.ms_until("re-issuing", killed) < 0, rig.logbook.all());
            BOOST_TEST_MESSAGE("run " << run << ": " << calls.size() << " requests, all answered, history consistent; "
                                      << "suspected after " << rig.logbook.ms_until("suspected", killed) << " ms, "
                                      << "test-and-set won after " << rig.logbook.ms_until("test-and-set won", killed)
                                      << " ms, live after " << rig.logbook.ms_until("going live at exit", killed)
                                      << " ms (seen " << live_ms << " ms)");
        }
    }
}

BOOST_AUTO_TEST_CASE(the_backup_dies_and_the_primary_carries_on_alone, *utf::precondition(need_pair_parts))
{
    for (int run = 1; run <= kRepeats; ++run) {
        BOOST_TEST_CONTEXT("run " << run)
        {
            PairRig rig;
            auto backup = start_node(rig.node_config(2, PairRig::Start::backup));
            auto primary = start_node(rig.node_config(1, PairRig::Start::primary));
            Clients clients(rig.net, 2000u * static_cast<unsigned>(run));
            BOOST_TEST_REQUIRE(clients.wait_answered(30, 60), rig.logbook.all());
            const int answered_before = clients.answered;
            const auto killed = Clock::now();
            backup.reset();
            const bool alone = wait_for([&] { return primary->status().role == protocol::Role::primary_alone; }, 15);
            BOOST_TEST_REQUIRE(alone, "the primary did not continue alone\n" << rig.logbook.all());
            BOOST_TEST(clients.wait_answered(answered_before + 30, 60), rig.logbook.all());
            clients.finish();
            const auto calls = clients.all();
            const auto verdict = testing::check_history(calls);
            BOOST_TEST(!verdict.has_value(), verdict.value_or(""));
            BOOST_TEST(primary->status().epoch == 2u);
            BOOST_TEST_MESSAGE("run " << run << ": " << calls.size() << " requests; alone after "
                                      << rig.logbook.ms_until("running alone", killed) << " ms");
        }
    }
}

BOOST_AUTO_TEST_CASE(an_operator_failover_moves_the_vm_to_the_backup, *utf::precondition(need_pair_parts))
{
    // `xenft failover` on the backup's host: the backup takes the next epoch, the primary learns
    // it from the backup's heartbeats and halts; clients see one history throughout.
    PairRig rig;
    auto backup = start_node(rig.node_config(2, PairRig::Start::backup));
    auto primary = start_node(rig.node_config(1, PairRig::Start::primary));
    Clients clients(rig.net, 4242);
    BOOST_TEST_REQUIRE(clients.wait_answered(30, 60), rig.logbook.all());
    const int answered_before = clients.answered;
    backup->request(protocol::OperatorFailover{});
    BOOST_TEST_REQUIRE(wait_for([&] { return backup->status().role == protocol::Role::primary_alone; }, 15),
                       "the backup did not take over\n" << rig.logbook.all());
    BOOST_TEST_REQUIRE(wait_for([&] { return primary->status().role == protocol::Role::halted; }, 15),
                       "the old primary did not halt\n" << rig.logbook.all());
    BOOST_TEST(clients.wait_answered(answered_before + 30, 60), rig.logbook.all());
    clients.finish();
    const auto verdict = testing::check_history(clients.all());
    BOOST_TEST(!verdict.has_value(), verdict.value_or("") << "\n" << rig.logbook.all());
    BOOST_TEST(backup->status().epoch == 2u);
}

BOOST_AUTO_TEST_CASE(a_returning_host_is_reprotected_by_a_live_copy_both_ways, *utf::precondition(need_pair_parts))
{
    // Each host dies once and comes back with its unchanged configuration (the arbitration
    // record, past its epoch, tells it to join); the primary of the moment sends it a live copy
    // of the running VM while the clients keep going, and the pair then survives the death of
    // the other host. Clients see one history through all of it.
    constexpr int kRuns = 2;
    using Start = PairRig::Start;
    for (int run = 1; run <= kRuns; ++run) {
        BOOST_TEST_CONTEXT("run " << run)
        {
            PairRig rig;
            auto b = start_node(rig.node_config(2, Start::backup));
            auto a = start_node(rig.node_config(1, Start::primary));
            Clients clients(rig.net, 5000u * static_cast<unsigned>(run));
            BOOST_TEST_REQUIRE(clients.wait_answered(30, 60), rig.logbook.all());

            // Host `dead` died while `live` was the primary; `live` continues alone, `dead`
            // returns and is re-protected, then `live` dies and `dead` goes live.
            auto cycle = [&](std::unique_ptr<daemon::Node>& live, std::unique_ptr<daemon::Node>& dead,
                             protocol::HostId dead_id, Start config, protocol::Epoch alone_epoch) {
                dead.reset();
                BOOST_TEST_REQUIRE(wait_for([&] { return live->status().role == protocol::Role::primary_alone; }, 15),
                                   "no primary alone\n" << rig.logbook.all());
                BOOST_TEST(live->status().epoch == alone_epoch);
                const unsigned copies_before = live->status().copy.copies_done;
                const auto back = Clock::now();
                dead = start_node(rig.node_config(dead_id, config));
                const bool protected_again = wait_for(
                    [&] {
                        return live->status().role == protocol::Role::primary_protected &&
                               dead->status().role == protocol::Role::backup_replaying;
                    },
                    60);
                BOOST_TEST_REQUIRE(protected_again, "not re-protected\n" << rig.logbook.all());
                const double protect_s = std::chrono::duration<double>(Clock::now() - back).count();
                const auto copy = live->status().copy;
                BOOST_TEST(copy.copies_done == copies_before + 1);
                BOOST_TEST(copy.last_error.empty(), copy.last_error);
                BOOST_TEST(copy.last_pause_ms < 1000.0);
                // Really protected: the new backup acks and replays what the clients cause.
                const auto acked = live->status().acked;
                const auto replayed = dead->status().executed;
                const int answered = clients.answered;
                BOOST_TEST_REQUIRE(clients.wait_answered(answered + 30, 60), rig.logbook.all());
                BOOST_TEST(live->status().acked > acked);
                BOOST_TEST(wait_for([&] { return dead->status().executed > replayed; }, 10));
                BOOST_TEST_MESSAGE("run " << run << ": host " << dead_id << " re-protected " << protect_s
                                          << " s after it came back: copy of " << copy.last_rounds << " rounds in "
                                          << copy.last_seconds << " s, final pause " << copy.last_pause_ms << " ms");
                // Now the primary dies: the new backup goes live.
                const int before_kill = clients.answered;
                live.reset();
                BOOST_TEST_REQUIRE(wait_for([&] { return dead->status().role == protocol::Role::primary_alone; }, 15),
                                   "the re-protected backup did not go live\n" << rig.logbook.all());
                BOOST_TEST(dead->status().epoch == alone_epoch + 1);
                BOOST_TEST(dead->status().failure.empty(), dead->status().failure);
                BOOST_TEST_REQUIRE(clients.wait_answered(before_kill + 30, 60), rig.logbook.all());
            };
            // b dies under a; b returns (configured as the boot backup) and takes over when a dies.
            cycle(a, b, 2, Start::backup, 2);
            // a returns (configured as the boot primary) and takes over when b dies.
            cycle(b, a, 1, Start::primary, 3);
            clients.finish();
            const auto calls = clients.all();
            expect_answered_and_consistent(calls, rig.logbook);
            BOOST_TEST(a->status().epoch == 4u);
            BOOST_TEST_MESSAGE("run " << run << ": " << calls.size() << " requests through 4 host deaths, 2 live copies; "
                                      << "all answered, history consistent");
        }
    }
}

BOOST_AUTO_TEST_CASE(a_backup_restarted_before_the_primary_noticed_is_dropped_and_rejoins, *utf::precondition(need_pair_parts))
{
    // The backup's host restarts its node faster than the failure detector's 250 ms: the
    // record still shows epoch 1, so the new node starts as the boot backup, with no log.
    // The primary learns it from the channel (the backup holds less than it had acked), takes
    // epoch 2 alone, the restarted backup is deposed, and a joining node is re-protected.
    using Start = PairRig::Start;
    PairRig rig;
    // A detector slower than this machine restarts a node (tearing down and creating a VM, an
    // iSCSI login): 3 s.
    auto slow_detector = [&](protocol::HostId host, Start how) {
        auto c = rig.node_config(host, how);
        c.protocol.suspect_timeout = 3'000'000;
        return c;
    };
    auto b = start_node(slow_detector(2, Start::backup));
    auto a = start_node(slow_detector(1, Start::primary));
    Clients clients(rig.net, 777);
    BOOST_TEST_REQUIRE(clients.wait_answered(30, 60), rig.logbook.all());
    BOOST_TEST_REQUIRE((a->status().role == protocol::Role::primary_protected));
    auto again = slow_detector(2, Start::backup);
    const auto crashed = Clock::now();
    b.reset();
    b = start_node(std::move(again));
    BOOST_TEST_REQUIRE(wait_for([&] { return a->status().role == protocol::Role::primary_alone; }, 15),
                       "the primary did not drop the restarted backup\n" << rig.logbook.all());
    BOOST_TEST(a->status().epoch == 2u);
    BOOST_TEST(rig.logbook.ms_until("restarted and lost the log", crashed) >= 0, rig.logbook.all());
    BOOST_TEST_REQUIRE(wait_for([&] { return b->halted(); }, 15), "the restarted backup was not deposed\n" << rig.logbook.all());
    b.reset();
    b = start_node(slow_detector(2, Start::join)); // what xenftd does next (pair.rejoin)
    BOOST_TEST_REQUIRE(wait_for(
                           [&] {
                               return a->status().role == protocol::Role::primary_protected &&
                                      b->status().role == protocol::Role::backup_replaying;
                           },
                           60),
                       "not re-protected\n" << rig.logbook.all());
    const int answered = clients.answered;
    BOOST_TEST(clients.wait_answered(answered + 30, 60), rig.logbook.all());
    clients.finish();
    const auto verdict = testing::check_history(clients.all());
    BOOST_TEST(!verdict.has_value(), verdict.value_or(""));
    BOOST_TEST_MESSAGE("restarted backup dropped after " << rig.logbook.ms_until("restarted and lost the log", crashed)
                                                         << " ms, primary alone after "
                                                         << rig.logbook.ms_until("running alone", crashed) << " ms");
}

BOOST_AUTO_TEST_CASE(unprotect_drops_the_backup_until_protect, *utf::precondition(need_pair_parts))
{
    // `xenft unprotect` on the primary: it takes the next epoch alone and the backup halts; a
    // backup host that asks to join gets no copy until `xenft protect`, then it is re-protected.
    using Start = PairRig::Start;
    PairRig rig;
    auto b = start_node(rig.node_config(2, Start::backup));
    auto a = start_node(rig.node_config(1, Start::primary));
    Clients clients(rig.net, 31337);
    BOOST_TEST_REQUIRE(clients.wait_answered(30, 60), rig.logbook.all());
    a->request(protocol::OperatorUnprotect{});
    BOOST_TEST_REQUIRE(wait_for([&] { return a->status().role == protocol::Role::primary_alone; }, 15), rig.logbook.all());
    BOOST_TEST(a->status().epoch == 2u);
    BOOST_TEST_REQUIRE(wait_for([&] { return b->halted(); }, 15), "the backup did not halt\n" << rig.logbook.all());
    b.reset();
    b = start_node(rig.node_config(2, Start::join));
    std::this_thread::sleep_for(std::chrono::seconds(2)); // it asks, many times over
    BOOST_TEST((b->status().role == protocol::Role::backup_syncing));
    BOOST_TEST(a->status().copy.copies_done == 0u);
    BOOST_TEST((a->status().role == protocol::Role::primary_alone));
    a->request(protocol::OperatorProtect{});
    BOOST_TEST_REQUIRE(wait_for(
                           [&] {
                               return a->status().role == protocol::Role::primary_protected &&
                                      b->status().role == protocol::Role::backup_replaying;
                           },
                           60),
                       "not re-protected after protect\n" << rig.logbook.all());
    const int answered = clients.answered;
    BOOST_TEST(clients.wait_answered(answered + 30, 60), rig.logbook.all());
    clients.finish();
    expect_answered_and_consistent(clients.all(), rig.logbook);
}
