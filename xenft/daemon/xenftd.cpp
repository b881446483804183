// xenftd, the per-host FT daemon (see xenftd(8)): reads one VM's configuration (xenft.conf(5)),
// opens what the pair needs (guest image, TAP, disk, arbiter LUN, TLS, heartbeat key), runs the
// node (xenft/daemon/node.hpp) and answers the xenft CLI on a Unix control socket. When the
// node halts its VM (it lost the test-and-set, or was deposed), xenftd starts a new node that
// joins the pair as a backup and gets a live copy of the VM from the primary (pair.rejoin).
//
// Two backends (vm.backend), one node: kvm, where xenftd runs the guest from its image itself
// (the tests and the demo; daemon/kvm_execution.hpp), and xen, where `xl create` with ft= made
// the domain and its hook starts xenftd with --domid: xenftd becomes the domain's device model
// and records it or replays it (daemon/xen_execution.hpp). The xen backend is built when
// configure found Xen's libraries (XENFT_HAVE_XEN; Debian's libxen-dev is enough).
#include "config.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "xenft/backends/kvm/kvm_backend.hpp"
#include "xenft/common/log_line.hpp"
#include "xenft/common/version.hpp"
#include "xenft/daemon/config.hpp"
#include "xenft/daemon/node.hpp"
#include "xenft/devices/host_io.hpp"
#include "xenft/devices/iscsi_store.hpp"
#include "xenft/engine/linux_image.hpp"
#ifdef XENFT_HAVE_XEN
#include "xenft/backends/xen/linux_boot.hpp"
#include "xenft/daemon/xen_execution.hpp"
#endif

namespace po = boost::program_options;
using namespace xenft;

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

int fail(const std::string& what)
{
    std::cerr << "xenftd: " << what << "\n";
    return 1;
}

