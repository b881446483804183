// The execution backend of xenft's own engine on /dev/kvm (execution.hpp): the guest runs in
// an engine::Machine, recorded by an engine::Recorder (primary, and a backup once live) or
// replayed by an engine::Replayer (backup). Its outputs (NIC frames, disk writes) wait in an
// OutputGate until the node releases them. A live copy is every page while the guest runs,
// then rounds of the pages it dirtied, then a pause for the last pages, the vCPU and the
// devices, which ends once the backup applied it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "xenft/daemon/execution.hpp"
#include "xenft/devices/host_io.hpp"
#include "xenft/engine/machine.hpp"
#include "xenft/engine/output_gate.hpp"
#include "xenft/engine/replay.hpp"

namespace xenft::daemon {

class KvmExecution final : public Execution {
public:
    // `backend`: created with the guest loaded. tap and disk (either may be null) must outlive
    // this. `say` gets log lines.
    KvmExecution(std::unique_ptr<engine::Backend> backend, const engine::MachineSpec& machine,
                 std::uint64_t digest_every, devices::TapDevice* tap, devices::BlockPort* disk,
                 std::function<void(const std::string&)> say);
    ~KvmExecution() override;

    Expected<bool, std::string> record(std::vector<logformat::Entry>& log, std::vector<protocol::VmOutput>& outputs) override;
    bool outputs_full() const override { return gate_.full(); }
    protocol::Seq next_seq() const override { return rec_ ? rec_->next_seq() : 1; }
    void release_outputs(std::uint64_t up_to_id) override { gate_.release_through(up_to_id); }
    std::size_t discard_outputs() override { return gate_.discard_all(); }
    void set_alone(bool alone) override { gate_.set_passthrough(alone); }
    std::size_t held_outputs() const override { return gate_.held(); }
    std::uint64_t released_outputs() const override { return gate_.released(); }

    void copy_to(channel::CopySink& sink) override;
    bool copying() const override { return copy_.has_value(); }
    std::optional<CopyReport> take_copy_report() override { return std::exchange(report_, std::nullopt); }
    void cancel_copy() override { copy_.reset(); }

    Expected<std::optional<protocol::Seq>, std::string> apply_copy(const channel::CopyRecord& record) override;
    Expected<protocol::Seq, std::string> replay(std::deque<logformat::Entry>& log, bool final) override;
    Expected<std::string, std::string> go_live() override;
    Expected<std::string, std::string> end_replay() override { return std::string("the guest stops"); }

    std::optional<VmStop> stopped() const override { return std::nullopt; }
    std::string stop_running() override { return "the guest stops"; }
    std::uint64_t exits() const override { return exits_; }

private:
    struct CopyRun {
        channel::CopySink* sink = nullptr;
        std::vector<std::uint64_t> todo; // this round's pages
        std::size_t next = 0;
        unsigned round = 1;
        std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    };
    protocol::Seq take_seq() override { return next_seq(); }
    engine::Recorder& recorder();
    // One step of the copy; false once it ended (report_ then says how).
    bool copy_step();
    void copy_finish(std::vector<std::uint64_t> last_pages);
    Expected<bool, std::string> queue_pages(std::span<const std::uint64_t> pages, bool wait);
    // After going live: a RARP announcement of the guest's MAC (as QEMU's announce-self does),
    // so switches learn the guest's new port without waiting for it to speak.
    void announce_mac(const devices::MacAddress& mac);

    std::unique_ptr<engine::Machine> machine_;
    engine::OutputGate gate_;
    std::uint64_t digest_every_;
    devices::TapDevice* tap_;
    devices::BlockPort* disk_;
    std::function<void(const std::string&)> say_;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    std::optional<engine::Recorder> rec_;
    std::optional<engine::Replayer> rep_;
    engine::ResumePoint resume_;     // where the copy (or go-live) leaves the VM
    std::optional<CopyRun> copy_;
    std::optional<CopyReport> report_;
    std::atomic<std::uint64_t> exits_{0};
};

} // namespace xenft::daemon
