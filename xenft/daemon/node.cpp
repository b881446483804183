#include "xenft/daemon/node.hpp"

#include <algorithm>

#include "xenft/daemon/kvm_execution.hpp"

namespace xenft::daemon {

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kCopyAnswerTimeout = std::chrono::seconds(30);

void nap() { std::this_thread::sleep_for(std::chrono::microseconds(200)); }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

} // namespace

// A live copy's way to the backup: the copy sender's queue (the control thread's pump writes
// it out). It fills in the final record's epoch, waits while the queue is full, and counts the
// pages for `xenft status`.
class ChannelCopySink final : public channel::CopySink {
public:
    ChannelCopySink(std::shared_ptr<channel::LogSender> to, protocol::Epoch epoch, const std::atomic<bool>& stopping,
                    std::mutex& mu, CopyProgress& progress)
        : to_(std::move(to)), epoch_(epoch), stopping_(stopping), mu_(mu), progress_(progress)
    {
    }
    bool has_room() const override
    {
        return to_->copy_state() == channel::CopyState::copying &&
               to_->copy_backlog() < channel::LogSender::kCopyQueueBytes / 2;
    }
    std::size_t backlog() const override { return to_->copy_backlog(); }
    Expected<bool, std::string> send(channel::CopyRecord r) override
    {
        if (auto* f = std::get_if<channel::CopyFinal>(&r))
            f->epoch = epoch_;
        count(r);
        while (!to_->append_copy(r)) {
            if (auto why = failed(); !why.empty())
                return unexpected(why);
            nap();
        }
        if (auto why = failed(); !why.empty())
            return unexpected(why);
        return true;
    }
    Expected<bool, std::string> finish() override
    {
        const auto deadline = Clock::now() + kCopyAnswerTimeout;
        while (to_->copy_state() == channel::CopyState::copying) {
            if (stopping_)
                return unexpected(std::string("xenftd is stopping"));
            if (Clock::now() > deadline)
                return unexpected("no answer from the backup within " +
                                  std::to_string(std::chrono::seconds(kCopyAnswerTimeout).count()) + " s");
            nap();
        }
        if (to_->copy_state() != channel::CopyState::done)
            return unexpected(to_->copy_error());
        return true;
    }
    // Non-empty: the copy failed, and why.
    std::string failed() const
    {
        if (stopping_)
            return "xenftd is stopping";
        if (to_->copy_state() == channel::CopyState::failed)
            return to_->copy_error();
        return {};
    }
    const std::shared_ptr<channel::LogSender>& sender() const { return to_; }
    protocol::Epoch epoch() const { return epoch_; }
    Clock::time_point started() const { return started_; }

private:
    void count(const channel::CopyRecord& r)
    {
        std::lock_guard lock(mu_);
        auto& p = progress_;
        if (const auto* b = std::get_if<channel::CopyBegin>(&r)) {
            p.start(true, b->pages);
        } else if (const auto* pages = std::get_if<channel::CopyPages>(&r)) {
            p.pages_copied += pages->numbers.size();
            if (p.pages_copied > p.pages_total && p.round == 1)
                p.round = 2; // the first round is out: the pages the guest dirtied follow
            p.pages_done = std::min(p.pages_total, p.pages_copied);
            const double secs = std::max(std::chrono::duration<double>(Clock::now() - started_).count(), 1e-3);
            p.mib_per_s = static_cast<double>(p.pages_copied) * 4096.0 / (1 << 20) / secs;
            p.eta_s = p.pages_copied ? secs / static_cast<double>(p.pages_copied) *
                                           static_cast<double>(p.pages_total - p.pages_done)
                                     : 0;
        }
    }
    std::shared_ptr<channel::LogSender> to_;
    protocol::Epoch epoch_;
    const std::atomic<bool>& stopping_;
    std::mutex& mu_;
    CopyProgress& progress_;
    Clock::time_point started_ = Clock::now();
};

Node::Node(NodeConfig cfg)
    : cfg_(std::move(cfg)), replica_(protocol::Replica::starting(cfg_.protocol, cfg_.self, cfg_.peer, cfg_.epoch, 0)),
      record_owner_(cfg_.record_owner)
{
}

