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
//       The same split in two: the log travels as log entries (docs/log-format.md: xen_record,
//       ioreq_stop, net_rx, state_digest) on xenft's TLS 1.3 logging channel, P's outputs
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
#include "xenft/arbiter/arbiter.hpp"
#include "xenft/channel/channel.hpp"
#include "xenft/channel/tls.hpp"
#include "xenft/detector/heartbeat.hpp"
#include "xenft/detector/heartbeat_socket.hpp"

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

// The failure detector between the two hosts: xenft's authenticated UDP heartbeats, every
// 100 ms from a thread of their own (a busy replay loop or a digest must not look like death).
// A host that loses power closes no connection, so the logging channel alone cannot tell.
class PeerWatch {
public:
    static xenft::Expected<std::unique_ptr<PeerWatch>, std::string>
    start(const std::string& local, const std::string& peer, const std::string& key_file, std::uint32_t self,
          std::uint32_t peer_id, bool primary)
    {
        namespace det = xenft::detector;
        auto key = det::load_heartbeat_key(key_file);
        if (!key)
            return xenft::unexpected(key.error());
        auto l = xenft::SocketAddress::parse(local);
        auto p = xenft::SocketAddress::parse(peer);
        if (!l || !p)
            return xenft::unexpected(!l ? l.error() : p.error());
        det::HeartbeatSocketConfig cfg;
        cfg.local = *l;
        cfg.peer = *p;
        cfg.vm_id = 1;
        cfg.self = self;
        cfg.peer_id = peer_id;
        cfg.key = *key;
        auto socket = det::HeartbeatSocket::open(cfg);
        if (!socket)
            return xenft::unexpected(socket.error());
        std::unique_ptr<PeerWatch> w(new PeerWatch(std::move(socket).value(), primary));
        w->thread_ = std::thread([raw = w.get()] { raw->run(); });
        return w;
    }
    ~PeerWatch()
    {
        running_ = false;
        thread_.join();
    }
    bool heard() const { return last_heard_ms_ != 0; }
    long long silent_ms() const { return now_ms() - last_heard_ms_; }

private:
    PeerWatch(xenft::detector::HeartbeatSocket socket, bool primary) : socket_(std::move(socket)), primary_(primary) {}
    static long long now_ms()
    {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }
    void run()
    {
        while (running_) {
            xenft::protocol::HeartbeatMsg m;
            m.epoch = 1;
            m.role = primary_ ? xenft::protocol::Role::primary_protected : xenft::protocol::Role::backup_replaying;
            m.sent_at = static_cast<xenft::protocol::Time>(now_ms() * 1000);
            (void)socket_.send(m);
            pollfd p{socket_.fd(), POLLIN, 0};
            ::poll(&p, 1, 100);
            if (!socket_.receive().empty())
                last_heard_ms_ = now_ms();
        }
    }
    xenft::detector::HeartbeatSocket socket_;
    bool primary_;
    std::atomic<bool> running_{true};
    std::atomic<long long> last_heard_ms_{0};
    std::thread thread_;
};

struct SplitOptions {
    std::uint32_t domid = 0;
    FtSpec spec;
    std::string address, cert, key, ca, peer_name;
    unsigned long timeout_s = 900, failover_ms = 1000;
    std::string lun_url, initiator; // the shared LUN's arbitration record; empty: no arbitration
    std::uint32_t host_id = 0, peer_id = 0;
    std::string heartbeat_local, heartbeat_peer, heartbeat_key; // empty: the channel detects
};

