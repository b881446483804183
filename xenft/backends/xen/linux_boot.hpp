// Starts a paused HVM domain at a Linux kernel's 64-bit entry (engine::LinuxImage): the image's
// pieces written into guest memory through the device model's mapping, and vCPU 0's registers,
// control registers, segments and EFER replaced in the CPU record of the domain's HVM context,
// as Xen's own restore loads them. The firmware libxl loaded (hvmloader) never runs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "xenft/backends/xen/device_model.hpp"
#include "xenft/engine/linux_image.hpp"

namespace xenft::backends::xen {

// The domain must be paused and its vCPU 0 never run; `dm` must map the image's memory.
Expected<bool, std::string> boot_linux(XenDeviceModel& dm, const engine::LinuxImage& image);

// What the kernel is told of the device models `spec` makes (with spec.isa_lines): each
// virtio-mmio device's window and ISA line, for the image's ACPI tables.
engine::AcpiPlatform linux_pc_platform(const DeviceModelSpec& spec);

// A Linux guest on the plain PC `spec` describes: sets spec.isa_lines (every replica's device
// models need it) and lays the kernel out for spec.memory_bytes, with ACPI tables naming the
// devices unless `acpi` is false (then the kernel runs on the 8259 and PIT alone).
Expected<std::shared_ptr<const engine::LinuxImage>, std::string> prepare_linux_pc(DeviceModelSpec& spec,
                                                                                  const std::string& kernel,
                                                                                  const std::string& initrd,
                                                                                  const std::string& cmdline,
                                                                                  bool acpi = true);

} // namespace xenft::backends::xen