Expected<std::unique_ptr<Node>, std::string> Node::start(NodeConfig cfg)
{
    const std::string vm = "vm " + std::to_string(cfg.vm_id) + ": ";
    if ((!cfg.backend && !cfg.make_execution) || !cfg.tls_client || !cfg.tls_server)
        return unexpected(vm + "node needs a VM backend and TLS contexts for both sides");
    if (auto bad = cfg.protocol.validate(); !bad.empty())
        return unexpected(vm + bad);
    std::unique_ptr<Node> n(new Node(std::move(cfg)));
    NodeConfig& c = n->cfg_;

    auto arb = arbiter::Arbiter::open(c.arbiter);
    if (!arb)
        return unexpected(vm + arb.error());
    n->arbiter_.emplace(std::move(arb).value());
    if (c.disk_session)
        n->arbiter_->add_own_session(c.disk_session);
    auto record = n->arbiter_->read();
    if (!record)
        return unexpected(vm + "reading the arbitration record: " + record.error());
    bool claim = false;
    if (c.backup_needs_copy && !c.join) {
        // Who runs the VM is the record's to say, not the configuration's: a host started again
        // after its peer took the VM over must not run a second copy.
        claim = protocol::plan_start(c.self, c.start_as_primary, record->owner) == protocol::StartAs::claim;
        if (!claim)
            n->say("the arbitration record is at epoch " + std::to_string(record->epoch) + ", owned by host " +
                   std::to_string(record->owner) + ": that host runs the VM; joining as its backup");
        c.join = !claim;
        c.epoch = record->epoch;
        n->record_owner_ = record->owner;
    } else if (!c.join && protocol::pair_went_on(c.epoch, record->epoch)) {
        n->say("the arbitration record is at epoch " + std::to_string(record->epoch) + " (host " +
               std::to_string(record->owner) + "), past this host's epoch " + std::to_string(c.epoch) +
               ": the VM runs elsewhere; joining as a backup");
        c.join = true;
    }
    if (c.join) {
        c.start_as_primary = false;
        c.epoch = record->epoch;
        n->record_owner_ = record->owner;
    }
    n->records_ = claim || c.start_as_primary;

    auto hb = detector::HeartbeatSocket::open(c.heartbeat);
    if (!hb)
        return unexpected(vm + hb.error());
    n->heartbeats_.emplace(std::move(hb).value());
    if (!c.channel.log)
        c.channel.log = [log = c.log](const std::string& line) {
            if (log)
                log(LogPriority::info, line);
            else
                write_log_line(LogPriority::info, line);
        };
    c.channel.epoch = c.epoch;
    if (!n->records_) {
        channel::ChannelConfig from = c.channel;
        from.address = c.channel_listen;
        auto rx = channel::LogReceiver::listen(from, *c.tls_server);
        if (!rx)
            return unexpected(vm + rx.error());
        n->receiver_.emplace(std::move(rx).value());
    }

    // The VM last: everything it needs is open, so a failure above leaves it untouched.
    if (c.make_execution) {
        auto e = c.make_execution(n->records_);
        if (!e)
            return unexpected(vm + e.error());
        n->exec_ = std::move(e).value();
    } else {
        n->exec_ = std::make_unique<KvmExecution>(std::move(c.backend), c.machine, c.digest_every, c.tap, c.disk,
                                                  [p = n.get()](const std::string& line) { p->say(line); });
    }

    if (claim) {
        n->replica_ = protocol::Replica::starting(c.protocol, c.self, c.peer, c.epoch, n->now_us());
    } else if (c.start_as_primary) {
        channel::ChannelConfig to = c.channel;
        to.address = c.channel_peer;
        n->sender_ = std::make_shared<channel::LogSender>(to, *c.tls_client);
        n->log_epoch_ = c.epoch;
        n->streaming_ = true;
        n->replica_ = protocol::Replica::protected_primary(c.protocol, c.self, c.peer, c.epoch, 0, n->now_us());
    } else if (c.join) {
        n->receiver_->await_copy(c.epoch);
        n->replica_ = protocol::Replica::syncing_backup(c.protocol, c.self, c.peer, n->now_us());
    } else {
        n->replica_ = protocol::Replica::replaying_backup(c.protocol, c.self, c.peer, c.epoch, 0, n->now_us());
    }
    n->last_role_ = n->replica_.role();
    n->say(claim    ? "the arbitration record is at epoch " + std::to_string(c.epoch) + ", owned by " +
                          (record->owner == 0 ? std::string("nobody yet") : "this host") +
                          ": claiming epoch " + std::to_string(c.epoch + 1) + " to run the VM"
           : c.join ? "joining the pair in epoch " + std::to_string(c.epoch) + ": waiting for a live copy from host " +
                          std::to_string(c.peer)
                    : std::string("starting as ") + (c.start_as_primary ? "primary" : "backup") + " in epoch " +
                          std::to_string(c.epoch));
    n->vm_thread_ = std::thread([p = n.get()] { p->vm_loop(); });
    n->control_thread_ = std::thread([p = n.get()] { p->control_loop(); });
    return n;
}

