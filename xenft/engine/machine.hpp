// A protected VM as the engine sees it: a backend (KVM or Xen) plus the device models that
// serve it, on fixed addresses the test guest (and any guest using them) knows:
//   UART 0x3f8, LAPIC timer 0xfee00000, clock 0xfeb00000,
//   virtio-net 0xfeb01000 (vector 0x50), virtio-blk 0xfeb02000 (vector 0x51).
// The machine's state is the backend's (memory, vCPU) plus every device's; its digest and its
// checkpoints cover both, so a backup whose NIC queue index differs is caught like one whose
// memory differs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "xenft/devices/devices.hpp"
#include "xenft/devices/virtio_blk.hpp"
#include "xenft/devices/virtio_net.hpp"
#include "xenft/engine/backend.hpp"

namespace xenft::engine {

struct MachineSpec {
    bool network = false;
    devices::MacAddress mac{0x52, 0x54, 0x00, 0x58, 0x46, 0x01}; // locally administered
    std::uint64_t disk_bytes = 0; // 0: no block device
};

class Machine {
public:
    // host_time: the host's monotonic clock in nanoseconds.
    Machine(std::unique_ptr<Backend> backend, devices::TimeSource host_time, const MachineSpec& spec);

    Backend& backend() noexcept { return *backend_; }
    devices::DeviceBus& bus() noexcept { return bus_; }
    devices::Uart16550& uart() noexcept { return uart_; }
    devices::LapicTimer& timer() noexcept { return timer_; }
    devices::VirtioNet* net() noexcept { return net_.get(); }
    devices::VirtioBlk* blk() noexcept { return blk_.get(); }
    // Where the NIC's transmitted frames and the disk's requests go (the recorder's or the
    // replayer's ports); null disconnects.
    void connect_io(devices::NetTransmit* net, devices::BlockPort* disk)
    {
        if (net_)
            net_->set_transmit(net);
        if (blk_)
            blk_->set_port(disk);
    }
    // Guest time (what the clock register and the timer count in).
    std::uint64_t now() const { return clock_.now(); }
    // A replayed clock value: guest time on this replica is at least this from now on.
    void observe_time(const devices::Device* source, std::uint64_t ns)
    {
        if (source == &clock_reg_)
            clock_.advance_to(ns);
    }

    // SHA-256 over the backend's digest and every device's state.
    logformat::Sha256 digest();
    // Device state alone, and the whole machine (backend checkpoint + devices).
    std::vector<std::uint8_t> save_devices() const;
    Expected<bool, std::string> load_devices(std::span<const std::uint8_t> blob);
    std::vector<std::uint8_t> save_state();
    Expected<bool, std::string> restore_state(std::span<const std::uint8_t> blob);

    // The first device with an interrupt to deliver, if any.
    devices::Device* interrupting_device() const;
    // The device that owns a vector (to mark a logged injection as delivered).
    devices::Device* device_with_vector(std::uint8_t vector) const;

private:
    std::unique_ptr<Backend> backend_;
    devices::GuestClock clock_;
    devices::Uart16550 uart_;
    devices::LapicTimer timer_;
    devices::ClockReg clock_reg_;
    std::unique_ptr<devices::VirtioNet> net_;
    std::unique_ptr<devices::VirtioBlk> blk_;
    devices::DeviceBus bus_;
};

} // namespace xenft::engine
