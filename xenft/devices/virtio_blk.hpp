// virtio-mmio block device (virtio 1.x, device ID 2), 512-byte sectors, one request queue,
// requests completed at the QueueNotify exit that submitted them (so completion time is part of
// the deterministic execution). Reads and writes go through a BlockPort the engine chooses: on
// the primary the store (a file or the shared iSCSI LUN) with every read's data logged; on a
// replaying backup the logged data, and writes dropped.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "xenft/devices/virtio_mmio.hpp"

namespace xenft::devices {

class BlockPort {
public:
    virtual ~BlockPort() = default;
    // Offsets and lengths are multiples of 512 within the disk.
    virtual bool read(std::uint64_t offset, std::span<std::uint8_t> out) = 0;
    virtual bool write(std::uint64_t offset, std::span<const std::uint8_t> data) = 0;
    virtual bool flush() = 0;
};

class VirtioBlk final : public VirtioMmio {
public:
    static constexpr std::uint64_t kDefaultBase = 0xfeb02000;
    static constexpr std::uint8_t kDefaultVector = 0x51;
    static constexpr std::uint8_t kIsaLine = 11; // on a plain PC: through the slave 8259
    static constexpr std::uint32_t kSector = 512;
    static constexpr std::uint32_t kMaxRequestBytes = 1u << 20; // matches the log's largest disk read

    VirtioBlk(GuestMemory& memory, std::uint64_t capacity_bytes, std::uint64_t base = kDefaultBase,
              std::uint8_t vector = kDefaultVector);

    const char* name() const override { return "virtio-blk"; }
    void set_port(BlockPort* port) noexcept { port_ = port; }
    std::uint64_t capacity_bytes() const noexcept { return capacity_; }
    std::uint64_t requests() const noexcept { return requests_; }

private:
    void notify(std::uint32_t q) override;
    std::uint64_t read_config(std::uint64_t offset, std::uint8_t size) override;
    // One request; returns the bytes written into the chain, or nothing if the chain is broken.
    std::optional<std::uint32_t> serve(const VirtqChain& chain);

    std::uint64_t capacity_;
    BlockPort* port_ = nullptr;
    std::uint64_t requests_ = 0;
};

} // namespace xenft::devices
