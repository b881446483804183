#include "xenft/channel/wire.hpp"

#include <algorithm>
#include <cstring>

namespace xenft::channel {

namespace {

constexpr std::uint8_t kHelloMagic[4] = {'X', 'F', 'C', 'H'};
constexpr std::size_t kHelloBytes = 4 + 1 + 8 + 4 + 8;

enum class MsgType : std::uint8_t { hello = 1, hello_reply = 2, log = 3, ack = 4, copy_chunk = 5, copy_done = 6 };

void put(std::vector<std::uint8_t>& out, std::uint64_t v, int n)
{
    for (int i = 0; i < n; ++i)
        out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

std::uint64_t get(const std::uint8_t* p, int n)
{
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i)
        v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return v;
}

void header(std::vector<std::uint8_t>& out, MsgType t, std::uint8_t flags, std::size_t len)
{
    out.push_back(static_cast<std::uint8_t>(t));
    out.push_back(flags);
    put(out, len, 4);
}

// ok u8 | reason length u8 | reason: the shape of hello_reply's tail and of copy_done.
void put_reason(std::vector<std::uint8_t>& out, const std::string& reason)
{
    const std::size_t n = std::min(reason.size(), kMaxReasonBytes);
    out.push_back(static_cast<std::uint8_t>(n));
    out.insert(out.end(), reason.begin(), reason.begin() + static_cast<std::ptrdiff_t>(n));
}

std::string printable(const std::uint8_t* p, std::size_t n)
{
    std::string s(reinterpret_cast<const char*>(p), n);
    for (char& c : s)
        if (c < 0x20 || c > 0x7e)
            c = '?'; // a reason ends up in our logs: no control characters
    return s;
}

} // namespace

void append_message(std::vector<std::uint8_t>& out, const ChannelMsg& msg)
{
    std::visit(
        [&](const auto& m) {
            using M = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<M, Hello>) {
                header(out, MsgType::hello, m.copy ? kFlagCopy : 0, kHelloBytes);
                out.insert(out.end(), kHelloMagic, kHelloMagic + 4);
                out.push_back(kChannelVersion);
                put(out, m.vm_id, 8);
                put(out, m.host, 4);
                put(out, m.epoch, 8);
            } else if constexpr (std::is_same_v<M, HelloReply>) {
                const std::size_t n = std::min(m.reason.size(), kMaxReasonBytes);
                header(out, MsgType::hello_reply, 0, 1 + 8 + 1 + n);
                out.push_back(m.accepted ? 1 : 0);
                put(out, m.received, 8);
                put_reason(out, m.reason);
            } else if constexpr (std::is_same_v<M, Ack>) {
                header(out, MsgType::ack, 0, 8);
                put(out, m.acked, 8);
            } else if constexpr (std::is_same_v<M, LogChunk>) {
                header(out, MsgType::log, m.ack_now ? kFlagAckNow : 0, m.compressed.size());
                out.insert(out.end(), m.compressed.begin(), m.compressed.end());
            } else if constexpr (std::is_same_v<M, CopyChunk>) {
                header(out, MsgType::copy_chunk, 0, m.compressed.size());
                out.insert(out.end(), m.compressed.begin(), m.compressed.end());
            } else if constexpr (std::is_same_v<M, CopyDone>) {
                header(out, MsgType::copy_done, 0, 2 + std::min(m.reason.size(), kMaxReasonBytes));
                out.push_back(m.ok ? 1 : 0);
                put_reason(out, m.reason);
            }
        },
        msg);
}

Expected<std::optional<ChannelMsg>, std::string> MessageReader::next()
{
    // Compact once the consumed prefix dominates, so the buffer does not grow without bound.
    if (pos_ > 0 && pos_ >= buf_.size() / 2) {
        buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos_));
        pos_ = 0;
    }
    if (buffered() < kMsgHeaderBytes)
        return std::optional<ChannelMsg>{};
    const std::uint8_t* h = buf_.data() + pos_;
    const std::uint8_t type = h[0], flags = h[1];
    const auto len = static_cast<std::size_t>(get(h + 2, 4));
    if (type < 1 || type > 6)
        return unexpected("unknown message type " + std::to_string(type));
    if (len > kMaxMsgPayload)
        return unexpected("message of " + std::to_string(len) + " bytes, over the " + std::to_string(kMaxMsgPayload) +
                          "-byte limit");
    const auto t = static_cast<MsgType>(type);
    if (flags != 0 && !(t == MsgType::log && flags == kFlagAckNow) && !(t == MsgType::hello && flags == kFlagCopy))
        return unexpected("message type " + std::to_string(type) + " with reserved flags " + std::to_string(flags));
    if (buffered() < kMsgHeaderBytes + len)
        return std::optional<ChannelMsg>{};
    const std::uint8_t* p = h + kMsgHeaderBytes;
    pos_ += kMsgHeaderBytes + len;
    switch (t) {
    case MsgType::hello: {
        if (len != kHelloBytes || !std::equal(p, p + 4, kHelloMagic))
            return unexpected(std::string("malformed hello (not a xenft logging channel peer?)"));
        if (p[4] != kChannelVersion)
            return unexpected("peer speaks channel version " + std::to_string(p[4]) + ", this build speaks " +
                              std::to_string(kChannelVersion));
        return std::optional<ChannelMsg>{
            Hello{get(p + 5, 8), static_cast<std::uint32_t>(get(p + 13, 4)), get(p + 17, 8), flags == kFlagCopy}};
    }
    case MsgType::hello_reply: {
        if (len < 10 || p[0] > 1 || len != 10u + p[9] || p[9] > kMaxReasonBytes)
            return unexpected(std::string("malformed hello reply"));
        return std::optional<ChannelMsg>{HelloReply{p[0] == 1, get(p + 1, 8), printable(p + 10, p[9])}};
    }
    case MsgType::ack:
        if (len != 8)
            return unexpected("ack of " + std::to_string(len) + " bytes, expected 8");
        return std::optional<ChannelMsg>{Ack{get(p, 8)}};
    case MsgType::log:
        if (len == 0)
            return unexpected(std::string("empty log chunk"));
        return std::optional<ChannelMsg>{LogChunk{(flags & kFlagAckNow) != 0, std::vector<std::uint8_t>(p, p + len)}};
    case MsgType::copy_chunk:
        if (len == 0)
            return unexpected(std::string("empty copy chunk"));
        return std::optional<ChannelMsg>{CopyChunk{std::vector<std::uint8_t>(p, p + len)}};
    case MsgType::copy_done:
        if (len < 2 || p[0] > 1 || len != 2u + p[1] || p[1] > kMaxReasonBytes)
            return unexpected(std::string("malformed copy_done"));
        return std::optional<ChannelMsg>{CopyDone{p[0] == 1, printable(p + 2, p[1])}};
    }
    return unexpected(std::string("unreachable"));
}

