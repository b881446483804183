// A Linux bzImage booted directly on a plain virtual PC, as the x86 boot protocol's 64-bit entry
// describes (Documentation/arch/x86/boot.rst): xenft, the PC's only device model, puts the
// kernel, its initrd, the zero page (setup header, e820 map, command line) and identity page
// tables into guest memory and starts the vCPU in long mode at the kernel's 64-bit entry, so no
// firmware (and no QEMU to serve one) runs before the kernel. docs/linux-guest.md says why.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"
#include "xenft/engine/acpi_tables.hpp"

namespace xenft::engine {

// A piece of guest memory to write before the first instruction.
struct LinuxSegment {
    std::uint64_t gpa = 0;
    std::vector<std::uint8_t> bytes;
};

// The vCPU at the 64-bit entry: flat 64-bit code and data segments from `gdt`, paging on with
// `cr3`'s identity map, RSI the zero page.
struct LinuxEntry {
    std::uint64_t rip = 0, rsi = 0, rsp = 0, cr3 = 0;
    std::uint64_t gdt_base = 0;
    std::uint16_t gdt_limit = 0;
    static constexpr std::uint16_t kCodeSelector = 0x10; // __BOOT_CS
    static constexpr std::uint16_t kDataSelector = 0x18; // __BOOT_DS
    static constexpr std::uint64_t kCr0 = 0x80000031;    // PG, NE, ET, PE
    static constexpr std::uint64_t kCr4 = 0x20;          // PAE
    static constexpr std::uint64_t kEfer = 0x500;        // LMA, LME
};

struct LinuxImage {
    std::vector<LinuxSegment> segments; // in guest-physical order, none overlapping
    LinuxEntry entry;
    std::uint16_t protocol = 0; // the kernel's boot protocol version, e.g. 0x020f
    std::uint64_t kernel_gpa = 0, initrd_gpa = 0, initrd_bytes = 0;
};

struct LinuxBootSpec {
    std::uint64_t memory_bytes = 0; // RAM from 0, below the PCI hole (at most 3 GiB)
    std::string cmdline;
    // The PC's ACPI tables (acpi_tables.hpp), in the BIOS area at kAcpiTablesGpa, which the
    // zero page points to; without them the kernel finds no IO-APIC, HPET or virtio device.
    std::optional<AcpiPlatform> acpi;
};

inline constexpr std::uint64_t kAcpiTablesGpa = 0xe0000;

// Validates everything it reads (the kernel is a file from outside): a bzImage with boot
// protocol 2.12 or later and a 64-bit entry, sizes that fit the file and the guest's memory.
Expected<LinuxImage, std::string> build_linux_image(std::span<const std::uint8_t> kernel,
                                                    std::span<const std::uint8_t> initrd,
                                                    const LinuxBootSpec& spec);
Expected<LinuxImage, std::string> load_linux_image(const std::string& kernel_path, const std::string& initrd_path,
                                                   const LinuxBootSpec& spec);

} // namespace xenft::engine
