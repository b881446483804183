// Tests of the output gate's disk writes and the backup's kept writes (xenft/engine/
// output_gate.hpp): what the gate counts as performed (a prefix, ended for good by a failed or
// discarded write), and what a backup going live writes again with and without the primary's
// count (writes_done): never a write the primary may not have made, and the disk ends the same.
#define BOOST_TEST_MODULE output_gate
#include <boost/test/unit_test.hpp>

#include <map>
#include <vector>

#include "xenft/engine/output_gate.hpp"

using xenft::engine::OutputGate;
using xenft::engine::RecentWrites;

namespace {

// A disk of 512-byte blocks in memory, recording each write; `fail_at` makes that write fail.
struct Disk final : xenft::devices::BlockPort {
    std::map<std::uint64_t, std::vector<std::uint8_t>> at; // offset -> bytes of the last write there
    std::vector<std::uint64_t> writes;                    // offsets, in order
    std::size_t fail_at = ~std::size_t{0};
    bool read(std::uint64_t offset, std::span<std::uint8_t> out) override
    {
        auto it = at.find(offset);
        std::fill(out.begin(), out.end(), 0);
        if (it != at.end())
            std::copy_n(it->second.begin(), std::min(out.size(), it->second.size()), out.begin());
        return true;
    }
    bool write(std::uint64_t offset, std::span<const std::uint8_t> data) override
    {
        if (writes.size() == fail_at) {
            fail_at = ~std::size_t{0};
            return false;
        }
        writes.push_back(offset);
        at[offset].assign(data.begin(), data.end());
        return true;
    }
    bool flush() override { return true; }
};

std::vector<std::uint8_t> block(std::uint8_t fill) { return std::vector<std::uint8_t>(512, fill); }

} // namespace

BOOST_AUTO_TEST_CASE(the_gate_counts_writes_performed_in_order_and_a_failure_ends_the_count)
{
    Disk disk;
    OutputGate gate(nullptr, &disk);
    for (std::uint64_t i = 1; i <= 5; ++i)
        gate.hold_write(i, i * 512, block(static_cast<std::uint8_t>(i)));
    BOOST_TEST(gate.writes_given() == 5u);
    BOOST_TEST(gate.writes_performed() == 0u); // held until acked
    gate.release_through(3);
    BOOST_TEST(gate.writes_performed() == 3u);
    disk.fail_at = disk.writes.size(); // the 4th write fails
    BOOST_TEST(!gate.release_through(5));
    BOOST_TEST(gate.writes_performed() == 3u);
    gate.set_passthrough(true);
    gate.hold_write(6, 6 * 512, block(6)); // reaches the disk, but after a lost one
    BOOST_TEST(disk.writes.size() == 5u);
    BOOST_TEST(gate.writes_performed() == 3u);
}

BOOST_AUTO_TEST_CASE(a_discarded_write_ends_the_count)
{
    Disk disk;
    OutputGate gate(nullptr, &disk);
    gate.set_passthrough(true);
    gate.hold_write(1, 0, block(1));
    gate.set_passthrough(false);
    gate.hold_write(2, 512, block(2));
    BOOST_TEST(gate.discard_all() == 1u);
    gate.set_passthrough(true);
    gate.hold_write(3, 1024, block(3));
    BOOST_TEST(gate.writes_given() == 3u);
    BOOST_TEST(gate.writes_performed() == 1u);
}

BOOST_AUTO_TEST_CASE(going_live_writes_again_only_what_the_primary_did_not_say_it_performed)
{
    // The primary's gate performed writes 1..6 of 10 and holds 7..10 when it dies; the backup
    // replayed all ten and heard "6 performed" (before or after replaying them).
    for (const bool count_first : {false, true}) {
        Disk primary_disk;
        OutputGate gate(nullptr, &primary_disk);
        RecentWrites kept;
        if (count_first)
            kept.performed_through(4); // an earlier count, taken before the replay got there
        for (std::uint8_t i = 1; i <= 10; ++i) {
            gate.hold_write(i, (i % 4) * 512, block(i)); // overlapping places: order matters
            if (count_first || i <= 8)
                kept.add((i % 4) * 512, block(i));
        }
        gate.release_through(6);
        kept.performed_through(gate.writes_performed());
        if (!count_first)
            for (std::uint8_t i = 9; i <= 10; ++i)
                kept.add((i % 4) * 512, block(i));
        BOOST_TEST(kept.kept() == 4u);
        Disk lun = primary_disk; // what the shared disk has at the cut
        lun.writes.clear();
        auto n = kept.reissue(lun);
        BOOST_TEST_REQUIRE(n.has_value());
        BOOST_TEST(*n == 4u);
        // The disk as if every write had been performed in order.
        Disk all;
        for (std::uint8_t i = 1; i <= 10; ++i)
            all.write((i % 4) * 512, block(i));
        BOOST_TEST((lun.at == all.at));
    }
}

BOOST_AUTO_TEST_CASE(without_a_count_the_last_kept_writes_are_written_again)
{
    RecentWrites kept;
    const std::size_t total = RecentWrites::kKept + 100;
    for (std::size_t i = 0; i < total; ++i)
        kept.add(i * 512, block(static_cast<std::uint8_t>(i)));
    BOOST_TEST(kept.kept() == RecentWrites::kKept);
    Disk lun;
    auto n = kept.reissue(lun);
    BOOST_TEST_REQUIRE(n.has_value());
    BOOST_TEST(*n == RecentWrites::kKept);
    BOOST_TEST(lun.writes.front() == 100u * 512);
}

BOOST_AUTO_TEST_CASE(a_count_never_goes_back)
{
    RecentWrites kept;
    for (std::uint8_t i = 1; i <= 6; ++i)
        kept.add(i * 512u, block(i));
    kept.performed_through(5);
    kept.performed_through(2); // a stale count changes nothing
    BOOST_TEST(kept.kept() == 1u);
}
