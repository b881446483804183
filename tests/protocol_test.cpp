// Tests of the FT protocol core: each rule in isolation against the state machine, then
// thousands of randomized fault schedules in the simulation (tests/protocol_sim.hpp) with the
// invariants checked after every step, and proof that the simulation catches a broken rule.
//
// XENFT_SIM_SCHEDULES sets the number of schedules (default 10000); XENFT_SIM_SEED=N replays
// one schedule with a full trace.
#define BOOST_TEST_MODULE protocol
#include <boost/test/unit_test.hpp>

#include <cstdlib>

#include "tests/protocol_sim.hpp"
#include "xenft/protocol/replica.hpp"

using namespace xenft::protocol;

namespace xenft::protocol {
// Lets Boost.Test print roles in failed assertions.
inline std::ostream& operator<<(std::ostream& os, Role r) { return os << role_name(r); }
} // namespace xenft::protocol

namespace {

template <class A>
std::vector<A> all_of(const std::vector<Action>& actions)
{
    std::vector<A> out;
    for (const auto& a : actions)
        if (const auto* x = std::get_if<A>(&a))
            out.push_back(*x);
    return out;
}

template <class A>
bool has(const std::vector<Action>& actions)
{
    return !all_of<A>(actions).empty();
}

Config cfg()
{
    Config c; // H 50 ms, T 250 ms, margin 25 ms
    return c;
}

constexpr Time ms = 1000;

} // namespace

BOOST_AUTO_TEST_CASE(config_validation_names_the_bad_setting)
{
    Config c;
    BOOST_TEST(c.validate().empty());
    c.suspect_timeout = c.heartbeat_interval;
    BOOST_TEST(c.validate().find("two heartbeat intervals") != std::string::npos);
    c = Config{};
    c.lease_margin = c.suspect_timeout;
    BOOST_TEST(c.validate().find("lease margin") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(output_waits_for_ack_and_lease)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 100, 0);
    auto a = p.step(1 * ms, VmLogged{110});
    auto logs = all_of<Send>(a);
    BOOST_TEST_REQUIRE(logs.size() == 1u);
    const auto& lm = std::get<LogMsg>(logs[0].msg);
    BOOST_TEST(lm.first == 101u);
    BOOST_TEST(lm.last == 110u);
    BOOST_TEST(lm.epoch == 5u);
    BOOST_TEST(!has<ReleaseOutputs>(p.step(2 * ms, VmOutput{7, 110})));
    BOOST_TEST(p.held_outputs() == 1u);
    // An ack short of the output releases nothing.
    BOOST_TEST(!has<ReleaseOutputs>(p.step(3 * ms, Received{AckMsg{5, 109, 1 * ms}})));
    // The ack that covers it does.
    auto rel = all_of<ReleaseOutputs>(p.step(4 * ms, Received{AckMsg{5, 110, 1 * ms}}));
    BOOST_TEST_REQUIRE(rel.size() == 1u);
    BOOST_TEST(rel[0].up_to_id == 7u);
    BOOST_TEST(p.held_outputs() == 0u);
}

BOOST_AUTO_TEST_CASE(an_acked_output_is_held_once_the_lease_expired)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 0, 0);
    p.step(1 * ms, VmLogged{1});
    p.step(1 * ms, VmOutput{1, 1});
    // The ack echoes a primary timestamp of 1 ms but arrives 300 ms later: by then the backup
    // may already be live, so the output must stay held.
    BOOST_TEST(!has<ReleaseOutputs>(p.step(300 * ms, Received{AckMsg{5, 1, 1 * ms}})));
    BOOST_TEST(p.held_outputs() == 1u);
}

