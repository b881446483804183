// Device models shared by every backend: they know nothing of KVM or Xen, only register
// accesses. Reads are deterministic unless read_is_deterministic() says otherwise; those
// values (time, mostly) are what the recorder logs and the replayer supplies. A read never
// changes a device's state: on Xen a replaying backup's reads are answered from the log and
// never reach its device models, so a read's side effect would exist on the primary only.
//   Uart16550   port 0x3f8-0x3ff   console output (a 16450; IRQ 4 on the plain PC)
//   AcpiPowerControl  port 0x1f44-0x1f45  the plain PC's PM1a control block (ACPI poweroff)
//   LapicTimer  MMIO 0xfee00000    the local APIC's timer (periodic / one-shot), 100 MHz bus
//   ClockReg    MMIO 0xfeb00000    nanoseconds since the VM started (64-bit)
// The virtio-mmio network and block devices are in virtio_net.hpp and virtio_blk.hpp.
// Each device can write its state (save/load) for checkpoints and the state digest, and a
// device that interrupts says so through pending_interrupt(): the engine injects the vector at
// a synchronous exit and logs it (no device injects anything by itself).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"
#include "xenft/devices/device_state.hpp"

namespace xenft::devices {

// Where time comes from on the replica that records (the backup never asks).
using TimeSource = std::function<std::uint64_t()>; // nanoseconds, monotonic

// The guest's time: the host's monotonic clock plus an offset. A backup that goes live moves it
// forward to the last time the guest saw on the primary, so guest time never runs backwards
// across a failover.
class GuestClock {
public:
    explicit GuestClock(TimeSource host) : host_(std::move(host)) {}
    std::uint64_t now() const { return host_() + offset_; }
    void advance_to(std::uint64_t t)
    {
        const std::uint64_t n = now();
        if (n < t)
            offset_ += t - n;
    }

private:
    TimeSource host_;
    std::uint64_t offset_ = 0;
};

class Device {
public:
    virtual ~Device() = default;
    virtual bool claims(bool pio, std::uint64_t address) const = 0;
    virtual std::uint64_t read(std::uint64_t address, std::uint8_t size) = 0;
    virtual void write(std::uint64_t address, std::uint8_t size, std::uint64_t value) = 0;
    virtual bool read_is_deterministic(std::uint64_t address) const = 0;

    // For messages: "uart", "virtio-net", ...
    virtual const char* name() const = 0;
    // The guest-visible state, in a canonical encoding (checkpoints, digests). load() accepts
    // what save() of the same device type wrote and returns false for anything else.
    virtual void save(StateWriter& out) const = 0;
    virtual bool load(StateReader& in) = 0;

