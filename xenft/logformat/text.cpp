#include "xenft/logformat/text.hpp"

#include <cstdio>

namespace xenft::logformat {

std::string hex(std::uint64_t v)
{
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

namespace {

std::string hex_prefix(const std::uint8_t* p, std::size_t n, std::size_t max)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string s;
    for (std::size_t i = 0; i < n && i < max; ++i) {
        s += digits[p[i] >> 4];
        s += digits[p[i] & 15];
    }
    if (n > max)
        s += "...";
    return s;
}

std::string_view time_source_name(TimeSource s)
{
    switch (s) {
    case TimeSource::rdtsc: return "rdtsc";
    case TimeSource::rdtscp: return "rdtscp";
    case TimeSource::tsc_msr: return "tsc_msr";
    }
    return "?";
}

std::string_view irq_source_name(IrqSource s)
{
    switch (s) {
    case IrqSource::lapic_timer: return "lapic_timer";
    case IrqSource::ioapic: return "ioapic";
    case IrqSource::pic: return "pic";
    case IrqSource::msi: return "msi";
    case IrqSource::nmi: return "nmi";
    case IrqSource::event_channel: return "event_channel";
    case IrqSource::ipi: return "ipi";
    }
    return "?";
}

std::string_view vm_end_reason_name(VmEnd::Reason r)
{
    switch (r) {
    case VmEnd::Reason::shut_down: return "shut_down";
    case VmEnd::Reason::crashed: return "crashed";
    case VmEnd::Reason::destroyed: return "destroyed";
    }
    return "?";
}

std::string_view go_live_reason_name(GoLive::Reason r)
{
    switch (r) {
    case GoLive::Reason::failover: return "failover";
    case GoLive::Reason::operator_request: return "operator";
    case GoLive::Reason::continue_alone: return "continue_alone";
    }
    return "?";
}

} // namespace

std::string to_text(const Entry& e)
{
    std::string s = "seq " + std::to_string(e.seq) + " epoch " + std::to_string(e.epoch) + " vcpu " +
                    std::to_string(e.vcpu) + " exit " + std::to_string(e.exit) + " ";
    s += kind_name(kind_of(e.payload));
    std::visit(
        [&](const auto& p) {
            using P = std::decay_t<decltype(p)>;
            if constexpr (std::is_same_v<P, IoRead>) {
                s += p.space == IoSpace::mmio ? " mmio " : " port ";
                s += hex(p.address) + "/" + std::to_string(p.size) + " = " + hex(p.value);
            } else if constexpr (std::is_same_v<P, TimeRead>) {
                s += " ";
                s += time_source_name(p.source);
                s += " = " + std::to_string(p.value);
                if (p.source == TimeSource::rdtscp)
                    s += " aux " + std::to_string(p.aux);
            } else if constexpr (std::is_same_v<P, Interrupt>) {
                s += " vector " + hex(p.vector) + " from ";
                s += irq_source_name(p.source);
            } else if constexpr (std::is_same_v<P, DmaWrite>) {
                s += " gpa " + hex(p.gpa) + " len " + std::to_string(p.data.size()) + " " +
                     hex_prefix(p.data.data(), p.data.size(), 16);
            } else if constexpr (std::is_same_v<P, NetRx>) {
                s += " dev " + std::to_string(p.device) + " len " + std::to_string(p.frame.size()) + " " +
                     hex_prefix(p.frame.data(), p.frame.size(), 16);
            } else if constexpr (std::is_same_v<P, DiskRead>) {
                s += " dev " + std::to_string(p.device) + " req " + std::to_string(p.request);
                if (p.mode == DiskRead::Mode::data)
                    s += " data len " + std::to_string(p.data.size());
                else
                    s += " checksum len " + std::to_string(p.length) + " sha256 " +
                         hex_prefix(p.checksum.data(), p.checksum.size(), 32);
            } else if constexpr (std::is_same_v<P, Output>) {
                s += p.kind == OutputKind::net_tx ? " net_tx" : " disk_write";
                s += " dev " + std::to_string(p.device) + " id " + std::to_string(p.id);
            } else if constexpr (std::is_same_v<P, StateDigest>) {
                s += " sha256 " + hex_prefix(p.digest.data(), p.digest.size(), 32);
            } else if constexpr (std::is_same_v<P, ProtectionStart>) {
                s += " vcpus " + std::to_string(p.vcpus);
            } else if constexpr (std::is_same_v<P, EpochChange>) {
                s += " to " + std::to_string(p.new_epoch);
            } else if constexpr (std::is_same_v<P, GoLive>) {
                s += " reason ";
                s += go_live_reason_name(p.reason);
            } else if constexpr (std::is_same_v<P, XenRecord>) {
                s += " type " + std::to_string(p.type) + " info " + hex(p.info) + " values " + hex(p.value[0]) + " " +
                     hex(p.value[1]);
            } else if constexpr (std::is_same_v<P, IoreqStop>) {
                s += p.read ? " read " : " write ";
                s += p.space == IoSpace::mmio ? "mmio " : "port ";
                s += hex(p.address);
            } else if constexpr (std::is_same_v<P, VmEnd>) {
                s += " reason ";
                s += vm_end_reason_name(p.reason);
            } else if constexpr (std::is_same_v<P, WritesDone>) {
                s += " count " + std::to_string(p.count);
            }
        },
        e.payload);
    return s;
}

} // namespace xenft::logformat
