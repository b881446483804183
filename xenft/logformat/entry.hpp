// The FT log's entries: every non-deterministic event the backup must replay, and the control
// records that frame protection. This is the schema; docs/log-format.md is its prose twin and
// codec.hpp its binary encoding. Version 1.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <variant>
#include <vector>

namespace xenft::logformat {

inline constexpr std::uint8_t kFormatVersion = 1;

// Limits the decoder enforces before it allocates anything. A peer cannot make us hold more
// than kMaxFrameBody bytes per frame, whatever its length fields say.
inline constexpr std::uint32_t kMaxVcpus = 128;
inline constexpr std::uint64_t kMaxEntriesPerFrame = 65536;
inline constexpr std::uint64_t kMaxFrameBody = 8u << 20;     // 8 MiB
inline constexpr std::uint64_t kMaxDmaBytes = 1u << 20;      // one DMA write
inline constexpr std::uint64_t kMaxNetFrameBytes = 65535;    // one Ethernet frame, no GSO
inline constexpr std::uint64_t kMaxDiskReadBytes = 1u << 20; // one disk read completion
inline constexpr std::uint32_t kMaxDeviceIndex = 255;

using Sha256 = std::array<std::uint8_t, 32>;

enum class IoSpace : std::uint8_t { port = 0, mmio = 1 };

// The guest read a device register (port or MMIO); the value is what it saw.
struct IoRead {
    IoSpace space = IoSpace::port;
    std::uint8_t size = 1; // 1, 2, 4 or 8 bytes
    std::uint64_t address = 0;
    std::uint64_t value = 0;
    bool operator==(const IoRead&) const = default;
};

enum class TimeSource : std::uint8_t { rdtsc = 0, rdtscp = 1, tsc_msr = 2 };

// The guest read the time stamp counter; aux is TSC_AUX for RDTSCP and zero otherwise.
struct TimeRead {
    TimeSource source = TimeSource::rdtsc;
    std::uint64_t value = 0;
    std::uint32_t aux = 0;
    bool operator==(const TimeRead&) const = default;
};

enum class IrqSource : std::uint8_t {
    lapic_timer = 0,
    ioapic = 1,
    pic = 2,
    msi = 3,
    nmi = 4,
    event_channel = 5,
    ipi = 6,
};

// An interrupt was injected on the VM entry that follows this exit.
struct Interrupt {
    std::uint8_t vector = 0;
    IrqSource source = IrqSource::lapic_timer;
    bool operator==(const Interrupt&) const = default;
};

// A device model wrote guest memory at this exit.
struct DmaWrite {
    std::uint64_t gpa = 0;
    std::vector<std::uint8_t> data; // 1..kMaxDmaBytes
    bool operator==(const DmaWrite&) const = default;
};

// A frame arrived for the guest's NIC and was delivered at this exit.
struct NetRx {
    std::uint32_t device = 0;
    std::vector<std::uint8_t> frame; // 1..kMaxNetFrameBytes
    bool operator==(const NetRx&) const = default;
};

// A disk read completed at this exit. Either the data travels in the log, or only its length
// and SHA-256 do and the backup reads the shared disk itself (VMware's option to cut log size).
struct DiskRead {
    enum class Mode : std::uint8_t { data = 0, checksum = 1 };
    std::uint32_t device = 0;
    std::uint64_t request = 0;
    Mode mode = Mode::data;
    std::vector<std::uint8_t> data; // mode == data: 1..kMaxDiskReadBytes
    std::uint64_t length = 0;       // mode == checksum: bytes read
    Sha256 checksum{};              // mode == checksum: SHA-256 of those bytes
    bool operator==(const DiskRead&) const = default;

