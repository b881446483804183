// libFuzzer target for what a logging-channel peer can send after TLS: the message splitter
// and, for log chunks, the zstd stream decoder with its frame assembly and limits; for copy
// chunks, the live-copy record decoder (copy.hpp). The input is also fed to the decompressor
// and the record decoder directly, so corruption behind the compression is explored too.
#include "xenft/channel/copy.hpp"
#include "xenft/channel/wire.hpp"

using namespace xenft::channel;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::span<const std::uint8_t> in(data, size);
    MessageReader reader;
    LogDecompressor from_messages;
    reader.feed(in);
    for (;;) {
        auto m = reader.next();
        if (!m || !*m)
            break;
        if (const auto* chunk = std::get_if<LogChunk>(&**m))
            if (!from_messages.feed(chunk->compressed, [](xenft::logformat::Frame&&) {}))
                break;
        if (const auto* copy = std::get_if<CopyChunk>(&**m))
            (void)decompress_copy_record(copy->compressed);
    }
    (void)decode_copy_record(in);
    LogDecompressor direct;
    (void)direct.feed(in, [](xenft::logformat::Frame&&) {});
    return 0;
}
