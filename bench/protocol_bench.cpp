// Protocol simulation benchmark: how many complete fault schedules (1.5 simulated seconds each)
// the simulation runs per second, against a baseline of schedules with no faults at all, so the
// ratio shows what fault handling costs. (detect_ms_p50, measured between network namespaces,
// comes with the UDP failure detector.)
#include "bench/report.hpp"
#include "tests/protocol_sim.hpp"

int main(int argc, char** argv)
{
    const std::string dir = xenft::bench::out_dir(argc, argv);
    xenft::bench::Report report("protocol");
    constexpr int kRuns = 5;
    constexpr std::uint64_t kSchedules = 1000;

    std::vector<double> faulty, calm;
    for (int run = 0; run < kRuns; ++run) {
        xenft::sim::Options opt;
        auto t = std::chrono::steady_clock::now();
        for (std::uint64_t s = 1; s <= kSchedules; ++s)
            if (!xenft::sim::run_schedule(s, opt).violation.empty()) {
                std::cerr << "protocol bench: schedule " << s << " violated an invariant\n";
                return 1;
            }
        faulty.push_back(static_cast<double>(kSchedules) / xenft::bench::seconds_since(t));

        // Baseline: the same simulation with a perfect network and no faults scheduled.
        opt.drop = opt.duplicate = opt.late = 0;
        opt.calm = true;
        t = std::chrono::steady_clock::now();
        for (std::uint64_t s = 1; s <= kSchedules; ++s)
            (void)xenft::sim::run_schedule(s, opt);
        calm.push_back(static_cast<double>(kSchedules) / xenft::bench::seconds_since(t));
    }
    std::cout << "protocol: " << kSchedules << " schedules per run, median of " << kRuns << " runs\n";
    report.add("schedules_per_s", xenft::bench::median(faulty), "schedules/s", xenft::bench::median(calm));
    return report.write(dir) ? 0 : 1;
}
