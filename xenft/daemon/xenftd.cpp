// xenftd, the per-host FT daemon (see xenftd(8)): reads one VM's configuration (xenft.conf(5)),
// opens what the pair needs (guest image, TAP, disk, arbiter LUN, TLS, heartbeat key), runs the
// node (xenft/daemon/node.hpp) and answers the xenft CLI on a Unix control socket. This build
// runs the guest on the KVM backend; the Xen backend is to come.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "xenft/backends/kvm/kvm_backend.hpp"
#include "xenft/common/version.hpp"
#include "xenft/daemon/config.hpp"
#include "xenft/daemon/node.hpp"
#include "xenft/devices/iscsi_store.hpp"

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

nlohmann::json status_json(const daemon::DaemonConfig& c, const daemon::NodeStatus& s)
{
    const bool primary = protocol::is_primary(s.role);
    return {{"vm", c.vm_id},
            {"host", c.host_id},
            {"peer", c.peer_id},
            {"role", std::string(protocol::role_name(s.role))},
            {"epoch", s.epoch},
            {"exits", s.exits},
            {"logged", s.logged},
            {"acked", s.acked},
            {"received", s.received},
            {"executed", s.executed},
            {"lag_entries", primary ? s.logged - std::min(s.logged, s.acked) : s.received - std::min(s.received, s.executed)},
            {"held_outputs", s.held_outputs},
            {"reason", s.reason},
            {"failure", s.failure},
            {"heartbeats_rejected", s.heartbeats_rejected}};
}

// One request per connection: a command line in, one JSON line out.
void serve(int listener, const daemon::DaemonConfig& cfg, daemon::Node& node)
{
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    char buf[256] = {};
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    std::string cmd(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!cmd.empty() && (cmd.back() == '\n' || cmd.back() == '\r'))
        cmd.pop_back();
    nlohmann::json reply;
    if (cmd == "status") {
        reply = status_json(cfg, node.status());
    } else if (cmd == "failover") {
        node.request(protocol::OperatorFailover{});
        reply = {{"ok", true}, {"note", "failover requested; the backup goes live once it wins the test-and-set"}};
    } else if (cmd == "unprotect") {
        node.request(protocol::OperatorUnprotect{});
        reply = {{"ok", true}, {"note", "unprotect requested; the primary continues alone"}};
    } else {
        reply = {{"error", "unknown command \"" + cmd.substr(0, 40) + "\" (status, failover, unprotect)"}};
    }
    const std::string out = reply.dump() + "\n";
    (void)!::write(fd, out.data(), out.size());
    ::close(fd);
}

} // namespace

