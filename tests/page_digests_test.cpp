// Tests of the incremental memory digest (xenft/engine/page_digests.hpp): after a full sweep it
// equals a digest computed from scratch, two replicas with different dirty logs agree at every
// round, a round's work is the written pages plus the sweep, and a change no log named is
// found, by page, within one sweep.
#define BOOST_TEST_MODULE page_digests
#include <boost/test/unit_test.hpp>

#include <random>
#include <set>

#include "xenft/engine/page_digests.hpp"

using xenft::engine::PageDigests;

namespace {

constexpr std::size_t kPage = PageDigests::kPageBytes;

// Guest memory as the digest reads it: `pages` pages, some of them not populated.
struct Memory {
    explicit Memory(std::uint64_t pages, std::uint32_t seed) : bytes(pages * kPage), populated(pages, true)
    {
        std::mt19937 rng(seed);
        for (auto& b : bytes)
            b = static_cast<std::uint8_t>(rng());
    }
    PageDigests::PageReader reader() const
    {
        return [this](std::uint64_t gfn) {
            return populated[gfn] ? std::span<const std::uint8_t>(bytes.data() + gfn * kPage, kPage)
                                  : std::span<const std::uint8_t>();
        };
    }
    void write(std::uint64_t gfn, std::size_t offset, std::uint8_t value) { bytes[gfn * kPage + offset] = value; }
    std::vector<std::uint8_t> bytes;
    std::vector<bool> populated;
};

const std::vector<std::uint8_t> kRegisters = {1, 2, 3, 4};

// The digest of `m` from scratch: one round that sweeps everything.
xenft::logformat::Sha256 from_scratch(const Memory& m)
{
    PageDigests d(m.populated.size(), m.populated.size());
    d.update({}, m.reader());
    BOOST_REQUIRE_EQUAL(d.covered(), m.populated.size());
    return d.digest(kRegisters);
}

} // namespace

BOOST_AUTO_TEST_CASE(after_a_full_sweep_the_digest_equals_one_from_scratch)
{
    constexpr std::uint64_t pages = 1000; // not a multiple of a group
    Memory m(pages, 1);
    m.populated[7] = m.populated[300] = false;
    PageDigests d(pages, 64);
    std::mt19937 rng(2);
    for (int round = 0; round < 40; ++round) {
        std::vector<std::uint64_t> written;
        for (int w = 0; w < 20; ++w) {
            const std::uint64_t gfn = rng() % pages;
            m.write(gfn, rng() % kPage, static_cast<std::uint8_t>(rng()));
            written.push_back(gfn);
        }
        const auto r = d.update(written, m.reader());
        BOOST_TEST(r.unlogged == 0u);
        BOOST_TEST(r.swept == 64u);
        if (d.covered() == pages)
            BOOST_TEST(d.digest(kRegisters) == from_scratch(m), "round " << round);
    }
    BOOST_TEST(d.covered() == pages);
    // The registers and device state are part of it.
    BOOST_TEST(d.digest(std::vector<std::uint8_t>{1, 2, 3, 5}) != d.digest(kRegisters));
}

BOOST_AUTO_TEST_CASE(replicas_with_different_dirty_logs_agree_at_every_round)
{
    // The backup's log names pages the primary's did not (written with the same value, or
    // logged by a path the other side does not have); only content may count.
    constexpr std::uint64_t pages = 2048;
    Memory primary(pages, 3), backup(pages, 3);
    PageDigests dp(pages, 100), db(pages, 100);
    std::mt19937 rng(4);
    for (int round = 0; round < 50; ++round) {
        std::vector<std::uint64_t> wp, wb;
        for (int w = 0; w < 30; ++w) {
            const std::uint64_t gfn = rng() % pages;
            const auto offset = rng() % kPage;
            const auto value = static_cast<std::uint8_t>(rng());
            primary.write(gfn, offset, value);
            backup.write(gfn, offset, value);
            wp.push_back(gfn);
            wb.push_back(gfn);
            wb.push_back(rng() % pages); // unchanged, but logged
            wb.push_back(pages + 5);     // beyond the guest: ignored
        }
        dp.update(wp, primary.reader());
        db.update(wb, backup.reader());
        BOOST_TEST(dp.digest(kRegisters) == db.digest(kRegisters), "round " << round);
        BOOST_TEST(dp.covered() == db.covered());
    }
}

