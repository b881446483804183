// The arbiter: the atomic test-and-set on the shared LUN that decides, when the pair breaks,
// which replica may run the protected VM. Never two primaries:
// - acquire(E, owner) moves the arbitration record (record.hpp) from (E, owner) to (E+1, me)
//   with a single SCSI COMPARE AND WRITE (VMware's ATS). One racer wins; the others get
//   MISCOMPARE and learn who holds the record now.
// - Fencing: where the target has SCSI-3 persistent reservations, each host registers a key
//   and the winner preempts the loser's, so a deposed primary's late writes are refused by the
//   storage itself.
// - Targets without COMPARE AND WRITE (tgt) fall back to a PREEMPT race on the reservation,
//   with weaker guarantees: the target forgets reservations when it restarts (docs/arbiter.md).
// - Whatever cannot be decided (timeout, lost reply, unreachable target, corrupt record) is
//   "unknown", which the protocol treats as "not won".
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "xenft/arbiter/lun.hpp"
#include "xenft/arbiter/record.hpp"

namespace xenft::arbiter {

struct ArbiterConfig {
    LunConfig lun;
    std::uint64_t vm_id = 0;
    std::uint32_t host_id = 0;   // this host
    std::uint32_t peer_id = 0;   // the other host of the pair (whose key fencing preempts)
    std::uint64_t record_lba = 0;
    bool fencing = true;         // use persistent reservations where the target has them
};

struct Capabilities {
    bool compare_and_write = false;
    bool persistent_reservations = false;
};

enum class Outcome { won, lost, unknown };
std::string_view outcome_name(Outcome o) noexcept;

struct AcquireResult {
    Outcome outcome = Outcome::unknown;
    Record holder;      // the record as it now stands, when known (won: ours; lost: the winner's)
    bool holder_known = false;
    std::string detail; // why, for logs and status
};

class Arbiter {
public:
    // Connects, checks the LUN is large enough and probes what the target really supports.
    static Expected<Arbiter, std::string> open(const ArbiterConfig& cfg);

    const Capabilities& capabilities() const noexcept { return caps_; }
    Lun& lun() noexcept { return lun_; }

    Expected<Record, std::string> read();
    // Writes a fresh record (epoch, owner nobody). Refuses to overwrite a valid record of
    // another VM, or of this VM unless force.
    Expected<Record, std::string> init(std::uint64_t epoch, bool force);
    AcquireResult acquire(std::uint64_t known_epoch, std::uint32_t known_owner);

    // This host's reservation key: "XFT" and the host id.
    static std::uint64_t key_of(std::uint32_t host) noexcept { return 0x5846540000000000ull | host; }
    // Registers this host's key (idempotent); done by open() where reservations exist.
    ScsiResult register_key();
    // Removes the peer's registration so its writes are refused, and holds the reservation.
    ScsiResult fence_peer();
    // Another session of this host on the same LUN that writes under this host's key (the
    // guest disk's, devices::IscsiStore). It registers the key again after every PREEMPT this
    // host sends: a target may drop the wrong registration (istgt 0.4 drops one of the
    // sender's own when a host has two), which would leave the winner's guest unable to write
    // its own disk (RESERVATION CONFLICT) right after it went live. Only a winner preempts,
    // so a fenced loser never registers again this way.
    using OwnSession = std::function<ScsiResult()>;
    void add_own_session(OwnSession register_again) { own_sessions_.push_back(std::move(register_again)); }

private:
    explicit Arbiter(const ArbiterConfig& cfg, Lun lun) : cfg_(cfg), lun_(std::move(lun)) {}
    Expected<std::vector<std::uint8_t>, ScsiResult> read_block();
    std::vector<std::uint8_t> block_of(const Record& r) const;
    AcquireResult acquire_by_reservation(const Record& current);
    ScsiResult register_own_sessions();

    ArbiterConfig cfg_;
    Lun lun_;
    Capabilities caps_;
    bool fencing_unreliable_ = false; // a PREEMPT was seen to remove the wrong registration
    std::vector<OwnSession> own_sessions_;
};

} // namespace xenft::arbiter