int main(int argc, char** argv)
{
    std::string config_path = "/etc/xenft/xenft.conf";
    po::options_description opts("usage: xenftd [options]");
    opts.add_options()("help,h", "show this help")("version", "print the version")(
        "config,c", po::value(&config_path), "configuration file (default /etc/xenft/xenft.conf)")(
        "check-config", "check the configuration file and exit");
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
    auto cfg = daemon::load_config(config_path);
    if (!cfg)
        return fail(cfg.error());
    if (vm.count("check-config")) {
        std::cout << "xenftd: " << config_path << ": vm " << cfg->vm_id << ", host " << cfg->host_id << " ("
                  << (cfg->primary ? "primary" : "backup") << "), peer host " << cfg->peer_id << ": ok\n";
        return 0;
    }
    const std::string vm_name = "vm " + std::to_string(cfg->vm_id);

    // The guest.
    const std::uint64_t memory = cfg->memory_mib << 20;
    auto image = engine::load_pvh_image(cfg->image, memory);
    if (!image)
        return fail(vm_name + ": " + image.error());
    auto backend = backends::KvmBackend::create(*image, memory, cfg->cmdline);
    if (!backend)
        return fail(vm_name + ": " + backend.error());

    // Its network and disk.
    std::optional<devices::TapDevice> tap;
    if (!cfg->tap.empty()) {
        auto t = devices::TapDevice::open(cfg->tap);
        if (!t)
            return fail(vm_name + ": " + t.error());
        tap.emplace(std::move(t).value());
    }
    std::unique_ptr<devices::BlockPort> disk;
    if (!cfg->disk_lun.empty()) {
        auto lun = arbiter::Lun::connect({cfg->disk_lun, cfg->initiator, static_cast<std::uint16_t>(0x1000 + cfg->host_id),
                                          cfg->lun_timeout_s});
        if (!lun)
            return fail(vm_name + ": guest disk: " + lun.error());
        auto store = devices::IscsiStore::open(std::move(*lun), cfg->disk_first_lba, cfg->disk_mib << 20,
                                               arbiter::Arbiter::key_of(cfg->host_id));
        if (!store)
            return fail(vm_name + ": " + store.error());
        disk = std::make_unique<devices::IscsiStore>(std::move(*store));
    } else if (!cfg->disk_file.empty()) {
        auto store = devices::FileStore::open(cfg->disk_file);
        if (!store)
            return fail(vm_name + ": " + store.error());
        disk = std::make_unique<devices::FileStore>(std::move(*store));
    }

    // The pair: TLS, heartbeats, arbiter.
    auto tls = channel::TlsContext::create({cfg->cert, cfg->key, cfg->ca, cfg->fingerprint, cfg->peer_name},
                                           cfg->primary ? channel::TlsContext::Side::client : channel::TlsContext::Side::server);
    if (!tls)
        return fail(vm_name + ": " + tls.error());
    auto hb_key = detector::load_heartbeat_key(cfg->heartbeat_key_file);
    if (!hb_key)
        return fail(vm_name + ": " + hb_key.error());

    daemon::NodeConfig n;
    n.vm_id = cfg->vm_id;
    n.self = cfg->host_id;
    n.peer = cfg->peer_id;
    n.start_as_primary = cfg->primary;
    n.epoch = cfg->epoch;
    n.record_owner = cfg->record_owner;
    n.backend = std::move(backend).value();
    n.machine.network = tap.has_value();
    std::uint8_t mac[6];
    daemon::parse_mac(cfg->mac, mac);
    std::copy(std::begin(mac), std::end(mac), n.machine.mac.begin());
    n.machine.disk_bytes = disk ? cfg->disk_mib << 20 : 0;
    n.tap = tap ? &*tap : nullptr;
    n.disk = disk.get();
    n.channel.address = cfg->primary ? cfg->channel_peer : cfg->channel_listen;
    n.channel.vm_id = cfg->vm_id;
    n.channel.self = cfg->host_id;
    n.channel.peer = cfg->peer_id;
    n.channel.batch_delay = 2000;
    n.tls = &*tls;
    n.heartbeat = {cfg->heartbeat_listen, cfg->heartbeat_peer, cfg->vm_id, cfg->host_id, cfg->peer_id, *hb_key};
    n.arbiter.lun = {cfg->arbiter_lun, cfg->initiator, static_cast<std::uint16_t>(cfg->host_id), cfg->lun_timeout_s};
    n.arbiter.vm_id = cfg->vm_id;
    n.arbiter.host_id = cfg->host_id;
    n.arbiter.peer_id = cfg->peer_id;
    n.arbiter.record_lba = cfg->record_lba;

    // The control socket, before the node starts, so a bad path changes nothing.
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(cfg->control_socket).parent_path(), ec);
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

    auto node = daemon::Node::start(std::move(n));
    if (!node) {
        ::unlink(cfg->control_socket.c_str());
        return fail(node.error());
    }
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    while (!g_stop) {
        pollfd p{control.get(), POLLIN, 0};
        if (::poll(&p, 1, 200) > 0)
            serve(control.get(), *cfg, **node);
    }
    std::cerr << vm_name << ": stopping on signal\n";
    node->reset();
    ::unlink(cfg->control_socket.c_str());
    return 0;
}
