#include "xenft/devices/virtio_blk.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

namespace xenft::devices {

namespace {
constexpr std::uint64_t kFeatureFlush = 1u << 9; // VIRTIO_BLK_F_FLUSH
constexpr std::uint32_t kTypeIn = 0, kTypeOut = 1, kTypeFlush = 4, kTypeGetId = 8;
constexpr std::uint8_t kOk = 0, kIoErr = 1, kUnsupported = 2;
constexpr std::size_t kHeaderBytes = 16; // type, reserved, sector
} // namespace

VirtioBlk::VirtioBlk(GuestMemory& memory, std::uint64_t capacity_bytes, std::uint64_t base, std::uint8_t vector)
    : VirtioMmio(base, 2, vector, kFeatureFlush, 1, memory), capacity_(capacity_bytes / kSector * kSector)
{
}

std::uint64_t VirtioBlk::read_config(std::uint64_t offset, std::uint8_t size)
{
    // Only the capacity (in sectors) at offset 0; the optional fields are not offered.
    const std::uint64_t sectors = capacity_ / kSector;
    if (offset >= 8)
        return 0;
    const std::uint64_t v = sectors >> (8 * offset);
    return size >= 8 ? v : v & ((std::uint64_t{1} << (8 * size)) - 1);
}

std::optional<std::uint32_t> VirtioBlk::serve(const VirtqChain& chain)
{
    std::vector<std::uint8_t> in;
    if (!gather(memory_, chain, in, kHeaderBytes + kMaxRequestBytes) || in.size() < kHeaderBytes)
        return std::nullopt;
    const std::uint64_t room = writable_bytes(chain);
    if (room < 1 || room > kMaxRequestBytes + 1)
        return std::nullopt;
    std::uint32_t type = 0;
    std::uint64_t sector = 0;
    std::memcpy(&type, in.data(), 4);
    std::memcpy(&sector, in.data() + 8, 8);
    const std::span<const std::uint8_t> payload = std::span(in).subspan(kHeaderBytes);
    const std::uint64_t data_room = room - 1; // the last writable byte is the status
    ++requests_;

    auto in_range = [&](std::uint64_t bytes) {
        return bytes % kSector == 0 && sector <= capacity_ / kSector && bytes <= capacity_ - sector * kSector;
    };
    std::uint8_t status = kOk;
    std::vector<std::uint8_t> out;
    switch (type) {
    case kTypeIn:
        out.resize(data_room);
        if (!in_range(data_room) || !port_ || !port_->read(sector * kSector, out)) {
            status = kIoErr;
            out.clear();
        }
        break;
    case kTypeOut:
        if (!in_range(payload.size()) || !port_ || !port_->write(sector * kSector, payload))
            status = kIoErr;
        break;
    case kTypeFlush:
        if (!port_ || !port_->flush())
            status = kIoErr;
        break;
    case kTypeGetId: {
        static constexpr char kId[20] = "xenft-virtio-blk";
        out.assign(kId, kId + std::min<std::uint64_t>(sizeof kId, data_room));
        break;
    }
    default: status = kUnsupported; break;
    }
    if (!scatter(memory_, chain, out) || !scatter(memory_, chain, std::span(&status, 1), room - 1))
        return std::nullopt;
    return static_cast<std::uint32_t>(out.size() + 1);
}

void VirtioBlk::notify(std::uint32_t)
{
    drain(0, [this](const VirtqChain& chain) { return serve(chain); });
}

} // namespace xenft::devices
