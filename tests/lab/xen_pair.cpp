// xenft-xen-pair: the lab's driver of a protected domain on Xen (xenft/backends/xen/
// ft_domain.hpp), in one process or in two joined by xenft's logging channel.
//
//   xenft-xen-pair P B --tap-primary TAP_P --tap-backup TAP_B --disk-primary IMAGE_P
//                      --disk-backup IMAGE_B [--memory-mb N] [--digest-ms N] [--timeout-s N]
//       One process: domain P records with xenft's device models (NIC on TAP_P behind the
//       output gate, disk IMAGE_P), domain B, created from the same configuration, replays
//       P's log with its own device models (TAP_B silent, disk IMAGE_B: a copy of IMAGE_P)
//       and compares state digests at the exits P took them. When P is destroyed, B replays
//       what it received, goes live and serves on TAP_B until the time is up or SIGTERM.
//
//   xenft-xen-pair record P --to HOST:PORT --tap TAP --disk IMAGE TLS... [--digest-ms N]
//   xenft-xen-pair replay B --listen HOST:PORT --tap TAP --disk IMAGE TLS...
//       The same split in two, as xenftd runs it (XenNode): B first takes a live copy of the
//       running P over xenft's TLS 1.3 logging channel, then the log travels as log entries
//       (docs/log-format.md: xen_record, ioreq_stop, net_rx, state_digest), P's outputs
//       leave when the backup acked the entries before them. When the channel has been down for
//       --failover-ms (default 1000) either side runs the test-and-set on the shared LUN
//       (--lun URL --initiator IQN --host-id N --peer-id N, xenft/arbiter): the backup goes
//       live if it wins; the primary continues alone (outputs leave at once) if it wins and
//       pauses its domain if it loses. Without --lun (the lab's single host) each side takes
//       over unasked. The peer is lost when its heartbeats (--heartbeat-local ADDR
//       --heartbeat-peer ADDR --heartbeat-key FILE: xenft's authenticated UDP heartbeats) stop,
//       or without them when the channel is down: a host that loses power closes nothing.
//       TLS: --cert FILE --key FILE --ca FILE --peer-name NAME.
//
// Prints "pair: ..." lines: protection started, a status line every 5 s (exits, items, digests
// matched, frames), the failover's timeline, and the end. Exits 1 on any divergence or error.
#include <poll.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "xenft/backends/xen/ft_domain.hpp"
#include "xenft/daemon/xen_node.hpp"
#include "xenft/detector/heartbeat.hpp"

using namespace xenft::backends::xen;

namespace {

std::atomic<bool> stop{false};

void on_signal(int) { stop = true; }

int usage()
{
    std::cerr << "usage: xenft-xen-pair PRIMARY_DOMID BACKUP_DOMID --tap-primary TAP --tap-backup TAP\n"
                 "                      --disk-primary IMAGE --disk-backup IMAGE [--memory-mb N] [--digest-ms N]\n"
                 "                      [--timeout-s N]\n"
                 "       xenft-xen-pair record DOMID --to HOST:PORT --tap TAP --disk IMAGE TLS [--digest-ms N]\n"
                 "       xenft-xen-pair replay DOMID --listen HOST:PORT --tap TAP --disk IMAGE TLS [--failover-ms N]\n"
                 "       TLS: --cert FILE --key FILE --ca FILE --peer-name NAME; also --memory-mb N, --timeout-s N,\n"
                 "       --failover-ms N, --lun iscsi://HOST[:PORT]/IQN/LUN --initiator IQN --host-id N --peer-id N,\n"
                 "       --heartbeat-local ADDR --heartbeat-peer ADDR --heartbeat-key FILE\n";
    return 2;
}

bool parse_domid(const char* s, std::uint32_t& out)
{
    char* end = nullptr;
    const unsigned long v = std::strtoul(s, &end, 10);
    if (*end || v == 0 || v >= 0x7ff0)
        return false;
    out = static_cast<std::uint32_t>(v);
    return true;
}

long long ms_since(std::chrono::steady_clock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

int fail(const std::string& why)
{
    std::cout << "pair: FAIL " << why << std::endl;
    return 1;
}

} // namespace

int run_local(int argc, char** argv)
{
    if (argc < 3)
        return usage();
    std::uint32_t p = 0, b = 0;
    if (!parse_domid(argv[1], p) || !parse_domid(argv[2], b) || p == b)
        return usage();
    FtSpec primary_spec, backup_spec;
    unsigned long timeout_s = 600;
    for (int i = 3; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc)
            return usage();
        const std::string v = argv[++i];
        if (a == "--tap-primary")
            primary_spec.devices.tap = v;
        else if (a == "--tap-backup")
            backup_spec.devices.tap = v;
        else if (a == "--disk-primary")
            primary_spec.devices.disk = v;
        else if (a == "--disk-backup")
            backup_spec.devices.disk = v;
        else if (a == "--memory-mb")
            primary_spec.devices.memory_bytes = backup_spec.devices.memory_bytes = std::strtoull(v.c_str(), nullptr, 10) << 20;
        else if (a == "--digest-ms")
            primary_spec.digest_interval_ms = std::strtoull(v.c_str(), nullptr, 10);
        else if (a == "--timeout-s")
            timeout_s = std::strtoul(v.c_str(), nullptr, 10);
        else
            return usage();
    }
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + std::chrono::seconds(timeout_s);

