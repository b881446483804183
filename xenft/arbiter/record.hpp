// The arbitration record on the shared LUN: who may run the protected VM, in which epoch.
// One 512-byte block, little-endian:
//   magic "XFTARBIT" | version u8 (1) | reserved 3 bytes (0) | vm_id u64 | epoch u64 |
//   owner host id u32 (0: nobody) | reserved u32 (0) | timestamp u64 (ms since the Unix epoch) |
//   CRC32C u32 of the bytes before it | zeros to the end of the block
// A replica takes over by moving the record from the epoch it knows to epoch + 1 with itself
// as owner, in one SCSI COMPARE AND WRITE (arbiter.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "xenft/common/expected.hpp"

namespace xenft::arbiter {

inline constexpr std::size_t kRecordBlock = 512;
using Block = std::array<std::uint8_t, kRecordBlock>;

struct Record {
    std::uint64_t vm_id = 0;
    std::uint64_t epoch = 0;
    std::uint32_t owner = 0; // host id; 0 before anybody claimed the VM
    std::uint64_t timestamp_ms = 0;
    bool operator==(const Record&) const = default;
};

Block encode_record(const Record& r);

// Checks magic, version, reserved bytes and checksum. An all-zero block (a fresh LUN) gets its
// own message, since it is the one an administrator will meet first.
Expected<Record, std::string> decode_record(std::span<const std::uint8_t> block);

std::string to_string(const Record& r);

} // namespace xenft::arbiter
