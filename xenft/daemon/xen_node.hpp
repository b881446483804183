// One host's side of a protected domain on Xen: what xenftd runs for a domain that `xl create`
// with ft= created (the Xen backend; the KVM backend's counterpart is node.hpp).
//
// The primary records the domain with xenft's device models (backends/xen/ft_domain.hpp) and
// streams its log over the TLS logging channel; outputs leave when the backup acked the log
// before them. The backup's domain, created paused from the same configuration, first takes a
// live copy of the running primary over the same channel (memory, written disk blocks, Xen's
// HVM context, device state), then replays the log from there and compares state digests at
// the exits the primary took them. A backup may come at any time: a primary without one holds
// its outputs for backup_wait_ms, then (test-and-set won) runs alone, and a backup that comes
// later gets a copy and protects it again. Authenticated
// UDP heartbeats tell when the peer is gone (a host that loses power closes no connection);
// then the test-and-set on the shared LUN decides which host runs the VM: the backup goes live
// if it wins; the primary continues alone if it wins and pauses its domain if it loses.
// A domain that ends on a live host (the guest shut down or crashed, `xl destroy`) is not a
// failure: the primary writes vm_end into the log and the backup, instead of taking over,
// powers its own domain off (docs/xen-backend.md, "How a protected domain ends").
//
// Threads: one runs the domain (record or replay loop) and never waits on the network; on the
// primary one pumps the sender, on the backup one pumps the receiver (the replay loop can be
// busy with a digest of all memory while the primary waits for acks); one sends and hears
// heartbeats. status() may be called from any thread.
//
// Not here yet (docs/xen-backend.md): unprotect and protect, and a live domain (a backup that
// went live) taking a new backup.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "xenft/arbiter/arbiter.hpp"
#include "xenft/backends/xen/ft_domain.hpp"
#include "xenft/channel/channel.hpp"
#include "xenft/channel/tls.hpp"
#include "xenft/detector/heartbeat_socket.hpp"

namespace xenft::daemon {

struct XenNodeConfig {
    std::uint32_t domid = 0;
    bool primary = true;
    backends::xen::FtSpec spec;
    // address: the backup's listen address (the primary connects to it). vm_id, self, peer and
    // epoch are checked in the channel's hello.
    channel::ChannelConfig channel;
    const channel::TlsContext* tls = nullptr; // client side on the primary, server side on the backup
    // The failure detector; none: the channel's state alone says the peer is gone.
    std::optional<detector::HeartbeatSocketConfig> heartbeat;
    // The test-and-set; none: take over without asking (only for a single host's test pair).
    std::optional<arbiter::ArbiterConfig> arbiter;
    std::uint64_t failover_ms = 1000; // silence of the peer before the test-and-set
    // The primary's wait for a backup to take its copy; then it runs the test-and-set and, if
    // it wins, continues alone (a backup that comes later gets a copy and protects it again).
    std::uint64_t backup_wait_ms = 30'000;
    std::uint64_t status_every_ms = 5000; // a status line in the log this often; 0: none
    // Where log lines go (default: stderr); they name the domain and the cause.
    std::function<void(const std::string&)> log;
};

enum class XenRole : std::uint8_t {
    primary_protected, // recording; outputs wait for the backup's acks
    primary_alone,     // won the test-and-set without a backup: outputs leave at once
    backup_copying,    // waiting for (or taking) the live copy of the primary
    backup_replaying,
    live,              // the former backup, live after the primary was lost
    paused,            // lost the test-and-set: the peer runs the VM, this domain must not
    stopped,           // the domain ended or xenftd was asked to stop
    failed,            // an error (a divergence, a crash): see failure
};
const char* xen_role_name(XenRole r);

struct XenNodeStatus {
    XenRole role = XenRole::stopped;
    std::uint32_t domid = 0;
    std::uint64_t epoch = 1;
    std::uint64_t exits = 0;
    std::uint64_t items = 0;        // primary: log items appended; backup: received
    std::uint64_t items_acked = 0;  // primary: acked by the backup; backup: replayed
    std::uint64_t entries = 0;      // log entries sent (primary) or received (backup)
    std::uint64_t held_outputs = 0;
    bool channel_up = false;
    std::uint64_t digests = 0;      // primary: taken; backup: matched
    backends::xen::DigestAt last_digest;
    std::uint64_t digest_ms = 0;    // primary: the last digest's cost
    std::uint64_t frames_in = 0, frames_out = 0; // primary: TAP to guest, released; backup: replayed, resent
    std::uint64_t copies = 0;       // live copies sent (primary) or taken (backup)
    std::string last_copy;          // what the last one was: exit, pages, disk blocks, pause
    std::string last_failover;      // what the last failover did, with its timeline
    std::uint64_t last_failover_unix_ms = 0;
    std::string failure;            // why the node stopped, if it did
};

class XenNode {
public:
    // Opens the channel and the heartbeats, protects the domain (paused, as `xl create` with
    // ft= leaves it for the hook; unpaused here only if spec.unpause), then runs it in a thread
    // of its own. An error changes nothing that outlives it: the domain stays paused.
    static Expected<std::unique_ptr<XenNode>, std::string> start(XenNodeConfig cfg);
    ~XenNode();
    XenNode(const XenNode&) = delete;
    XenNode& operator=(const XenNode&) = delete;

    XenNodeStatus status() const;
    // The domain's thread ended (see status().role and failure).
    bool finished() const noexcept { return finished_; }
    // The operator's failover (`xenft failover` on the backup's host). The backup stops acking
    // (the primary holds its outputs from then on), wins the test-and-set, says so in its
    // heartbeats and goes live with what it received, as after a failure; the primary, hearing
    // that, loses the test-and-set and pauses. An error, and nothing happens, unless this node
    // is a replaying backup.
    Expected<bool, std::string> request_failover();
    // Once finished(): the domain shut down or is gone, so xenftd has nothing left to serve
    // (a paused or failed one stays for the administrator to look at).
    bool domain_ended() const;

private:
    class PeerWatch;
    explicit XenNode(XenNodeConfig cfg);
    void run_primary();
    void run_backup();
    bool arbitrate(const char* side);
    // Reads the arbitration record and takes its epoch as the pair's.
    Expected<arbiter::Record, std::string> learn_epoch();
    bool peer_lost(bool channel_up);
    void say(const std::string& line) const;
    void publish(XenNodeStatus s);
    void end(XenRole role, const std::string& why);
    void record_failover(const std::string& what);
    void record_copy(const std::string& what);
    long long ms_since_start() const;

    XenNodeConfig cfg_;
    std::string name_; // "domain 3"
    std::unique_ptr<PeerWatch> watch_;
    std::unique_ptr<channel::LogSender> sender_;
    std::unique_ptr<channel::LogReceiver> receiver_;
    std::unique_ptr<backends::xen::RecordingDomain> primary_;
    std::unique_ptr<backends::xen::ReplayingDomain> backup_;
    std::chrono::steady_clock::time_point started_;
    std::chrono::steady_clock::time_point channel_seen_;
    bool channel_ever_up_ = false;

    mutable std::mutex status_mu_;
    XenNodeStatus status_;
    std::atomic<bool> stop_{false}, finished_{false}, failover_requested_{false};
    std::thread thread_;
};

} // namespace xenft::daemon
