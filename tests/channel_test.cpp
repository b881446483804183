// Tests of the logging channel over real TLS 1.3 connections on loopback: a million entries in
// order, a TCP connection killed mid-stream, flow control, forced flushes, refusals (wrong CA,
// expired certificate, wrong name, plaintext client, wrong pin, older epoch, wrong VM), and
// malformed input from an authenticated peer; plus the message and stream decoders alone.
#define BOOST_TEST_MODULE channel
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <map>
#include <mutex>
#include <thread>

#include "tests/tls_fixture.hpp"
#include "xenft/backends/xen/copy_state.hpp"
#include "xenft/channel/channel.hpp"
#include "xenft/logformat/stream.hpp"
#include "xenft/logformat/synthetic.hpp"
#include "xenft/logformat/text.hpp"

using namespace xenft;
using namespace xenft::channel;
using logformat::Entry;

namespace {

// The entry with sequence number seq: deterministic, so the receiver can check every one.
Entry make_entry(std::uint64_t seq, std::uint64_t epoch = 1)
{
    Entry e{epoch, seq, 0, seq * 2, logformat::Interrupt{0xec, logformat::IrqSource::lapic_timer}};
    switch (seq % 10) {
    case 1: case 4: case 7:
        e.payload = logformat::IoRead{logformat::IoSpace::mmio, 8, 0xfeb00000, seq * 1'000'003};
        break;
    case 2:
        e.payload = logformat::TimeRead{logformat::TimeSource::rdtsc, seq * 2'400'000, 0};
        break;
    case 3:
        if (seq % 50 == 3)
            e.payload = logformat::NetRx{0, std::vector<std::uint8_t>(60 + seq % 200, static_cast<std::uint8_t>(seq))};
        break;
    case 5:
        e.payload = logformat::Output{logformat::OutputKind::net_tx, 0, seq};
        break;
    default:
        break;
    }
    return e;
}

struct Logs {
    std::mutex m;
    std::vector<std::string> lines;
    std::function<void(const std::string&)> sink(const std::string& who)
    {
        return [this, who](const std::string& l) {
            std::lock_guard g(m);
            lines.push_back(who + ": " + l);
            BOOST_TEST_MESSAGE(who << ": " << l);
        };
    }
    bool contains(const std::string& s)
    {
        std::lock_guard g(m);
        for (const auto& l : lines)
            if (l.find(s) != std::string::npos)
                return true;
        return false;
    }
};

SocketAddress loopback(std::uint16_t port)
{
    return *SocketAddress::parse("127.0.0.1:" + std::to_string(port));
}

ChannelConfig config(std::uint16_t port, Logs& logs, const std::string& who)
{
    ChannelConfig c;
    c.address = loopback(port);
    c.vm_id = 7;
    c.epoch = 1;
    c.reconnect_delay = 20'000;
    c.log = logs.sink(who);
    return c;
}

TlsContext context(const TlsConfig& cfg, TlsContext::Side side)
{
    auto c = TlsContext::create(cfg, side);
    BOOST_TEST_REQUIRE(c.has_value(), (c ? "" : c.error()));
    return std::move(c).value();
}

// A primary and a backup on loopback.
struct Pair {
    testing::TlsFixture& tls;
    Logs logs;
    TlsContext server_tls, client_tls;
    std::optional<LogReceiver> rx;
    std::optional<LogSender> tx;

    Pair(testing::TlsFixture& f, TlsConfig primary, TlsConfig backup, std::function<void(ChannelConfig&, ChannelConfig&)> tweak = {},
         std::uint16_t via_port = 0)
        : tls(f), server_tls(context(backup, TlsContext::Side::server)), client_tls(context(primary, TlsContext::Side::client))
    {
        ChannelConfig rc = config(0, logs, "backup"), sc = config(0, logs, "primary");
        rc.self = 2, rc.peer = 1, sc.self = 1, sc.peer = 2;
        if (tweak)
            tweak(sc, rc);
        auto r = LogReceiver::listen(rc, server_tls);
        BOOST_TEST_REQUIRE(r.has_value(), (r ? "" : r.error()));
        rx.emplace(std::move(r).value());
        sc.address = loopback(via_port ? via_port : rx->port());
        tx.emplace(sc, client_tls);
    }

