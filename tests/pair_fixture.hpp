// A fault-tolerant pair in one process, for tests/pair_test and bench/pair_bench: two nodes
// (xenft/daemon/node.*) with real parts between them: the logging channel over TLS 1.3 on
// loopback, authenticated UDP heartbeats, the arbiter and the guest's disk on a real iSCSI LUN
// (istgt, started here), and the guest's NIC on a real TAP interface that clients reach.
// Needs /dev/kvm, a TAP interface (root) and istgt. A part that cannot be set up is reported
// through PAIR_REQUIRE: Boost.Test's BOOST_TEST_REQUIRE in tests, a throw in the bench.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "tests/iscsi_fixture.hpp"
#include "tests/tls_fixture.hpp"
#include "tests/vm_fixture.hpp"
#include "xenft/daemon/node.hpp"
#include "xenft/devices/iscsi_store.hpp"

#ifndef PAIR_REQUIRE
#define PAIR_REQUIRE(cond, msg) BOOST_TEST_REQUIRE(cond, msg)
#endif

namespace xenft::testing {

using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kVm = 7;
constexpr std::uint64_t kDiskLba = 64, kDiskBytes = 1u << 20;

inline SocketAddress loopback(std::uint16_t port)
{
    return SocketAddress::parse("127.0.0.1:" + std::to_string(port)).value();
}

// Log lines of both nodes, with the time they were said, for the timeline and for failures.
struct Logbook {
    std::mutex mu;
    std::vector<std::pair<Clock::time_point, std::string>> lines;
    std::function<void(xenft::LogPriority, const std::string&)> sink()
    {
        return [this](xenft::LogPriority, const std::string& l) {
            std::lock_guard lock(mu);
            lines.emplace_back(Clock::now(), l);
        };
    }
    // When a line containing `what` was first said after `since`, in ms after it (-1: never).
    double ms_until(const std::string& what, Clock::time_point since)
    {
        std::lock_guard lock(mu);
        for (const auto& [t, l] : lines)
            if (t >= since && l.find(what) != std::string::npos)
                return std::chrono::duration<double, std::milli>(t - since).count();
        return -1;
    }
    std::string all()
    {
        std::lock_guard lock(mu);
        std::string s;
        for (const auto& [t, l] : lines)
            s += l + "\n";
        return s;
    }
};

// Everything one pair needs: shared LUN, TAP, certificates, and the two nodes' settings.
struct PairRig {
    std::string guest_args;
    testing::Istgt target{16};
    testing::TlsFixture certs;
    testing::TapNet net;
    // Host 1 ("a") and host 2 ("b"), each able to be either side of the channel.
    channel::TlsConfig tls_a{certs.cert("a"), certs.key("a"), certs.cert("ca"), "", testing::TlsFixture::kBackup};
    channel::TlsConfig tls_b{certs.cert("b"), certs.key("b"), certs.cert("ca"), "", testing::TlsFixture::kPrimary};
    channel::TlsContext client_a = channel::TlsContext::create(tls_a, channel::TlsContext::Side::client).value();
    channel::TlsContext server_a = channel::TlsContext::create(tls_a, channel::TlsContext::Side::server).value();
    channel::TlsContext client_b = channel::TlsContext::create(tls_b, channel::TlsContext::Side::client).value();
    channel::TlsContext server_b = channel::TlsContext::create(tls_b, channel::TlsContext::Side::server).value();
    std::optional<devices::IscsiStore> disk_a, disk_b;
    detector::HeartbeatKey key{};
    std::uint16_t hb_a = testing::free_port(SOCK_DGRAM), hb_b = testing::free_port(SOCK_DGRAM);
    std::uint16_t chan_a = testing::free_port(SOCK_STREAM), chan_b = testing::free_port(SOCK_STREAM);
    Logbook logbook;

    arbiter::ArbiterConfig arbiter_config(protocol::HostId self, protocol::HostId peer)
    {
        arbiter::ArbiterConfig c;
        c.lun = {target.url(), "iqn.2026-11.test.xenft:host" + std::to_string(self), static_cast<std::uint16_t>(self), 2};
        c.vm_id = kVm;
        c.host_id = self;
        c.peer_id = peer;
        c.record_lba = 0;
        return c;
    }

    std::optional<devices::IscsiStore> open_disk(protocol::HostId self)
    {
        auto lun = arbiter::Lun::connect({target.url(), "iqn.2026-11.test.xenft:disk" + std::to_string(self),
                                          static_cast<std::uint16_t>(100 + self), 2});
        PAIR_REQUIRE(lun.has_value(), (lun ? "" : lun.error()));
        auto store = devices::IscsiStore::open(std::move(*lun), kDiskLba, kDiskBytes, arbiter::Arbiter::key_of(self));
        PAIR_REQUIRE(store.has_value(), (store ? "" : store.error()));
        return std::move(*store);
    }

