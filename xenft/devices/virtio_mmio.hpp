// The virtio-mmio transport (virtio 1.x, "Virtio Over MMIO", register layout version 2) and
// split virtqueues, shared by the network and block devices. Everything here runs inside a
// synchronous exit: a register access by the guest, or a call the engine makes at an exit
// (delivering a received frame). Guest memory is read and written only then, so the device
// work is part of the deterministic execution and the backup repeats it exactly.
//
// The guest is not trusted: a descriptor chain that loops, points outside guest memory or is
// longer than the queue puts the device into DEVICE_NEEDS_RESET, as the spec allows, and
// nothing else happens.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "xenft/devices/devices.hpp"
#include "xenft/devices/guest_memory.hpp"

namespace xenft::devices {

// One buffer of a descriptor chain, as the device sees it.
struct VirtqBuffer {
    std::uint64_t gpa = 0;
    std::uint32_t length = 0;
    bool device_writable = false;
};

struct VirtqChain {
    std::uint16_t head = 0;
    std::vector<VirtqBuffer> buffers;
};

// The device-readable bytes of a chain, in order; false if they exceed max or memory fails.
bool gather(GuestMemory& mem, const VirtqChain& chain, std::vector<std::uint8_t>& out, std::size_t max);
// Total length of the device-writable buffers.
std::uint64_t writable_bytes(const VirtqChain& chain);
// Writes data into the device-writable buffers, in order, starting `skip` bytes in.
bool scatter(GuestMemory& mem, const VirtqChain& chain, std::span<const std::uint8_t> data, std::uint64_t skip = 0);

class Virtqueue {
public:
    static constexpr std::uint16_t kMaxSize = 256;

    // Guest-programmed layout.
    std::uint32_t size = 0; // entries (a power of two, <= kMaxSize)
    bool ready = false;
    std::uint64_t desc = 0, driver = 0, device = 0;
    // Device-side progress.
    std::uint16_t last_avail = 0, used_idx = 0;

    // The next chain the driver made available, if any. An error (bad memory, a loop) is
    // reported as std::nullopt with *broken set.
    std::optional<VirtqChain> pop(GuestMemory& mem, bool* broken);
    // Returns a chain to the driver with `written` bytes written into it.
    bool push(GuestMemory& mem, std::uint16_t head, std::uint32_t written);
    // Whether the driver made a chain available (without taking it).
    bool has_available(GuestMemory& mem, bool* broken) const;

    void save(StateWriter& out) const;
    void load(StateReader& in);
};

class VirtioMmio : public Device {
public:
    static constexpr std::uint64_t kWindow = 0x200;
    static constexpr std::uint32_t kStatusNeedsReset = 0x40;

    VirtioMmio(std::uint64_t base, std::uint32_t device_id, std::uint8_t vector, std::uint64_t device_features,
               std::size_t queues, GuestMemory& memory);

    bool claims(bool pio, std::uint64_t a) const override { return !pio && a >= base_ && a < base_ + kWindow; }
    std::uint64_t read(std::uint64_t address, std::uint8_t size) override;
    void write(std::uint64_t address, std::uint8_t size, std::uint64_t value) override;
    bool read_is_deterministic(std::uint64_t) const override { return true; }
    void save(StateWriter& out) const override;
    bool load(StateReader& in) override;
    std::optional<std::uint8_t> pending_interrupt() const override
    {
        return irq_pending_ ? std::optional<std::uint8_t>(vector_) : std::nullopt;
    }
    void interrupt_delivered() override { irq_pending_ = false; }
    // InterruptStatus bits the driver has not written to InterruptACK.
    bool reassert_unacknowledged_interrupt() override
    {
        irq_pending_ = irq_pending_ || interrupt_status_ != 0;
        return irq_pending_;
    }
    std::optional<std::uint8_t> isa_line() const override { return isa_line_; }
    // Interrupts go to ISA line `irq` rather than as vector(): how the platform is wired, not
    // guest state (both replicas are made from the same configuration).
    void wire_to_isa_line(std::uint8_t irq) noexcept { isa_line_ = irq; }

    std::uint64_t base() const noexcept { return base_; }
    std::uint8_t vector() const noexcept { return vector_; }
    // DRIVER_OK set and no reset pending.
    bool driver_ready() const noexcept { return (status_ & 4) && !(status_ & kStatusNeedsReset); }

protected:
    // The guest wrote QueueNotify for queue q.
    virtual void notify(std::uint32_t q) = 0;
    // Device-specific configuration space (offset from 0x100).
    virtual std::uint64_t read_config(std::uint64_t offset, std::uint8_t size) = 0;
    virtual void reset_device() {}
    virtual void save_device(StateWriter&) const {}
    virtual void load_device(StateReader&) {}

    Virtqueue* queue(std::uint32_t q) { return q < queues_.size() && queues_[q].ready ? &queues_[q] : nullptr; }
    // Serves every chain the driver made available on q: serve() returns the bytes it wrote
    // into the chain, or nothing if the chain is unusable (the device then needs a reset).
    // One used-buffer notification for the lot.
    template <class Serve>
    void drain(std::uint32_t q, Serve serve)
    {
        Virtqueue* vq = queue(q);
        bool broken = false, returned = false;
        while (auto chain = vq->pop(memory_, &broken)) {
            const std::optional<std::uint32_t> written = serve(*chain);
            if (!written || !vq->push(memory_, chain->head, *written)) {
                broken = true;
                break;
            }
            returned = true;
        }
        if (broken)
            fail();
        else if (returned)
            used_buffer_notification();
    }
    // Marks the device broken (bad descriptors from the guest).
    void fail() { status_ |= kStatusNeedsReset, interrupt_status_ |= 2, irq_pending_ = true; }
    // A used buffer was returned: tell the driver.
    void used_buffer_notification() { interrupt_status_ |= 1, irq_pending_ = true; }
    std::uint64_t driver_features() const noexcept { return driver_features_; }

    GuestMemory& memory_;

private:
    void reset();

    std::uint64_t base_;
    std::uint32_t device_id_;
    std::uint8_t vector_;
    std::uint64_t device_features_;
    std::vector<Virtqueue> queues_;
    std::uint32_t status_ = 0, device_features_sel_ = 0, driver_features_sel_ = 0, queue_sel_ = 0;
    std::uint32_t interrupt_status_ = 0;
    std::uint64_t driver_features_ = 0;
    bool irq_pending_ = false;
    std::optional<std::uint8_t> isa_line_;
};

} // namespace xenft::devices
