// libFuzzer target for the virtio-mmio devices, driven the way a hostile guest drives them. The
// input: one byte of flags (bit 0: run the normal initialization first, with queues in the low
// 8 KiB), one byte giving the length of the guest memory image in 32-byte units, the image
// (descriptor tables, rings, buffers), then register accesses and frame deliveries. Nothing may
// crash, and a device's state must survive save/load unchanged.
#include <cstring>
#include <vector>

#include "tests/buffer_memory.hpp"
#include "xenft/devices/virtio_blk.hpp"
#include "xenft/devices/virtio_net.hpp"

namespace {

using namespace xenft::devices;

constexpr std::size_t kMemory = 64 * 1024;

using Memory = xenft::testing::BufferMemory;

class Disk final : public BlockPort {
public:
    std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(8 * 1024, 0);
    bool read(std::uint64_t offset, std::span<std::uint8_t> out) override
    {
        if (offset > bytes.size() || out.size() > bytes.size() - offset)
            __builtin_trap(); // the device must have checked the range
        std::memcpy(out.data(), bytes.data() + offset, out.size());
        return true;
    }
    bool write(std::uint64_t offset, std::span<const std::uint8_t> data) override
    {
        if (offset > bytes.size() || data.size() > bytes.size() - offset)
            __builtin_trap();
        std::memcpy(bytes.data() + offset, data.data(), data.size());
        return true;
    }
    bool flush() override { return true; }
};

class Drop final : public NetTransmit {
public:
    void transmit(std::span<const std::uint8_t> frame) override
    {
        if (frame.size() > VirtioNet::kMaxFrame)
            __builtin_trap();
    }
};

std::vector<std::uint8_t> state_of(const Device& d)
{
    std::vector<std::uint8_t> out;
    StateWriter w(out);
    d.save(w);
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size < 2)
        return 0;
    Memory mem(kMemory);
    const bool init = data[0] & 1;
    const std::size_t image = std::min(size - 2, std::size_t{data[1]} * 32);
    std::memcpy(mem.bytes.data(), data + 2, image);
    Disk disk;
    Drop drop;
    VirtioBlk blk(mem, disk.bytes.size());
    VirtioNet net(mem, {2, 0, 0, 0, 0, 1});
    blk.set_port(&disk);
    net.set_transmit(&drop);

    if (init) {
        // blk queue 0 at 0x0/0x400/0x800; net rx at 0x1000..., tx at 0x1800...
        const std::uint32_t queues[3][4] = {{0, 0x0, 0x400, 0x800}, {0, 0x1000, 0x1400, 0x1600}, {1, 0x1800, 0x1c00, 0x1e00}};
        for (int i = 0; i < 3; ++i) {
            VirtioMmio& dev = i == 0 ? static_cast<VirtioMmio&>(blk) : static_cast<VirtioMmio&>(net);
            const std::uint64_t b = dev.base();
            if (i < 2) {
                dev.write(b + 0x70, 4, 3);
                dev.write(b + 0x24, 4, 1);
                dev.write(b + 0x20, 4, 1);
                dev.write(b + 0x70, 4, 11);
            }
            dev.write(b + 0x30, 4, queues[i][0]);
            dev.write(b + 0x38, 4, 16);
            dev.write(b + 0x80, 4, queues[i][1]);
            dev.write(b + 0x90, 4, queues[i][2]);
            dev.write(b + 0xa0, 4, queues[i][3]);
            dev.write(b + 0x44, 4, 1);
        }
        blk.write(blk.base() + 0x70, 4, 15);
        net.write(net.base() + 0x70, 4, 15);
    }

    // Each step: device (1 bit), register offset (one byte, times 4), value (u32); or, with
    // the top bit set, a frame delivery of the value's length.
    for (std::size_t at = 2 + image; at + 6 <= size; at += 6) {
        const std::uint8_t op = data[at];
        std::uint32_t value = 0;
        std::memcpy(&value, data + at + 2, 4);
        VirtioMmio& dev = (op & 1) ? static_cast<VirtioMmio&>(net) : static_cast<VirtioMmio&>(blk);
        if (op & 0x80) {
            std::vector<std::uint8_t> frame(value % 1600, 0x42);
            (void)net.receive(frame);
            continue;
        }
        const std::uint64_t address = dev.base() + 4u * data[at + 1];
        if (op & 2)
            (void)dev.read(address, (op & 4) ? 4 : 1);
        else
            dev.write(address, 4, value);
    }

    for (const VirtioMmio* d : {static_cast<const VirtioMmio*>(&blk), static_cast<const VirtioMmio*>(&net)}) {
        const auto saved = state_of(*d);
        VirtioBlk blk2(mem, disk.bytes.size());
        VirtioNet net2(mem, {2, 0, 0, 0, 0, 1});
        VirtioMmio& copy = d == &blk ? static_cast<VirtioMmio&>(blk2) : static_cast<VirtioMmio&>(net2);
        StateReader r(saved);
        if (!copy.load(r) || !r.at_end() || state_of(copy) != saved)
            __builtin_trap();
    }
    return 0;
}