BOOST_AUTO_TEST_CASE(a_round_hashes_the_written_pages_and_the_sweep_only)
{
    constexpr std::uint64_t pages = 4096;
    Memory m(pages, 5);
    PageDigests d(pages, 256);
    for (int round = 0; round < 16; ++round)
        d.update({}, m.reader());
    BOOST_TEST(d.covered() == pages);
    const std::vector<std::uint64_t> written = {1, 2, 3, 4000};
    for (auto gfn : written)
        m.write(gfn, 9, 0x5a);
    const auto r = d.update(written, m.reader());
    BOOST_TEST(r.written == written.size());
    BOOST_TEST(r.swept == 256u);
    BOOST_TEST(r.unlogged == 0u);
    BOOST_TEST(d.digest(kRegisters) == from_scratch(m));
}

BOOST_AUTO_TEST_CASE(pages_the_sweep_has_not_reached_count_once_it_does)
{
    constexpr std::uint64_t pages = 1024;
    Memory m(pages, 6);
    PageDigests d(pages, 256);
    d.update({}, m.reader());
    BOOST_TEST(d.covered() == 256u);
    const auto before = d.digest(kRegisters);
    m.write(900, 0, static_cast<std::uint8_t>(m.bytes[900 * kPage] + 1)); // beyond the sweep
    const std::vector<std::uint64_t> written = {900};
    const auto r = d.update(written, m.reader());
    BOOST_TEST(r.written == 0u); // hashed when the sweep gets there
    BOOST_TEST(d.covered() == 512u);
    BOOST_TEST(d.digest(kRegisters) != before); // 256 more pages count now
    d.update({}, m.reader());
    d.update({}, m.reader());
    BOOST_TEST(d.digest(kRegisters) == from_scratch(m));
}

BOOST_AUTO_TEST_CASE(a_change_no_log_named_is_found_by_the_sweep_and_named)
{
    constexpr std::uint64_t pages = 2000, sweep = 128;
    Memory primary(pages, 7), backup(pages, 7);
    PageDigests dp(pages, sweep), db(pages, sweep);
    const std::uint64_t rounds_per_sweep = (pages + sweep - 1) / sweep;
    for (std::uint64_t i = 0; i < rounds_per_sweep; ++i) {
        dp.update({}, primary.reader());
        db.update({}, backup.reader());
    }
    BOOST_REQUIRE(dp.digest(kRegisters) == db.digest(kRegisters));
    // A bit error in the backup's RAM: nothing logs it.
    backup.bytes[1999 * kPage + 17] ^= 0x10;
    std::set<std::uint64_t> named;
    std::uint64_t found_after = 0;
    for (std::uint64_t i = 1; i <= rounds_per_sweep && found_after == 0; ++i) {
        dp.update({}, primary.reader());
        const auto r = db.update({}, backup.reader());
        named.insert(r.unlogged_pages.begin(), r.unlogged_pages.end());
        if (dp.digest(kRegisters) != db.digest(kRegisters))
            found_after = i;
    }
    BOOST_TEST(found_after != 0u, "the sweep never reached the changed page");
    BOOST_TEST(named == std::set<std::uint64_t>{1999});
    BOOST_TEST_MESSAGE("the unlogged change was found after " << found_after << " of " << rounds_per_sweep << " rounds");
}

BOOST_AUTO_TEST_CASE(a_page_that_becomes_populated_changes_the_digest)
{
    constexpr std::uint64_t pages = 300;
    Memory m(pages, 8);
    m.populated[42] = false;
    PageDigests d(pages, pages);
    d.update({}, m.reader());
    const auto without = d.digest(kRegisters);
    m.populated[42] = true;
    const std::vector<std::uint64_t> written = {42};
    d.update(written, m.reader());
    BOOST_TEST(d.digest(kRegisters) != without);
    BOOST_TEST(d.digest(kRegisters) == from_scratch(m));
}

BOOST_AUTO_TEST_CASE(an_empty_guest_has_a_digest_of_its_registers)
{
    PageDigests d(0);
    const auto r = d.update({}, [](std::uint64_t) { return std::span<const std::uint8_t>(); });
    BOOST_TEST(r.swept == 0u);
    BOOST_TEST(d.digest(kRegisters) != d.digest({}));
}
