// The guest disk on the shared iSCSI LUN: a range of its blocks (the arbiter's record lives
// in another part of the same LUN), reached through libiscsi like the arbiter. Requests are
// split at 1 MiB; each command has the LUN's timeout, so an unreachable target turns into an
// I/O error for the guest rather than a hang. The VM thread uses it, and the node's control
// thread registers its key again after fencing (register_again()): one lock serializes them,
// as libiscsi's contexts are not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "xenft/arbiter/lun.hpp"
#include "xenft/devices/virtio_blk.hpp"

namespace xenft::devices {

class IscsiStore final : public BlockPort {
public:
    // The disk is `bytes` long from block first_lba; the LUN must have 512-byte blocks (the
    // virtio sector) and be large enough. With reservation_key (the host's arbiter key,
    // Arbiter::key_of), the session registers that key, so the guest's writes go through the
    // reservation the arbiter's winner holds and are fenced along with the arbiter's own
    // session when this host loses (a PREEMPT removes every registration of the key). The
    // error names the LUN and the cause.
    static Expected<IscsiStore, std::string> open(arbiter::Lun lun, std::uint64_t first_lba, std::uint64_t bytes,
                                                  std::uint64_t reservation_key = 0);

    bool read(std::uint64_t offset, std::span<std::uint8_t> out) override;
    bool write(std::uint64_t offset, std::span<const std::uint8_t> data) override;
    bool flush() override;
    std::uint64_t size_bytes() const noexcept { return bytes_; }
    // The last command's failure, for the log ("LUN ...: timed out after 2 s").
    std::string last_error() const;
    // Where the store says that requests began to fail (the first failure after a success,
    // with its cause) and that they work again: the guest only sees an I/O error.
    void set_log(std::function<void(const std::string&)> log);
    // REGISTER AND IGNORE EXISTING KEY on this session again (Arbiter::add_own_session). Good
    // where the target has no persistent reservations or the store was opened without a key.
    arbiter::ScsiResult register_again();

private:
    IscsiStore(arbiter::Lun lun, std::uint64_t first_lba, std::uint64_t bytes, std::uint64_t key)
        : lun_(std::move(lun)), first_lba_(first_lba), bytes_(bytes), key_(key)
    {
    }
    bool fail(const std::string& what, const arbiter::ScsiResult& r);
    bool succeeded();

    std::unique_ptr<std::mutex> mu_ = std::make_unique<std::mutex>(); // movable, as Expected needs
    arbiter::Lun lun_;
    std::uint64_t first_lba_, bytes_, key_;
    std::string last_error_;
    std::function<void(const std::string&)> log_;
    std::uint64_t failed_since_ok_ = 0;
};

} // namespace xenft::devices
