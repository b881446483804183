// A protected domain on Xen: xenft's device models (device_model.hpp) and hvm-patches' record
// and replay (ft_log.hpp) driven together, the primary's side (RecordingDomain) and the
// backup's (ReplayingDomain). What moves between them is a XenLog: the hypervisor's records
// as Xen wrote them, and what xenft's device models did at the domain's ioreqs.
//
// Why device events happen only at ioreqs: an ioreq is the one moment dom0 knows exactly
// where the vCPU is (stopped at synchronous exit N, waiting for the answer). So the primary
// hands a frame from the TAP to the NIC, injects the NIC's MSI and takes a state digest only
// there, and logs each with N. The hypervisor logs the MSI as an injection at N like any other.
//
// The backup gets no ioreq for a read (Xen answers it from the log), only for writes. So a
// device event at a read exit N is applied once the backup's vCPU has consumed N's logged
// value and waits before re-entering the guest (nothing after N is published yet); one at a
// write exit is applied in the backup's ioreq for N, in the primary's order: digest, the write,
// frames, interrupts.
//
// The backup starts from a live copy of the primary (copy_to / await_copy): memory in rounds
// while the guest runs (Xen's log-dirty mode), then the last round's pages, the disk blocks
// the primary wrote, Xen's HVM context and the device models' state while the primary's vCPU
// waits in an ioreq. Xen counts the backup's exits from 0 there, so
// the backup adds the copy's exit (exit_base) to its own count everywhere it meets the log.
// Docs: docs/xen-backend.md.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "xenft/backends/xen/device_model.hpp"
#include "xenft/backends/xen/dirty_log.hpp"
#include "xenft/backends/xen/ft_log.hpp"
#include "xenft/backends/xen/state_digests.hpp"
#include "xenft/backends/xen/xen_log.hpp"
#include "xenft/channel/copy.hpp"
#include "xenft/engine/linux_image.hpp"
#include "xenft/engine/output_gate.hpp"
#include "xenft/logformat/entry.hpp"

namespace xenft::backends::xen {

struct FtSpec {
    DeviceModelSpec devices;
    unsigned ring_pages = 16;
    // The primary takes a digest at its first write ioreq this long after the previous one.
    std::uint64_t digest_interval_ms = 1000;
    // start() unpauses the domain. False when the toolstack does: `xl create` with ft= runs
    // xenft's hook, then unpauses (Xen refuses a second unpause of a running domain).
    bool unpause = true;
    // The domain carries a pause of xenft's already (a replica that halted on this host paused
    // it, and a backup now takes a copy into it): await_copy() holds that one instead of adding
    // another (Xen counts pauses; apply_copy() takes one back).
    bool paused_by_xenft = false;
    // start() lays this kernel into the domain and sets vCPU 0 at its entry before FT begins
    // (linux_boot.hpp): a plain virtual PC (device_model_version = "none") whose firmware
    // never runs. Both replicas of a pair that starts together boot the same image; a backup
    // that takes a live copy boots nothing.
    std::shared_ptr<const engine::LinuxImage> linux_image;
};

// The last state digest a replica took (primary) or matched (backup), where, and its cost.
struct DigestAt {
    std::uint64_t exit = 0; // 0: none yet
    DigestTaken taken;
};

using channel::CopySink;

// What the primary's last live copy did.
struct CopyOutcome {
    bool ok = false;
    std::string error;
    std::uint64_t items = 0;  // log items before the copy point: the copy covers them
    std::uint64_t exit = 0;   // the copy is the state after this exit
    std::uint64_t pages = 0;  // sent in all rounds (a page written again is sent again)
    unsigned rounds = 0;      // while the guest ran
    std::uint64_t final_pages = 0, disk_blocks = 0; // in the final pause
    std::uint64_t pause_ms = 0; // the vCPU waited this long at the copy point
    std::uint64_t ms = 0;       // the whole copy
};

class ReplayingDomain;

class RecordingDomain {
public:
    // The domain must be paused (xl create -p, or the xl hook); start() unpauses it unless
    // spec.unpause is false.
    static Expected<std::unique_ptr<RecordingDomain>, std::string> start(std::uint32_t domid, const FtSpec& spec);
    // A backup that went live, recorded again from here on (Xen's FT mode is off once a
    // domain left replay, and a paused domain may enter RECORD again), running alone: outputs
    // leave at once, no digests. So a new backup can take a live copy of it. On an error the
    // domain stays live in `live`, unrecorded.
    static Expected<std::unique_ptr<RecordingDomain>, std::string> record_again(ReplayingDomain& live, const FtSpec& spec);