    void pump(int rounds = 1)
    {
        for (int i = 0; i < rounds; ++i) {
            tx->pump(0);
            rx->pump(0);
        }
    }
    // Pumps until pred holds or about `ms` milliseconds passed.
    template <class P>
    bool pump_until(P pred, int ms = 3000)
    {
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (!pred()) {
            if (std::chrono::steady_clock::now() > end)
                return false;
            tx->pump(1);
            rx->pump(1);
        }
        return true;
    }
};

// A plain TCP relay between the primary and the backup that a test can cut, as a dying switch
// or a reset connection would.
class Relay {
public:
    explicit Relay(std::uint16_t upstream) : upstream_(upstream)
    {
        listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        auto a = loopback(0);
        ::bind(listener_.get(), a.get(), a.length);
        ::listen(listener_.get(), 4);
        sockaddr_in sa{};
        socklen_t len = sizeof sa;
        ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&sa), &len);
        port = ntohs(sa.sin_port);
    }
    void pump()
    {
        UniqueFd in(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (in.valid()) {
            UniqueFd out(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            auto a = loopback(upstream_);
            if (::connect(out.get(), a.get(), a.length) == 0) {
                ::fcntl(out.get(), F_SETFL, O_NONBLOCK);
                pairs_.push_back({std::move(in), std::move(out)});
            }
        }
        for (auto& [a, b] : pairs_) {
            copy(a.get(), b.get());
            copy(b.get(), a.get());
        }
    }
    // Cuts every connection through the relay (RST, not FIN: SO_LINGER 0).
    void cut()
    {
        for (auto& [a, b] : pairs_) {
            const linger l{1, 0};
            ::setsockopt(a.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
            ::setsockopt(b.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        pairs_.clear();
        ++cuts;
    }
    std::uint16_t port = 0;
    int cuts = 0;

private:
    static void copy(int from, int to)
    {
        char buf[65536];
        const ssize_t n = ::recv(from, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            ssize_t off = 0;
            while (off < n) {
                const ssize_t w = ::send(to, buf + off, static_cast<std::size_t>(n - off), MSG_NOSIGNAL);
                if (w <= 0) {
                    pollfd p{to, POLLOUT, 0};
                    ::poll(&p, 1, 10);
                    continue;
                }
                off += w;
            }
        }
    }
    std::uint16_t upstream_;
    UniqueFd listener_;
    std::vector<std::pair<UniqueFd, UniqueFd>> pairs_;
};

// Streams `count` entries, checking each popped entry against make_entry. Returns the number
// checked; `during` runs every round (to inject faults).
std::uint64_t stream_and_check(Pair& p, std::uint64_t count, const std::function<void(std::uint64_t)>& during = {},
                               int timeout_ms = 120'000)
{
    std::uint64_t next_append = 1, next_expect = 1;
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (next_expect <= count && std::chrono::steady_clock::now() < end) {
        for (int i = 0; i < 4096 && next_append <= count; ++i) {
            if (!p.tx->append(make_entry(next_append)))
                break;
            ++next_append;
        }
        p.tx->pump(0);
        p.rx->pump(0);
        while (auto e = p.rx->pop()) {
            if (!(*e == make_entry(next_expect))) {
                BOOST_TEST_ERROR("entry " << next_expect << " arrived as " << logformat::to_text(*e));
                return next_expect - 1;
            }
            ++next_expect;
        }
        if (during)
            during(next_expect);
    }
    return next_expect - 1;
}

} // namespace

// ---- decoders alone --------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(messages_round_trip_even_byte_by_byte)
{
    std::vector<std::uint8_t> bytes;
    append_message(bytes, Hello{7, 1, 3});
    append_message(bytes, HelloReply{false, 99, "older epoch\n\x01"});
    append_message(bytes, Ack{12345});
    append_message(bytes, LogChunk{true, {1, 2, 3}});
    MessageReader r;
    std::vector<ChannelMsg> got;
    for (auto b : bytes) {
        r.feed(std::span(&b, 1));
        auto m = r.next();
        BOOST_TEST_REQUIRE(m.has_value());
        if (*m)
            got.push_back(**m);
    }
    BOOST_TEST_REQUIRE(got.size() == 4u);
    BOOST_TEST(std::get<Hello>(got[0]).epoch == 3u);
    BOOST_TEST(std::get<HelloReply>(got[1]).received == 99u);
    BOOST_TEST(std::get<HelloReply>(got[1]).reason == "older epoch??"); // control characters neutralized
    BOOST_TEST(std::get<Ack>(got[2]).acked == 12345u);
    BOOST_TEST(std::get<LogChunk>(got[3]).ack_now);
}

BOOST_AUTO_TEST_CASE(malformed_messages_are_refused_with_the_reason)
{
    auto error_of = [](std::vector<std::uint8_t> bytes) {
        MessageReader r;
        r.feed(bytes);
        auto m = r.next();
        return m.has_value() ? std::string("accepted") : m.error();
    };
    BOOST_TEST(error_of({9, 0, 0, 0, 0, 0}) == "unknown message type 9");
    BOOST_TEST(error_of({3, 0, 0, 0, 0x20, 0}).find("over the 1048576-byte limit") != std::string::npos);
    BOOST_TEST(error_of({4, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}).find("reserved flags") != std::string::npos);
    BOOST_TEST(error_of({4, 0, 4, 0, 0, 0, 1, 2, 3, 4}) == "ack of 4 bytes, expected 8");
    BOOST_TEST(error_of({3, 0, 0, 0, 0, 0}) == "empty log chunk");
    std::vector<std::uint8_t> hello;
    append_message(hello, Hello{1, 2, 3});
    hello[6] = 'H'; // "GET " or any other protocol is not a hello
    BOOST_TEST(error_of(hello).find("malformed hello") != std::string::npos);
    hello.clear();
    append_message(hello, Hello{1, 2, 3});
    hello[10] = 9;
    BOOST_TEST(error_of(hello).find("channel version 9") != std::string::npos);
    BOOST_TEST(error_of({2, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 5}) == "malformed hello reply");
}

BOOST_AUTO_TEST_CASE(compressed_log_stream_round_trips_across_chunks)
{
    const auto log = logformat::mixed_log(3000, 3);
    LogCompressor c(1);
    std::vector<std::uint8_t> wire;
    const auto frames = logformat::encode_frames(log, 100);
    const std::size_t half = frames.size() / 2; // a frame split across two flushes
    c.compress(std::span(frames).first(half), false, wire);
    c.compress(std::span(frames).subspan(half), true, wire);
    MessageReader r;
    r.feed(wire);
    LogDecompressor d;
    std::vector<Entry> got;
    while (auto m = r.next().value()) {
        auto fed = d.feed(std::get<LogChunk>(*m).compressed, [&](logformat::Frame&& f) {
            got.insert(got.end(), f.entries.begin(), f.entries.end());
        });
        BOOST_TEST_REQUIRE(fed.has_value(), (fed ? "" : fed.error()));
    }
    BOOST_TEST_REQUIRE(got.size() == log.size());
    BOOST_TEST((got == log));
}

BOOST_AUTO_TEST_CASE(corrupt_and_invalid_streams_are_refused)
{
    LogDecompressor d;
    auto r = d.feed(std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}, [](logformat::Frame&&) {});
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().find("corrupt log stream: zstd") != std::string::npos, r.error());

    // Valid zstd of bytes that are not log frames.
    std::vector<std::uint8_t> junk(1000, 'A');
    std::vector<std::uint8_t> z(ZSTD_compressBound(junk.size()));
    z.resize(ZSTD_compress(z.data(), z.size(), junk.data(), junk.size(), 1));
    LogDecompressor d2;
    r = d2.feed(z, [](logformat::Frame&&) {});
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().find("bad magic") != std::string::npos, r.error());
}

BOOST_AUTO_TEST_CASE(decompression_bomb_is_cut_off)
{
    // 80 MiB of valid, highly repetitive frames in one small chunk.
    std::vector<std::uint8_t> raw;
    logformat::FrameEncoder enc(1, 1);
    for (std::uint64_t seq = 1; raw.size() < (80u << 20); ++seq) {
        enc.append(Entry{1, seq, 0, seq, logformat::DmaWrite{0x1000, std::vector<std::uint8_t>(60000, 0)}});
        enc.finish_into(raw);
    }
    std::vector<std::uint8_t> z(ZSTD_compressBound(raw.size()));
    z.resize(ZSTD_compress(z.data(), z.size(), raw.data(), raw.size(), 3));
    BOOST_TEST_MESSAGE("bomb: " << raw.size() << " bytes in a " << z.size() << "-byte chunk");
    BOOST_TEST_REQUIRE(z.size() < kMaxMsgPayload);
    LogDecompressor d;
    std::size_t frames = 0;
    auto r = d.feed(z, [&](logformat::Frame&&) { ++frames; });
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().find("decompression bomb") != std::string::npos, r.error());
    BOOST_TEST(frames * 60000 <= kMaxDecompressedPerChunk + 60000);
}

