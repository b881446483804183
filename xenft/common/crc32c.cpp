// CRC32C with a hardware fast path; see crc32c.hpp.
#include "xenft/common/crc32c.hpp"

#include <boost/crc.hpp>
#include <cstring>

namespace xenft {

namespace {

// Reflected CRC-32C: polynomial 0x1EDC6F41, init and final XOR all ones (RFC 3720, B.4).
using Crc32cTable = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(std::span<const std::uint8_t> data) noexcept
{
    std::uint64_t crc = 0xFFFFFFFF;
    const std::uint8_t* p = data.data();
    std::size_t n = data.size();
    while (n >= 8) {
        std::uint64_t word;
        std::memcpy(&word, p, sizeof word);
        crc = __builtin_ia32_crc32di(crc, word);
        p += 8;
        n -= 8;
    }
    auto crc32 = static_cast<std::uint32_t>(crc);
    while (n-- > 0)
        crc32 = __builtin_ia32_crc32qi(crc32, *p++);
    return crc32 ^ 0xFFFFFFFF;
}

bool have_sse42() noexcept
{
    static const bool have = __builtin_cpu_supports("sse4.2");
    return have;
}
#endif

} // namespace

std::uint32_t crc32c_portable(std::span<const std::uint8_t> data) noexcept
{
    Crc32cTable crc;
    crc.process_bytes(data.data(), data.size());
    return crc.checksum();
}

std::uint32_t crc32c(std::span<const std::uint8_t> data) noexcept
{
#if defined(__x86_64__)
    if (have_sse42())
        return crc32c_sse42(data);
#endif
    return crc32c_portable(data);
}

} // namespace xenft
