#include "xenft/daemon/xen_node.hpp"

#include <poll.h>

#include <chrono>
#include <deque>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace xenft::daemon {

using namespace backends::xen;
using Clock = std::chrono::steady_clock;

namespace {

long long ms_between(Clock::time_point from, Clock::time_point to)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}

long long now_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

// Waits up to timeout_ms for any of `fds` to be readable.
void wait_readable(const std::vector<int>& fds, int timeout_ms)
{
    std::vector<pollfd> p;
    for (int fd : fds)
        p.push_back({fd, POLLIN, 0});
    ::poll(p.data(), p.size(), timeout_ms);
}

// The channel's last log line, shared by the senders a primary makes one after another.
struct LastLine {
    std::mutex mu;
    std::string text;
};

// The shared LUN, opened, and its arbitration record as it is now.
struct LunRecord {
    arbiter::Arbiter lun;
    arbiter::Record record;
};
Expected<LunRecord, std::string> read_record(const arbiter::ArbiterConfig& cfg)
{
    auto a = arbiter::Arbiter::open(cfg);
    if (!a)
        return unexpected("the shared LUN: " + a.error());
    auto current = a->read();
    if (!current)
        return unexpected("cannot read the arbitration record: " + current.error());
    return LunRecord{std::move(a).value(), *current};
}

const char* vm_end_text(logformat::VmEnd::Reason r)
{
    switch (r) {
    case logformat::VmEnd::Reason::shut_down: return "the guest shut down";
    case logformat::VmEnd::Reason::crashed: return "the guest crashed";
    case logformat::VmEnd::Reason::destroyed: return "the domain was destroyed";
    }
    return "?";
}

} // namespace

const char* xen_role_name(XenRole r)
{
    switch (r) {
    case XenRole::primary_protected: return "primary, protected";
    case XenRole::primary_alone: return "primary, running alone";
    case XenRole::backup_copying: return "backup, waiting for the live copy";
    case XenRole::backup_replaying: return "backup, replaying";
    case XenRole::live: return "live (was the backup)";
    case XenRole::paused: return "paused (the peer runs the VM)";
    case XenRole::stopped: return "stopped";
    case XenRole::failed: return "failed";
    }
    return "?";
}

// The failure detector: heartbeats every 100 ms from a thread of their own, so that a busy
// replay loop or a digest of all memory never looks like death to the peer. They also say
// whether this host runs the VM: a primary that hears its backup claim the VM (operator
// failover) knows it lost without waiting for silence, and a primary starting while the
// former backup runs the VM live refuses to make a second copy.
class XenNode::PeerWatch {
public:
    PeerWatch(detector::HeartbeatSocket socket, bool primary, std::uint64_t epoch)
        : socket_(std::move(socket)),
          role_(primary ? protocol::Role::primary_protected : protocol::Role::backup_replaying), epoch_(epoch),
          thread_([this] { run(); })
    {
    }
    ~PeerWatch()
    {
        running_ = false;
        thread_.join();
    }
    PeerWatch(const PeerWatch&) = delete;
    PeerWatch& operator=(const PeerWatch&) = delete;

    bool heard() const { return last_heard_ms_ != 0; }
    long long silent_ms() const { return now_ms() - last_heard_ms_; }
    // What this host's heartbeats say from now on (it won a test-and-set and runs the VM).
    void announce(protocol::Role role, std::uint64_t epoch)
    {
        role_ = role;
        epoch_ = epoch;
    }
    // The peer's last heartbeat, within the last second, said it runs the VM.
    bool peer_runs_vm() const { return heard() && silent_ms() < 1000 && protocol::is_primary(peer_role_); }
    std::uint64_t peer_epoch() const { return peer_epoch_; }

private:
    void run()
    {
        while (running_) {
            protocol::HeartbeatMsg m;
            m.epoch = epoch_;
            m.role = role_;
            m.sent_at = static_cast<protocol::Time>(now_ms() * 1000);
            (void)socket_.send(m); // an unreachable peer shows as silence
            pollfd p{socket_.fd(), POLLIN, 0};
            ::poll(&p, 1, 100);
            for (const auto& got : socket_.receive()) {
                peer_role_ = got.role;
                peer_epoch_ = got.epoch;
                last_heard_ms_ = now_ms();
            }
        }
    }

    detector::HeartbeatSocket socket_;
    std::atomic<protocol::Role> role_, peer_role_{protocol::Role::starting};
    std::atomic<std::uint64_t> epoch_, peer_epoch_{0};
    std::atomic<bool> running_{true};
    std::atomic<long long> last_heard_ms_{0};
    std::thread thread_; // last: starts once the rest is ready
};

