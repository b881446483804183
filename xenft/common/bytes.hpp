// Bounds-checked byte writing and reading with LEB128 varints and zigzag deltas.
//
// Every decoder of external bytes in xenft reads through ByteReader, so a truncated or
// overlong field becomes an error value at a known offset instead of an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace xenft {

// A 64-bit LEB128 varint never needs more than 10 bytes.
inline constexpr std::size_t kMaxVarintBytes = 10;

constexpr std::uint64_t zigzag_encode(std::int64_t v) noexcept
{
    return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}

constexpr std::int64_t zigzag_decode(std::uint64_t v) noexcept
{
    return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}

class ByteWriter {
public:
    explicit ByteWriter(std::vector<std::uint8_t>& out) : out_(out) {}

    void u8(std::uint8_t v) { out_.push_back(v); }

    void u32le(std::uint32_t v)
    {
        for (int i = 0; i < 4; ++i)
            out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }

    void varint(std::uint64_t v)
    {
        while (v >= 0x80) {
            out_.push_back(static_cast<std::uint8_t>(v) | 0x80);
            v >>= 7;
        }
        out_.push_back(static_cast<std::uint8_t>(v));
    }

    void bytes(std::span<const std::uint8_t> data) { out_.insert(out_.end(), data.begin(), data.end()); }

    std::size_t size() const noexcept { return out_.size(); }

private:
    std::vector<std::uint8_t>& out_;
};

// Why a read failed. The reader never throws: callers turn a failure into their own error
// with the offset it reports.
enum class ReadStatus : std::uint8_t {
    ok,
    truncated,       // the field runs past the end of the input
    varint_overlong, // more than 10 bytes, bits beyond 64, or a redundant trailing zero byte
};

class ByteReader {
public:
    explicit ByteReader(std::span<const std::uint8_t> in) : in_(in) {}

    std::size_t offset() const noexcept { return pos_; }
    std::size_t remaining() const noexcept { return in_.size() - pos_; }
    bool at_end() const noexcept { return pos_ == in_.size(); }

    ReadStatus u8(std::uint8_t& v) noexcept
    {
        if (remaining() < 1)
            return ReadStatus::truncated;
        v = in_[pos_++];
        return ReadStatus::ok;
    }

    ReadStatus u32le(std::uint32_t& v) noexcept
    {
        if (remaining() < 4)
            return ReadStatus::truncated;
        v = 0;
        for (std::size_t i = 0; i < 4; ++i)
            v |= static_cast<std::uint32_t>(in_[pos_ + i]) << (8 * i);
        pos_ += 4;
        return ReadStatus::ok;
    }

    // Canonical LEB128 only: a value has exactly one accepted encoding, so re-encoding a
    // decoded frame reproduces its bytes.
    ReadStatus varint(std::uint64_t& v) noexcept
    {
        std::uint64_t result = 0;
        for (std::size_t i = 0; i < kMaxVarintBytes; ++i) {
            if (pos_ >= in_.size())
                return ReadStatus::truncated;
            const std::uint8_t byte = in_[pos_++];
            if (i == kMaxVarintBytes - 1 && byte > 1)
                return ReadStatus::varint_overlong;
            result |= static_cast<std::uint64_t>(byte & 0x7f) << (7 * i);
            if ((byte & 0x80) == 0) {
                if (byte == 0 && i > 0)
                    return ReadStatus::varint_overlong;
                v = result;
                return ReadStatus::ok;
            }
        }
        return ReadStatus::varint_overlong;
    }

    // A view of the next n bytes; valid as long as the input is.
    ReadStatus bytes(std::size_t n, std::span<const std::uint8_t>& out) noexcept
    {
        if (remaining() < n)
            return ReadStatus::truncated;
        out = in_.subspan(pos_, n);
        pos_ += n;
        return ReadStatus::ok;
    }

private:
    std::span<const std::uint8_t> in_;
    std::size_t pos_ = 0;
};

} // namespace xenft
