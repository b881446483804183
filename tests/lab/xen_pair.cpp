// xenft-xen-pair: the lab's driver of a protected domain on Xen (xenft/backends/xen/
// ft_domain.hpp) in one process.
//
//   xenft-xen-pair P B --tap-primary TAP_P --tap-backup TAP_B --disk-primary IMAGE_P
//                      --disk-backup IMAGE_B [--memory-mb N] [--digest-ms N] [--timeout-s N]
//       One process: domain P records with xenft's device models (NIC on TAP_P behind the
//       output gate, disk IMAGE_P), domain B, created from the same configuration, replays
//       P's log with its own device models (TAP_B silent, disk IMAGE_B: a copy of IMAGE_P)
//       and compares state digests at the exits P took them. When P is destroyed, B replays
//       what it received, goes live and serves on TAP_B until the time is up or SIGTERM.
//
//   With --linux KERNEL [--initrd FILE] [--cmdline TEXT] both domains are plain virtual PCs
//   (device_model_version = "none") and boot the same kernel directly (FtSpec::linux_image):
//   the backup replays the boot from its first instruction; the kernel finds the PC's devices in
//   ACPI tables (--acpi no: none, so it runs in virtual wire mode on the 8259 and PIT, and
//   finds no virtio device). --until TEXT prints one line when
//   both consoles show TEXT; the backup's console is printed at the end ("guest: " lines).
//
//   --corrupt-tsc K changes the K-th logged TSC value on its way to the backup (a bit worth
//   about 16 ms of guest time): the divergence must be reported by name, by a state digest
//   that differs or by Xen's replay, and the program exits 1.
//
//   The same pair split over two hosts, with the logging channel, heartbeats and the
//   test-and-set between them, is xenftd's (xenft/daemon/node.hpp with xen_execution.hpp):
//   tests/lab/failover.sh runs it.
//
// Prints "pair: ..." lines: protection started, a status line every 5 s (exits, items, digests
// matched, frames), the failover's timeline, and the end. Exits 1 on any divergence or error.
#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "xenft/backends/xen/ft_domain.hpp"
#include "xenft/backends/xen/linux_boot.hpp"

using namespace xenft::backends::xen;

