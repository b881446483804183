// The ACPI tables of the plain virtual PC (docs/linux-guest.md), written by xenft's loader in
// place of firmware, so that a stock kernel finds the platform it runs on without probing:
//   MADT   one CPU (local APIC 0) and Xen's IO-APIC at 0xfec00000 (GSIs 0-47, ISA IRQ 0 on
//          GSI 2, as Xen wires it): interrupts reach the CPU as local-APIC vectors, which
//          record and replay take at synchronous exits, instead of the 8259's ExtINT.
//   HPET   Xen's HPET at 0xfed00000: a clocksource and one-shot timers, so the idle kernel
//          stops its periodic tick (tickless) instead of waking 250 times a second.
//   FADT   Xen's ACPI PM timer and PM1 event block where Xen has them on a domain hvmloader
//          never ran in (the 0x1f40 layout: HVM_PARAM_ACPI_IOPORTS_LOCATION stays 0; the 0xb000
//          one is what hvmloader selects), SCI on IRQ 9, no 8042, no VGA; and a FACS.
//   DSDT   xenft's virtio-mmio devices ("LNRO0005", Linux's virtio_mmio driver), each a register
//          window and an edge-triggered ISA interrupt line: Debian's kernel is built without
//          virtio-mmio devices on the command line, so ACPI is how it learns of them. And \_S5,
//          the soft-off state's sleep type, without which a kernel has no ACPI poweroff: it
//          writes that type with SLP_EN to the PM1a control block, which xenft serves
//          (devices::AcpiPowerControl) and which ends the domain.
// Pure: bytes for a given layout, checked by tests/acpi_tables_test (iasl disassembles them).
#pragma once

#include <cstdint>
#include <vector>

namespace xenft::engine {

struct AcpiVirtioDevice {
    std::uint64_t base = 0;  // the register window (VirtioMmio::kWindow bytes)
    std::uint32_t size = 0x200;
    std::uint8_t isa_irq = 0; // an edge-triggered, active-high ISA line (1-15, not 2)
};

struct AcpiPlatform {
    std::vector<AcpiVirtioDevice> virtio;
};

// Xen's platform, as the tables describe it.
inline constexpr std::uint64_t kIoApicAddress = 0xfec00000, kHpetAddress = 0xfed00000, kLocalApicAddress = 0xfee00000;
// Xen's ACPI_PM1A_EVT_BLK_ADDRESS_V0 layout (public/hvm/ioreq.h).
inline constexpr std::uint16_t kPm1aEventBlock = 0x1f40, kPm1aControlBlock = 0x1f44, kPmTimerBlock = 0x1f48;
inline constexpr std::uint8_t kSciIrq = 9;
// \_S5's SLP_TYP, for PM1a and PM1b (the value hvmloader's DSDT gives it too).
inline constexpr std::uint8_t kS5SleepType = 7;

struct AcpiTables {
    std::uint64_t gpa = 0;      // where `bytes` go in guest memory
    std::uint64_t rsdp_gpa = 0; // the root pointer, 16-byte aligned in the BIOS area
    std::vector<std::uint8_t> bytes;
};

// The tables laid out from `gpa` (16-byte aligned, below 4 GiB). The RSDP comes first, so a
// kernel that scans 0xe0000-0xfffff for it finds it there too.
AcpiTables build_acpi_tables(const AcpiPlatform& platform, std::uint64_t gpa);

} // namespace xenft::engine