    // guest_args: added to the guest's command line (e.g. "mode=cpu").
    explicit PairRig(const std::string& args = {}) : guest_args(args)
    {
        PAIR_REQUIRE(net.error().empty(), net.error());
        for (std::size_t i = 0; i < key.size(); ++i)
            key[i] = static_cast<std::uint8_t>(i * 13 + 1);
        auto a = arbiter::Arbiter::open(arbiter_config(1, 2));
        PAIR_REQUIRE(a.has_value(), (a ? "" : a.error()));
        auto fresh = a->init(1, true);
        PAIR_REQUIRE(fresh.has_value(), (fresh ? "" : fresh.error()));
        disk_a = open_disk(1);
        disk_b = open_disk(2);
    }

    enum class Start { primary, backup, join };
    // Host 1 or 2, starting as the boot pair's primary or backup (epoch 1), or joining.
    daemon::NodeConfig node_config(protocol::HostId self, Start how)
    {
        const protocol::HostId peer = self == 1 ? 2 : 1;
        const bool a = self == 1;
        daemon::NodeConfig c;
        c.vm_id = kVm;
        c.self = self;
        c.peer = peer;
        c.start_as_primary = how == Start::primary;
        c.join = how == Start::join;
        c.epoch = 1;
        auto img = engine::load_pvh_image(testing::guest_path(), testing::kGuestMemory);
        PAIR_REQUIRE(img.has_value(), (img ? "" : img.error()));
        auto backend = backends::KvmBackend::create(*img, testing::kGuestMemory,
                                                    net.cmdline() + (guest_args.empty() ? "" : " " + guest_args));
        PAIR_REQUIRE(backend.has_value(), (backend ? "" : backend.error()));
        c.backend = std::move(backend).value();
        c.machine.network = true;
        c.machine.disk_bytes = kDiskBytes;
        c.tap = net.tap();
        c.disk = a ? &*disk_a : &*disk_b;
        c.channel_listen = loopback(a ? chan_a : chan_b);
        c.channel_peer = loopback(a ? chan_b : chan_a);
        c.channel.vm_id = kVm;
        c.channel.self = self;
        c.channel.peer = peer;
        c.channel.batch_delay = 2000;
        c.channel.reconnect_delay = 50'000;
        c.tls_client = a ? &client_a : &client_b;
        c.tls_server = a ? &server_a : &server_b;
        c.heartbeat = {loopback(a ? hb_a : hb_b), loopback(a ? hb_b : hb_a), kVm, self, peer, key};
        c.arbiter = arbiter_config(self, peer);
        c.record_owner = 0;
        c.log = logbook.sink();
        return c;
    }
};

// Clients of the guest's service: random ADDs and GETs, retried until answered.
struct Clients {
    std::atomic<bool> stop{false};
    std::atomic<int> answered{0};
    std::vector<testing::KvCall> calls[2];
    std::vector<std::thread> threads;

    Clients(testing::TapNet& net, unsigned seed)
    {
        for (int c = 0; c < 2; ++c) // seed by value: the threads outlive this constructor
            threads.emplace_back([this, &net, c, seed] {
                std::mt19937 rng(seed + static_cast<unsigned>(c));
                testing::KvClient client(net.host_ip(), net.guest_ip(), 10 + static_cast<std::uint32_t>(c));
                while (!stop) {
                    auto call = client.call(rng() % 10 < 7 ? 1 : 2, static_cast<std::uint8_t>(rng() % 8), rng() % 1000,
                                            std::chrono::milliseconds(200), 100);
                    answered += call.answered;
                    calls[c].push_back(call);
                }
            });
    }
    ~Clients() { finish(); }
    void finish()
    {
        stop = true;
        for (auto& t : threads)
            if (t.joinable())
                t.join();
    }
    bool wait_answered(int n, int seconds)
    {
        const auto deadline = Clock::now() + std::chrono::seconds(seconds);
        while (answered < n && Clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        return answered >= n;
    }
    std::vector<testing::KvCall> all() const
    {
        std::vector<testing::KvCall> v = calls[0];
        v.insert(v.end(), calls[1].begin(), calls[1].end());
        return v;
    }
};

template <class Pred>
inline bool wait_for(Pred pred, int seconds)
{
    const auto deadline = Clock::now() + std::chrono::seconds(seconds);
    while (!pred() && Clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return pred();
}

inline std::unique_ptr<daemon::Node> start_node(daemon::NodeConfig cfg)
{
    auto n = daemon::Node::start(std::move(cfg));
    PAIR_REQUIRE(n.has_value(), (n ? "" : n.error()));
    return std::move(n).value();
}


} // namespace xenft::testing