namespace {

std::atomic<bool> stop{false};

void on_signal(int) { stop = true; }

int usage()
{
    std::cerr << "usage: xenft-xen-pair PRIMARY_DOMID BACKUP_DOMID --tap-primary TAP --tap-backup TAP\n"
                 "                      --disk-primary IMAGE --disk-backup IMAGE [--memory-mb N] [--digest-ms N]\n"
                 "                      [--timeout-s N] [--linux KERNEL [--initrd FILE] [--cmdline TEXT]]\n"
                 "                      [--until TEXT] [--acpi yes|no] [--corrupt-tsc K]\n";
    return 2;
}

bool parse_domid(const char* s, std::uint32_t& out)
{
    char* end = nullptr;
    const unsigned long v = std::strtoul(s, &end, 10);
    if (*end || v == 0 || v >= 0x7ff0)
        return false;
    out = static_cast<std::uint32_t>(v);
    return true;
}

// What the primary's state digests cost: the vCPU waits while one is taken.
struct DigestCosts {
    std::vector<std::uint64_t> us, pages;
    std::uint64_t covered = 0, domain_pages = 0;
    void add(const DigestTaken& d)
    {
        us.push_back(d.us), pages.push_back(d.pages_hashed);
        covered = d.covered, domain_pages = d.pages;
    }
    static std::uint64_t median(std::vector<std::uint64_t> v)
    {
        if (v.empty())
            return 0;
        std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
        return v[v.size() / 2];
    }
    std::string text() const
    {
        if (us.empty())
            return "no digests";
        return std::to_string(us.size()) + " digests stalled the primary " + std::to_string(median(us) / 1000) +
               " ms (median), " + std::to_string(*std::max_element(us.begin(), us.end()) / 1000) + " ms at most; " +
               std::to_string(median(pages)) + " pages hashed (median) of " + std::to_string(domain_pages) +
               ", the sweep at page " + std::to_string(covered);
    }
};

long long ms_since(std::chrono::steady_clock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

// The guest's console as "guest: " lines, for the lab's log.
void print_console(const std::string& text)
{
    std::size_t at = 0;
    while (at < text.size()) {
        const std::size_t end = std::min(text.find('\n', at), text.size());
        std::cout << "guest: " << text.substr(at, end - at) << "\n";
        at = end + 1;
    }
    std::cout << std::flush;
}

int fail(const std::string& why)
{
    std::cout << "pair: FAIL " << why << std::endl;
    return 1;
}

} // namespace

int run_local(int argc, char** argv)
{
    if (argc < 3)
        return usage();
    std::uint32_t p = 0, b = 0;
    if (!parse_domid(argv[1], p) || !parse_domid(argv[2], b) || p == b)
        return usage();
    FtSpec primary_spec, backup_spec;
    unsigned long timeout_s = 600;
    std::string kernel, initrd, cmdline, until;
    bool acpi = true;
    std::uint64_t corrupt_tsc = 0; // 0: none
    for (int i = 3; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc)
            return usage();
        const std::string v = argv[++i];
        if (a == "--tap-primary")
            primary_spec.devices.tap = v;
        else if (a == "--tap-backup")
            backup_spec.devices.tap = v;
        else if (a == "--disk-primary")
            primary_spec.devices.disk = v;
        else if (a == "--disk-backup")
            backup_spec.devices.disk = v;
        else if (a == "--memory-mb")
            primary_spec.devices.memory_bytes = backup_spec.devices.memory_bytes = std::strtoull(v.c_str(), nullptr, 10) << 20;
        else if (a == "--digest-ms")
            primary_spec.digest_interval_ms = std::strtoull(v.c_str(), nullptr, 10);
        else if (a == "--timeout-s")
            timeout_s = std::strtoul(v.c_str(), nullptr, 10);
        else if (a == "--linux")
            kernel = v;
        else if (a == "--initrd")
            initrd = v;
        else if (a == "--cmdline")
            cmdline = v;
        else if (a == "--until")
            until = v;
        else if (a == "--acpi")
            acpi = v == "yes";
        else if (a == "--corrupt-tsc")
            corrupt_tsc = std::strtoull(v.c_str(), nullptr, 10);
        else
            return usage();
    }
    std::shared_ptr<const xenft::engine::LinuxImage> image;
    if (!kernel.empty()) {
        auto loaded = prepare_linux_pc(primary_spec.devices, kernel, initrd, cmdline, acpi);
        if (!loaded)
            return fail(loaded.error());
        image = std::move(loaded).value();
        backup_spec.devices.isa_lines = true;
        primary_spec.linux_image = backup_spec.linux_image = image;
    }
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + std::chrono::seconds(timeout_s);

    // The backup first: it must be replaying before the primary's first record.
    auto backup = ReplayingDomain::start(b, backup_spec);
    if (!backup)
        return fail(backup.error());
    auto primary = RecordingDomain::start(p, primary_spec);
    if (!primary)
        return fail(primary.error());
    std::cout << "pair: domain " << p << " records (NIC on " << primary_spec.devices.tap << "), domain " << b
              << " replays (NIC on " << backup_spec.devices.tap << ", silent until it goes live)" << std::endl;

