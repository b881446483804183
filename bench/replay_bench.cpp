// Deterministic-execution benchmark on the KVM backend with the test guest:
// - record_work_ratio_cpu: the CPU-bound guest's work rate while recording (state digest every
//   5,000 exits, log encoded into frames as the channel would) over its rate when the engine
//   runs it without keeping a log, same run; VMware FT reports 0.94-0.98.
// - idle_log_mbit_s: log bandwidth of the idle guest (1 kHz timer) as the logging channel
//   sends it (frames zstd-compressed, flushed every ~10 ms of guest time like the channel's
//   batches), against VMware's 1.43 Mbit/s for an idle guest at 1000 Hz; idle_log_raw_mbit_s
//   the same before compression.
// - echo_log_mbit_s: the same while clients keep the guest's UDP service busy, against the
//   guest's own network traffic in the same run (VMware: 730 Mbit/s of log for 604 of
//   traffic, ratio 1.2). Needs root for the TAP interface; skipped with a message otherwise.
// - replay_speed_ratio: exits per second replaying a log over exits per second recording it.
// Medians of 3 runs each.
#include <atomic>
#include <thread>

#include "bench/report.hpp"
#include "tests/vm_fixture.hpp"
#include "xenft/channel/wire.hpp"
#include "xenft/engine/replay.hpp"
#include "xenft/logformat/stream.hpp"

using namespace xenft;
using xenft::testing::Vm;

namespace {

constexpr int kRuns = 3;

std::size_t encoded_bytes(const std::vector<logformat::Entry>& log)
{
    return log.empty() ? 0 : logformat::encode_frames(log, 1024).size();
}

// Log bytes before and after the channel's compression, batch by batch.
struct Wire {
    channel::LogCompressor zstd{1};
    std::size_t raw = 0, compressed = 0;
    void batch(const std::vector<logformat::Entry>& log)
    {
        if (log.empty())
            return;
        const auto frames = logformat::encode_frames(log, 1024);
        std::vector<std::uint8_t> out;
        zstd.compress(frames, false, out);
        raw += frames.size();
        compressed += out.size();
    }
};

// The last complete "work N" line (the guest prints a character per exit, so the newest line
// may still be half written).
std::uint64_t work_units(const std::string& uart)
{
    const auto end = uart.rfind('\n');
    if (end == std::string::npos)
        return 0;
    const auto at = uart.rfind("work ", end);
    return at == std::string::npos ? 0 : std::stoull(uart.substr(at + 5, end - at - 5));
}

// Work units per second of the CPU-bound guest over `seconds`, recording or not.
double cpu_work_rate(bool record, double seconds)
{
    Vm vm({}, "mode=cpu");
    if (!vm.machine)
        throw std::runtime_error(vm.error);
    engine::Recorder rec(*vm.machine, record ? 5000 : 0);
    std::vector<logformat::Entry> log;
    // Warm up to the first report, then time whole chunks of exits.
    while (work_units(vm.machine->uart().output()) == 0)
        if (!rec.run(50, log))
            throw std::runtime_error("cpu guest stopped");
    log.clear();
    const std::uint64_t units0 = work_units(vm.machine->uart().output());
    const auto t0 = std::chrono::steady_clock::now();
    while (bench::seconds_since(t0) < seconds) {
        if (!rec.run(100, log))
            throw std::runtime_error("cpu guest stopped");
        if (record)
            (void)encoded_bytes(log); // the encoding the VM thread does for the channel
        log.clear();
    }
    return static_cast<double>(work_units(vm.machine->uart().output()) - units0) / bench::seconds_since(t0);
}

struct Rates {
    double compressed = 0, raw = 0; // Mbit/s
};

// Records batches of `exits` (about one channel batch, ~10 ms of guest time) for `seconds`
// and measures the log as the channel would send it.
Rates log_rates(engine::Recorder& rec, std::uint64_t exits, double seconds)
{
    std::vector<logformat::Entry> log;
    const auto t0 = std::chrono::steady_clock::now();
    Wire wire;
    while (bench::seconds_since(t0) < seconds) {
        (void)rec.run(exits, log);
        wire.batch(log);
        log.clear();
    }
    const double s = bench::seconds_since(t0);
    return {static_cast<double>(wire.compressed) * 8 / 1e6 / s, static_cast<double>(wire.raw) * 8 / 1e6 / s};
}

Rates idle_log_mbit_s(double seconds)
{
    Vm vm({}, "mode=idle");
    if (!vm.machine)
        throw std::runtime_error(vm.error);
    engine::Recorder rec(*vm.machine, 0);
    std::vector<logformat::Entry> log;
    (void)rec.run(200, log); // boot
    return log_rates(rec, 30, seconds);
}

struct EchoResult {
    double log_mbit_s = 0, traffic_mbit_s = 0;
};

EchoResult echo(double seconds)
{
    testing::TapNet net;
    if (!net.error().empty())
        throw std::runtime_error(net.error());
    testing::DiskImage image(1u << 20);
    auto disk = devices::FileStore::open(image.path());
    engine::MachineSpec spec;
    spec.network = true;
    spec.disk_bytes = 1u << 20;
    Vm vm(spec, net.cmdline());
    if (!vm.machine || !disk)
        throw std::runtime_error(vm.error);
    engine::Recorder rec(*vm.machine, 5000, engine::HostIo{net.tap(), &*disk});
    std::vector<logformat::Entry> log;
    (void)rec.run(2000, log); // boot
    log.clear();
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (std::uint32_t c = 0; c < 2; ++c)
        clients.emplace_back([&, c] {
            testing::KvClient client(net.host_ip(), net.guest_ip(), 500 + c);
            while (!stop)
                (void)client.call(2, static_cast<std::uint8_t>(c), 0, std::chrono::milliseconds(100), 1);
        });
    const auto* nic = vm.machine->net();
    const std::uint64_t traffic0 = nic->bytes_received() + nic->bytes_transmitted();
    const auto t0 = std::chrono::steady_clock::now();
    const Rates rates = log_rates(rec, 40, seconds);
    const double elapsed = bench::seconds_since(t0);
    const std::uint64_t traffic = nic->bytes_received() + nic->bytes_transmitted() - traffic0;
    stop = true; // each client gives up its last request after 100 ms; no guest needed
    for (auto& t : clients)
        t.join();
    return {rates.compressed, static_cast<double>(traffic) * 8 / 1e6 / elapsed};
}

// Exits per second replaying over exits per second recording, for the default guest.
double replay_speed_ratio(std::uint64_t exits)
{
    Vm primary;
    if (!primary.machine)
        throw std::runtime_error(primary.error);
    engine::Recorder rec(*primary.machine, 5000);
    std::vector<logformat::Entry> log;
    auto t0 = std::chrono::steady_clock::now();
    if (!rec.run(exits, log))
        throw std::runtime_error("recording failed");
    const double record_s = bench::seconds_since(t0);
    Vm backup;
    engine::Replayer rep(*backup.machine);
    t0 = std::chrono::steady_clock::now();
    if (!rep.run(log, exits))
        throw std::runtime_error("replay diverged");
    return record_s / bench::seconds_since(t0);
}

} // namespace