BOOST_AUTO_TEST_CASE(a_future_echo_does_not_extend_the_lease)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 0, 0);
    p.step(1 * ms, VmLogged{1});
    p.step(1 * ms, VmOutput{1, 1});
    BOOST_TEST(!has<ReleaseOutputs>(p.step(2 * ms, Received{AckMsg{5, 1, 10'000 * ms}})));
}

BOOST_AUTO_TEST_CASE(backup_acks_what_is_in_its_buffer_and_drops_outputs)
{
    auto b = Replica::replaying_backup(cfg(), 2, 1, 5, 100, 0);
    auto acks = all_of<Send>(b.step(1 * ms, Received{LogMsg{5, 101, 120, 1 * ms}}));
    BOOST_TEST_REQUIRE(acks.size() == 1u);
    BOOST_TEST(std::get<AckMsg>(acks[0].msg).acked == 120u);
    BOOST_TEST(std::get<AckMsg>(acks[0].msg).echo == 1 * ms);
    // A gap is not acked past: entries 131.. without 121..130 stay out of the buffer.
    acks = all_of<Send>(b.step(2 * ms, Received{LogMsg{5, 131, 140, 2 * ms}}));
    BOOST_TEST(std::get<AckMsg>(acks[0].msg).acked == 120u);
    BOOST_TEST(b.received() == 120u);
    BOOST_TEST(has<DiscardOutput>(b.step(3 * ms, VmOutput{9, 110})));
}

BOOST_AUTO_TEST_CASE(messages_from_an_older_epoch_are_ignored)
{
    auto b = Replica::replaying_backup(cfg(), 2, 1, 5, 100, 0);
    BOOST_TEST(b.step(1 * ms, Received{LogMsg{4, 101, 200, 1 * ms}}).empty());
    BOOST_TEST(b.received() == 100u);
    // ...and they do not count as hearing from the primary.
    auto a = b.step(260 * ms, Tick{});
    BOOST_TEST(b.role() == Role::backup_arbitrating);
    BOOST_TEST(has<RequestArbiter>(a));
}

BOOST_AUTO_TEST_CASE(a_newer_epoch_deposes_the_receiver)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 0, 0);
    auto a = p.step(1 * ms, Received{HeartbeatMsg{6, Role::primary_alone, 1 * ms, 0, 50}});
    BOOST_TEST(p.role() == Role::halted);
    BOOST_TEST_REQUIRE(has<HaltVm>(a));
    BOOST_TEST(all_of<HaltVm>(a)[0].reason.find("epoch 6") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(suspicion_needs_silence_on_every_kind_of_traffic)
{
    auto b = Replica::replaying_backup(cfg(), 2, 1, 5, 0, 0);
    // Only log traffic, no heartbeats, for a whole second: no suspicion.
    for (Time t = 10 * ms; t <= 1000 * ms; t += 10 * ms) {
        b.step(t, Received{LogMsg{5, t / ms, t / ms, t}});
        b.step(t, Tick{});
    }
    BOOST_TEST(b.role() == Role::backup_replaying);
    // Then silence: suspected at T, not before.
    b.step(1000 * ms + 249 * ms, Tick{});
    BOOST_TEST(b.role() == Role::backup_replaying);
    auto a = b.step(1000 * ms + 250 * ms, Tick{});
    BOOST_TEST(b.role() == Role::backup_arbitrating);
    auto req = all_of<RequestArbiter>(a);
    BOOST_TEST_REQUIRE(req.size() == 1u);
    BOOST_TEST(req[0].expected == 5u);
    BOOST_TEST(req[0].next == 6u);
}

BOOST_AUTO_TEST_CASE(a_peer_never_heard_from_is_suspected_only_after_the_boot_grace)
{
    Config c = cfg();
    c.boot_grace = 2000 * ms;
    // Both sides of a pair protected from boot; the peer has not started yet.
    auto p = Replica::protected_primary(c, 1, 2, 1, 0, 0);
    auto b = Replica::replaying_backup(c, 2, 1, 1, 0, 0);
    for (Time t = 10 * ms; t < 2000 * ms; t += 10 * ms) {
        auto ap = p.step(t, Tick{});
        b.step(t, Tick{});
        BOOST_TEST(!has<RequestArbiter>(ap));
    }
    BOOST_TEST(p.role() == Role::primary_protected);
    BOOST_TEST(b.role() == Role::backup_replaying);
    // Never heard within the grace: suspected then, and the reason says so.
    auto a = p.step(2000 * ms, Tick{});
    BOOST_TEST(p.role() == Role::primary_arbitrating);
    BOOST_TEST(has<RequestArbiter>(a));
    BOOST_TEST(p.reason().find("never heard from") != std::string::npos, p.reason());
    b.step(2000 * ms, Tick{});
    BOOST_TEST(b.role() == Role::backup_arbitrating);

    // Once the peer was heard, plain T counts again, however early.
    auto q = Replica::protected_primary(c, 1, 2, 1, 0, 0);
    q.step(20 * ms, Received{HeartbeatMsg{1, Role::backup_replaying, 20 * ms, 0, 0}});
    q.step(20 * ms + 249 * ms, Tick{});
    BOOST_TEST(q.role() == Role::primary_protected);
    q.step(20 * ms + 250 * ms, Tick{});
    BOOST_TEST(q.role() == Role::primary_arbitrating);
    BOOST_TEST(q.reason().find("backup silent") != std::string::npos, q.reason());

    // A backup that took its live copy has heard its primary: no grace after the copy.
    auto s = Replica::syncing_backup(c, 2, 1, 0);
    s.step(100 * ms, SyncComplete{1, 40});
    BOOST_TEST(s.role() == Role::backup_replaying);
    s.step(100 * ms + 250 * ms, Tick{});
    BOOST_TEST(s.role() == Role::backup_arbitrating);
}

BOOST_AUTO_TEST_CASE(backup_freezes_then_replays_its_buffer_before_going_live)
{
    auto b = Replica::replaying_backup(cfg(), 2, 1, 5, 0, 0);
    b.step(1 * ms, Received{LogMsg{5, 1, 50, 1 * ms}});
    b.step(2 * ms, ReplayProgress{20});
    b.step(300 * ms, Tick{});
    BOOST_TEST_REQUIRE(b.role() == Role::backup_arbitrating);
    // Frozen: new log is neither accepted nor acked.
    BOOST_TEST(b.step(301 * ms, Received{LogMsg{5, 51, 60, 290 * ms}}).empty());
    BOOST_TEST(b.received() == 50u);
    auto a = b.step(302 * ms, ArbiterDone{ArbiterOutcome::won, 6, 2});
    BOOST_TEST(has<Fence>(a));
    BOOST_TEST(!has<GoLive>(a));
    BOOST_TEST(b.role() == Role::going_live);
    auto live = all_of<GoLive>(b.step(303 * ms, ReplayProgress{50}));
    BOOST_TEST_REQUIRE(live.size() == 1u);
    BOOST_TEST(live[0].epoch == 6u);
    BOOST_TEST(b.role() == Role::primary_alone);
    BOOST_TEST(b.logged() == 50u);
}

BOOST_AUTO_TEST_CASE(the_loser_of_the_test_and_set_halts_for_good)
{
    auto b = Replica::replaying_backup(cfg(), 2, 1, 5, 0, 0);
    b.step(300 * ms, Tick{});
    auto a = b.step(301 * ms, ArbiterDone{ArbiterOutcome::lost, 6, 1});
    BOOST_TEST(b.role() == Role::halted);
    BOOST_TEST(has<HaltVm>(a));
    BOOST_TEST(b.step(302 * ms, Tick{}).empty());
    BOOST_TEST(b.step(303 * ms, SyncComplete{6, 10}).empty());
    BOOST_TEST(b.role() == Role::halted);
    // Halted, it only says so: heartbeats with its role, nothing else.
    const auto hb = all_of<Send>(b.step(400 * ms, Tick{}));
    BOOST_TEST_REQUIRE(hb.size() == 1u);
    BOOST_TEST((std::get<HeartbeatMsg>(hb[0].msg).role == Role::halted));
}

BOOST_AUTO_TEST_CASE(a_backup_that_diverged_halts_and_the_primary_continues_alone_without_waiting_for_silence)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 0, 0);
    auto b = Replica::replaying_backup(cfg(), 2, 1, 5, 0, 0);
    p.step(1 * ms, VmLogged{3});
    p.step(1 * ms, VmOutput{1, 3});
    auto a = b.step(10 * ms, VmFailed{"domain 3 at exit 812: the backup's state digest differs"});
    BOOST_TEST(b.role() == Role::halted);
    BOOST_TEST(all_of<HaltVm>(a).at(0).reason.find("digest differs") != std::string::npos);
    const auto hb = all_of<Send>(b.step(60 * ms, Tick{}));
    BOOST_TEST_REQUIRE(hb.size() == 1u);
    // 61 ms: far from the 250 ms of silence a suspicion needs.
    a = p.step(61 * ms, Received{hb[0].msg});
    BOOST_TEST(p.role() == Role::primary_arbitrating);
    BOOST_TEST(has<RequestArbiter>(a));
    BOOST_TEST(p.reason().find("halted") != std::string::npos, p.reason());
    BOOST_TEST(p.held_outputs() == 1u); // nothing leaves before the test-and-set
    a = p.step(62 * ms, ArbiterDone{ArbiterOutcome::won, 6, 1});
    BOOST_TEST(p.role() == Role::primary_alone);
    BOOST_TEST(has<ReleaseOutputs>(a));
}

BOOST_AUTO_TEST_CASE(a_backup_whose_vm_stopped_by_itself_waits_for_the_end_and_never_takes_over)
{
    Config c = cfg();
    c.own_end_wait = 3000 * ms;
    // The guest's shutdown replayed before the primary's end arrived: the end follows.
    auto b = Replica::replaying_backup(c, 2, 1, 5, 0, 0);
    b.step(1 * ms, Received{LogMsg{5, 1, 3, 1 * ms}});
    b.step(2 * ms, ReplayProgress{3});
    b.step(10 * ms, VmStoppedHere{false, "the guest powered off"});
    // Long silence: no suspicion (nothing to go live with), no halt before the wait is over.
    for (Time t = 20 * ms; t < 2000 * ms; t += 50 * ms)
        BOOST_TEST(!has<RequestArbiter>(b.step(t, Tick{})));
    BOOST_TEST(b.role() == Role::backup_replaying);
    auto a = b.step(2000 * ms, Received{LogMsg{5, 4, 4, 1990 * ms, true}});
    BOOST_TEST(b.role() == Role::ended);
    BOOST_TEST(has<EndVm>(a));
    BOOST_TEST(b.reason().find("as on the primary") != std::string::npos, b.reason());

    // No end within own_end_wait: it failed here; the halt says so, and the heartbeats.
    auto d = Replica::replaying_backup(c, 2, 1, 5, 0, 0);
    d.step(10 * ms, VmStoppedHere{false, "the guest crashed: triple fault"});
    d.step(3009 * ms, Tick{});
    BOOST_TEST(d.role() == Role::backup_replaying);
    a = d.step(3010 * ms, Tick{});
    BOOST_TEST(d.role() == Role::halted);
    BOOST_TEST(all_of<HaltVm>(a).at(0).reason.find("without the primary's end in the log within 3000 ms") !=
               std::string::npos);

    // Destroyed here by the administrator: halted at once.
    auto x = Replica::replaying_backup(c, 2, 1, 5, 0, 0);
    x.step(10 * ms, VmStoppedHere{true, "xl destroy"});
    BOOST_TEST(x.role() == Role::halted);
}

BOOST_AUTO_TEST_CASE(a_backup_with_the_vms_end_in_its_buffer_takes_no_operator_failover)
{
    // Found by the simulation (seed 66561 of 100,000): the primary ended on the backup's ack of
    // its end; an operator's failover on the backup before it replayed up to the end must not
    // bring the VM back.
    auto b = Replica::replaying_backup(cfg(), 2, 1, 5, 0, 0);
    b.step(1 * ms, Received{LogMsg{5, 1, 4, 1 * ms, true}});
    b.step(2 * ms, ReplayProgress{2});
    BOOST_TEST(!has<RequestArbiter>(b.step(3 * ms, OperatorFailover{})));
    b.step(400 * ms, Tick{});
    BOOST_TEST(b.role() == Role::backup_replaying);
    b.step(401 * ms, ReplayProgress{4});
    BOOST_TEST(b.role() == Role::ended);
}

BOOST_AUTO_TEST_CASE(a_primary_whose_vm_failed_lets_the_backup_take_over_at_once)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 0, 0);
    auto b = Replica::replaying_backup(cfg(), 2, 1, 5, 0, 0);
    p.step(1 * ms, VmLogged{3});
    b.step(2 * ms, Received{LogMsg{5, 1, 3, 1 * ms}});
    p.step(10 * ms, VmFailed{"the guest stopped: triple fault"});
    const auto hb = all_of<Send>(p.step(60 * ms, Tick{}));
    BOOST_TEST_REQUIRE(hb.size() == 1u);
    auto a = b.step(61 * ms, Received{hb[0].msg});
    BOOST_TEST(b.role() == Role::backup_arbitrating);
    BOOST_TEST(has<RequestArbiter>(a));
    b.step(62 * ms, ReplayProgress{3});
    a = b.step(63 * ms, ArbiterDone{ArbiterOutcome::won, 6, 2});
    BOOST_TEST(b.role() == Role::primary_alone);
    BOOST_TEST(has<GoLive>(a));
    // A halted replica of an older epoch says nothing to the new one.
    BOOST_TEST(b.step(120 * ms, Received{hb[0].msg}).empty());
}

