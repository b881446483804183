#include "xenft/devices/iscsi_store.hpp"

#include <algorithm>
#include <cstring>

namespace xenft::devices {

namespace {
constexpr std::uint64_t kChunk = 1u << 20;
}

Expected<IscsiStore, std::string> IscsiStore::open(arbiter::Lun lun, std::uint64_t first_lba, std::uint64_t bytes,
                                                  std::uint64_t reservation_key)
{
    const std::string name = "disk on LUN " + lun.url();
    if (lun.block_size() != VirtioBlk::kSector)
        return unexpected(name + ": block size " + std::to_string(lun.block_size()) + ", the guest disk needs 512");
    if (bytes == 0 || bytes % VirtioBlk::kSector != 0)
        return unexpected(name + ": size " + std::to_string(bytes) + " is not a positive multiple of 512 bytes");
    if (first_lba > lun.blocks() || bytes / VirtioBlk::kSector > lun.blocks() - first_lba)
        return unexpected(name + ": blocks " + std::to_string(first_lba) + "+" + std::to_string(bytes / VirtioBlk::kSector) +
                          " run past the LUN's " + std::to_string(lun.blocks()) + " blocks");
    if (reservation_key != 0) {
        const auto r = lun.pr_register(reservation_key);
        // A target without persistent reservations has nothing to fence with: fine.
        if (!r.ok() && !r.illegal_request())
            return unexpected(name + ": cannot register the host's reservation key: " + r.message);
    }
    return IscsiStore(std::move(lun), first_lba, bytes);
}

bool IscsiStore::fail(const std::string& what, const arbiter::ScsiResult& r)
{
    last_error_ = "disk on LUN " + lun_.url() + ": " + what + ": " + r.message;
    return false;
}

bool IscsiStore::read(std::uint64_t offset, std::span<std::uint8_t> out)
{
    if (offset % VirtioBlk::kSector || out.size() % VirtioBlk::kSector || offset > bytes_ || out.size() > bytes_ - offset)
        return false;
    std::vector<std::uint8_t> data;
    for (std::uint64_t done = 0; done < out.size();) {
        const std::uint64_t n = std::min<std::uint64_t>(kChunk, out.size() - done);
        const std::uint64_t lba = first_lba_ + (offset + done) / VirtioBlk::kSector;
        const auto r = lun_.read_blocks(lba, static_cast<std::uint32_t>(n / VirtioBlk::kSector), data);
        if (!r.ok())
            return fail("read at block " + std::to_string(lba), r);
        if (data.size() != n) {
            last_error_ = "disk on LUN " + lun_.url() + ": short read at block " + std::to_string(lba);
            return false;
        }
        std::memcpy(out.data() + done, data.data(), n);
        done += n;
    }
    return true;
}

bool IscsiStore::write(std::uint64_t offset, std::span<const std::uint8_t> data)
{
    if (offset % VirtioBlk::kSector || data.size() % VirtioBlk::kSector || offset > bytes_ || data.size() > bytes_ - offset)
        return false;
    for (std::uint64_t done = 0; done < data.size();) {
        const std::uint64_t n = std::min<std::uint64_t>(kChunk, data.size() - done);
        const std::uint64_t lba = first_lba_ + (offset + done) / VirtioBlk::kSector;
        const auto r = lun_.write_blocks(lba, data.subspan(done, n));
        if (!r.ok())
            return fail("write at block " + std::to_string(lba), r);
        done += n;
    }
    return true;
}

bool IscsiStore::flush()
{
    const auto r = lun_.synchronize_cache();
    return r.ok() || fail("SYNCHRONIZE CACHE", r);
}

} // namespace xenft::devices
