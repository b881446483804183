// The FT protocol core: one replica's role in a fault-tolerant pair, as a pure state machine.
//
// Like etcd's raft, it has no sockets, threads or clocks: the daemon (or the simulation in
// tests/) feeds it events stamped with the local monotonic time and carries out the actions it
// returns. That is what lets tests/protocol_test run ten thousand fault schedules in seconds.
//
// The rules it enforces (ARCHITECTURE.md, "Protocol rules"):
// - Output rule: an output produced after log entry S leaves the primary only once the backup
//   acked S, and only while the primary holds a lease: the backup's latest message echoed a
//   primary timestamp e with now < e + T - margin. The backup cannot go live before T of
//   silence after its last receipt (>= e), so a deposed primary never releases anything after
//   its successor went live.
// - Suspicion only after T of silence on every kind of traffic (heartbeats, log, acks).
// - Test-and-set (epoch E -> E+1 on the shared LUN) before a backup goes live or a primary
//   continues alone; the loser halts for good; "unknown" means keep trying, go nowhere, release
//   nothing.
// - The backup acks only what is in its buffer and, once it suspects the primary, freezes: it
//   accepts and acks nothing more and replays its whole buffer before going live.
// - The backup takes no more log while max_replay_backlog received entries wait for replay
//   (takes_log()): the primary's unacked log then grows until its VM stalls, so a backup slower
//   than its primary slows the primary down instead of falling behind without bound, and what
//   a failover must replay before going live stays bounded.
// - Messages from an older epoch are ignored; one from a newer epoch deposes the receiver.
// - A replica whose VM cannot go on (it diverged, a copy it cannot take) halts and says so in
//   its heartbeats: its peer does not wait for silence but runs the test-and-set at once.
// - The VM's end is not a failure: the primary logs it (VmEnded), and a backup that has the
//   end in its buffer replays up to it and ends too instead of going live.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace xenft::protocol {

using Time = std::uint64_t; // microseconds on the replica's own monotonic clock
using Epoch = std::uint64_t;
using Seq = std::uint64_t;
using HostId = std::uint32_t;

enum class Role : std::uint8_t {
    starting,            // claiming the arbitration record before running the VM
    primary_alone,       // running the VM, no backup: outputs leave at once
    primary_protected,   // running the VM, streaming the log, outputs wait for acks
    primary_arbitrating, // backup suspected: outputs held until the test-and-set decides
    backup_syncing,      // waiting for a copy of the primary's VM (re-protection)
    backup_replaying,    // replaying the log, acking, dropping outputs
    backup_arbitrating,  // primary suspected: log frozen, test-and-set in progress
    going_live,          // won: replaying the rest of the buffer before going live
    halted,              // lost, deposed, or the VM failed here: it is stopped for good
    ended,               // the VM ended on purpose (the guest shut down, the domain destroyed)
};

std::string_view role_name(Role r) noexcept;
bool is_primary(Role r) noexcept; // primary_alone, primary_protected, primary_arbitrating
bool is_backup(Role r) noexcept;  // backup_syncing, backup_replaying, backup_arbitrating, going_live
// One fixed word per role, for scripts (`xenft status --json`'s "role"): "starting",
// "primary-protected", "primary-alone", "primary-arbitrating", "backup-syncing",
// "backup-replaying", "backup-arbitrating", "going-live", "halted", "ended".
std::string_view role_word(Role r) noexcept;

// How a replica whose VM starts from boot with a live copy for the backup (the Xen backend:
// `xl create` on both hosts) enters the pair, from the arbitration record as it is now. The
// record's owner runs the VM (it claims the next epoch first, so a peer that took the VM over
// meanwhile wins); a record nobody owns yet goes to the configured primary; every other host
// joins as a backup and gets a live copy. So a host started again after its peer went live
// never runs a second copy: the record names the peer.
enum class StartAs : std::uint8_t { claim, join };
StartAs plan_start(HostId self, bool configured_primary, HostId record_owner) noexcept;
// A pair protected from boot (the KVM backend: both replicas start from the same image): a
// record past the epoch the pair was set up in means the pair went on without this host (it
// failed over, or the other host ran alone), so this host can only join as a backup.
inline bool pair_went_on(Epoch configured, Epoch record_epoch) noexcept { return record_epoch > configured; }

struct Config {
    Time heartbeat_interval = 50'000;  // H
    Time suspect_timeout = 250'000;    // T: silence before the peer is suspected
    Time lease_margin = 25'000;        // subtracted from T for clock-rate differences
    Time arbiter_retry = 100'000;      // after an "unknown" test-and-set
    Time retransmit_interval = 50'000; // resend unacked log after this long without progress
    Seq max_unacked_entries = 4096;    // the primary's VM stalls beyond this
    Seq max_replay_backlog = 16384;    // the backup takes no more log beyond this (takes_log)
    Time end_ack_timeout = 5'000'000;  // the primary's wait for the ack of its VM's end
    // A pair protected from boot forms when the peer's first message arrives: a peer never
    // heard from has not failed, it may not have started yet. Until then a replica suspects it
    // only after this long from its own start (if longer than T); once heard, after T. 0: none.
    Time boot_grace = 0;
    // After a failed live copy, the next starts no sooner than this (a backup that asks again
    // at every heartbeat but cannot be reached is not sent a copy every interval).
    Time copy_retry = 1'000'000;
    // A backup whose VM stopped by itself waits this long for the primary's end in its buffer
    // before it takes the stop for a failure here (VmStoppedHere).
    Time own_end_wait = 3'000'000;

