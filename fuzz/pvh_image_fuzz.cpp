// libFuzzer target for the PVH guest-image parser (an ELF file handed to the backend).
#include "xenft/engine/pvh_image.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    (void)xenft::engine::parse_pvh_image(std::span<const std::uint8_t>(data, size), 16u << 20);
    return 0;
}
