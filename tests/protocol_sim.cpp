// The simulation; see protocol_sim.hpp.
#include "tests/protocol_sim.hpp"

#include <array>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <random>
#include <sstream>

namespace xenft::sim {

using namespace xenft::protocol;

const char* scenario_name(Scenario s)
{
    switch (s) {
    case Scenario::primary_crash: return "primary_crash";
    case Scenario::backup_crash: return "backup_crash";
    case Scenario::partition: return "partition";
    case Scenario::one_way: return "one_way";
    case Scenario::storage_outage: return "storage_outage";
    case Scenario::chaos: return "chaos";
    case Scenario::diverges: return "diverges";
    case Scenario::vm_ends: return "vm_ends";
    }
    return "?";
}

namespace {

constexpr std::size_t kRecent = 60;

struct Output {
    std::uint64_t id;
    Seq seq;
};

struct Host {
    HostId id = 0;
    std::optional<Replica> replica; // empty while crashed
    bool stalled = false;
    bool vm_stopped = false;        // its VM ended on purpose: it logs nothing more
    bool stopped_here = false;      // a backup whose VM stopped by itself (VmStoppedHere)
    std::deque<Output> held;        // outputs produced by this host's VM, not yet released
};

struct Pending {
    Time at;
    std::uint64_t order;
    std::function<void()> run;
    bool operator>(const Pending& o) const { return at != o.at ? at > o.at : order > o.order; }
};

class World {
public:
    World(std::uint64_t seed, Scenario sc, const Options& opt) : rng_(seed), opt_(opt)
    {
        result_.seed = seed;
        result_.scenario = sc;
        if (opt_.failover_bound == 0)
            opt_.failover_bound = opt_.proto.suspect_timeout + 150'000;
        hosts_[0].id = 1;
        hosts_[1].id = 2;
        result_.copy_start = opt_.copy_start < 0 ? chance(0.5) : opt_.copy_start == 1;
        // A quarter of the schedules run with the nodes' boot grace (here 2T): a peer never
        // heard from is suspected only after it. A crash before the first message then takes
        // that much longer to detect.
        // Schedules last 1.5 s: a failed live copy is retried after 100 ms here (the rule, not
        // the nodes' 1 s, is what the schedules check).
        opt_.proto.copy_retry = std::min<Time>(opt_.proto.copy_retry, 100'000);
        // Likewise a backup whose VM stopped by itself waits 4T for the primary's end.
        opt_.proto.own_end_wait = std::min<Time>(opt_.proto.own_end_wait, 4 * opt_.proto.suspect_timeout);
        // A third of the schedules have a backup that replays slower than its primary logs
        // (one entry per ms against two): only the backlog rule (takes_log) keeps it from
        // falling behind for good, and the primary's unacked limit then slows the primary to
        // the backup's pace. Schedules are short, so both limits are 200 entries here; going
        // live may then replay up to 200 more entries at 1/ms.
        opt_.proto.max_replay_backlog = std::min<Seq>(opt_.proto.max_replay_backlog, 200);
        if (chance(1.0 / 3)) {
            replay_per_ms_ = 1;
            opt_.proto.max_unacked_entries = std::min<Seq>(opt_.proto.max_unacked_entries, 200);
            opt_.failover_bound += opt_.proto.max_replay_backlog * opt_.tick;
        }
        if (opt_.proto.boot_grace == 0 && chance(0.25)) {
            opt_.proto.boot_grace = 2 * opt_.proto.suspect_timeout;
            opt_.failover_bound += opt_.proto.boot_grace - opt_.proto.suspect_timeout;
        }
        if (result_.copy_start) {
            // As `xl create` on both hosts starts a Xen pair: the record nobody owns yet goes to
            // the configured primary, which claims it; the other host joins.
            record_ = {1, 0};
            for (std::size_t h = 0; h < 2; ++h) {
                const HostId self = hosts_[h].id, peer = hosts_[1 - h].id;
                hosts_[h].replica = plan_start(self, h == 0, record_.second) == StartAs::claim
                                        ? Replica::starting(opt_.proto, self, peer, record_.first, 0)
                                        : Replica::syncing_backup(opt_.proto, self, peer, 0);
            }
        } else {
            hosts_[0].replica = Replica::protected_primary(opt_.proto, 1, 2, 1, 0, 0);
            hosts_[1].replica = Replica::replaying_backup(opt_.proto, 2, 1, 1, 0, 0);
            record_ = {1, 1};
            primary_of_epoch_[1] = 1;
        }
        plan(sc);
    }

    Result run()
    {
        for (Time t = 0; t <= opt_.duration && result_.violation.empty(); t += opt_.tick) {
            run_until(t);
            for (std::size_t h = 0; h < 2 && result_.violation.empty(); ++h)
                tick(h);
        }
        run_until(opt_.duration);
        if (result_.violation.empty())
            check_liveness();
        return std::move(result_);
    }

private:
    // ---- schedule ---------------------------------------------------------------------------
    Time rand_time(Time lo, Time hi) { return std::uniform_int_distribution<Time>(lo, hi)(rng_); }
    bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

    void at(Time t, std::function<void()> f) { queue_.push(Pending{t, order_++, std::move(f)}); }

    void plan(Scenario sc)
    {
        if (opt_.calm)
            return;
        const Time d = opt_.duration;
        const Time T = opt_.proto.suspect_timeout;
        switch (sc) {
        case Scenario::primary_crash:
            // Liveness is promised for a network with bounded delays: a message from the dead
            // primary that arrives seconds late rightly restarts the backup's silence timer.
            crash_at_ = rand_time(d / 10, d / 2);
            at(crash_at_, [this] { crash(primary_index()); });
            liveness_check_ = true;
            opt_.late = 0;
            break;
        case Scenario::backup_crash: {
            const Time c = rand_time(d / 10, d / 2);
            at(c, [this] { crash(1 - primary_index()); });
            at(c + rand_time(T, 2 * T), [this] { restart_crashed(); });
            break;
        }
        case Scenario::partition: {
            const Time s = rand_time(d / 10, d / 2);
            at(s, [this] { cut(true, true); });
            at(s + rand_time(T / 2, 3 * T), [this] { cut(false, false); });
            break;
        }
        case Scenario::one_way: {
            const Time s = rand_time(d / 10, d / 2);
            const bool ab = chance(0.5);
            at(s, [this, ab] { cut(ab, !ab); });
            at(s + rand_time(T / 2, 3 * T), [this] { cut(false, false); });
            break;
        }
        case Scenario::storage_outage: {
            const Time s = rand_time(d / 10, d / 2);
            at(s, [this] { set_storage(false); });
            at(s + rand_time(T, 4 * T), [this] { set_storage(true); });
            if (chance(0.7)) {
                const Time p = s + rand_time(0, T);
                at(p, [this] { cut(true, true); });
                if (chance(0.5))
                    at(p + rand_time(T, 3 * T), [this] { cut(false, false); });
            }
            break;
        }
        case Scenario::diverges: {
            // Half the time the backup's replay diverges, else the primary's VM fails; the
            // survivor must not wait for silence (the heartbeats say the peer halted).
            const Time t = rand_time(d / 5, d / 2);
            const bool backup = chance(0.7);
            at(t, [this, backup] { fail_vm(backup); });
            takeover_check_ = true;
            break;
        }
        case Scenario::vm_ends: {
            const Time t = rand_time(d / 5, d / 2);
            at(t, [this] { end_vm(); });
            if (chance(0.3)) // and sometimes a fault right after it
                at(t + rand_time(0, T), [this] { chance(0.5) ? crash(1 - primary_index()) : cut(true, true); });
            else
                end_check_ = true;
            break;
        }
        case Scenario::chaos:
            for (int i = 0, n = static_cast<int>(rand_time(2, 6)); i < n; ++i) {
                const Time t = rand_time(d / 20, d - d / 10);
                switch (rand_time(0, 9)) {
                case 0: at(t, [this] { crash(static_cast<std::size_t>(rand_time(0, 1))); }); break;
                case 1: at(t, [this] { restart_crashed(); }); break;
                case 2: at(t, [this] { cut(chance(0.7), chance(0.7)); }); break;
                case 3: at(t, [this] { cut(false, false); }); break;
                case 4: at(t, [this] { set_storage(false); }); break;
                case 5: at(t, [this] { set_storage(true); }); break;
                case 6: at(t, [this] { operator_command(); }); break;
                case 7: at(t, [this] { fail_vm(chance(0.5)); }); break;
                case 8: at(t, [this] { end_vm(); }); break;
                default: at(t, [this] { restart_crashed(); cut(false, false); set_storage(true); }); break;
                }
            }
            break;
        }
    }

    void run_until(Time t)
    {
        while (!queue_.empty() && queue_.top().at <= t && result_.violation.empty()) {
            Pending p = queue_.top();
            queue_.pop();
            now_ = p.at;
            p.run();
        }
        now_ = t;
    }

    std::size_t primary_index() const
    {
        for (std::size_t h = 0; h < 2; ++h)
            if (hosts_[h].replica && is_primary(hosts_[h].replica->role()))
                return h;
        return 0;
    }

    // ---- faults -----------------------------------------------------------------------------
    void crash(std::size_t h)
    {
        if (!hosts_[h].replica)
            return;
        note("host " + std::to_string(hosts_[h].id) + " crashes");
        if (liveness_check_ && now_ == crash_at_ && hosts_[1 - h].replica &&
            hosts_[1 - h].replica->role() != Role::backup_replaying)
            liveness_check_ = false; // (a copy start: the backup had no copy yet, nothing to go live with)
        hosts_[h].replica.reset();
        hosts_[h].held.clear();
        hosts_[h].stalled = false;
        hosts_[h].vm_stopped = false;
        hosts_[h].stopped_here = false;
    }

    void restart_crashed()
    {
        for (std::size_t h = 0; h < 2; ++h)
            if (!hosts_[h].replica) {
                note("host " + std::to_string(hosts_[h].id) + " restarts as a fresh backup");
                hosts_[h].replica = Replica::syncing_backup(opt_.proto, hosts_[h].id, hosts_[1 - h].id, now_);
                // The logging channel reconnects to a receiver with less log than it acked,
                // often before the primary's detector noticed the silence.
                if (chance(0.5))
                    at(now_ + rand_time(1'000, 20'000), [this, p = 1 - h] {
                        note("host " + std::to_string(hosts_[p].id) + "'s channel: the backup lost the log it acked");
                        deliver(p, BackupRestarted{});
                    });
            }
    }

    // A VM that cannot go on (the backup's replay diverged, a copy it cannot apply): the
    // execution tells the protocol core.
    void fail_vm(bool backup)
    {
        const std::size_t p = primary_index();
        const std::size_t h = backup ? 1 - p : p;
        if (!hosts_[h].replica || hosts_[h].replica->role() == Role::halted)
            return;
        if (backup && chance(0.3)) {
            // The backup's guest crashes only there, or the administrator destroys it there.
            stop_here(h, chance(0.3));
            return;
        }
        note("host " + std::to_string(hosts_[h].id) + "'s VM fails (" + (backup ? "backup" : "primary") + ")");
        deliver(h, VmFailed{"the replay diverged"});
    }

    // The backup's VM stops by itself in replay (its guest's shutdown replayed, or a crash or
    // a destroy there).
    void stop_here(std::size_t h, bool destroyed)
    {
        Host& host = hosts_[h];
        if (!host.replica || !is_backup(host.replica->role()) || host.stopped_here)
            return;
        host.stopped_here = true;
        note("host " + std::to_string(host.id) + "'s VM stops by itself in replay" + (destroyed ? " (destroyed)" : ""));
        deliver(h, VmStoppedHere{destroyed, destroyed ? "destroyed" : "the guest shut down"});
    }

    // The primary's guest shuts down: its end is the next log entry.
    void end_vm()
    {
        const std::size_t p = primary_index();
        Host& host = hosts_[p];
        if (!host.replica || !is_primary(host.replica->role()) || host.vm_stopped)
            return;
        host.vm_stopped = true;
        const Seq end = host.replica->logged() + 1;
        max_logged_[host.replica->epoch()] = std::max(max_logged_[host.replica->epoch()], end);
        note("host " + std::to_string(host.id) + "'s VM ends at entry " + std::to_string(end));
        deliver(p, VmEnded{end, "the guest shut down"});
        // Half the time the backup replays the shutdown too and its VM stops by itself, around
        // the time the end reaches it (before or after).
        if (chance(0.5))
            at(now_ + rand_time(0, opt_.proto.suspect_timeout), [this, p] { stop_here(1 - p, false); });
    }

    void cut(bool ab, bool ba)
    {
        cut_[0] = ab;
        cut_[1] = ba;
        note(std::string("network: 1->2 ") + (ab ? "cut" : "up") + ", 2->1 " + (ba ? "cut" : "up"));
    }

    void set_storage(bool up)
    {
        storage_up_ = up;
        note(std::string("storage ") + (up ? "reachable" : "unreachable"));
    }

    void operator_command()
    {
        for (std::size_t h = 0; h < 2; ++h) {
            if (!hosts_[h].replica)
                continue;
            if (hosts_[h].replica->role() == Role::backup_replaying && chance(0.5)) {
                note("operator: failover on host " + std::to_string(hosts_[h].id));
                deliver(h, OperatorFailover{});
                return;
            }
            if (hosts_[h].replica->role() == Role::primary_protected && chance(0.3)) {
                note("operator: unprotect on host " + std::to_string(hosts_[h].id));
                deliver(h, OperatorUnprotect{});
                return;
            }
        }
    }

    // ---- the VMs ----------------------------------------------------------------------------
    void tick(std::size_t h)
    {
        Host& host = hosts_[h];
        if (!host.replica)
            return;
        const Role r = host.replica->role();
        if (is_primary(r) && !host.stalled && !host.vm_stopped) {
            const Seq last = host.replica->logged() + rand_time(1, 3);
            max_logged_[host.replica->epoch()] = std::max(max_logged_[host.replica->epoch()], last);
            deliver(h, VmLogged{last});
            if (host.replica && chance(0.3)) {
                const Output o{next_output_id_++, last};
                host.held.push_back(o);
                deliver(h, VmOutput{o.id, o.seq});
            }
        } else if (r == Role::backup_replaying || r == Role::backup_arbitrating || r == Role::going_live) {
            // The backup's VM executes what its buffer holds, at most replay_per_ms_ entries.
            const Seq target = std::min(host.replica->received(), host.replica->executed() + replay_per_ms_);
            deliver(h, ReplayProgress{target});
        }
        if (hosts_[h].replica)
            deliver(h, Tick{});
    }

    // ---- the protocol -----------------------------------------------------------------------
    void deliver(std::size_t h, const Event& e)
    {
        if (!hosts_[h].replica)
            return;
        // A backup too far behind does not read its channel: the log stays unread (and so
        // unacked), as in a socket nobody reads, and the primary sends it again later. The
        // node reads a stream, so it may stop in the middle of what one message carries here.
        if (const auto* r = std::get_if<Received>(&e); r && std::holds_alternative<LogMsg>(r->msg) &&
                                                        hosts_[h].replica->role() == Role::backup_replaying) {
            const Replica& b = *hosts_[h].replica;
            if (!b.takes_log()) {
                ++result_.log_held;
                return;
            }
            LogMsg m = std::get<LogMsg>(r->msg);
            const Seq room_up_to = b.executed() + opt_.proto.max_replay_backlog;
            if (m.first <= b.received() + 1 && m.last > room_up_to) {
                ++result_.log_held;
                m.last = room_up_to;
                m.vm_end = false;
                return deliver(h, Received{m});
            }
        }
        const auto actions = hosts_[h].replica->step(now_, e);
        for (const auto& a : actions)
            perform(h, a);
        check_safety();
    }

    void perform(std::size_t h, const Action& a)
    {
        Host& host = hosts_[h];
        std::visit(
            [&](const auto& act) {
                using A = std::decay_t<decltype(act)>;
                if constexpr (std::is_same_v<A, Send>) {
                    send(h, act.msg);
                } else if constexpr (std::is_same_v<A, ReleaseOutputs>) {
                    release(h, act.up_to_id);
                } else if constexpr (std::is_same_v<A, DiscardOutput>) {
                    // The backup's VM drops its outputs; nothing leaves.
                } else if constexpr (std::is_same_v<A, StallVm>) {
                    host.stalled = true;
                } else if constexpr (std::is_same_v<A, ResumeVm>) {
                    host.stalled = false;
                } else if constexpr (std::is_same_v<A, RequestArbiter>) {
                    arbitrate(h, act);
                } else if constexpr (std::is_same_v<A, Fence>) {
                    note("host " + std::to_string(host.id) + " fences host " + std::to_string(act.loser));
                } else if constexpr (std::is_same_v<A, GoLive>) {
                    went_live(h, act.epoch);
                } else if constexpr (std::is_same_v<A, HaltVm>) {
                    ++result_.halts;
                    host.held.clear();
                    note("host " + std::to_string(host.id) + " halts: " + act.reason);
                } else if constexpr (std::is_same_v<A, StartReprotection>) {
                    reprotect(h);
                } else if constexpr (std::is_same_v<A, EndVm>) {
                    ++result_.ends;
                    note("host " + std::to_string(host.id) + " ends: " + act.reason);
                    // The primary ended with the backup's ack: the backup has the end in its
                    // buffer and must never take the VM over.
                    if (host.vm_stopped && act.reason.find("acknowledged the end") != std::string::npos)
                        end_acked_ = true;
                    host.held.clear();
                }
            },
            a);
    }

    void send(std::size_t from, const Message& m)
    {
        const std::size_t to = 1 - from;
        if (cut_[from] || chance(opt_.drop))
            return;
        const int copies = chance(opt_.duplicate) ? 2 : 1;
        const Time T = opt_.proto.suspect_timeout;
        for (int i = 0; i < copies; ++i) {
            const Time delay = chance(opt_.late) ? rand_time(T / 2, 3 * T) : rand_time(opt_.delay_min, opt_.delay_max);
            at(now_ + delay, [this, to, m] { deliver(to, Received{m}); });
        }
    }

    void arbitrate(std::size_t h, RequestArbiter req)
    {
        const HostId me = hosts_[h].id;
        const bool reachable = storage_up_;
        // With storage down, half the time the command still lands but its reply is lost.
        const bool lands = reachable || chance(0.5);
        at(now_ + rand_time(100, 2'000), [this, h, req, me, reachable, lands] {
            ArbiterDone done;
            if (lands) {
                if (record_.first == req.expected) {
                    record_ = {req.next, me};
                    done = {ArbiterOutcome::won, req.next, me};
                    note("arbiter: host " + std::to_string(me) + " moved the record to epoch " + std::to_string(req.next));
                } else {
                    done = {ArbiterOutcome::lost, record_.first, record_.second};
                }
            }
            if (!reachable)
                done = {ArbiterOutcome::unknown, 0, 0};
            deliver(h, done);
        });
    }

    void reprotect(std::size_t primary)
    {
        ++result_.reprotections;
        note("re-protection starts from host " + std::to_string(hosts_[primary].id));
        at(now_ + rand_time(20'000, 80'000), [this, primary] {
            const std::size_t backup = 1 - primary;
            Host& p = hosts_[primary];
            Host& b = hosts_[backup];
            const bool ok = p.replica && b.replica && p.replica->role() == Role::primary_alone &&
                            b.replica->role() == Role::backup_syncing && !cut_[0] && !cut_[1];
            if (!ok) {
                deliver(primary, SyncFailed{});
                return;
            }
            const Epoch e = p.replica->epoch();
            const Seq at_seq = p.replica->logged();
            note("re-protection done at entry " + std::to_string(at_seq));
            deliver(primary, SyncComplete{e, at_seq});
            deliver(backup, SyncComplete{e, at_seq});
        });
    }

    // ---- what the client sees, and the invariants -------------------------------------------
    void release(std::size_t h, std::uint64_t up_to)
    {
        Host& host = hosts_[h];
        const Epoch e = host.replica->epoch();
        while (!host.held.empty() && host.held.front().id <= up_to) {
            const Output o = host.held.front();
            host.held.pop_front();
            ++result_.outputs_released;
            // A deposed primary must not release anything once a successor is live.
            for (const auto& [live_epoch, live] : live_since_)
                if (live_epoch > e && live.second <= now_)
                    return violate("host " + std::to_string(host.id) + " released output " + std::to_string(o.id) +
                                   " (epoch " + std::to_string(e) + ") after host " + std::to_string(live.first) +
                                   " went live in epoch " + std::to_string(live_epoch));
            seen_.push_back({e, o.seq});
        }
    }

    void went_live(std::size_t h, Epoch e)
    {
        Host& host = hosts_[h];
        const Seq frozen = host.replica->executed();
        ++result_.failovers;
        note("host " + std::to_string(host.id) + " goes live in epoch " + std::to_string(e) + " at entry " +
             std::to_string(frozen));
        if (liveness_check_ && result_.failover_time == 0 && now_ >= crash_at_)
            result_.failover_time = now_ - crash_at_;
        live_since_[e] = {host.id, now_};
        if (host.stopped_here)
            return violate("host " + std::to_string(host.id) + " went live although its VM had stopped by itself");
        if (end_acked_)
            return violate("host " + std::to_string(host.id) + " went live after the VM ended with its ack");
        // Every output a client saw must be covered by the log this replica replayed.
        for (const auto& [epoch, seq] : seen_)
            if (epoch < e && seq > frozen)
                return violate("host " + std::to_string(host.id) + " went live at entry " + std::to_string(frozen) +
                               " but a client saw an output after entry " + std::to_string(seq) + " of epoch " +
                               std::to_string(epoch));
    }

    void check_safety()
    {
        if (!result_.violation.empty())
            return;
        for (std::size_t h = 0; h < 2; ++h) {
            const auto& r = hosts_[h].replica;
            if (!r)
                continue;
            if (is_primary(r->role())) {
                auto [it, fresh] = primary_of_epoch_.try_emplace(r->epoch(), hosts_[h].id);
                if (!fresh && it->second != hosts_[h].id)
                    return violate("two primaries in epoch " + std::to_string(r->epoch()) + ": hosts " +
                                   std::to_string(it->second) + " and " + std::to_string(hosts_[h].id));
            }
            const Role role = r->role();
            // (going_live has already taken the next epoch; its log is the previous epoch's.)
            if ((role == Role::backup_replaying || role == Role::backup_arbitrating) &&
                r->executed() > max_logged_[r->epoch()])
                return violate("backup host " + std::to_string(hosts_[h].id) + " executed entry " +
                               std::to_string(r->executed()) + " beyond what the primary logged");
            if (role == Role::backup_replaying && r->executed() > r->received())
                return violate("backup executed past its buffer");
            // The backlog rule: a backup never holds more than the limit unreplayed.
            if (role == Role::backup_replaying && r->received() - r->executed() > opt_.proto.max_replay_backlog)
                return violate("backup host " + std::to_string(hosts_[h].id) + " holds " +
                               std::to_string(r->received() - r->executed()) + " entries it has not replayed, over " +
                               std::to_string(opt_.proto.max_replay_backlog));
        }
        if (hosts_[0].replica && hosts_[1].replica && is_primary(hosts_[0].replica->role()) &&
            is_primary(hosts_[1].replica->role()) && hosts_[0].replica->epoch() == hosts_[1].replica->epoch())
            return violate("both hosts are primary in epoch " + std::to_string(hosts_[0].replica->epoch()));
    }

    void check_liveness()
    {
        // A halted peer says so: the survivor runs the VM (alone) by the end of the run.
        if (takeover_check_) {
            bool running = false;
            for (const auto& h : hosts_)
                running = running || (h.replica && is_primary(h.replica->role()));
            if (!running)
                return violate("a replica's VM failed and no host runs the VM at the end of the run");
        }
        // The VM's end with nothing else going wrong: both replicas end, neither takes over.
        if (end_check_)
            for (const auto& h : hosts_)
                if (h.replica && h.replica->role() != Role::ended && h.replica->role() != Role::backup_syncing)
                    return violate("the VM ended, but host " + std::to_string(h.id) + " is " +
                                   std::string(role_name(h.replica->role())) + " at the end of the run");
        if (!liveness_check_)
            return;
        if (result_.failover_time == 0)
            violate("the primary crashed at " + std::to_string(crash_at_) + " us and the backup never went live");
        else if (result_.failover_time > opt_.failover_bound)
            violate("the backup went live " + std::to_string(result_.failover_time) + " us after the crash, over the " +
                    std::to_string(opt_.failover_bound) + " us bound");
    }

    void note(const std::string& what)
    {
        std::string line = std::to_string(now_) + " us: " + what;
        if (opt_.trace)
            std::printf("%s\n", line.c_str());
        recent_.push_back(std::move(line));
        if (recent_.size() > kRecent)
            recent_.pop_front();
    }

    void violate(const std::string& what)
    {
        if (!result_.violation.empty())
            return;
        note("VIOLATION: " + what);
        result_.violation = what;
        result_.recent.assign(recent_.begin(), recent_.end());
    }

    std::mt19937_64 rng_;
    Seq replay_per_ms_ = 80;
    Options opt_;
    Result result_;
    Time now_ = 0;
    std::uint64_t order_ = 0;
    std::priority_queue<Pending, std::vector<Pending>, std::greater<>> queue_;
    std::array<Host, 2> hosts_;
    std::array<bool, 2> cut_{false, false}; // [0]: 1->2, [1]: 2->1
    bool storage_up_ = true;
    std::pair<Epoch, HostId> record_;
    std::map<Epoch, HostId> primary_of_epoch_;
    std::map<Epoch, Seq> max_logged_;
    std::map<Epoch, std::pair<HostId, Time>> live_since_;
    std::vector<std::pair<Epoch, Seq>> seen_;
    std::uint64_t next_output_id_ = 1;
    bool liveness_check_ = false;
    bool end_acked_ = false;
    bool takeover_check_ = false, end_check_ = false;
    Time crash_at_ = 0;
    std::deque<std::string> recent_;
};

} // namespace

Result run_schedule(std::uint64_t seed, const Options& opt)
{
    std::mt19937_64 pick(seed ^ 0x9e3779b97f4a7c15ull);
    const auto sc = static_cast<Scenario>(pick() % kScenarioCount);
    World w(seed, sc, opt);
    return w.run();
}

} // namespace xenft::sim