XenNode::XenNode(XenNodeConfig cfg) : cfg_(std::move(cfg)), name_("domain " + std::to_string(cfg_.domid))
{
    if (!cfg_.log)
        cfg_.log = [](const std::string& line) { std::cerr << line << std::endl; };
    started_ = channel_seen_ = Clock::now();
    status_.domid = cfg_.domid;
    status_.epoch = cfg_.channel.epoch;
    status_.role = cfg_.primary ? XenRole::primary_protected : XenRole::backup_copying;
}

Expected<std::unique_ptr<XenNode>, std::string> XenNode::start(XenNodeConfig cfg)
{
    if (!cfg.tls)
        return unexpected("domain " + std::to_string(cfg.domid) + ": no TLS context for the logging channel");
    std::unique_ptr<XenNode> n(new XenNode(std::move(cfg)));
    auto& c = n->cfg_;
    const std::string peer_text = c.channel.address.to_string();
    // The channel's lines, once each while they repeat (a backup that is not up yet makes every
    // connection attempt fail the same way, and a new sender starts each attempt afresh).
    c.channel.log = [log = c.log, name = n->name_, last = std::make_shared<LastLine>()](const std::string& line) {
        std::lock_guard lock(last->mu);
        if (line == last->text)
            return;
        last->text = line;
        log(name + ": channel: " + line);
    };
    // The channel and the heartbeats first: if either cannot open, the domain was not touched.
    if (c.primary) {
        c.channel.send_copy = true; // every backup starts from a copy of the running domain
        n->sender_ = std::make_unique<channel::LogSender>(c.channel, *c.tls);
    } else {
        auto r = channel::LogReceiver::listen(c.channel, *c.tls);
        if (!r)
            return unexpected(n->name_ + ": " + r.error());
        n->receiver_ = std::make_unique<channel::LogReceiver>(std::move(r).value());
    }
    if (c.heartbeat) {
        auto socket = detector::HeartbeatSocket::open(*c.heartbeat);
        if (!socket)
            return unexpected(n->name_ + ": heartbeats: " + socket.error());
        n->watch_ = std::make_unique<PeerWatch>(std::move(socket).value(), c.primary, c.channel.epoch);
    }
    if (c.primary) {
        // The pair's epoch is the record's (earlier failovers moved it past the configured one).
        auto record = n->learn_epoch();
        if (!record)
            return unexpected(n->name_ + ": " + record.error());
        // The peer won the record last: if it runs the VM now (live after a failover), a
        // domain here would be a second copy once it found no backup and won the next epoch.
        if (n->watch_ && record->owner == c.channel.peer) {
            for (int i = 0; i < 30 && !n->watch_->heard(); ++i)
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            if (n->watch_->peer_runs_vm())
                return unexpected(n->name_ + ": host " + std::to_string(c.channel.peer) +
                                  " runs this VM (it won epoch " + std::to_string(n->status().epoch) +
                                  " and its heartbeats say it runs it): not starting a second copy here");
        }
        auto d = RecordingDomain::start(c.domid, c.spec);
        if (!d)
            return unexpected(d.error());
        n->primary_ = std::move(d).value();
        n->say("records (NIC on " + c.spec.devices.tap + " behind the output gate); its log goes to the backup at " +
               peer_text);
        n->thread_ = std::thread([raw = n.get()] { raw->run_primary(); });
    } else {
        auto d = ReplayingDomain::await_copy(c.domid, c.spec);
        if (!d)
            return unexpected(d.error());
        n->backup_ = std::move(d).value();
        n->say("backup (NIC on " + c.spec.devices.tap + ", silent until it goes live): waits at " + peer_text +
               " for the primary's live copy, then replays its log");
        n->thread_ = std::thread([raw = n.get()] { raw->run_backup(); });
    }
    return n;
}

XenNode::~XenNode()
{
    stop_ = true;
    if (thread_.joinable())
        thread_.join();
}

Expected<bool, std::string> XenNode::request_failover()
{
    const auto role = status().role;
    if (role != XenRole::backup_replaying || finished_)
        return unexpected(name_ + " is " + xen_role_name(role) +
                          " on this host: failover is asked of the backup that replays the log");
    failover_requested_ = true;
    return true;
}

bool XenNode::domain_ended() const
{
    if (!finished_)
        return false;
    if (primary_)
        return primary_->end_state().has_value();
    return backup_ && backup_->end_state().has_value();
}

XenNodeStatus XenNode::status() const
{
    std::lock_guard lock(status_mu_);
    return status_;
}

void XenNode::say(const std::string& line) const
{
    cfg_.log(name_ + ": " + line);
}

long long XenNode::ms_since_start() const
{
    return ms_between(started_, Clock::now());
}

void XenNode::record_failover(const std::string& what)
{
    const auto unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now().time_since_epoch());
    std::lock_guard lock(status_mu_);
    status_.last_failover = what;
    status_.last_failover_unix_ms = static_cast<std::uint64_t>(unix_ms.count());
}

