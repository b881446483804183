// A log as a sequence of frames: how log files (`xenft log dump`) and the logging channel's
// payload are laid out. Frames follow each other with no padding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "xenft/logformat/codec.hpp"

namespace xenft::logformat {

// Packs entries into frames of at most max_per_frame entries, starting a new frame wherever
// the epoch changes. Entries must carry consecutive sequence numbers within an epoch.
std::vector<std::uint8_t> encode_frames(std::span<const Entry> entries, std::size_t max_per_frame);

struct StreamError {
    DecodeError error;
    std::size_t frame_index;  // which frame failed
    std::size_t frame_offset; // where that frame starts in the stream
    std::string message() const;
};

// Decodes a complete stream of frames; a trailing partial frame is an error.
Expected<std::vector<Frame>, StreamError> decode_frames(std::span<const std::uint8_t> bytes);

} // namespace xenft::logformat
