#include "xenft/daemon/node.hpp"

#include <algorithm>
#include <iostream>

namespace xenft::daemon {

namespace {

constexpr std::uint64_t kExitsPerChunk = 32;
constexpr protocol::Time kStartupGraceUs = 10'000'000;

void nap() { std::this_thread::sleep_for(std::chrono::microseconds(200)); }

} // namespace

Node::Node(NodeConfig cfg)
    : cfg_(std::move(cfg)), replica_(protocol::Replica::starting(cfg_.protocol, cfg_.self, cfg_.peer, cfg_.epoch, 0))
{
}

Expected<std::unique_ptr<Node>, std::string> Node::start(NodeConfig cfg)
{
    const std::string vm = "vm " + std::to_string(cfg.vm_id) + ": ";
    if (!cfg.backend || !cfg.tls)
        return unexpected(vm + "node needs a VM backend and a TLS context");
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
        n->sender_ = std::make_unique<channel::LogSender>(c.channel, *c.tls);
        n->replica_ = protocol::Replica::protected_primary(c.protocol, c.self, c.peer, c.epoch, 0, n->now_us());
    } else {
        auto rx = channel::LogReceiver::listen(c.channel, *c.tls);
        if (!rx)
            return unexpected(vm + rx.error());
        n->receiver_.emplace(std::move(rx).value());
        n->replica_ = protocol::Replica::replaying_backup(c.protocol, c.self, c.peer, c.epoch, 0, n->now_us());
    }
    n->say(std::string("starting as ") + (c.start_as_primary ? "primary" : "backup") + " in epoch " + std::to_string(c.epoch));
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

// ----- VM thread ----------------------------------------------------------------------------------

void Node::vm_loop()
{
    if (cfg_.start_as_primary) {
        engine::Recorder rec(*machine_, cfg_.digest_every, engine::HostIo{cfg_.tap, cfg_.disk, gate_.get()});
        record_loop(rec, true);
    } else {
        replay_loop();
    }
}

void Node::record_loop(engine::Recorder& rec, bool streaming)
{
    std::vector<logformat::Entry> log;
    while (!stopping_ && !halted_) {
        const bool to_backup = streaming && !live_alone_;
        if (stalled_ || gate_->full() || (to_backup && sender_->full())) {
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
        for (const auto& e : log) {
            if (to_backup)
                while (!sender_->append(e)) { // the channel's buffer is full: the VM waits
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
        if (to_backup)
            sender_->flush(output);
    }
}

void Node::replay_loop()
{
    engine::Replayer rep(*machine_);
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
    if (cfg_.disk) {
        auto n = rep.reissue_writes(*cfg_.disk);
        if (!n) {
            say("going live: " + n.error());
        } else {
            say("going live at exit " + std::to_string(rep.exits()) + ": re-issued the last " + std::to_string(*n) +
                " disk writes");
        }
    }
    gate_->set_passthrough(true);
    live_alone_ = true;
    engine::Recorder rec(*machine_, cfg_.digest_every, engine::HostIo{cfg_.tap, cfg_.disk, gate_.get()},
                         engine::ResumePoint{rep.exits(), rep.last_seq() + 1});
    if (auto* nic = machine_->net())
        announce_mac(nic->mac());
    record_loop(rec, false);
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
                const auto r = arbiter_->acquire(x.expected, cfg_.record_owner);
                say(std::string("test-and-set ") + std::string(arbiter::outcome_name(r.outcome)) +
                    (r.detail.empty() ? "" : ": " + r.detail));
                protocol::ArbiterDone done;
                done.outcome = r.outcome == arbiter::Outcome::won    ? protocol::ArbiterOutcome::won
                               : r.outcome == arbiter::Outcome::lost ? protocol::ArbiterOutcome::lost
                                                                     : protocol::ArbiterOutcome::unknown;
                if (r.holder_known) {
                    done.record_epoch = r.holder.epoch;
                    done.record_owner = r.holder.owner;
                }
                step(done);
            } else if constexpr (std::is_same_v<A, protocol::Fence>) {
                const auto r = arbiter_->fence_peer();
                if (!r.ok())
                    say("fencing host " + std::to_string(x.loser) + " on the shared LUN: " + r.message);
            } else if constexpr (std::is_same_v<A, protocol::GoLive>) {
                if (receiver_) {
                    say("going live in epoch " + std::to_string(x.epoch));
                    go_live_ = true;
                } else {
                    say("running alone in epoch " + std::to_string(x.epoch));
                    live_alone_ = true;
                    gate_->set_passthrough(true);
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
                say("a backup host asks to be synced; creating a backup from a running primary is not implemented yet");
            }
        },
        a);
    // A primary that wins alone releases everything and from then on lets outputs through.
    if (replica_.role() == protocol::Role::primary_alone && !receiver_ && !live_alone_) {
        say("running alone in epoch " + std::to_string(replica_.epoch()) + " (" + std::to_string(gate_->held()) +
            " held outputs released)");
        live_alone_ = true;
        gate_->set_passthrough(true);
    }
}

void Node::control_loop()
{
    protocol::Seq last_acked = 0, last_executed = 0;
    bool was_streaming = false;
    while (!stopping_) {
        const protocol::Role role = replica_.role();
        const bool frozen = role != protocol::Role::backup_replaying;
        if (sender_ && !live_alone_)
            sender_->pump(2);
        else if (receiver_ && !frozen)
            receiver_->pump(2); // once the primary is suspected the backup accepts and acks nothing
        else
            std::this_thread::sleep_for(std::chrono::milliseconds(2));

        for (const auto& hb : heartbeats_->receive()) {
            heard_peer_ = true;
            step(protocol::Received{hb});
        }
        if (sender_ && !live_alone_) {
            const protocol::Seq acked = sender_->acked();
            if (acked > last_acked) {
                last_acked = acked;
                step(protocol::Received{protocol::AckMsg{replica_.epoch(), acked, 0}});
            }
            const bool streaming = sender_->streaming();
            if (streaming != was_streaming) {
                was_streaming = streaming;
                if (streaming)
                    step(protocol::ChannelRestored{});
                else
                    step(protocol::ChannelLost{});
            }
        }
        if (receiver_ && replica_.role() == protocol::Role::backup_replaying) {
            std::vector<logformat::Entry> got;
            while (auto e = receiver_->pop())
                got.push_back(std::move(*e));
            if (!got.empty()) {
                const protocol::LogMsg msg{replica_.epoch(), got.front().seq, got.back().seq, 0};
                {
                    std::lock_guard lock(mu_);
                    inbox_.insert(inbox_.end(), std::make_move_iterator(got.begin()), std::make_move_iterator(got.end()));
                }
                step(protocol::Received{msg});
            }
        }
        std::deque<protocol::Event> events;
        {
            std::lock_guard lock(mu_);
            events.swap(vm_events_);
        }
        for (const auto& e : events)
            step(e);
        if (receiver_) {
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
        if (heard_peer_ || now > kStartupGraceUs) {
            step(protocol::Tick{});
        } else if (now - last_hello_ >= cfg_.protocol.heartbeat_interval) {
            last_hello_ = now;
            (void)heartbeats_->send(protocol::HeartbeatMsg{replica_.epoch(), replica_.role(), now, 0, 0});
        }
        if (replica_.role() == protocol::Role::going_live)
            final_replay_ = true;
        if (replica_.role() == protocol::Role::halted)
            halted_ = true;

        std::lock_guard lock(mu_);
        status_.role = replica_.role();
        status_.epoch = replica_.epoch();
        status_.logged = replica_.logged();
        status_.acked = replica_.acked();
        status_.received = replica_.received();
        status_.executed = replica_.executed();
        status_.held_outputs = gate_->held();
        status_.reason = replica_.reason();
        status_.heartbeats_rejected = heartbeats_->rejected();
    }
}

} // namespace xenft::daemon