    // A vector the device wants delivered (message-signalled, like MSI: one delivery per
    // event), and the engine's word that it was injected.
    virtual std::optional<std::uint8_t> pending_interrupt() const { return std::nullopt; }
    virtual void interrupt_delivered() {}
    // A backup going live: the device asserts again an interrupt its driver has not
    // acknowledged, whose injection the primary may not have logged before it died (a backup
    // learns of its devices' interrupts only from the log). True if one is pending now. One
    // the guest did take runs its handler once more, which finds nothing to do.
    virtual bool reassert_unacknowledged_interrupt() { return false; }
    // Set when the device is wired to this ISA interrupt line of the PC's 8259 pair and
    // IO-APIC instead: a pending interrupt is then an edge on the line, and the controller
    // the guest programmed picks the vector (a stock kernel's virtio-mmio devices, which the
    // ACPI tables declare with a line). Only the Xen backend wires lines.
    virtual std::optional<std::uint8_t> isa_line() const { return std::nullopt; }
};

// Where a UART's output goes besides the 64 KiB it keeps in memory: xenftd's console log
// (host_io.hpp). Host-side: what it does with the bytes is not guest state.
class ConsoleSink {
public:
    virtual ~ConsoleSink() = default;
    virtual void put(char c) = 0;
};

// A 16450 (a 16550 without FIFOs) as Linux's 8250 driver probes and drives it: scratch and
// interrupt-enable registers, the divisor latch, loopback in the modem status, and the
// transmitter-empty interrupt. The transmitter is instant: a byte written leaves at once, so
// the line status always says empty and the interrupt, once enabled, is pending until the
// driver disables it (reading IIR does not acknowledge it, as no read may change state; the
// 8250 driver sends until its buffer is empty and then disables it, so it cannot tell). Each
// byte written re-asserts it, as THRE's fall and rise do on a real UART: an edge per byte.
// Nothing arrives (no receive data, no line or modem status changes), since the console has
// no input. Unwired (the KVM backend's test guest, a plain PC without ACPI), the UART never
// interrupts and its IIR says so, which the driver notices and drives it by polling.
class Uart16550 final : public Device {
public:
    static constexpr std::uint64_t kBase = 0x3f8;
    static constexpr std::uint8_t kIsaLine = 4; // COM1's IRQ on a PC
    bool claims(bool pio, std::uint64_t a) const override { return pio && a >= kBase && a < kBase + 8; }
    std::uint64_t read(std::uint64_t address, std::uint8_t size) override;
    void write(std::uint64_t address, std::uint8_t size, std::uint64_t value) override;
    bool read_is_deterministic(std::uint64_t) const override { return true; }
    const char* name() const override { return "uart"; }
    void save(StateWriter& out) const override;
    bool load(StateReader& in) override;
    // The line rose (the transmitter-empty interrupt became pending with OUT2 set): one edge.
    std::optional<std::uint8_t> pending_interrupt() const override
    {
        return edge_ && isa_line_ ? std::optional<std::uint8_t>(0x20 + *isa_line_) : std::nullopt;
    }
    void interrupt_delivered() override { edge_ = false; }
    // A driver that enabled the interrupt waits for it.
    bool reassert_unacknowledged_interrupt() override
    {
        edge_ = edge_ || line_raised();
        return edge_ && isa_line_;
    }
    std::optional<std::uint8_t> isa_line() const override { return isa_line_; }
    // How the platform is wired, not guest state (both replicas are made alike).
    void wire_to_isa_line(std::uint8_t irq) noexcept { isa_line_ = irq; }

    // Everything the guest printed (the last 64 KiB). Host-side only: not guest state.
    const std::string& output() const noexcept { return out_; }
    // Each byte the guest prints also goes there (nullptr: nowhere); the sink outlives the UART.
    void set_sink(ConsoleSink* sink) noexcept { sink_ = sink; }

private:
    bool divisor_latch() const noexcept { return lcr_ & 0x80; }
    // What IIR reports: the transmitter-empty interrupt, enabled (the holding register is always empty).
    bool interrupt_pending() const noexcept { return isa_line_ && (ier_ & kIerTransmitEmpty); }
    // What reaches the interrupt controller: on a PC, MCR's OUT2 gates the UART's interrupt.
    bool line_raised() const noexcept { return interrupt_pending() && (mcr_ & kMcrOut2); }
    static constexpr std::uint8_t kIerTransmitEmpty = 0x02, kMcrOut2 = 0x08;