// The test-and-set on the shared LUN when the peer is lost: won means this host runs the VM.
// Without a LUN (--lun) the lab's single-host runs decide by themselves: won.
bool arbitrate(const SplitOptions& o, const std::string& who)
{
    namespace arb = xenft::arbiter;
    if (o.lun_url.empty()) {
        std::cout << "pair: " << who << ": no shared LUN configured: taking over without arbitration" << std::endl;
        return true;
    }
    arb::ArbiterConfig cfg;
    cfg.lun.url = o.lun_url;
    cfg.lun.initiator_name = o.initiator;
    cfg.lun.isid_qualifier = static_cast<std::uint16_t>(o.host_id);
    cfg.vm_id = 1;
    cfg.host_id = o.host_id;
    cfg.peer_id = o.peer_id;
    auto a = arb::Arbiter::open(cfg);
    if (!a) {
        std::cout << "pair: " << who << ": test-and-set not possible: " << a.error() << std::endl;
        return false;
    }
    auto current = a->read();
    if (!current) {
        std::cout << "pair: " << who << ": cannot read the arbitration record: " << current.error() << std::endl;
        return false;
    }
    const auto r = a->acquire(current->epoch, current->owner);
    std::cout << "pair: " << who << ": test-and-set on " << o.lun_url << " epoch " << current->epoch << " -> "
              << current->epoch + 1 << ": " << arb::outcome_name(r.outcome) << (r.detail.empty() ? "" : " (" + r.detail + ")")
              << std::endl;
    return r.outcome == arb::Outcome::won;
}

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

xenft::Expected<xenft::channel::ChannelConfig, std::string> channel_config(const SplitOptions& o, bool record)
{
    auto address = xenft::SocketAddress::parse(o.address);
    if (!address)
        return xenft::unexpected(address.error());
    xenft::channel::ChannelConfig c;
    c.address = *address;
    c.vm_id = 1;
    c.self = record ? 1 : 2;
    c.peer = record ? 2 : 1;
    c.epoch = 1;
    c.log = [](const std::string& line) { std::cout << "pair: channel: " << line << std::endl; };
    return c;
}

// Heartbeats when configured; null otherwise (the channel's state decides).
xenft::Expected<std::unique_ptr<PeerWatch>, std::string> watch_peer(const SplitOptions& o, bool primary)
{
    if (o.heartbeat_local.empty())
        return std::unique_ptr<PeerWatch>();
    return PeerWatch::start(o.heartbeat_local, o.heartbeat_peer, o.heartbeat_key, o.host_id ? o.host_id : (primary ? 1 : 2),
                            o.peer_id ? o.peer_id : (primary ? 2 : 1), primary);
}

