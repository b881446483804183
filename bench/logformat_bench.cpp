// Log format benchmark: encode and decode throughput against memcpy of the same bytes, and the
// encoded size of an idle guest's log against a naive fixed 32-byte record.
#include <cstring>

#include "bench/report.hpp"
#include "xenft/logformat/stream.hpp"
#include "xenft/logformat/synthetic.hpp"

using namespace xenft;
using namespace xenft::logformat;

namespace {

constexpr int kRuns = 7;
constexpr double kNaiveRecordBytes = 32;

// Keeps the optimizer from discarding work whose result is unused.
volatile std::size_t g_sink;

} // namespace

int main(int argc, char** argv)
{
    const std::string dir = bench::out_dir(argc, argv);
    bench::Report report("logformat");

    // A mixed workload: every kind, with network frames and DMA making up most of the bytes.
    const auto log = mixed_log(200'000, 42);
    const auto encoded = encode_frames(log, 256);
    const double mb = static_cast<double>(encoded.size()) / 1e6;
    std::cout << "logformat: " << log.size() << " mixed entries, " << encoded.size() << " encoded bytes, median of "
              << kRuns << " runs\n";

    std::vector<double> enc_s, dec_s, copy_s;
    std::vector<std::uint8_t> copy(encoded.size());
    for (int run = 0; run < kRuns; ++run) {
        auto t = std::chrono::steady_clock::now();
        g_sink = encode_frames(log, 256).size();
        enc_s.push_back(bench::seconds_since(t));

        t = std::chrono::steady_clock::now();
        auto frames = decode_frames(encoded);
        dec_s.push_back(bench::seconds_since(t));
        if (!frames) {
            std::cerr << "logformat bench: decode failed: " << frames.error().message() << "\n";
            return 1;
        }
        g_sink = frames->size();

        t = std::chrono::steady_clock::now();
        std::memcpy(copy.data(), encoded.data(), encoded.size());
        g_sink = copy[copy.size() / 2];
        copy_s.push_back(bench::seconds_since(t));
    }
    const double memcpy_mb_s = mb / bench::median(copy_s);
    report.add("encode_mb_s", mb / bench::median(enc_s), "MB/s", memcpy_mb_s);
    report.add("decode_mb_s", mb / bench::median(dec_s), "MB/s", memcpy_mb_s);

    // An idle guest: a 1 kHz timer interrupt and a clock read per tick, 60 s of it.
    const auto idle = idle_guest_log(60'000, 1000, 7);
    const auto idle_bytes = encode_frames(idle, 256);
    const double per_entry = static_cast<double>(idle_bytes.size()) / static_cast<double>(idle.size());
    report.add("bytes_per_entry_idle", per_entry, "bytes", kNaiveRecordBytes);
    return report.write(dir) ? 0 : 1;
}