Node::~Node()
{
    stopping_ = true;
    if (vm_thread_.joinable())
        vm_thread_.join();
    if (control_thread_.joinable())
        control_thread_.join();
}

protocol::Time Node::now_us() const
{
    return static_cast<protocol::Time>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start_).count());
}

void Node::say(const std::string& line, LogPriority priority) const
{
    const std::string text = "vm " + std::to_string(cfg_.vm_id) + " (host " + std::to_string(cfg_.self) + "): " + line;
    if (cfg_.log)
        cfg_.log(priority, text);
    else
        write_log_line(priority, text);
}

NodeStatus Node::status() const
{
    std::lock_guard lock(mu_);
    NodeStatus s = status_;
    s.exits = exec_ ? exec_->exits() : 0;
    s.failure = failure_;
    return s;
}

void Node::request(const protocol::Event& e)
{
    std::lock_guard lock(mu_);
    vm_events_.push_back(e);
}

std::shared_ptr<channel::LogSender> Node::sender() const
{
    std::lock_guard lock(mu_);
    return sender_;
}

// ----- VM thread ----------------------------------------------------------------------------------

void Node::vm_loop()
{
    if (records_) {
        record_loop();
    } else if (!cfg_.join || receive_copy()) {
        replay_loop();
        if (go_live_ && !stopping_ && !halted_) {
            auto live = exec_->go_live();
            if (!live) {
                vm_failed("going live: " + live.error());
            } else {
                say("went live " + *live, LogPriority::notice);
                replaying_ = false;
                record_loop();
            }
        }
    }
    // Wrapping up: the VM ended with the pair's consent, or it must not run on here.
    if (ended_ && !records_ && !go_live_) {
        auto r = exec_->end_replay();
        say(r ? *r : "ending the VM here: " + r.error());
    } else if (!exec_->stopped() && (halted_ || stopping_)) {
        say(exec_->stop_running());
    }
    {
        std::lock_guard lock(mu_);
        status_.backend = exec_->details();
    }
    vm_done_ = true;
}