    // Waits up to timeout_ms for Xen, the TAP or the ioreq, then appends what is ready to
    // `log`: the ring's records of passed exits (and a progress record), device events.
    // An error when the domain crashed or Xen's log is out of order.
    // A replay that holds items it cannot publish (and is not waiting for the rest of an
    // exit's items) while the vCPU makes no exit for kReplayStuckSeconds is stuck (the vCPU
    // and this side each wait for the other): an error
    // that says what each waits for, so the node halts this backup and it rejoins by a copy.
    static constexpr int kReplayStuckSeconds = 30;
    Expected<bool, std::string> step(XenLog& log, int timeout_ms);
    // What the replay waits for now, for status and for the stuck error above: the exit it is
    // at, a pending ioreq or read value, the ring, the next item of `log` not published.
    std::string replay_state(const XenLog& log) const;
    // The backup has received the first `items` items ever appended: outputs they cover leave.
    void acked(std::uint64_t items) { gate_.release_through(items); }
    // The backup is gone and this host won the arbitration: outputs leave at once from now on
    // (the log still fills; the caller drops it until a new backup joins).
    // No digests either: nobody compares them, and each stalls the guest.
    void continue_alone()
    {
        gate_.set_passthrough(true);
        stop_digests();
    }
    // No backup has the domain yet (it will get a live copy): outputs wait, but no digests
    // (nobody would compare them).
    void await_backup() { stop_digests(); }
    // A backup has the copy: outputs wait for its acks, digests are taken (the first one
    // starts their dirty tracking, once the copy has given log-dirty mode back).
    void protected_by_backup()
    {
        gate_.set_passthrough(false);
        digests_on_ = true;
    }
    // A live copy to a new backup: all memory while the guest runs, then round by round the
    // pages written meanwhile (Xen's log-dirty mode, and the device models' DMA), each round
    // sent as the channel has room between the domain's ioreqs. Once a round is small, the
    // last pages and the rest of the state go at the next ioreq where the vCPU's state is
    // whole: an MMIO access (the instruction has not retired; Xen executes it again when the
    // backup's vCPU resumes, so the copy is the state after exit N - 1), or a port write (it
    // has retired: the state after exit N). The vCPU waits in that ioreq until the backup
    // applied the copy.
    void copy_to(CopySink& sink);
    bool copying() const noexcept { return copy_.has_value(); }
    void cancel_copy();
    // The outcome of the last copy, once.
    std::optional<CopyOutcome> take_copy_outcome() { return std::exchange(copy_outcome_, std::nullopt); }
    // The peer runs the VM now (it won the test-and-set): this copy must not run on.
    Expected<bool, std::string> pause() { return dm_->control().pause(dm_->domid()); }
    std::optional<std::string> ended() const { return dm_->ended(); }
    std::optional<DomainEnd> end_state() const { return dm_->end_state(); }
    // What step() waits on, for a caller that waits on both replicas at once.
    std::vector<int> wait_fds() const;