BOOST_AUTO_TEST_CASE(the_vm_end_ends_both_replicas_and_the_backup_never_takes_over)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 0, 0);
    auto b = Replica::replaying_backup(cfg(), 2, 1, 5, 0, 0);
    p.step(1 * ms, VmLogged{5});
    p.step(1 * ms, VmOutput{1, 5});
    auto a = p.step(2 * ms, VmEnded{6, "the guest shut down"});
    const auto logs = all_of<Send>(a);
    BOOST_TEST_REQUIRE(logs.size() == 1u);
    const auto log = std::get<LogMsg>(logs[0].msg);
    BOOST_TEST(log.vm_end);
    BOOST_TEST(log.last == 6u);
    BOOST_TEST(p.role() == Role::primary_protected); // until the backup acked the end
    a = b.step(3 * ms, Received{LogMsg{5, 1, 6, 2 * ms, true}});
    const auto ack = all_of<Send>(a);
    BOOST_TEST_REQUIRE(ack.size() == 1u);
    BOOST_TEST(b.role() == Role::backup_replaying);
    BOOST_TEST(has<EndVm>(b.step(4 * ms, ReplayProgress{6})));
    BOOST_TEST(b.role() == Role::ended);
    // The primary falls silent now; the backup ends instead of suspecting it.
    BOOST_TEST(!has<RequestArbiter>(b.step(900 * ms, Tick{})));
    a = p.step(5 * ms, Received{ack[0].msg});
    BOOST_TEST(has<ReleaseOutputs>(a)); // the output before the end leaves
    BOOST_TEST(has<EndVm>(a));
    BOOST_TEST(p.role() == Role::ended);
    BOOST_TEST(p.reason().find("acknowledged") != std::string::npos, p.reason());
}

