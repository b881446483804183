// The output gate of the primary (ARCHITECTURE.md, "Protocol rules": the output rule). Frames
// the guest transmits and writes it makes to the shared disk are held, each tagged with the
// sequence number of the log entry that records it, until the protocol core says the backup
// has acked that entry (release_through); then they leave in the order the guest produced
// them. While writes are held, the guest's own reads see them (read-your-writes), as a disk
// with a write cache would show them.
//
// A primary running alone releases at once (set_passthrough); one that loses arbitration
// discards what it holds: nothing it held was ever seen outside.
//
// Disk writes and failover: a write the backup acked may still be held here when this host
// dies. The backup replayed the same write, keeps the last RecentWrites::kKept of them and
// writes them again, in order, when it goes live (writes are idempotent in order). To keep that
// window exact the gate never holds more than kMaxHeldWrites writes (plus one device request's
// worth: a virtqueue of at most 256): the VM stalls (full()) until acks make room. Where the
// primary tells its backup how many writes it has performed (writes_performed(); the Xen
// backend logs it as a writes_done entry), the backup forgets those, and going live writes
// again only the rest: the held ones and those performed since the last count.
//
// Thread-safe: the VM thread adds outputs and reads, the protocol thread releases.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "xenft/common/expected.hpp"
#include "xenft/devices/host_io.hpp"
#include "xenft/devices/virtio_blk.hpp"
#include "xenft/devices/virtio_net.hpp"

namespace xenft::engine {

class OutputGate {
public:
    static constexpr std::size_t kMaxHeldWrites = 1024;

    // Frames go to `net`, writes to `disk`; either may be null (no such device).
    OutputGate(devices::NetTransmit* net, devices::BlockPort* disk) : net_(net), disk_(disk) {}

    void hold_frame(std::uint64_t seq, std::span<const std::uint8_t> frame);
    void hold_write(std::uint64_t seq, std::uint64_t offset, std::span<const std::uint8_t> data);
    // Reads the disk with every held write applied on top.
    bool read(std::uint64_t offset, std::span<std::uint8_t> out);
    bool flush();

    // Sends every held output with seq <= through, oldest first. False if a disk write failed
    // (the write is dropped and counted; the guest already got its completion).
    bool release_through(std::uint64_t seq);
    // From now on outputs leave at once (a primary alone); releases what is held first.
    void set_passthrough(bool on);
    // Drops everything held (the VM is being halted for good). Returns how many outputs.
    std::size_t discard_all();

    std::size_t held() const;
    // Too many writes held: the VM must wait for acks before producing more.
    bool full() const;
    std::uint64_t released() const;
    std::uint64_t write_errors() const;
    // Writes given to the gate so far, and how many of them, from the first, have reached the
    // disk: a write that failed or was discarded ends that count for good (the backup, going
    // live, then writes again the last kKept, as without a count).
    std::uint64_t writes_given() const;
    std::uint64_t writes_performed() const;

private:
    struct Held {
        std::uint64_t seq;
        bool is_write;
        std::uint64_t offset;
        std::vector<std::uint8_t> bytes;
    };
    bool send(const Held& h); // with mu_ held

    devices::NetTransmit* net_;
    devices::BlockPort* disk_;
    mutable std::mutex mu_;
    std::deque<Held> held_;
    std::size_t held_writes_ = 0;
    bool passthrough_ = false;
    std::uint64_t released_ = 0, write_errors_ = 0;
    std::uint64_t writes_given_ = 0, writes_performed_ = 0;
    bool writes_broken_ = false; // a write failed or was discarded: writes_performed_ stays
};

// The backup's side of the rule above: the disk writes its replay made (and did not perform:
// the primary's gate performs them), the last kKept of them, written again when it goes live.
class RecentWrites {
public:
    static constexpr std::size_t kKept = 2048;
    static_assert(kKept >= OutputGate::kMaxHeldWrites + 256, "the window must cover every write a gate can hold");

    void add(std::uint64_t offset, std::span<const std::uint8_t> data);
    // The primary performed the first `count` writes add() was given (the writes_done log
    // entry): they are forgotten, now and when their replay adds them later.
    void performed_through(std::uint64_t count);
    std::size_t kept() const noexcept { return writes_.size(); }
    // Writes them to `disk` in order (a write a later one replaces exactly, same place and
    // length, is skipped: the disk ends the same) and forgets them. Returns how many were
    // written, or the first failure.
    Expected<std::size_t, std::string> reissue(devices::BlockPort& disk);

private:
    struct Write {
        std::uint64_t number; // 1 for the first add()
        std::uint64_t offset;
        std::vector<std::uint8_t> bytes;
    };
    std::deque<Write> writes_;
    std::uint64_t added_ = 0, performed_ = 0;
};

} // namespace xenft::engine
