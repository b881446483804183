#include "xenft/arbiter/record.hpp"

#include <algorithm>
#include <ctime>

#include "xenft/common/crc32c.hpp"

namespace xenft::arbiter {

namespace {

constexpr std::uint8_t kMagic[8] = {'X', 'F', 'T', 'A', 'R', 'B', 'I', 'T'};
constexpr std::uint8_t kVersion = 1;
constexpr std::size_t kCrcOffset = 8 + 1 + 3 + 8 + 8 + 4 + 4 + 8; // 44

void put(std::uint8_t* p, std::uint64_t v, int n)
{
    for (int i = 0; i < n; ++i)
        p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

std::uint64_t get(const std::uint8_t* p, int n)
{
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i)
        v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return v;
}

} // namespace

Block encode_record(const Record& r)
{
    Block b{};
    std::copy(kMagic, kMagic + 8, b.begin());
    b[8] = kVersion;
    put(&b[12], r.vm_id, 8);
    put(&b[20], r.epoch, 8);
    put(&b[28], r.owner, 4);
    put(&b[36], r.timestamp_ms, 8);
    put(&b[kCrcOffset], crc32c(std::span<const std::uint8_t>(b).first(kCrcOffset)), 4);
    return b;
}

Expected<Record, std::string> decode_record(std::span<const std::uint8_t> block)
{
    if (block.size() != kRecordBlock)
        return unexpected("arbitration record of " + std::to_string(block.size()) + " bytes, expected " +
                          std::to_string(kRecordBlock));
    if (std::all_of(block.begin(), block.end(), [](std::uint8_t x) { return x == 0; }))
        return unexpected(std::string("no arbitration record (the block is all zeros: run 'xenft arbiter init')"));
    if (!std::equal(kMagic, kMagic + 8, block.begin()))
        return unexpected(std::string("not an arbitration record (bad magic): wrong LUN or block?"));
    if (block[8] != kVersion)
        return unexpected("arbitration record version " + std::to_string(block[8]) + ", this build reads " +
                          std::to_string(kVersion));
    const std::uint32_t stored = static_cast<std::uint32_t>(get(&block[kCrcOffset], 4));
    if (stored != crc32c(block.first(kCrcOffset)))
        return unexpected(std::string("arbitration record is corrupt (checksum mismatch)"));
    if (block[9] | block[10] | block[11] || get(&block[32], 4) != 0 ||
        !std::all_of(block.begin() + kCrcOffset + 4, block.end(), [](std::uint8_t x) { return x == 0; }))
        return unexpected(std::string("arbitration record has reserved bytes set"));
    return Record{get(&block[12], 8), get(&block[20], 8), static_cast<std::uint32_t>(get(&block[28], 4)), get(&block[36], 8)};
}

std::string to_string(const Record& r)
{
    std::string s = "VM " + std::to_string(r.vm_id) + ", epoch " + std::to_string(r.epoch) + ", owner ";
    s += r.owner == 0 ? std::string("nobody") : "host " + std::to_string(r.owner);
    const std::time_t t = static_cast<std::time_t>(r.timestamp_ms / 1000);
    char when[32] = "?";
    std::tm tm{};
    if (gmtime_r(&t, &tm))
        std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return s + ", written " + when;
}

} // namespace xenft::arbiter