    // The backup first: it must be replaying before the primary's first record.
    auto backup = ReplayingDomain::start(b, backup_spec);
    if (!backup)
        return fail(backup.error());
    auto primary = RecordingDomain::start(p, primary_spec);
    if (!primary)
        return fail(primary.error());
    std::cout << "pair: domain " << p << " records (NIC on " << primary_spec.devices.tap << "), domain " << b
              << " replays (NIC on " << backup_spec.devices.tap << ", silent until it goes live)" << std::endl;

    XenLog log;
    auto last_status = start;
    std::string why_primary_ended;
    while (!stop && std::chrono::steady_clock::now() < deadline) {
        if (auto why = (*primary)->ended()) {
            why_primary_ended = *why;
            break;
        }
        // One wait for both replicas, then each takes what is ready.
        std::vector<pollfd> fds;
        for (const auto& list : {(*primary)->wait_fds(), (*backup)->wait_fds()})
            for (int fd : list)
                fds.push_back({fd, POLLIN, 0});
        ::poll(fds.data(), fds.size(), 20);
        if (auto r = (*primary)->step(log, 0); !r) {
            // A primary destroyed under us fails its calls: that is its end, not an error.
            if (auto why = (*primary)->ended()) {
                why_primary_ended = *why;
                break;
            }
            return fail("primary: " + r.error());
        }
        if (auto r = (*backup)->step(log, 0); !r)
            return fail("backup: " + r.error());
        (*primary)->acked((*backup)->taken());
        if (ms_since(last_status) >= 5000) {
            last_status = std::chrono::steady_clock::now();
            std::cout << "pair: [" << ms_since(start) << " ms] primary at exit " << (*primary)->exits() << ", backup at exit "
                      << (*backup)->exits() << "; " << (*primary)->appended() << " items logged, "
                      << (*backup)->taken() << " received; digests " << (*primary)->digests() << " taken, "
                      << (*backup)->digests_matched() << " matched; frames in " << (*primary)->frames_in()
                      << ", out " << (*primary)->frames_out() << ", replayed " << (*backup)->frames_replayed()
                      << std::endl;
        }
    }
    if (why_primary_ended.empty()) {
        std::cout << "pair: ended before any failover: " << (stop ? "stopped" : "time is up") << "; digests "
                  << (*backup)->digests_matched() << " matched" << std::endl;
        return 0;
    }
    const auto gone = std::chrono::steady_clock::now();
    const std::uint64_t primary_items = (*primary)->appended(), primary_exit = (*primary)->exits();
    std::cout << "pair: [" << ms_since(start) << " ms] primary domain " << p << " ended (" << why_primary_ended
              << ") at exit " << primary_exit << "; the backup is at exit " << (*backup)->exits() << " with "
              << log.size() << " of " << primary_items << " items still to replay; " << (*backup)->digests_matched()
              << " digests matched" << std::endl;
    primary->reset();
    if (auto r = (*backup)->go_live(log); !r)
        return fail("backup: " + r.error());
    std::cout << "pair: [" << ms_since(start) << " ms] domain " << b << " went live at exit " << (*backup)->live_exit()
              << ", " << ms_since(gone) << " ms after the primary ended; " << (*backup)->digests_matched()
              << " digests matched, " << (*backup)->frames_replayed() << " frames replayed, "
              << (*backup)->frames_resent() << " sent again, " << (*backup)->dropped()
              << " items of an unfinished exit dropped" << std::endl;
    auto end = (*backup)->run_live(stop);
    if (!end)
        return fail("live: " + end.error());
    std::cout << "pair: [" << ms_since(start) << " ms] live domain " << b << ": " << *end << std::endl;
    return 0;
}