void Node::vm_failed(const std::string& why)
{
    say("the VM cannot go on: " + why, LogPriority::error);
    {
        std::lock_guard lock(mu_);
        vm_events_.push_back(protocol::VmFailed{why});
    }
    // The VM thread wraps up (stops the VM) once the protocol core halted it: not before, or
    // the wrap-up would not know it must stop the VM.
    while (!halted_ && !ended_ && !stopping_)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void Node::copy_reported(const CopyReport& r, std::vector<protocol::Event>& events)
{
    const auto sink = std::move(sink_);
    if (!r.ok) {
        say("live copy to host " + std::to_string(cfg_.peer) + " failed (" + r.summary + "): " + r.error,
            LogPriority::warning);
        std::lock_guard lock(mu_);
        status_.copy.active = false;
        status_.copy.last_error = r.error;
        events.push_back(protocol::SyncFailed{});
        return;
    }
    std::lock_guard lock(mu_);
    sender_ = sink->sender();
    log_epoch_ = sink->epoch();
    stream_from_ = r.at;
    streaming_ = true;
    events.push_back(protocol::SyncComplete{sink->epoch(), r.at});
    auto& p = status_.copy;
    p.active = false;
    ++p.copies_done;
    p.last_seconds = seconds_since(sink->started());
    p.last_rounds = r.rounds;
    p.last_pause_ms = r.pause_ms;
    p.last_summary = r.summary;
    p.last_error.clear();
    say("live copy to host " + std::to_string(cfg_.peer) + " done: " + r.summary + "; protected from log entry " +
        std::to_string(r.at + 1));
}

void Node::record_loop()
{
    std::vector<logformat::Entry> log;
    std::vector<protocol::VmOutput> outputs;
    bool vm_stopped = false;
    auto last_details = Clock::now();
    while (!stopping_ && !halted_ && !ended_) {
        std::vector<protocol::Event> events;
        if (!sink_) {
            std::lock_guard lock(mu_);
            if (copy_to_) {
                sink_ = std::make_unique<ChannelCopySink>(std::move(copy_to_), copy_epoch_, stopping_, mu_, status_.copy);
                copy_to_.reset();
            }
            if (sink_)
                exec_->copy_to(*sink_);
        }
        if (sink_ && exec_->copying()) {
            if (auto why = sink_->failed(); !why.empty()) {
                exec_->cancel_copy();
                copy_reported(CopyReport{false, why, 0, "the channel broke"}, events);
            }
        }
        if (Clock::now() - last_details > std::chrono::milliseconds(500)) {
            last_details = Clock::now();
            std::lock_guard lock(mu_);
            status_.backend = exec_->details();
        }
        if (!vm_stopped) {
            if (auto stop = exec_->stopped()) {
                // The VM ended here on purpose: its end goes into the log, and the protocol core
                // ends the pair once the backup acked it.
                vm_stopped = vm_stopped_ = true;
                logformat::Entry end = exec_->end_entry(*stop);
                end.epoch = log_epoch_;
                const auto to = streaming_ ? sender() : nullptr;
                if (to) {
                    while (!to->append(end) && !stopping_)
                        nap();
                    to->flush(true);
                }
                say("the VM ended: " + stop->text + " (log entry " + std::to_string(end.seq) + ")");
                events.push_back(protocol::VmEnded{end.seq, stop->text});
            }
        }
        if (vm_stopped) {
            std::lock_guard lock(mu_);
            vm_events_.insert(vm_events_.end(), events.begin(), events.end());
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            continue;
        }
        {
            const auto to = streaming_ ? sender() : nullptr;
            if (stalled_ || exec_->outputs_full() || (to && to->full())) {
                if (!events.empty()) {
                    std::lock_guard lock(mu_);
                    vm_events_.insert(vm_events_.end(), events.begin(), events.end());
                }
                nap();
                continue;
            }
        }
        log.clear();
        outputs.clear();
        auto ok = exec_->record(log, outputs);
        if (!ok && !exec_->stopped())
            return vm_failed(ok.error());
        // The log's first entries first: a copy that ended in this chunk covers some of them.
        if (!log.empty())
            events.push_back(protocol::VmLogged{log.back().seq});
        if (auto r = exec_->take_copy_report())
            copy_reported(*r, events);
        const auto to = streaming_ ? sender() : nullptr;
        const protocol::Seq from = stream_from_;
        for (auto& e : log) {
            e.epoch = log_epoch_; // the epoch the backup replays this log in
            if (to && e.seq > from)
                while (!to->append(e)) { // the channel's buffer is full: the VM waits
                    if (stopping_)
                        return;
                    nap();
                }
        }
        for (const auto& o : outputs)
            events.push_back(o);
        if (!events.empty()) {
            std::lock_guard lock(mu_);
            vm_events_.insert(vm_events_.end(), events.begin(), events.end());
        }
        if (to && !log.empty())
            to->flush(!outputs.empty());
    }
}

bool Node::receive_copy()
{
    auto began = Clock::now();
    while (!stopping_ && !halted_ && !synced_) {
        std::optional<channel::LogReceiver::ReceivedCopy> got;
        {
            std::lock_guard lock(mu_);
            if (!copy_inbox_.empty()) {
                got.emplace(std::move(copy_inbox_.front()));
                copy_inbox_.pop_front();
            }
        }
        if (!got) {
            nap();
            continue;
        }
        if (const auto* b = std::get_if<channel::CopyBegin>(&got->record)) {
            std::lock_guard lock(mu_);
            status_.copy.start(false, b->pages);
            began = Clock::now();
        } else if (const auto* p = std::get_if<channel::CopyPages>(&got->record)) {
            std::lock_guard lock(mu_);
            auto& s = status_.copy;
            s.pages_copied += p->numbers.size();
            s.pages_done = std::min(s.pages_total, s.pages_copied);
        }
        auto r = exec_->apply_copy(got->record);
        if (!r) {
            say("cannot take the live copy: " + r.error(), LogPriority::warning);
            {
                std::lock_guard lock(mu_);
                copy_applied_ = CopyApplied{got->attempt, false, r.error(), 0};
                status_.copy.last_error = r.error();
            }
            // Let the control thread tell the primary why before this replica halts.
            for (int i = 0; i < 100; ++i) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
                std::lock_guard lock(mu_);
                if (!copy_applied_)
                    break;
            }
            vm_failed("live copy: " + r.error());
            return false;
        }
        if (*r) {
            std::lock_guard lock(mu_);
            copy_applied_ = CopyApplied{got->attempt, true, {}, **r};
            auto& c = status_.copy;
            c.active = false;
            c.last_seconds = seconds_since(began);
            ++c.copies_done;
            c.last_summary = "taken: " + std::to_string(c.pages_copied) + " pages and disk blocks in " +
                             std::to_string(c.last_seconds).substr(0, 4) + " s, the log from entry " +
                             std::to_string(**r + 1);
        }
    }
    return synced_ && !stopping_;
}

