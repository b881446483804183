// The record/replay engine (ARCHITECTURE.md, "Determinism model"). It drives a Machine exit by
// exit:
// - synchronous exits are numbered from 1;
// - the recorder logs every non-deterministic input with its exit number: device reads that
//   depend on time (io_read), frames from the network (net_rx), data read from the disk
//   (disk_read), and every interrupt it injects (interrupt); it injects only at synchronous
//   exits. It logs every output too (output: a transmitted frame, a disk write) so the output
//   gate can hold it until the backup has the entry. A state_digest every digest_every exits
//   lets the replayer check it is on the same path;
// - the replayer feeds the same inputs at the same exits, drops the outputs after checking
//   that the guest produced them at the same exits, never waits on HLT, and reports the first
//   exit where anything differs.
// A replayer that has replayed everything becomes the recorder of a live VM by handing the
// machine to a Recorder that continues its numbering (go-live).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "xenft/devices/host_io.hpp"
#include "xenft/engine/machine.hpp"
#include "xenft/logformat/entry.hpp"

namespace xenft::engine {

struct Divergence {
    std::uint64_t exit = 0; // first exit where the replay differs from the log
    std::string what;
    std::string message() const { return "replay diverged at exit " + std::to_string(exit) + ": " + what; }
};

class OutputGate;

// The outside world of the replica that runs the VM live. Any may be absent. With a gate,
// transmitted frames and disk writes go to it (held until acked) and disk reads see its held
// writes; without one they go straight to the TAP and the disk.
struct HostIo {
    devices::TapDevice* tap = nullptr;
    devices::BlockPort* disk = nullptr;
    OutputGate* gate = nullptr;
};

// Where the recorder resumes (go-live, or recording from a checkpoint): after this exit, with
// log entries numbered from next_seq.
struct ResumePoint {
    std::uint64_t exit = 0;
    std::uint64_t next_seq = 1;
};

class Recorder {
public:
    // Resuming (from.exit > 0) re-arms the timer from now: when ticks fell before is not state.
    Recorder(Machine& machine, std::uint64_t digest_every, HostIo io = {}, ResumePoint from = {});
    ~Recorder();
    Recorder(const Recorder&) = delete;
    Recorder& operator=(const Recorder&) = delete;

    // Runs `exits` more synchronous exits and appends the entries they produce to log (fewer
    // with end_at_outputs: the run ends after the first exit that produced an output, so the
    // caller can ship the log and get the output released without waiting for the rest of
    // the chunk, which an idle guest spends halted).
    Expected<bool, std::string> run(std::uint64_t exits, std::vector<logformat::Entry>& log);
    void end_at_outputs(bool on) noexcept { end_at_outputs_ = on; }
    std::uint64_t exits() const noexcept { return exit_; }
    std::uint64_t next_seq() const noexcept { return seq_; }

private:
    class Ports;
    std::uint64_t append(logformat::Payload p); // returns the entry's seq
    // Hands a waiting frame to the NIC if it has a buffer; true if one was delivered.
    bool deliver_frame();
    Expected<bool, std::string> wait_while_halted();

    Machine& machine_;
    std::uint64_t digest_every_;
    HostIo io_;
    std::unique_ptr<Ports> ports_;
    std::vector<logformat::Entry>* log_ = nullptr;
    std::optional<std::vector<std::uint8_t>> waiting_frame_;
    std::uint64_t exit_;
    std::uint64_t seq_;
    bool end_at_outputs_ = false;
    bool output_appended_ = false;
};

class Replayer {
public:
    explicit Replayer(Machine& machine);
    ~Replayer();
    Replayer(const Replayer&) = delete;
    Replayer& operator=(const Replayer&) = delete;

    // Replays `log` (the entries of exits up to until_exit) and runs the guest to exit
    // until_exit exactly. Can be called again with the entries that follow.
    Expected<bool, Divergence> run(std::span<const logformat::Entry> log, std::uint64_t until_exit);
    // Streaming replay: entries arrive in order into `pending`. Replays every exit whose entries
    // are all there (the exits before the newest entry's), consuming their entries; with
    // final (the primary is gone, go-live is next) also the newest entry's exit.
    Expected<bool, Divergence> replay_available(std::deque<logformat::Entry>& pending, bool final);
    // For a VM restored from a checkpoint (or a live copy) taken after exit `exit` was fully
    // handled, whose log continues after entry last_seq: replay continues with the next exit,
    // fed the log entries that follow.
    void resume_after(std::uint64_t exit, std::uint64_t last_seq = 0) noexcept
    {
        exit_ = exit;
        last_seq_ = last_seq;
    }
    std::uint64_t exits() const noexcept { return exit_; }
    // The seq of the last entry replayed (where a recorder taking over continues).
    std::uint64_t last_seq() const noexcept { return last_seq_; }

    // Go-live: writes the guest made in the last RecentWrites::kKept replayed disk writes, in
    // order, to `disk` (the primary may have died holding some of them; see output_gate.hpp).
    // Returns how many were written, or the first failure.
    Expected<std::size_t, std::string> reissue_writes(devices::BlockPort& disk);
    // Go-live: sends the last kResendFrames frames the guest transmitted in the replay, in
    // order. The backup acked them all, but acks in flight when the primary died released
    // nothing: without this the guest's TCP would wait for its retransmission timer (seconds
    // in small stacks) to send them again. A frame the primary did release arrives twice,
    // which TCP, ICMP and the test guest's UDP service absorb. Returns how many were sent.
    static constexpr std::size_t kResendFrames = 64;
    std::size_t resend_frames(devices::NetTransmit& net);

private:
    class Ports;
    Machine& machine_;
    std::unique_ptr<Ports> ports_;
    std::uint64_t exit_ = 0;
    std::uint64_t last_seq_ = 0;
};

// What a read returns when no device claims the address.
constexpr std::uint64_t all_ones(std::uint8_t size) { return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1; }

} // namespace xenft::engine
