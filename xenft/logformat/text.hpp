// Human-readable rendering of log entries, one line each, for `xenft log dump` and for
// divergence reports.
#pragma once

#include <string>

#include "xenft/logformat/entry.hpp"

namespace xenft::logformat {

// "seq 42 epoch 1 vcpu 0 exit 1337 io_read mmio 0xfeb00000/8 = 0x3b9aca00"
std::string to_text(const Entry& e);

// "0x3b9aca00": how addresses and values appear in logs and reports.
std::string hex(std::uint64_t v);

} // namespace xenft::logformat
