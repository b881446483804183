// The protected pair's benchmark (two nodes in one process, tests/pair_fixture.hpp: TLS on
// loopback, UDP heartbeats, istgt as the shared LUN, the guest's NIC on a TAP):
// - ft_work_ratio: the CPU-bound guest's rate protected over its rate unprotected (the engine
//   alone, no log), same run. The rate is its clock-read exits per second: the CPU mode reads
//   the clock once per 4,096 work steps, so exits count work. VMware FT: 0.94-0.98.
// - output_commit_added_us_p50/_p99: a client's request-to-reply time through the protected
//   pair minus the same through the unprotected guest (a GET a time, 2,000 each), same run:
//   what holding replies until the backup acked costs.
// - failover_ms_p50 (and _max) over 10 runs: from destroying the primary node (as SIGKILL does)
//   to the first output the new primary's gate lets out, clients running.
// - backup_lag_ms_p99: age of the oldest unacked entry on the primary, sampled every 5 ms
//   under load.
// - idle_log_mbit_s: the logging channel's rate on the wire for the idle guest (1 kHz timer)
//   against VMware's 1.43 Mbit/s; load_log_mbit_s: the same under two clients against the
//   guest's own UDP traffic in the same run.
// Medians of 3 runs where not said otherwise. Needs root, /dev/kvm and istgt.
#include <sstream>
#include <stdexcept>

#define PAIR_REQUIRE(cond, msg)                                                                                        \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            std::ostringstream os_;                                                                                    \
            os_ << msg;                                                                                                \
            throw std::runtime_error(os_.str());                                                                       \
        }                                                                                                              \
    } while (0)

#include "bench/report.hpp"
#include "tests/pair_fixture.hpp"
#include "xenft/engine/replay.hpp"

using namespace xenft;
using namespace xenft::testing;

