#include "xenft/daemon/node.hpp"

#include <algorithm>
#include <iostream>

namespace xenft::daemon {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kExitsPerChunk = 32;
constexpr protocol::Time kStartupGraceUs = 10'000'000;
// Live copy: the pause ends the rounds once a round's dirty pages are this few (2 MiB: a few
// ms on the channel), or after this many rounds, whichever comes first.
constexpr std::size_t kFinalRoundPages = 512;
constexpr unsigned kMaxCopyRounds = 30;
constexpr auto kCopyAnswerTimeout = std::chrono::seconds(10);
constexpr protocol::Time kCopyRetryUs = 1'000'000; // after a failed copy, before the next

void nap() { std::this_thread::sleep_for(std::chrono::microseconds(200)); }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

} // namespace

Node::Node(NodeConfig cfg)
    : cfg_(std::move(cfg)), replica_(protocol::Replica::starting(cfg_.protocol, cfg_.self, cfg_.peer, cfg_.epoch, 0)),
      record_owner_(cfg_.record_owner)
{
}

Expected<std::unique_ptr<Node>, std::string> Node::start(NodeConfig cfg)
{
    const std::string vm = "vm " + std::to_string(cfg.vm_id) + ": ";
    if (!cfg.backend || !cfg.tls_client || !cfg.tls_server)
        return unexpected(vm + "node needs a VM backend and TLS contexts for both sides");
    if (auto bad = cfg.protocol.validate(); !bad.empty())
        return unexpected(vm + bad);
    std::unique_ptr<Node> n(new Node(std::move(cfg)));
    NodeConfig& c = n->cfg_;
    const auto start = n->start_;
    n->machine_ = std::make_unique<engine::Machine>(
        std::move(c.backend),
        [start] {
            return static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
        },
        c.machine);
    n->gate_ = std::make_unique<engine::OutputGate>(c.tap, c.disk);

    auto arb = arbiter::Arbiter::open(c.arbiter);
    if (!arb)
        return unexpected(vm + arb.error());
    n->arbiter_.emplace(std::move(arb).value());
    // A record past the configured epoch means the pair went on without this host (it failed
    // over, or the other host ran alone): the VM lives elsewhere, and this host can only join.
    auto record = n->arbiter_->read();
    if (!record)
        return unexpected(vm + "reading the arbitration record: " + record.error());
    if (!c.join && record->epoch > c.epoch) {
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
    auto hb = detector::HeartbeatSocket::open(c.heartbeat);
    if (!hb)
        return unexpected(vm + hb.error());
    n->heartbeats_.emplace(std::move(hb).value());
    if (!c.channel.log)
        c.channel.log = [log = c.log](const std::string& line) {
            if (log)
                log(line);
            else
                std::cerr << line << "\n";
        };
    c.channel.epoch = c.epoch;
    if (c.start_as_primary) {
        channel::ChannelConfig to = c.channel;
        to.address = c.channel_peer;
        n->sender_ = std::make_shared<channel::LogSender>(to, *c.tls_client);
        n->log_epoch_ = c.epoch;
        n->streaming_ = true;
        n->replica_ = protocol::Replica::protected_primary(c.protocol, c.self, c.peer, c.epoch, 0, n->now_us());
    } else {
        channel::ChannelConfig from = c.channel;
        from.address = c.channel_listen;
        auto rx = channel::LogReceiver::listen(from, *c.tls_server);
        if (!rx)
            return unexpected(vm + rx.error());
        n->receiver_.emplace(std::move(rx).value());
        if (c.join) {
            n->receiver_->await_copy(c.epoch);
            n->replica_ = protocol::Replica::syncing_backup(c.protocol, c.self, c.peer, n->now_us());
        } else {
            n->replica_ = protocol::Replica::replaying_backup(c.protocol, c.self, c.peer, c.epoch, 0, n->now_us());
        }
    }
    n->say(c.join ? "joining the pair in epoch " + std::to_string(c.epoch) + ": waiting for a live copy from host " +
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

void Node::say(const std::string& line) const
{
    const std::string text = "vm " + std::to_string(cfg_.vm_id) + " (host " + std::to_string(cfg_.self) + "): " + line;
    if (cfg_.log)
        cfg_.log(text);
    else
        std::cerr << text << "\n";
}

NodeStatus Node::status() const
{
    std::lock_guard lock(mu_);
    NodeStatus s = status_;
    s.exits = exits_;
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
    if (cfg_.start_as_primary) {
        engine::Recorder rec(*machine_, cfg_.digest_every, engine::HostIo{cfg_.tap, cfg_.disk, gate_.get()});
        record_loop(rec);
        return;
    }
    engine::ResumePoint from;
    if (cfg_.join && !receive_copy(from))
        return;
    replay_loop(from);
}

void Node::record_loop(engine::Recorder& rec)
{
    rec.end_at_outputs(true); // an output waits for the backup's ack: ship its entry at once
    std::vector<logformat::Entry> log;
    std::optional<CopyOut> copy;
    while (!stopping_ && !halted_) {
        if (!copy) {
            std::lock_guard lock(mu_);
            if (copy_to_) {
                copy.emplace();
                copy->to = std::move(copy_to_);
                copy->epoch = copy_epoch_;
                copy_to_.reset();
            }
        }
        if (copy && !copy_step(rec, *copy))
            copy.reset();
        const auto to = streaming_ ? sender() : nullptr;
        if (stalled_ || gate_->full() || (to && to->full())) {
            nap();
            continue;
        }
        log.clear();
        auto ok = rec.run(kExitsPerChunk, log);
        exits_ = rec.exits();
        if (!ok) {
            std::lock_guard lock(mu_);
            failure_ = ok.error();
            halted_ = true;
            say("the guest stopped: " + ok.error());
            return;
        }
        if (log.empty())
            continue;
        std::vector<protocol::Event> events{protocol::VmLogged{log.back().seq}};
        bool output = false;
        for (auto& e : log) {
            e.epoch = log_epoch_; // the epoch the backup replays this log in
            if (to)
                while (!to->append(e)) { // the channel's buffer is full: the VM waits
                    if (stopping_)
                        return;
                    nap();
                }
            if (std::holds_alternative<logformat::Output>(e.payload)) {
                events.push_back(protocol::VmOutput{e.seq, e.seq});
                output = true;
            }
        }
        {
            std::lock_guard lock(mu_);
            vm_events_.insert(vm_events_.end(), events.begin(), events.end());
        }
        if (to)
            to->flush(output);
    }
}

bool Node::queue_pages(CopyOut& c, std::span<const std::uint64_t> pages, bool wait)
{
    engine::Backend& vm = machine_->backend();
    channel::CopyPages rec;
    std::size_t i = 0;
    while (i < pages.size()) {
        const std::size_t n = std::min(channel::kCopyPagesPerRecord, pages.size() - i);
        rec.numbers.assign(pages.begin() + static_cast<std::ptrdiff_t>(i), pages.begin() + static_cast<std::ptrdiff_t>(i + n));
        rec.data.resize(n * channel::kCopyPageBytes);
        for (std::size_t k = 0; k < n; ++k)
            if (!vm.read_guest(rec.numbers[k] * channel::kCopyPageBytes,
                               std::span(rec.data).subspan(k * channel::kCopyPageBytes, channel::kCopyPageBytes)))
                return false;
        while (!c.to->append_copy(rec)) {
            if (!wait)
                return true; // the channel is busy; the caller resumes from c.next later
            if (stopping_ || c.to->copy_state() == channel::CopyState::failed)
                return false;
            nap();
        }
        i += n;
        c.next += n;
        std::lock_guard lock(mu_);
        status_.copy.pages_copied += n;
        if (c.round == 1)
            status_.copy.pages_done += n;
    }
    return true;
}

bool Node::copy_step(engine::Recorder& rec, CopyOut& c)
{
    engine::Backend& vm = machine_->backend();
    if (c.to->copy_state() == channel::CopyState::failed) {
        const std::string why = c.to->copy_error();
        say("live copy to host " + std::to_string(cfg_.peer) + " failed in round " + std::to_string(c.round) + ": " + why);
        std::lock_guard lock(mu_);
        status_.copy.active = false;
        status_.copy.last_error = why;
        vm_events_.push_back(protocol::SyncFailed{});
        return false;
    }
    if (c.todo.empty() && c.next == 0 && c.round == 1) {
        // Round 1: every page. Dirty tracking restarts now, so what the guest writes from here
        // on is in the next round.
        (void)vm.dirty_pages();
        const std::uint64_t pages = vm.memory_bytes() / engine::Backend::kPageBytes;
        c.todo.resize(pages);
        for (std::uint64_t p = 0; p < pages; ++p)
            c.todo[p] = p;
        (void)c.to->append_copy(channel::CopyBegin{vm.memory_bytes(), pages});
        std::lock_guard lock(mu_);
        status_.copy.start(true, pages);
        say("live copy to host " + std::to_string(cfg_.peer) + ": " + std::to_string(pages) + " pages (" +
            std::to_string(vm.memory_bytes() >> 20) + " MiB) while the guest runs");
    }
    // Queue what the channel takes now (a few MiB); the guest runs on meanwhile.
    if (c.next < c.todo.size()) {
        const std::size_t n = std::min<std::size_t>(c.todo.size() - c.next, 8 * channel::kCopyPagesPerRecord);
        if (!queue_pages(c, std::span(c.todo).subspan(c.next, n), false)) {
            std::lock_guard lock(mu_);
            vm_events_.push_back(protocol::SyncFailed{});
            status_.copy.active = false;
            status_.copy.last_error = "cannot read guest memory";
            return false;
        }
        const double secs = std::max(seconds_since(c.started), 1e-3);
        std::lock_guard lock(mu_);
        auto& p = status_.copy;
        p.round = c.round;
        p.mib_per_s = static_cast<double>(p.pages_copied) * 4096.0 / (1 << 20) / secs;
        p.eta_s = p.pages_copied ? secs / static_cast<double>(p.pages_copied) * static_cast<double>(p.pages_total - p.pages_done) : 0;
        return true;
    }
    if (c.to->copy_backlog() > 0)
        return true; // the round is still on its way
    auto dirty = vm.dirty_pages();
    if (dirty.size() <= kFinalRoundPages || c.round >= kMaxCopyRounds) {
        copy_finish(rec, c, std::move(dirty));
        return false;
    }
    c.todo = std::move(dirty);
    c.next = 0;
    ++c.round;
    return true;
}

void Node::copy_finish(engine::Recorder& rec, CopyOut& c, std::vector<std::uint64_t> last_pages)
{
    // The pause: the guest does not run until the backup has applied the copy. Then both are at
    // the same exit, and the log from the next entry on is all the backup needs.
    const auto paused = Clock::now();
    c.todo = std::move(last_pages);
    c.next = 0;
    const std::size_t last = c.todo.size();
    bool ok = queue_pages(c, c.todo, true);
    channel::CopyFinal f;
    f.epoch = c.epoch;
    f.exit = rec.exits();
    f.next_seq = rec.next_seq();
    f.cpu = machine_->backend().save_cpu_state();
    f.devices = machine_->save_devices();
    while (ok && !c.to->append_copy(f)) {
        if (stopping_ || c.to->copy_state() == channel::CopyState::failed)
            ok = false;
        nap();
    }
    const auto deadline = Clock::now() + kCopyAnswerTimeout;
    while (ok && c.to->copy_state() == channel::CopyState::copying && !stopping_ && Clock::now() < deadline)
        nap();
    const bool done = ok && c.to->copy_state() == channel::CopyState::done;
    const double pause_ms = seconds_since(paused) * 1000;
    if (!done) {
        const std::string why = c.to->copy_state() == channel::CopyState::failed ? c.to->copy_error()
                                                                                 : "no answer from the backup";
        say("live copy to host " + std::to_string(cfg_.peer) + " failed at the final pause: " + why);
        std::lock_guard lock(mu_);
        status_.copy.active = false;
        status_.copy.last_error = why;
        vm_events_.push_back(protocol::SyncFailed{});
        return;
    }
    // From here the backup replays; what the guest produces waits for its acks.
    gate_->set_passthrough(false);
    {
        std::lock_guard lock(mu_);
        sender_ = c.to;
        log_epoch_ = c.epoch;
        streaming_ = true;
        vm_events_.push_back(protocol::SyncComplete{c.epoch, f.next_seq - 1});
        auto& p = status_.copy;
        p.active = false;
        ++p.copies_done;
        p.last_seconds = seconds_since(c.started);
        p.last_pause_ms = pause_ms;
        p.last_rounds = c.round;
        p.last_error.clear();
    }
    say("live copy to host " + std::to_string(cfg_.peer) + " done: " + std::to_string(c.round) + " rounds in " +
        std::to_string(seconds_since(c.started)).substr(0, 5) + " s, the final pause " + std::to_string(pause_ms).substr(0, 5) +
        " ms (" + std::to_string(last) + " pages); protected from exit " + std::to_string(f.exit) + ", entry " +
        std::to_string(f.next_seq));
}

bool Node::receive_copy(engine::ResumePoint& at)
{
    engine::Backend& vm = machine_->backend();
    const std::uint64_t pages = vm.memory_bytes() / engine::Backend::kPageBytes;
    auto refuse = [&](std::uint64_t attempt, const std::string& why) {
        say("cannot take the live copy: " + why);
        std::lock_guard lock(mu_);
        copy_applied_ = CopyApplied{attempt, false, why, 0};
        failure_ = "live copy: " + why;
        status_.copy.last_error = why;
        return false; // receive_copy's answer: no copy to replay from
    };
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
            if (b->memory_bytes != vm.memory_bytes())
                return refuse(got->attempt, "the primary's VM has " + std::to_string(b->memory_bytes >> 20) +
                                                " MiB of memory, this one " + std::to_string(vm.memory_bytes() >> 20) +
                                                " MiB (vm.memory-mib differs)");
            std::lock_guard lock(mu_);
            status_.copy.start(false, b->pages);
            began = Clock::now();
        } else if (const auto* p = std::get_if<channel::CopyPages>(&got->record)) {
            for (std::size_t k = 0; k < p->numbers.size(); ++k) {
                if (p->numbers[k] >= pages)
                    return refuse(got->attempt, "page " + std::to_string(p->numbers[k]) + " is outside the VM's " +
                                                    std::to_string(pages) + " pages");
                (void)vm.write_guest(p->numbers[k] * engine::Backend::kPageBytes,
                                     std::span(p->data).subspan(k * channel::kCopyPageBytes, channel::kCopyPageBytes));
            }
            std::lock_guard lock(mu_);
            auto& s = status_.copy;
            s.pages_copied += p->numbers.size();
            s.pages_done = std::min(s.pages_total, s.pages_copied);
        } else {
            const auto& f = std::get<channel::CopyFinal>(got->record);
            if (auto r = vm.restore_cpu_state(f.cpu); !r)
                return refuse(got->attempt, "vCPU state: " + r.error());
            if (auto r = machine_->load_devices(f.devices); !r)
                return refuse(got->attempt, "device state: " + r.error());
            at = {f.exit, f.next_seq};
            std::lock_guard lock(mu_);
            copy_applied_ = CopyApplied{got->attempt, true, {}, f.next_seq - 1};
            status_.copy.active = false;
            status_.copy.last_seconds = seconds_since(began);
            ++status_.copy.copies_done;
        }
    }
    return synced_ && !stopping_;
}

void Node::replay_loop(engine::ResumePoint from)
{
    engine::Replayer rep(*machine_);
    if (from.exit > 0)
        rep.resume_after(from.exit, from.next_seq - 1);
    replaying_ = true;
    std::deque<logformat::Entry> pending;
    while (!stopping_ && !halted_ && !go_live_) {
        {
            std::lock_guard lock(mu_);
            while (!inbox_.empty()) {
                pending.push_back(std::move(inbox_.front()));
                inbox_.pop_front();
            }
        }
        const bool final = final_replay_;
        const std::uint64_t before = rep.exits();
        auto ok = rep.replay_available(pending, final);
        exits_ = rep.exits();
        if (!ok) {
            std::lock_guard lock(mu_);
            failure_ = ok.error().message();
            halted_ = true;
            say("halting the backup VM: " + failure_);
            return;
        }
        executed_ = rep.last_seq();
        if (rep.exits() == before)
            nap();
    }
    if (!go_live_ || stopping_)
        return;

    // Go live: the protocol core has the test-and-set won and every received entry replayed.
    std::string reissued;
    if (cfg_.disk) {
        auto n = rep.reissue_writes(*cfg_.disk);
        if (!n)
            say("going live: " + n.error());
        else
            reissued = "re-issued the last " + std::to_string(*n) + " disk writes";
    }
    if (cfg_.tap) {
        if (auto* nic = machine_->net())
            announce_mac(nic->mac()); // before the frames: the switch learns where the guest is
        const std::size_t frames = rep.resend_frames(*cfg_.tap);
        reissued += (reissued.empty() ? "" : ", ") + std::string("re-sent the last ") + std::to_string(frames) + " frames";
    }
    say("going live at exit " + std::to_string(rep.exits()) + ", after log entry " + std::to_string(rep.last_seq()) +
        (reissued.empty() ? "" : ": " + reissued));
    gate_->set_passthrough(true);
    replaying_ = false;
    engine::Recorder rec(*machine_, cfg_.digest_every, engine::HostIo{cfg_.tap, cfg_.disk, gate_.get()},
                         engine::ResumePoint{rep.exits(), rep.last_seq() + 1});
    record_loop(rec);
}

void Node::announce_mac(const devices::MacAddress& mac)
{
    if (!cfg_.tap)
        return;
    std::vector<std::uint8_t> f(60, 0);
    std::fill(f.begin(), f.begin() + 6, 0xff); // broadcast
    std::copy(mac.begin(), mac.end(), f.begin() + 6);
    const std::uint8_t rarp[] = {0x80, 0x35, 0, 1, 0x08, 0x00, 6, 4, 0, 3}; // RARP request-reverse
    std::copy(std::begin(rarp), std::end(rarp), f.begin() + 12);
    std::copy(mac.begin(), mac.end(), f.begin() + 22); // sender hardware address
    std::copy(mac.begin(), mac.end(), f.begin() + 32); // target hardware address
    for (int i = 0; i < 3; ++i)
        cfg_.tap->transmit(f);
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
                gate_->release_through(x.up_to_id);
            } else if constexpr (std::is_same_v<A, protocol::StallVm>) {
                stalled_ = true;
            } else if constexpr (std::is_same_v<A, protocol::ResumeVm>) {
                stalled_ = false;
            } else if constexpr (std::is_same_v<A, protocol::RequestArbiter>) {
                say("peer host " + std::to_string(cfg_.peer) + " suspected (" + replica_.reason() + "): test-and-set epoch " +
                    std::to_string(x.expected) + " -> " + std::to_string(x.next));
                const auto r = arbiter_->acquire(x.expected, record_owner_);
                say(std::string("test-and-set ") + std::string(arbiter::outcome_name(r.outcome)) +
                    (r.detail.empty() ? "" : ": " + r.detail));
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
                    say("fencing host " + std::to_string(x.loser) + " on the shared LUN: " + r.message);
            } else if constexpr (std::is_same_v<A, protocol::GoLive>) {
                if (replaying_) {
                    say("going live in epoch " + std::to_string(x.epoch));
                    go_live_ = true;
                    took_over("went live in epoch " + std::to_string(x.epoch) + " (" + replica_.reason() + ")");
                }
            } else if constexpr (std::is_same_v<A, protocol::HaltVm>) {
                const std::size_t dropped = gate_->discard_all();
                {
                    std::lock_guard lock(mu_);
                    failure_ = x.reason;
                }
                halted_ = true;
                say("halting the VM for good: " + x.reason + " (" + std::to_string(dropped) +
                    " held outputs never left)");
            } else if constexpr (std::is_same_v<A, protocol::StartReprotection>) {
                start_copy();
            }
        },
        a);
}