void Node::replay_loop()
{
    replaying_ = true;
    std::deque<logformat::Entry> pending;
    bool own_stop_reported = false; // this VM stopped by itself here; the core decides what it means
    auto last_details = Clock::now();
    while (!stopping_ && !halted_ && !go_live_ && !ended_) {
        {
            std::lock_guard lock(mu_);
            while (!inbox_.empty()) {
                pending.push_back(std::move(inbox_.front()));
                inbox_.pop_front();
            }
        }
        if (Clock::now() - last_details > std::chrono::milliseconds(500)) {
            last_details = Clock::now();
            std::lock_guard lock(mu_);
            status_.backend = exec_->details();
        }
        if (auto stop = exec_->stopped()) {
            // The guest shut down or crashed in replay (as it did on the primary, whose vm_end
            // is then on its way), or the administrator destroyed the VM here. The protocol
            // core waits for the end or halts; the loop ends when it did either.
            if (!own_stop_reported) {
                own_stop_reported = true;
                vm_stopped_ = true;
                const bool destroyed = stop->reason == logformat::VmEnd::Reason::destroyed;
                say("the VM ended here in replay: " + stop->text + (destroyed ? "" : "; waiting for the primary's end"));
                std::lock_guard lock(mu_);
                vm_events_.push_back(protocol::VmStoppedHere{destroyed, stop->text});
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            continue;
        }
        auto r = exec_->replay(pending, final_replay_);
        if (!r) {
            if (exec_->stopped())
                continue;
            return vm_failed(r.error());
        }
        executed_ = *r;
    }
}

// ----- control thread -----------------------------------------------------------------------------

void Node::step(const protocol::Event& e)
{
    for (const auto& a : replica_.step(now_us(), e))
        act(a);
    after_step();
}

void Node::took_over(const std::string& what)
{
    const auto unix_ms = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    std::lock_guard lock(mu_);
    status_.last_failover_unix_ms = unix_ms;
    status_.last_failover = what;
}

void Node::start_copy()
{
    if (replica_.role() != protocol::Role::primary_alone)
        return;
    channel::ChannelConfig to = cfg_.channel;
    to.address = cfg_.channel_peer;
    to.epoch = replica_.epoch();
    to.send_copy = true;
    say("host " + std::to_string(cfg_.peer) + " asks to be the backup: starting a live copy to " + to.address.to_string());
    std::lock_guard lock(mu_);
    sender_ = std::make_shared<channel::LogSender>(to, *cfg_.tls_client);
    copy_to_ = sender_;
    copy_epoch_ = replica_.epoch();
}

void Node::act(const protocol::Action& a)
{
    std::visit(
        [this](const auto& x) {
            using A = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<A, protocol::Send>) {
                if (const auto* hb = std::get_if<protocol::HeartbeatMsg>(&x.msg))
                    (void)heartbeats_->send(*hb); // a failed send is noticed by the peer's detector
                // Log and ack messages travel on the logging channel itself.
            } else if constexpr (std::is_same_v<A, protocol::ReleaseOutputs>) {
                exec_->release_outputs(x.up_to_id);
            } else if constexpr (std::is_same_v<A, protocol::StallVm>) {
                stalled_ = true;
            } else if constexpr (std::is_same_v<A, protocol::ResumeVm>) {
                stalled_ = false;
            } else if constexpr (std::is_same_v<A, protocol::RequestArbiter>) {
                say((replica_.role() == protocol::Role::starting
                         ? std::string("claiming the VM")
                         : "peer host " + std::to_string(cfg_.peer) + " suspected (" + replica_.reason() + ")") +
                        ": test-and-set epoch " + std::to_string(x.expected) + " -> " + std::to_string(x.next) +
                        // What going live must replay first (bounded: Config::max_replay_backlog).
                        (protocol::is_backup(replica_.role())
                             ? "; " + std::to_string(replica_.received() - replica_.executed()) +
                                   " received log entries wait for replay"
                             : std::string()),
                    replica_.role() == protocol::Role::starting ? LogPriority::info : LogPriority::warning);
                // The owner the record has at the expected epoch, as the record says: this
                // host may not know it (a backup that took its copy in the epoch the primary
                // claimed after this host read the record). Moving the record on from that
                // epoch is the arbitration, whoever owns it; the compare-and-write still fails
                // if it moved meanwhile.
                // A record that cannot be read is an unknown outcome at once (the storage may
                // be cut off: each attempt costs the LUN's timeout).
                const auto now = arbiter_->read();
                if (now && now->epoch == x.expected)
                    record_owner_ = now->owner;
                arbiter::AcquireResult r;
                if (now) {
                    r = arbiter_->acquire(x.expected, record_owner_);
                } else {
                    r.outcome = arbiter::Outcome::unknown;
                    r.detail = "cannot read the record: " + now.error();
                }
                say(std::string("test-and-set ") + std::string(arbiter::outcome_name(r.outcome)) +
                        (r.detail.empty() ? "" : ": " + r.detail),
                    r.outcome == arbiter::Outcome::unknown ? LogPriority::warning : LogPriority::notice);
                protocol::ArbiterDone done;
                done.outcome = r.outcome == arbiter::Outcome::won    ? protocol::ArbiterOutcome::won
                               : r.outcome == arbiter::Outcome::lost ? protocol::ArbiterOutcome::lost
                                                                     : protocol::ArbiterOutcome::unknown;
                if (r.holder_known) {
                    done.record_epoch = r.holder.epoch;
                    done.record_owner = r.holder.owner;
                    if (r.outcome == arbiter::Outcome::won)
                        record_owner_ = r.holder.owner;
                }
                step(done);
            } else if constexpr (std::is_same_v<A, protocol::Fence>) {
                const auto r = arbiter_->fence_peer();
                if (!r.ok())
                    say("fencing host " + std::to_string(x.loser) + " on the shared LUN: " + r.message,
                        LogPriority::warning);
            } else if constexpr (std::is_same_v<A, protocol::GoLive>) {
                if (replaying_) {
                    say("going live in epoch " + std::to_string(x.epoch), LogPriority::notice);
                    go_live_ = true;
                    took_over("went live in epoch " + std::to_string(x.epoch) + " (" + replica_.reason() + ")");
                }
            } else if constexpr (std::is_same_v<A, protocol::HaltVm>) {
                const std::size_t dropped = exec_->discard_outputs();
                {
                    std::lock_guard lock(mu_);
                    failure_ = x.reason;
                }
                halted_ = true;
                say("halting the VM for good: " + x.reason + " (" + std::to_string(dropped) + " held outputs never left)",
                    LogPriority::warning);
            } else if constexpr (std::is_same_v<A, protocol::EndVm>) {
                ended_ = true;
                say("the pair ends: " + x.reason);
            } else if constexpr (std::is_same_v<A, protocol::StartReprotection>) {
                start_copy();
            }
        },
        a);
}

