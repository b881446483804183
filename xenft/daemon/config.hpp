// xenftd's configuration file (xenft.conf(5)): one file per protected VM per host, INI style,
// parsed with Boost.ProgramOptions. load_config() checks every value and says which key is
// wrong and why; nothing is opened or started here.
#pragma once

#include <cstdint>
#include <string>

#include "xenft/common/expected.hpp"
#include "xenft/common/socket_address.hpp"

namespace xenft::daemon {

struct DaemonConfig {
    // [vm]
    std::uint64_t vm_id = 0;
    // Who runs the guest: "kvm" (xenftd itself, from `image`: the tests and the demo) or "xen"
    // (a domain `xl create` with ft= made; xenftd is its device model and records or replays it).
    std::string backend = "kvm";
    std::string image;         // the guest's PVH ELF image (kvm)
    std::string cmdline;       // passed to the guest (hvm_start_info)
    std::uint64_t memory_mib = 16; // xen: the domain's memory= (the device models' DMA bound)
    // [pair]
    std::uint32_t host_id = 0, peer_id = 0;
    bool primary = true;       // role at start: primary or backup
    std::uint64_t epoch = 1;   // the arbitration record's epoch when the pair was set up
    std::uint32_t record_owner = 0;
    bool rejoin = true;        // after the VM here is halted, join again as a backup
    // [network]
    std::string tap;           // the guest NIC's TAP interface (persistent, created by the admin)
    std::string mac = "52:54:00:58:46:01";
    // [disk]
    std::string disk_lun;      // iscsi://... (the shared LUN) or
    std::string disk_file;     // a local file (tests, demos without a LUN; the only kind on xen yet)
    std::uint64_t disk_first_lba = 64;
    std::uint64_t disk_mib = 1;
    // [arbiter]
    std::string arbiter_lun;
    std::uint64_t record_lba = 0;
    std::string initiator;     // this host's IQN
    int lun_timeout_s = 2;
    // [channel]
    SocketAddress channel_listen; // where this host listens when it is the backup
    SocketAddress channel_peer;   // the peer's channel_listen (this host as primary connects)
    std::string cert, key, ca, fingerprint, peer_name;
    // [heartbeat]
    SocketAddress heartbeat_listen, heartbeat_peer;
    std::string heartbeat_key_file;
    // [failover]
    std::uint64_t failover_ms = 1000; // xen: the peer's silence before the test-and-set
    std::uint64_t digest_ms = 1000;   // xen: the primary's state digests, at most this often
    // [control]
    std::string control_socket; // default /run/xenft/vm-<id>.sock
};

Expected<DaemonConfig, std::string> load_config(const std::string& path);

// "52:54:00:58:46:01" -> bytes; false if malformed.
bool parse_mac(const std::string& text, std::uint8_t (&out)[6]);

} // namespace xenft::daemon