    std::uint64_t appended() const noexcept { return appended_; }
    // Outputs the guest made since the start (held or not): its NIC's frames and, with the
    // disk on the shared LUN, its disk writes.
    std::uint64_t outputs_made() const noexcept { return outputs_made_; }
    // The gate holds as many disk writes as a backup can re-issue: the domain must wait for
    // acks before it makes more (its next ioreq is not answered until then).
    bool outputs_full() const { return gate_.full(); }
    std::uint64_t disk_reads_logged() const noexcept { return disk_reads_; }
    // Interrupts raised only to get an idle guest to make an ioreq (step()).
    std::uint64_t nudges() const noexcept { return nudges_; }
    // Every held output the backup has not acked is dropped (this replica halts).
    std::size_t discard_outputs() { return gate_.discard_all(); }
    // Outputs waiting for the backup's ack (the channel then asks it to ack at once).
    std::size_t outputs_held() const { return gate_.held(); }
    std::uint64_t exits() const { return session_->ring().exits(); }
    std::uint64_t frames_in() const noexcept { return frames_in_; }
    // Outputs released: frames, and disk writes with the disk on the shared LUN.
    std::uint64_t frames_out() const { return gate_.released(); }
    std::uint64_t digests() const noexcept { return digests_; }
    // How many disk writes the gate has performed since the last live copy's final state,
    // when that count has moved on by kWritesDoneStep or kWritesDoneMs have passed since the
    // last one: the caller logs it (a writes_done entry), so the backup, going live, writes
    // again only the writes the primary may not have made. Nothing before a copy.
    static constexpr std::uint64_t kWritesDoneStep = 64, kWritesDoneMs = 100;
    std::optional<std::uint64_t> writes_done_to_log();
    const DigestAt& last_digest() const noexcept { return last_digest_; }
    std::uint64_t records() const noexcept { return records_; }
    const std::string& console() const { return dm_->console(); }

private:
    RecordingDomain(std::unique_ptr<XenDeviceModel> dm, std::unique_ptr<FtSession> session, const FtSpec& spec);
    Expected<bool, std::string> take_records(XenLog& log, bool stopped);
    Expected<bool, std::string> at_ioreq(IoAccess& a, XenLog& log);
    void append(XenLog& log, XenLogItem item);
    // Logs a device event at the ioreq being answered (exit, read or write, address).
    void log_event(DeviceEvent e);
    struct CopyRun {
        CopySink* sink = nullptr;
        std::optional<DirtyLog> dirty; // on from the first round to the end
        std::vector<std::uint64_t> pending; // this round's pages
        std::size_t sent = 0;               // of pending
        bool final_due = false;             // pending is the last round's: at the next copy point
        std::uint64_t began_ms = 0;
        CopyOutcome outcome;
    };
    void advance_copy();
    void copy_final(std::uint64_t exit);
    Expected<bool, std::string> send_final(CopyRun& c, std::uint64_t exit);
    Expected<bool, std::string> send_pages(CopyRun& c, std::span<const std::uint64_t> pages, bool wait);
    void end_copy(Expected<bool, std::string> result);
    void stop_digests()
    {
        digests_on_ = false;
        state_digests_.reset(); // log-dirty mode off, for a live copy
    }

    // The NIC's frames go through the gate, each tagged with the log position it follows.
    class GatedTransmit final : public devices::NetTransmit {
    public:
        explicit GatedTransmit(RecordingDomain& d) : d_(d) {}
        void transmit(std::span<const std::uint8_t> frame) override
        {
            ++d_.outputs_made_;
            d_.gate_.hold_frame(d_.appended_, frame);
        }

    private:
        RecordingDomain& d_;
    };
    // The disk on the shared LUN as the primary's guest sees it: reads through the gate (the
    // guest sees its held writes) and logged with the data, for the backup, which cannot read
    // the LUN at the same moment; writes held in the gate like frames.
    class LoggedDisk final : public devices::BlockPort {
    public:
        explicit LoggedDisk(RecordingDomain& d) : d_(d) {}
        bool read(std::uint64_t offset, std::span<std::uint8_t> out) override;
        bool write(std::uint64_t offset, std::span<const std::uint8_t> data) override;
        bool flush() override { return d_.gate_.flush(); }