// ---- over real TLS ---------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(a_million_entries_arrive_in_order_and_intact)
{
    testing::TlsFixture f;
    Pair p(f, f.primary(), f.backup());
    const std::uint64_t n = 1'000'000;
    BOOST_TEST(stream_and_check(p, n) == n);
    BOOST_TEST(p.pump_until([&] { return p.tx->acked() == n; }));
    BOOST_TEST(p.tx->connections() == 1u);
    BOOST_TEST_MESSAGE("raw " << p.tx->raw_bytes_sent() << " bytes, on the wire " << p.tx->wire_bytes_sent());
    BOOST_TEST(p.tx->wire_bytes_sent() < p.tx->raw_bytes_sent() / 2); // zstd earns its place
}

BOOST_AUTO_TEST_CASE(killing_the_tcp_connection_mid_stream_loses_and_duplicates_nothing)
{
    testing::TlsFixture f;
    // The sender goes through a relay we can cut.
    std::optional<Relay> relay;
    Logs logs;
    TlsContext server_tls = context(f.backup(), TlsContext::Side::server);
    TlsContext client_tls = context(f.primary(), TlsContext::Side::client);
    ChannelConfig rc = config(0, logs, "backup"), sc = config(0, logs, "primary");
    rc.self = 2, rc.peer = 1, sc.self = 1, sc.peer = 2;
    sc.buffer_bytes = 256 * 1024; // keeps the primary from running far ahead of the cuts
    auto rx = LogReceiver::listen(rc, server_tls);
    BOOST_TEST_REQUIRE(rx.has_value());
    relay.emplace(rx->port()); // the sender goes through the relay
    sc.address = loopback(relay->port);
    LogSender tx(sc, client_tls);

    const std::uint64_t n = 300'000;
    std::uint64_t next_append = 1, next_expect = 1;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (next_expect <= n && std::chrono::steady_clock::now() < end) {
        for (int i = 0; i < 2048 && next_append <= n; ++i) {
            if (!tx.append(make_entry(next_append)))
                break;
            ++next_append;
        }
        tx.pump(0);
        relay->pump();
        rx->pump(0);
        relay->pump();
        while (auto e = rx->pop()) {
            BOOST_TEST_REQUIRE((*e == make_entry(next_expect)), "entry " << next_expect);
            ++next_expect;
        }
        // Cut the connection three times mid-stream.
        if ((relay->cuts == 0 && next_expect > 50'000) || (relay->cuts == 1 && next_expect > 120'000) ||
            (relay->cuts == 2 && next_expect > 200'000))
            relay->cut();
    }
    for (int i = 0; i < 2000 && tx.acked() < n; ++i) {
        tx.pump(1);
        relay->pump();
        rx->pump(1);
        relay->pump();
    }
    BOOST_TEST(next_expect - 1 == n);
    BOOST_TEST(tx.acked() == n);
    BOOST_TEST(!rx->pop().has_value()); // nothing twice
    BOOST_TEST(relay->cuts == 3);
    BOOST_TEST(tx.connections() >= 4u);
    BOOST_TEST(logs.contains("reconnected, resending from entry"));
}

BOOST_AUTO_TEST_CASE(flow_control_stalls_the_sender_and_resumes)
{
    testing::TlsFixture f;
    Pair p(f, f.primary(), f.backup(), [](ChannelConfig& s, ChannelConfig& r) {
        s.buffer_bytes = 256 * 1024;
        r.buffer_bytes = 64 * 1024;
    });
    // Nobody replays: the backup's buffer fills, it stops reading, acks stop, the sender fills.
    std::uint64_t appended = 0;
    bool stalled = false;
    for (int round = 0; round < 20000 && !stalled; ++round) {
        for (int i = 0; i < 512; ++i) {
            if (!p.tx->append(make_entry(appended + 1))) {
                stalled = true;
                break;
            }
            ++appended;
        }
        p.tx->flush(false);
        p.pump();
    }
    BOOST_TEST_REQUIRE(stalled);
    BOOST_TEST(p.tx->full());
    BOOST_TEST(p.rx->buffered_bytes() >= 64u * 1024);
    const auto lag = p.tx->lag();
    BOOST_TEST(lag.entries > 0u);
    BOOST_TEST(lag.bytes >= 256u * 1024);
    BOOST_TEST_MESSAGE("stalled after " << appended << " entries; lag " << lag.entries << " entries, " << lag.bytes
                                        << " bytes, " << lag.seconds << " s");
    // Replay drains the buffer: acks flow, the sender has room again, everything arrives.
    std::uint64_t popped = 0;
    BOOST_TEST(p.pump_until([&] {
        while (auto e = p.rx->pop()) {
            BOOST_TEST_REQUIRE((*e == make_entry(++popped)));
        }
        return !p.tx->full() && p.tx->acked() == appended;
    }, 10000));
    BOOST_TEST(p.tx->append(make_entry(appended + 1)));
    BOOST_TEST(p.rx->empty());
}

BOOST_AUTO_TEST_CASE(a_closed_intake_reads_and_acks_nothing_more_until_it_opens)
{
    testing::TlsFixture f;
    Pair p(f, f.primary(), f.backup());
    for (std::uint64_t s = 1; s <= 100; ++s)
        BOOST_TEST_REQUIRE(p.tx->append(make_entry(s)));
    p.tx->flush(true);
    BOOST_TEST_REQUIRE(p.pump_until([&] { return p.tx->acked() == 100; }, 10000));
    // The owner's replay is too far behind: what comes now stays unread and unacked.
    p.rx->set_intake(false);
    for (std::uint64_t s = 101; s <= 200; ++s)
        BOOST_TEST_REQUIRE(p.tx->append(make_entry(s)));
    p.tx->flush(true);
    for (int i = 0; i < 200; ++i)
        p.pump();
    BOOST_TEST(p.rx->received() == 100u);
    BOOST_TEST(p.tx->acked() == 100u);
    p.rx->set_intake(true);
    BOOST_TEST(p.pump_until([&] { return p.tx->acked() == 200; }, 10000));
    std::uint64_t popped = 0;
    while (auto e = p.rx->pop())
        BOOST_TEST_REQUIRE((*e == make_entry(++popped)));
    BOOST_TEST(popped == 200u);
}

BOOST_AUTO_TEST_CASE(an_output_waiting_forces_the_flush_and_the_ack)
{
    testing::TlsFixture f;
    Pair p(f, f.primary(), f.backup(), [](ChannelConfig& s, ChannelConfig& r) {
        s.batch_delay = 10'000'000; // batching alone would hold the entry for 10 s
        r.ack_delay = 10'000'000;   // and coalescing would hold the ack for 10 s
    });
    BOOST_TEST_REQUIRE(p.pump_until([&] { return p.tx->streaming(); }));
    p.tx->append(make_entry(1));
    p.tx->flush(true);
    BOOST_TEST(p.pump_until([&] { return p.tx->acked() == 1; }, 2000));
}

namespace {

// Runs a pair until the backup's log shows `expect`; nothing may be delivered.
void expect_refused(testing::TlsFixture& f, TlsConfig primary, TlsConfig backup, const std::string& expect,
                    std::function<void(ChannelConfig&, ChannelConfig&)> tweak = {})
{
    Pair p(f, primary, backup, std::move(tweak));
    p.tx->append(make_entry(1));
    p.tx->flush(true);
    BOOST_TEST(p.pump_until([&] { return p.logs.contains(expect); }, 3000), "expected \"" << expect << "\" in the logs");
    BOOST_TEST(p.rx->received() == 0u);
    BOOST_TEST(!p.tx->streaming());
}

} // namespace

BOOST_AUTO_TEST_CASE(a_primary_certificate_from_another_ca_is_refused)
{
    testing::TlsFixture f;
    expect_refused(f, f.primary("foreign"), f.backup(), "backup: connection from 127.0.0.1");
    expect_refused(f, f.primary("foreign"), f.backup(), "peer certificate not trusted: unable to get local issuer certificate");
}

BOOST_AUTO_TEST_CASE(an_expired_certificate_is_refused)
{
    testing::TlsFixture f;
    expect_refused(f, f.primary("expired"), f.backup(), "peer certificate not trusted: certificate has expired");
}

BOOST_AUTO_TEST_CASE(a_certificate_for_another_name_is_refused)
{
    testing::TlsFixture f;
    expect_refused(f, f.primary("wrongname"), f.backup(), "peer certificate not trusted: hostname mismatch");
    // And the primary checks the backup's name just the same.
    expect_refused(f, f.primary(), f.backup("wrongname"), "primary: backup 127.0.0.1");
}

BOOST_AUTO_TEST_CASE(a_plaintext_client_is_refused)
{
    testing::TlsFixture f;
    Logs logs;
    TlsContext server_tls = context(f.backup(), TlsContext::Side::server);
    ChannelConfig rc = config(0, logs, "backup");
    rc.peer = 1;
    auto rx = LogReceiver::listen(rc, server_tls);
    BOOST_TEST_REQUIRE(rx.has_value());
    UniqueFd plain(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    auto a = loopback(rx->port());
    BOOST_TEST_REQUIRE(::connect(plain.get(), a.get(), a.length) == 0);
    std::vector<std::uint8_t> hello;
    append_message(hello, Hello{7, 1, 1}); // a well-formed hello, but not inside TLS
    ::send(plain.get(), hello.data(), hello.size(), MSG_NOSIGNAL);
    for (int i = 0; i < 200 && !logs.contains("refused: TLS handshake failed"); ++i)
        rx->pump(5);
    BOOST_TEST(logs.contains("refused: TLS handshake failed"));
    BOOST_TEST(rx->received() == 0u);
    BOOST_TEST(!rx->connected());
}

BOOST_AUTO_TEST_CASE(pinned_fingerprints_authenticate_self_signed_hosts)
{
    testing::TlsFixture f;
    TlsConfig primary{f.cert("selfa"), f.key("selfa"), "", f.fingerprint_of("selfb"), testing::TlsFixture::kBackup};
    TlsConfig backup{f.cert("selfb"), f.key("selfb"), "", f.fingerprint_of("selfa"), testing::TlsFixture::kPrimary};
    Pair p(f, primary, backup);
    BOOST_TEST(stream_and_check(p, 1000) == 1000u);

    // A host whose certificate is not the pinned one is refused, even with the right name.
    TlsConfig impostor{f.cert("a"), f.key("a"), "", f.fingerprint_of("selfb"), testing::TlsFixture::kBackup};
    expect_refused(f, impostor, backup, "peer certificate not trusted");
}

BOOST_AUTO_TEST_CASE(bad_tls_configuration_is_explained)
{
    testing::TlsFixture f;
    auto err = [](TlsConfig c) {
        auto r = TlsContext::create(c, TlsContext::Side::client);
        return r ? std::string("accepted") : r.error();
    };
    TlsConfig c = f.primary();
    c.pinned_fingerprint = "SHA256:abc";
    BOOST_TEST(err(c).find("exactly one of a CA file and a pinned") != std::string::npos);
    c.ca_file.clear();
    BOOST_TEST(err(c).find("is not SHA256: followed by 64 hex digits") != std::string::npos);
    c = f.primary();
    c.key_file = f.key("b");
    BOOST_TEST(err(c).find("does not match certificate") != std::string::npos);
    c = f.primary();
    c.cert_file = f.dir + "/missing.crt";
    BOOST_TEST(err(c).find("missing.crt") != std::string::npos);
    c = f.primary();
    c.peer_name.clear();
    BOOST_TEST(err(c).find("peer's name") != std::string::npos);
    // A private key others can read is refused with its path and the mode to set.
    c = f.primary();
    BOOST_TEST(err(c) == "accepted");
    BOOST_REQUIRE(::chmod(c.key_file.c_str(), 0644) == 0);
    BOOST_TEST(err(c) == "TLS: key " + c.key_file + " is readable by group or others (mode 0644): chmod 600 " + c.key_file);
    BOOST_REQUIRE(::chmod(c.key_file.c_str(), 0600) == 0);
    BOOST_TEST(err(c) == "accepted");
}

BOOST_AUTO_TEST_CASE(an_older_epoch_or_another_vm_is_refused)
{
    testing::TlsFixture f;
    expect_refused(f, f.primary(), f.backup(), "older epoch 3, this backup is in epoch 4", [](ChannelConfig& s, ChannelConfig& r) {
        s.epoch = 3;
        r.epoch = 4;
    });
    expect_refused(f, f.primary(), f.backup(), "VM 8 is not protected here", [](ChannelConfig& s, ChannelConfig&) { s.vm_id = 8; });
    expect_refused(f, f.primary(), f.backup(), "host 5 is not this VM's primary", [](ChannelConfig& s, ChannelConfig&) { s.self = 5; });
}

BOOST_AUTO_TEST_CASE(malformed_input_from_an_authenticated_peer_drops_only_that_connection)
{
    testing::TlsFixture f;
    Logs logs;
    TlsContext server_tls = context(f.backup(), TlsContext::Side::server);
    TlsContext client_tls = context(f.primary(), TlsContext::Side::client);
    ChannelConfig rc = config(0, logs, "backup");
    rc.self = 2, rc.peer = 1;
    auto rx = LogReceiver::listen(rc, server_tls);
    BOOST_TEST_REQUIRE(rx.has_value());

    // A raw TLS client with a valid certificate sends a valid hello, then the given bytes.
    auto attack = [&](const std::vector<std::uint8_t>& evil, const std::string& expect) {
        UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        auto a = loopback(rx->port());
        BOOST_TEST_REQUIRE(::connect(fd.get(), a.get(), a.length) == 0);
        ::fcntl(fd.get(), F_SETFL, O_NONBLOCK);
        TlsStream s(client_tls, std::move(fd));
        std::vector<std::uint8_t> out;
        append_message(out, Hello{7, 1, 1});
        out.insert(out.end(), evil.begin(), evil.end());
        bool sent = false;
        for (int i = 0; i < 400 && !logs.contains(expect); ++i) {
            if (!sent && s.handshake() == TlsStream::Io::done) {
                s.queue(out.data(), out.size());
                sent = true;
            }
            if (sent)
                (void)s.flush();
            rx->pump(5);
        }
        BOOST_TEST(logs.contains(expect), "expected \"" << expect << "\"");
    };
    attack({3, 0, 8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, "corrupt log stream");
    attack({7, 0, 0, 0, 0, 0}, "unknown message type 7");
    attack({3, 0, 0, 0, 0, 0x40}, "over the 1048576-byte limit");
    std::vector<std::uint8_t> reply;
    append_message(reply, Ack{5});
    attack(reply, "unexpected message");
    BOOST_TEST(rx->received() == 0u);

    // The backup still serves a well-behaved primary afterwards.
    LogSender tx([&] {
        ChannelConfig sc = config(rx->port(), logs, "primary");
        sc.self = 1, sc.peer = 2;
        return sc;
    }(), client_tls);
    for (std::uint64_t s = 1; s <= 100; ++s)
        tx.append(make_entry(s));
    tx.flush(true);
    for (int i = 0; i < 400 && tx.acked() < 100; ++i) {
        tx.pump(1);
        rx->pump(1);
    }
    BOOST_TEST(tx.acked() == 100u);
}

BOOST_AUTO_TEST_CASE(the_vm_thread_appends_while_the_channel_thread_pumps)
{
    // The daemon's shape: appends (and flushes) on the VM's thread, pump() on the channel's.
    testing::TlsFixture f;
    Pair p(f, f.primary(), f.backup(), [](ChannelConfig& s, ChannelConfig&) { s.buffer_bytes = 512 * 1024; });
    const std::uint64_t n = 200'000;
    std::atomic<bool> stop{false};
    std::thread channel([&] {
        while (!stop)
            p.tx->pump(1);
    });
    std::thread vm([&] {
        for (std::uint64_t seq = 1; seq <= n;) {
            if (p.tx->append(make_entry(seq))) {
                if (seq % 1000 == 0)
                    p.tx->flush(seq % 5000 == 0);
                ++seq;
            } else {
                p.tx->flush(false);
                std::this_thread::sleep_for(std::chrono::microseconds(200)); // stalled: buffer full
            }
        }
        p.tx->flush(true);
    });
    std::uint64_t next = 1;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (next <= n && std::chrono::steady_clock::now() < end) {
        p.rx->pump(1);
        while (auto e = p.rx->pop()) {
            BOOST_TEST_REQUIRE((*e == make_entry(next)), "entry " << next);
            ++next;
        }
    }
    vm.join();
    while (p.tx->acked() < n && std::chrono::steady_clock::now() < end)
        p.rx->pump(1);
    stop = true;
    channel.join();
    BOOST_TEST(next - 1 == n);
    BOOST_TEST(p.tx->acked() == n);
}

// ----- live copy (copy.hpp) -----------------------------------------------------------------------

namespace {

CopyPages some_pages(std::uint64_t first, std::size_t n)
{
    CopyPages p;
    for (std::size_t i = 0; i < n; ++i) {
        p.numbers.push_back(first + i);
        p.data.resize(p.data.size() + kCopyPageBytes, static_cast<std::uint8_t>(first + i));
    }
    return p;
}

CopyFinal some_final(std::uint64_t epoch, std::uint64_t next_seq)
{
    CopyFinal f;
    f.epoch = epoch;
    f.exit = 1000;
    f.next_seq = next_seq;
    f.cpu.assign(3000, 0xc9);
    f.devices.assign(200, 0xde);
    return f;
}

// Pumps until the receiver holds n copy records and returns them.
std::vector<LogReceiver::ReceivedCopy> receive_copies(Pair& p, std::size_t n)
{
    std::vector<LogReceiver::ReceivedCopy> got;
    p.pump_until([&] {
        while (auto r = p.rx->pop_copy())
            got.push_back(std::move(*r));
        return got.size() >= n;
    });
    return got;
}

} // namespace

BOOST_AUTO_TEST_CASE(copy_records_round_trip_and_bad_ones_are_refused)
{
    const std::vector<CopyRecord> records{CopyBegin{16u << 20, 4096}, some_pages(7, kCopyPagesPerRecord), some_final(3, 42)};
    for (const auto& r : records) {
        const auto bytes = encode_copy_record(r);
        auto back = decode_copy_record(bytes);
        BOOST_TEST_REQUIRE(back.has_value(), (back ? "" : back.error()));
        BOOST_TEST((*back == r));
        auto unzipped = decompress_copy_record(compress_copy_record(bytes, 1));
        BOOST_TEST_REQUIRE(unzipped.has_value());
        BOOST_TEST((*unzipped == r));
        for (std::size_t cut : {std::size_t{1}, bytes.size() / 2, bytes.size() - 1}) // truncated anywhere
            BOOST_TEST(!decode_copy_record(std::span(bytes).first(cut)).has_value());
        auto longer = bytes;
        longer.push_back(0);
        BOOST_TEST(decode_copy_record(longer).error().find("trailing") != std::string::npos);
    }
    auto err = [](std::vector<std::uint8_t> b) {
        auto r = decode_copy_record(b);
        return r ? std::string("accepted") : r.error();
    };
    BOOST_TEST(err({9}).find("unknown copy record type 9") != std::string::npos);
    BOOST_TEST(err({}).find("empty") != std::string::npos);
    auto too_many = encode_copy_record(some_pages(0, 1));
    too_many[1] = static_cast<std::uint8_t>(kCopyPagesPerRecord + 1);
    BOOST_TEST(err(too_many).find("copy record of 65 pages") != std::string::npos);
    auto begin = encode_copy_record(CopyBegin{4096, 2}); // two pages of a one-page memory
    BOOST_TEST(err(begin).find("do not fit") != std::string::npos);
    auto fin = encode_copy_record(some_final(1, 5));
    fin[25] = 0xff, fin[26] = 0xff, fin[27] = 0xff; // a vCPU state of ~16 MiB
    BOOST_TEST(err(fin).find("limit") != std::string::npos);
    // A small zstd frame that claims more than a record may hold is refused before it is inflated.
    const std::vector<std::uint8_t> zeros(kMaxCopyRecordBytes + 1, 0);
    auto bomb = decompress_copy_record(compress_copy_record(zeros, 1));
    BOOST_TEST(!bomb.has_value());
    BOOST_TEST(bomb.error().find("over the") != std::string::npos);
    BOOST_TEST(!decompress_copy_record(std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}).has_value());
}

// The Xen backend's vCPU state in a live copy's final record (backends/xen/copy_state.hpp).
BOOST_AUTO_TEST_CASE(a_xen_vcpu_copy_round_trips_and_bad_ones_are_refused)
{
    using namespace xenft::backends::xen;
    XenVcpuCopy c;
    c.hvm_context.assign(3000, 0x5a);
    c.tsc_mode = 2, c.tsc_elapsed_ns = 123456789, c.tsc_khz = 2'000'000, c.tsc_incarnation = 3;
    c.clock_ns = 98765, c.disk_bytes = 1u << 20;
    const auto bytes = encode_xen_vcpu_copy(c);
    auto back = decode_xen_vcpu_copy(bytes);
    BOOST_TEST_REQUIRE(back.has_value(), (back ? "" : back.error()));
    BOOST_TEST((*back == c));
    for (std::size_t cut : {std::size_t{0}, std::size_t{1}, bytes.size() / 2, bytes.size() - 1})
        BOOST_TEST(decode_xen_vcpu_copy(std::span(bytes).first(cut)).error().find("truncated") != std::string::npos);
    auto longer = bytes;
    longer.push_back(0);
    BOOST_TEST(decode_xen_vcpu_copy(longer).error().find("trailing") != std::string::npos);
    auto newer = bytes;
    newer[0] = 2;
    BOOST_TEST(decode_xen_vcpu_copy(newer).error().find("layout version 2") != std::string::npos);
    XenVcpuCopy empty;
    BOOST_TEST(decode_xen_vcpu_copy(encode_xen_vcpu_copy(empty)).error().find("no HVM context") != std::string::npos);
    XenVcpuCopy big = c;
    big.hvm_context.assign(kMaxCopyStateBytes + 1, 1);
    BOOST_TEST(!decode_xen_vcpu_copy(encode_xen_vcpu_copy(big)).has_value());
}

BOOST_AUTO_TEST_CASE(a_live_copy_goes_first_and_the_log_follows_on_the_same_connection)
{
    testing::TlsFixture f;
    Pair p(f, f.primary(), f.backup(), [](ChannelConfig& s, ChannelConfig&) { s.send_copy = true; });
    p.rx->await_copy(1);
    BOOST_TEST(p.tx->append_copy(CopyBegin{1u << 20, 256}));
    for (std::uint64_t first = 0; first < 256; first += kCopyPagesPerRecord)
        BOOST_TEST(p.tx->append_copy(some_pages(first, kCopyPagesPerRecord)));
    BOOST_TEST(p.tx->append_copy(some_final(1, 51)));
    auto got = receive_copies(p, 6);
    BOOST_TEST_REQUIRE(got.size() == 6u);
    BOOST_TEST(std::holds_alternative<CopyBegin>(got[0].record));
    BOOST_TEST((std::get<CopyPages>(got[3].record) == some_pages(128, kCopyPagesPerRecord)));
    BOOST_TEST((std::get<CopyFinal>(got[5].record) == some_final(1, 51)));
    BOOST_TEST((p.tx->copy_state() == CopyState::copying));
    BOOST_TEST(p.rx->received() == 50u); // the log continues after the copy's last entry

    // The VM runs on after the pause; its entries wait until the backup applied the copy.
    for (std::uint64_t s = 51; s <= 100; ++s)
        BOOST_TEST(p.tx->append(make_entry(s)));
    p.tx->flush(true);
    p.pump(50);
    BOOST_TEST(p.rx->received() == 50u);
    BOOST_TEST(!p.rx->copy_confirmed());

    p.rx->copy_applied(got[5].attempt, true, {});
    BOOST_TEST_REQUIRE(p.pump_until([&] { return p.rx->copy_confirmed() && p.tx->acked() == 100u; }));
    BOOST_TEST((p.tx->copy_state() == CopyState::done));
    for (std::uint64_t s = 51; s <= 100; ++s) {
        auto e = p.rx->pop();
        BOOST_TEST_REQUIRE(e.has_value());
        BOOST_TEST((*e == make_entry(s)));
    }
    BOOST_TEST(p.logs.contains("live copy confirmed; the log follows from entry 51"));
}

BOOST_AUTO_TEST_CASE(a_copy_is_refused_where_it_does_not_belong_or_cannot_be_applied)
{
    testing::TlsFixture f;
    {
        // A backup that needs a copy refuses a primary that only has log for it.
        Pair p(f, f.primary(), f.backup());
        p.rx->await_copy(1);
        p.tx->append(make_entry(1));
        p.tx->flush(true);
        BOOST_TEST(p.pump_until([&] { return p.logs.contains("needs a live copy first"); }));
        BOOST_TEST(p.rx->received() == 0u);
    }
    {
        // A backup that replays the log needs no copy; the copy fails on the primary's side.
        Pair p(f, f.primary(), f.backup(), [](ChannelConfig& s, ChannelConfig&) { s.send_copy = true; });
        p.tx->append_copy(CopyBegin{1u << 20, 256});
        BOOST_TEST(p.pump_until([&] { return p.tx->copy_state() == CopyState::failed; }));
        BOOST_TEST(p.tx->copy_error().find("needs no copy") != std::string::npos, p.tx->copy_error());
    }
    {
        // A backup that cannot apply the copy says why; the primary's copy fails with it.
        Pair p(f, f.primary(), f.backup(), [](ChannelConfig& s, ChannelConfig&) { s.send_copy = true; });
        p.rx->await_copy(1);
        p.tx->append_copy(CopyBegin{1u << 20, 256});
        p.tx->append_copy(some_final(1, 1));
        auto got = receive_copies(p, 2);
        BOOST_TEST_REQUIRE(got.size() == 2u);
        p.rx->copy_applied(got[1].attempt, false, "the primary's VM has 1 MiB of memory, this one 16 MiB");
        BOOST_TEST(p.pump_until([&] { return p.tx->copy_state() == CopyState::failed; }));
        BOOST_TEST(p.tx->copy_error().find("this one 16 MiB") != std::string::npos, p.tx->copy_error());
    }
    {
        // A copy of another epoch is refused at its final record.
        Pair p(f, f.primary(), f.backup(), [](ChannelConfig& s, ChannelConfig&) { s.send_copy = true; });
        p.rx->await_copy(1);
        p.tx->append_copy(some_final(2, 1));
        BOOST_TEST(p.pump_until([&] { return p.logs.contains("live copy of epoch 2 on a connection of epoch 1"); }));
        BOOST_TEST(p.pump_until([&] { return p.tx->copy_state() == CopyState::failed; }));
        BOOST_TEST(!p.rx->pop_copy().has_value());
    }
}

BOOST_AUTO_TEST_CASE(a_backup_awaiting_a_copy_takes_it_from_a_newer_epoch_but_not_from_an_older_one)
{
    // The Xen backup read the arbitration record (epoch 3) before the primary claimed the VM
    // (epoch 4): it has no state of its own, so it takes the copy in the primary's epoch.
    testing::TlsFixture f;
    {
        Pair p(f, f.primary(), f.backup(), [](ChannelConfig& s, ChannelConfig&) {
            s.send_copy = true;
            s.epoch = 4;
        });
        p.rx->await_copy(3);
        BOOST_TEST(p.tx->append_copy(CopyBegin{1u << 20, 256}));
        BOOST_TEST(p.tx->append_copy(some_final(4, 11)));
        auto got = receive_copies(p, 2);
        BOOST_TEST_REQUIRE(got.size() == 2u);
        BOOST_TEST(p.rx->epoch() == 4u);
        BOOST_TEST(p.logs.contains("runs the VM in epoch 4, this backup knew epoch 3: taking its copy in epoch 4"));
    }
    {
        Pair p(f, f.primary(), f.backup(), [](ChannelConfig& s, ChannelConfig&) {
            s.send_copy = true;
            s.epoch = 2;
        });
        p.rx->await_copy(3);
        p.tx->append_copy(CopyBegin{1u << 20, 256});
        BOOST_TEST(p.pump_until([&] { return p.logs.contains("older epoch 2, this backup is in epoch 3"); }));
        BOOST_TEST(p.rx->epoch() == 3u);
        BOOST_TEST(!p.rx->pop_copy().has_value());
    }
}

BOOST_AUTO_TEST_CASE(a_copy_whose_connection_breaks_fails_and_the_next_one_starts_over)
{
    testing::TlsFixture f;
    Pair p(f, f.primary(), f.backup(), [](ChannelConfig& s, ChannelConfig&) { s.send_copy = true; });
    p.rx->await_copy(1);
    p.tx->append_copy(CopyBegin{1u << 20, 256});
    p.tx->append_copy(some_pages(0, 8));
    p.tx->append_copy(some_final(1, 10));
    auto first = receive_copies(p, 3);
    BOOST_TEST_REQUIRE(first.size() == 3u);
    p.tx.reset(); // the primary dies before the backup answered
    for (int i = 0; i < 20; ++i)
        p.rx->pump(1);
    p.rx->copy_applied(first[2].attempt, true, {}); // too late: that connection is gone
    BOOST_TEST(!p.rx->copy_confirmed());
    BOOST_TEST(p.rx->received() == 0u);

    // The next copy is a new attempt, from its beginning.
    ChannelConfig sc = config(p.rx->port(), p.logs, "primary");
    sc.self = 1, sc.peer = 2, sc.send_copy = true;
    p.tx.emplace(sc, p.client_tls);
    p.tx->append_copy(CopyBegin{1u << 20, 256});
    p.tx->append_copy(some_final(1, 20));
    auto second = receive_copies(p, 2);
    BOOST_TEST_REQUIRE(second.size() == 2u);
    BOOST_TEST(second[0].attempt > first[0].attempt);
    BOOST_TEST(std::holds_alternative<CopyBegin>(second[0].record));
    p.rx->copy_applied(second[1].attempt, true, {});
    BOOST_TEST(p.pump_until([&] { return p.rx->copy_confirmed() && p.tx->copy_state() == CopyState::done; }));
    BOOST_TEST(p.rx->received() == 19u);
}

BOOST_AUTO_TEST_CASE(writing_to_a_vanished_peer_fails_instead_of_killing_the_process)
{
    // With SIGPIPE's default action, the first write after the backup's socket closed would
    // end this process (as it ended the in-process pair test once). The channel must survive
    // without the program ignoring SIGPIPE.
    struct sigaction dfl{}, old{};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, &old);
    testing::TlsFixture f;
    Pair p(f, f.primary(), f.backup());
    std::uint64_t s = 1;
    for (; s <= 100; ++s)
        p.tx->append(make_entry(s));
    p.tx->flush(true);
    BOOST_TEST_REQUIRE(p.pump_until([&] { return p.tx->acked() == 100u; }));
    p.rx.reset(); // the backup's process is gone: its sockets close
    for (int round = 0; round < 50; ++round) {
        for (int i = 0; i < 200; ++i, ++s)
            (void)p.tx->append(make_entry(s));
        p.tx->flush(true);
        p.tx->pump(1);
    }
    BOOST_TEST(!p.tx->streaming());
    BOOST_TEST(p.logs.contains("backup 127.0.0.1"));
    ::sigaction(SIGPIPE, &old, nullptr);
}