BOOST_AUTO_TEST_CASE(an_end_the_backup_never_acks_ends_the_primary_after_the_timeout_and_drops_its_outputs)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 0, 0);
    p.step(1 * ms, VmLogged{5});
    p.step(1 * ms, VmOutput{1, 5});
    p.step(2 * ms, VmEnded{6, "the domain was destroyed"});
    // The backup is alive (its heartbeats echo the primary) but never acks the end.
    for (Time t = 50 * ms; t < cfg().end_ack_timeout; t += 50 * ms) {
        p.step(t, Received{HeartbeatMsg{5, Role::backup_replaying, t, t - 1 * ms, 5}});
        BOOST_TEST_REQUIRE(p.role() == Role::primary_protected);
    }
    auto a = p.step(cfg().end_ack_timeout + 3 * ms, Tick{});
    BOOST_TEST(p.role() == Role::ended);
    BOOST_TEST(has<EndVm>(a));
    BOOST_TEST(!has<ReleaseOutputs>(a));
    BOOST_TEST(p.held_outputs() == 0u);
}

BOOST_AUTO_TEST_CASE(the_arbitration_record_decides_who_runs_a_vm_started_with_a_copy)
{
    // The record's owner runs it; on a record nobody owns, the configured primary; everyone
    // else joins: a host started again after its peer took the VM over never runs a copy.
    BOOST_TEST((plan_start(1, true, 0) == StartAs::claim));
    BOOST_TEST((plan_start(2, false, 0) == StartAs::join));
    BOOST_TEST((plan_start(1, true, 2) == StartAs::join));
    BOOST_TEST((plan_start(2, false, 2) == StartAs::claim));
    BOOST_TEST((plan_start(1, true, 1) == StartAs::claim));
    // Claiming is a test-and-set like any other: lost, the host does not run the VM.
    auto s = Replica::starting(cfg(), 1, 2, 3, 0);
    auto a = s.step(1 * ms, Tick{});
    BOOST_TEST_REQUIRE(has<RequestArbiter>(a));
    BOOST_TEST(all_of<RequestArbiter>(a)[0].expected == 3u);
    s.step(2 * ms, ArbiterDone{ArbiterOutcome::lost, 4, 2});
    BOOST_TEST(s.role() == Role::halted);
    auto w = Replica::starting(cfg(), 1, 2, 3, 0);
    w.step(1 * ms, Tick{});
    w.step(2 * ms, ArbiterDone{ArbiterOutcome::won, 4, 1});
    BOOST_TEST(w.role() == Role::primary_alone);
    BOOST_TEST(w.epoch() == 4u);
}

