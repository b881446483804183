// One replica of a fault-tolerant pair at run time: what xenftd runs for a protected VM on one
// host, for either backend. It wires the pieces together (ARCHITECTURE.md, "Layers"): the VM's
// execution (execution.hpp: KVM or Xen), the logging channel (LogSender / LogReceiver over
// TLS), the failure detector's heartbeats, the arbiter on the shared LUN, and the protocol
// core (protocol::Replica), which makes every decision of the pair; the node only carries out
// its actions, and the execution only runs the VM.
//
// Two threads: the VM thread runs the guest (recording or replaying, through the execution)
// and never blocks on the network; the control thread pumps the channel and heartbeats, feeds
// the protocol core and carries out its actions (release outputs, stall, test-and-set, fence,
// go live, halt, end, live copy).
//
// How a node starts:
// - both replicas from the same guest image at exit 0 (KVM: protection from boot):
//   start_as_primary on one host, a backup on the other; a host whose arbitration record is
//   past `epoch` joins as a backup instead (the pair went on without it);
// - or with a live copy for the backup (backup_needs_copy: Xen, where `xl create` boots the
//   domain on both hosts): the arbitration record decides (protocol::plan_start): its owner,
//   or on a record nobody owns the configured primary, claims the next epoch and runs the VM
//   alone; the other host joins as a backup;
// - or joining (join): it announces itself, and a primary running alone sends it a live copy
//   of the running VM (docs/pair.md, "Re-protection"), after which it replays from there.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "xenft/arbiter/arbiter.hpp"
#include "xenft/common/log_line.hpp"
#include "xenft/channel/channel.hpp"
#include "xenft/daemon/execution.hpp"
#include "xenft/detector/heartbeat_socket.hpp"
#include "xenft/devices/host_io.hpp"
#include "xenft/engine/machine.hpp"
#include "xenft/protocol/replica.hpp"

namespace xenft::daemon {

struct NodeConfig {
    std::uint64_t vm_id = 0;
    protocol::HostId self = 0, peer = 0;
    bool start_as_primary = true;
    // Start as a backup that needs a live copy from the running primary. Also chosen by start()
    // when the arbitration record is past `epoch`: the pair went on without this host.
    bool join = false;
    protocol::Epoch epoch = 1; // the pair's epoch, as the arbitration record holds it
    // The backend cannot start both replicas from one boot (Xen): the arbitration record
    // decides who runs the VM, and the backup always starts from a live copy.
    bool backup_needs_copy = false;
    // The pair's rules' timing. A node gives a peer it has not heard from yet 10 s to start
    // (both hosts of a pair protected from boot start within that of each other).
    protocol::Config protocol = [] {
        protocol::Config c;
        c.boot_grace = 10'000'000;
        return c;
    }();

    // The VM, made once the node knows its role (true: it records; false: it takes a copy or
    // replays from boot). Unset: a KvmExecution of `backend` with the fields below.
    std::function<Expected<std::unique_ptr<Execution>, std::string>(bool records)> make_execution;

    // KVM: a backend already created (with the guest loaded) and the machine's devices.
    std::unique_ptr<engine::Backend> backend;
    engine::MachineSpec machine;
    std::uint64_t digest_every = 20'000; // exits between state digests in the log
    // The outside world when live. Owned by the caller; must outlive the node.
    devices::TapDevice* tap = nullptr;
    devices::BlockPort* disk = nullptr;

    // The logging channel: a backup listens on channel_listen, a primary connects to the
    // peer's channel_peer (either host can be either, over time). `channel` holds the rest.
    channel::ChannelConfig channel;
    SocketAddress channel_listen, channel_peer;
    const channel::TlsContext* tls_client = nullptr; // this host as primary
    const channel::TlsContext* tls_server = nullptr; // this host as backup
    detector::HeartbeatSocketConfig heartbeat;
    arbiter::ArbiterConfig arbiter;
    // The guest disk's own session on the shared LUN, if it has one (IscsiStore::
    // register_again): registered again after each PREEMPT this host sends
    // (Arbiter::add_own_session), so fencing the peer cannot leave this host's disk fenced.
    arbiter::Arbiter::OwnSession disk_session;
    std::uint32_t record_owner = 0; // the arbitration record's owner at `epoch`

