// The memory part of a replica's state digest at a cost proportional to what changed: a hash
// per page, a hash per group of pages, and a digest over the groups. Each round re-hashes the
// pages written since the last one (the caller's dirty log) and sweeps a fixed number more, so
// a change no log saw (a bit error, a write path not tracked) is found within one sweep.
//
// Both replicas must compute the same value for the same memory whatever their dirty logs
// said: a page counts only once the sweep has reached it (its hash taken fresh then), so what
// the digest covers depends only on the round number. docs/xen-backend.md has the figures.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "xenft/logformat/entry.hpp"

namespace xenft::engine {

class PageDigests {
public:
    static constexpr std::size_t kPageBytes = 4096;
    static constexpr std::size_t kPagesPerGroup = 256; // a group hash covers 1 MiB
    // Pages swept per round: 2 MiB, so a round's stall does not grow with the guest; a 32 MiB
    // guest is swept in 16 rounds, 512 MiB in 256.
    static constexpr std::uint64_t kSweepPages = 512;

    // Page `gfn`'s bytes (kPageBytes of them), or an empty span where the guest has no memory.
    using PageReader = std::function<std::span<const std::uint8_t>(std::uint64_t gfn)>;

    // What one round did.
    struct Round {
        std::uint64_t written = 0; // pages re-hashed because the dirty log named them
        std::uint64_t swept = 0;   // pages hashed by the sweep
        // Swept pages whose content had changed though no log named them since their last
        // hash: memory written behind every tracked path.
        std::uint64_t unlogged = 0;
        std::vector<std::uint64_t> unlogged_pages; // the first few of them
    };

    PageDigests(std::uint64_t pages, std::uint64_t sweep_pages = kSweepPages);

    // One round: re-hashes the pages of `written` the sweep has covered (others are hashed when
    // it reaches them), then sweeps the next pages. `written` may hold duplicates, pages out of
    // range (ignored) and pages that did not change; a duplicate is hashed twice.
    Round update(std::span<const std::uint64_t> written, const PageReader& read);
    // SHA-256 over the covered pages' group hashes, then `rest` (registers, device state).
    logformat::Sha256 digest(std::span<const std::uint8_t> rest) const;

    std::uint64_t pages() const noexcept { return page_hashes_.size(); }
    // Pages the sweep has reached at least once: all of them after the first full sweep.
    std::uint64_t covered() const noexcept { return covered_; }
    std::uint64_t rounds() const noexcept { return rounds_; }

private:
    bool rehash(std::uint64_t gfn, const PageReader& read); // true if its hash changed
    void rehash_group(std::uint64_t group);

    std::uint64_t sweep_pages_;
    std::vector<logformat::Sha256> page_hashes_;  // zero: not populated or not covered yet
    std::vector<logformat::Sha256> group_hashes_;
    std::vector<bool> group_stale_;
    std::uint64_t covered_ = 0, cursor_ = 0, rounds_ = 0;
};

} // namespace xenft::engine