    // Test-only switches that break a rule, so tests can show the simulation catches it.
    bool unsafe_skip_test_and_set = false;
    bool unsafe_release_before_ack = false;

    // Empty if usable; otherwise says which setting is wrong and why.
    std::string validate() const;
};

// ---- messages between the two replicas ---------------------------------------------------------

struct LogMsg {        // primary -> backup: entries first..last (payload travels with it)
    Epoch epoch = 0;
    Seq first = 0;
    Seq last = 0;
    Time sent_at = 0;  // primary's clock
    bool vm_end = false; // entry `last` is the VM's end: nothing follows it
};
struct AckMsg {        // backup -> primary: everything up to acked is in the backup's buffer
    Epoch epoch = 0;
    Seq acked = 0;
    Time echo = 0;     // latest primary sent_at the backup has received
};
struct HeartbeatMsg {
    Epoch epoch = 0;
    Role role = Role::starting;
    Time sent_at = 0;
    Time echo = 0;     // latest peer sent_at received
    Seq position = 0;  // primary: last logged; backup: last received (doubles as an ack)
};
using Message = std::variant<LogMsg, AckMsg, HeartbeatMsg>;

// ---- events in ---------------------------------------------------------------------------------

struct Tick {};
struct VmLogged { Seq last; };                 // the VM appended log entries up to last
struct VmOutput { std::uint64_t id; Seq seq; }; // an output produced after entry seq
struct Received { Message msg; };
enum class ArbiterOutcome : std::uint8_t { won, lost, unknown };
struct ArbiterDone {
    ArbiterOutcome outcome = ArbiterOutcome::unknown;
    Epoch record_epoch = 0; // what the record holds now (won/lost)
    HostId record_owner = 0;
};
struct ReplayProgress { Seq executed; };       // backup VM executed entries up to this
struct SyncComplete { Epoch epoch; Seq at; };  // re-protection done: both sides at entry `at`
struct SyncFailed {};
// The logging channel's connection broke / came back. Losing it changes nothing by itself
// (suspicion needs silence on heartbeats too); when it is back the primary resends every
// unacked entry, since the old connection's buffers are gone.
struct ChannelLost {};
struct ChannelRestored {};
struct OperatorFailover {};                    // on the backup: take over now
struct OperatorUnprotect {};                   // on the primary: drop the backup, run alone,
                                               // and give no joining backup a copy until
struct OperatorProtect {};                     // on the primary: joining backups get copies again
// The backup's channel answered with less log than it had acked: it restarted (from boot, in
// this epoch) and cannot continue. The primary takes the next epoch and runs alone; the
// restarted backup, deposed, rejoins with a live copy.
struct BackupRestarted {};
// This replica's VM cannot go on: the backup's replay diverged (a state digest differs), a
// device event it never reached, a copy it cannot apply, the execution backend failed. It
// halts, and its heartbeats say so: the peer need not wait for silence.
struct VmFailed { std::string reason; };
// The primary's VM ended on purpose (the guest shut down or crashed, the domain was destroyed);
// entry `seq` of its log says so. Once the backup acked it the pair ends; a backup that cannot
// ack it within end_ack_timeout may still take the VM over (it may be the survivor of a double
// failure), and the primary's held outputs are dropped.
struct VmEnded { Seq seq; std::string reason; };
// The backup's VM stopped by itself in replay: the guest shut down or crashed as it did on the
// primary (whose end is then on its way in the log), or it diverged and crashed only here; or
// the administrator destroyed it on this host (`destroyed`). A backup whose VM stopped never
// goes live and suspects nobody; it ends with the primary's end once that is in its buffer,
// and halts if the end is not there within own_end_wait (at once if destroyed).
struct VmStoppedHere { bool destroyed = false; std::string reason; };

using Event = std::variant<Tick, VmLogged, VmOutput, Received, ArbiterDone, ReplayProgress, SyncComplete, SyncFailed,
                           ChannelLost, ChannelRestored, OperatorFailover, OperatorUnprotect, OperatorProtect,
                           BackupRestarted, VmFailed, VmEnded, VmStoppedHere>;

// ---- actions out -------------------------------------------------------------------------------

