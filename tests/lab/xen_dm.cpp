// xenft-xen-dm: the lab's driver of xenft's Xen device model (xenft/backends/xen/
// device_model.hpp) for one domain created paused: it takes the domain's UART, clock and
// virtio-mmio ranges, unpauses the domain and serves it until the domain shuts down or the
// time is up (SIGTERM ends it too), then prints the guest's console output.
//
//   xenft-xen-dm DOMID [--memory-mb N] [--tap NAME] [--disk FILE] [--timeout-s N]
//                [--linux KERNEL [--initrd FILE] [--cmdline TEXT] [--acpi yes|no]]
//                [--until TEXT [--linger-s N]] [--unpause-after FILE]
//
// With --linux the domain is an HVM domain without QEMU (device_model_version = "none"): the
// kernel is booted directly (xenft/backends/xen/linux_boot.hpp) before the unpause, with the
// PC's ACPI tables (IO-APIC, HPET, the virtio-mmio devices on ISA lines) unless --acpi no
// (then the kernel runs in virtual wire mode on the 8259 and PIT). --until
// ends the service once the guest's console shows TEXT (with --linger-s, N seconds later,
// after printing "dm: the console shows ..."). --unpause-after waits for FILE to exist before
// the unpause (so that a recorder can take the domain from its first instruction).
//
// Prints "dm: serving domain N ..." once the server is enabled, "guest: ..." lines, and at the
// end "dm: ended: WHY; N requests, N frames in, N interrupts". Exits 1 on any error.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include "xenft/backends/xen/device_model.hpp"
#include "xenft/backends/xen/linux_boot.hpp"

using namespace xenft::backends::xen;

namespace {

std::atomic<bool> stop{false};

void on_signal(int) { stop = true; }

int usage()
{
    std::cerr << "usage: xenft-xen-dm DOMID [--memory-mb N] [--tap NAME] [--disk FILE] [--timeout-s N]\n"
                 "                    [--linux KERNEL [--initrd FILE] [--cmdline TEXT] [--acpi yes|no]]\n"
                 "                    [--until TEXT [--linger-s N]]\n"
                 "                    [--unpause-after FILE]\n";
    return 2;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2)
        return usage();
    char* end = nullptr;
    const unsigned long domid = std::strtoul(argv[1], &end, 10);
    if (*end || domid == 0 || domid >= 0x7ff0)
        return usage();
    DeviceModelSpec spec;
    unsigned long timeout_s = 600;
    std::string kernel, initrd, cmdline, console_until, unpause_after;
    unsigned long linger_s = 0;
    bool acpi = true;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc)
            return usage();
        const std::string v = argv[++i];
        if (a == "--memory-mb")
            spec.memory_bytes = std::strtoull(v.c_str(), nullptr, 10) << 20;
        else if (a == "--tap")
            spec.tap = v;
        else if (a == "--disk")
            spec.disk = v;
        else if (a == "--timeout-s")
            timeout_s = std::strtoul(v.c_str(), nullptr, 10);
        else if (a == "--linux")
            kernel = v;
        else if (a == "--initrd")
            initrd = v;
        else if (a == "--cmdline")
            cmdline = v;
        else if (a == "--until")
            console_until = v;
        else if (a == "--linger-s")
            linger_s = std::strtoul(v.c_str(), nullptr, 10);
        else if (a == "--unpause-after")
            unpause_after = v;
        else if (a == "--acpi")
            acpi = v == "yes";
        else
            return usage();
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    std::shared_ptr<const xenft::engine::LinuxImage> image;
    if (!kernel.empty()) {
        auto loaded = prepare_linux_pc(spec, kernel, initrd, cmdline, acpi);
        if (!loaded) {
            std::cerr << "xenft-xen-dm: " << loaded.error() << "\n";
            return 1;
        }
        image = std::move(loaded).value();
    }
    auto dm = XenDeviceModel::create(static_cast<std::uint32_t>(domid), spec);
    if (!dm) {
        std::cerr << "xenft-xen-dm: " << dm.error() << "\n";
        return 1;
    }
    auto xc = XenControl::open();
    if (!xc) {
        std::cerr << "xenft-xen-dm: " << xc.error() << "\n";
        return 1;
    }
    if (image) {
        if (auto r = boot_linux(**dm, *image); !r) {
            std::cerr << "xenft-xen-dm: " << r.error() << "\n";
            return 1;
        }
        std::printf("dm: Linux (boot protocol %#x) at %#llx, initrd %llu bytes at %#llx, entry %#llx\n", image->protocol,
                    static_cast<unsigned long long>(image->kernel_gpa), static_cast<unsigned long long>(image->initrd_bytes),
                    static_cast<unsigned long long>(image->initrd_gpa), static_cast<unsigned long long>(image->entry.rip));
    }
    std::cout << "dm: serving domain " << domid << (spec.tap.empty() ? "" : " (NIC on " + spec.tap + ")")
              << (spec.disk.empty() ? "" : " (disk " + spec.disk + ")") << std::endl;
    while (!unpause_after.empty() && !stop && access(unpause_after.c_str(), F_OK) != 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (auto r = xc->unpause(static_cast<std::uint32_t>(domid)); !r) {
        std::cerr << "xenft-xen-dm: " << r.error() << "\n";
        return 1;
    }
    // The time limit: a thread that sets the same flag as SIGTERM.
    std::thread timer([&] {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
        while (!stop && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        stop = true;
    });
    xenft::Expected<std::string, std::string> ended = std::string("stopped");
    if (console_until.empty()) {
        ended = (*dm)->run(stop);
    } else {
        std::optional<std::chrono::steady_clock::time_point> shown;
        while (!stop) {
            auto r = (*dm)->serve_once(100);
            if (!r) {
                ended = xenft::unexpected(r.error());
                break;
            }
            if (!*r) {
                ended = (*dm)->ended().value_or("the domain ended");
                break;
            }
            if (!shown && (*dm)->console().find(console_until) != std::string::npos) {
                shown = std::chrono::steady_clock::now();
                std::cout << "dm: the console shows \"" << console_until << "\"" << std::endl;
            }
            if (shown && std::chrono::steady_clock::now() - *shown >= std::chrono::seconds(linger_s)) {
                ended = "the console shows \"" + console_until + "\"";
                break;
            }
        }
    }
    stop = true;
    timer.join();
    const std::string why = ended ? *ended : "error: " + ended.error();
    const std::string& out = (*dm)->console();
    for (std::size_t p = 0; p < out.size();) {
        const std::size_t nl = out.find('\n', p);
        std::cout << "guest: " << out.substr(p, nl == std::string::npos ? std::string::npos : nl - p) << "\n";
        p = nl == std::string::npos ? out.size() : nl + 1;
    }
    std::cout << "dm: ended: " << why << "; " << (*dm)->requests() << " requests, " << (*dm)->frames_in()
              << " frames in, " << (*dm)->interrupts() << " interrupts" << std::endl;
    return why.rfind("error", 0) == 0 ? 1 : 0;
}
