// State digest benchmark: what one digest of a guest's memory costs (the vCPU waits for it) with
// the incremental digest (engine::PageDigests: the pages written since the last one, plus the
// sweep) against the full-memory SHA-256 xenft took before, of the same memory in the same run,
// for the test guest's 32 MiB and a Linux guest's 256 and 512 MiB, with 64 written pages.
#include <random>

#include "bench/report.hpp"
#include "xenft/engine/page_digests.hpp"

#include <openssl/evp.h>

using namespace xenft;

namespace {

constexpr int kRuns = 7;
constexpr std::uint64_t kWrittenPages = 64; // an idle guest's second, about (docs/xen-backend.md)
constexpr std::size_t kPage = engine::PageDigests::kPageBytes;

volatile std::uint8_t g_sink;

// The old digest: SHA-256 over every page's number and contents.
double full_digest_s(const std::vector<std::uint8_t>& memory)
{
    const auto t = std::chrono::steady_clock::now();
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    for (std::uint64_t gfn = 0; gfn < memory.size() / kPage; ++gfn) {
        EVP_DigestUpdate(ctx, &gfn, sizeof gfn);
        EVP_DigestUpdate(ctx, memory.data() + gfn * kPage, kPage);
    }
    unsigned char out[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx, out, &n);
    EVP_MD_CTX_free(ctx);
    g_sink = out[0];
    return bench::seconds_since(t);
}

} // namespace

int main(int argc, char** argv)
{
    const std::string dir = bench::out_dir(argc, argv);
    bench::Report report("digest");
    std::mt19937_64 rng(11);
    std::cout << "digest: one state digest's memory part, " << kWrittenPages << " pages written since the last, "
              << engine::PageDigests::kSweepPages << " swept; median of " << kRuns << " runs\n";
    for (std::uint64_t mib : {32u, 256u, 512u}) {
        std::vector<std::uint8_t> memory(mib << 20);
        for (std::size_t i = 0; i < memory.size(); i += 8)
            memory[i] = static_cast<std::uint8_t>(rng());
        const std::uint64_t pages = memory.size() / kPage;
        engine::PageDigests digests(pages);
        auto read = [&memory](std::uint64_t gfn) { return std::span<const std::uint8_t>(memory.data() + gfn * kPage, kPage); };
        // Past the first sweep, as a protected guest is after its first minutes.
        for (std::uint64_t swept = 0; swept < pages; swept += engine::PageDigests::kSweepPages)
            digests.update({}, read);
        std::vector<double> full_s, incremental_s;
        const std::vector<std::uint8_t> registers(256, 1);
        for (int run = 0; run < kRuns; ++run) {
            full_s.push_back(full_digest_s(memory));
            std::vector<std::uint64_t> written;
            for (std::uint64_t i = 0; i < kWrittenPages; ++i) {
                const std::uint64_t gfn = rng() % pages;
                memory[gfn * kPage + rng() % kPage] ^= 1;
                written.push_back(gfn);
            }
            const auto t = std::chrono::steady_clock::now();
            digests.update(written, read);
            g_sink = digests.digest(registers)[0];
            incremental_s.push_back(bench::seconds_since(t));
        }
        const double full_ms = bench::median(full_s) * 1e3;
        report.add("digest_ms_" + std::to_string(mib) + "mib", bench::median(incremental_s) * 1e3, "ms", full_ms);
    }
    return report.write(dir) ? 0 : 1;
}
