// CRC32C (Castagnoli), the checksum on every log frame.
//
// Uses the SSE4.2 crc32 instruction when the CPU has it and Boost.CRC otherwise; the test
// suite checks both paths against each other and against the RFC 3720 test vectors.
#pragma once

#include <cstdint>
#include <span>

namespace xenft {

std::uint32_t crc32c(std::span<const std::uint8_t> data) noexcept;

// The portable table-driven implementation (Boost.CRC), exposed for cross-checking.
std::uint32_t crc32c_portable(std::span<const std::uint8_t> data) noexcept;

} // namespace xenft
