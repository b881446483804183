// Starts a paused HVM domain at a Linux kernel's 64-bit entry (engine::LinuxImage): the image's
// pieces written into guest memory through the device model's mapping, and vCPU 0's registers,
// control registers, segments and EFER replaced in the CPU record of the domain's HVM context,
// as Xen's own restore loads them. The firmware libxl loaded (hvmloader) never runs.
#pragma once

#include <cstdint>
#include <string>

#include "xenft/backends/xen/device_model.hpp"
#include "xenft/engine/linux_image.hpp"

namespace xenft::backends::xen {

// The domain must be paused and its vCPU 0 never run; `dm` must map the image's memory.
Expected<bool, std::string> boot_linux(XenDeviceModel& dm, const engine::LinuxImage& image);

// What the kernel is told of the device models `spec` makes (with spec.isa_lines): each
// virtio-mmio device's window and ISA line, for the image's ACPI tables.
engine::AcpiPlatform linux_pc_platform(const DeviceModelSpec& spec);

} // namespace xenft::backends::xen
