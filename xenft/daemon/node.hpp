// One replica of a fault-tolerant pair at run time: what xenftd runs for a protected VM on one
// host. It wires the pieces together (ARCHITECTURE.md, "Layers"):
//   the machine (backend + device models) run by a Recorder (primary) or a Replayer (backup),
//   the logging channel (LogSender / LogReceiver over TLS), the failure detector's heartbeats,
//   the arbiter on the shared LUN, the output gate, and the protocol core (protocol::Replica),
//   which decides; the node only carries out its actions.
//
// Two threads: the VM thread runs the guest (recording or replaying) and never blocks on the
// network; the control thread pumps the channel and heartbeats, feeds the protocol core and
// carries out its actions (release outputs, stall, test-and-set, go live, halt).
//
// Both replicas start from the same guest image at exit 0 (protection from boot, as `xl create`
// with ft= does); creating a backup from a running primary is to come.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "xenft/arbiter/arbiter.hpp"
#include "xenft/channel/channel.hpp"
#include "xenft/detector/heartbeat_socket.hpp"
#include "xenft/engine/machine.hpp"
#include "xenft/engine/output_gate.hpp"
#include "xenft/engine/replay.hpp"
#include "xenft/protocol/replica.hpp"

namespace xenft::daemon {

struct NodeConfig {
    std::uint64_t vm_id = 0;
    protocol::HostId self = 0, peer = 0;
    bool start_as_primary = true;
    protocol::Epoch epoch = 1; // the pair's epoch, as the arbitration record holds it
    protocol::Config protocol;

    // The VM: a backend already created (with the guest loaded) and the machine's devices.
    std::unique_ptr<engine::Backend> backend;
    engine::MachineSpec machine;
    std::uint64_t digest_every = 20'000; // exits between state digests in the log

    // The outside world when live. Owned by the caller; must outlive the node.
    devices::TapDevice* tap = nullptr;
    devices::BlockPort* disk = nullptr;

    channel::ChannelConfig channel; // address: the backup's listening address
    const channel::TlsContext* tls = nullptr;
    detector::HeartbeatSocketConfig heartbeat;
    arbiter::ArbiterConfig arbiter;
    std::uint32_t record_owner = 0; // the arbitration record's owner at `epoch`

    // Where log lines go (default: stderr). They name the VM, the peer and the cause.
    std::function<void(const std::string&)> log;
};

struct NodeStatus {
    protocol::Role role = protocol::Role::starting;
    protocol::Epoch epoch = 0;
    std::uint64_t exits = 0;
    std::uint64_t logged = 0, acked = 0, received = 0, executed = 0;
    std::size_t held_outputs = 0;
    std::string reason;
    std::string failure; // the VM stopped for this reason (empty while it runs)
    std::map<std::string, std::uint64_t> heartbeats_rejected; // by reason
};

class Node {
public:
    // Opens the arbiter, the heartbeat socket and the channel, and starts both threads. The
    // error names the part that failed and why.
    static Expected<std::unique_ptr<Node>, std::string> start(NodeConfig cfg);
    // Stops both threads and closes everything, sending nothing more: to the peer this looks
    // like the host dying.
    ~Node();
    Node(const Node&) = delete;
    Node& operator=(const Node&) = delete;

    NodeStatus status() const;
    // An operator's request (OperatorFailover on the backup, OperatorUnprotect on the
    // primary), handed to the protocol core by the control thread.
    void request(const protocol::Event& e);
    // The backup's logging-channel port (useful when it listens on port 0).
    std::uint16_t channel_port() const noexcept { return receiver_ ? receiver_->port() : 0; }
    engine::Machine& machine() noexcept { return *machine_; }

private:
    explicit Node(NodeConfig cfg);
    void vm_loop();
    void record_loop(engine::Recorder& rec, bool protected_run);
    void replay_loop();
    void control_loop();
    void step(const protocol::Event& e);
    void act(const protocol::Action& a);
    void say(const std::string& line) const;
    // After going live: a RARP announcement of the guest's MAC (as QEMU's announce-self does),
    // so switches learn the guest's new port without waiting for it to speak.
    void announce_mac(const devices::MacAddress& mac);
    protocol::Time now_us() const;

    NodeConfig cfg_;
    std::unique_ptr<engine::Machine> machine_;
    std::unique_ptr<engine::OutputGate> gate_;
    std::optional<arbiter::Arbiter> arbiter_;
    std::optional<detector::HeartbeatSocket> heartbeats_;
    std::unique_ptr<channel::LogSender> sender_;
    std::optional<channel::LogReceiver> receiver_;
    protocol::Replica replica_;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();

    // Between the threads.
    mutable std::mutex mu_;
    std::deque<protocol::Event> vm_events_;  // VM thread -> control thread
    std::deque<logformat::Entry> inbox_;     // control thread -> VM thread (backup)
    std::atomic<bool> stopping_{false}, stalled_{false}, halted_{false};
    std::atomic<bool> final_replay_{false}, go_live_{false}, live_alone_{false};
    bool heard_peer_ = false; // control thread
    protocol::Time last_hello_ = 0;
    std::atomic<std::uint64_t> executed_{0}, exits_{0};
    std::string failure_;
    NodeStatus status_; // a copy the control thread refreshes

    std::thread vm_thread_, control_thread_;
};

} // namespace xenft::daemon