    std::uint8_t lcr_ = 0, ier_ = 0, mcr_ = 0, scratch_ = 0;
    std::uint16_t divisor_ = 12; // 9600 baud, as after reset on a PC
    bool edge_ = false;
    std::optional<std::uint8_t> isa_line_;
    std::string out_;
    ConsoleSink* sink_ = nullptr;
};

// The PM1a control register of the plain PC (engine/acpi_tables.hpp: Xen emulates the PM1a
// event block and the PM timer beside it, not this one). SCI_EN reads as set: the platform is
// always in ACPI mode. SLP_EN written with \_S5's sleep type is the guest asking to be powered
// off, which the device only remembers: the replica that records or runs live carries it out,
// a backup replaying the same write does not (its primary's end of the VM reaches it through
// the log), and one that goes live does if its primary died before.
class AcpiPowerControl final : public Device {
public:
    static constexpr std::uint64_t kBase = 0x1f44;
    static constexpr std::uint16_t kSciEnable = 1u << 0, kSleepEnable = 1u << 13;
    static constexpr std::uint8_t kSoftOffSleepType = 7; // engine::kS5SleepType
    bool claims(bool pio, std::uint64_t a) const override { return pio && a >= kBase && a < kBase + 2; }
    std::uint64_t read(std::uint64_t address, std::uint8_t size) override;
    void write(std::uint64_t address, std::uint8_t size, std::uint64_t value) override;
    bool read_is_deterministic(std::uint64_t) const override { return true; }
    const char* name() const override { return "acpi-pm1a-control"; }
    void save(StateWriter& out) const override;
    bool load(StateReader& in) override;

    bool poweroff_requested() const noexcept { return poweroff_requested_; }

private:
    std::uint16_t control_ = 0; // as written, without SLP_EN (write-only)
    bool poweroff_requested_ = false;
};

class LapicTimer final : public Device {
public:
    static constexpr std::uint64_t kBase = 0xfee00000;
    explicit LapicTimer(TimeSource now) : now_(std::move(now)) {}
    bool claims(bool pio, std::uint64_t a) const override { return !pio && a >= kBase && a < kBase + 0x1000; }
    std::uint64_t read(std::uint64_t address, std::uint8_t size) override;
    void write(std::uint64_t address, std::uint8_t size, std::uint64_t value) override;
    bool read_is_deterministic(std::uint64_t a) const override { return a - kBase != kCurrentCount; }

    // On the recording replica: when the next tick is due (nothing if the timer is off).
    std::optional<std::uint64_t> next_tick_ns() const;
    // Consumes the due tick and schedules the next one (periodic mode).
    void take_tick();
    // A replica that goes live (or starts recording from a checkpoint) schedules the next tick
    // one period from now: when ticks fell on the primary is not guest state.
    void rearm();
    std::uint8_t vector() const noexcept { return static_cast<std::uint8_t>(lvt_ & 0xff); }

    const char* name() const override { return "lapic-timer"; }
    void save(StateWriter& out) const override;
    bool load(StateReader& in) override;

private:
    static constexpr std::uint64_t kCurrentCount = 0x390;
    std::uint64_t period_ns() const;
    TimeSource now_;
    std::uint32_t svr_ = 0, lvt_ = 0x10000 /* masked */, initial_ = 0, divide_ = 0;
    std::optional<std::uint64_t> next_;
};

class ClockReg final : public Device {
public:
    static constexpr std::uint64_t kBase = 0xfeb00000;
    explicit ClockReg(TimeSource now) : now_(std::move(now)) {}
    bool claims(bool pio, std::uint64_t a) const override { return !pio && a >= kBase && a < kBase + 8; }
    std::uint64_t read(std::uint64_t, std::uint8_t) override { return now_(); }
    void write(std::uint64_t, std::uint8_t, std::uint64_t) override {}
    bool read_is_deterministic(std::uint64_t) const override { return false; }
    const char* name() const override { return "clock"; }
    void save(StateWriter&) const override {}
    bool load(StateReader&) override { return true; }

private:
    TimeSource now_;
};

// Routes an access to the device that claims it. Nobody's reads return all ones, as on real
// hardware and Xen's null handler; nobody's writes are dropped.
class DeviceBus {
public:
    void attach(Device& d) { devices_.push_back(&d); }
    Device* find(bool pio, std::uint64_t address) const;
    const std::vector<Device*>& devices() const noexcept { return devices_; }
    // Every device's state in attach order (checkpoints, live copies, digests), and loading
    // it back; the error names the device whose state does not fit.
    std::vector<std::uint8_t> save_state() const;
    Expected<bool, std::string> load_state(std::span<const std::uint8_t> blob);

private:
    std::vector<Device*> devices_;
};

} // namespace xenft::devices
