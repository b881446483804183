// Device models shared by every backend: they know nothing of KVM or Xen, only register
// accesses. Reads are deterministic unless read_is_deterministic() says otherwise; those
// values (time, mostly) are what the recorder logs and the replayer supplies.
//   Uart16550   port 0x3f8-0x3ff   console output
//   LapicTimer  MMIO 0xfee00000    the local APIC's timer (periodic / one-shot), 100 MHz bus
//   ClockReg    MMIO 0xfeb00000    nanoseconds since the VM started (64-bit)
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace xenft::devices {

// Where time comes from on the replica that records (the backup never asks).
using TimeSource = std::function<std::uint64_t()>; // nanoseconds, monotonic

class Device {
public:
    virtual ~Device() = default;
    virtual bool claims(bool pio, std::uint64_t address) const = 0;
    virtual std::uint64_t read(std::uint64_t address, std::uint8_t size) = 0;
    virtual void write(std::uint64_t address, std::uint8_t size, std::uint64_t value) = 0;
    virtual bool read_is_deterministic(std::uint64_t address) const = 0;
};

class Uart16550 final : public Device {
public:
    static constexpr std::uint64_t kBase = 0x3f8;
    bool claims(bool pio, std::uint64_t a) const override { return pio && a >= kBase && a < kBase + 8; }
    std::uint64_t read(std::uint64_t address, std::uint8_t size) override;
    void write(std::uint64_t address, std::uint8_t size, std::uint64_t value) override;
    bool read_is_deterministic(std::uint64_t) const override { return true; }
    // Everything the guest printed (the last 64 KiB).
    const std::string& output() const noexcept { return out_; }
    // Register state, for checkpoints.
    std::uint8_t line_control() const noexcept { return lcr_; }
    void set_line_control(std::uint8_t lcr) noexcept { lcr_ = lcr; }

private:
    std::uint8_t lcr_ = 0;
    std::string out_;
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
    std::uint8_t vector() const noexcept { return static_cast<std::uint8_t>(lvt_ & 0xff); }

    // Register state, for checkpoints (when the next tick falls is the recorder's business).
    struct Registers {
        std::uint32_t svr, lvt, initial, divide;
    };
    Registers registers() const noexcept { return {svr_, lvt_, initial_, divide_}; }
    void set_registers(const Registers& r) noexcept { svr_ = r.svr, lvt_ = r.lvt, initial_ = r.initial, divide_ = r.divide; }

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

private:
    TimeSource now_;
};

// Routes an access to the device that claims it. Nobody's reads return all ones, as on real
// hardware and Xen's null handler; nobody's writes are dropped.
class DeviceBus {
public:
    void attach(Device& d) { devices_.push_back(&d); }
    Device* find(bool pio, std::uint64_t address) const;

private:
    std::vector<Device*> devices_;
};

} // namespace xenft::devices