BOOST_AUTO_TEST_CASE(unknown_arbiter_result_keeps_outputs_held_and_retries)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 0, 0);
    p.step(1 * ms, VmLogged{3});
    p.step(1 * ms, VmOutput{1, 3});
    auto a = p.step(260 * ms, Tick{});
    BOOST_TEST(p.role() == Role::primary_arbitrating);
    BOOST_TEST(has<RequestArbiter>(a));
    a = p.step(261 * ms, ArbiterDone{ArbiterOutcome::unknown, 0, 0});
    BOOST_TEST(!has<ReleaseOutputs>(a));
    BOOST_TEST(p.held_outputs() == 1u);
    BOOST_TEST(!has<RequestArbiter>(p.step(300 * ms, Tick{})));   // waits arbiter_retry
    BOOST_TEST(has<RequestArbiter>(p.step(361 * ms, Tick{})));
    // The retry finds the record already ours (the first attempt landed, its reply was lost).
    a = p.step(362 * ms, ArbiterDone{ArbiterOutcome::lost, 6, 1});
    BOOST_TEST(p.role() == Role::primary_alone);
    BOOST_TEST(p.epoch() == 6u);
    BOOST_TEST(has<ReleaseOutputs>(a));
}

BOOST_AUTO_TEST_CASE(flow_control_stalls_and_resumes_the_vm)
{
    Config c = cfg();
    c.max_unacked_entries = 100;
    auto p = Replica::protected_primary(c, 1, 2, 5, 0, 0);
    BOOST_TEST(!has<StallVm>(p.step(1 * ms, VmLogged{99})));
    BOOST_TEST(has<StallVm>(p.step(2 * ms, VmLogged{100})));
    BOOST_TEST(has<ResumeVm>(p.step(3 * ms, Received{AckMsg{5, 50, 2 * ms}})));
}