    // A read that failed on the primary: checksum mode with an all-zero checksum
    // (log-format.md); the backup's guest gets the same I/O error.
    static DiskRead failed(std::uint32_t device, std::uint64_t request, std::uint64_t length)
    {
        DiskRead d;
        d.device = device;
        d.request = request;
        d.mode = Mode::checksum;
        d.length = length;
        return d;
    }
    bool is_failed() const noexcept
    {
        if (mode != Mode::checksum)
            return false;
        for (std::uint8_t b : checksum)
            if (b != 0)
                return false;
        return true;
    }
};

enum class OutputKind : std::uint8_t { net_tx = 0, disk_write = 1 };

// The guest produced an output at this exit; it may leave the primary once this entry is acked.
struct Output {
    OutputKind kind = OutputKind::net_tx;
    std::uint32_t device = 0;
    std::uint64_t id = 0;
    bool operator==(const Output&) const = default;
};

// Digest of the whole VM state (vCPU registers, memory, device models) at this exit.
struct StateDigest {
    Sha256 digest{};
    bool operator==(const StateDigest&) const = default;
};

// Control: logging starts here; the backup starts replay from the same state.
struct ProtectionStart {
    std::uint32_t vcpus = 1; // 1..kMaxVcpus
    bool operator==(const ProtectionStart&) const = default;
};

// Control: everything after this entry belongs to new_epoch (> the frame's epoch).
struct EpochChange {
    std::uint64_t new_epoch = 0;
    bool operator==(const EpochChange&) const = default;
};

// Control: the replica that wrote this went live at this exit.
struct GoLive {
    enum class Reason : std::uint8_t { failover = 0, operator_request = 1, continue_alone = 2 };
    Reason reason = Reason::failover;
    bool operator==(const GoLive&) const = default;
};

// Xen backend: a record of hvm-patches' FT ring (Xen's public/hvm/ft.h), carried as Xen wrote
// it: an injection, a TSC or device-read value, or progress. The backup's xenftd writes it into
// its domain's ring; the hypervisor, not the engine, interprets it. Entry::vcpu and Entry::exit
// are the record's.
struct XenRecord {
    std::uint16_t type = 0; // ft_abi::kRec* (XEN_FT_REC_*), 1..kMaxXenRecordType
    std::uint32_t info = 0;
    std::array<std::uint64_t, 2> value{};
    bool operator==(const XenRecord&) const = default;
};
inline constexpr std::uint16_t kMaxXenRecordType = 255;

// Xen backend: the primary's device models acted at this exit's ioreq, a read or a write of
// `address`; the net_rx and state_digest entries of this exit that follow happened there. The
// backup needs to know which: it gets no ioreq for a read (Xen answers reads from the log).
struct IoreqStop {
    bool read = false;
    IoSpace space = IoSpace::mmio;
    std::uint64_t address = 0; // a port (<= 0xffff) or a guest-physical address
    bool operator==(const IoreqStop&) const = default;
};

// Control: the VM ended on the writer's host at this exit, not by a failure of that host: the
// reader must not take it over (a guest that shut itself down or crashed would do the same
// again; a domain the administrator destroyed is meant to be gone).
struct VmEnd {
    enum class Reason : std::uint8_t { shut_down = 0, crashed = 1, destroyed = 2 };
    Reason reason = Reason::shut_down;
    bool operator==(const VmEnd&) const = default;
};

// Xen backend, control: the writer's output gate has performed the first `count` disk writes
// its guest made since the backup's live copy (in order; a write that failed ends the count).
// The backup's replay makes the same writes: it need not write those again when it goes live.
struct WritesDone {
    std::uint64_t count = 0;
    bool operator==(const WritesDone&) const = default;
};

// Wire kind numbers. Never renumber: add new kinds at the end and bump kFormatVersion only
// when an existing encoding changes.
enum class Kind : std::uint8_t {
    io_read = 1,
    time_read = 2,
    interrupt = 3,
    dma_write = 4,
    net_rx = 5,
    disk_read = 6,
    output = 7,
    state_digest = 8,
    protection_start = 9,
    epoch_change = 10,
    go_live = 11,
    xen_record = 12,
    ioreq_stop = 13,
    vm_end = 14,
    writes_done = 15,
};
inline constexpr std::uint8_t kMaxKind = 15;

// Alternatives in Kind order, so index() + 1 == wire kind.
using Payload = std::variant<IoRead, TimeRead, Interrupt, DmaWrite, NetRx, DiskRead, Output, StateDigest,
                             ProtectionStart, EpochChange, GoLive, XenRecord, IoreqStop, VmEnd, WritesDone>;

constexpr Kind kind_of(const Payload& p) noexcept { return static_cast<Kind>(p.index() + 1); }

std::string_view kind_name(Kind k) noexcept;

struct Entry {
    std::uint64_t epoch = 0; // shared by all entries of a frame
    std::uint64_t seq = 0;   // consecutive within a frame
    std::uint32_t vcpu = 0;
    std::uint64_t exit = 0;  // synchronous-exit number on that vCPU since protection started
    Payload payload;
    bool operator==(const Entry&) const = default;
};

} // namespace xenft::logformat
