// A shared LUN reached through libiscsi (userspace initiator): the SCSI commands the arbiter
// needs, each with a timeout, retried on UNIT ATTENTION, and reported as a ScsiResult that
// says plainly what happened. The session has a pinned ISID (so persistent reservations,
// which belong to initiator name + ISID, survive reconnects) and reconnects itself after a
// transport failure.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"

struct iscsi_context;
struct scsi_task;

namespace xenft::arbiter {

struct ScsiResult {
    enum class Kind { good, check_condition, reservation_conflict, transport_error, other_status };
    Kind kind = Kind::good;
    int sense_key = 0; // for check_condition
    int asc = 0, ascq = 0;
    std::string message; // e.g. "ILLEGAL REQUEST (asc 0x20, ascq 0x00)", "timed out after 2 s"

    bool ok() const noexcept { return kind == Kind::good; }
    bool miscompare() const noexcept { return kind == Kind::check_condition && sense_key == 0x0e; }
    bool illegal_request() const noexcept { return kind == Kind::check_condition && sense_key == 0x05; }
};

struct LunConfig {
    std::string url;            // iscsi://HOST[:PORT]/TARGET-IQN/LUN
    std::string initiator_name; // this host's IQN
    std::uint16_t isid_qualifier = 0; // pinned ISID: XFT enterprise number + this qualifier
    int timeout_s = 2;          // every command and login
};

class Lun {
public:
    // Logs in and reads the capacity; the error names the URL and the cause.
    static Expected<Lun, std::string> connect(const LunConfig& cfg);
    // Empty if `url` is an iscsi:// URL libiscsi can connect to (HOST[:PORT]/TARGET-IQN/LUN),
    // else why not. No network.
    static std::string url_problem(const std::string& url);
    Lun(Lun&&) noexcept;
    Lun& operator=(Lun&&) noexcept;
    ~Lun();

    std::uint32_t block_size() const noexcept { return block_size_; }
    std::uint64_t blocks() const noexcept { return blocks_; }
    const std::string& url() const noexcept { return cfg_.url; }

    ScsiResult read(std::uint64_t lba, std::vector<std::uint8_t>& block) { return read_blocks(lba, 1, block); }
    ScsiResult write(std::uint64_t lba, std::span<const std::uint8_t> block) { return write_blocks(lba, block); }
    // Several consecutive blocks in one command (the guest disk on the shared LUN).
    ScsiResult read_blocks(std::uint64_t lba, std::uint32_t count, std::vector<std::uint8_t>& data);
    ScsiResult write_blocks(std::uint64_t lba, std::span<const std::uint8_t> data); // whole blocks
    ScsiResult synchronize_cache();
    // One block: write `replace` if the block still holds `expect`, atomically.
    ScsiResult compare_and_write(std::uint64_t lba, std::span<const std::uint8_t> expect,
                                 std::span<const std::uint8_t> replace);

    // SCSI-3 persistent reservations (type 5: write exclusive, registrants only).
    ScsiResult pr_register(std::uint64_t key);          // registers (or replaces) this nexus's key
    ScsiResult pr_reserve(std::uint64_t key);
    ScsiResult pr_preempt(std::uint64_t key, std::uint64_t victim);
    ScsiResult pr_read_keys(std::vector<std::uint64_t>& keys);
    ScsiResult pr_read_holder(std::uint64_t& key);      // 0: no reservation

private:
    explicit Lun(LunConfig cfg) : cfg_(std::move(cfg)) {}
    Expected<bool, std::string> login();
    template <class Issue>
    ScsiResult run(Issue issue, std::vector<std::uint8_t>* data_in);

    LunConfig cfg_;
    iscsi_context* ctx_ = nullptr;
    int lun_ = 0;
    std::string portal_, target_;
    std::uint32_t block_size_ = 512;
    std::uint64_t blocks_ = 0;
};

} // namespace xenft::arbiter
