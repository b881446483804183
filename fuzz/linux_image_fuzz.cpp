// libFuzzer target for the direct Linux boot's bzImage parser (a kernel file handed to xenft).
#include "xenft/engine/linux_image.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::span<const std::uint8_t> bytes(data, size);
    // The first half as the kernel, the rest as the initrd: sizes that fit and that do not.
    (void)xenft::engine::build_linux_image(bytes.first(size / 2), bytes.subspan(size / 2), {64u << 20, "console=ttyS0", std::nullopt});
    return 0;
}