    // Where log lines go, with their priority (default: stderr, write_log_line). They name the
    // VM, the peer and the cause.
    std::function<void(LogPriority, const std::string&)> log;
};

// A live copy's progress, as the CLI shows it.
struct CopyProgress {
    bool active = false;
    bool sending = false;           // this host sends the copy (primary) or takes it (backup)
    unsigned round = 0;             // 1: every page; then the pages dirtied meanwhile
    std::uint64_t pages_total = 0;  // of the first round
    std::uint64_t pages_done = 0;   // of the first round
    std::uint64_t pages_copied = 0; // every round
    double mib_per_s = 0;
    double eta_s = 0;               // to the end of the first round
    double percent() const { return pages_total ? 100.0 * static_cast<double>(pages_done) / static_cast<double>(pages_total) : 0; }
    // A new copy begins: its progress from zero; the last copy's figures stay until it ends.
    void start(bool is_sending, std::uint64_t first_round_pages)
    {
        active = true;
        sending = is_sending;
        round = 1;
        pages_total = first_round_pages;
        pages_done = pages_copied = 0;
        mib_per_s = eta_s = 0;
        last_error.clear();
    }
    // The last finished copy (or the reason the last one failed).
    unsigned copies_done = 0;
    std::string last_summary; // what the execution said of it
    double last_seconds = 0, last_pause_ms = 0;
    unsigned last_rounds = 0;
    std::string last_error;
};

struct NodeStatus {
    protocol::Role role = protocol::Role::starting;
    protocol::Epoch epoch = 0;
    std::uint64_t exits = 0;
    std::uint64_t logged = 0, acked = 0, received = 0, executed = 0;
    std::size_t held_outputs = 0;
    std::uint64_t released_outputs = 0; // that left through this host's gate
    bool channel_up = false;            // the logging channel is connected
    double lag_ms = 0;          // primary: age of the oldest unacked entry
    double log_mbit_s = 0;      // primary: logging-channel bytes on the wire, last second
    std::string reason;
    std::string failure; // the VM stopped for this reason (empty while it runs)
    std::map<std::string, std::uint64_t> heartbeats_rejected; // by reason
    CopyProgress copy;
    // The last time this host took over the VM (went live, or continued alone).
    std::uint64_t last_failover_unix_ms = 0;
    std::string last_failover; // what happened, e.g. "went live in epoch 2 (primary silent)"
    nlohmann::json backend = nlohmann::json::object(); // what the execution shows (Xen: domain, digests)
};

class ChannelCopySink;

class Node {
public:
    // Opens the arbiter, the heartbeat socket and the channel, makes the VM's execution, and
    // starts both threads. The error names the part that failed and why; nothing started.
    static Expected<std::unique_ptr<Node>, std::string> start(NodeConfig cfg);
    // Stops both threads and closes everything, sending nothing more: to the peer this looks
    // like the host dying. A VM still running here is stopped (Xen: paused) first.
    ~Node();
    Node(const Node&) = delete;
    Node& operator=(const Node&) = delete;