// The loops' counters; the epoch, the copies, the failover and the failure stay as the events
// set them.
void XenNode::publish(XenNodeStatus s)
{
    std::lock_guard lock(status_mu_);
    s.epoch = status_.epoch;
    s.copies = status_.copies;
    s.last_copy = status_.last_copy;
    s.last_failover = status_.last_failover;
    s.last_failover_unix_ms = status_.last_failover_unix_ms;
    s.failure = status_.failure;
    status_ = std::move(s);
}

void XenNode::end(XenRole role, const std::string& why)
{
    {
        std::lock_guard lock(status_mu_);
        status_.role = role;
        if (role == XenRole::failed)
            status_.failure = why;
    }
    if (role == XenRole::failed)
        say("protection failed: " + why);
    else
        say(why);
    finished_ = true;
}

// The peer is gone: its heartbeats stopped (after it was heard once), or without heartbeats
// the channel has been down for failover_ms after it was up once.
bool XenNode::peer_lost(bool channel_up)
{
    if (channel_up) {
        channel_ever_up_ = true;
        channel_seen_ = Clock::now();
    }
    const auto limit = static_cast<long long>(cfg_.failover_ms);
    if (watch_)
        return watch_->heard() && watch_->silent_ms() >= limit;
    return channel_ever_up_ && !channel_up && ms_between(channel_seen_, Clock::now()) >= limit;
}

// The epoch of the arbitration record now: the pair's epoch as this host learns it (the
// primary when it starts, the backup once it has its copy; the primary's copy is taken in the
// epoch the record has then, as no test-and-set runs while a copy is under way).
Expected<arbiter::Record, std::string> XenNode::learn_epoch()
{
    if (!cfg_.arbiter)
        return arbiter::Record{cfg_.channel.vm_id, cfg_.channel.epoch, 0, 0};
    auto r = read_record(*cfg_.arbiter);
    if (!r)
        return unexpected(r.error());
    std::lock_guard lock(status_mu_);
    status_.epoch = r->record.epoch;
    return r->record;
}

// The test-and-set on the shared LUN: won means this host runs the VM. It moves the record
// only from the epoch this host knows: a record already past it means the peer took the VM
// over (the link between the hosts failed, not the peer), and this host must not run it too.
// An error counts as lost: a host that cannot tell must not run a second copy.
bool XenNode::arbitrate(const char* side)
{
    if (!cfg_.arbiter) {
        say(std::string(side) + ": no shared LUN configured: taking over without arbitration");
        return true;
    }
    auto read = read_record(*cfg_.arbiter);
    if (!read) {
        say(std::string(side) + ": test-and-set not possible: " + read.error());
        return false;
    }
    const arbiter::Record current = read->record;
    const std::uint64_t known = status().epoch;
    if (current.epoch != known) {
        say(std::string(side) + ": test-and-set on " + cfg_.arbiter->lun.url + ": lost: the record is at epoch " +
            std::to_string(current.epoch) + " (host " + std::to_string(current.owner) + "), this host knew epoch " +
            std::to_string(known) + ": the peer has taken the VM over");
        return false;
    }
    const auto r = read->lun.acquire(current.epoch, current.owner);
    say(std::string(side) + ": test-and-set on " + cfg_.arbiter->lun.url + " epoch " + std::to_string(current.epoch) +
        " -> " + std::to_string(current.epoch + 1) + ": " + std::string(arbiter::outcome_name(r.outcome)) +
        (r.detail.empty() ? "" : " (" + r.detail + ")"));
    if (r.outcome == arbiter::Outcome::won) {
        std::lock_guard lock(status_mu_);
        status_.epoch = current.epoch + 1;
    }
    return r.outcome == arbiter::Outcome::won;
}

