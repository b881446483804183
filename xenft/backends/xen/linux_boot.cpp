#include "xenft/backends/xen/linux_boot.hpp"

#include <xen/hvm/save.h>

#include <cstring>
#include <tuple>
#include <vector>

namespace xenft::backends::xen {

namespace {

// Segment attributes in Xen's saved form (type, S, DPL, P, AVL, L, D/B, G in bits 0-11).
constexpr std::uint32_t kCode64Attributes = 0xa9b; // execute/read accessed, S, P, L, G
constexpr std::uint32_t kData32Attributes = 0xc93; // read/write accessed, S, P, D/B, G

void enter_long_mode(hvm_hw_cpu& c, const engine::LinuxEntry& e)
{
    using E = engine::LinuxEntry;
    c.rax = c.rbx = c.rcx = c.rdx = c.rbp = c.rdi = 0;
    c.r8 = c.r9 = c.r10 = c.r11 = c.r12 = c.r13 = c.r14 = c.r15 = 0;
    c.rsi = e.rsi;
    c.rsp = e.rsp;
    c.rip = e.rip;
    c.rflags = 0x2; // interrupts off, as the boot protocol wants
    c.cr0 = E::kCr0;
    c.cr2 = 0;
    c.cr3 = e.cr3;
    c.cr4 = E::kCr4;
    c.msr_efer = E::kEfer;
    c.cs_sel = E::kCodeSelector;
    c.cs_base = 0;
    c.cs_limit = 0xffffffff;
    c.cs_arbytes = kCode64Attributes;
    for (auto [sel, base, limit, ar] : {std::tuple{&c.ds_sel, &c.ds_base, &c.ds_limit, &c.ds_arbytes},
                                        std::tuple{&c.es_sel, &c.es_base, &c.es_limit, &c.es_arbytes},
                                        std::tuple{&c.ss_sel, &c.ss_base, &c.ss_limit, &c.ss_arbytes},
                                        std::tuple{&c.fs_sel, &c.fs_base, &c.fs_limit, &c.fs_arbytes},
                                        std::tuple{&c.gs_sel, &c.gs_base, &c.gs_limit, &c.gs_arbytes}}) {
        *sel = E::kDataSelector;
        *base = 0;
        *limit = 0xffffffff;
        *ar = kData32Attributes;
    }
    c.gdtr_base = e.gdt_base;
    c.gdtr_limit = e.gdt_limit;
    c.idtr_base = 0;
    c.idtr_limit = 0;
}

} // namespace

Expected<bool, std::string> boot_linux(XenDeviceModel& dm, const engine::LinuxImage& image)
{
    const std::uint32_t domid = dm.domid();
    const std::string who = "domain " + std::to_string(domid) + ": Linux boot";
    for (const auto& s : image.segments)
        if (!dm.memory().write_guest(s.gpa, s.bytes))
            return unexpected(who + ": cannot write " + std::to_string(s.bytes.size()) + " bytes at guest-physical " +
                              std::to_string(s.gpa) + " (beyond the memory xenft maps?)");

    xc_interface* xch = dm.control().get();
    const int size = xc_domain_hvm_getcontext(xch, domid, nullptr, 0);
    if (size <= 0)
        return unexpected(errno_text(who + ": cannot size the HVM context"));
    std::vector<std::uint8_t> context(static_cast<std::size_t>(size));
    const int got = xc_domain_hvm_getcontext(xch, domid, context.data(), static_cast<std::uint32_t>(size));
    if (got <= 0)
        return unexpected(errno_text(who + ": cannot read the HVM context"));
    context.resize(static_cast<std::size_t>(got));

    // Records follow each other, each a descriptor and its data; vCPU 0's CPU record is edited
    // in place (copied out and back: the buffer gives no alignment).
    bool found = false;
    for (std::size_t at = 0; at + sizeof(hvm_save_descriptor) <= context.size();) {
        hvm_save_descriptor d;
        std::memcpy(&d, context.data() + at, sizeof d);
        const std::size_t data = at + sizeof d;
        if (d.length > context.size() - data)
            return unexpected(who + ": Xen's HVM context has a record past its end");
        if (d.typecode == HVM_SAVE_CODE(CPU) && d.instance == 0) {
            if (d.length < sizeof(hvm_hw_cpu))
                return unexpected(who + ": vCPU 0's record in the HVM context is " + std::to_string(d.length) +
                                  " bytes, not the " + std::to_string(sizeof(hvm_hw_cpu)) + " this build knows");
            hvm_hw_cpu cpu;
            std::memcpy(&cpu, context.data() + data, sizeof cpu);
            enter_long_mode(cpu, image.entry);
            std::memcpy(context.data() + data, &cpu, sizeof cpu);
            found = true;
            break;
        }
        if (d.typecode == HVM_SAVE_CODE(END))
            break;
        at = data + d.length;
    }
    if (!found)
        return unexpected(who + ": Xen's HVM context has no record of vCPU 0");
    if (xc_domain_hvm_setcontext(xch, domid, context.data(), static_cast<std::uint32_t>(context.size())) != 0)
        return unexpected(errno_text(who + ": Xen refused vCPU 0 at the kernel's entry"));
    return true;
}

engine::AcpiPlatform linux_pc_platform(const DeviceModelSpec& spec)
{
    engine::AcpiPlatform p;
    if (!spec.tap.empty())
        p.virtio.push_back({devices::VirtioNet::kDefaultBase, devices::VirtioMmio::kWindow, devices::VirtioNet::kIsaLine});
    if (spec.has_disk())
        p.virtio.push_back({devices::VirtioBlk::kDefaultBase, devices::VirtioMmio::kWindow, devices::VirtioBlk::kIsaLine});
    return p;
}

Expected<std::shared_ptr<const engine::LinuxImage>, std::string> prepare_linux_pc(DeviceModelSpec& spec,
                                                                                  const std::string& kernel,
                                                                                  const std::string& initrd,
                                                                                  const std::string& cmdline, bool acpi)
{
    spec.isa_lines = true;
    engine::LinuxBootSpec boot{spec.memory_bytes, cmdline, std::nullopt};
    if (acpi)
        boot.acpi = linux_pc_platform(spec);
    auto image = engine::load_linux_image(kernel, initrd, boot);
    if (!image)
        return unexpected(image.error());
    return std::make_shared<const engine::LinuxImage>(std::move(image).value());
}

} // namespace xenft::backends::xen
