// The record/replay engine (ARCHITECTURE.md, "Determinism model"). It drives a Backend and the
// device models exit by exit:
// - synchronous exits are numbered from 1;
// - the recorder logs every non-deterministic read (its value) and every interrupt it injects,
//   each with its exit number, and injects only at synchronous exits; a StateDigest entry
//   every digest_every exits lets the replayer check it is on the same path;
// - the replayer supplies logged values instead of asking the devices, injects exactly at the
//   logged exits, never waits on HLT, and reports the first exit where anything differs.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xenft/devices/devices.hpp"
#include "xenft/engine/backend.hpp"
#include "xenft/logformat/entry.hpp"

namespace xenft::engine {

struct Divergence {
    std::uint64_t exit = 0; // first exit where the replay differs from the log
    std::string what;
    std::string message() const { return "replay diverged at exit " + std::to_string(exit) + ": " + what; }
};

class Recorder {
public:
    Recorder(Backend& backend, devices::DeviceBus& bus, devices::LapicTimer& timer, devices::TimeSource now,
             std::uint64_t digest_every);

    // Runs `exits` more synchronous exits and appends the entries they produce to log.
    Expected<bool, std::string> run(std::uint64_t exits, std::vector<logformat::Entry>& log);
    std::uint64_t exits() const noexcept { return exit_; }

private:
    void append(std::vector<logformat::Entry>& log, logformat::Payload p);

    Backend& backend_;
    devices::DeviceBus& bus_;
    devices::LapicTimer& timer_;
    devices::TimeSource now_;
    std::uint64_t digest_every_;
    std::uint64_t exit_ = 0;
    std::uint64_t seq_ = 1;
};

class Replayer {
public:
    Replayer(Backend& backend, devices::DeviceBus& bus) : backend_(backend), bus_(bus) {}

    // Replays `log` (the entries of exits up to until_exit) and runs the guest to exit
    // until_exit exactly.
    Expected<bool, Divergence> run(std::span<const logformat::Entry> log, std::uint64_t until_exit);
    // For a VM restored from a checkpoint taken after exit `exit` was fully handled: replay
    // continues with the next exit, fed the log entries that follow.
    void resume_after(std::uint64_t exit) noexcept { exit_ = exit; }
    std::uint64_t exits() const noexcept { return exit_; }

private:
    Backend& backend_;
    devices::DeviceBus& bus_;
    std::uint64_t exit_ = 0;
};

// What a read returns when no device claims the address.
constexpr std::uint64_t all_ones(std::uint8_t size) { return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1; }

} // namespace xenft::engine
