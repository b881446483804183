// hvm-patches' fault-tolerance interface as the hypervisor sees it, carried in xenft: the
// XEN_DOMCTL_ft_op domctl (patches 0001-0003, 0007), the log ring shared as the acquirable
// resource XENMEM_resource_ft_ring and its records (public/hvm/ft.h, patches 0002, 0004-0006).
//
// Why carried: with it, xenft builds against Debian's stock libxen-dev (Xen 4.17's stable tools
// libraries plus libxencall for the one new domctl) and needs the patched hypervisor only at run
// time, so the ordinary `./configure && make`, distcheck and the .deb all build the Xen backend
// (docs/xen-backend.md, "Building against stock libxen-dev"). Compiled against the patched Xen's
// own headers (the lab's tools), the static_asserts at the end check this copy field by field
// against them; a patch that changes the interface without this file fails that build.
//
// The names are xenft's own (not Xen's), so this header and the patched ones can be included
// together.
#pragma once

#include <cstddef>
#include <cstdint>

namespace xenft::backends::xen::ft_abi {

// --- XEN_DOMCTL_ft_op (public/domctl.h) --------------------------------------------------------

inline constexpr std::uint32_t kDomctlFtOp = 87;

inline constexpr std::uint32_t kModeOff = 0;
inline constexpr std::uint32_t kModeRecord = 1;
inline constexpr std::uint32_t kModeReplay = 2;

inline constexpr std::uint32_t kOpGet = 0;    // fills mode, port, ring_pages, sync_exits
inline constexpr std::uint32_t kOpEnable = 1; // enters mode with a ring of ring_pages; fills port
inline constexpr std::uint32_t kOpDisable = 2; // back to mode OFF
inline constexpr std::uint32_t kOpGoLive = 3; // REPLAY -> OFF once the ring is consumed (EBUSY before)

inline constexpr std::uint32_t kMaxRingPages = 1024;

struct DomctlFtOp {
    std::uint32_t cmd;        // IN: kOp*
    std::uint32_t mode;       // IN (enable), OUT (get)
    std::uint32_t port;       // OUT: the event channel's remote port
    std::uint32_t ring_pages; // IN (enable), OUT (get)
    alignas(8) std::uint64_t sync_exits; // OUT (get): vCPU 0's synchronous exits
};
static_assert(sizeof(DomctlFtOp) == 24 && offsetof(DomctlFtOp, sync_exits) == 16);

// --- the log ring (public/hvm/ft.h, public/memory.h) -------------------------------------------

inline constexpr unsigned kResourceFtRing = 3; // XENMEM_resource_ft_ring

inline constexpr std::uint32_t kRingMagic = 0x52544658U; // "XFTR"
inline constexpr std::uint32_t kRingVersion = 1;

// Page 0 of the ring. Producer and consumer each write their own counter only.
struct RingHeader {
    std::uint32_t magic;
    std::uint32_t version;
    std::uint32_t nr_slots;
    std::uint32_t record_size;
    alignas(8) std::uint64_t prod;
    alignas(8) std::uint64_t cons;
    alignas(8) std::uint64_t full;  // times the producer found the ring full
    alignas(8) std::uint64_t exits; // written by Xen: the vCPU's synchronous exits so far
};
static_assert(sizeof(RingHeader) == 48 && offsetof(RingHeader, exits) == 40);

// One event, at the vCPU's synchronous exit `exit` (the point where replay reproduces it).
struct Record {
    alignas(8) std::uint64_t exit;
    std::uint16_t type; // kRec*
    std::uint16_t vcpu;
    std::uint32_t info; // type-specific
    alignas(8) std::uint64_t value[2];
};
static_assert(sizeof(Record) == 32 && offsetof(Record, value) == 16);

// An interrupt or NMI injected at the VM entry after the exit. info: vector (bits 0-7), source
// kIntSrc* (bits 8-15); value[0]: the guest's RIP at injection.
inline constexpr std::uint16_t kRecInject = 1;
inline constexpr std::uint32_t kIntSrcPic = 1;
inline constexpr std::uint32_t kIntSrcLapic = 2;
inline constexpr std::uint32_t kIntSrcNmi = 3;
inline constexpr std::uint32_t kIntSrcMce = 4;
inline constexpr std::uint32_t kIntSrcCallback = 5; // the event channel upcall vector
// A TSC read. info: kTscInsn (RDTSC/RDTSCP) or kTscMsr; value[0]: the value.
inline constexpr std::uint16_t kRecTsc = 2;
inline constexpr std::uint32_t kTscInsn = 0;
inline constexpr std::uint32_t kTscMsr = 1;
// A port or MMIO read. info: size in bytes (bits 0-7) | kIoMmio | kIoToMemory; value[0]: the
// address; value[1]: the data (with kIoToMemory: the repeat count).
inline constexpr std::uint16_t kRecIoRead = 3;
inline constexpr std::uint32_t kIoMmio = 1U << 8;
inline constexpr std::uint32_t kIoToMemory = 1U << 9;
// REPLAY only, written by the controller: the recorder passed exit `exit`; nothing at or below
// it follows.
inline constexpr std::uint16_t kRecProgress = 4;

} // namespace xenft::backends::xen::ft_abi

