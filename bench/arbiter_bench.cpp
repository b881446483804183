// Arbiter benchmark against real targets started here: the latency of a whole test-and-set as
// the protocol waits for it (read the record, then COMPARE AND WRITE on istgt; the PREEMPT
// fallback on tgt), against a plain 1-block READ on the same target in the same run.
#include "bench/report.hpp"
#include "tests/iscsi_fixture.hpp"
#include "xenft/arbiter/arbiter.hpp"

using namespace xenft;
using namespace xenft::arbiter;

namespace {

constexpr int kRounds = 1000;

ArbiterConfig config(const std::string& url, std::uint32_t host, std::uint32_t peer)
{
    ArbiterConfig c;
    c.lun.url = url;
    c.lun.initiator_name = "iqn.2026-11.bench.xenft:host" + std::to_string(host);
    c.lun.isid_qualifier = static_cast<std::uint16_t>(host);
    c.vm_id = 1;
    c.host_id = host;
    c.peer_id = peer;
    c.fencing = false; // the test-and-set alone
    return c;
}

double pct(std::vector<double> v, double p)
{
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

bool measure(testing::Target& t, const std::string& name, bench::Report& report)
{
    auto a = Arbiter::open(config(t.url(), 1, 2));
    auto b = Arbiter::open(config(t.url(), 2, 1));
    if (!a || !b || !a->init(1, true)) {
        std::cerr << "arbiter bench: " << name << ": " << (!a ? a.error() : !b ? b.error() : "init failed") << "\n";
        return false;
    }
    std::vector<double> tas, reads;
    std::uint64_t epoch = 1;
    std::uint32_t owner = 0;
    std::vector<std::uint8_t> block;
    for (int i = 0; i < kRounds; ++i) {
        Arbiter& me = i % 2 ? *b : *a;
        Arbiter& other = i % 2 ? *a : *b;
        // Both hosts registered, as at the start of a protected run (the fallback's PREEMPT removes
        // the other's key; a real loser would halt, here it rejoins for the next round).
        (void)me.register_key();
        (void)other.register_key();
        auto t0 = std::chrono::steady_clock::now();
        const auto r = me.acquire(epoch, owner);
        tas.push_back(bench::seconds_since(t0) * 1e6);
        if (r.outcome != Outcome::won) {
            std::cerr << "arbiter bench: " << name << ": round " << i << " " << outcome_name(r.outcome) << ": " << r.detail << "\n";
            return false;
        }
        epoch = r.holder.epoch;
        owner = r.holder.owner;
        t0 = std::chrono::steady_clock::now();
        (void)me.lun().read(100, block);
        reads.push_back(bench::seconds_since(t0) * 1e6);
    }
    std::cout << "arbiter on " << name << " (" << (a->capabilities().compare_and_write ? "COMPARE AND WRITE" : "PREEMPT fallback")
              << "): " << kRounds << " test-and-sets\n";
    report.add("tas_p50_us_" + name, pct(tas, 0.5), "us", pct(reads, 0.5));
    report.add("tas_p99_us_" + name, pct(tas, 0.99), "us", pct(reads, 0.99));
    return true;
}

} // namespace

int main(int argc, char** argv)
{
    const std::string dir = bench::out_dir(argc, argv);
    bench::Report report("arbiter");
    bool ok = true;
    if (testing::have_program("istgt")) {
        testing::Istgt t;
        ok = measure(t, "istgt", report) && ok;
    } else {
        std::cout << "arbiter bench: istgt not installed, skipped\n";
    }
    if (testing::have_program("tgtd")) {
        testing::Tgtd t;
        ok = measure(t, "tgt", report) && ok;
    } else {
        std::cout << "arbiter bench: tgt not installed, skipped\n";
    }
    return report.write(dir) && ok ? 0 : 1;
}