namespace {

constexpr int kRuns = 3;
constexpr int kFailovers = 10;
// A request (66 bytes on the wire) and its reply (74), for the guest's traffic rate.
constexpr double kBytesPerCall = 66 + 74;

double percentile(std::vector<double> v, double p)
{
    std::sort(v.begin(), v.end());
    if (v.empty())
        return 0;
    return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

struct Pair {
    PairRig rig;
    std::unique_ptr<daemon::Node> backup, primary;
    explicit Pair(const std::string& args = {}) : rig(args)
    {
        backup = start_node(rig.node_config(2, PairRig::Start::backup));
        primary = start_node(rig.node_config(1, PairRig::Start::primary));
        if (!wait_for([&] { return primary->status().role == protocol::Role::primary_protected && primary->status().acked > 0; }, 30))
            throw std::runtime_error("the pair did not form");
    }
};

// Exits per second of the CPU-bound guest over `seconds`, unprotected: the engine alone.
double cpu_exits_unprotected(double seconds)
{
    Vm vm({}, "mode=cpu");
    if (!vm.machine)
        throw std::runtime_error(vm.error);
    engine::Recorder rec(*vm.machine, 0);
    std::vector<logformat::Entry> log;
    (void)rec.run(2000, log); // boot
    log.clear();
    const std::uint64_t e0 = rec.exits();
    const auto t0 = Clock::now();
    while (bench::seconds_since(t0) < seconds) {
        if (!rec.run(100, log))
            throw std::runtime_error("cpu guest stopped");
        log.clear();
    }
    return static_cast<double>(rec.exits() - e0) / bench::seconds_since(t0);
}

double cpu_exits_protected(double seconds)
{
    Pair p("mode=cpu");
    const std::uint64_t e0 = p.primary->status().exits;
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    const double rate = static_cast<double>(p.primary->status().exits - e0) / bench::seconds_since(t0);
    if (p.primary->status().role != protocol::Role::primary_protected)
        throw std::runtime_error("the pair broke during the measurement");
    return rate;
}

// Microseconds per GET, one at a time, `n` of them.
std::vector<double> request_times(TapNet& net, int n)
{
    KvClient client(net.host_ip(), net.guest_ip(), 900);
    (void)client.call(2, 0, 0, std::chrono::milliseconds(500), 20); // ARP, warm-up
    std::vector<double> us;
    for (int i = 0; i < n; ++i) {
        const auto t0 = Clock::now();
        const auto c = client.call(2, static_cast<std::uint8_t>(i % 8), 0, std::chrono::milliseconds(200), 5);
        if (c.answered)
            us.push_back(bench::seconds_since(t0) * 1e6);
    }
    return us;
}

std::vector<double> request_times_unprotected(int n)
{
    TapNet net;
    if (!net.error().empty())
        throw std::runtime_error(net.error());
    DiskImage image(kDiskBytes);
    auto disk = devices::FileStore::open(image.path());
    engine::MachineSpec spec;
    spec.network = true;
    spec.disk_bytes = kDiskBytes;
    Vm vm(spec, net.cmdline());
    if (!vm.machine || !disk)
        throw std::runtime_error(vm.error);
    std::atomic<bool> stop{false};
    std::thread runner([&] {
        engine::Recorder rec(*vm.machine, 20'000, engine::HostIo{net.tap(), &*disk});
        std::vector<logformat::Entry> log;
        while (!stop) {
            if (!rec.run(32, log))
                return;
            log.clear();
        }
    });
    auto us = request_times(net, n);
    stop = true;
    runner.join();
    return us;
}

struct LoadFigures {
    std::vector<double> request_us; // protected, one client at a time
    double lag_p99_ms = 0;
    double log_mbit_s = 0, traffic_mbit_s = 0;
};

LoadFigures protected_load(int n)
{
    Pair p;
    LoadFigures f;
    f.request_us = request_times(p.rig.net, n);
    // Load: two clients; the lag sampled every 5 ms, the log rate every second.
    Clients clients(p.rig.net, 99);
    std::vector<double> lag, rate;
    const int answered0 = clients.answered;
    const auto t0 = Clock::now();
    auto next_rate = t0 + std::chrono::milliseconds(1500);
    while (bench::seconds_since(t0) < 6.5) {
        const auto s = p.primary->status();
        lag.push_back(s.lag_ms);
        if (Clock::now() >= next_rate) {
            rate.push_back(s.log_mbit_s);
            next_rate += std::chrono::seconds(1);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double secs = bench::seconds_since(t0);
    f.traffic_mbit_s = static_cast<double>(clients.answered - answered0) * kBytesPerCall * 8 / 1e6 / secs;
    clients.finish();
    f.lag_p99_ms = percentile(lag, 0.99);
    f.log_mbit_s = bench::median(rate);
    return f;
}

double idle_log_mbit_s()
{
    Pair p("mode=idle");
    std::vector<double> rate;
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    for (int i = 0; i < 5; ++i) {
        rate.push_back(p.primary->status().log_mbit_s);
        std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    return bench::median(rate);
}

double failover_ms(int run)
{
    Pair p;
    Clients clients(p.rig.net, 4000u + static_cast<unsigned>(run));
    if (!clients.wait_answered(30, 30))
        throw std::runtime_error("clients not answered before the failover");
    const std::uint64_t released0 = p.backup->status().released_outputs;
    const auto killed = Clock::now();
    p.primary.reset();
    // The backup's status refreshes every control-loop turn (~2 ms); poll finely.
    while (p.backup->status().released_outputs == released0) {
        if (bench::seconds_since(killed) > 10)
            throw std::runtime_error("no output from the new primary within 10 s");
        std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    const double ms = bench::seconds_since(killed) * 1000;
    clients.finish();
    return ms;
}

} // namespace

int main(int argc, char** argv)
{
    if (::geteuid() != 0 || !have_kvm() || !have_program("istgt")) {
        std::cout << "pair: skipped: needs root (TAP interfaces), /dev/kvm and istgt\n";
        return 0;
    }
    try {
        bench::Report report("pair");
        std::vector<double> with, without;
        for (int r = 0; r < kRuns; ++r) {
            without.push_back(cpu_exits_unprotected(5));
            with.push_back(cpu_exits_protected(5));
        }
        std::cout << "pair: medians of " << kRuns << " runs\n";
        report.add("ft_work_ratio", bench::median(with), "work (clock-read exits)/s", bench::median(without));

        std::vector<double> p50_ft, p99_ft, p50_noft, p99_noft, lag, load_log, traffic;
        for (int r = 0; r < kRuns; ++r) {
            const auto noft = request_times_unprotected(2000);
            const auto ft = protected_load(2000);
            p50_noft.push_back(percentile(noft, 0.5));
            p99_noft.push_back(percentile(noft, 0.99));
            p50_ft.push_back(percentile(ft.request_us, 0.5));
            p99_ft.push_back(percentile(ft.request_us, 0.99));
            lag.push_back(ft.lag_p99_ms);
            load_log.push_back(ft.log_mbit_s);
            traffic.push_back(ft.traffic_mbit_s);
        }
        const double b50 = bench::median(p50_noft), b99 = bench::median(p99_noft);
        report.add("output_commit_added_us_p50", bench::median(p50_ft) - b50, "us (request time, FT minus no FT)", b50);
        report.add("output_commit_added_us_p99", bench::median(p99_ft) - b99, "us (request time, FT minus no FT)", b99);
        report.add("backup_lag_ms_p99", bench::median(lag), "ms", std::nullopt);
        report.add("load_log_mbit_s", bench::median(load_log), "Mbit/s (guest UDP traffic as baseline)", bench::median(traffic));

        std::vector<double> idle;
        for (int r = 0; r < kRuns; ++r)
            idle.push_back(idle_log_mbit_s());
        report.add("idle_log_mbit_s", bench::median(idle), "Mbit/s (VMware FT idle guest as baseline)", 1.43);

        std::vector<double> failover;
        for (int r = 0; r < kFailovers; ++r)
            failover.push_back(failover_ms(r));
        report.add("failover_ms_p50", bench::median(failover), "ms (kill to first released output; goal as baseline)", 500.0);
        report.add("failover_ms_max", *std::max_element(failover.begin(), failover.end()), "ms", 500.0);
        return report.write(bench::out_dir(argc, argv)) ? 0 : 1;
    } catch (const std::exception& e) {
        std::cerr << "pair bench: " << e.what() << "\n";
        return 1;
    }
}
