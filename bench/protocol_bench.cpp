// Protocol simulation benchmark: how many complete fault schedules (1.5 simulated seconds each)
// the simulation runs per second, against a baseline of schedules with no faults at all, so the
// ratio shows what fault handling costs; and detect_ms_p50, the time from silencing the primary
// to the backup's suspicion between two network namespaces (measured by
// tests/detector_netns_test.sh --bench, passed in with --detect-samples FILE), against the
// configured suspect timeout.
#include <fstream>

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

    std::vector<double> detect;
    for (int i = 1; i + 1 < argc; ++i)
        if (std::string(argv[i]) == "--detect-samples") {
            std::ifstream in(argv[i + 1]);
            for (double ms; in >> ms;)
                detect.push_back(ms);
        }
    const double timeout_ms = static_cast<double>(xenft::protocol::Config{}.suspect_timeout) / 1000;
    if (detect.empty())
        std::cout << "  detect_ms_p50: no samples (the netns measurement needs root, ip and nft)\n";
    else
        report.add("detect_ms_p50", xenft::bench::median(detect), "ms", timeout_ms);
    return report.write(dir) ? 0 : 1;
}
