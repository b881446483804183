// libFuzzer target for device state blobs (a checkpoint or live copy from the peer): the
// devices of a machine load them in order, as engine::Machine::load_devices does. A damaged
// blob is refused, never a crash; an accepted one saves back to a blob that loads to the same
// state (the encoding is canonical, so digests compare states). The same bytes go through the
// Xen backend's vCPU state of a live copy (backends/xen/copy_state.hpp): refused, or decoded to
// a state that encodes back to them.
#include <vector>

#include "xenft/backends/xen/copy_state.hpp"

#include "xenft/devices/devices.hpp"
#include "xenft/devices/virtio_blk.hpp"
#include "xenft/devices/virtio_net.hpp"

namespace {

using namespace xenft::devices;

class NoMemory final : public GuestMemory {
public:
    bool read_guest(std::uint64_t, std::span<std::uint8_t>) override { return false; }
    bool write_guest(std::uint64_t, std::span<const std::uint8_t>) override { return false; }
};

struct Devices {
    NoMemory mem;
    Uart16550 uart;
    AcpiPowerControl power;
    LapicTimer timer{[] { return std::uint64_t{1000}; }};
    ClockReg clock{[] { return std::uint64_t{1000}; }};
    VirtioNet net{mem, {2, 0, 0, 0, 0, 1}};
    VirtioBlk blk{mem, 1u << 20};
    std::vector<Device*> all() { return {&uart, &power, &timer, &clock, &net, &blk}; }

    bool load(std::span<const std::uint8_t> blob)
    {
        StateReader r(blob);
        for (Device* d : all())
            if (!d->load(r))
                return false;
        return r.at_end();
    }
    std::vector<std::uint8_t> save()
    {
        std::vector<std::uint8_t> out;
        StateWriter w(out);
        for (Device* d : all())
            d->save(w);
        return out;
    }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::span<const std::uint8_t> bytes(data, size);
    if (auto vcpu = xenft::backends::xen::decode_xen_vcpu_copy(bytes))
        if (xenft::backends::xen::encode_xen_vcpu_copy(*vcpu) != std::vector<std::uint8_t>(bytes.begin(), bytes.end()))
            __builtin_trap();
    Devices a;
    if (!a.load(std::span<const std::uint8_t>(data, size)))
        return 0;
    const auto saved = a.save();
    Devices b;
    if (!b.load(saved) || b.save() != saved)
        __builtin_trap();
    return 0;
}
