// The device models of a domain on Xen, served from dom0 (the Xen backend's counterpart of
// what the KVM backend does at its exits): the same UART, clock register, virtio-mmio network
// and block devices as on KVM (xenft/devices), reached through an ioreq server; the LAPIC and
// its timer are Xen's own. DMA goes into guest memory mapped with libxenforeignmemory; device
// interrupts are MSIs injected through libxendevicemodel (vector 0x50 the NIC, 0x51 the disk);
// the NIC's frames go to and come from a TAP interface in dom0.
//
// run() is the unprotected device model (FT off): a frame from the TAP is handed to the NIC as
// soon as it has a buffer. Under FT (ft_domain.hpp) the same models are driven piece by piece:
// frames and interrupts only at an ioreq, i.e. while the vCPU is stopped at a synchronous exit,
// outputs through the output gate, and on the backup nothing injected and nothing sent.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "xenft/backends/xen/ioreq_server.hpp"
#include "xenft/backends/xen/xen_handles.hpp"
#include "xenft/devices/devices.hpp"
#include "xenft/devices/guest_memory.hpp"
#include "xenft/devices/host_io.hpp"
#include "xenft/devices/virtio_blk.hpp"
#include "xenft/devices/virtio_net.hpp"
#include "xenft/logformat/entry.hpp"

namespace xenft::backends::xen {

// The guest's RAM from guest-physical 0, mapped read-write once.
class XenGuestMemory final : public devices::GuestMemory {
public:
    static Expected<XenGuestMemory, std::string> map(const ForeignMemory& fm, std::uint32_t domid, std::uint64_t bytes);
    bool read_guest(std::uint64_t gpa, std::span<std::uint8_t> out) override;
    bool write_guest(std::uint64_t gpa, std::span<const std::uint8_t> data) override;
    std::size_t page_count() const noexcept { return pages_.count(); }
    // Page i (gfn i), or an empty span where the domain has no memory.
    std::span<const std::uint8_t> page(std::size_t i) const
    {
        return pages_.mapped(i) ? pages_.page(i) : std::span<const std::uint8_t>();
    }
    // Remembers the pages write_guest() wrote (the device models' DMA, which Xen's log-dirty
    // mode does not see), for a live copy's rounds and the state digests.
    void track_writes(bool on);
    // The populated pages among `dirty` (Xen's log-dirty pages) and those written since
    // tracking began or the last call, in order, once each.
    std::vector<std::uint64_t> take_written(std::vector<std::uint64_t> dirty);

private:
    explicit XenGuestMemory(GuestPages pages) : pages_(std::move(pages)) {}
    bool valid(std::uint64_t gpa, std::size_t n) const;
    GuestPages pages_;
    std::vector<bool> written_; // empty: not tracking
};

// The disk image, remembering which 4 KiB blocks were written since it was opened: a live copy
// sends those, for a backup whose image started equal to the primary's.
class TrackedDisk final : public devices::BlockPort {
public:
    static constexpr std::uint64_t kBlockBytes = 4096;
    explicit TrackedDisk(devices::FileStore store) : store_(std::move(store)) {}
    bool read(std::uint64_t offset, std::span<std::uint8_t> out) override { return store_.read(offset, out); }
    bool write(std::uint64_t offset, std::span<const std::uint8_t> data) override;
    bool flush() override { return store_.flush(); }
    std::uint64_t size_bytes() const noexcept { return store_.size_bytes(); }
    const std::set<std::uint64_t>& written() const noexcept { return written_; }
    // Block `block` (the last one may be short: only its part inside the image).
    bool read_block(std::uint64_t block, std::span<std::uint8_t, kBlockBytes> out);
    bool write_block(std::uint64_t block, std::span<const std::uint8_t, kBlockBytes> data);

private:
    std::uint64_t block_length(std::uint64_t block) const;
    devices::FileStore store_;
    std::set<std::uint64_t> written_;
};

struct DeviceModelSpec {
    std::uint64_t memory_bytes = 32u << 20;
    std::string tap;  // empty: no NIC
    std::string disk; // empty: no disk (an image file of whole sectors otherwise)
    // Or the guest's disk on the shared LUN (xenftd opens it: devices::IscsiStore), this many
    // bytes. Both replicas see the same blocks, so a live copy carries none; the primary's
    // writes leave through the output gate, the backup reads from the log and writes nothing
    // until it goes live (ft_domain.hpp).
    devices::BlockPort* shared_disk = nullptr;
    std::uint64_t shared_disk_bytes = 0;
    bool has_disk() const noexcept { return !disk.empty() || shared_disk; }
    devices::MacAddress mac{0x52, 0x54, 0x00, 0x58, 0x46, 0x02};
    // The devices interrupt on ISA lines (VirtioNet::kIsaLine, VirtioBlk::kIsaLine), as a
    // plain PC's ACPI tables declare them to a stock kernel, rather than with MSI vectors, and
    // the UART on COM1's IRQ 4 (without the line it never interrupts).
    bool isa_lines = false;
    // Where the UART's output goes besides the last 64 KiB console() keeps (xenftd's console
    // log); it outlives the device model.
    devices::ConsoleSink* console = nullptr;
};

// How a domain ended, for the log (the backup must not take over a VM that ended on purpose)
// and for people.
struct DomainEnd {
    logformat::VmEnd::Reason reason = logformat::VmEnd::Reason::destroyed;
    std::string text; // "the domain shut down (poweroff)"
};

class XenDeviceModel {
public:
    // Takes the devices' ranges from the domain (created paused) and enables the server; the
    // caller unpauses the domain.
    static Expected<std::unique_ptr<XenDeviceModel>, std::string> create(std::uint32_t domid, const DeviceModelSpec& spec);

