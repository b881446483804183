// Deterministic simulation of an FT pair around the protocol core (FoundationDB/Jepsen style):
// two replicas, a network that drops, delays, duplicates, reorders and partitions, simulated
// clocks, crashes and restarts, an arbiter with outages and lost replies, and a client that
// records every released output. Every schedule follows from its seed; a violation reports the
// seed and the last steps so it replays exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xenft/protocol/replica.hpp"

namespace xenft::sim {

enum class Scenario : std::uint8_t {
    primary_crash,   // one crash of the primary, storage reachable: liveness is checked too
    backup_crash,    // the backup dies, later restarts and is re-protected
    partition,       // the logging channel is cut both ways for a while
    one_way,         // one direction is cut
    storage_outage,  // the arbiter is unreachable, alone or during a partition
    chaos,           // any of the above at random, several times, plus operator commands
    diverges,        // one replica's VM fails (a digest mismatch on the backup, say): it halts
    vm_ends,         // the primary's VM ends on purpose (the guest shut down): the pair ends
};
inline constexpr int kScenarioCount = 8;
const char* scenario_name(Scenario s);

struct Options {
    protocol::Config proto;
    protocol::Time duration = 1'500'000; // simulated microseconds per schedule
    protocol::Time tick = 1'000;
    double drop = 0.02;
    double duplicate = 0.02;
    protocol::Time delay_min = 100, delay_max = 3'000;
    // Now and then a message is held up for a long time (a TCP retransmission timeout, a
    // stalled queue): delayed by T/2..3T. This is what makes the primary's lease necessary.
    double late = 0.002;
    // Liveness bound after a primary crash (storage reachable): T + arbitration + replay.
    protocol::Time failover_bound = 0; // 0: suspect_timeout + 150 ms
    bool trace = false;                // print every step (for replaying one seed)
    bool calm = false;                 // schedule no faults (a benchmark baseline)
    // How the pair starts: -1 from the seed; 0 protected from boot (KVM: both replicas at
    // exit 0); 1 as the Xen backend starts (one host claims the record and runs alone, the
    // other joins and gets a live copy).
    int copy_start = -1;
};

struct Result {
    std::uint64_t seed = 0;
    Scenario scenario = Scenario::chaos;
    std::string violation; // empty if every invariant held
    std::vector<std::string> recent; // the last steps before the violation
    // What happened, to show schedules exercise the interesting paths.
    int failovers = 0, halts = 0, reprotections = 0, outputs_released = 0, ends = 0;
    int log_held = 0; // log messages a backup too far behind did not read (or read in part)
    bool copy_start = false;
    protocol::Time failover_time = 0; // primary crash to go-live, when measured
};

Result run_schedule(std::uint64_t seed, const Options& opt);

} // namespace xenft::sim
