// The live copy of a running VM (re-protection, VMware's "FT VMotion"): what the primary sends
// on the logging channel's first connection to a backup that has no copy of the VM yet, before
// the log. docs/channel.md, "Live copy", has the layout; this is its codec. Everything here is
// socket-free so it can be fuzzed (fuzz/channel_fuzz.cpp).
//
// A copy is a sequence of records, each sent as one zstd frame in a copy_chunk message:
//   begin  the memory size and the number of pages the first round sends (all of them)
//   pages  up to kCopyPagesPerRecord pages: page numbers, then their bytes
//   final  taken with the primary's VM paused after exit `exit`: the vCPU and device state,
//          the epoch, and the seq of the first log entry the backup replays next
// Rounds of pages repeat while the guest runs (each sends what it dirtied since the last);
// the final record ends the copy. The backup answers copy_done once it applied the final
// record; the primary confirms with copy_done, then streams the log from next_seq on.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "xenft/common/expected.hpp"

namespace xenft::channel {

inline constexpr std::size_t kCopyPageBytes = 4096;
inline constexpr std::size_t kCopyPagesPerRecord = 64;
inline constexpr std::size_t kMaxCopyStateBytes = 256 * 1024; // vCPU or device state
// No record decodes to more than this (pages plus headers; a final with two full states).
inline constexpr std::size_t kMaxCopyRecordBytes = 2 * kMaxCopyStateBytes + 64;

struct CopyBegin {
    std::uint64_t memory_bytes = 0;
    std::uint64_t pages = 0; // in the first round
    bool operator==(const CopyBegin&) const = default;
};
struct CopyPages {
    std::vector<std::uint64_t> numbers;
    std::vector<std::uint8_t> data; // numbers.size() pages of kCopyPageBytes
    bool operator==(const CopyPages&) const = default;
};
struct CopyFinal {
    std::uint64_t epoch = 0;
    std::uint64_t exit = 0;     // the VM was paused after this exit
    std::uint64_t next_seq = 1; // the log continues with this entry
    std::vector<std::uint8_t> cpu, devices;
    bool operator==(const CopyFinal&) const = default;
};
using CopyRecord = std::variant<CopyBegin, CopyPages, CopyFinal>;

std::vector<std::uint8_t> encode_copy_record(const CopyRecord& r);
// Checks tag, sizes and limits; the error says what is wrong.
Expected<CopyRecord, std::string> decode_copy_record(std::span<const std::uint8_t> bytes);

// One record as one zstd frame, and back (refusing frames that would decode to more than
// kMaxCopyRecordBytes before decompressing them).
std::vector<std::uint8_t> compress_copy_record(std::span<const std::uint8_t> encoded, int level);
Expected<CopyRecord, std::string> decompress_copy_record(std::span<const std::uint8_t> compressed);

// Where a primary's live copy goes (daemon/node.cpp: the logging channel to the new backup).
// The execution backend produces the records; the sink carries them.
class CopySink {
public:
    virtual ~CopySink() = default;
    // Whether a record can be queued now without waiting (the rounds run while the guest runs
    // and must not hold it up).
    virtual bool has_room() const = 0;
    // Bytes queued and not yet taken by the network: a round ends once they are out, so that
    // the next round counts what the guest wrote meanwhile and the final pause does not wait
    // for a backlog.
    virtual std::size_t backlog() const = 0;
    // Queues one record for the backup, waiting while earlier ones drain; an error: the copy
    // failed (the backup went away, or the channel gave up). The sink fills in a final
    // record's epoch and next_seq.
    virtual Expected<bool, std::string> send(CopyRecord record) = 0;
    // After the final record: returns once the backup applied the copy, or why not.
    virtual Expected<bool, std::string> finish() = 0;
};

} // namespace xenft::channel
