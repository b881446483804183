// The host side of the guest's devices: a TAP interface for the NIC and a file for the disk
// (the shared iSCSI LUN joins it with the end-to-end pair). Only the replica that records (or
// runs live) touches them; a replaying backup gets frames and disk data from the log. And the
// file the guest's console is kept in, which every replica writes (it is not an output the
// pair holds: nobody outside the host reads it).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"
#include "xenft/common/unique_fd.hpp"
#include "xenft/devices/devices.hpp"
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

// The guest's console in a file (xenft.conf(5), vm.console-log), as an administrator reads it:
// appended a line at a time, each line after the time it was completed (UTC, to the
// millisecond, as xenftd's own log without systemd), carriage returns dropped. A device model
// on one thread writes at a time, but a node's next one may start before the last is gone, so
// put() locks. A write that fails is reported once (error()) and the rest is dropped: a full
// disk must not slow the guest.
class ConsoleLog final : public ConsoleSink {
public:
    // Creates the file (0640) and its folder (0750) if they are missing. The error names the file
    // and the cause.
    static Expected<std::unique_ptr<ConsoleLog>, std::string> open(const std::string& path);
    ~ConsoleLog() override;
    ConsoleLog(const ConsoleLog&) = delete;
    ConsoleLog& operator=(const ConsoleLog&) = delete;

    void put(char c) override;
    // A line of xenftd's own ("--- ... ---"), after the guest's unfinished one if any.
    void note(std::string_view text);
    // The first failed write ("console log PATH: CAUSE"), empty while all went well.
    std::string error() const;
    const std::string& path() const noexcept { return path_; }

    // A guest line longer than this is written in pieces.
    static constexpr std::size_t kMaxLine = 4096;

private:
    ConsoleLog(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
    void write_line_locked(std::string_view text);

    const std::string path_;
    UniqueFd fd_;
    mutable std::mutex mu_;
    std::string line_;
    std::string error_;
};

} // namespace xenft::devices
