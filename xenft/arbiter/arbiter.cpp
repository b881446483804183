#include "xenft/arbiter/arbiter.hpp"

#include <algorithm>
#include <chrono>

namespace xenft::arbiter {

namespace {

std::uint64_t now_ms()
{
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

AcquireResult result(Outcome o, std::string detail)
{
    AcquireResult r;
    r.outcome = o;
    r.detail = std::move(detail);
    return r;
}

AcquireResult result(Outcome o, const Record& holder, std::string detail)
{
    AcquireResult r = result(o, std::move(detail));
    r.holder = holder;
    r.holder_known = true;
    return r;
}

} // namespace

std::string_view outcome_name(Outcome o) noexcept
{
    switch (o) {
    case Outcome::won: return "won";
    case Outcome::lost: return "lost";
    case Outcome::unknown: return "unknown";
    }
    return "?";
}

Expected<Arbiter, std::string> Arbiter::open(const ArbiterConfig& cfg)
{
    if (cfg.host_id == 0 || cfg.host_id == cfg.peer_id)
        return unexpected(std::string("arbiter: host ids must be non-zero and differ from the peer's"));
    if (cfg.lun.timeout_s < 2 || cfg.lun.timeout_s > 60)
        return unexpected("arbiter: timeout must be 2..60 s (libiscsi counts whole seconds), not " +
                          std::to_string(cfg.lun.timeout_s));
    auto lun = Lun::connect(cfg.lun);
    if (!lun)
        return unexpected("arbiter: " + lun.error());
    if (cfg.record_lba >= lun->blocks())
        return unexpected("arbiter: LUN " + cfg.lun.url + " has " + std::to_string(lun->blocks()) +
                          " blocks; the record's block " + std::to_string(cfg.record_lba) + " is beyond it (LUN too small?)");
    Arbiter a(cfg, std::move(lun).value());

    std::vector<std::uint64_t> keys;
    const ScsiResult pr = a.lun_.pr_read_keys(keys);
    if (pr.kind == ScsiResult::Kind::transport_error)
        return unexpected("arbiter: LUN " + cfg.lun.url + ": " + pr.message);
    a.caps_.persistent_reservations = pr.ok();
    if (a.caps_.persistent_reservations && cfg.fencing) {
        if (auto r = a.register_key(); !r.ok())
            return unexpected("arbiter: LUN " + cfg.lun.url + ": cannot register this host's reservation key: " + r.message);
    }
    // Probe COMPARE AND WRITE for real, with a no-op on the record block: a target may advertise
    // it and still reject it (tgt does).
    auto block = a.read_block();
    if (!block)
        return unexpected("arbiter: LUN " + cfg.lun.url + ": cannot read block " + std::to_string(cfg.record_lba) + ": " +
                          block.error().message);
    const ScsiResult caw = a.lun_.compare_and_write(cfg.record_lba, *block, *block);
    if (caw.kind == ScsiResult::Kind::transport_error)
        return unexpected("arbiter: LUN " + cfg.lun.url + ": " + caw.message);
    a.caps_.compare_and_write = caw.ok() || caw.miscompare();
    if (!a.caps_.compare_and_write && !a.caps_.persistent_reservations)
        return unexpected("arbiter: LUN " + cfg.lun.url +
                          " supports neither COMPARE AND WRITE nor persistent reservations: it cannot arbitrate");
    // Without COMPARE AND WRITE the test-and-set is a PREEMPT race between registered hosts.
    if (!a.caps_.compare_and_write && !cfg.fencing)
        if (auto r = a.register_key(); !r.ok())
            return unexpected("arbiter: LUN " + cfg.lun.url + ": cannot register this host's reservation key: " + r.message);
    return a;
}

Expected<std::vector<std::uint8_t>, ScsiResult> Arbiter::read_block()
{
    std::vector<std::uint8_t> b;
    auto r = lun_.read(cfg_.record_lba, b);
    if (!r.ok())
        return unexpected(r);
    if (b.size() != lun_.block_size()) {
        ScsiResult bad;
        bad.kind = ScsiResult::Kind::other_status;
        bad.message = "short read of " + std::to_string(b.size()) + " bytes";
        return unexpected(bad);
    }
    return b;
}

std::vector<std::uint8_t> Arbiter::block_of(const Record& r) const
{
    const Block rec = encode_record(r);
    std::vector<std::uint8_t> b(lun_.block_size(), 0);
    std::copy(rec.begin(), rec.end(), b.begin());
    return b;
}

Expected<Record, std::string> Arbiter::read()
{
    auto b = read_block();
    if (!b)
        return unexpected("arbiter: LUN " + cfg_.lun.url + ": " + b.error().message);
    auto r = decode_record(std::span(*b).first(kRecordBlock));
    if (!r)
        return unexpected("arbiter: LUN " + cfg_.lun.url + " block " + std::to_string(cfg_.record_lba) + ": " + r.error());
    return r;
}

Expected<Record, std::string> Arbiter::init(std::uint64_t epoch, bool force)
{
    auto b = read_block();
    if (!b)
        return unexpected("arbiter: LUN " + cfg_.lun.url + ": " + b.error().message);
    if (auto existing = decode_record(std::span(*b).first(kRecordBlock)); existing) {
        if (existing->vm_id != cfg_.vm_id)
            return unexpected("arbiter: LUN " + cfg_.lun.url + " block " + std::to_string(cfg_.record_lba) +
                              " already arbitrates VM " + std::to_string(existing->vm_id) + "; refusing to overwrite it");
        if (!force)
            return unexpected("arbiter: the record already exists (" + to_string(*existing) + "); use --force to reset it");
    }
    const Record fresh{cfg_.vm_id, epoch, 0, now_ms()};
    if (auto w = lun_.write(cfg_.record_lba, block_of(fresh)); !w.ok())
        return unexpected("arbiter: LUN " + cfg_.lun.url + ": writing the record failed: " + w.message);
    return fresh;
}

AcquireResult Arbiter::acquire(std::uint64_t known_epoch, std::uint32_t known_owner)
{
    auto block = read_block();
    if (!block) {
        if (block.error().kind == ScsiResult::Kind::reservation_conflict)
            return result(Outcome::lost, "fenced: the storage refuses this host (reservation conflict)");
        return result(Outcome::unknown, "cannot read the record: " + block.error().message);
    }
    auto current = decode_record(std::span(*block).first(kRecordBlock));
    if (!current)
        return result(Outcome::unknown, current.error());
    if (current->vm_id != cfg_.vm_id)
        return result(Outcome::unknown, "the record arbitrates VM " + std::to_string(current->vm_id) + ", not VM " +
                                            std::to_string(cfg_.vm_id) + " (wrong LUN or block?)");
    if (current->epoch == known_epoch + 1 && current->owner == cfg_.host_id)
        return result(Outcome::won, *current, "already ours: an earlier attempt landed");
    if (current->epoch != known_epoch || current->owner != known_owner)
        return result(Outcome::lost, *current, "the record moved on: " + to_string(*current));
    if (!caps_.compare_and_write)
        return acquire_by_reservation(*current);

    const Record next{cfg_.vm_id, known_epoch + 1, cfg_.host_id, now_ms()};
    const ScsiResult caw = lun_.compare_and_write(cfg_.record_lba, *block, block_of(next));
    if (caw.ok()) {
        AcquireResult won = result(Outcome::won, next, "COMPARE AND WRITE moved the record to epoch " + std::to_string(next.epoch));
        if (caps_.persistent_reservations && cfg_.fencing && !fencing_unreliable_)
            if (auto f = fence_peer(); !f.ok()) {
                won.detail += "; fencing host " + std::to_string(cfg_.peer_id) + " failed: " + f.message;
                if (f.kind == ScsiResult::Kind::other_status) {
                    fencing_unreliable_ = true; // the target misapplies PREEMPT: stop using it
                    won.detail += " (fencing disabled for this target)";
                }
            }
        return won;
    }
    if (caw.miscompare()) {
        auto now = read();
        if (now)
            return result(Outcome::lost, *now, "another host moved the record first: " + to_string(*now));
        return result(Outcome::lost, "another host moved the record first (re-reading it failed: " + now.error() + ")");
    }
    if (caw.kind == ScsiResult::Kind::reservation_conflict) {
        // Fenced. Lost if the record shows a winner; if it has not moved, the reservation is
        // stale and nothing was decided: unknown, try again.
        auto now = read();
        if (now && (now->epoch != known_epoch || now->owner != known_owner))
            return result(Outcome::lost, *now, "fenced: the storage refuses this host's writes; " + to_string(*now));
        return result(Outcome::unknown, "the storage refuses this host's writes (reservation conflict) but the record "
                                        "has not moved");
    }
    return result(Outcome::unknown, "COMPARE AND WRITE: " + caw.message);
}

AcquireResult Arbiter::acquire_by_reservation(const Record& current)
{
    // Without COMPARE AND WRITE the reservation is the lock: at any instant one registered host
    // holds it, and PREEMPT takes it away from the other (whose registration goes with it). The
    // record is written only by the holder, after re-reading it under the reservation, so two
    // hosts can never both move it from epoch E: a host that preempts after the other wrote
    // sees the new epoch; a host preempted before it wrote gets RESERVATION CONFLICT on write.
    const std::uint64_t mine = key_of(cfg_.host_id), peer = key_of(cfg_.peer_id);
    auto failed = [](const ScsiResult& r, const std::string& what) {
        return result(r.kind == ScsiResult::Kind::transport_error ? Outcome::unknown : Outcome::lost, what + ": " + r.message);
    };
    std::vector<std::uint64_t> keys;
    if (auto r = lun_.pr_read_keys(keys); !r.ok())
        return failed(r, "READ KEYS");
    if (std::find(keys.begin(), keys.end(), mine) == keys.end())
        return result(Outcome::lost, current, "fenced: this host's key was preempted");
    if (std::find(keys.begin(), keys.end(), peer) != keys.end()) {
        const ScsiResult p = lun_.pr_preempt(mine, peer);
        if (p.kind == ScsiResult::Kind::reservation_conflict)
            return result(Outcome::lost, "the peer preempted this host first");
        if (!p.ok())
            return failed(p, "PREEMPT");
        if (auto own = register_own_sessions(); !own.ok())
            return failed(own, "registering this host's disk session again after PREEMPT");
    }
    std::uint64_t holder = 0;
    if (auto h = lun_.pr_read_holder(holder); !h.ok())
        return failed(h, "READ RESERVATION");
    if (holder != mine) {
        if (auto r = lun_.pr_reserve(mine); !r.ok())
            return failed(r, "RESERVE");
        if (auto h = lun_.pr_read_holder(holder); !h.ok() || holder != mine)
            return result(Outcome::lost, "another host holds the reservation");
    }
    // Under the reservation: is the record still where we found it?
    auto again = read();
    if (!again)
        return result(Outcome::unknown, again.error());
    if (again->epoch != current.epoch || again->owner != current.owner)
        return result(Outcome::lost, *again, "another host moved the record first: " + to_string(*again));
    const Record next{cfg_.vm_id, current.epoch + 1, cfg_.host_id, now_ms()};
    const ScsiResult w = lun_.write(cfg_.record_lba, block_of(next));
    if (w.kind == ScsiResult::Kind::reservation_conflict)
        return result(Outcome::lost, "preempted by the peer before writing the record");
    if (!w.ok())
        return result(Outcome::unknown, "holding the reservation but writing the record failed: " + w.message);
    return result(Outcome::won, next, "took the reservation and moved the record (fallback without COMPARE AND WRITE)");
}

ScsiResult Arbiter::register_key()
{
    return lun_.pr_register(key_of(cfg_.host_id));
}

ScsiResult Arbiter::fence_peer()
{
    const std::uint64_t mine = key_of(cfg_.host_id), peer = key_of(cfg_.peer_id);
    auto registered = [&](std::uint64_t key, const std::vector<std::uint64_t>& keys) {
        return std::find(keys.begin(), keys.end(), key) != keys.end();
    };
    std::vector<std::uint64_t> keys;
    if (auto r = lun_.pr_read_keys(keys); !r.ok())
        return r;
    if (!registered(mine, keys))
        if (auto r = register_key(); !r.ok())
            return r;
    ScsiResult own; // this host's other sessions, registered again after the PREEMPT
    if (registered(peer, keys)) {
        if (auto p = lun_.pr_preempt(mine, peer); !p.ok())
            return p;
        own = register_own_sessions();
    }
    // Check the effect rather than trust the status: some targets answer GOOD to a PREEMPT
    // that removed the wrong registration (istgt 0.4 does).
    if (auto r = lun_.pr_read_keys(keys); !r.ok())
        return r;
    ScsiResult outcome;
    if (!registered(mine, keys)) {
        (void)register_key(); // never leave this host unable to write its own disk
        outcome.kind = ScsiResult::Kind::other_status;
        outcome.message = "the target dropped this host's own registration on PREEMPT (re-registered)";
    }
    if (registered(peer, keys)) {
        outcome.kind = ScsiResult::Kind::other_status;
        outcome.message = "the target did not remove host " + std::to_string(cfg_.peer_id) +
                          "'s registration: its writes are not fenced";
    }
    if (!own.ok()) {
        own.message = "this host's disk session could not register again after PREEMPT: " + own.message;
        if (outcome.ok())
            return own;
        outcome.message += "; " + own.message;
    }
    if (!outcome.ok())
        return outcome;
    std::uint64_t holder = 0;
    if (auto h = lun_.pr_read_holder(holder); !h.ok())
        return h;
    if (holder != mine)
        return lun_.pr_reserve(mine);
    return {};
}

ScsiResult Arbiter::register_own_sessions()
{
    for (const auto& register_again : own_sessions_)
        if (auto r = register_again(); !r.ok() && !r.illegal_request())
            return r;
    return {};
}

} // namespace xenft::arbiter