    private:
        RecordingDomain& d_;
    };

    std::unique_ptr<XenDeviceModel> dm_;
    std::unique_ptr<FtSession> session_;
    FtSpec spec_;
    engine::OutputGate gate_;
    GatedTransmit gated_{*this};
    LoggedDisk logged_disk_{*this};
    // The ioreq being answered, while the device models handle it (LoggedDisk logs there).
    struct AtIoreq {
        XenLog* log = nullptr;
        const IoAccess* access = nullptr;
        std::uint64_t exit = 0;
    } at_;
    std::deque<std::vector<std::uint8_t>> frames_; // from the TAP, for the next ioreq
    std::vector<FtRecord> held_;                   // records of exits not passed yet
    std::uint64_t appended_ = 0, records_ = 0, last_exit_ = 0, progress_ = 0, outputs_made_ = 0;
    std::uint64_t frames_in_ = 0, frames_dropped_ = 0, digests_ = 0, disk_reads_ = 0;
    std::uint64_t last_digest_ms_ = 0;
    // The last ioreq answered and the last nudge (XenDeviceModel::nudge()), in ms.
    std::uint64_t last_ioreq_ms_ = 0, last_nudge_ms_ = 0, nudges_ = 0;
    DigestAt last_digest_;
    bool digests_on_ = true;
    std::unique_ptr<StateDigests> state_digests_; // while digests are on
    std::optional<CopyRun> copy_;
    std::optional<CopyOutcome> copy_outcome_;
    // The gate's writes given when the last copy's final state was taken: the backup counts
    // its replayed writes from there. The count last returned by writes_done_to_log(), when.
    std::optional<std::uint64_t> writes_base_;
    std::uint64_t writes_done_logged_ = 0, writes_done_ms_ = 0;
    std::string error_; // set inside the ioreq handler
};

class ReplayingDomain {
public:
    static constexpr std::size_t kResendFrames = 64;

    // The domain must be paused and created like the primary's; start() unpauses it (unless
    // spec.unpause is false). Its TAP
    // (spec.devices.tap) stays unread and unwritten until go_live().
    static Expected<std::unique_ptr<ReplayingDomain>, std::string> start(std::uint32_t domid, const FtSpec& spec);
    // The backup of a running primary: the device models serve the domain, which stays paused
    // (also past the toolstack's unpause) until apply_copy() took a live copy's final record.
    static Expected<std::unique_ptr<ReplayingDomain>, std::string> await_copy(std::uint32_t domid, const FtSpec& spec);
    // One record of the live copy, in order. The final one loads the state and enters replay
    // from the copy's exit, the domain still paused: the primary may yet cancel the copy (it
    // saw no progress in time), and a new copy's first record then drops this one, which never
    // ran. An error names what does not match (the domains were not made from the same
    // configuration); a new copy may start over.
    Expected<bool, std::string> apply_copy(const channel::CopyRecord& record);
    // The primary confirmed the copy: the domain runs (replays) from here. Idempotent.
    Expected<bool, std::string> start_replay();
    bool replaying() const noexcept { return session_ != nullptr && !copy_unconfirmed_; }
    // The primary's exit the copy was taken after (0: replaying since the first instruction).
    std::uint64_t exit_base() const noexcept { return exit_base_; }

