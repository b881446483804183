// Binary encoding of log frames (format version 1, see docs/log-format.md).
//
// A frame is a batch of consecutive entries of one epoch: a small header, a body of
// delta-compressed entries, and a CRC32C. The encoder keeps per-frame context (last exit per
// vCPU, last device address and value, last TSC value) so an idle guest's log costs a few
// bytes per entry; the decoder mirrors it and validates every field before use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"
#include "xenft/logformat/entry.hpp"

namespace xenft::logformat {

// "XFTL" as the first four bytes of every frame.
inline constexpr std::uint8_t kFrameMagic[4] = {'X', 'F', 'T', 'L'};

// Fixed bytes around a frame's variable header and body: magic, version, flags, CRC.
inline constexpr std::size_t kFrameFixedBytes = 4 + 1 + 1 + 4;

enum class DecodeErrc {
    truncated,
    bad_magic,
    unsupported_version,
    reserved_flags,
    varint_overlong,
    no_entries,
    too_many_entries,
    sequence_overflow,
    body_too_large,
    bad_crc,
    unknown_kind,
    reserved_bits,
    vcpu_out_of_range,
    exit_without_base,
    exit_not_monotonic,
    exit_overflow,
    missing_context,
    bad_field,
    length_limit,
    body_length_mismatch,
};

std::string_view errc_name(DecodeErrc c) noexcept;

struct DecodeError {
    DecodeErrc code;
    std::size_t offset; // byte offset in the frame where the problem was found
    std::string detail; // names the field and the offending value
    std::string message() const;
};

struct Frame {
    std::uint64_t epoch = 0;
    std::uint64_t first_seq = 0;
    std::vector<Entry> entries;
    bool operator==(const Frame&) const = default;
};

// Accumulates entries into one frame. append() throws std::invalid_argument for an entry that
// the decoder would reject (wrong epoch or sequence, value wider than its size, oversized data,
// exit going backwards): those are bugs in the caller, not runtime conditions.
class FrameEncoder {
public:
    FrameEncoder(std::uint64_t epoch, std::uint64_t first_seq);

    void append(const Entry& e);

    std::uint64_t epoch() const noexcept { return epoch_; }
    std::uint64_t next_seq() const noexcept { return first_seq_ + count_; }
    std::uint64_t entry_count() const noexcept { return count_; }
    std::size_t body_bytes() const noexcept { return body_.size(); }

    // Starts a new, empty frame; keeps the buffer's capacity (the hot path reuses one encoder).
    void restart(std::uint64_t epoch, std::uint64_t first_seq);

    // Appends the finished frame to out and resets the encoder to start a new frame of the
    // same epoch at next_seq().
    void finish_into(std::vector<std::uint8_t>& out);
    std::vector<std::uint8_t> finish();

private:
    void reset_context();

    std::uint64_t epoch_;
    std::uint64_t first_seq_;
    std::uint64_t count_ = 0;
    std::vector<std::uint8_t> body_;
    // Per-frame delta context; mirrored exactly by the decoder.
    std::uint32_t last_vcpu_ = 0;
    std::vector<std::uint64_t> last_exit_; // per vCPU, valid where has_exit_
    std::vector<bool> has_exit_;
    bool has_io_ = false;
    IoSpace last_io_space_ = IoSpace::port;
    std::uint64_t last_io_address_ = 0;
    std::uint64_t last_io_value_ = 0;
    bool has_time_ = false;
    std::uint64_t last_time_value_ = 0;
};

// Decodes exactly one frame occupying all of `bytes`.
Expected<Frame, DecodeError> decode_frame(std::span<const std::uint8_t> bytes);

// For stream readers: how many bytes the frame starting at bytes[0] occupies, once its header is
// complete. need_more means "read more and ask again"; a malformed header is an error at once,
// so a stream never waits for megabytes promised by a garbage length.
struct FrameExtent {
    bool complete_header = false;
    std::size_t frame_bytes = 0; // valid when complete_header
};
Expected<FrameExtent, DecodeError> frame_extent(std::span<const std::uint8_t> bytes);

} // namespace xenft::logformat