void Node::after_step()
{
    const protocol::Role role = replica_.role(), before = last_role_;
    last_role_ = role;
    // A primary that wins alone releases everything and from then on lets outputs through; its
    // old channel goes (a joining backup gets a new one, with a copy). (The arbitration may
    // have been asked for and decided within one step.)
    const bool was_primary = before == protocol::Role::starting || before == protocol::Role::primary_protected ||
                             before == protocol::Role::primary_arbitrating;
    if (role == protocol::Role::primary_alone && was_primary) {
        streaming_ = false;
        exec_->set_alone(true);
        {
            std::lock_guard lock(mu_);
            sender_.reset();
        }
        if (before == protocol::Role::starting) {
            say("running the VM alone in epoch " + std::to_string(replica_.epoch()) +
                ": a backup that asks gets a live copy");
        } else {
            say("running alone in epoch " + std::to_string(replica_.epoch()) + " (held outputs released)",
                LogPriority::notice);
            took_over("continued alone in epoch " + std::to_string(replica_.epoch()) + " (" + replica_.reason() + ")");
        }
    }
    if (role == protocol::Role::halted)
        halted_ = true;
}

void Node::take_received_log()
{
    // Right after the channel's pump, before any other event is stepped: the channel acks what
    // it buffered, so every such entry must reach the protocol core and the VM thread before
    // anything (a suspicion, an operator's failover) can freeze this backup. An acked entry
    // left behind in the channel would be one the primary may release outputs for but this
    // backup, going live, never replays.
    if (!receiver_ || replica_.role() != protocol::Role::backup_replaying)
        return;
    std::vector<logformat::Entry> got;
    while (auto e = receiver_->pop())
        got.push_back(std::move(*e));
    if (got.empty())
        return;
    const bool vm_end = std::holds_alternative<logformat::VmEnd>(got.back().payload);
    const protocol::LogMsg msg{replica_.epoch(), got.front().seq, got.back().seq, 0, vm_end};
    {
        std::lock_guard lock(mu_);
        inbox_.insert(inbox_.end(), std::make_move_iterator(got.begin()), std::make_move_iterator(got.end()));
    }
    step(protocol::Received{msg});
}

