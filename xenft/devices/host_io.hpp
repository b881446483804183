// The host side of the guest's devices: a TAP interface for the NIC and a file for the disk
// (the shared iSCSI LUN joins it with the end-to-end pair). Only the replica that records (or
// runs live) touches them; a replaying backup gets frames and disk data from the log.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"
#include "xenft/common/unique_fd.hpp"
#include "xenft/devices/virtio_blk.hpp"
#include "xenft/devices/virtio_net.hpp"

namespace xenft::devices {

// An existing or new TAP interface (IFF_TAP | IFF_NO_PI), non-blocking.
class TapDevice final : public NetTransmit {
public:
    // Needs CAP_NET_ADMIN. The error names the interface and the cause.
    static Expected<TapDevice, std::string> open(const std::string& name);

    // One frame if one is waiting.
    std::optional<std::vector<std::uint8_t>> receive();
    void transmit(std::span<const std::uint8_t> frame) override;
    int fd() const noexcept { return fd_.get(); }
    const std::string& name() const noexcept { return name_; }
    std::uint64_t transmit_errors() const noexcept { return tx_errors_; }

private:
    TapDevice(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
    UniqueFd fd_;
    std::string name_;
    std::uint64_t tx_errors_ = 0;
};

// A disk image file (or block device) of a whole number of sectors.
class FileStore final : public BlockPort {
public:
    static Expected<FileStore, std::string> open(const std::string& path);
    bool read(std::uint64_t offset, std::span<std::uint8_t> out) override;
    bool write(std::uint64_t offset, std::span<const std::uint8_t> data) override;
    bool flush() override;
    std::uint64_t size_bytes() const noexcept { return size_; }

private:
    FileStore(UniqueFd fd, std::uint64_t size) : fd_(std::move(fd)), size_(size) {}
    UniqueFd fd_;
    std::uint64_t size_ = 0;
};

} // namespace xenft::devices
