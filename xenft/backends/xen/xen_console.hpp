// Reading Xen's console ring (what `xl dmesg` shows) for what Xen said about one domain: the
// hypervisor's FT patches name a replay's divergence there before crashing the domain
// (hvm-patches 0006), and that line is what xenftd's own log must carry. Kept apart from
// XenControl, which fetches the ring, so the reading is tested without a Xen host.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace xenft::backends::xen {

// The last line of `ring` that names one of domain `domid`'s vCPUs ("d7v0", as Xen's gprintk
// prefixes a guest's lines) and contains `text`, from the vCPU's name on (Xen's "(XEN)" and
// time stamp dropped); empty if there is none.
inline std::string console_line_about(std::string_view ring, std::uint32_t domid, std::string_view text)
{
    const std::string vcpu = "d" + std::to_string(domid) + "v";
    std::string_view found;
    std::size_t vcpu_at = 0;
    for (std::size_t at = 0; at < ring.size();) {
        std::size_t end = ring.find('\n', at);
        if (end == std::string_view::npos)
            end = ring.size();
        const std::string_view line = ring.substr(at, end - at);
        // The vCPU's name must be a whole word: d1v0, not the end of d11v0.
        for (std::size_t v = line.find(vcpu); v != std::string_view::npos; v = line.find(vcpu, v + 1)) {
            const bool starts_word = v == 0 || line[v - 1] == ' ' || line[v - 1] == ']' || line[v - 1] == ')';
            const bool vcpu_number = v + vcpu.size() < line.size() && line[v + vcpu.size()] >= '0' &&
                                     line[v + vcpu.size()] <= '9';
            if (starts_word && vcpu_number && line.find(text, v) != std::string_view::npos) {
                found = line;
                vcpu_at = v;
                break;
            }
        }
        at = end + 1;
    }
    if (found.empty())
        return {};
    std::string_view rest = found.substr(vcpu_at);
    while (!rest.empty() && (rest.back() == '\r' || rest.back() == ' '))
        rest.remove_suffix(1);
    return std::string(rest);
}

} // namespace xenft::backends::xen