namespace {

// The logging channel's pump, in a thread of its own for as long as this lives.
class SenderPump {
public:
    explicit SenderPump(channel::LogSender& s) : thread_([this, &s] {
        while (running_)
            s.pump(20);
    })
    {
    }
    ~SenderPump()
    {
        running_ = false;
        thread_.join();
    }
    SenderPump(const SenderPump&) = delete;
    SenderPump& operator=(const SenderPump&) = delete;

private:
    std::atomic<bool> running_{true};
    std::thread thread_;
};

// A live copy's way to the backup: the sender's copy queue (its pump thread writes it out).
// The domain's thread waits here while the queue is full; a broken copy ends the wait.
class ChannelCopySink final : public CopySink {
public:
    ChannelCopySink(channel::LogSender& s, std::uint64_t epoch, const std::atomic<bool>& stop)
        : sender_(s), epoch_(epoch), stop_(stop)
    {
    }
    bool has_room() const override
    {
        return sender_.copy_state() == channel::CopyState::copying &&
               sender_.copy_backlog() < channel::LogSender::kCopyQueueBytes / 2;
    }
    std::size_t backlog() const override { return sender_.copy_backlog(); }
    Expected<bool, std::string> send(channel::CopyRecord r) override
    {
        if (auto* f = std::get_if<channel::CopyFinal>(&r)) {
            f->epoch = epoch_;
            f->next_seq = sender_.appended() + 1;
        }
        while (!sender_.append_copy(r)) {
            if (auto why = broken())
                return unexpected(*why);
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        if (auto why = broken())
            return unexpected(*why);
        return true;
    }
    Expected<bool, std::string> finish() override
    {
        while (sender_.copy_state() == channel::CopyState::copying) {
            if (stop_)
                return unexpected(std::string("xenftd is stopping"));
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        if (sender_.copy_state() != channel::CopyState::done)
            return unexpected(sender_.copy_error());
        return true;
    }

private:
    std::optional<std::string> broken() const
    {
        if (stop_)
            return "xenftd is stopping";
        if (sender_.copy_state() == channel::CopyState::failed)
            return sender_.copy_error();
        return std::nullopt;
    }
    channel::LogSender& sender_;
    std::uint64_t epoch_;
    const std::atomic<bool>& stop_;
};

} // namespace

void XenNode::record_copy(const std::string& what)
{
    std::lock_guard lock(status_mu_);
    ++status_.copies;
    status_.last_copy = what;
}

void XenNode::run_primary()
{
    std::optional<SenderPump> pump(std::in_place, *sender_);
    std::optional<ChannelCopySink> sink;
    // A fresh channel for the next backup (a sender copies once, on its first connection).
    auto renew_sender = [&] {
        pump.reset();
        sink.reset();
        sender_ = std::make_unique<channel::LogSender>(cfg_.channel, *cfg_.tls);
        pump.emplace(*sender_);
    };

    // A new sender at most this often (each one tries to connect at once).
    constexpr long long kRenewMs = 1000;
    auto renewed = Clock::now();
    primary_->await_backup();
    XenLog log;
    XenLogWriter writer;
    std::vector<logformat::Entry> entries;
    std::deque<std::uint64_t> item_last_seq; // the seq of each unacked item's last entry
    // log.front() is item number front_item (items count from the domain's start); the
    // backup's copy covers the first copied_through of them.
    std::uint64_t front_item = 0, copied_through = 0;
    std::uint64_t next_seq = 1, items_acked = 0;
    auto last_status = Clock::now();
    bool alone = false, copied = false;

    // Into the channel, whole items at a time, while it has room (else they wait in `log`
    // until acks make room). False: an item is larger than the channel's whole buffer.
    auto ship = [&]() -> bool {
        while (!log.empty()) {
            entries.clear();
            writer.write(log.front(), entries);
            std::size_t done = 0;
            for (auto& e : entries) {
                e.epoch = cfg_.channel.epoch;
                e.seq = next_seq;
                if (!sender_->append(e))
                    break;
                ++next_seq;
                ++done;
            }
            if (done != 0 && done < entries.size())
                return false;
            if (done == 0)
                return true; // full: the backup is behind
            item_last_seq.push_back(next_seq - 1);
            log.pop_front();
            ++front_item;
        }
        return true;
    };
    // Outputs leave once the backup acked every item up to them.
    auto take_acks = [&] {
        const auto acked = sender_->acked();
        while (!item_last_seq.empty() && item_last_seq.front() <= acked) {
            item_last_seq.pop_front();
            ++items_acked;
        }
        primary_->acked(items_acked);
    };
    // The domain ended on this host, by the guest's doing or the administrator's, not by a
    // failure of the host: a backup that has the copy is told through the log (vm_end) so
    // that it does not take over a VM that was meant to end, and the guest's last outputs
    // leave once the backup acked the log up to there. A backup that does not ack in time
    // (its host failed too) may take over after all; the line says so.
    auto end_orderly = [&](const DomainEnd& why) {
        if (!copied)
            return end(XenRole::stopped, "ended: " + why.text +
                                             (alone ? " (running alone)" : " (no backup had its live copy)"));
        constexpr auto kEndAck = std::chrono::seconds(5);
        const auto deadline = Clock::now() + kEndAck;
        const auto held = primary_->outputs_held();
        std::optional<std::uint64_t> end_seq;
        while (Clock::now() < deadline) {
            if (!ship())
                break;
            if (!end_seq && log.empty()) {
                const logformat::Entry e{cfg_.channel.epoch, next_seq, 0, primary_->exits(),
                                         logformat::VmEnd{why.reason}};
                if (sender_->append(e))
                    end_seq = next_seq++;
            }
            sender_->flush(true);
            take_acks();
            if (end_seq && sender_->acked() >= *end_seq)
                return end(XenRole::stopped, "ended: " + why.text + " at exit " + std::to_string(primary_->exits()) +
                                                 "; the backup acknowledged the end and does not take over; " +
                                                 std::to_string(held) + " held outputs released");
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        end(XenRole::stopped, "ended: " + why.text + "; the backup did not acknowledge the end within " +
                                  std::to_string(std::chrono::seconds(kEndAck).count()) +
                                  " s: it may take the VM over; " + std::to_string(primary_->outputs_held()) +
                                  " outputs still held are dropped");
    };

    while (!stop_) {
        // The backup is gone, or it says it runs the VM (it took it over: operator failover).
        const bool deposed = copied && !alone && watch_ && watch_->peer_runs_vm();
        const bool lost = copied && !alone && (deposed || peer_lost(sender_->streaming()));
        // A backup that never took a copy (its host is down, or not set up): the guest must
        // not wait for acks that cannot come. Decided like a loss: the test-and-set, then alone.
        // A copy under way is let finish (the channel fails it if it stops making progress).
        const bool never_came = !copied && !alone && !sink &&
                                ms_since_start() >= static_cast<long long>(cfg_.backup_wait_ms);
        if (lost || never_came) {
            const auto t0 = Clock::now();
            say("[" + std::to_string(ms_since_start()) + " ms] " +
                (deposed ? "the backup says it runs the VM now (epoch " + std::to_string(watch_->peer_epoch()) +
                               " in its heartbeats); "
                 : lost  ? "the backup is lost: no " + std::string(watch_ ? "heartbeat" : "channel") + " for " +
                              std::to_string(cfg_.failover_ms) + " ms; "
                         : "no backup took a copy within " + std::to_string(cfg_.backup_wait_ms) +
                              " ms of the start; ") +
                std::to_string(primary_->outputs_held()) + " outputs held");
            if (!arbitrate("primary")) {
                // The backup took over (or it cannot be known): this copy of the VM must not run.
                (void)primary_->pause();
                record_failover("lost the test-and-set: domain paused, held outputs dropped");
                return end(XenRole::paused, "[" + std::to_string(ms_since_start()) + " ms] lost: " + name_ +
                                                " paused, its held outputs dropped");
            }
            primary_->continue_alone();
            if (watch_)
                watch_->announce(protocol::Role::primary_alone, status().epoch);
            alone = true;
            copied = false;
            const std::string what = "won: " + name_ + " continues alone, its outputs leave at once (" +
                                     std::to_string(ms_between(t0, Clock::now())) +
                                     " ms after the loss); a backup that comes gets a live copy";
            say("[" + std::to_string(ms_since_start()) + " ms] " + what);
            {
                // The role with the failover, as the backup's go-live does: `xenft status` read
                // between the two showed "primary, protected" at the new epoch (seen in the lab).
                auto st = status();
                st.role = XenRole::primary_alone;
                publish(std::move(st));
            }
            record_failover(what);
            primary_->cancel_copy();
            renew_sender();
        }
        if (auto why = primary_->end_state())
            return end_orderly(*why);
        // A backup connected and waits for its copy: the domain takes it at its next ioreq.
        if (!copied && !sink && sender_->copy_state() == channel::CopyState::copying) {
            sink.emplace(*sender_, cfg_.channel.epoch, stop_);
            primary_->copy_to(*sink);
            say("[" + std::to_string(ms_since_start()) + " ms] a backup at " + cfg_.channel.address.to_string() +
                " waits for a live copy: memory goes in rounds while the domain runs");
        }
        wait_readable(primary_->wait_fds(), primary_->copying() ? 1 : 20);
        if (auto r = primary_->step(log, 0); !r) {
            if (auto why = primary_->end_state()) // destroyed under us: its end, not an error
                return end_orderly(*why);
            return end(XenRole::failed, r.error());
        }
        if (auto o = primary_->take_copy_outcome()) {
            if (o->ok) {
                copied = true;
                copied_through = o->items;
                items_acked = o->items; // the backup has their effects
                item_last_seq.clear();
                next_seq = sender_->appended() + 1;
                const std::string what = "sent to " + cfg_.channel.address.to_string() + " at exit " +
                                         std::to_string(o->exit) + ": " + std::to_string(o->pages) + " pages in " +
                                         std::to_string(o->rounds) + " rounds, then " + std::to_string(o->final_pages) +
                                         " pages and " + std::to_string(o->disk_blocks) +
                                         " disk blocks in the final pause; the vCPU waited " +
                                         std::to_string(o->pause_ms) + " ms, the copy took " + std::to_string(o->ms) +
                                         " ms";
                say("[" + std::to_string(ms_since_start()) + " ms] live copy " + what + "; protected" +
                    (alone ? " again" : ""));
                record_copy(what);
                primary_->protected_by_backup();
                alone = false;
            } else {
                say("[" + std::to_string(ms_since_start()) + " ms] live copy to " + cfg_.channel.address.to_string() +
                    " failed after " + std::to_string(o->ms) + " ms: " + o->error + "; the next backup that asks gets a new one");
                renew_sender();
            }
            sink.reset();
        }
        // A sender whose connection broke before its copy was complete (or that could not
        // connect at all: the backup is not up yet) sends no copy again: a fresh one tries.
        if (!copied && sender_->copy_state() == channel::CopyState::failed &&
            ms_between(renewed, Clock::now()) >= kRenewMs) {
            if (sink) {
                primary_->cancel_copy();
                say("live copy to " + cfg_.channel.address.to_string() + " failed before it was complete: " +
                    sender_->copy_error());
            }
            renew_sender();
            renewed = Clock::now();
        }
        if (!copied) {
            // No backup has the domain: the log has no reader (its effects go in the next copy).
            front_item += log.size();
            log.clear();
        } else {
            // The items before the copy point are in the copy.
            while (!log.empty() && front_item < copied_through) {
                log.pop_front();
                ++front_item;
            }
            if (!ship())
                return end(XenRole::failed, "the logging channel's buffer filled in the middle of a log item "
                                            "(channel buffer_bytes is too small for one item)");
            sender_->flush(primary_->outputs_held() > 0);
            take_acks();
        }
        XenNodeStatus s;
        s.role = alone ? XenRole::primary_alone : XenRole::primary_protected;
        s.domid = cfg_.domid;
        s.exits = primary_->exits();
        s.items = primary_->appended();
        s.items_acked = items_acked;
        s.entries = next_seq - 1;
        s.held_outputs = primary_->outputs_held();
        s.channel_up = sender_->streaming();
        s.digests = primary_->digests();
        s.last_digest = primary_->last_digest();
        s.digest_ms = primary_->digest_ms();
        s.frames_in = primary_->frames_in();
        s.frames_out = primary_->frames_out();
        if (cfg_.status_every_ms && ms_between(last_status, Clock::now()) >= static_cast<long long>(cfg_.status_every_ms)) {
            last_status = Clock::now();
            say("[" + std::to_string(ms_since_start()) + " ms] primary at exit " + std::to_string(s.exits) + "; " +
                std::to_string(s.items) + " items logged (" + std::to_string(s.entries) + " entries, " +
                std::to_string(sender_->acked()) + " acked); digests " + std::to_string(s.digests) +
                " (last at exit " + std::to_string(s.last_digest.exit) + ", " + std::to_string(s.digest_ms) +
                " ms); frames in " + std::to_string(s.frames_in) + ", out " + std::to_string(s.frames_out) +
                (alone ? "; alone" : copied ? (s.channel_up ? "" : "; channel down") : "; waiting for a backup"));
        }
        publish(std::move(s));
    }
    // xenftd is stopping. `xl destroy` stops it right after destroying the domain: that is an
    // end. Otherwise the domain would run on without its devices (Xen answers their accesses
    // with nothing) while the backup takes over: it is paused instead.
    if (auto why = primary_->end_state())
        return end_orderly(*why);
    const auto paused = primary_->pause();
    end(XenRole::stopped, paused ? "stopped: xenftd is stopping while the domain runs; the domain is paused (it has "
                                   "no devices without xenftd); a backup takes the VM over"
                                 : "stopped: xenftd is stopping while the domain runs, and " + paused.error());
}

void XenNode::run_backup()
{
    struct CopyAnswer {
        std::uint64_t attempt;
        bool ok;
        std::string reason;
    };
    std::mutex mu;
    std::deque<logformat::Entry> inbox;
    std::deque<channel::LogReceiver::ReceivedCopy> copies;
    std::optional<CopyAnswer> answer;
    std::atomic<bool> pumping{true}, channel_up{false};
    std::atomic<std::uint64_t> acks_sent{0};
    receiver_->await_copy(cfg_.channel.epoch);
    std::thread pump([&] {
        while (pumping) {
            receiver_->pump(5);
            std::lock_guard lock(mu);
            while (auto c = receiver_->pop_copy())
                copies.push_back(std::move(*c));
            if (answer) {
                receiver_->copy_applied(answer->attempt, answer->ok, answer->reason);
                answer.reset();
            }
            while (auto e = receiver_->pop())
                inbox.push_back(std::move(*e));
            channel_up = receiver_->connected();
            acks_sent = receiver_->acks_sent();
        }
    });
    struct Join {
        std::atomic<bool>& flag;
        std::thread& t;
        void now()
        {
            flag = false;
            if (t.joinable())
                t.join();
        }
        ~Join() { now(); }
    } join{pumping, pump};

    // The live copy first: the domain stays paused until its final record is in.
    {
        XenNodeStatus s;
        s.role = XenRole::backup_copying;
        s.domid = cfg_.domid;
        publish(std::move(s));
    }
    const auto copy_began = Clock::now();
    std::uint64_t pages = 0;
    while (!stop_ && !backup_->replaying()) {
        std::deque<channel::LogReceiver::ReceivedCopy> got;
        {
            std::lock_guard lock(mu);
            got.swap(copies);
        }
        for (auto& c : got) {
            if (std::holds_alternative<channel::CopyBegin>(c.record))
                pages = 0;
            if (const auto* p = std::get_if<channel::CopyPages>(&c.record))
                pages += p->numbers.size();
            const bool final = std::holds_alternative<channel::CopyFinal>(c.record);
            auto r = backup_->apply_copy(c.record);
            if (!r) {
                {
                    std::lock_guard lock(mu);
                    answer = CopyAnswer{c.attempt, false, r.error()};
                }
                // Let the pump tell the primary why, then stop: the domains do not match.
                for (int i = 0; i < 100; ++i) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(10));
                    std::lock_guard lock(mu);
                    if (!answer)
                        break;
                }
                return end(XenRole::failed, r.error());
            }
            if (final) {
                std::lock_guard lock(mu);
                answer = CopyAnswer{c.attempt, true, {}};
                break;
            }
        }
        if (backup_->replaying()) {
            const std::string what = "taken at the primary's exit " + std::to_string(backup_->exit_base()) + ": " +
                                     std::to_string(pages) + " pages and disk blocks, " +
                                     std::to_string(ms_between(copy_began, Clock::now())) + " ms after this node started";
            say("[" + std::to_string(ms_since_start()) + " ms] live copy " + what + "; replaying");
            record_copy(what);
            // The epoch the primary runs in, for the test-and-set: unknown, no takeover.
            if (auto e = learn_epoch(); !e)
                say("cannot learn the pair's epoch (" + e.error() + "): a test-and-set from epoch " +
                    std::to_string(status().epoch) + " may fail, and this backup then does not take over");
            break;
        }
        if (peer_lost(channel_up))
            return end(XenRole::failed, "the primary was lost before its live copy was complete: this backup has no "
                                        "state to go live with (its domain stays paused)");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (stop_)
        return end(XenRole::stopped, "stopped before the live copy was complete");

    XenLog log;
    XenLogReader reader;
    std::uint64_t entries = 0, items = 0;
    std::optional<logformat::Entry> primary_end; // the primary's vm_end entry
    std::optional<DomainEnd> own_end;             // this domain ended (in replay, or destroyed here)
    Clock::time_point own_end_wait{};
    // The guest shut down or crashed in replay as it did on the primary (wait a little for its
    // vm_end), or the administrator destroyed this domain here (nothing to wait for then).
    auto ended_here = [&](DomainEnd why) {
        own_end_wait = Clock::now() + std::chrono::seconds(why.reason == logformat::VmEnd::Reason::destroyed ? 0 : 3);
        own_end = std::move(why);
    };
    auto last_status = Clock::now();
    auto status_now = [&] {
        XenNodeStatus s;
        s.role = XenRole::backup_replaying;
        s.domid = cfg_.domid;
        s.exits = backup_->exits();
        s.items = items;
        s.items_acked = backup_->taken();
        s.entries = entries;
        s.channel_up = channel_up;
        s.digests = backup_->digests_matched();
        s.last_digest = backup_->last_digest();
        s.frames_in = backup_->frames_replayed();
        s.frames_out = backup_->frames_resent();
        return s;
    };
    while (!stop_) {
        std::deque<logformat::Entry> got;
        {
            std::lock_guard lock(mu);
            got.swap(inbox);
        }
        for (const auto& e : got) {
            ++entries;
            if (std::holds_alternative<logformat::VmEnd>(e.payload)) {
                primary_end = e;
                break; // nothing follows it
            }
            auto item = reader.read(e);
            if (!item)
                return end(XenRole::failed, "log entry " + std::to_string(e.seq) + ": " + item.error());
            if (*item) {
                log.push_back(std::move(**item));
                ++items;
            }
        }
        if (primary_end || failover_requested_)
            break;
        if (own_end) {
            // The guest ended here in replay where it ended on the primary, whose vm_end is on
            // its way: acking it tells the primary that this silence is not a failure.
            if (Clock::now() >= own_end_wait || peer_lost(channel_up))
                break;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            continue;
        }
        if (peer_lost(channel_up)) {
            std::lock_guard lock(mu);
            if (inbox.empty())
                break; // the primary is gone, and everything it sent is here
            continue;
        }
        // This domain ended by itself (see ended_here).
        if (auto why = backup_->end_state()) {
            ended_here(std::move(*why));
            continue;
        }
        wait_readable(backup_->wait_fds(), 5);
        if (auto r = backup_->step(log, 0); !r) {
            if (auto why = backup_->end_state()) {
                ended_here(std::move(*why));
                continue;
            }
            return end(XenRole::failed, r.error());
        }
        auto s = status_now();
        if (cfg_.status_every_ms && ms_between(last_status, Clock::now()) >= static_cast<long long>(cfg_.status_every_ms)) {
            last_status = Clock::now();
            say("[" + std::to_string(ms_since_start()) + " ms] backup at exit " + std::to_string(s.exits) + "; " +
                std::to_string(entries) + " entries received, " + std::to_string(log.size()) +
                " items waiting; digests matched " + std::to_string(s.digests) + " (last at exit " +
                std::to_string(s.last_digest.exit) + "); frames replayed " + std::to_string(s.frames_in));
        }
        publish(std::move(s));
    }
    if (stop_)
        return end(XenRole::stopped, "stopped before any failover; digests matched " +
                                         std::to_string(backup_->digests_matched()));
    if (primary_end) {
        // The pump acks the entry first: on that ack the primary releases the guest's last
        // outputs and stops, so its silence that follows is not taken for a failure.
        for (int i = 0; i < 400 && acks_sent < primary_end->seq; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        const bool told = acks_sent >= primary_end->seq;
        join.now();
        std::string here;
        if (own_end) {
            here = name_ + " ended here too: " + own_end->text;
        } else {
            auto down = backup_->shut_down();
            here = down ? name_ + " powered off (" +
                              (*down ? "its vCPU's waiting ioreq answered unperformed; " : std::string()) +
                              "the toolstack removes it as its on_poweroff says)"
                        : down.error();
        }
        return end(XenRole::stopped,
                   "[" + std::to_string(ms_since_start()) + " ms] the primary's domain ended at its exit " +
                       std::to_string(primary_end->exit) + " (" +
                       vm_end_text(std::get<logformat::VmEnd>(primary_end->payload).reason) +
                       "): the VM is not taken over; " + here +
                       (told ? "" : "; the end could not be acknowledged"));
    }
    if (own_end)
        return end(XenRole::stopped, "[" + std::to_string(ms_since_start()) + " ms] ended: " + own_end->text +
                                         " at exit " + std::to_string(backup_->exits()) +
                                         "; this host no longer protects the VM");
    const auto lost = Clock::now();
    join.now(); // a suspected primary gets no more acks
    const bool by_operator = failover_requested_;
    // No more acks on an operator's failover either (the channel closes): the primary's outputs
    // stay held from here. Once this host won, its heartbeats say so and the primary pauses.
    if (by_operator)
        receiver_.reset();
    say("[" + std::to_string(ms_since_start()) + " ms] " +
        (by_operator ? std::string("operator failover: this backup stops acking; at exit ")
                     : "the primary is lost: no " + std::string(watch_ ? "heartbeat" : "channel") + " for " +
                           std::to_string(cfg_.failover_ms) + " ms; backup at exit ") +
        std::to_string(backup_->exits()) + " with " + std::to_string(log.size()) + " items to replay, " +
        std::to_string(entries) + " entries received; " + std::to_string(backup_->digests_matched()) +
        " digests matched");
    if (!arbitrate("backup")) {
        record_failover("lost the test-and-set: the primary runs on");
        return end(XenRole::paused, "[" + std::to_string(ms_since_start()) + " ms] lost: the primary runs on; " +
                                        name_ + " stays a stopped replica");
    }
    if (watch_)
        watch_->announce(protocol::Role::primary_alone, status().epoch);
    if (auto r = backup_->go_live(log); !r)
        return end(XenRole::failed, r.error());
    const std::string what = std::string(by_operator ? "operator failover: " : "") + "went live at exit " +
                             std::to_string(backup_->live_exit()) + ", " +
                             std::to_string(ms_between(lost, Clock::now())) + " ms after the failover began; " +
                             std::to_string(backup_->digests_matched()) + " digests matched, " +
                             std::to_string(backup_->frames_replayed()) + " frames replayed, " +
                             std::to_string(backup_->frames_resent()) + " sent again, " +
                             std::to_string(backup_->dropped()) + " items of an unfinished exit dropped";
    say("[" + std::to_string(ms_since_start()) + " ms] " + name_ + " " + what);
    {
        auto s = status_now();
        s.role = XenRole::live;
        s.exits = backup_->live_exit();
        publish(std::move(s));
    }
    record_failover(what);
    auto done = backup_->run_live(stop_);
    if (!done)
        return end(XenRole::failed, "live: " + done.error());
    end(XenRole::stopped, "[" + std::to_string(ms_since_start()) + " ms] live " + name_ + ": " + *done);
}

} // namespace xenft::daemon