int run_record(const SplitOptions& o)
{
    namespace ch = xenft::channel;
    auto tls = ch::TlsContext::create({o.cert, o.key, o.ca, "", o.peer_name}, ch::TlsContext::Side::client);
    if (!tls)
        return fail(tls.error());
    auto cfg = channel_config(o, true);
    if (!cfg)
        return fail(cfg.error());
    ch::LogSender sender(*cfg, *tls);
    std::atomic<bool> pumping{true};
    std::thread pump([&] {
        while (pumping)
            sender.pump(20);
    });
    struct Stopper {
        std::atomic<bool>& flag;
        std::thread& t;
        ~Stopper()
        {
            flag = false;
            t.join();
        }
    } stopper{pumping, pump};

    auto watch = watch_peer(o, true);
    if (!watch)
        return fail(watch.error());
    auto primary = RecordingDomain::start(o.domid, o.spec);
    if (!primary)
        return fail(primary.error());
    std::cout << "pair: domain " << o.domid << " records (NIC on " << o.spec.devices.tap << "), its log goes to "
              << o.address << std::endl;
    const auto start = std::chrono::steady_clock::now();
    XenLog log;
    XenLogWriter writer;
    std::vector<xenft::logformat::Entry> entries;
    std::deque<std::uint64_t> item_last_seq; // the seq of each unacked item's last entry
    std::uint64_t next_seq = 1, items_acked = 0;
    auto last_status = start, streaming_at = start;
    bool ever_streaming = false, alone = false;
    while (!stop && ms_since(start) < static_cast<long long>(o.timeout_s) * 1000) {
        if (sender.streaming()) {
            ever_streaming = true;
            streaming_at = std::chrono::steady_clock::now();
        }
        const bool lost = *watch ? (*watch)->heard() && (*watch)->silent_ms() >= static_cast<long long>(o.failover_ms)
                                 : ever_streaming && ms_since(streaming_at) >= static_cast<long long>(o.failover_ms);
        if (!alone && lost) {
            std::cout << "pair: [" << ms_since(start) << " ms] the backup is lost: no "
                      << (*watch ? "heartbeat" : "channel") << " for " << o.failover_ms << " ms; "
                      << (*primary)->outputs_held() << " outputs held" << std::endl;
            if (!arbitrate(o, "primary")) {
                // The backup took over (or it cannot be known): this copy of the VM must not run.
                if (auto xc = XenControl::open())
                    (void)xc->pause(o.domid);
                std::cout << "pair: [" << ms_since(start) << " ms] lost: domain " << o.domid
                          << " paused, its held outputs dropped" << std::endl;
                return 0;
            }
            (*primary)->continue_alone();
            alone = true;
            std::cout << "pair: [" << ms_since(start) << " ms] won: domain " << o.domid
                      << " continues alone, its outputs leave at once" << std::endl;
        }
        if (auto why = (*primary)->ended()) {
            std::cout << "pair: domain " << o.domid << " ended: " << *why << std::endl;
            return 0;
        }
        std::vector<pollfd> fds;
        for (int fd : (*primary)->wait_fds())
            fds.push_back({fd, POLLIN, 0});
        ::poll(fds.data(), fds.size(), 20);
        if (auto r = (*primary)->step(log, 0); !r) {
            if ((*primary)->ended())
                continue;
            return fail("primary: " + r.error());
        }
        if (alone) {
            log.clear(); // no backup: the log has no reader until a new one joins
            continue;
        }
        // Into the channel, whole items at a time, while it has room (else the log waits here).
        while (!log.empty()) {
            entries.clear();
            writer.write(log.front(), entries);
            std::size_t done = 0;
            for (auto& e : entries) {
                e.epoch = 1;
                e.seq = next_seq;
                if (!sender.append(e))
                    break;
                ++next_seq;
                ++done;
            }
            if (done < entries.size())
                return fail("the channel is full and an item is half sent (raise buffer_bytes)");
            item_last_seq.push_back(next_seq - 1);
            log.pop_front();
        }
        sender.flush((*primary)->outputs_held() > 0);
        const auto acked = sender.acked();
        while (!item_last_seq.empty() && item_last_seq.front() <= acked) {
            item_last_seq.pop_front();
            ++items_acked;
        }
        (*primary)->acked(items_acked);
        if (ms_since(last_status) >= 5000) {
            last_status = std::chrono::steady_clock::now();
            std::cout << "pair: [" << ms_since(start) << " ms] primary at exit " << (*primary)->exits() << "; "
                      << (*primary)->appended() << " items logged (" << next_seq - 1 << " entries, " << acked
                      << " acked); digests " << (*primary)->digests() << "; frames in " << (*primary)->frames_in()
                      << ", out " << (*primary)->frames_out() << "; last digest took " << (*primary)->digest_ms()
                      << " ms" << (sender.streaming() ? "" : "; channel down")
                      << std::endl;
        }
    }
    return 0;
}

