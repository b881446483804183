#include "xenft/daemon/config.hpp"

#include <boost/program_options.hpp>

#include <cstdio>
#include <fstream>

namespace xenft::daemon {

namespace po = boost::program_options;

bool parse_mac(const std::string& text, std::uint8_t (&out)[6])
{
    unsigned b[6];
    char tail = 0;
    if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
        return false;
    for (int i = 0; i < 6; ++i)
        out[i] = static_cast<std::uint8_t>(b[i]);
    return !(out[0] & 1); // a unicast address
}

Expected<DaemonConfig, std::string> load_config(const std::string& path)
{
    DaemonConfig c;
    std::string role = "primary", channel_listen, channel_peer, hb_listen, hb_peer, backup_wait_ms;
    po::options_description o;
    o.add_options()
        ("vm.id", po::value(&c.vm_id)->required())
        ("vm.backend", po::value(&c.backend))
        ("vm.image", po::value(&c.image))
        ("vm.cmdline", po::value(&c.cmdline))
        ("vm.memory-mib", po::value(&c.memory_mib))
        ("pair.host-id", po::value(&c.host_id)->required())
        ("pair.peer-id", po::value(&c.peer_id)->required())
        ("pair.role", po::value(&role)->required())
        ("pair.epoch", po::value(&c.epoch))
        ("pair.record-owner", po::value(&c.record_owner))
        ("pair.rejoin", po::value(&c.rejoin))
        ("network.tap", po::value(&c.tap))
        ("network.mac", po::value(&c.mac))
        ("disk.lun", po::value(&c.disk_lun))
        ("disk.file", po::value(&c.disk_file))
        ("disk.first-lba", po::value(&c.disk_first_lba))
        ("disk.size-mib", po::value(&c.disk_mib))
        ("arbiter.lun", po::value(&c.arbiter_lun)->required())
        ("arbiter.record-lba", po::value(&c.record_lba))
        ("arbiter.initiator", po::value(&c.initiator)->required())
        ("arbiter.timeout-s", po::value(&c.lun_timeout_s))
        ("channel.listen", po::value(&channel_listen))
        ("channel.peer", po::value(&channel_peer))
        ("channel.cert", po::value(&c.cert)->required())
        ("channel.key", po::value(&c.key)->required())
        ("channel.ca", po::value(&c.ca))
        ("channel.fingerprint", po::value(&c.fingerprint))
        ("channel.peer-name", po::value(&c.peer_name)->required())
        ("heartbeat.listen", po::value(&hb_listen)->required())
        ("heartbeat.peer", po::value(&hb_peer)->required())
        ("heartbeat.key-file", po::value(&c.heartbeat_key_file)->required())
        ("failover.after-ms", po::value(&c.failover_ms))
        ("failover.digest-ms", po::value(&c.digest_ms))
        ("failover.backup-wait-ms", po::value(&backup_wait_ms))
        ("control.socket", po::value(&c.control_socket));
    std::ifstream in(path);
    if (!in)
        return unexpected("configuration " + path + ": cannot read it");
    try {
        po::variables_map vm;
        po::store(po::parse_config_file(in, o), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        return unexpected("configuration " + path + ": " + e.what());
    }
    auto bad = [&](const std::string& key, const std::string& why) {
        return unexpected("configuration " + path + ": " + key + ": " + why);
    };
    if (role != "primary" && role != "backup")
        return bad("pair.role", "\"" + role + "\" is neither primary nor backup");
    c.primary = role == "primary";
    if (c.backend != "kvm" && c.backend != "xen")
        return bad("vm.backend", "\"" + c.backend + "\" is neither kvm nor xen");
    if (c.backend == "kvm" && c.image.empty())
        return bad("vm.image", "needed with backend = kvm: the guest's PVH ELF image");
    if (c.backend == "xen" && !c.disk_lun.empty())
        return bad("disk.lun", "not supported with backend = xen yet: give disk.file (docs/xen-backend.md)");
    if (c.failover_ms < 200 || c.failover_ms > 600'000)
        return bad("failover.after-ms", std::to_string(c.failover_ms) +
                                            " is outside 200..600000 (at least two heartbeat intervals of 100 ms)");
    if (!backup_wait_ms.empty())
        return bad("failover.backup-wait-ms", "no longer used: a primary runs the VM alone from the start and is "
                                              "protected once a backup took its live copy; remove the line");
    if (c.digest_ms < 10)
        return bad("failover.digest-ms", std::to_string(c.digest_ms) + " is below 10");
    if (c.vm_id == 0)
        return bad("vm.id", "must not be 0");
    if (c.host_id == 0 || c.peer_id == 0 || c.host_id == c.peer_id)
        return bad("pair.host-id/peer-id", "two different non-zero host ids are needed");
    if (c.memory_mib < 2 || c.memory_mib > 4096)
        return bad("vm.memory-mib", std::to_string(c.memory_mib) + " is outside 2..4096");
    std::uint8_t mac[6];
    if (!parse_mac(c.mac, mac))
        return bad("network.mac", "\"" + c.mac + "\" is not a unicast MAC address like 52:54:00:12:34:56");
    if (!c.disk_lun.empty() && !c.disk_file.empty())
        return bad("disk", "give either lun or file, not both");
    if (c.disk_mib == 0 || c.disk_mib > 1u << 20)
        return bad("disk.size-mib", std::to_string(c.disk_mib) + " is outside 1..1048576");
    if (c.ca.empty() == c.fingerprint.empty())
        return bad("channel", "give exactly one of ca (trust a CA) and fingerprint (pin the peer's certificate)");
    auto address = [&](const std::string& key, const std::string& text, SocketAddress& out) -> std::string {
        auto a = SocketAddress::parse(text);
        if (!a)
            return key + ": " + a.error();
        out = *a;
        return {};
    };
    // Both, whatever the role at setup: after a failover the hosts swap roles, and a host that
    // rejoins as backup listens for the copy.
    if (channel_listen.empty())
        return bad("channel.listen", "needed: the address this host's backup side listens on (HOST:PORT)");
    if (channel_peer.empty())
        return bad("channel.peer", "needed: the peer host's channel.listen address (HOST:PORT)");
    if (auto e = address("channel.listen", channel_listen, c.channel_listen); !e.empty())
        return unexpected("configuration " + path + ": " + e);
    if (auto e = address("channel.peer", channel_peer, c.channel_peer); !e.empty())
        return unexpected("configuration " + path + ": " + e);
    if (auto e = address("heartbeat.listen", hb_listen, c.heartbeat_listen); !e.empty())
        return unexpected("configuration " + path + ": " + e);
    if (auto e = address("heartbeat.peer", hb_peer, c.heartbeat_peer); !e.empty())
        return unexpected("configuration " + path + ": " + e);
    if (c.control_socket.empty())
        c.control_socket = "/run/xenft/vm-" + std::to_string(c.vm_id) + ".sock";
    return c;
}

} // namespace xenft::daemon
