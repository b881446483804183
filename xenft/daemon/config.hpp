// xenftd's configuration file (xenft.conf(5)): one file per protected VM per host, INI style,
// parsed with Boost.ProgramOptions. read_config() checks every value (kinds, ranges, URLs,
// IQNs, addresses, how the keys go together) and reports every problem with its key and line;
// load_config() is the same, stopping at the first. Nothing is opened or started here: the
// files the configuration names are xenftd's to check (--check-config).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

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
    std::string cmdline;       // passed to the guest (hvm_start_info; the Linux kernel's)
    // xen: a Linux bzImage (and initrd) xenftd boots directly on the plain PC the domain is
    // (device_model_version = "none"), with ACPI tables naming its virtio devices
    std::string kernel, initrd;
    std::uint64_t memory_mib = 16; // xen: the domain's memory= (the device models' DMA bound)
    // xen: the file the guest's serial console is kept in (empty: not kept); by default
    // /var/log/xenft/NAME.console for the configuration NAME.conf
    std::string console_log;
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
    std::string disk_file;     // a local file (one host's demo; on xen each host its own copy)
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

// One problem of a configuration file: the key (or section; empty: the whole file), the line it
// is on (0: not in the file, e.g. a required key missing), and why.
struct ConfigProblem {
    std::string key;
    unsigned line = 0;
    std::string why;
};

// A configuration file read with every problem found. config is only usable if problems is empty.
struct ConfigCheck {
    std::string path;
    DaemonConfig config;
    std::vector<ConfigProblem> problems;
    std::map<std::string, unsigned> lines; // "section.key" -> its line

    void problem(const std::string& key, const std::string& why);
    // In the file's order; what is not in the file (a missing key) after.
    void sort_by_line();
    // "PATH:LINE: key: why" (no line when the key is not in the file, no key for the file).
    std::string describe(const ConfigProblem& p) const;
};

ConfigCheck read_config(const std::string& path);
// The first problem of read_config() as the error.
Expected<DaemonConfig, std::string> load_config(const std::string& path);

// Empty if `name` is an iSCSI name (RFC 3720: iqn.YYYY-MM.authority[:id], eui. or naa. and
// hex digits), else why not.
std::string iscsi_name_problem(const std::string& name);

// "52:54:00:58:46:01" -> bytes; false if malformed.
bool parse_mac(const std::string& text, std::uint8_t (&out)[6]);

} // namespace xenft::daemon