int main(int argc, char** argv)
{
    const std::string dir = bench::out_dir(argc, argv);
    bench::Report report("replay");
    if (!testing::have_kvm()) {
        std::cout << "replay: skipped, this machine has no usable /dev/kvm\n";
        return 0;
    }
    try {
        std::vector<double> with, without, idle, idle_raw, ratio;
        for (int run = 0; run < kRuns; ++run) {
            without.push_back(cpu_work_rate(false, 4));
            with.push_back(cpu_work_rate(true, 4));
            const auto rates = idle_log_mbit_s(3);
            idle.push_back(rates.compressed);
            idle_raw.push_back(rates.raw);
            ratio.push_back(replay_speed_ratio(10'000));
        }
        std::cout << "replay: medians of " << kRuns << " runs\n";
        report.add("record_work_ratio_cpu", bench::median(with), "work units/s", bench::median(without));
        report.add("idle_log_mbit_s", bench::median(idle), "Mbit/s", 1.43);
        report.add("idle_log_raw_mbit_s", bench::median(idle_raw), "Mbit/s before compression", 1.43);
        report.add("replay_speed_ratio", bench::median(ratio), "replay/record exits per s", 1.0);
        if (testing::have_tap()) {
            std::vector<double> log, traffic;
            for (int run = 0; run < kRuns; ++run) {
                const auto r = echo(4);
                log.push_back(r.log_mbit_s);
                traffic.push_back(r.traffic_mbit_s);
            }
            report.add("echo_log_mbit_s", bench::median(log), "Mbit/s (baseline: guest traffic)", bench::median(traffic));
        } else {
            std::cout << "  echo_log_mbit_s: skipped, cannot create a TAP interface (needs root)\n";
        }
    } catch (const std::exception& e) {
        std::cerr << "replay bench: " << e.what() << "\n";
        return 1;
    }
    return report.write(dir) ? 0 : 1;
}