LogCompressor::LogCompressor(int level) : cctx_(ZSTD_createCCtx())
{
    ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_compressionLevel, level);
    scratch_.resize(ZSTD_CStreamOutSize());
}

void LogCompressor::run(std::span<const std::uint8_t> in, ZSTD_EndDirective mode, bool ack_now,
                        std::vector<std::uint8_t>& out)
{
    ZSTD_inBuffer input{in.data(), in.size(), 0};
    for (;;) {
        ZSTD_outBuffer output{scratch_.data(), scratch_.size(), 0};
        const std::size_t left = ZSTD_compressStream2(cctx_.get(), &output, &input, mode);
        if (ZSTD_isError(left))
            throw std::runtime_error(std::string("zstd compression failed: ") + ZSTD_getErrorName(left));
        chunk_.compressed.insert(chunk_.compressed.end(), scratch_.data(), scratch_.data() + output.pos);
        const bool done = input.pos == input.size && (mode == ZSTD_e_continue || left == 0);
        // A message per full chunk, and the rest when the batch is flushed.
        if (chunk_.compressed.size() >= kMaxMsgPayload - scratch_.size() || (done && mode != ZSTD_e_continue)) {
            if (!chunk_.compressed.empty()) {
                chunk_.ack_now = ack_now;
                append_message(out, chunk_);
            }
            chunk_.compressed.clear();
        }
        if (done)
            return;
    }
}

void LogCompressor::add(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out)
{
    run(in, ZSTD_e_continue, false, out);
}

void LogCompressor::flush(bool ack_now, std::vector<std::uint8_t>& out)
{
    run({}, ZSTD_e_flush, ack_now, out);
}

void LogCompressor::compress(std::span<const std::uint8_t> in, bool ack_now, std::vector<std::uint8_t>& out)
{
    add(in, out);
    flush(ack_now, out);
}

LogDecompressor::LogDecompressor() : dctx_(ZSTD_createDCtx()) {}

Expected<bool, std::string> LogDecompressor::feed(std::span<const std::uint8_t> compressed,
                                                  const std::function<void(logformat::Frame&&)>& on_frame)
{
    constexpr std::size_t kStep = 64 * 1024;
    ZSTD_inBuffer input{compressed.data(), compressed.size(), 0};
    std::size_t produced_total = 0;
    for (;;) {
        const std::size_t start = pending_.size();
        pending_.resize(start + kStep);
        ZSTD_outBuffer output{pending_.data() + start, kStep, 0};
        const std::size_t ret = ZSTD_decompressStream(dctx_.get(), &output, &input);
        pending_.resize(start + output.pos);
        if (ZSTD_isError(ret))
            return unexpected("corrupt log stream: zstd: " + std::string(ZSTD_getErrorName(ret)));
        produced_total += output.pos;
        if (produced_total > kMaxDecompressedPerChunk)
            return unexpected("log chunk of " + std::to_string(compressed.size()) + " bytes decompresses to over " +
                              std::to_string(kMaxDecompressedPerChunk) + " bytes (decompression bomb?)");

        // Hand out every complete frame.
        std::size_t pos = 0;
        for (;;) {
            const auto rest = std::span<const std::uint8_t>(pending_).subspan(pos);
            if (rest.empty())
                break;
            auto ext = logformat::frame_extent(rest);
            if (!ext)
                return unexpected("log stream: " + ext.error().message());
            if (!ext->complete_header || ext->frame_bytes > rest.size())
                break;
            auto frame = logformat::decode_frame(rest.first(ext->frame_bytes));
            if (!frame)
                return unexpected("log stream: " + frame.error().message());
            on_frame(std::move(frame).value());
            pos += ext->frame_bytes;
        }
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(pos));
        // frame_extent already refuses headers promising more than the limit; this catches a
        // header that never completes.
        if (pending_.size() > logformat::kMaxFrameBody + 64)
            return unexpected(std::string("log stream: a frame header never completes"));
        if (input.pos == input.size && output.pos < kStep)
            return true;
    }
}

} // namespace xenft::channel