namespace {

struct SplitOptions {
    std::uint32_t domid = 0;
    FtSpec spec;
    std::string address, cert, key, ca, peer_name;
    unsigned long timeout_s = 900, failover_ms = 1000;
    std::string lun_url, initiator; // the shared LUN's arbitration record; empty: no arbitration
    std::uint32_t host_id = 0, peer_id = 0;
    std::string heartbeat_local, heartbeat_peer, heartbeat_key; // empty: the channel detects
};

bool parse_split(int argc, char** argv, bool record, SplitOptions& o)
{
    if (argc < 3 || !parse_domid(argv[2], o.domid))
        return false;
    for (int i = 3; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc)
            return false;
        const std::string v = argv[++i];
        if (a == (record ? "--to" : "--listen"))
            o.address = v;
        else if (a == "--tap")
            o.spec.devices.tap = v;
        else if (a == "--disk")
            o.spec.devices.disk = v;
        else if (a == "--memory-mb")
            o.spec.devices.memory_bytes = std::strtoull(v.c_str(), nullptr, 10) << 20;
        else if (a == "--digest-ms" && record)
            o.spec.digest_interval_ms = std::strtoull(v.c_str(), nullptr, 10);
        else if (a == "--timeout-s")
            o.timeout_s = std::strtoul(v.c_str(), nullptr, 10);
        else if (a == "--cert")
            o.cert = v;
        else if (a == "--key")
            o.key = v;
        else if (a == "--ca")
            o.ca = v;
        else if (a == "--peer-name")
            o.peer_name = v;
        else if (a == "--lun")
            o.lun_url = v;
        else if (a == "--heartbeat-local")
            o.heartbeat_local = v;
        else if (a == "--heartbeat-peer")
            o.heartbeat_peer = v;
        else if (a == "--heartbeat-key")
            o.heartbeat_key = v;
        else if (a == "--initiator")
            o.initiator = v;
        else if (a == "--host-id")
            o.host_id = static_cast<std::uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
        else if (a == "--peer-id")
            o.peer_id = static_cast<std::uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
        else if (a == "--failover-ms")
            o.failover_ms = std::strtoul(v.c_str(), nullptr, 10);
        else
            return false;
    }
    if (o.heartbeat_local.empty() != o.heartbeat_peer.empty() || o.heartbeat_local.empty() != o.heartbeat_key.empty())
        return false;
    if (!o.lun_url.empty() && (o.host_id == 0 || o.peer_id == 0 || o.host_id == o.peer_id || o.initiator.empty()))
        return false;
    return !o.address.empty() && !o.cert.empty() && !o.key.empty() && !o.ca.empty() && !o.peer_name.empty();
}

// One side of the pair as xenftd runs it (xenft/daemon/xen_node.hpp), until it ends, SIGTERM
// or the time is up.
int run_split(const SplitOptions& o, bool record)
{
    namespace ch = xenft::channel;
    using xenft::daemon::XenNode;
    using xenft::daemon::XenRole;
    const std::uint32_t self = o.host_id ? o.host_id : (record ? 1 : 2);
    const std::uint32_t peer = o.peer_id ? o.peer_id : (record ? 2 : 1);
    auto tls = ch::TlsContext::create({o.cert, o.key, o.ca, "", o.peer_name},
                                      record ? ch::TlsContext::Side::client : ch::TlsContext::Side::server);
    if (!tls)
        return fail(tls.error());
    auto address = xenft::SocketAddress::parse(o.address);
    if (!address)
        return fail(address.error());
    xenft::daemon::XenNodeConfig c;
    c.domid = o.domid;
    c.primary = record;
    c.spec = o.spec;
    c.channel.address = *address;
    c.channel.vm_id = 1;
    c.channel.self = self;
    c.channel.peer = peer;
    c.channel.epoch = 1;
    c.tls = &*tls;
    c.failover_ms = o.failover_ms;
    c.log = [](const std::string& line) { std::cout << "pair: " << line << std::endl; };
    if (!o.heartbeat_local.empty()) {
        auto key = xenft::detector::load_heartbeat_key(o.heartbeat_key);
        auto local = xenft::SocketAddress::parse(o.heartbeat_local);
        auto remote = xenft::SocketAddress::parse(o.heartbeat_peer);
        if (!key || !local || !remote)
            return fail(!key ? key.error() : !local ? local.error() : remote.error());
        c.heartbeat = xenft::detector::HeartbeatSocketConfig{*local, *remote, 1, self, peer, *key};
    }
    if (!o.lun_url.empty()) {
        xenft::arbiter::ArbiterConfig a;
        a.lun.url = o.lun_url;
        a.lun.initiator_name = o.initiator;
        a.lun.isid_qualifier = static_cast<std::uint16_t>(self);
        a.vm_id = 1;
        a.host_id = self;
        a.peer_id = peer;
        c.arbiter = a;
    }
    auto node = XenNode::start(std::move(c));
    if (!node)
        return fail(node.error());
    const auto start = std::chrono::steady_clock::now();
    while (!stop && !(*node)->finished() && ms_since(start) < static_cast<long long>(o.timeout_s) * 1000)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto s = (*node)->status();
    node->reset();
    if (s.role == XenRole::failed)
        return fail(s.failure);
    std::cout << "pair: ended as " << xenft::daemon::xen_role_name(s.role) << "; digests " << s.digests << std::endl;
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "record" || mode == "replay") {
        SplitOptions o;
        if (!parse_split(argc, argv, mode == "record", o))
            return usage();
        return run_split(o, mode == "record");
    }
    return run_local(argc, argv);
}