// One xenftd per VM on a host: an exclusive lock on a file beside the control socket, held for
// the process's life (the kernel drops it when the process dies, however it dies). A second
// xenftd for the same VM stops there, before it touches the running one's TAP, iSCSI session
// (a second login with the same ISID would end the first) or socket. The lock file goes when
// its holder exits, and the socket's folder if this daemon made it, so a daemon that fails to
// start leaves nothing behind; a newcomer checks that the file it locked is still the one at
// the path, as one that was removed meanwhile protects nothing.
class VmLock {
public:
    static Expected<std::unique_ptr<VmLock>, std::string> take(const std::string& control_socket)
    {
        const std::filesystem::path folder = std::filesystem::path(control_socket).parent_path();
        std::error_code ec;
        const bool made_folder = !folder.empty() && std::filesystem::create_directories(folder, ec);
        std::unique_ptr<VmLock> lock(new VmLock(control_socket + ".lock", made_folder ? folder : ""));
        for (int attempt = 0; attempt < 10; ++attempt) {
            lock->fd_.reset(::open(lock->path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
            if (!lock->fd_.valid())
                return unexpected("lock " + lock->path_ + ": " + std::strerror(errno));
            if (::flock(lock->fd_.get(), LOCK_EX | LOCK_NB) != 0) {
                const int e = errno;
                std::string holder;
                std::getline(std::ifstream(lock->path_), holder);
                lock->fd_.reset();
                if (e != EWOULDBLOCK)
                    return unexpected("lock " + lock->path_ + ": " + std::strerror(e));
                return unexpected("another xenftd" + (holder.empty() ? std::string() : " (pid " + holder + ")") +
                                  " already protects this VM on this host (it holds " + lock->path_ +
                                  "); not starting a second one");
            }
            struct stat held {}, now {};
            if (::fstat(lock->fd_.get(), &held) == 0 && ::stat(lock->path_.c_str(), &now) == 0 &&
                held.st_ino == now.st_ino && held.st_dev == now.st_dev) {
                const std::string pid = std::to_string(::getpid()) + "\n";
                if (::ftruncate(lock->fd_.get(), 0) != 0 ||
                    ::write(lock->fd_.get(), pid.data(), pid.size()) != static_cast<ssize_t>(pid.size()))
                    return unexpected("lock " + lock->path_ + ": " + std::strerror(errno));
                lock->owned_ = true;
                return lock;
            }
        }
        return unexpected("lock " + lock->path_ + ": removed and made again while this xenftd took it, 10 times");
    }
    ~VmLock()
    {
        if (owned_)
            ::unlink(path_.c_str());
        fd_.reset();
        if (!made_folder_.empty())
            ::rmdir(made_folder_.c_str()); // only if empty: another VM's daemon may use it
    }
    VmLock(const VmLock&) = delete;
    VmLock& operator=(const VmLock&) = delete;

private:
    VmLock(std::string path, std::filesystem::path made_folder)
        : path_(std::move(path)), made_folder_(std::move(made_folder))
    {
    }
    std::string path_;
    std::filesystem::path made_folder_;
    UniqueFd fd_;
    bool owned_ = false;
};

nlohmann::json status_json(const daemon::DaemonConfig& c, const daemon::NodeStatus& s)
{
    const bool primary = protocol::is_primary(s.role);
    const auto& p = s.copy;
    nlohmann::json copy = {{"active", p.active},
                           {"direction", p.sending ? "sending" : "receiving"},
                           {"round", p.round},
                           {"percent", p.percent()},
                           {"pages_total", p.pages_total},
                           {"pages_copied", p.pages_copied},
                           {"mib_per_s", p.mib_per_s},
                           {"eta_s", p.eta_s},
                           {"copies_done", p.copies_done},
                           {"last_seconds", p.last_seconds},
                           {"last_rounds", p.last_rounds},
                           {"last_pause_ms", p.last_pause_ms},
                           {"last_error", p.last_error}};
    // Schema 2: "role" became the fixed word (it was the text, now "role_text").
    nlohmann::json reply = {{"schema", 2},
            {"vm", c.vm_id},
            {"host", c.host_id},
            {"peer", c.peer_id},
            {"backend", c.backend},
            {"role", std::string(protocol::role_word(s.role))},
            {"role_text", std::string(protocol::role_name(s.role))},
            {"epoch", s.epoch},
            {"exits", s.exits},
            {"logged", s.logged},
            {"acked", s.acked},
            {"received", s.received},
            {"executed", s.executed},
            {"lag_entries", primary ? s.logged - std::min(s.logged, s.acked) : s.received - std::min(s.received, s.executed)},
            {"lag_ms", s.lag_ms},
            {"log_mbit_s", s.log_mbit_s},
            {"held_outputs", s.held_outputs},
            {"reason", s.reason},
            {"failure", s.failure},
            {"heartbeats_rejected", s.heartbeats_rejected},
            {"copy", copy},
            {"last_failover", s.last_failover},
            {"last_failover_unix_ms", s.last_failover_unix_ms}};
    if (c.backend == "xen") {
        // The protected domain: its id, the state digests (primary: taken at write exits;
        // backup: compared with the primary's at the same exits, each one matched), copies.
        nlohmann::json domain = s.backend;
        domain["channel_up"] = s.channel_up;
        domain["last_copy"] = s.copy.last_summary;
        reply["domain"] = domain;
    }
    return reply;
}

// What a node needs beyond the configuration: opened once, shared by every node xenftd starts.
struct HostParts {
    std::optional<devices::TapDevice> tap;
    std::unique_ptr<devices::BlockPort> disk;
    std::optional<channel::TlsContext> tls_client, tls_server;
    detector::HeartbeatKey heartbeat_key{};
    std::unique_ptr<devices::ConsoleLog> console; // xen: the guest's serial console, if kept
};

// The failure detector and the test-and-set as the configuration sets them, for either backend.
detector::HeartbeatSocketConfig heartbeat_config(const daemon::DaemonConfig& cfg, const HostParts& parts)
{
    return {cfg.heartbeat_listen, cfg.heartbeat_peer, cfg.vm_id, cfg.host_id, cfg.peer_id, parts.heartbeat_key};
}

arbiter::ArbiterConfig arbiter_config(const daemon::DaemonConfig& cfg)
{
    arbiter::ArbiterConfig a;
    a.lun = {cfg.arbiter_lun, cfg.initiator, static_cast<std::uint16_t>(cfg.host_id), cfg.lun_timeout_s};
    a.vm_id = cfg.vm_id;
    a.host_id = cfg.host_id;
    a.peer_id = cfg.peer_id;
    a.record_lba = cfg.record_lba;
    return a;
}

// What every node of this VM shares, for either backend: who the hosts are, the channel, the
// heartbeats, the test-and-set.
daemon::NodeConfig pair_config(const daemon::DaemonConfig& cfg, HostParts& parts, bool join)
{
    daemon::NodeConfig n;
    n.vm_id = cfg.vm_id;
    n.self = cfg.host_id;
    n.peer = cfg.peer_id;
    n.start_as_primary = cfg.primary;
    n.join = join;
    n.epoch = cfg.epoch;
    n.record_owner = cfg.record_owner;
    n.channel.vm_id = cfg.vm_id;
    n.channel.self = cfg.host_id;
    n.channel.peer = cfg.peer_id;
    n.channel.batch_delay = 2000;
    n.channel_listen = cfg.channel_listen;
    n.channel_peer = cfg.channel_peer;
    n.tls_client = &*parts.tls_client;
    n.tls_server = &*parts.tls_server;
    n.heartbeat = heartbeat_config(cfg, parts);
    n.arbiter = arbiter_config(cfg);
    if (auto* lun_disk = dynamic_cast<devices::IscsiStore*>(parts.disk.get()))
        n.disk_session = [lun_disk] { return lun_disk->register_again(); };
    return n;
}

// A node for the VM: a fresh guest from the image (a joining node's memory is then replaced by
// the live copy).
Expected<std::unique_ptr<daemon::Node>, std::string> start_node(const daemon::DaemonConfig& cfg, HostParts& parts, bool join)
{
    const std::string vm_name = "vm " + std::to_string(cfg.vm_id);
    const std::uint64_t memory = cfg.memory_mib << 20;
    auto image = engine::load_pvh_image(cfg.image, memory);
    if (!image)
        return unexpected(vm_name + ": " + image.error());
    auto backend = backends::KvmBackend::create(*image, memory, cfg.cmdline);
    if (!backend)
        return unexpected(vm_name + ": " + backend.error());
    daemon::NodeConfig n = pair_config(cfg, parts, join);
    n.backend = std::move(backend).value();
    n.machine.network = parts.tap.has_value();
    std::uint8_t mac[6];
    daemon::parse_mac(cfg.mac, mac);
    std::copy(std::begin(mac), std::end(mac), n.machine.mac.begin());
    n.machine.disk_bytes = parts.disk ? cfg.disk_mib << 20 : 0;
    n.tap = parts.tap ? &*parts.tap : nullptr;
    n.disk = parts.disk.get();
    return daemon::Node::start(std::move(n));
}

#ifdef XENFT_HAVE_XEN
// A node for the domain `xl create` made: the arbitration record says whether this host runs
// it (and the backup takes a live copy of it) or joins as the backup. The failure detector is
// slower than KVM's: a Xen host under load (or under QEMU TCG) may pause dom0 for a while.
Expected<std::unique_ptr<daemon::Node>, std::string> start_xen_node(const daemon::DaemonConfig& cfg, HostParts& parts,
                                                                    std::uint32_t domid, bool unpause, bool join)
{
    daemon::NodeConfig n = pair_config(cfg, parts, join);
    n.backup_needs_copy = true;
    n.protocol.heartbeat_interval = 100'000;
    n.protocol.suspect_timeout = cfg.failover_ms * 1000;
    n.protocol.lease_margin = n.protocol.suspect_timeout / 10;
    n.protocol.arbiter_retry = 500'000;
    // The primary's lead over its backup's replay: at most this much unacked log, and the
    // backup reads no more while max_replay_backlog (16,384) entries wait for replay. A backup
    // slower than its primary (as under TCG) thus slows the primary down, and going live never
    // has more than about 16,000 entries to replay (plus one channel frame).
    n.protocol.max_unacked_entries = 65536;
    backends::xen::FtSpec spec;
    spec.devices.memory_bytes = cfg.memory_mib << 20;
    spec.devices.tap = cfg.tap;
    spec.devices.disk = cfg.disk_file;
    spec.devices.shared_disk = parts.disk.get(); // the LUN's (xenftd opened it), if the disk is on it
    spec.devices.shared_disk_bytes = cfg.disk_mib << 20;
    std::uint8_t mac[6];
    daemon::parse_mac(cfg.mac, mac); // checked by load_config
    std::copy(std::begin(mac), std::end(mac), spec.devices.mac.begin());
    spec.digest_interval_ms = cfg.digest_ms;
    spec.devices.console = parts.console.get();
    if (!cfg.kernel.empty()) {
        // A Linux guest on the plain PC: its devices interrupt on the ISA lines the ACPI tables
        // name, on both hosts (a backup that goes live serves them so); the replica that starts
        // the VM boots the kernel, a backup gets it running in its live copy. Both read the
        // kernel, so a host that cannot fails at its start, not at a failover.
        auto image = backends::xen::prepare_linux_pc(spec.devices, cfg.kernel, cfg.initrd, cfg.cmdline);
        if (!image)
            return unexpected("vm " + std::to_string(cfg.vm_id) + ": " + image.error());
        if (!join)
            spec.linux_image = std::move(image).value();
    }
    spec.unpause = unpause && !join;
    // A node after a halt takes a copy into the domain the halted one paused.
    spec.paused_by_xenft = join;
    // Lines go to stderr at once, one write each (the node's threads log at once): to the journal
    // under systemd, else to the VM's log file the xl hook opened, with the time.
    n.log = [](LogPriority priority, const std::string& line) { write_log_line(priority, "xenftd: " + line); };
    const std::string who = "vm " + std::to_string(cfg.vm_id) + " (host " + std::to_string(cfg.host_id) + "): ";
    n.make_execution = [domid, spec, log = n.log, who](bool records) -> Expected<std::unique_ptr<daemon::Execution>, std::string> {
        auto x = daemon::XenExecution::start(domid, spec, records, [log, who](const std::string& line) { log(LogPriority::info, who + line); });
        if (!x)
            return unexpected(x.error());
        return std::unique_ptr<daemon::Execution>(std::move(x).value());
    };
    return daemon::Node::start(std::move(n));
}
#endif

// One request per connection on the control socket: a command line in, one JSON line out.
struct Request {
    UniqueFd fd;
    std::string command;
};

std::optional<Request> accept_request(int listener)
{
    UniqueFd fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (fd.get() < 0)
        return std::nullopt;
    char buf[256] = {};
    timeval tv{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
    std::string cmd(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!cmd.empty() && (cmd.back() == '\n' || cmd.back() == '\r'))
        cmd.pop_back();
    return Request{std::move(fd), std::move(cmd)};
}

void answer(Request& r, const nlohmann::json& reply)
{
    const std::string out = reply.dump() + "\n";
    (void)!::write(r.fd.get(), out.data(), out.size());
}

// Why this host's replica last halted, kept across the nodes xenftd starts one after another.
struct LastHalt {
    std::string why;
    std::uint64_t unix_ms = 0;
};

// `node` is null while xenftd waits to start a new one; rejoin_now asks for it at once.
void serve(int listener, const daemon::DaemonConfig& cfg, daemon::Node* node, const LastHalt& last_halt, bool& rejoin_now)
{
    auto request = accept_request(listener);
    if (!request)
        return;
    const std::string& cmd = request->command;
    nlohmann::json reply;
    const auto role = node ? node->status().role : protocol::Role::halted;
    if (cmd != "status" && cmd != "failover" && cmd != "unprotect" && cmd != "protect") {
        reply = {{"error", "unknown command \"" + cmd.substr(0, 40) + "\" (status, failover, unprotect, protect)"}};
    } else if (cmd == "status") {
        reply = node ? status_json(cfg, node->status())
                     : nlohmann::json{{"schema", 2},
                                      {"vm", cfg.vm_id},
                                      {"host", cfg.host_id},
                                      {"peer", cfg.peer_id},
                                      {"backend", cfg.backend},
                                      {"role", "joining"},
                                      {"role_text", "none (about to join the pair as a backup)"},
                                      {"epoch", 0}};
        if (!last_halt.why.empty()) {
            reply["last_halt"] = last_halt.why;
            reply["last_halt_unix_ms"] = last_halt.unix_ms;
        }
    } else if (cmd == "failover") {
        if (role != protocol::Role::backup_replaying) {
            reply = {{"error", "this host is " + std::string(protocol::role_name(role)) +
                                   ": failover is asked of the backup that replays the log"}};
        } else {
            node->request(protocol::OperatorFailover{});
            reply = {{"ok", true}, {"note", "failover requested; the backup goes live once it wins the test-and-set"}};
        }
    } else if (cmd == "unprotect") {
        if (!protocol::is_primary(role)) {
            reply = {{"error", "this host is " + std::string(protocol::role_name(role)) + ": unprotect is asked of the primary"}};
        } else {
            node->request(protocol::OperatorUnprotect{});
            reply = {{"ok", true},
                     {"note", "unprotect requested; the primary continues alone and gives no backup a copy until "
                              "`xenft protect`"}};
        }
    } else if (protocol::is_primary(role)) {
        node->request(protocol::OperatorProtect{});
        reply = {{"ok", true}, {"note", "protection allowed; a backup host that asks gets a live copy of the VM"}};
    } else if (role == protocol::Role::halted) {
        rejoin_now = true;
        reply = {{"ok", true}, {"note", "this host joins the pair as a backup now; the primary sends it a live copy"}};
    } else {
        reply = {{"ok", true}, {"note", "this host is already " + std::string(protocol::role_name(role))}};
    }
    answer(*request, reply);
}

// --check-config: everything a start checks that does not need the peer (the values, the files
// they name, the backend), every problem on a line of its own with the key and the line.
int check_config(const std::string& path)
{
    auto check = daemon::read_config(path);
    const daemon::DaemonConfig& c = check.config;
    auto readable_file = [&](const char* key, const std::string& file, bool writable) {
        struct stat st {};
        if (::stat(file.c_str(), &st) != 0)
            check.problem(key, file + ": " + std::strerror(errno));
        else if (!S_ISREG(st.st_mode))
            check.problem(key, file + ": not a regular file");
        else if (::access(file.c_str(), writable ? R_OK | W_OK : R_OK) != 0)
            check.problem(key, file + ": " + std::strerror(errno));
    };
#ifndef XENFT_HAVE_XEN
    if (c.backend == "xen")
        check.problem("vm.backend", "xen, but this xenftd was built without the Xen backend (configure found no "
                                    "Xen libraries: apt-get install libxen-dev, then build again)");
#endif
    if (c.backend == "kvm" && !c.image.empty())
        readable_file("vm.image", c.image, false);
    if (!c.disk_file.empty())
        readable_file("disk.file", c.disk_file, true);
    if (!c.kernel.empty()) {
        // As a start lays it out: a bzImage (and initrd) that fits memory-mib with the command line.
        auto image = engine::load_linux_image(c.kernel, c.initrd, {c.memory_mib << 20, c.cmdline, std::nullopt});
        if (!image) {
            const bool initrd = image.error().find(" the initrd " + c.initrd) != std::string::npos;
            check.problem(initrd ? "vm.initrd" : "vm.kernel", image.error());
        }
    }
    if (!c.cert.empty() && !c.key.empty() && c.ca.empty() != c.fingerprint.empty()) {
        // The files as a start opens them: certificate, key (matching it, not readable by
        // others), the CA.
        auto tls = channel::TlsContext::create({c.cert, c.key, c.ca, c.fingerprint, c.peer_name},
                                               channel::TlsContext::Side::client);
        if (!tls) {
            const std::string& e = tls.error();
            const char* key = e.find(c.key) != std::string::npos    ? "channel.key"
                              : e.find(c.cert) != std::string::npos ? "channel.cert"
                              : !c.ca.empty() && e.find(c.ca) != std::string::npos ? "channel.ca"
                                                                                    : "channel";
            check.problem(key, e);
        }
    }
    if (!c.heartbeat_key_file.empty())
        if (auto k = detector::load_heartbeat_key(c.heartbeat_key_file); !k)
            check.problem("heartbeat.key-file", k.error());
    if (!check.problems.empty()) {
        check.sort_by_line();
        for (const auto& p : check.problems)
            std::cerr << "xenftd: " << check.describe(p) << "\n";
        std::cerr << "xenftd: " << path << ": " << check.problems.size()
                  << (check.problems.size() == 1 ? " problem" : " problems") << "; nothing was started\n";
        return 1;
    }
    std::cout << "xenftd: " << path << ": vm " << c.vm_id << " (backend " << c.backend << "), host " << c.host_id << " ("
              << (c.primary ? "primary" : "backup") << "), peer host " << c.peer_id
              << (c.console_log.empty() ? std::string() : ", console log " + c.console_log) << ", control socket "
              << c.control_socket << ": ok\n";
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    std::string config_path = "/etc/xenft/xenft.conf";
    std::uint32_t domid = 0;
    po::options_description opts("usage: xenftd [options]");
    opts.add_options()("help,h", "show this help")("version", "print the version")(
        "config,c", po::value(&config_path), "configuration file (default /etc/xenft/xenft.conf)")(
        "check-config", "check the configuration file and exit")(
        "domid", po::value(&domid), "backend = xen: the domain to protect, created paused (the xl hook passes it)")(
        "unpause", "backend = xen: unpause the domain once protected (after `xl create -p`; with ft= xl does)");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, opts), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "xenftd: " << e.what() << "\n" << opts;
        return 2;
    }
    if (vm.count("help")) {
        std::cout << opts;
        return 0;
    }
    if (vm.count("version")) {
        std::cout << xenft::version_string() << "\n";
        return 0;
    }
    if (vm.count("check-config"))
        return check_config(config_path);
    auto cfg = daemon::load_config(config_path);
    if (!cfg)
        return fail(cfg.error());
    const std::string vm_name = "vm " + std::to_string(cfg->vm_id);
    const bool xen = cfg->backend == "xen";
    if (xen && (domid == 0 || domid >= 0x7ff0))
        return fail(vm_name + ": backend = xen needs --domid with the id of the domain to protect (the xl hook passes it)");
    if (!xen && (domid != 0 || vm.count("unpause")))
        return fail(vm_name + ": --domid and --unpause are for backend = xen; " + config_path + " has backend = " +
                    cfg->backend);
#ifndef XENFT_HAVE_XEN
    if (xen)
        return fail(vm_name + ": " + config_path + " has backend = xen, but this xenftd was built without the Xen "
                    "backend (configure found no Xen libraries: apt-get install libxen-dev, then build again)");
#endif
    // What needs only this host's files first (a daemon refused here creates nothing); then the
    // VM's lock, before anything a running xenftd of this VM holds is touched.
    HostParts parts;
    // The pair: TLS for either role (the hosts swap roles after a failover), heartbeats.
    const channel::TlsConfig tls_cfg{cfg->cert, cfg->key, cfg->ca, cfg->fingerprint, cfg->peer_name};
    for (auto side : {channel::TlsContext::Side::client, channel::TlsContext::Side::server}) {
        auto tls = channel::TlsContext::create(tls_cfg, side);
        if (!tls)
            return fail(vm_name + ": " + tls.error());
        (side == channel::TlsContext::Side::client ? parts.tls_client : parts.tls_server).emplace(std::move(tls).value());
    }
    auto hb_key = detector::load_heartbeat_key(cfg->heartbeat_key_file);
    if (!hb_key)
        return fail(vm_name + ": " + hb_key.error());
    parts.heartbeat_key = *hb_key;
    auto vm_lock = VmLock::take(cfg->control_socket);
    if (!vm_lock)
        return fail(vm_name + ": " + vm_lock.error());
    if (!xen) {
        // A machine without a usable /dev/kvm could never run the VM.
        if (auto kvm = backends::KvmBackend::open_device(); !kvm)
            return fail(vm_name + ": " + kvm.error());
    }

    // The guest's network and disk (on xen the domain's device models open the TAP and a disk
    // file; the shared LUN's session is the daemon's, kept across the nodes it starts).
    if (!xen && !cfg->tap.empty()) {
        auto t = devices::TapDevice::open(cfg->tap);
        if (!t)
            return fail(vm_name + ": " + t.error());
        parts.tap.emplace(std::move(t).value());
    }
    if (!cfg->disk_lun.empty()) {
        auto lun = arbiter::Lun::connect({cfg->disk_lun, cfg->initiator, static_cast<std::uint16_t>(0x1000 + cfg->host_id),
                                          cfg->lun_timeout_s});
        if (!lun)
            return fail(vm_name + ": guest disk: " + lun.error());
        auto store = devices::IscsiStore::open(std::move(*lun), cfg->disk_first_lba, cfg->disk_mib << 20,
                                               arbiter::Arbiter::key_of(cfg->host_id));
        if (!store)
            return fail(vm_name + ": " + store.error());
        store->set_log([vm_name](const std::string& line) { write_log_line(LogPriority::warning, vm_name + ": guest " + line); });
        parts.disk = std::make_unique<devices::IscsiStore>(std::move(*store));
    } else if (!xen && !cfg->disk_file.empty()) {
        auto store = devices::FileStore::open(cfg->disk_file);
        if (!store)
            return fail(vm_name + ": " + store.error());
        parts.disk = std::make_unique<devices::FileStore>(std::move(*store));
    }

    // The control socket, before the node starts, so a bad path changes nothing.
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (cfg->control_socket.size() >= sizeof addr.sun_path)
        return fail(vm_name + ": control socket path " + cfg->control_socket + " is too long");
    std::memcpy(addr.sun_path, cfg->control_socket.c_str(), cfg->control_socket.size());
    UniqueFd control(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ::unlink(cfg->control_socket.c_str());
    if (::bind(control.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(control.get(), 8) != 0)
        return fail(vm_name + ": control socket " + cfg->control_socket + ": " + std::strerror(errno));
    ::chmod(cfg->control_socket.c_str(), 0600);
    [[maybe_unused]] const bool unpause = vm.count("unpause") > 0; // xen
    // The guest's console is worth keeping, not worth refusing protection for.
    if (xen && !cfg->console_log.empty()) {
        if (auto console = devices::ConsoleLog::open(cfg->console_log); console)
            parts.console = std::move(console).value();
        else
            write_log_line(LogPriority::warning, vm_name + ": " + console.error() + "; the guest's console is not kept");
    }
    auto make_node = [&](bool join) -> Expected<std::unique_ptr<daemon::Node>, std::string> {
#ifdef XENFT_HAVE_XEN
        if (xen) {
            if (parts.console)
                parts.console->note("--- xenft: " + vm_name + ", domain " + std::to_string(domid) +
                                    (join ? ": this host joins the pair again as the backup ---"
                                          : ": xenftd started ---"));
            return start_xen_node(*cfg, parts, domid, unpause, join);
        }
#endif
        return start_node(*cfg, parts, join);
    };
    auto first = make_node(false);
    if (!first) {
        ::unlink(cfg->control_socket.c_str());
        return fail(first.error());
    }
    std::unique_ptr<daemon::Node> node = std::move(first).value();
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    using Clock = std::chrono::steady_clock;
    Clock::time_point halted_since{}, retry_at{};
    LastHalt last_halt;
    bool console_failure_told = false;
    while (!g_stop) {
        pollfd p{control.get(), POLLIN, 0};
        bool rejoin_now = false;
        if (::poll(&p, 1, 200) > 0)
            serve(control.get(), *cfg, node.get(), last_halt, rejoin_now);
        if (parts.console && !console_failure_told)
            if (const std::string why = parts.console->error(); !why.empty()) {
                write_log_line(LogPriority::warning, vm_name + ": " + why + "; the rest of the guest's console is dropped");
                console_failure_told = true;
            }
        // The VM ended with the pair's consent (the guest shut down, the domain was destroyed,
        // and the backup knows): nothing is left to protect. xenftd exits 0, so systemd leaves
        // it stopped, and the next `xl create` of the VM starts a new one.
        if (node && node->ended()) {
            write_log_line(LogPriority::notice, vm_name + ": the VM ended (" + node->status().reason + "); xenftd exits");
            break;
        }
        // The VM stopped here by itself and this node is done with it: a domain that is gone
        // has no more use for its xenftd.
        if (node && node->vm_done() && node->vm_stopped_here()) {
            write_log_line(LogPriority::notice,
                           vm_name + ": the VM is gone from this host (" + node->status().failure + "); xenftd exits");
            break;
        }
        // A halted VM is gone for good; the host can still serve as the backup of the VM that
        // now runs on the peer: a new node joins and gets a live copy (on Xen, into the same
        // domain, which stays paused until the copy is in).
        if (node && node->halted()) {
            if (halted_since == Clock::time_point{})
                halted_since = Clock::now();
            if (node->vm_done() &&
                (rejoin_now || (cfg->rejoin && Clock::now() - halted_since >= std::chrono::seconds(1)))) {
                last_halt.why = node->status().failure;
                last_halt.unix_ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                   std::chrono::system_clock::now().time_since_epoch())
                                                                   .count());
                write_log_line(LogPriority::notice, vm_name + ": the VM on this host was halted (" + last_halt.why +
                                                        "); joining the pair again as a backup");
                node.reset();
                retry_at = Clock::now();
            }
        }
        if (!node && Clock::now() >= retry_at) {
            auto n = make_node(true);
            if (n) {
                node = std::move(n).value();
                halted_since = {};
            } else {
                write_log_line(LogPriority::warning, n.error() + " (trying again in 5 s)");
                retry_at = Clock::now() + std::chrono::seconds(5);
            }
        }
    }
    // `xl destroy` stops xenftd right after destroying the domain: let the node log the VM's
    // end and hear the backup's ack (or give up on it), so the backup does not take it over.
    // (The VM thread notices a destroyed domain within a few ms; 300 ms let it.)
    for (int i = 0; g_stop && node && !node->vm_done() && (i < 3 || (node->vm_stopped_here() && i < 70)); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (g_stop)
        write_log_line(LogPriority::notice,
                       vm_name + ": stopping on signal" +
                           (node ? "; " + std::string(protocol::role_name(node->status().role)) : std::string()));
    node.reset();
    ::unlink(cfg->control_socket.c_str());
    return 0;
}
