// libFuzzer target for the log frame decoder and the frame-stream splitter. Beyond "no crash",
// it checks that whatever decodes re-encodes to a frame that decodes to the same entries.
#include <cstdlib>

#include "xenft/logformat/stream.hpp"

using namespace xenft::logformat;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::span<const std::uint8_t> in(data, size);
    (void)frame_extent(in);
    auto frames = decode_frames(in);
    if (!frames)
        return 0;
    for (const Frame& f : *frames) {
        auto again = decode_frame(encode_frames(f.entries, kMaxEntriesPerFrame));
        if (!again || again->entries != f.entries)
            std::abort();
    }
    return 0;
}
