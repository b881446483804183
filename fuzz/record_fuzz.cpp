// libFuzzer target for the arbitration record decoder (a block read from shared storage that
// another host, or corruption, may have written). Whatever decodes must encode to the same block.
#include <cstdlib>
#include <cstring>

#include "xenft/arbiter/record.hpp"

using namespace xenft::arbiter;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    auto r = decode_record(std::span<const std::uint8_t>(data, size));
    if (r && std::memcmp(encode_record(*r).data(), data, kRecordBlock) != 0)
        std::abort();
    return 0;
}
