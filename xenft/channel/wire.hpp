// What travels inside the logging channel's TLS stream, and its decoders. Everything here is
// socket-free so it can be fuzzed (fuzz/channel_fuzz.cpp).
//
// Messages: type u8 | flags u8 | length u32 LE | payload (length <= 1 MiB)
//   1 hello        primary -> backup: "XFCH", version u8, VM id u64, host id u32, epoch u64;
//                  flag 0x02: this connection starts with a live copy of the VM (copy.hpp)
//   2 hello_reply  backup -> primary: accepted u8, last entry received u64, reason len u8, reason
//   3 log          primary -> backup: a zstd stream chunk; flag 0x01 asks for an immediate ack
//   4 ack          backup -> primary: every entry up to this sequence number is in the buffer
//   5 copy_chunk   primary -> backup: one live-copy record, one zstd frame (copy.hpp)
//   6 copy_done    backup -> primary: ok u8, reason len u8, reason (the copy is applied, or why
//                  not); primary -> backup: ok 1 (confirmed: the log follows)
// The log chunks of one connection form one zstd stream, flushed per batch; decompressed, it is
// a sequence of log frames (docs/log-format.md).
#pragma once

#include <zstd.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "xenft/common/expected.hpp"
#include "xenft/logformat/codec.hpp"

namespace xenft::channel {

inline constexpr std::uint8_t kChannelVersion = 1;
inline constexpr std::size_t kMsgHeaderBytes = 6;
inline constexpr std::uint32_t kMaxMsgPayload = 1u << 20;
inline constexpr std::uint8_t kFlagAckNow = 0x01;
inline constexpr std::uint8_t kFlagCopy = 0x02;
inline constexpr std::size_t kMaxReasonBytes = 200;
// One log chunk may not decompress to more than this: a decompression bomb is cut off here.
inline constexpr std::size_t kMaxDecompressedPerChunk = 64u << 20;

struct Hello {
    std::uint64_t vm_id = 0;
    std::uint32_t host = 0;
    std::uint64_t epoch = 0;
    bool copy = false; // a live copy comes first
};
struct HelloReply {
    bool accepted = false;
    std::uint64_t received = 0; // the primary resends from received + 1
    std::string reason;         // why not, when refused
};
struct Ack {
    std::uint64_t acked = 0;
};
struct LogChunk {
    bool ack_now = false;
    std::vector<std::uint8_t> compressed;
};
struct CopyChunk {
    std::vector<std::uint8_t> compressed;
};
struct CopyDone {
    bool ok = false;
    std::string reason;
};
using ChannelMsg = std::variant<Hello, HelloReply, Ack, LogChunk, CopyChunk, CopyDone>;

void append_message(std::vector<std::uint8_t>& out, const ChannelMsg& msg);

// Cuts a byte stream into messages, checking each header before buffering its payload.
class MessageReader {
public:
    void feed(std::span<const std::uint8_t> bytes) { buf_.insert(buf_.end(), bytes.begin(), bytes.end()); }
    // A complete message, nothing (need more bytes), or what is wrong with the stream.
    Expected<std::optional<ChannelMsg>, std::string> next();
    std::size_t buffered() const noexcept { return buf_.size() - pos_; }

private:
    std::vector<std::uint8_t> buf_;
    std::size_t pos_ = 0;
};

struct ZstdCFree {
    void operator()(ZSTD_CCtx* c) const noexcept { ZSTD_freeCCtx(c); }
};
struct ZstdDFree {
    void operator()(ZSTD_DCtx* d) const noexcept { ZSTD_freeDCtx(d); }
};

// The primary's side of one connection's zstd stream.
class LogCompressor {
public:
    explicit LogCompressor(int level);
    // Compresses `in` into the current batch; full chunks go to out as log messages.
    void add(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out);
    // Ends the batch: flushes the stream and appends the last log message(s) to out.
    void flush(bool ack_now, std::vector<std::uint8_t>& out);
    // add() then flush().
    void compress(std::span<const std::uint8_t> in, bool ack_now, std::vector<std::uint8_t>& out);

private:
    // Runs the stream over `in` with the given directive, collecting output in chunk_.
    void run(std::span<const std::uint8_t> in, ZSTD_EndDirective mode, bool ack_now, std::vector<std::uint8_t>& out);

    std::unique_ptr<ZSTD_CCtx, ZstdCFree> cctx_;
    std::vector<std::uint8_t> scratch_;
    LogChunk chunk_;
};

// The backup's side: decompresses chunks and hands out complete, validated log frames.
class LogDecompressor {
public:
    LogDecompressor();
    // Calls on_frame for each complete frame; an error (corrupt stream, bomb, bad frame) is
    // final for the connection.
    Expected<bool, std::string> feed(std::span<const std::uint8_t> compressed,
                                     const std::function<void(logformat::Frame&&)>& on_frame);
    std::size_t pending() const noexcept { return pending_.size(); }

private:
    std::unique_ptr<ZSTD_DCtx, ZstdDFree> dctx_;
    std::vector<std::uint8_t> pending_; // decompressed bytes of a frame not yet complete
};

} // namespace xenft::channel