    // Serves until `stop` or the domain shuts down; returns why it ended.
    // One round of run(): waits up to timeout_ms for an ioreq or a frame, serves what came.
    // False once the domain ended (end_state() says how).
    Expected<bool, std::string> serve_once(int timeout_ms);
    Expected<std::string, std::string> run(const std::atomic<bool>& stop);

    // The pieces run() is made of, for the FT loops.
    // Answers the ioreq waiting on vCPU 0, if any; `handler` performs the access (handle()).
    Expected<bool, std::string> serve(const std::function<void(IoAccess&)>& handler)
    {
        return server_->serve(handler);
    }
    // The access waiting to be served, if any (serve() takes it).
    std::optional<IoAccess> waiting_ioreq() const { return server_->waiting(); }
    void handle(IoAccess& a);
    // Injects the MSI of every device with an interrupt to deliver (only at an ioreq under FT).
    Expected<bool, std::string> deliver_interrupts();
    // The backup's counterpart: the hypervisor injects the logged vectors; the devices only
    // learn that their interrupt was taken, at the same point the primary injected it.
    void interrupts_taken_elsewhere();
    // Pulses the ISA line of the NIC (or, without one, the disk) without any change of device
    // state: the guest's driver reads its InterruptStatus, an ioreq, and finds nothing. For an
    // idle guest that makes no device access (a tickless Linux in HLT) while the recorder
    // needs an ioreq (frames waiting, a live copy's copy point). Xen logs the injection like
    // any other. False if no device has an ISA line.
    Expected<bool, std::string> nudge();
    // A backup going live: delivers every device interrupt the guest's drivers have not
    // acknowledged (Device::reassert_unacknowledged_interrupt()); returns how many.
    Expected<unsigned, std::string> reassert_interrupts();
    // The guest asked to be powered off (ACPI soft-off on the plain PC: AcpiPowerControl) and
    // this replica carries it out: asks Xen to shut the domain down (poweroff), once; the
    // toolstack then does what the domain's on_poweroff says, and end_state() tells the node.
    // Called after each access by the replica that records or runs live, and by a backup
    // going live (its primary may have died between the write and the shutdown); a replaying
    // backup never calls it. True if it asked now.
    Expected<bool, std::string> carry_out_poweroff();
    // Why the domain no longer runs, if it does not.
    std::optional<DomainEnd> end_state() const;
    std::optional<std::string> ended() const
    {
        auto e = end_state();
        return e ? std::optional<std::string>(std::move(e->text)) : std::nullopt;
    }
    int ioreq_fd() const { return server_->fd(); }
    std::uint32_t domid() const noexcept { return domid_; }
    XenGuestMemory& memory() { return *memory_; }
    devices::DeviceBus& bus() noexcept { return bus_; }
    devices::VirtioNet* net() noexcept { return net_.get(); }
    devices::TapDevice* tap() noexcept { return tap_ ? &*tap_ : nullptr; }
    const XenControl& control() const noexcept { return xc_; }
    const ForeignMemory& foreign_memory() const noexcept { return fm_; }
    // Where the NIC's transmitted frames go (the TAP unless redirected; null drops them).
    void set_transmit(devices::NetTransmit* tx)
    {
        if (net_)
            net_->set_transmit(tx);
    }
    // The devices' state (what a live copy carries), and its loading on the backup.
    std::vector<std::uint8_t> save_devices() const;
    Expected<bool, std::string> load_devices(std::span<const std::uint8_t> blob);
    // The clock register's reading; the backup's continues from the primary's.
    std::uint64_t clock_ns() const;
    void continue_clock_from(std::uint64_t ns);
    // The disk image file, if the disk is one (null for none and for the shared LUN).
    TrackedDisk* disk() noexcept { return disk_ ? &*disk_ : nullptr; }
    // The shared LUN's disk, if the disk is on it.
    devices::BlockPort* shared_disk() const noexcept { return shared_disk_; }
    // The guest disk's size whatever its kind (0: no disk).
    std::uint64_t disk_bytes() const noexcept { return blk_ ? blk_->capacity_bytes() : 0; }
    // Where the virtio disk's requests go (the image or the LUN unless redirected).
    void set_disk_port(devices::BlockPort* port)
    {
        if (blk_)
            blk_->set_port(port);
    }
    // Everything the guest printed on the UART (the last 64 KiB).
    const std::string& console() const noexcept { return uart_.output(); }
    std::uint64_t requests() const noexcept { return server_ ? server_->requests() : 0; }
    std::uint64_t frames_in() const noexcept { return frames_in_; }
    std::uint64_t interrupts() const noexcept { return interrupts_; }

private:
    XenDeviceModel(std::uint32_t domid, XenControl xc, ForeignMemory fm)
        : domid_(domid), xc_(std::move(xc)), fm_(std::move(fm)) {}
    Expected<bool, std::string> take_frames();

    std::uint32_t domid_;
    XenControl xc_;
    ForeignMemory fm_;
    // Why Xen crashed the domain, read once from its console ring (end_state() is polled).
    mutable std::mutex crash_mu_;
    mutable std::optional<std::string> crash_text_;
    std::optional<XenGuestMemory> memory_;
    std::optional<IoreqServer> server_;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    devices::Uart16550 uart_;
    std::unique_ptr<devices::AcpiPowerControl> power_; // the plain PC's (spec.isa_lines)
    std::atomic<bool> poweroff_asked_{false}; // end_state() reads it from the node's thread
    devices::ClockReg clock_{[this] {
        return static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count());
    }};
    std::optional<devices::TapDevice> tap_;
    std::optional<TrackedDisk> disk_;
    devices::BlockPort* shared_disk_ = nullptr;
    std::unique_ptr<devices::VirtioNet> net_;
    std::unique_ptr<devices::VirtioBlk> blk_;
    devices::DeviceBus bus_;
    std::optional<std::vector<std::uint8_t>> waiting_frame_; // from the TAP, no buffer yet
    std::uint64_t frames_in_ = 0, interrupts_ = 0;
};

} // namespace xenft::backends::xen