void Node::pump_channel()
{
    const protocol::Role role = replica_.role();
    const auto out = sender();
    if (out) {
        out->pump(2);
        if (out->copy_state() == channel::CopyState::failed && !streaming_) {
            std::lock_guard lock(mu_);
            if (sender_ == out)
                sender_.reset();
        }
    } else if (receiver_ && (role == protocol::Role::backup_replaying || role == protocol::Role::backup_syncing)) {
        // Once the primary is suspected the backup accepts and acks nothing more; while its
        // replay is too far behind, it reads nothing more (the primary slows down).
        receiver_->set_intake(replica_.takes_log());
        receiver_->pump(2);
        take_received_log();
    } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (!receiver_ || role != protocol::Role::backup_syncing)
        return;
    // Joining: copy records to the VM thread, its answer to the primary, and the primary's
    // confirmation to the protocol core.
    std::optional<CopyApplied> applied;
    {
        std::lock_guard lock(mu_);
        while (auto r = receiver_->pop_copy())
            copy_inbox_.push_back(std::move(*r));
        applied.swap(copy_applied_);
    }
    if (applied) {
        receiver_->copy_applied(applied->attempt, applied->ok, applied->error);
        copy_at_ = applied->at;
        if (!applied->ok)
            return; // the VM thread reports the failure: nothing to replay, ever
    }
    if (receiver_->copy_confirmed()) {
        // Not received(): log entries may have come in with the confirmation.
        const protocol::Seq at = copy_at_;
        step(protocol::SyncComplete{receiver_->epoch(), at});
        take_received_log();
        synced_ = true;
        say("live copy from host " + std::to_string(cfg_.peer) + " applied and confirmed: replaying from entry " +
            std::to_string(at + 1));
    }
}