BOOST_AUTO_TEST_CASE(a_backup_behind_its_primary_takes_no_more_log_until_it_replayed_some)
{
    Config c = cfg();
    c.max_replay_backlog = 100;
    auto s = Replica::syncing_backup(c, 2, 1, 0);
    BOOST_TEST(s.takes_log()); // the live copy comes on the log's connection
    auto b = Replica::replaying_backup(c, 2, 1, 5, 0, 0);
    BOOST_TEST(b.takes_log());
    b.step(1 * ms, Received{LogMsg{5, 1, 99, 1 * ms}});
    BOOST_TEST(b.takes_log());
    b.step(2 * ms, Received{LogMsg{5, 100, 150, 2 * ms}});
    BOOST_TEST(!b.takes_log()); // 150 received, none executed
    b.step(3 * ms, ReplayProgress{50});
    BOOST_TEST(!b.takes_log()); // 100 wait: at the limit
    b.step(4 * ms, ReplayProgress{51});
    BOOST_TEST(b.takes_log());
    b.step(4 * ms, ReplayProgress{40});
    BOOST_TEST(b.executed() == 51u); // progress never goes back
    // Frozen once it suspects the primary: nothing more, however little waits.
    b.step(5 * ms, ReplayProgress{150});
    b.step(300 * ms, Tick{});
    BOOST_TEST_REQUIRE(b.role() == Role::backup_arbitrating);
    BOOST_TEST(!b.takes_log());
    Config bad = cfg();
    bad.max_replay_backlog = 0;
    BOOST_TEST(!bad.validate().empty());
}

