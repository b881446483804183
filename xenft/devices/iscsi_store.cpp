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
    return IscsiStore(std::move(lun), first_lba, bytes, reservation_key);
}

bool IscsiStore::fail(const std::string& what, const arbiter::ScsiResult& r)
{
    last_error_ = "disk on LUN " + lun_.url() + ": " + what + ": " + r.message;
    if (failed_since_ok_++ == 0 && log_)
        log_(last_error_ + " (the guest gets I/O errors until a request succeeds)");
    return false;
}

bool IscsiStore::succeeded()
{
    if (failed_since_ok_ != 0 && log_)
        log_("disk on LUN " + lun_.url() + ": requests succeed again after " + std::to_string(failed_since_ok_) +
             " failed");
    failed_since_ok_ = 0;
    return true;
}

std::string IscsiStore::last_error() const
{
    std::lock_guard lock(*mu_);
    return last_error_;
}

void IscsiStore::set_log(std::function<void(const std::string&)> log)
{
    std::lock_guard lock(*mu_);
    log_ = std::move(log);
}

arbiter::ScsiResult IscsiStore::register_again()
{
    std::lock_guard lock(*mu_);
    if (key_ == 0)
        return {};
    return lun_.pr_register(key_);
}

bool IscsiStore::read(std::uint64_t offset, std::span<std::uint8_t> out)
{
    if (offset % VirtioBlk::kSector || out.size() % VirtioBlk::kSector || offset > bytes_ || out.size() > bytes_ - offset)
        return false;
    std::lock_guard lock(*mu_);
    std::vector<std::uint8_t> data;
    for (std::uint64_t done = 0; done < out.size();) {
        const std::uint64_t n = std::min<std::uint64_t>(kChunk, out.size() - done);
        const std::uint64_t lba = first_lba_ + (offset + done) / VirtioBlk::kSector;
        const auto r = lun_.read_blocks(lba, static_cast<std::uint32_t>(n / VirtioBlk::kSector), data);
        if (!r.ok())
            return fail("read at block " + std::to_string(lba), r);
        if (data.size() != n) {
            arbiter::ScsiResult short_read;
            short_read.kind = arbiter::ScsiResult::Kind::other_status;
            short_read.message = "short read (" + std::to_string(data.size()) + " of " + std::to_string(n) + " bytes)";
            return fail("read at block " + std::to_string(lba), short_read);
        }
        std::memcpy(out.data() + done, data.data(), n);
        done += n;
    }
    return succeeded();
}

bool IscsiStore::write(std::uint64_t offset, std::span<const std::uint8_t> data)
{
    if (offset % VirtioBlk::kSector || data.size() % VirtioBlk::kSector || offset > bytes_ || data.size() > bytes_ - offset)
        return false;
    std::lock_guard lock(*mu_);
    for (std::uint64_t done = 0; done < data.size();) {
        const std::uint64_t n = std::min<std::uint64_t>(kChunk, data.size() - done);
        const std::uint64_t lba = first_lba_ + (offset + done) / VirtioBlk::kSector;
        const auto r = lun_.write_blocks(lba, data.subspan(done, n));
        if (!r.ok())
            return fail("write at block " + std::to_string(lba), r);
        done += n;
    }
    return succeeded();
}

bool IscsiStore::flush()
{
    std::lock_guard lock(*mu_);
    const auto r = lun_.synchronize_cache();
    return r.ok() ? succeeded() : fail("SYNCHRONIZE CACHE", r);
}

} // namespace xenft::devices