void Node::control_loop()
{
    protocol::Seq last_acked = 0, last_executed = 0;
    bool was_streaming = false;
    std::shared_ptr<channel::LogSender> watched; // the sender whose connection state was_streaming follows
    std::uint64_t wire_before = 0;
    auto rate_since = Clock::now();
    while (!stopping_) {
        const bool stopped = halted_ || ended_;
        if (stopped) {
            // Stopped for good: no more channel, but the heartbeats say so (the core sends them).
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        } else {
            pump_channel();
        }

        for (const auto& hb : heartbeats_->receive())
            step(protocol::Received{hb});
        // The VM's events first: a SyncComplete must reach the core before the acks that follow.
        std::deque<protocol::Event> events;
        {
            std::lock_guard lock(mu_);
            events.swap(vm_events_);
        }
        for (const auto& e : events)
            step(e);
        const auto out = streaming_ && !stopped ? sender() : nullptr;
        if (out) {
            if (out != watched) {
                watched = out;
                was_streaming = false;
                wire_before = out->wire_bytes_sent();
            }
            const protocol::Seq acked = out->acked();
            if (acked > last_acked) {
                last_acked = acked;
                step(protocol::Received{protocol::AckMsg{replica_.epoch(), acked, 0}});
            }
            if (out->backup_lost_log() && replica_.role() == protocol::Role::primary_protected) {
                say("host " + std::to_string(cfg_.peer) + " restarted and lost the log it had acked: dropping it "
                    "(it rejoins with a live copy)");
                step(protocol::BackupRestarted{});
            }
            const bool streaming = out->streaming();
            if (streaming != was_streaming) {
                was_streaming = streaming;
                if (streaming)
                    step(protocol::ChannelRestored{});
                else
                    step(protocol::ChannelLost{});
            }
        }
        if (replaying_) {
            const protocol::Seq ex = executed_;
            if (ex > last_executed) {
                last_executed = ex;
                step(protocol::ReplayProgress{ex});
            }
        }
        step(protocol::Tick{});
        if (replica_.role() == protocol::Role::going_live)
            final_replay_ = true;
        // The failover's last step as a client sees it: the new primary's first output leaves.
        if (go_live_ && !first_output_seen_ && exec_->released_outputs() > 0) {
            first_output_seen_ = true;
            say("first output released after going live");
        }

        std::lock_guard lock(mu_);
        status_.role = replica_.role();
        status_.epoch = replica_.epoch();
        status_.logged = replica_.logged();
        status_.acked = replica_.acked();
        status_.received = replica_.received();
        status_.executed = replica_.executed();
        status_.held_outputs = exec_->held_outputs();
        status_.released_outputs = exec_->released_outputs();
        status_.reason = replica_.reason();
        status_.heartbeats_rejected = heartbeats_->rejected();
        status_.lag_ms = out ? out->lag().seconds * 1000 : 0;
        status_.channel_up = out ? out->streaming() : receiver_ && !stopped && receiver_->connected();
        if (const double dt = seconds_since(rate_since); dt >= 1.0) {
            const std::uint64_t wire = out ? out->wire_bytes_sent() : 0;
            status_.log_mbit_s = out && wire >= wire_before ? static_cast<double>(wire - wire_before) * 8 / 1e6 / dt : 0;
            wire_before = wire;
            rate_since = Clock::now();
        }
    }
}

} // namespace xenft::daemon