struct Send { Message msg; };
struct ReleaseOutputs { std::uint64_t up_to_id; }; // every held output with id <= up_to_id
struct DiscardOutput { std::uint64_t id; };
struct StallVm {};
struct ResumeVm {};
struct RequestArbiter { Epoch expected; Epoch next; }; // test-and-set the record expected -> next (owner: me)
struct Fence { HostId loser; };
struct GoLive { Epoch epoch; };
struct HaltVm { std::string reason; };
struct StartReprotection {};
struct EndVm { std::string reason; }; // the VM ended on purpose: this replica is done

using Action = std::variant<Send, ReleaseOutputs, DiscardOutput, StallVm, ResumeVm, RequestArbiter, Fence, GoLive,
                            HaltVm, StartReprotection, EndVm>;

class Replica {
public:
    // A replica that must claim the record (expected epoch `known`) before running its VM.
    static Replica starting(const Config& c, HostId self, HostId peer, Epoch known, Time now);
    // A pair already protected in `epoch` with the log at `position` on both sides.
    static Replica protected_primary(const Config& c, HostId self, HostId peer, Epoch epoch, Seq position, Time now);
    static Replica replaying_backup(const Config& c, HostId self, HostId peer, Epoch epoch, Seq position, Time now);
    // A fresh backup host announcing itself to the primary, waiting to be synced.
    static Replica syncing_backup(const Config& c, HostId self, HostId peer, Time now);

    std::vector<Action> step(Time now, const Event& e);

    Role role() const noexcept { return role_; }
    Epoch epoch() const noexcept { return epoch_; }
    HostId self() const noexcept { return self_; }
    Seq logged() const noexcept { return logged_; }     // primary
    Seq acked() const noexcept { return acked_; }       // primary
    Seq received() const noexcept { return received_; } // backup
    Seq executed() const noexcept { return executed_; } // backup
    // Whether this backup reads more log now: while it waits for a live copy, or while it
    // replays with fewer than max_replay_backlog received entries not yet executed. The node
    // stops reading the channel otherwise, so nothing more is acked.
    bool takes_log() const noexcept;
    std::size_t held_outputs() const noexcept { return outputs_.size(); }
    Time lease_until() const noexcept { return lease_until_; }
    // Why the replica last began arbitrating or halted, for status and logs.
    const std::string& reason() const noexcept { return reason_; }

private:
    Replica(const Config& c, HostId self, HostId peer, Role role, Epoch epoch, Time now);

    void on_tick(Time now);
    void on_message(Time now, const Message& m);
    void on_log(const LogMsg& m);
    void on_ack(Time now, Seq acked, Time echo);
    void on_arbiter(Time now, const ArbiterDone& d);
    void on_logged(Time now, Seq last);
    void on_output(Time now, const VmOutput& o);

    void send_heartbeat(Time now);
    void ship_log(Time now, Seq first, Seq last);
    void release_acked(Time now);
    void release_all();
    void apply_flow_control();
    void begin_arbitration(Time now, Role arbitrating_role, Time not_before, const std::string& why);
    void request_arbiter();
    void won(Epoch epoch);

    // Appends an action. Constructing it in place (rather than moving a temporary variant)
    // also sidesteps GCC 12's false -Wmaybe-uninitialized on variants holding strings.
    template <class A>
    void emit(A&& action)
    {
        out_.emplace_back(std::in_place_type<std::decay_t<A>>, std::forward<A>(action));
    }
    void maybe_go_live();
    void halt(const std::string& reason);
    void on_vm_ended(Time now, const VmEnded& e);
    void on_vm_stopped_here(Time now, const VmStoppedHere& e);
    bool backup_may_take_over() const noexcept;
    void maybe_end(Time now);
    void end(const std::string& reason);

    Config cfg_;
    HostId self_;
    HostId peer_;
    Role role_;
    Epoch epoch_;
    std::vector<Action> out_;

    Time last_heard_;        // any message from the peer in our epoch
    bool peer_heard_ = false; // any message at all, or a live copy exchanged (boot_grace)
    Time last_heartbeat_ = 0;
    Time echo_ = 0;          // latest peer sent_at received (frozen while arbitrating)

    // primary
    Seq logged_ = 0;
    Seq sent_ = 0;
    Seq acked_ = 0;
    Time last_log_send_ = 0;
    Time lease_until_ = 0;
    bool stalled_ = false;
    bool reprotecting_ = false;
    bool reprotect_allowed_ = true; // cleared by OperatorUnprotect, set by OperatorProtect
    Time next_copy_at_ = 0;         // copy_retry after a failed live copy
    bool own_stop_ = false;         // backup: its VM stopped by itself (VmStoppedHere)
    Time own_stop_since_ = 0;
    std::string own_stop_reason_;
    std::deque<VmOutput> outputs_;

    // backup
    Seq received_ = 0;
    Seq executed_ = 0;

    // the VM's end: its entry in the log (0: not ended), and when the primary logged it
    Seq end_seq_ = 0;
    Time end_since_ = 0;
    std::string end_reason_;

    // arbitration
    bool arbiter_in_flight_ = false;
    Time next_arbiter_attempt_ = 0;
    std::string reason_;
};

} // namespace xenft::protocol