    XenLog log;
    DigestCosts digest_costs;
    std::uint64_t digests_seen = 0, tsc_records = 0;
    auto last_status = start;
    std::string why_primary_ended;
    while (!stop && std::chrono::steady_clock::now() < deadline) {
        if (auto why = (*primary)->ended()) {
            why_primary_ended = *why;
            break;
        }
        // One wait for both replicas, then each takes what is ready.
        std::vector<pollfd> fds;
        for (const auto& list : {(*primary)->wait_fds(), (*backup)->wait_fds()})
            for (int fd : list)
                fds.push_back({fd, POLLIN, 0});
        ::poll(fds.data(), fds.size(), 20);
        const std::size_t logged_before = log.size();
        if (auto r = (*primary)->step(log, 0); !r) {
            // A primary destroyed under us fails its calls: that is its end, not an error.
            if (auto why = (*primary)->ended()) {
                why_primary_ended = *why;
                break;
            }
            return fail("primary: " + r.error());
        }
        for (std::size_t i = logged_before; corrupt_tsc != 0 && i < log.size(); ++i) {
            auto* record = std::get_if<FtRecord>(&log[i]);
            if (record && record->type == ft_abi::kRecTsc && ++tsc_records == corrupt_tsc) {
                record->value[0] ^= std::uint64_t{1} << 24;
                std::cout << "pair: [" << ms_since(start) << " ms] changed TSC value " << corrupt_tsc << " (exit "
                          << record->exit << ") on its way to the backup" << std::endl;
            }
        }
        if (auto r = (*backup)->step(log, 0); !r) {
            if (image) // where in its boot the guest was
                print_console((*backup)->console());
            return fail("backup: " + r.error());
        }
        (*primary)->acked((*backup)->taken());
        if ((*primary)->digests() != digests_seen) { // (one step takes one at most)
            digests_seen = (*primary)->digests();
            digest_costs.add((*primary)->last_digest().taken);
        }
        if (!until.empty() && (*primary)->console().find(until) != std::string::npos &&
            (*backup)->console().find(until) != std::string::npos) {
            std::cout << "pair: [" << ms_since(start) << " ms] both consoles show \"" << until << "\": primary at exit "
                      << (*primary)->exits() << ", backup at exit " << (*backup)->exits() << "; digests "
                      << (*primary)->digests() << " taken, " << (*backup)->digests_matched() << " matched"
                      << std::endl;
            until.clear();
        }
        if (ms_since(last_status) >= 5000) {
            last_status = std::chrono::steady_clock::now();
            std::cout << "pair: [" << ms_since(start) << " ms] primary at exit " << (*primary)->exits() << ", backup at exit "
                      << (*backup)->exits() << "; " << (*primary)->appended() << " items logged, "
                      << (*backup)->taken() << " received; digests " << (*primary)->digests() << " taken, "
                      << (*backup)->digests_matched() << " matched; frames in " << (*primary)->frames_in()
                      << ", out " << (*primary)->frames_out() << ", replayed " << (*backup)->frames_replayed()
                      << std::endl;
        }
    }
    if (why_primary_ended.empty()) {
        std::cout << "pair: ended before any failover: " << (stop ? "stopped" : "time is up") << "; digests "
                  << (*backup)->digests_matched() << " matched" << std::endl;
        if (image)
            print_console((*backup)->console());
        return 0;
    }
    const auto gone = std::chrono::steady_clock::now();
    const std::uint64_t primary_items = (*primary)->appended(), primary_exit = (*primary)->exits();
    std::cout << "pair: [" << ms_since(start) << " ms] primary domain " << p << " ended (" << why_primary_ended
              << ") at exit " << primary_exit << "; the backup is at exit " << (*backup)->exits() << " with "
              << log.size() << " of " << primary_items << " items still to replay; " << (*backup)->digests_matched()
              << " digests matched; " << digest_costs.text() << std::endl;
    primary->reset();
    if (auto r = (*backup)->go_live(log); !r)
        return fail("backup: " + r.error());
    std::cout << "pair: [" << ms_since(start) << " ms] domain " << b << " went live at exit " << (*backup)->live_exit()
              << ", " << ms_since(gone) << " ms after the primary ended; " << (*backup)->digests_matched()
              << " digests matched, " << (*backup)->frames_replayed() << " frames replayed, "
              << (*backup)->frames_resent() << " sent again, " << (*backup)->dropped()
              << " items of an unfinished exit dropped, " << (*backup)->interrupts_reasserted()
              << " device interrupts reasserted" << std::endl;
    auto end = (*backup)->run_live(stop);
    if (!end)
        return fail("live: " + end.error());
    std::cout << "pair: [" << ms_since(start) << " ms] live domain " << b << ": " << *end << std::endl;
    if (image)
        print_console((*backup)->console());
    return 0;
}

int main(int argc, char** argv)
{
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    return run_local(argc, argv);
}
