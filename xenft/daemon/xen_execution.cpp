#include "xenft/daemon/xen_execution.hpp"

#include <poll.h>

#include <chrono>
#include <thread>

namespace xenft::daemon {

using namespace backends::xen;

namespace {

// Waits up to timeout_ms for any of `fds` to be readable.
void wait_readable(const std::vector<int>& fds, int timeout_ms)
{
    std::vector<pollfd> p;
    for (int fd : fds)
        p.push_back({fd, POLLIN, 0});
    ::poll(p.data(), p.size(), timeout_ms);
}

} // namespace

// The copy's sink as the recording domain sees it: the final record, sent from inside the
// domain's ioreq, gets the log position of that moment (the items logged so far are numbered
// first: the copy covers them), and once the backup applied the copy the domain's outputs wait
// for its acks before the vCPU leaves that ioreq.
class XenExecution::FinalSeq final : public channel::CopySink {
public:
    FinalSeq(XenExecution& x, channel::CopySink& to) : x_(x), to_(to) {}
    bool has_room() const override { return to_.has_room(); }
    std::size_t backlog() const override { return to_.backlog(); }
    Expected<bool, std::string> send(channel::CopyRecord r) override
    {
        if (auto* f = std::get_if<channel::CopyFinal>(&r)) {
            x_.number_items();
            x_.writer_ = XenLogWriter{}; // the backup's reader starts afresh after the copy
            f->next_seq = x_.next_seq_;
            x_.copy_at_ = x_.next_seq_ - 1;
        }
        return to_.send(std::move(r));
    }
    Expected<bool, std::string> finish() override
    {
        auto r = to_.finish();
        if (r)
            x_.primary_->protected_by_backup();
        return r;
    }

private:
    XenExecution& x_;
    channel::CopySink& to_;
};

XenExecution::XenExecution(std::uint32_t domid, const FtSpec& spec, std::function<void(const std::string&)> say)
    : domid_(domid), spec_(spec), say_(std::move(say)), name_("domain " + std::to_string(domid))
{
}

XenExecution::~XenExecution()
{
    if (primary_)
        primary_->cancel_copy();
}

Expected<std::unique_ptr<XenExecution>, std::string> XenExecution::start(std::uint32_t domid, const FtSpec& spec,
                                                                         bool records,
                                                                         std::function<void(const std::string&)> say)
{
    std::unique_ptr<XenExecution> x(new XenExecution(domid, spec, std::move(say)));
    if (records) {
        auto d = RecordingDomain::start(domid, spec);
        if (!d)
            return unexpected(x->name_ + ": " + d.error());
        x->primary_ = std::move(d).value();
        // Until the node runs the VM (the test-and-set won) its outputs wait; no digests
        // until a backup has the copy (nobody would compare them).
        x->primary_->await_backup();
    } else {
        auto d = ReplayingDomain::await_copy(domid, spec);
        if (!d)
            return unexpected(x->name_ + ": " + d.error());
        x->backup_ = std::move(d).value();
    }
    return x;
}

void XenExecution::number_items()
{
    std::vector<logformat::Entry> entries;
    for (const auto& item : items_) {
        entries.clear();
        writer_.write(item, entries);
        for (auto& e : entries) {
            e.seq = next_seq_++;
            numbered_.push_back(std::move(e));
        }
    }
    items_.clear();
}

Expected<bool, std::string> XenExecution::record(std::vector<logformat::Entry>& log, std::vector<protocol::VmOutput>& outputs)
{
    if (!primary_) {
        if (backup_ && live_unrecorded_) {
            auto r = backup_->serve_live(20);
            if (!r)
                return unexpected(name_ + ": live: " + r.error());
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return true;
    }
    wait_readable(primary_->wait_fds(), primary_->copying() ? 1 : 20);
    auto stepped = primary_->step(items_, 0);
    number_items();
    if (stepped && !numbered_.empty()) {
        // After this step's items (never inside an ioreq's device events), at their last exit.
        if (auto done = primary_->writes_done_to_log()) {
            logformat::Entry e;
            e.seq = next_seq_++;
            e.vcpu = numbered_.back().vcpu;
            e.exit = numbered_.back().exit;
            e.payload = logformat::WritesDone{*done};
            numbered_.push_back(std::move(e));
        }
    }
    log.insert(log.end(), std::make_move_iterator(numbered_.begin()), std::make_move_iterator(numbered_.end()));
    numbered_.clear();
    exits_ = exit_base_ + primary_->exits();
    if (auto o = primary_->take_copy_outcome()) {
        final_seq_.reset();
        CopyReport r;
        r.ok = o->ok;
        r.error = o->error;
        r.at = copy_at_;
        r.summary = o->ok ? "sent at exit " + std::to_string(exit_base_ + o->exit) + ": " + std::to_string(o->pages) +
                                " pages in " + std::to_string(o->rounds) + " rounds, then " +
                                std::to_string(o->final_pages) + " pages and " + std::to_string(o->disk_blocks) +
                                " disk blocks in the final pause; the vCPU waited " + std::to_string(o->pause_ms) +
                                " ms, the copy took " + std::to_string(o->ms) + " ms"
                          : "after " + std::to_string(o->ms) + " ms";
        r.pause_ms = static_cast<double>(o->pause_ms);
        r.rounds = o->rounds;
        if (o->ok)
            ++copies_;
        report_ = std::move(r);
    }
    // The NIC's frames are tagged with the items logged before them: one output stands for
    // those of this step, released once the backup acked every entry logged so far.
    if (primary_->outputs_made() > outputs_seen_) {
        outputs_seen_ = primary_->outputs_made();
        outputs.push_back(protocol::VmOutput{primary_->appended(), next_seq_ - 1});
    }
    if (!stepped) {
        if (primary_->end_state()) // destroyed under us: its end, not an error
            return true;
        return unexpected(stepped.error());
    }
    return true;
}

void XenExecution::release_outputs(std::uint64_t up_to_id)
{
    std::lock_guard lock(mu_);
    if (primary_)
        primary_->acked(up_to_id);
}

std::size_t XenExecution::discard_outputs()
{
    std::lock_guard lock(mu_);
    return primary_ ? primary_->discard_outputs() : 0;
}

void XenExecution::set_alone(bool alone)
{
    std::lock_guard lock(mu_);
    if (!primary_)
        return;
    if (alone)
        primary_->continue_alone();
    else
        primary_->protected_by_backup();
}

bool XenExecution::outputs_full() const
{
    std::lock_guard lock(mu_);
    return primary_ && primary_->outputs_full();
}

std::size_t XenExecution::held_outputs() const
{
    std::lock_guard lock(mu_);
    return primary_ ? primary_->outputs_held() : 0;
}

std::uint64_t XenExecution::released_outputs() const
{
    std::lock_guard lock(mu_);
    return primary_ ? primary_->frames_out() : 0;
}

void XenExecution::copy_to(channel::CopySink& sink)
{
    if (!primary_) {
        report_ = CopyReport{false, name_ + " is live but not recorded (see the go-live line): no copy can be taken", 0,
                             "not started"};
        return;
    }
    final_seq_ = std::make_unique<FinalSeq>(*this, sink);
    primary_->copy_to(*final_seq_);
    say_(name_ + ": live copy: memory goes in rounds while the domain runs");
}

bool XenExecution::copying() const { return primary_ && primary_->copying(); }

std::optional<CopyReport> XenExecution::take_copy_report() { return std::exchange(report_, std::nullopt); }

void XenExecution::cancel_copy()
{
    if (primary_)
        primary_->cancel_copy();
    final_seq_.reset();
}

Expected<std::optional<protocol::Seq>, std::string> XenExecution::apply_copy(const channel::CopyRecord& record)
{
    if (!backup_)
        return unexpected(name_ + " is not a backup");
    if (auto r = backup_->apply_copy(record); !r)
        return unexpected(r.error());
    const auto* f = std::get_if<channel::CopyFinal>(&record);
    if (!f)
        return std::optional<protocol::Seq>{};
    ++copies_;
    exits_ = backup_->exit_base();
    executed_ = f->next_seq - 1;
    say_(name_ + ": live copy taken at the primary's exit " + std::to_string(backup_->exit_base()) + "; replaying");
    return std::optional<protocol::Seq>{f->next_seq - 1};
}

Expected<protocol::Seq, std::string> XenExecution::replay(std::deque<logformat::Entry>& log, bool)
{
    // Entries become the domain's items only a little ahead of its replay: what is executed
    // for the protocol core is then (nearly) what the vCPU ran, so the core's bound on the
    // backlog (takes_log) bounds what going live must replay.
    while (!log.empty() && !log_ended_ && replay_items_.size() < kItemsAhead) {
        const logformat::Entry& e = log.front();
        if (std::holds_alternative<logformat::VmEnd>(e.payload)) {
            log_ended_ = true; // nothing follows it; the pair's end is the protocol core's to say
        } else if (const auto* done = std::get_if<logformat::WritesDone>(&e.payload)) {
            backup_->writes_performed(done->count); // bookkeeping for going live, not replay
        } else {
            auto item = reader_.read(e);
            if (!item)
                return unexpected(name_ + ": log entry " + std::to_string(e.seq) + ": " + item.error());
            if (*item)
                replay_items_.push_back(std::move(**item));
        }
        executed_ = e.seq;
        log.pop_front();
    }
    if (log_ended_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return executed_;
    }
    // The copy is confirmed once the node replays: its domain runs from here.
    if (auto started = backup_->start_replay(); !started)
        return unexpected(name_ + ": " + started.error());
    wait_readable(backup_->wait_fds(), 5);
    auto r = backup_->step(replay_items_, 0);
    exits_ = backup_->exits();
    if (!r && !backup_->end_state())
        return unexpected(r.error());
    return executed_;
}

Expected<std::string, std::string> XenExecution::go_live()
{
    // (A suspicion may come before the first replay step after the copy's confirmation.)
    if (auto started = backup_->start_replay(); !started)
        return unexpected(started.error());
    if (auto r = backup_->go_live(replay_items_); !r)
        return unexpected(r.error());
    std::string what = "at exit " + std::to_string(backup_->live_exit()) + " (the log's last " +
                       std::to_string(backup_->tail_items()) + " items replayed in " +
                       std::to_string(backup_->tail_ms()) + " ms): " +
                       std::to_string(backup_->digests_matched()) + " digests matched, " +
                       std::to_string(backup_->frames_replayed()) + " frames replayed, " +
                       std::to_string(backup_->frames_resent()) + " sent again, " +
                       std::to_string(backup_->dropped()) + " items of an unfinished exit dropped, " +
                       std::to_string(backup_->interrupts_reasserted()) + " device interrupts reasserted";
    if (spec_.devices.shared_disk)
        what += ", " + std::to_string(backup_->disk_reads_replayed()) + " disk reads replayed, " +
                std::to_string(backup_->writes_reissued()) + " disk writes written again in " +
                std::to_string(backup_->reissue_ms()) + " ms";
    exit_base_ = backup_->live_exit();
    exits_ = exit_base_;
    // The log goes on from the last entry replayed (the protocol core's count), in the new
    // epoch, for a backup that joins this host later.
    next_seq_ = executed_ + 1;
    writer_ = XenLogWriter{};
    auto again = RecordingDomain::record_again(*backup_, spec_);
    if (!again) {
        live_unrecorded_ = true;
        return what + "; it cannot be recorded again (" + again.error() + "): it serves, but no backup can protect it";
    }
    {
        std::lock_guard lock(mu_);
        primary_ = std::move(again).value();
    }
    outputs_seen_ = 0;
    return what + "; recorded again, so a backup can take a live copy";
}

Expected<std::string, std::string> XenExecution::end_replay()
{
    if (!backup_)
        return std::string(name_ + ": nothing to end");
    if (auto own = backup_->end_state())
        return name_ + " ended here too: " + own->text;
    auto down = backup_->shut_down();
    if (!down)
        return unexpected(down.error());
    return name_ + " powered off (" + (*down ? "its vCPU's waiting ioreq answered unperformed; " : std::string()) +
           "the toolstack removes it as its on_poweroff says)";
}

std::optional<VmStop> XenExecution::stopped() const
{
    std::optional<DomainEnd> end;
    if (primary_)
        end = primary_->end_state();
    else if (backup_)
        end = backup_->end_state();
    if (!end)
        return std::nullopt;
    return VmStop{end->reason, end->text};
}

std::string XenExecution::stop_running()
{
    if (primary_) {
        primary_->cancel_copy();
        auto r = primary_->pause();
        return r ? name_ + " paused: it must not run on here (without xenftd it has no devices)"
                 : name_ + ": cannot pause it: " + r.error();
    }
    // A backup without a copy is paused already (until the copy is in); one that replays or
    // serves live is not.
    if (!backup_ || (!backup_->replaying() && !live_unrecorded_))
        return name_ + " stays paused (it had no copy yet)";
    auto r = backup_->pause();
    return r ? name_ + " paused: it must not run on here (without xenftd it has no devices)"
             : name_ + ": cannot pause it: " + r.error();
}

nlohmann::json XenExecution::details() const
{
    nlohmann::json d = {{"domid", domid_}, {"copies", copies_}};
    // The primary's digests are taken, the backup's matched; frames in: from the TAP or
    // replayed; out: released, or sent again on going live.
    auto fill = [&d](std::uint64_t digests, const char* are, const DigestAt& last, std::uint64_t in, std::uint64_t out) {
        d["digests"] = digests;
        d["digests_are"] = are;
        d["last_digest_exit"] = last.exit;
        d["last_digest"] = last.exit ? hex(last.taken.digest) : "";
        // Its cost: the vCPU's wait, the pages hashed (written since the one before, and the
        // sweep's), how much of memory the sweep has reached, pages changed that no log named.
        d["last_digest_ms"] = static_cast<double>(last.taken.us) / 1000.0;
        d["last_digest_pages"] = last.taken.pages_hashed;
        d["digest_coverage"] = last.taken.pages ? static_cast<double>(last.taken.covered) / static_cast<double>(last.taken.pages) : 0.0;
        d["last_digest_unlogged_pages"] = last.taken.unlogged;
        d["frames_in"] = in;
        d["frames_out"] = out;
    };
    if (primary_) {
        fill(primary_->digests(), "taken", primary_->last_digest(), primary_->frames_in(), primary_->frames_out());
        d["disk_reads_logged"] = primary_->disk_reads_logged();
        d["nudges"] = primary_->nudges();
    } else if (backup_) {
        fill(backup_->digests_matched(), "matched", backup_->last_digest(), backup_->frames_replayed(),
             backup_->frames_resent());
        d["disk_reads_replayed"] = backup_->disk_reads_replayed();
        d["replay"] = backup_->replay_state(replay_items_);
    }
    return d;
}

} // namespace xenft::daemon