    NodeStatus status() const;
    // An operator's request (OperatorFailover on the backup, OperatorUnprotect and
    // OperatorProtect on the primary), handed to the protocol core by the control thread.
    void request(const protocol::Event& e);
    // The backup's logging-channel port (useful when it listens on port 0).
    std::uint16_t channel_port() const noexcept { return receiver_ ? receiver_->port() : 0; }
    // Whether the VM was halted and this node will not run it again: xenftd then starts a
    // new node that joins the pair as a backup (KVM).
    bool halted() const noexcept { return halted_; }
    // The VM ended on purpose and this node is done with it (its VM thread finished).
    bool ended() const noexcept { return ended_ && vm_done_; }
    // The VM thread finished (ended, halted, or the VM stopped here).
    bool vm_done() const noexcept { return vm_done_; }
    // The VM stopped on this host by itself (the guest shut down, the domain was destroyed):
    // the pair ends once the backup acked that (ended()), or the VM is gone here.
    bool vm_stopped_here() const noexcept { return vm_stopped_; }

private:
    // What the VM thread applied of a copy, for the control thread to report.
    struct CopyApplied {
        std::uint64_t attempt = 0;
        bool ok = false;
        std::string error;
        std::uint64_t at = 0; // the last log entry the copy covers
    };

    explicit Node(NodeConfig cfg);
    void vm_loop();
    void record_loop();
    // The joining backup: applies copy records until the primary confirmed one.
    bool receive_copy();
    void replay_loop();
    void vm_failed(const std::string& why);
    void copy_reported(const CopyReport& r, std::vector<protocol::Event>& events);
    void control_loop();
    void pump_channel();
    // Hands what the channel received to the VM thread and the protocol core (a replaying backup).
    void take_received_log();
    void step(const protocol::Event& e);
    void act(const protocol::Action& a);
    void after_step();
    void start_copy();
    void say(const std::string& line, LogPriority priority = LogPriority::info) const;
    void took_over(const std::string& what);
    protocol::Time now_us() const;
    std::shared_ptr<channel::LogSender> sender() const;

    NodeConfig cfg_;
    std::unique_ptr<Execution> exec_;
    std::optional<arbiter::Arbiter> arbiter_;
    std::optional<detector::HeartbeatSocket> heartbeats_;
    std::optional<channel::LogReceiver> receiver_; // control thread
    protocol::Replica replica_;                    // control thread
    std::uint32_t record_owner_ = 0;               // control thread: the record's owner now
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    bool records_ = true;                          // the VM thread starts recording (else a backup)

    // Between the threads.
    mutable std::mutex mu_;
    std::shared_ptr<channel::LogSender> sender_;     // a primary's channel to its backup
    std::shared_ptr<channel::LogSender> copy_to_;    // a copy for the VM thread to start
    protocol::Epoch copy_epoch_ = 0;
    std::deque<protocol::Event> vm_events_;          // VM thread -> control thread
    std::deque<logformat::Entry> inbox_;             // control thread -> VM thread (backup)
    std::deque<channel::LogReceiver::ReceivedCopy> copy_inbox_; // likewise, while joining
    std::optional<CopyApplied> copy_applied_;        // VM thread -> control thread
    std::atomic<bool> stopping_{false}, stalled_{false}, halted_{false}, ended_{false}, vm_done_{false};
    std::atomic<bool> vm_stopped_{false};
    std::atomic<bool> final_replay_{false}, go_live_{false}, replaying_{false};
    std::atomic<bool> streaming_{false}; // the VM thread appends its log to sender_
    std::atomic<protocol::Epoch> log_epoch_{1}; // ... in this epoch
    std::atomic<protocol::Seq> stream_from_{0}; // ... its entries after this one (the copy's)
    std::atomic<bool> synced_{false};    // the joining backup's copy was confirmed
    std::unique_ptr<ChannelCopySink> sink_; // VM thread: the copy under way
    bool first_output_seen_ = false;     // control thread: after going live
    protocol::Role last_role_ = protocol::Role::starting; // control thread
    std::uint64_t copy_at_ = 0;          // control thread: what the applied copy covers
    std::atomic<std::uint64_t> executed_{0};
    std::string failure_;
    NodeStatus status_; // a copy the control thread refreshes (copy progress, backend: the VM thread)

    std::thread vm_thread_, control_thread_;
};

} // namespace xenft::daemon