void Node::after_step()
{
    // A primary that wins alone releases everything and from then on lets outputs through; its
    // old channel goes (a joining backup gets a new one, with a copy).
    const protocol::Role role = replica_.role(), before = last_role_;
    last_role_ = role;
    // (The arbitration may have been asked for and decided within one step.)
    if (role == protocol::Role::primary_alone &&
        (before == protocol::Role::primary_arbitrating || before == protocol::Role::primary_protected)) {
        streaming_ = false;
        gate_->set_passthrough(true);
        {
            std::lock_guard lock(mu_);
            sender_.reset();
        }
        say("running alone in epoch " + std::to_string(replica_.epoch()) + " (held outputs released)");
        took_over("continued alone in epoch " + std::to_string(replica_.epoch()) + " (" + replica_.reason() + ")");
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
    const protocol::LogMsg msg{replica_.epoch(), got.front().seq, got.back().seq, 0};
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
        // Once the primary is suspected the backup accepts and acks nothing more.
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
        if (!applied->ok) {
            halted_ = true; // a copy this VM cannot take: nothing to replay, ever
            return;
        }
    }
    if (receiver_->copy_confirmed()) {
        // Not received(): log entries may have come in with the confirmation.
        const protocol::Seq at = copy_at_;
        step(protocol::SyncComplete{cfg_.epoch, at});
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
        if (halted_) {
            // Halted: silent, as a dead host would be. The peer's detector does the rest.
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            std::lock_guard lock(mu_);
            status_.role = protocol::Role::halted;
            continue;
        }
        pump_channel();

        for (const auto& hb : heartbeats_->receive()) {
            heard_peer_ = true;
            step(protocol::Received{hb});
        }
        // The VM's events first: a SyncComplete must reach the core before the acks that follow.
        std::deque<protocol::Event> events;
        {
            std::lock_guard lock(mu_);
            events.swap(vm_events_);
        }
        for (const auto& e : events) {
            if (std::holds_alternative<protocol::SyncFailed>(e)) {
                // The protocol core starts the next copy at the backup's next heartbeat; a
                // backup that cannot be reached would be tried every 50 ms. Tell it later.
                sync_failed_due_ = now_us() + kCopyRetryUs;
                continue;
            }
            step(e);
        }
        if (sync_failed_due_ != 0 && now_us() >= sync_failed_due_) {
            sync_failed_due_ = 0;
            step(protocol::SyncFailed{});
        }
        const auto out = streaming_ ? sender() : nullptr;
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
        // A peer never heard from has not failed, it has not started: the pair forms when the
        // first heartbeat arrives, so until then (within a grace period, after which a missing
        // peer is treated as failed) each side only announces itself and suspects nobody.
        const protocol::Time now = now_us();
        if (heard_peer_ || now > kStartupGraceUs || replica_.role() == protocol::Role::backup_syncing) {
            step(protocol::Tick{});
        } else if (now - last_hello_ >= cfg_.protocol.heartbeat_interval) {
            last_hello_ = now;
            (void)heartbeats_->send(protocol::HeartbeatMsg{replica_.epoch(), replica_.role(), now, 0, 0});
        }
        if (replica_.role() == protocol::Role::going_live)
            final_replay_ = true;
        // The failover's last step as a client sees it: the new primary's first output leaves.
        if (go_live_ && !first_output_seen_ && gate_->released() > 0) {
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
        status_.held_outputs = gate_->held();
        status_.released_outputs = gate_->released();
        status_.reason = replica_.reason();
        status_.heartbeats_rejected = heartbeats_->rejected();
        status_.lag_ms = out ? out->lag().seconds * 1000 : 0;
        if (const double dt = seconds_since(rate_since); dt >= 1.0) {
            const std::uint64_t wire = out ? out->wire_bytes_sent() : 0;
            status_.log_mbit_s = out && wire >= wire_before ? static_cast<double>(wire - wire_before) * 8 / 1e6 / dt : 0;
            wire_before = wire;
            rate_since = Clock::now();
        }
    }
}

} // namespace xenft::daemon
