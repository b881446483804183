// Frame sequences; see stream.hpp.
#include "xenft/logformat/stream.hpp"

#include <optional>
#include <stdexcept>

namespace xenft::logformat {

std::vector<std::uint8_t> encode_frames(std::span<const Entry> entries, std::size_t max_per_frame)
{
    if (max_per_frame == 0 || max_per_frame > kMaxEntriesPerFrame)
        throw std::invalid_argument("entries per frame must be 1.." + std::to_string(kMaxEntriesPerFrame));
    std::vector<std::uint8_t> out;
    std::optional<FrameEncoder> enc;
    for (const Entry& e : entries) {
        if (enc && (enc->epoch() != e.epoch || enc->entry_count() == max_per_frame)) {
            enc->finish_into(out);
            if (enc->epoch() != e.epoch)
                enc.reset();
        }
        if (!enc)
            enc.emplace(e.epoch, e.seq);
        enc->append(e);
    }
    if (enc && enc->entry_count() > 0)
        enc->finish_into(out);
    return out;
}

std::string StreamError::message() const
{
    return "frame " + std::to_string(frame_index) + " at stream offset " + std::to_string(frame_offset) + ": " +
           error.message();
}

Expected<std::vector<Frame>, StreamError> decode_frames(std::span<const std::uint8_t> bytes)
{
    std::vector<Frame> frames;
    std::size_t pos = 0;
    while (pos < bytes.size()) {
        const auto rest = bytes.subspan(pos);
        auto extent = frame_extent(rest);
        if (!extent)
            return unexpected(StreamError{extent.error(), frames.size(), pos});
        if (!extent->complete_header || extent->frame_bytes > rest.size())
            return unexpected(StreamError{DecodeError{DecodeErrc::truncated, rest.size(), "stream ends inside a frame"},
                                          frames.size(), pos});
        auto frame = decode_frame(rest.first(extent->frame_bytes));
        if (!frame)
            return unexpected(StreamError{frame.error(), frames.size(), pos});
        frames.push_back(std::move(frame).value());
        pos += extent->frame_bytes;
    }
    return frames;
}

} // namespace xenft::logformat