BOOST_AUTO_TEST_CASE(reprotection_after_running_alone)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 0, 0);
    p.step(260 * ms, Tick{});
    p.step(261 * ms, ArbiterDone{ArbiterOutcome::won, 6, 1});
    BOOST_TEST_REQUIRE(p.role() == Role::primary_alone);
    p.step(262 * ms, VmLogged{40});
    auto b = Replica::syncing_backup(cfg(), 3, 1, 262 * ms);
    auto hb = all_of<Send>(b.step(263 * ms, Tick{}));
    BOOST_TEST_REQUIRE(hb.size() == 1u);
    BOOST_TEST(has<StartReprotection>(p.step(264 * ms, Received{hb[0].msg})));
    BOOST_TEST(!has<StartReprotection>(p.step(265 * ms, Received{hb[0].msg}))); // once
    p.step(300 * ms, SyncComplete{6, 40});
    b.step(300 * ms, SyncComplete{6, 40});
    BOOST_TEST(p.role() == Role::primary_protected);
    BOOST_TEST(b.role() == Role::backup_replaying);
    BOOST_TEST(b.epoch() == 6u);
    BOOST_TEST(b.received() == 40u);
}

BOOST_AUTO_TEST_CASE(a_failed_live_copy_is_retried_after_copy_retry_not_at_every_heartbeat)
{
    Config c = cfg();
    c.copy_retry = 1000 * ms;
    auto p = Replica::starting(c, 1, 2, 1, 0);
    p.step(1 * ms, Tick{});
    p.step(2 * ms, ArbiterDone{ArbiterOutcome::won, 2, 1});
    BOOST_TEST_REQUIRE(p.role() == Role::primary_alone);
    const HeartbeatMsg hello{0, Role::backup_syncing, 0, 0, 0};
    BOOST_TEST(has<StartReprotection>(p.step(10 * ms, Received{hello})));
    p.step(20 * ms, SyncFailed{});
    // The backup asks at every heartbeat; the next copy waits out copy_retry.
    for (Time t = 70 * ms; t < 1020 * ms; t += 50 * ms)
        BOOST_TEST(!has<StartReprotection>(p.step(t, Received{hello})), "at " << t / ms << " ms");
    BOOST_TEST(has<StartReprotection>(p.step(1020 * ms, Received{hello})));
}

BOOST_AUTO_TEST_CASE(a_restored_channel_resends_what_is_unacked_and_a_lost_one_changes_nothing)
{
    auto p = Replica::protected_primary(cfg(), 1, 2, 5, 0, 0);
    p.step(1 * ms, VmLogged{30});
    p.step(2 * ms, Received{AckMsg{5, 10, 1 * ms}});
    BOOST_TEST(p.step(3 * ms, ChannelLost{}).empty());
    BOOST_TEST(p.role() == Role::primary_protected);
    auto sends = all_of<Send>(p.step(4 * ms, ChannelRestored{}));
    BOOST_TEST_REQUIRE(sends.size() == 1u);
    const auto& lm = std::get<LogMsg>(sends[0].msg);
    BOOST_TEST(lm.first == 11u);
    BOOST_TEST(lm.last == 30u);
}

BOOST_AUTO_TEST_CASE(operator_failover_waits_out_the_primary_lease)
{
    auto b = Replica::replaying_backup(cfg(), 2, 1, 5, 0, 0);
    auto a = b.step(10 * ms, OperatorFailover{});
    BOOST_TEST(b.role() == Role::backup_arbitrating);
    BOOST_TEST(!has<RequestArbiter>(a));
    BOOST_TEST(!has<RequestArbiter>(b.step(200 * ms, Tick{})));
    BOOST_TEST(has<RequestArbiter>(b.step(260 * ms, Tick{})));
}

// ---- the simulation --------------------------------------------------------------------------

