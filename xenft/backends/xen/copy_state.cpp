#include "xenft/backends/xen/copy_state.hpp"

#include <limits>

#include "xenft/channel/copy.hpp"
#include "xenft/devices/device_state.hpp"

namespace xenft::backends::xen {

namespace {

// Bumped whenever a field is added: a backup never guesses at a layout it does not know.
constexpr std::uint64_t kVersion = 1;
constexpr std::uint64_t kU32 = std::numeric_limits<std::uint32_t>::max();

} // namespace

std::vector<std::uint8_t> encode_xen_vcpu_copy(const XenVcpuCopy& c)
{
    std::vector<std::uint8_t> out;
    devices::StateWriter w(out);
    w.put(kVersion);
    w.put_bytes(c.hvm_context);
    w.put(c.tsc_mode);
    w.put(c.tsc_elapsed_ns);
    w.put(c.tsc_khz);
    w.put(c.tsc_incarnation);
    w.put(c.clock_ns);
    w.put(c.disk_bytes);
    return out;
}

Expected<XenVcpuCopy, std::string> decode_xen_vcpu_copy(std::span<const std::uint8_t> bytes)
{
    devices::StateReader r(bytes);
    const std::uint64_t version = r.get();
    if (r.ok() && version != kVersion)
        return unexpected("the vCPU state has layout version " + std::to_string(version) + ", this xenftd reads " +
                          std::to_string(kVersion) + " (install the same xenft on both hosts)");
    XenVcpuCopy c;
    c.hvm_context = r.get_bytes(channel::kMaxCopyStateBytes);
    c.tsc_mode = static_cast<std::uint32_t>(r.get(kU32));
    c.tsc_elapsed_ns = r.get();
    c.tsc_khz = static_cast<std::uint32_t>(r.get(kU32));
    c.tsc_incarnation = static_cast<std::uint32_t>(r.get(kU32));
    c.clock_ns = r.get();
    c.disk_bytes = r.get();
    if (!r.ok())
        return unexpected(std::string("the vCPU state is truncated or out of bounds"));
    if (!r.at_end())
        return unexpected(std::string("the vCPU state has trailing bytes"));
    if (c.hvm_context.empty())
        return unexpected(std::string("the vCPU state has no HVM context"));
    return c;
}

} // namespace xenft::backends::xen
