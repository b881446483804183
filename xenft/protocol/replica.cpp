// The FT protocol state machine; the rules are in replica.hpp.
#include "xenft/protocol/replica.hpp"

#include <algorithm>

namespace xenft::protocol {

namespace {

Epoch epoch_of(const Message& m)
{
    return std::visit([](const auto& x) { return x.epoch; }, m);
}

} // namespace

bool is_backup(Role r) noexcept
{
    return r == Role::backup_syncing || r == Role::backup_replaying || r == Role::backup_arbitrating ||
           r == Role::going_live;
}

std::string_view role_word(Role r) noexcept
{
    switch (r) {
    case Role::starting: return "starting";
    case Role::primary_alone: return "primary-alone";
    case Role::primary_protected: return "primary-protected";
    case Role::primary_arbitrating: return "primary-arbitrating";
    case Role::backup_syncing: return "backup-syncing";
    case Role::backup_replaying: return "backup-replaying";
    case Role::backup_arbitrating: return "backup-arbitrating";
    case Role::going_live: return "going-live";
    case Role::halted: return "halted";
    case Role::ended: return "ended";
    }
    return "unknown";
}

StartAs plan_start(HostId self, bool configured_primary, HostId record_owner) noexcept
{
    if (record_owner == self || (record_owner == 0 && configured_primary))
        return StartAs::claim;
    return StartAs::join;
}

std::string_view role_name(Role r) noexcept
{
    switch (r) {
    case Role::starting: return "starting";
    case Role::primary_alone: return "primary (alone)";
    case Role::primary_protected: return "primary (protected)";
    case Role::primary_arbitrating: return "primary (arbitrating)";
    case Role::backup_syncing: return "backup (syncing)";
    case Role::backup_replaying: return "backup (replaying)";
    case Role::backup_arbitrating: return "backup (arbitrating)";
    case Role::going_live: return "going live";
    case Role::halted: return "halted";
    case Role::ended: return "ended";
    }
    return "unknown";
}

bool is_primary(Role r) noexcept
{
    return r == Role::primary_alone || r == Role::primary_protected || r == Role::primary_arbitrating;
}

std::string Config::validate() const
{
    if (heartbeat_interval == 0)
        return "heartbeat interval must be positive";
    if (suspect_timeout < 2 * heartbeat_interval)
        return "suspect timeout must be at least two heartbeat intervals";
    if (lease_margin >= suspect_timeout)
        return "lease margin must be shorter than the suspect timeout";
    if (arbiter_retry == 0 || retransmit_interval == 0)
        return "arbiter retry and retransmit intervals must be positive";
    if (max_unacked_entries == 0)
        return "the unacked-entry limit must be positive";
    if (max_replay_backlog == 0)
        return "the backup's replay backlog limit must be positive";
    if (end_ack_timeout == 0)
        return "the wait for the ack of the VM's end must be positive";
    if (own_end_wait == 0)
        return "the backup's wait for the primary's end must be positive";
    if (boot_grace > 600'000'000)
        return "the boot grace must be at most 10 minutes";
    return {};
}

bool Replica::takes_log() const noexcept
{
    if (role_ == Role::backup_syncing)
        return true;
    return role_ == Role::backup_replaying && received_ - executed_ < cfg_.max_replay_backlog;
}

Replica::Replica(const Config& c, HostId self, HostId peer, Role role, Epoch epoch, Time now)
    : cfg_(c), self_(self), peer_(peer), role_(role), epoch_(epoch), last_heard_(now)
{
}

Replica Replica::starting(const Config& c, HostId self, HostId peer, Epoch known, Time now)
{
    Replica r(c, self, peer, Role::starting, known, now);
    r.next_arbiter_attempt_ = now;
    return r;
}

Replica Replica::protected_primary(const Config& c, HostId self, HostId peer, Epoch epoch, Seq position, Time now)
{
    Replica r(c, self, peer, Role::primary_protected, epoch, now);
    r.logged_ = r.sent_ = r.acked_ = position;
    return r;
}

Replica Replica::replaying_backup(const Config& c, HostId self, HostId peer, Epoch epoch, Seq position, Time now)
{
    Replica r(c, self, peer, Role::backup_replaying, epoch, now);
    r.received_ = r.executed_ = position;
    return r;
}

Replica Replica::syncing_backup(const Config& c, HostId self, HostId peer, Time now)
{
    return Replica(c, self, peer, Role::backup_syncing, 0, now);
}

std::vector<Action> Replica::step(Time now, const Event& e)
{
    out_.clear();
    if (role_ == Role::halted || role_ == Role::ended) {
        // Stopped for good, and saying so: the peer learns it from the heartbeats instead of
        // waiting for silence (a halted primary releases nothing, so no lease to wait out).
        if (std::holds_alternative<Tick>(e) && now - last_heartbeat_ >= cfg_.heartbeat_interval)
            send_heartbeat(now);
        return std::move(out_);
    }
    std::visit(
        [&](const auto& ev) {
            using E = std::decay_t<decltype(ev)>;
            if constexpr (std::is_same_v<E, Tick>) {
                on_tick(now);
            } else if constexpr (std::is_same_v<E, VmLogged>) {
                on_logged(now, ev.last);
            } else if constexpr (std::is_same_v<E, VmOutput>) {
                on_output(now, ev);
            } else if constexpr (std::is_same_v<E, Received>) {
                on_message(now, ev.msg);
            } else if constexpr (std::is_same_v<E, ArbiterDone>) {
                on_arbiter(now, ev);
            } else if constexpr (std::is_same_v<E, ReplayProgress>) {
                if (role_ == Role::backup_replaying || role_ == Role::backup_arbitrating || role_ == Role::going_live) {
                    // The engine executes only what is in the buffer; never trust it past that.
                    executed_ = std::max(executed_, std::min(ev.executed, received_));
                    maybe_end(now);
                    maybe_go_live();
                }
            } else if constexpr (std::is_same_v<E, SyncComplete>) {
                if (role_ == Role::primary_alone && reprotecting_ && ev.epoch == epoch_ && ev.at <= logged_) {
                    role_ = Role::primary_protected;
                    reprotecting_ = false;
                    acked_ = sent_ = ev.at;
                    last_heard_ = now;
                    peer_heard_ = true; // it took the copy
                    lease_until_ = 0; // outputs wait for the new backup's first echo
                    if (logged_ > ev.at)
                        ship_log(now, ev.at + 1, logged_);
                    apply_flow_control();
                } else if (role_ == Role::backup_syncing) {
                    role_ = Role::backup_replaying;
                    epoch_ = ev.epoch;
                    received_ = executed_ = ev.at;
                    last_heard_ = now;
                    peer_heard_ = true; // it sent the copy
                    echo_ = 0;
                }
            } else if constexpr (std::is_same_v<E, SyncFailed>) {
                if (reprotecting_)
                    next_copy_at_ = now + cfg_.copy_retry;
                reprotecting_ = false;
            } else if constexpr (std::is_same_v<E, ChannelLost>) {
                // Nothing to do: the failure detector decides, on silence of every kind.
            } else if constexpr (std::is_same_v<E, ChannelRestored>) {
                if (role_ == Role::primary_protected && sent_ > acked_)
                    ship_log(now, acked_ + 1, sent_);
            } else if constexpr (std::is_same_v<E, OperatorFailover>) {
                // Wait out the primary's lease (T from our last echo, which is no later than now)
                // so it cannot release anything once we are live.
                if (backup_may_take_over())
                    begin_arbitration(now, Role::backup_arbitrating, now + cfg_.suspect_timeout, "operator failover");
            } else if constexpr (std::is_same_v<E, OperatorUnprotect>) {
                if (is_primary(role_))
                    reprotect_allowed_ = false;
                if (role_ == Role::primary_protected)
                    begin_arbitration(now, Role::primary_arbitrating, now, "operator unprotect");
            } else if constexpr (std::is_same_v<E, OperatorProtect>) {
                reprotect_allowed_ = true;
            } else if constexpr (std::is_same_v<E, BackupRestarted>) {
                if (role_ == Role::primary_protected)
                    begin_arbitration(now, Role::primary_arbitrating, now, "the backup restarted and lost its log");
            } else if constexpr (std::is_same_v<E, VmFailed>) {
                halt(ev.reason);
            } else if constexpr (std::is_same_v<E, VmEnded>) {
                on_vm_ended(now, ev);
            } else if constexpr (std::is_same_v<E, VmStoppedHere>) {
                on_vm_stopped_here(now, ev);
            }
        },
        e);
    return std::move(out_);
}

void Replica::on_tick(Time now)
{
    if (role_ != Role::starting && now - last_heartbeat_ >= cfg_.heartbeat_interval)
        send_heartbeat(now);

    if (end_seq_ != 0 && is_primary(role_) && now - end_since_ >= cfg_.end_ack_timeout) {
        outputs_.clear(); // never acked: they leave with nobody
        end(end_reason_ + "; the backup did not acknowledge the end within " +
            std::to_string(cfg_.end_ack_timeout / 1000) + " ms, so it may take the VM over");
        return;
    }
    if (own_stop_ && is_backup(role_) && now - own_stop_since_ >= cfg_.own_end_wait) {
        halt("the VM ended here (" + own_stop_reason_ + ") without the primary's end in the log within " +
             std::to_string(cfg_.own_end_wait / 1000) + " ms: this host no longer protects it");
        return;
    }
    // Until the peer is first heard from, its silence counts only after the boot grace.
    const Time silence_limit = peer_heard_ ? cfg_.suspect_timeout : std::max(cfg_.suspect_timeout, cfg_.boot_grace);
    switch (role_) {
    case Role::primary_protected:
        if (now - last_heard_ >= silence_limit) {
            begin_arbitration(now, Role::primary_arbitrating, now,
                              peer_heard_ ? "backup silent" : "backup never heard from since this host started");
            break;
        }
        if (sent_ > acked_ && now - last_log_send_ >= cfg_.retransmit_interval)
            ship_log(now, acked_ + 1, sent_);
        break;
    case Role::backup_replaying:
        if (backup_may_take_over() && now - last_heard_ >= silence_limit)
            begin_arbitration(now, Role::backup_arbitrating, now,
                              peer_heard_ ? "primary silent" : "primary never heard from since this host started");
        break;
    case Role::starting:
    case Role::primary_arbitrating:
    case Role::backup_arbitrating:
        if (!arbiter_in_flight_ && now >= next_arbiter_attempt_)
            request_arbiter();
        break;
    case Role::going_live:
        maybe_go_live();
        break;
    default:
        break;
    }
}

void Replica::on_message(Time now, const Message& m)
{
    peer_heard_ = true;
    // A fresh backup host announces itself with epoch 0: the cue for re-protection.
    if (const auto* hb = std::get_if<HeartbeatMsg>(&m); hb && hb->role == Role::backup_syncing) {
        if (role_ == Role::primary_alone && !reprotecting_ && reprotect_allowed_ && now >= next_copy_at_) {
            reprotecting_ = true;
            emit(StartReprotection{});
        }
        return;
    }
    if (role_ == Role::starting || role_ == Role::backup_syncing)
        return;
    const Epoch e = epoch_of(m);
    if (e < epoch_)
        return;
    if (e > epoch_) {
        halt("peer host " + std::to_string(peer_) + " is running in epoch " + std::to_string(e) + ", this replica (epoch " +
             std::to_string(epoch_) + ") was deposed");
        return;
    }
    last_heard_ = now;
    std::visit(
        [&](const auto& msg) {
            using M = std::decay_t<decltype(msg)>;
            if constexpr (std::is_same_v<M, LogMsg>) {
                if (role_ == Role::backup_replaying) {
                    on_log(msg);
                    if (own_stop_) // the end it waited for (its VM replays nothing more)
                        maybe_end(now);
                }
            } else if constexpr (std::is_same_v<M, AckMsg>) {
                if (is_primary(role_))
                    on_ack(now, msg.acked, msg.echo);
            } else if constexpr (std::is_same_v<M, HeartbeatMsg>) {
                if (is_primary(role_) && is_backup(msg.role))
                    on_ack(now, msg.position, msg.echo);
                else if (role_ == Role::backup_replaying && is_primary(msg.role))
                    echo_ = std::max(echo_, msg.sent_at);
                else if (msg.role == Role::halted && role_ == Role::primary_protected)
                    begin_arbitration(now, Role::primary_arbitrating, now,
                                      "backup host " + std::to_string(peer_) + " says its VM halted");
                else if (msg.role == Role::halted && backup_may_take_over())
                    begin_arbitration(now, Role::backup_arbitrating, now,
                                      "primary host " + std::to_string(peer_) + " says its VM halted");
                else if (msg.role == Role::ended && is_primary(role_) && end_seq_ != 0) {
                    // The backup replayed up to the end (its ack may have been lost): it never
                    // takes the VM over, so what the VM produced before its end may leave.
                    release_all();
                    end(end_reason_ + "; the backup ended with it and does not take the VM over");
                } else if (msg.role == Role::ended && is_backup(role_) && role_ != Role::going_live &&
                           end_seq_ == 0) {
                    // (A backup with the end in its buffer replays up to it first: maybe_end.)
                    end("the primary's VM ended (this backup never received the end of its log)");
                }
            }
        },
        m);
}

void Replica::on_log(const LogMsg& m)
{
    echo_ = std::max(echo_, m.sent_at);
    if (m.first <= received_ + 1 && m.last > received_) {
        received_ = m.last;
        if (m.vm_end)
            end_seq_ = m.last;
    }
    // Ack even duplicates: the previous ack may have been lost.
    emit(Send{AckMsg{epoch_, received_, echo_}});
}

void Replica::on_ack(Time now, Seq acked, Time echo)
{
    if (acked > logged_)
        return; // acks for entries we never logged: a confused or hostile peer
    acked_ = std::max(acked_, acked);
    if (echo != 0 && echo <= now) // a future echo would extend the lease: refuse it
        lease_until_ = std::max(lease_until_, echo + cfg_.suspect_timeout - cfg_.lease_margin);
    apply_flow_control();
    release_acked(now);
    maybe_end(now);
}

void Replica::on_logged(Time now, Seq last)
{
    if (!is_primary(role_) || last <= logged_)
        return;
    logged_ = last;
    if (role_ == Role::primary_protected)
        ship_log(now, sent_ + 1, last);
    apply_flow_control();
}

void Replica::on_output(Time now, const VmOutput& o)
{
    switch (role_) {
    case Role::primary_alone:
        emit(ReleaseOutputs{o.id});
        break;
    case Role::primary_protected:
    case Role::primary_arbitrating:
        outputs_.push_back(o);
        release_acked(now);
        break;
    default:
        emit(DiscardOutput{o.id});
        break;
    }
}

void Replica::on_arbiter(Time now, const ArbiterDone& d)
{
    if (!arbiter_in_flight_)
        return;
    arbiter_in_flight_ = false;
    switch (d.outcome) {
    case ArbiterOutcome::won:
        won(epoch_ + 1);
        return;
    case ArbiterOutcome::lost:
        // An earlier attempt whose reply was lost may have won: the record then names us.
        if (d.record_owner == self_ && d.record_epoch == epoch_ + 1) {
            won(epoch_ + 1);
            return;
        }
        halt("test-and-set lost: the record is at epoch " + std::to_string(d.record_epoch) + " owned by host " +
             std::to_string(d.record_owner));
        return;
    case ArbiterOutcome::unknown:
        next_arbiter_attempt_ = now + cfg_.arbiter_retry;
        return;
    }
}

void Replica::send_heartbeat(Time now)
{
    last_heartbeat_ = now;
    const Seq position = is_primary(role_) ? logged_ : is_backup(role_) ? received_ : std::max(logged_, received_);
    emit(Send{HeartbeatMsg{epoch_, role_, now, echo_, position}});
}

void Replica::ship_log(Time now, Seq first, Seq last)
{
    if (first > last)
        return;
    sent_ = std::max(sent_, last);
    last_log_send_ = now;
    emit(Send{LogMsg{epoch_, first, last, now, end_seq_ != 0 && last == end_seq_}});
}

void Replica::release_acked(Time now)
{
    if (role_ != Role::primary_protected || outputs_.empty())
        return;
    if (!cfg_.unsafe_release_before_ack && now >= lease_until_)
        return;
    std::uint64_t last_id = 0;
    bool any = false;
    while (!outputs_.empty() && (cfg_.unsafe_release_before_ack || outputs_.front().seq <= acked_)) {
        last_id = outputs_.front().id;
        any = true;
        outputs_.pop_front();
    }
    if (any)
        emit(ReleaseOutputs{last_id});
}

void Replica::release_all()
{
    if (outputs_.empty())
        return;
    emit(ReleaseOutputs{outputs_.back().id});
    outputs_.clear();
}

void Replica::apply_flow_control()
{
    const bool limited = role_ == Role::primary_protected || role_ == Role::primary_arbitrating;
    const bool full = limited && logged_ - acked_ >= cfg_.max_unacked_entries;
    if (full && !stalled_) {
        stalled_ = true;
        emit(StallVm{});
    } else if (!full && stalled_) {
        stalled_ = false;
        emit(ResumeVm{});
    }
}

void Replica::begin_arbitration(Time now, Role arbitrating, Time not_before, const std::string& why)
{
    reason_ = why;
    role_ = arbitrating;
    arbiter_in_flight_ = false;
    next_arbiter_attempt_ = not_before;
    if (cfg_.unsafe_skip_test_and_set) {
        won(epoch_ + 1);
        return;
    }
    if (now >= not_before)
        request_arbiter();
}

void Replica::request_arbiter()
{
    arbiter_in_flight_ = true;
    emit(RequestArbiter{epoch_, epoch_ + 1});
}

void Replica::won(Epoch epoch)
{
    const Role was = role_;
    epoch_ = epoch;
    switch (was) {
    case Role::starting:
        role_ = Role::primary_alone;
        break;
    case Role::primary_arbitrating:
        role_ = Role::primary_alone;
        emit(Fence{peer_});
        release_all();
        apply_flow_control();
        if (end_seq_ != 0)
            end(end_reason_ + " (running alone)");
        break;
    case Role::backup_arbitrating:
        role_ = Role::going_live;
        emit(Fence{peer_});
        maybe_go_live();
        break;
    default:
        break;
    }
}

void Replica::maybe_go_live()
{
    if (role_ != Role::going_live || executed_ < received_)
        return;
    role_ = Role::primary_alone;
    logged_ = sent_ = acked_ = executed_;
    emit(GoLive{epoch_});
}

void Replica::on_vm_ended(Time now, const VmEnded& e)
{
    if (!is_primary(role_) || end_seq_ != 0 || e.seq <= logged_)
        return;
    end_seq_ = e.seq;
    end_since_ = now;
    end_reason_ = e.reason;
    on_logged(now, e.seq);
    if (role_ == Role::primary_alone)
        end(e.reason + " (running alone)");
}

// The primary: the backup acked the end, every output before it has left. The backup: it
// replayed up to the end.
void Replica::maybe_end(Time now)
{
    if (end_seq_ == 0)
        return;
    if (role_ == Role::primary_protected && acked_ >= end_seq_) {
        release_acked(now);
        if (!outputs_.empty()) // the lease ran out: they wait for the next echo
            return;
        end(end_reason_ + "; the backup acknowledged the end and does not take the VM over");
    } else if (role_ == Role::backup_replaying && executed_ >= end_seq_) {
        end("the primary's VM ended at log entry " + std::to_string(end_seq_));
    } else if (is_backup(role_) && own_stop_) {
        // Its VM stopped where the primary's ended (the guest's shutdown replayed): the entries
        // after the stop are the end's own, which a stopped VM does not execute.
        end("the VM ended here (" + own_stop_reason_ + ") as on the primary, whose end is log entry " +
            std::to_string(end_seq_));
    }
}

// Whether this backup may arbitrate to take the VM over (on silence, a halted primary or the
// operator's word). Not once the VM's end is in its buffer: the VM is ending (the primary may
// already have ended on its ack), and the backup ends once it replayed up to it (maybe_end).
// Not once its own VM stopped by itself: it has nothing to go live with.
bool Replica::backup_may_take_over() const noexcept
{
    return role_ == Role::backup_replaying && end_seq_ == 0 && !own_stop_;
}

void Replica::on_vm_stopped_here(Time now, const VmStoppedHere& e)
{
    if (role_ == Role::halted || role_ == Role::ended || own_stop_)
        return;
    // Only a replaying backup can wait for the end; one already arbitrating or going live has
    // nothing to go live with.
    if (e.destroyed || role_ != Role::backup_replaying) {
        halt("the VM ended here (" + e.reason + ") without the primary's end in the log: this host no longer "
             "protects it");
        return;
    }
    own_stop_ = true;
    own_stop_since_ = now;
    own_stop_reason_ = e.reason;
    maybe_end(now);
}

void Replica::end(const std::string& reason)
{
    role_ = Role::ended;
    reason_ = reason;
    if (stalled_) {
        stalled_ = false;
        emit(ResumeVm{});
    }
    emit(EndVm{reason});
}

void Replica::halt(const std::string& reason)
{
    role_ = Role::halted;
    reason_ = reason;
    outputs_.clear();
    emit(HaltVm{reason});
}

} // namespace xenft::protocol