    // Waits up to timeout_ms, answers the domain's ioreq, takes from the front of `log` what
    // the domain can use now and publishes it. Every item taken is received (acked).
    // An error on any divergence: a digest that differs, a device event the domain never
    // reached, a crash (Xen names the record in `xl dmesg`).
    // A replay that holds items it cannot publish (and is not waiting for the rest of an
    // exit's items) while the vCPU makes no exit for kReplayStuckSeconds is stuck (the vCPU
    // and this side each wait for the other): an error
    // that says what each waits for, so the node halts this backup and it rejoins by a copy.
    static constexpr int kReplayStuckSeconds = 30;
    Expected<bool, std::string> step(XenLog& log, int timeout_ms);
    // What the replay waits for now, for status and for the stuck error above: the exit it is
    // at, a pending ioreq or read value, the ring, the next item of `log` not published.
    std::string replay_state(const XenLog& log) const;
    std::vector<int> wait_fds() const;
    // The primary is gone: replays the rest of `log`, drops what the domain cannot reach (the
    // events of a read the primary died in), leaves replay, sends the last frames again and
    // serves live from then on (run_live()). It fails only when the vCPU makes no progress
    // for kGoLiveStuckSeconds (the protocol core bounds how far behind the backup may be).
    static constexpr int kGoLiveStuckSeconds = 20;
    Expected<bool, std::string> go_live(XenLog& log);
    // Live service after go_live(), until `stop` or the domain ends.
    Expected<std::string, std::string> run_live(const std::atomic<bool>& stop);
    // One round of it: false once the domain ended.
    Expected<bool, std::string> serve_live(int timeout_ms) { return dm_->serve_once(timeout_ms); }

    std::uint64_t taken() const noexcept { return taken_; }
    std::uint64_t exits() const { return session_ ? exit_base_ + session_->ring().exits() : live_exit_; }
    std::uint64_t digests_matched() const noexcept { return digests_matched_; }
    const DigestAt& last_digest() const noexcept { return last_digest_; }
    std::uint64_t frames_replayed() const noexcept { return frames_replayed_; }
    std::uint64_t live_exit() const noexcept { return live_exit_; }
    // Items of an exit the primary never finished, dropped on going live.
    std::uint64_t dropped() const noexcept { return dropped_; }
    std::uint64_t frames_resent() const noexcept { return resent_; }
    // Device interrupts its drivers had not acknowledged, delivered again when it went live.
    unsigned interrupts_reasserted() const noexcept { return reasserted_; }
    // Disk writes on the shared LUN written again when it went live (the gate's window).
    std::size_t writes_reissued() const noexcept { return replayed_disk_.reissued; }
    // The primary's gate has performed the first `count` disk writes its guest made since the
    // copy (a writes_done log entry): going live writes again only the ones after them.
    void writes_performed(std::uint64_t count) { replayed_disk_.writes.performed_through(count); }
    // Replayed disk writes going live would write again now.
    std::size_t writes_kept() const noexcept { return replayed_disk_.writes.kept(); }
    // Going live's two costs: the items of the log it still had to replay and how long that
    // took, and how long writing the disk writes again took.
    std::size_t tail_items() const noexcept { return tail_items_; }
    std::uint64_t tail_ms() const noexcept { return tail_ms_; }
    std::uint64_t reissue_ms() const noexcept { return reissue_ms_; }
    std::uint64_t disk_reads_replayed() const noexcept { return replayed_disk_.replayed; }
    const std::string& console() const { return dm_->console(); }
    std::optional<DomainEnd> end_state() const { return dm_->end_state(); }
    // This replica must not run on (it halted): its domain waits paused (for a copy, or for
    // the administrator).
    Expected<bool, std::string> pause() { return dm_->control().pause(dm_->domid()); }
    // The primary's VM ended on purpose (vm_end in the log): this replica ends with it, as a
    // domain that powered off, so the toolstack removes it as its on_poweroff says. Returns
    // once Xen has shut the domain down (or why it has not within 2 s), with the number of
    // ioreqs it answered on the way.
    Expected<unsigned, std::string> shut_down();

private:
    friend class RecordingDomain; // record_again takes the device models of a live domain
    ReplayingDomain(std::unique_ptr<XenDeviceModel> dm, std::unique_ptr<FtSession> session);
    Expected<bool, std::string> load_final(const channel::CopyFinal& f);
    Expected<bool, std::string> at_ioreq(IoAccess& a);
    Expected<bool, std::string> apply(const DeviceEvent& e);
    Expected<bool, std::string> handle_replayed(IoAccess& a, const std::string& where);
    Expected<bool, std::string> serve_and_publish(XenLog& log, int timeout_ms, bool final);
    Expected<bool, std::string> publish(XenLog& log, bool final);
    Expected<bool, std::string> put_records(std::span<const FtRecord> records);