// Against the patched Xen's headers, this copy must be theirs exactly. (xenctrl.h, included
// before this header by xen_handles.hpp, declares the tools build and pulls in domctl.h.)
#if defined(XEN_DOMCTL_ft_op)
#include <xen/hvm/ft.h>
#include <xen/memory.h>
namespace xenft::backends::xen::ft_abi::check {
static_assert(kDomctlFtOp == XEN_DOMCTL_ft_op);
static_assert(kModeOff == XEN_DOMCTL_FT_MODE_OFF && kModeRecord == XEN_DOMCTL_FT_MODE_RECORD &&
              kModeReplay == XEN_DOMCTL_FT_MODE_REPLAY);
static_assert(kOpGet == XEN_DOMCTL_FT_OP_GET && kOpEnable == XEN_DOMCTL_FT_OP_ENABLE &&
              kOpDisable == XEN_DOMCTL_FT_OP_DISABLE && kOpGoLive == XEN_DOMCTL_FT_OP_GO_LIVE);
static_assert(kMaxRingPages == XEN_DOMCTL_FT_MAX_RING_PAGES);
static_assert(sizeof(DomctlFtOp) == sizeof(xen_domctl_ft_op));
static_assert(offsetof(DomctlFtOp, cmd) == offsetof(xen_domctl_ft_op, cmd) &&
              offsetof(DomctlFtOp, mode) == offsetof(xen_domctl_ft_op, mode) &&
              offsetof(DomctlFtOp, port) == offsetof(xen_domctl_ft_op, port) &&
              offsetof(DomctlFtOp, ring_pages) == offsetof(xen_domctl_ft_op, ring_pages) &&
              offsetof(DomctlFtOp, sync_exits) == offsetof(xen_domctl_ft_op, sync_exits));
static_assert(kResourceFtRing == XENMEM_resource_ft_ring);
static_assert(kRingMagic == XEN_FT_RING_MAGIC && kRingVersion == XEN_FT_RING_VERSION);
static_assert(sizeof(RingHeader) == sizeof(xen_ft_ring));
static_assert(offsetof(RingHeader, nr_slots) == offsetof(xen_ft_ring, nr_slots) &&
              offsetof(RingHeader, record_size) == offsetof(xen_ft_ring, record_size) &&
              offsetof(RingHeader, prod) == offsetof(xen_ft_ring, prod) &&
              offsetof(RingHeader, cons) == offsetof(xen_ft_ring, cons) &&
              offsetof(RingHeader, full) == offsetof(xen_ft_ring, full) &&
              offsetof(RingHeader, exits) == offsetof(xen_ft_ring, exits));
static_assert(sizeof(Record) == sizeof(xen_ft_record));
static_assert(offsetof(Record, exit) == offsetof(xen_ft_record, exit) &&
              offsetof(Record, type) == offsetof(xen_ft_record, type) &&
              offsetof(Record, vcpu) == offsetof(xen_ft_record, vcpu) &&
              offsetof(Record, info) == offsetof(xen_ft_record, info) &&
              offsetof(Record, value) == offsetof(xen_ft_record, value));
static_assert(kRecInject == XEN_FT_REC_INJECT && kRecTsc == XEN_FT_REC_TSC && kRecIoRead == XEN_FT_REC_IO_READ &&
              kRecProgress == XEN_FT_REC_PROGRESS);
static_assert(kIntSrcPic == XEN_FT_INTSRC_PIC && kIntSrcLapic == XEN_FT_INTSRC_LAPIC &&
              kIntSrcNmi == XEN_FT_INTSRC_NMI && kIntSrcMce == XEN_FT_INTSRC_MCE &&
              kIntSrcCallback == XEN_FT_INTSRC_CALLBACK);
static_assert(kTscInsn == XEN_FT_TSC_INSN && kTscMsr == XEN_FT_TSC_MSR);
static_assert(kIoMmio == XEN_FT_IO_MMIO && kIoToMemory == XEN_FT_IO_TO_MEMORY);
} // namespace xenft::backends::xen::ft_abi::check
#endif
