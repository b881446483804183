// Synthetic guest logs for tests, benchmarks, fuzz seeds and `xenft log sample`. They follow the
// determinism model's shapes (an interrupt logged at the exit it follows, device reads with
// their values) without needing a VM, so the format can be measured before the engine exists.
#pragma once

#include <cstdint>
#include <vector>

#include "xenft/logformat/entry.hpp"

namespace xenft::logformat {

// MMIO address of the test guest's clock register (nanoseconds since boot).
inline constexpr std::uint64_t kSyntheticClockMmio = 0xfeb00000;
// Vector the synthetic guest uses for its LAPIC timer.
inline constexpr std::uint8_t kSyntheticTimerVector = 0xec;

// An idle guest with a periodic timer: each tick, the vCPU halts, the timer interrupt is
// injected after the HLT exit, and the handler reads the clock register. Clock values jitter by
// up to 50 us around the tick, as a real host's would.
std::vector<Entry> idle_guest_log(std::uint64_t ticks, std::uint32_t timer_hz, std::uint64_t seed);

// A mix of every entry kind with random fields (within limits), including several vCPUs and an
// epoch change, for round-trip and property tests.
std::vector<Entry> mixed_log(std::uint64_t count, std::uint64_t seed);

} // namespace xenft::logformat
