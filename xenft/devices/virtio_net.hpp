// virtio-mmio network device (virtio 1.x, device ID 1): queue 0 receives, queue 1 transmits,
// the MAC address is in the configuration space. Frames the guest transmits go to a NetTransmit
// the engine chooses (the primary's output gate and TAP; nothing on a replaying backup); frames
// from outside are handed to receive() by the engine at a synchronous exit, after it logged
// them, so the backup delivers the same frame at the same exit.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "xenft/devices/virtio_mmio.hpp"

namespace xenft::devices {

using MacAddress = std::array<std::uint8_t, 6>;

class NetTransmit {
public:
    virtual ~NetTransmit() = default;
    virtual void transmit(std::span<const std::uint8_t> frame) = 0;
};

class VirtioNet final : public VirtioMmio {
public:
    static constexpr std::uint64_t kDefaultBase = 0xfeb01000;
    static constexpr std::uint8_t kDefaultVector = 0x50;
    static constexpr std::uint8_t kIsaLine = 5; // on a plain PC (acpi_tables.hpp)
    static constexpr std::size_t kHeaderBytes = 12; // struct virtio_net_hdr with num_buffers
    static constexpr std::size_t kMaxFrame = 1514;  // no GSO, no jumbo frames offered

    VirtioNet(GuestMemory& memory, MacAddress mac, std::uint64_t base = kDefaultBase, std::uint8_t vector = kDefaultVector);

    const char* name() const override { return "virtio-net"; }
    // Where transmitted frames go; null drops them (a replaying backup).
    void set_transmit(NetTransmit* tx) noexcept { tx_ = tx; }

    // Whether the driver has posted a receive buffer.
    bool can_receive();
    enum class Rx : std::uint8_t { delivered, no_buffer, dropped };
    // Delivers one frame into the next receive buffer and interrupts the guest. A frame that
    // does not fit the buffer is dropped, as a NIC drops it.
    Rx receive(std::span<const std::uint8_t> frame);

    const MacAddress& mac() const noexcept { return mac_; }
    std::uint64_t frames_transmitted() const noexcept { return tx_frames_; }
    std::uint64_t frames_received() const noexcept { return rx_frames_; }
    std::uint64_t bytes_transmitted() const noexcept { return tx_bytes_; }
    std::uint64_t bytes_received() const noexcept { return rx_bytes_; }

private:
    void notify(std::uint32_t q) override;
    std::uint64_t read_config(std::uint64_t offset, std::uint8_t size) override;

    MacAddress mac_;
    NetTransmit* tx_ = nullptr;
    std::uint64_t tx_frames_ = 0, rx_frames_ = 0, tx_bytes_ = 0, rx_bytes_ = 0;
};

} // namespace xenft::devices