    // The frames the backup's NIC would have sent, the last kResendFrames of them: sent again
    // on going live (the primary may have died before the acks that would have released them).
    class KeepLast final : public devices::NetTransmit {
    public:
        void transmit(std::span<const std::uint8_t> frame) override
        {
            frames.emplace_back(frame.begin(), frame.end());
            if (frames.size() > kResendFrames)
                frames.pop_front();
        }
        std::deque<std::vector<std::uint8_t>> frames;
    };
    // The disk on the shared LUN as the backup's guest sees it while replaying: the primary's
    // reads of this exit from the log (the LUN may hold later writes by now), writes kept for
    // going live (the primary's gate performs them).
    // Going live, the log is all there will be: a request at the exit the primary died in
    // finds fewer reads than it makes; from there on the guest uses the LUN itself, once the
    // kept writes are on it (go_direct()).
    class ReplayedDisk final : public devices::BlockPort {
    public:
        bool read(std::uint64_t offset, std::span<std::uint8_t> out) override;
        bool write(std::uint64_t offset, std::span<const std::uint8_t> data) override
        {
            if (direct)
                return direct->write(offset, data);
            writes.add(offset, data);
            return true;
        }
        bool flush() override { return !direct || direct->flush(); }
        // Writes the kept writes to `lun`; reads and writes go to it from then on.
        Expected<std::size_t, std::string> go_direct(devices::BlockPort& lun);
        std::deque<DeviceEvent> reads; // this exit's, in order
        std::string divergence;        // the first read that is not the primary's
        engine::RecentWrites writes;
        std::uint64_t replayed = 0;
        devices::BlockPort* lun_when_log_ends = nullptr; // set while going live
        devices::BlockPort* direct = nullptr;
        std::size_t reissued = 0;
    };

    std::unique_ptr<XenDeviceModel> dm_;
    std::unique_ptr<FtSession> session_; // null before the copy and once live
    bool copy_unconfirmed_ = false;      // a copy's state is in, the domain paused (start_replay)
    FtSpec spec_;
    std::uint64_t exit_base_ = 0;
    KeepLast kept_;
    ReplayedDisk replayed_disk_;
    // Device events taken from the log, waiting for the domain to reach their exit.
    std::vector<DeviceEvent> pending_;
    bool pending_at_read_ = false;
    std::uint64_t pending_exit_ = 0;
    std::uint64_t read_consumed_target_ = 0; // at_read: ring cons once the read's value is taken
    std::uint64_t last_published_exit_ = 0;
    std::uint64_t taken_ = 0, digests_matched_ = 0, frames_replayed_ = 0, live_exit_ = 0, dropped_ = 0, resent_ = 0;
    unsigned reasserted_ = 0;
    std::size_t tail_items_ = 0;
    bool waiting_for_log_ = false; // publish() waits for the rest of an exit's items
    std::uint64_t stuck_exit_ = 0; // the exit the vCPU was at when stuck_since_ began
    // Write ioreqs: the exit of the last one answered, how many came at the exit of the one
    // before them, and how many of those waited for the log (serve_and_publish).
    static constexpr std::uint64_t kNoExit = ~std::uint64_t{0};
    std::uint64_t last_write_exit_ = kNoExit;
    std::uint64_t same_exit_writes_ = 0, deferred_ioreqs_ = 0, deferred_exit_ = kNoExit;
    std::chrono::steady_clock::time_point stuck_since_{};
    std::uint64_t tail_ms_ = 0, reissue_ms_ = 0;
    DigestAt last_digest_;
    std::unique_ptr<StateDigests> state_digests_; // from the first digest while replaying
    std::string error_;
};

} // namespace xenft::backends::xen
