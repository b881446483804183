#include "xenft/devices/devices.hpp"

namespace xenft::devices {

namespace {
constexpr std::size_t kMaxUartOutput = 64 * 1024;
constexpr std::uint64_t kBusClockNs = 10; // 100 MHz, like Xen's vLAPIC
} // namespace

// Register offsets and bits (the 16550's data sheet; Linux's serial_reg.h has the same names).
namespace uart {
constexpr unsigned kData = 0, kInterruptEnable = 1, kInterruptId = 2, kLineControl = 3, kModemControl = 4,
                   kLineStatus = 5, kModemStatus = 6, kScratch = 7;
constexpr std::uint8_t kIirNoInterrupt = 0x01, kIirTransmitEmpty = 0x02;
constexpr std::uint8_t kLsrTransmitEmpty = 0x60; // THRE and TEMT: the transmitter is instant
constexpr std::uint8_t kMcrLoopback = 0x10;
constexpr std::uint8_t kMsrConnected = 0xb0; // DCD, DSR, CTS: a terminal is always there
} // namespace uart

std::uint64_t Uart16550::read(std::uint64_t address, std::uint8_t) // no side effects (devices.hpp)
{
    switch (address - kBase) {
    case uart::kData: return divisor_latch() ? divisor_ & 0xffu : 0u; // nothing ever received
    case uart::kInterruptEnable: return divisor_latch() ? static_cast<unsigned>(divisor_) >> 8 : unsigned{ier_};
    case uart::kInterruptId: // FIFO bits clear: no FIFO, the driver takes a 16450
        return interrupt_pending() ? uart::kIirTransmitEmpty : uart::kIirNoInterrupt;
    case uart::kLineControl: return lcr_;
    case uart::kModemControl: return mcr_;
    case uart::kLineStatus: return uart::kLsrTransmitEmpty;
    case uart::kModemStatus:
        if (mcr_ & uart::kMcrLoopback) { // RTS to CTS, DTR to DSR, OUT1 to RI, OUT2 to DCD
            const unsigned m = mcr_;
            return ((m & 0x02u) << 3) | ((m & 0x01u) << 5) | ((m & 0x04u) << 4) | ((m & 0x08u) << 4);
        }
        return uart::kMsrConnected;
    case uart::kScratch: return scratch_;
    default: return 0;
    }
}

void Uart16550::write(std::uint64_t address, std::uint8_t, std::uint64_t value)
{
    const bool was_raised = line_raised();
    const auto byte = static_cast<std::uint8_t>(value);
    switch (address - kBase) {
    case uart::kData:
        if (divisor_latch()) {
            divisor_ = static_cast<std::uint16_t>((divisor_ & 0xff00) | byte);
            break;
        }
        if (!(mcr_ & uart::kMcrLoopback)) { // in loopback the byte goes to the receiver, which drops it
            out_ += static_cast<char>(byte);
            if (sink_)
                sink_->put(static_cast<char>(byte));
            if (out_.size() > kMaxUartOutput)
                out_.erase(0, out_.size() - kMaxUartOutput / 2);
        }
        // Sent at once: the holding register empties again, a new edge if the line is up.
        edge_ = edge_ || line_raised();
        break;
    case uart::kInterruptEnable:
        if (divisor_latch()) {
            divisor_ = static_cast<std::uint16_t>((divisor_ & 0x00ff) | (byte << 8));
            break;
        }
        // Enabling the transmitter-empty interrupt raises it: the register is empty (the
        // driver's THRE test checks that it does, twice).
        ier_ = byte & 0x0f;
        break;
    case uart::kInterruptId: break; // FIFO control (and EFR): there is no FIFO
    case uart::kLineControl: lcr_ = byte; break;
    case uart::kModemControl: mcr_ = byte & 0x1f; break;
    case uart::kScratch: scratch_ = byte; break;
    default: break; // line and modem status are read-only
    }
    if (!was_raised && line_raised())
        edge_ = true;
}

void Uart16550::save(StateWriter& out) const
{
    for (std::uint64_t v : {std::uint64_t{lcr_}, std::uint64_t{ier_}, std::uint64_t{mcr_}, std::uint64_t{scratch_},
                            std::uint64_t{divisor_}, std::uint64_t{edge_}})
        out.put(v);
}

bool Uart16550::load(StateReader& in)
{
    lcr_ = static_cast<std::uint8_t>(in.get(0xff));
    ier_ = static_cast<std::uint8_t>(in.get(0x0f));
    mcr_ = static_cast<std::uint8_t>(in.get(0x1f));
    scratch_ = static_cast<std::uint8_t>(in.get(0xff));
    divisor_ = static_cast<std::uint16_t>(in.get(0xffff));
    edge_ = in.get(1);
    return in.ok();
}

std::uint64_t AcpiPowerControl::read(std::uint64_t address, std::uint8_t size)
{
    const std::uint16_t value = control_ | kSciEnable;
    if (address == kBase + 1)
        return value >> 8;
    return size == 1 ? value & 0xffu : value;
}

void AcpiPowerControl::write(std::uint64_t address, std::uint8_t size, std::uint64_t value)
{
    // A byte at a time or the whole register (ACPICA writes 16 bits, as the FADT says).
    std::uint16_t v = control_;
    if (address == kBase + 1)
        v = static_cast<std::uint16_t>((v & 0x00ffu) | ((value & 0xffu) << 8));
    else if (size == 1)
        v = static_cast<std::uint16_t>((v & 0xff00u) | (value & 0xffu));
    else
        v = static_cast<std::uint16_t>(value);
    const unsigned sleep_type = (v >> 10) & 7u;
    if ((v & kSleepEnable) && sleep_type == kSoftOffSleepType)
        poweroff_requested_ = true;
    control_ = static_cast<std::uint16_t>(v & ~kSleepEnable);
}

void AcpiPowerControl::save(StateWriter& out) const
{
    out.put(control_);
    out.put(poweroff_requested_ ? 1u : 0u);
}

bool AcpiPowerControl::load(StateReader& in)
{
    control_ = static_cast<std::uint16_t>(in.get(0xffff));
    poweroff_requested_ = in.get(1) != 0;
    return in.ok();
}

void LapicTimer::save(StateWriter& out) const
{
    for (std::uint32_t r : {svr_, lvt_, initial_, divide_})
        out.put(r);
}

bool LapicTimer::load(StateReader& in)
{
    for (std::uint32_t* r : {&svr_, &lvt_, &initial_, &divide_})
        *r = static_cast<std::uint32_t>(in.get(0xffffffff));
    next_.reset();
    return in.ok();
}

void LapicTimer::rearm()
{
    next_.reset();
    if (initial_ != 0)
        next_ = now_() + period_ns();
}

std::uint64_t LapicTimer::period_ns() const
{
    // Divide configuration bits 3,1,0: 0b000 -> 2, 0b001 -> 4, ... 0b111 -> 1.
    const std::uint32_t code = ((divide_ >> 1) & 4) | (divide_ & 3);
    const std::uint64_t divisor = code == 7 ? 1 : std::uint64_t{2} << code;
    return std::uint64_t{initial_} * divisor * kBusClockNs;
}

std::uint64_t LapicTimer::read(std::uint64_t address, std::uint8_t)
{
    switch (address - kBase) {
    case 0x20: return 0;          // APIC ID
    case 0x30: return 0x00050014; // version
    case 0xf0: return svr_;
    case 0x320: return lvt_;
    case 0x380: return initial_;
    case 0x3e0: return divide_;
    case kCurrentCount: {
        if (!next_ || period_ns() == 0)
            return 0;
        const std::uint64_t now = now_();
        const std::uint64_t left = *next_ > now ? *next_ - now : 0;
        const std::uint32_t code = ((divide_ >> 1) & 4) | (divide_ & 3);
        const std::uint64_t divisor = code == 7 ? 1 : std::uint64_t{2} << code;
        return left / (kBusClockNs * divisor);
    }
    default: return 0;
    }
}

void LapicTimer::write(std::uint64_t address, std::uint8_t, std::uint64_t value)
{
    const auto v = static_cast<std::uint32_t>(value);
    switch (address - kBase) {
    case 0xf0: svr_ = v; break;
    case 0x320: lvt_ = v; break;
    case 0x3e0: divide_ = v; break;
    case 0x380:
        initial_ = v;
        next_.reset();
        if (v != 0)
            next_ = now_() + period_ns();
        break;
    default: break; // EOI and the rest: nothing to model for the timer
    }
}

std::optional<std::uint64_t> LapicTimer::next_tick_ns() const
{
    const bool enabled = (svr_ & 0x100) && !(lvt_ & 0x10000);
    return enabled ? next_ : std::nullopt;
}

void LapicTimer::take_tick()
{
    if (!next_)
        return;
    const bool periodic = (lvt_ >> 17) & 1;
    if (!periodic || period_ns() == 0) {
        next_.reset();
        return;
    }
    *next_ += period_ns();
    const std::uint64_t now = now_();
    if (*next_ <= now) // ticks missed while the guest could not take them are dropped
        *next_ = now + period_ns();
}

std::vector<std::uint8_t> DeviceBus::save_state() const
{
    std::vector<std::uint8_t> out;
    StateWriter w(out);
    for (const Device* d : devices_)
        d->save(w);
    return out;
}

Expected<bool, std::string> DeviceBus::load_state(std::span<const std::uint8_t> blob)
{
    StateReader r(blob);
    for (Device* d : devices_)
        if (!d->load(r))
            return unexpected(std::string("device state: the ") + d->name() +
                              " state is damaged or from a machine with other devices");
    if (!r.at_end())
        return unexpected(std::string("device state: trailing bytes (a machine with other devices?)"));
    return true;
}

Device* DeviceBus::find(bool pio, std::uint64_t address) const
{
    for (Device* d : devices_)
        if (d->claims(pio, address))
            return d;
    return nullptr;
}

} // namespace xenft::devices
