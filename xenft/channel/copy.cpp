#include "xenft/channel/copy.hpp"

#include <zstd.h>

#include <stdexcept>

namespace xenft::channel {

namespace {

enum class Tag : std::uint8_t { begin = 1, pages = 2, final = 3 };

void put(std::vector<std::uint8_t>& out, std::uint64_t v, int n)
{
    for (int i = 0; i < n; ++i)
        out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// A bounds-checked reader over one record.
class Reader {
public:
    explicit Reader(std::span<const std::uint8_t> b) : b_(b) {}
    bool take(std::uint64_t& v, int n)
    {
        if (b_.size() - pos_ < static_cast<std::size_t>(n))
            return false;
        v = 0;
        for (int i = 0; i < n; ++i)
            v |= static_cast<std::uint64_t>(b_[pos_ + static_cast<std::size_t>(i)]) << (8 * i);
        pos_ += static_cast<std::size_t>(n);
        return true;
    }
    bool bytes(std::vector<std::uint8_t>& out, std::size_t n)
    {
        if (b_.size() - pos_ < n)
            return false;
        out.assign(b_.begin() + static_cast<std::ptrdiff_t>(pos_), b_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
        pos_ += n;
        return true;
    }
    bool at_end() const noexcept { return pos_ == b_.size(); }

private:
    std::span<const std::uint8_t> b_;
    std::size_t pos_ = 0;
};

} // namespace

std::vector<std::uint8_t> encode_copy_record(const CopyRecord& r)
{
    std::vector<std::uint8_t> out;
    std::visit(
        [&](const auto& x) {
            using R = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<R, CopyBegin>) {
                out.push_back(static_cast<std::uint8_t>(Tag::begin));
                put(out, x.memory_bytes, 8);
                put(out, x.pages, 8);
            } else if constexpr (std::is_same_v<R, CopyPages>) {
                if (x.numbers.size() > kCopyPagesPerRecord || x.data.size() != x.numbers.size() * kCopyPageBytes)
                    throw std::invalid_argument("copy record: pages and their bytes do not match");
                out.reserve(5 + x.numbers.size() * (8 + kCopyPageBytes));
                out.push_back(static_cast<std::uint8_t>(Tag::pages));
                put(out, x.numbers.size(), 4);
                for (std::uint64_t n : x.numbers)
                    put(out, n, 8);
                out.insert(out.end(), x.data.begin(), x.data.end());
            } else {
                if (x.cpu.size() > kMaxCopyStateBytes || x.devices.size() > kMaxCopyStateBytes)
                    throw std::invalid_argument("copy record: VM state over the limit");
                out.push_back(static_cast<std::uint8_t>(Tag::final));
                put(out, x.epoch, 8);
                put(out, x.exit, 8);
                put(out, x.next_seq, 8);
                put(out, x.cpu.size(), 4);
                out.insert(out.end(), x.cpu.begin(), x.cpu.end());
                put(out, x.devices.size(), 4);
                out.insert(out.end(), x.devices.begin(), x.devices.end());
            }
        },
        r);
    return out;
}

Expected<CopyRecord, std::string> decode_copy_record(std::span<const std::uint8_t> bytes)
{
    if (bytes.empty())
        return unexpected(std::string("empty copy record"));
    Reader in(bytes.subspan(1));
    auto truncated = [](const char* what) { return unexpected(std::string("truncated copy record (") + what + ")"); };
    // Each record is decoded in place in `rec` (moving a variant of vectors around makes GCC 12
    // warn falsely about uninitialized members).
    CopyRecord rec;
    switch (static_cast<Tag>(bytes[0])) {
    case Tag::begin: {
        auto& b = rec.emplace<CopyBegin>();
        if (!in.take(b.memory_bytes, 8) || !in.take(b.pages, 8))
            return truncated("begin");
        if (b.memory_bytes == 0 || b.memory_bytes % kCopyPageBytes != 0 || b.pages > b.memory_bytes / kCopyPageBytes)
            return unexpected("copy begin: " + std::to_string(b.pages) + " pages of a " + std::to_string(b.memory_bytes) +
                              "-byte memory do not fit");
        break;
    }
    case Tag::pages: {
        auto& p = rec.emplace<CopyPages>();
        std::uint64_t count = 0;
        if (!in.take(count, 4))
            return truncated("page count");
        if (count == 0 || count > kCopyPagesPerRecord)
            return unexpected("copy record of " + std::to_string(count) + " pages (1.." +
                              std::to_string(kCopyPagesPerRecord) + ")");
        p.numbers.resize(count);
        for (auto& n : p.numbers)
            if (!in.take(n, 8))
                return truncated("page numbers");
        if (!in.bytes(p.data, count * kCopyPageBytes))
            return truncated("page data");
        break;
    }
    case Tag::final: {
        auto& f = rec.emplace<CopyFinal>();
        std::uint64_t n = 0;
        if (!in.take(f.epoch, 8) || !in.take(f.exit, 8) || !in.take(f.next_seq, 8))
            return truncated("final");
        if (f.next_seq == 0)
            return unexpected(std::string("copy final: log entries are numbered from 1"));
        for (auto* blob : {&f.cpu, &f.devices}) {
            if (!in.take(n, 4))
                return truncated("state length");
            if (n > kMaxCopyStateBytes)
                return unexpected("copy final: a state of " + std::to_string(n) + " bytes (limit " +
                                  std::to_string(kMaxCopyStateBytes) + ")");
            if (!in.bytes(*blob, n))
                return truncated("state");
        }
        break;
    }
    default:
        return unexpected("unknown copy record type " + std::to_string(bytes[0]));
    }
    if (!in.at_end())
        return unexpected(std::string("copy record with trailing bytes"));
    return rec;
}

std::vector<std::uint8_t> compress_copy_record(std::span<const std::uint8_t> encoded, int level)
{
    std::vector<std::uint8_t> out(ZSTD_compressBound(encoded.size()));
    const std::size_t n = ZSTD_compress(out.data(), out.size(), encoded.data(), encoded.size(), level);
    if (ZSTD_isError(n))
        throw std::runtime_error(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
    out.resize(n);
    return out;
}

Expected<CopyRecord, std::string> decompress_copy_record(std::span<const std::uint8_t> compressed)
{
    const unsigned long long size = ZSTD_getFrameContentSize(compressed.data(), compressed.size());
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN)
        return unexpected(std::string("copy chunk: not a zstd frame with its size"));
    if (size > kMaxCopyRecordBytes)
        return unexpected("copy chunk decompresses to " + std::to_string(size) + " bytes, over the " +
                          std::to_string(kMaxCopyRecordBytes) + "-byte limit");
    if (ZSTD_findFrameCompressedSize(compressed.data(), compressed.size()) != compressed.size())
        return unexpected(std::string("copy chunk: not exactly one zstd frame"));
    std::vector<std::uint8_t> raw(size);
    const std::size_t n = ZSTD_decompress(raw.data(), raw.size(), compressed.data(), compressed.size());
    if (ZSTD_isError(n) || n != size)
        return unexpected("copy chunk: corrupt zstd frame" + std::string(ZSTD_isError(n) ? std::string(": ") + ZSTD_getErrorName(n) : ""));
    return decode_copy_record(raw);
}

} // namespace xenft::channel