namespace {

std::uint64_t env_u64(const char* name, std::uint64_t fallback)
{
    const char* v = std::getenv(name);
    return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

void print_violation(const xenft::sim::Result& r)
{
    BOOST_TEST_MESSAGE("seed " << r.seed << " (" << xenft::sim::scenario_name(r.scenario) << "): " << r.violation
                               << "\nreplay it with XENFT_SIM_SEED=" << r.seed << "; last steps:");
    for (const auto& line : r.recent)
        BOOST_TEST_MESSAGE("  " << line);
}

} // namespace

BOOST_AUTO_TEST_CASE(random_fault_schedules_keep_every_invariant)
{
    xenft::sim::Options opt;
    if (const auto one = env_u64("XENFT_SIM_SEED", 0); one != 0) {
        opt.trace = true;
        const auto r = xenft::sim::run_schedule(one, opt);
        if (!r.violation.empty())
            print_violation(r);
        BOOST_TEST(r.violation.empty(), r.violation);
        return;
    }
    const std::uint64_t n = env_u64("XENFT_SIM_SCHEDULES", 10'000);
    std::uint64_t failovers = 0, halts = 0, reprotections = 0, outputs = 0, violations = 0, ends = 0, copy_starts = 0;
    std::uint64_t held_back = 0; // schedules in which a backup too far behind read no more log
    std::vector<xenft::protocol::Time> failover_times;
    for (std::uint64_t seed = 1; seed <= n; ++seed) {
        const auto r = xenft::sim::run_schedule(seed, opt);
        ends += static_cast<std::uint64_t>(r.ends);
        held_back += r.log_held > 0 ? 1 : 0;
        copy_starts += r.copy_start ? 1 : 0;
        failovers += static_cast<std::uint64_t>(r.failovers);
        halts += static_cast<std::uint64_t>(r.halts);
        reprotections += static_cast<std::uint64_t>(r.reprotections);
        outputs += static_cast<std::uint64_t>(r.outputs_released);
        if (r.failover_time != 0)
            failover_times.push_back(r.failover_time);
        if (!r.violation.empty()) {
            if (++violations <= 3)
                print_violation(r);
        }
    }
    std::sort(failover_times.begin(), failover_times.end());
    BOOST_TEST_MESSAGE(n << " schedules (" << copy_starts << " started as a Xen pair: a claim and a live copy): "
                         << failovers << " go-lives, " << halts << " halts, " << reprotections << " re-protections, "
                         << ends << " ends, " << outputs << " outputs released, " << held_back
                         << " with a backup held back by its replay backlog, " << violations << " violations");
    if (!failover_times.empty())
        BOOST_TEST_MESSAGE("simulated failover after a primary crash: median "
                           << failover_times[failover_times.size() / 2] / 1000 << " ms, max "
                           << failover_times.back() / 1000 << " ms");
    BOOST_TEST(violations == 0u);
    // The schedules must actually exercise failover, halting and re-protection.
    BOOST_TEST(failovers > n / 10);
    BOOST_TEST(halts > n / 20);
    BOOST_TEST(reprotections > n / 20);
    BOOST_TEST(outputs > n * 100);
    // Both ways of starting a pair, and the VM's end, are in the schedules.
    BOOST_TEST(copy_starts > n / 3);
    BOOST_TEST(copy_starts < n - n / 3);
    BOOST_TEST(ends > n / 20);
    BOOST_TEST(held_back > n / 10);
}

namespace {

// Runs schedules with a broken rule until one violates an invariant; returns how many it took.
std::uint64_t schedules_to_catch(xenft::sim::Options opt, std::uint64_t budget, std::string& violation)
{
    for (std::uint64_t seed = 1; seed <= budget; ++seed) {
        const auto r = xenft::sim::run_schedule(seed, opt);
        if (!r.violation.empty()) {
            violation = r.violation;
            return seed;
        }
    }
    return 0;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_network_with_many_late_messages_keeps_every_invariant)
{
    // 5 % of messages held up for T/2..3T (a stalled TCP connection): late acks and heartbeats
    // reach replicas long after the facts they report. The lease keeps this safe.
    xenft::sim::Options opt;
    opt.late = 0.05;
    std::uint64_t violations = 0;
    for (std::uint64_t seed = 1; seed <= 2000; ++seed) {
        const auto r = xenft::sim::run_schedule(seed, opt);
        if (!r.violation.empty() && ++violations <= 3)
            print_violation(r);
    }
    BOOST_TEST(violations == 0u);
}

BOOST_AUTO_TEST_CASE(simulation_catches_a_skipped_test_and_set)
{
    xenft::sim::Options opt;
    opt.proto.unsafe_skip_test_and_set = true;
    std::string v;
    const auto found = schedules_to_catch(opt, 2000, v);
    BOOST_TEST_MESSAGE("skipped test-and-set caught after " << found << " schedules: " << v);
    BOOST_TEST(found != 0u);
}

BOOST_AUTO_TEST_CASE(simulation_catches_outputs_released_before_their_ack)
{
    xenft::sim::Options opt;
    opt.proto.unsafe_release_before_ack = true;
    std::string v;
    const auto found = schedules_to_catch(opt, 2000, v);
    BOOST_TEST_MESSAGE("release before ack caught after " << found << " schedules: " << v);
    BOOST_TEST(found != 0u);
}

