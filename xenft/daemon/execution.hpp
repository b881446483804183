// The VM's half of a node: what an execution backend does for the node's VM thread, and
// nothing it decides. The node (node.hpp) runs the protocol core (protocol::Replica) on its
// control thread; every decision of the pair (start, output release, suspicion, test-and-set,
// going live, re-protection, the VM's end) is made there, and the VM thread only asks the
// execution to carry it out: record a chunk, send a live copy, take one, replay, go live,
// release or drop outputs, stop.
//
// Two implementations: KvmExecution (kvm_execution.hpp: xenft's own engine on /dev/kvm, the
// tests and the demo) and XenExecution (xen_execution.hpp: a domain `xl create` made, with
// hvm-patches' record and replay and xenft's device models). What only Xen needs (digests
// only at ioreqs, exit bases after a copy, the shutdown deferral of a domain whose vCPU waits
// in an ioreq) stays inside XenExecution.
//
// Threads: record, replay, the copy calls, go_live, end_replay and stop_running are called by
// the node's VM thread only; the output calls (release_outputs, discard_outputs, set_alone,
// held_outputs, released_outputs) by either thread, so implementations make those safe.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "xenft/channel/copy.hpp"
#include "xenft/common/expected.hpp"
#include "xenft/logformat/entry.hpp"
#include "xenft/protocol/replica.hpp"

namespace xenft::daemon {

// A live copy the primary sent, once it ended.
struct CopyReport {
    bool ok = false;
    std::string error;
    protocol::Seq at = 0;   // the last log entry the copy covers: the backup replays from at + 1
    std::string summary;    // what it did (rounds, pages, the pause), for the log and status
    double pause_ms = 0;    // how long the VM waited at the copy point
    unsigned rounds = 0;    // of pages while the VM ran
};

// The VM stopped on purpose on this host (the guest shut down or crashed, the domain was
// destroyed): logged as vm_end, not a failure.
struct VmStop {
    logformat::VmEnd::Reason reason = logformat::VmEnd::Reason::destroyed;
    std::string text;
};

class Execution {
public:
    virtual ~Execution() = default;

    // ---- recording: a primary, and a backup once it went live -----------------------------
    // Runs the VM for a while (a chunk of exits, or what is ready within a few milliseconds)
    // and appends the log entries it made to `log`, numbered on from the last (the caller sets
    // their epoch), and for each output it held at the gate an id and the entry it follows to
    // `outputs`. A live copy under way (copy_to) advances here too. An error: the VM cannot go on.
    virtual Expected<bool, std::string> record(std::vector<logformat::Entry>& log,
                                               std::vector<protocol::VmOutput>& outputs) = 0;
    // Too many outputs are held: the VM must wait for acks before it runs on.
    virtual bool outputs_full() const { return false; }
    // The seq the next entry gets.
    virtual protocol::Seq next_seq() const = 0;
    // The VM's end on this host as a log entry (vm_end, numbered next_seq()).
    logformat::Entry end_entry(const VmStop& stop)
    {
        return logformat::Entry{0, take_seq(), 0, exits(), logformat::VmEnd{stop.reason}};
    }

    // Outputs (either thread).
    virtual void release_outputs(std::uint64_t up_to_id) = 0;
    virtual std::size_t discard_outputs() = 0;
    // Alone (no backup has a copy): outputs leave at once and no digests are taken (nobody
    // compares them); protected: outputs wait for release_outputs.
    virtual void set_alone(bool alone) = 0;
    virtual std::size_t held_outputs() const = 0;
    virtual std::uint64_t released_outputs() const = 0;

    // A live copy to a joining backup, advanced by record(); its report once, when it ended.
    virtual void copy_to(channel::CopySink& sink) = 0;
    virtual bool copying() const = 0;
    virtual std::optional<CopyReport> take_copy_report() = 0;
    virtual void cancel_copy() = 0;

    // ---- a backup ---------------------------------------------------------------------------
    // One record of a live copy, in order; after the final one, the last log entry the copy
    // covers. An error names what does not match (the VMs were not made alike).
    virtual Expected<std::optional<protocol::Seq>, std::string> apply_copy(const channel::CopyRecord& record) = 0;
    // Replays what it can from the front of `log` (taking what it used); `final`: nothing more
    // will come, so the log's end also ends its last exit. Returns the last entry executed, or
    // handed to the VM for good. An error: the replay diverged (it names where and how).
    virtual Expected<protocol::Seq, std::string> replay(std::deque<logformat::Entry>& log, bool final) = 0;
    // Every received entry is replayed and the test-and-set won: the VM serves live from here
    // and record() works (a new backup can take a copy). Returns what it did, for the log.
    virtual Expected<std::string, std::string> go_live() = 0;
    // The primary's VM ended (vm_end replayed): this replica's VM ends too. Returns what it did.
    virtual Expected<std::string, std::string> end_replay() = 0;

    // ---- either -----------------------------------------------------------------------------
    // The VM stopped on this host on purpose (nullopt while it runs, and always on KVM, whose
    // guest has no end of its own).
    virtual std::optional<VmStop> stopped() const = 0;
    // The VM must not run on (this replica halted, or xenftd stops while it runs). Returns
    // what was done, for the log.
    virtual std::string stop_running() = 0;
    virtual std::uint64_t exits() const = 0;
    // What `xenft status` shows of this backend (called by the VM thread; the node keeps it).
    virtual nlohmann::json details() const { return nlohmann::json::object(); }

protected:
    virtual protocol::Seq take_seq() = 0;
};

} // namespace xenft::daemon
