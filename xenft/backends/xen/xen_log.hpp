// The log of a protected Xen domain as it travels between the replicas (ft_domain.hpp): the
// hypervisor's ring records (FtRecord) and what xenft's device models did at the domain's
// ioreqs (DeviceEvent), and their translation to and from logformat entries for the logging
// channel. Kept apart from the replicas so that the reading of a peer's entries can be fuzzed
// (fuzz/xen_log_fuzz.cpp) without a Xen host.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "xenft/backends/xen/ft_log.hpp"
#include "xenft/common/expected.hpp"
#include "xenft/logformat/entry.hpp"

namespace xenft::backends::xen {

// What xenft's device models did at the ioreq of synchronous exit `exit` on the primary.
struct DeviceEvent {
    enum class Kind : std::uint8_t {
        net_rx,    // bytes: a frame handed to the NIC
        digest,    // bytes: SHA-256 of memory, vCPU registers and device state, before the write
        disk_read, // bytes: what the guest's disk read from the shared LUN (sector, length), in
                   // the order the device read; none if the read failed (failed)
    };
    Kind kind = Kind::net_rx;
    std::uint64_t exit = 0;
    bool at_read = false;      // the ioreq was a read (the backup gets none for it)
    bool port = false;         // port I/O; otherwise MMIO
    std::uint64_t address = 0; // the ioreq's port or guest-physical address
    std::vector<std::uint8_t> bytes;
    // disk_read: where and how much, and whether the LUN refused it (the guest got an I/O error).
    std::uint64_t sector = 0, length = 0;
    bool failed = false;
};

using XenLogItem = std::variant<FtRecord, DeviceEvent>;
using XenLog = std::deque<XenLogItem>;

// A XenLog on the logging channel: a ring record travels as a xen_record entry; the device
// events of one ioreq as an ioreq_stop entry (read or write, address) followed by their net_rx,
// disk_read and state_digest entries, all at the ioreq's exit (docs/log-format.md). A failed
// disk read is a disk_read in checksum mode with an all-zero checksum, as the KVM backend logs it.
class XenLogWriter {
public:
    // Appends `item`'s entries (vcpu, exit, payload; the caller numbers them) to `out`.
    void write(const XenLogItem& item, std::vector<logformat::Entry>& out);

private:
    std::optional<logformat::IoreqStop> stop_; // the ioreq the last device events belonged to
    std::uint64_t stop_exit_ = 0;
};

class XenLogReader {
public:
    // The item `e` completes, if any (an ioreq_stop only says where the next events happened).
    // An error for an entry the Xen backend never logs or a device event without its ioreq.
    Expected<std::optional<XenLogItem>, std::string> read(const logformat::Entry& e);

private:
    std::optional<logformat::IoreqStop> stop_;
    std::uint64_t stop_exit_ = 0;
};

} // namespace xenft::backends::xen
