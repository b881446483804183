// What a live copy of a protected Xen domain carries besides its memory pages: the final
// record's `cpu` bytes (channel/copy.hpp). The primary takes them with its vCPU held at an
// ioreq; the backup loads them into the domain `xl create` made from the same configuration.
//
//   hvm_context  Xen's HVM save records of the domain (vCPU registers, vLAPIC and its timer,
//                MTRRs, PAT, XSAVE), opaque here: Xen checks them when the backup loads them
//   tsc_*        the domain's TSC parameters (xc_domain_get_tsc_info), as libxl's stream has them
//   clock_ns     the reading of xenft's clock register, which the backup's continues from
//   disk_bytes   the size of the disk image (0: none); blocks the primary wrote follow the
//                memory pages in the copy's page numbers, so both images must start equal
//
// Kept free of Xen's headers so that the decoder of these peer-sent bytes is fuzzed in the
// main build (fuzz/device_state_fuzz.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"

namespace xenft::backends::xen {

struct XenVcpuCopy {
    std::vector<std::uint8_t> hvm_context;
    std::uint32_t tsc_mode = 0;
    std::uint64_t tsc_elapsed_ns = 0;
    std::uint32_t tsc_khz = 0;
    std::uint32_t tsc_incarnation = 0;
    std::uint64_t clock_ns = 0;
    std::uint64_t disk_bytes = 0;
    bool operator==(const XenVcpuCopy&) const = default;
};

std::vector<std::uint8_t> encode_xen_vcpu_copy(const XenVcpuCopy& c);
// Checks the version, every bound and that nothing trails; the error says what is wrong.
Expected<XenVcpuCopy, std::string> decode_xen_vcpu_copy(std::span<const std::uint8_t> bytes);

} // namespace xenft::backends::xen