int run_replay(const SplitOptions& o)
{
    namespace ch = xenft::channel;
    auto tls = ch::TlsContext::create({o.cert, o.key, o.ca, "", o.peer_name}, ch::TlsContext::Side::server);
    if (!tls)
        return fail(tls.error());
    auto cfg = channel_config(o, false);
    if (!cfg)
        return fail(cfg.error());
    auto receiver = ch::LogReceiver::listen(*cfg, *tls);
    if (!receiver)
        return fail(receiver.error());
    auto watch = watch_peer(o, false);
    if (!watch)
        return fail(watch.error());
    auto backup = ReplayingDomain::start(o.domid, o.spec);
    if (!backup)
        return fail(backup.error());
    std::cout << "pair: domain " << o.domid << " replays (NIC on " << o.spec.devices.tap
              << ", silent until it goes live), its log comes to " << o.address << std::endl;
    // The channel gets its own thread: the replay loop can be busy (a digest of all memory)
    // while the primary waits for acks to release its outputs.
    std::mutex mu;
    std::deque<xenft::logformat::Entry> inbox;
    std::atomic<bool> pumping{true}, channel_up{false};
    std::thread pump([&] {
        while (pumping) {
            receiver->pump(5);
            std::lock_guard lock(mu);
            while (auto e = receiver->pop())
                inbox.push_back(std::move(*e));
            channel_up = receiver->connected();
        }
    });
    struct Stopper {
        std::atomic<bool>& flag;
        std::thread& t;
        void stop()
        {
            flag = false;
            if (t.joinable())
                t.join();
        }
        ~Stopper() { stop(); }
    } stopper{pumping, pump};
    const auto start = std::chrono::steady_clock::now();
    XenLog log;
    XenLogReader reader;
    std::uint64_t entries = 0;
    bool ever_connected = false;
    auto connected_at = start, last_status = start;
    while (!stop && ms_since(start) < static_cast<long long>(o.timeout_s) * 1000) {
        std::deque<xenft::logformat::Entry> got;
        {
            std::lock_guard lock(mu);
            got.swap(inbox);
        }
        for (const auto& e : got) {
            ++entries;
            auto item = reader.read(e);
            if (!item)
                return fail("backup: " + item.error());
            if (*item)
                log.push_back(std::move(**item));
        }
        if (channel_up) {
            ever_connected = true;
            connected_at = std::chrono::steady_clock::now();
        }
        const bool lost = *watch ? (*watch)->heard() && (*watch)->silent_ms() >= static_cast<long long>(o.failover_ms)
                                 : ever_connected && !channel_up &&
                                       ms_since(connected_at) >= static_cast<long long>(o.failover_ms);
        if (lost) {
            std::lock_guard lock(mu);
            if (inbox.empty())
                break; // the primary is gone, and everything it sent is here
            continue;
        }
        std::vector<pollfd> fds;
        for (int fd : (*backup)->wait_fds())
            fds.push_back({fd, POLLIN, 0});
        ::poll(fds.data(), fds.size(), 5);
        if (auto r = (*backup)->step(log, 0); !r)
            return fail("backup: " + r.error());
        if (ms_since(last_status) >= 5000) {
            last_status = std::chrono::steady_clock::now();
            std::cout << "pair: [" << ms_since(start) << " ms] backup at exit " << (*backup)->exits() << "; " << entries
                      << " entries received, " << log.size() << " items waiting; digests matched "
                      << (*backup)->digests_matched() << "; frames replayed " << (*backup)->frames_replayed()
                      << std::endl;
        }
    }
    if (stop || ms_since(start) >= static_cast<long long>(o.timeout_s) * 1000) {
        std::cout << "pair: ended before any failover; digests matched " << (*backup)->digests_matched() << std::endl;
        return 0;
    }
    const auto lost = std::chrono::steady_clock::now();
    stopper.stop(); // a suspected primary gets no more acks
    std::cout << "pair: [" << ms_since(start) << " ms] the primary is lost: no " << (*watch ? "heartbeat" : "channel")
              << " for " << o.failover_ms << " ms; backup at exit " << (*backup)->exits() << " with " << log.size()
              << " items to replay, " << entries << " entries received; " << (*backup)->digests_matched()
              << " digests matched" << std::endl;
    if (!arbitrate(o, "backup")) {
        std::cout << "pair: [" << ms_since(start) << " ms] lost: the primary runs on; domain " << o.domid
                  << " stays a stopped replica" << std::endl;
        return 0;
    }
    if (auto r = (*backup)->go_live(log); !r)
        return fail("backup: " + r.error());
    std::cout << "pair: [" << ms_since(start) << " ms] domain " << o.domid << " went live at exit "
              << (*backup)->live_exit() << ", " << ms_since(lost) << " ms after the failover began; "
              << (*backup)->digests_matched() << " digests matched, " << (*backup)->frames_replayed()
              << " frames replayed, " << (*backup)->frames_resent() << " sent again, " << (*backup)->dropped()
              << " items of an unfinished exit dropped" << std::endl;
    auto end = (*backup)->run_live(stop);
    if (!end)
        return fail("live: " + end.error());
    std::cout << "pair: [" << ms_since(start) << " ms] live domain " << o.domid << ": " << *end << std::endl;
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
        return mode == "record" ? run_record(o) : run_replay(o);
    }
    return run_local(argc, argv);
}
