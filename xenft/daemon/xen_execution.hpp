// The execution backend of a Xen domain (execution.hpp): the domain `xl create` with ft= made,
// with xenft as its device model and hvm-patches' deterministic record and replay
// (backends/xen/ft_domain.hpp). The primary's RecordingDomain turns the hypervisor's ring
// records and the device models' events into a XenLog, which this turns into log entries
// (numbered here, from the domain's start); the backup's ReplayingDomain takes a live copy,
// then the entries back as a XenLog.
//
// What only Xen needs stays here: outputs are tagged with the log items before them (an
// output's id is the number of items logged when it left the NIC), the copy's final record
// learns its log position at the moment of the copy (inside the domain's ioreq, before the
// items of that step are numbered), a backup's exits count from the copy's, a backup that
// went live is recorded again (so it can take a new backup), and a replica that must not run
// on is paused rather than destroyed (the administrator decides about the domain).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "xenft/backends/xen/ft_domain.hpp"
#include "xenft/backends/xen/xen_log.hpp"
#include "xenft/daemon/execution.hpp"

namespace xenft::daemon {

class XenExecution final : public Execution {
public:
    // The domain (paused, as the xl hook leaves it) recorded, or made the backup that awaits a
    // live copy. An error changes nothing: the domain stays paused.
    static Expected<std::unique_ptr<XenExecution>, std::string> start(std::uint32_t domid,
                                                                      const backends::xen::FtSpec& spec, bool records,
                                                                      std::function<void(const std::string&)> say);
    ~XenExecution() override;

    Expected<bool, std::string> record(std::vector<logformat::Entry>& log, std::vector<protocol::VmOutput>& outputs) override;
    protocol::Seq next_seq() const override { return next_seq_; }
    void release_outputs(std::uint64_t up_to_id) override;
    std::size_t discard_outputs() override;
    void set_alone(bool alone) override;
    std::size_t held_outputs() const override;
    bool outputs_full() const override;
    std::uint64_t released_outputs() const override;

    void copy_to(channel::CopySink& sink) override;
    bool copying() const override;
    std::optional<CopyReport> take_copy_report() override;
    void cancel_copy() override;

    Expected<std::optional<protocol::Seq>, std::string> apply_copy(const channel::CopyRecord& record) override;
    Expected<protocol::Seq, std::string> replay(std::deque<logformat::Entry>& log, bool final) override;
    Expected<std::string, std::string> go_live() override;
    Expected<std::string, std::string> end_replay() override;

    std::optional<VmStop> stopped() const override;
    std::string stop_running() override;
    std::uint64_t exits() const override { return exits_; }
    nlohmann::json details() const override;

private:
    class FinalSeq;
    XenExecution(std::uint32_t domid, const backends::xen::FtSpec& spec, std::function<void(const std::string&)> say);
    protocol::Seq take_seq() override { return next_seq_++; }
    // The items the domain logged, as entries numbered on (into numbered_).
    void number_items();

    std::uint32_t domid_;
    backends::xen::FtSpec spec_;
    std::function<void(const std::string&)> say_;
    std::string name_; // "domain 7"

    // The domain: recording (a primary, or live again), or replaying (a backup; live but not
    // recorded if record_again failed). mu_ guards the pointers for the output calls.
    mutable std::mutex mu_;
    std::unique_ptr<backends::xen::RecordingDomain> primary_;
    std::unique_ptr<backends::xen::ReplayingDomain> backup_;
    bool live_unrecorded_ = false;

    // Recording: items logged and not numbered yet, and entries numbered and not returned yet.
    backends::xen::XenLog items_;
    backends::xen::XenLogWriter writer_;
    std::vector<logformat::Entry> numbered_;
    protocol::Seq next_seq_ = 1;
    std::uint64_t outputs_seen_ = 0;
    std::unique_ptr<FinalSeq> final_seq_; // the copy's sink, as the recording domain sees it
    protocol::Seq copy_at_ = 0;
    std::optional<CopyReport> report_;
    std::uint64_t copies_ = 0;
    std::uint64_t exit_base_ = 0; // exits before the domain was recorded again (after going live)

    // Replaying: the entries read back as items, and the vm_end entry once read. At most
    // kItemsAhead items wait here: as many as Xen's ring holds (16 pages of 32-byte records),
    // so the ring stays full, and far more than one exit has; going live replays them and
    // the ring's records after the last entry the protocol core counted.
    static constexpr std::size_t kItemsAhead = 2048;
    backends::xen::XenLog replay_items_;
    backends::xen::XenLogReader reader_;
    protocol::Seq executed_ = 0;
    bool log_ended_ = false;

    std::atomic<std::uint64_t> exits_{0};
};

} // namespace xenft::daemon
