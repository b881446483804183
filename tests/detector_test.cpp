// Tests of the failure detector's heartbeats: wire format, HMAC authentication, replay
// protection, key files, address parsing, and the UDP socket over real loopback sockets with
// forged, replayed, misdirected and foreign datagrams.
#define BOOST_TEST_MODULE detector
#include <boost/test/unit_test.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "xenft/common/socket_address.hpp"
#include "xenft/common/unique_fd.hpp"
#include "xenft/detector/heartbeat_socket.hpp"

using namespace xenft;
using namespace xenft::detector;

namespace {

HeartbeatKey key_of(std::uint8_t fill)
{
    HeartbeatKey k;
    k.fill(fill);
    return k;
}

Heartbeat sample()
{
    Heartbeat hb;
    hb.vm_id = 77;
    hb.sender = 1;
    hb.nonce = 0x1122334455667788ull;
    hb.counter = 9;
    hb.msg = protocol::HeartbeatMsg{5, protocol::Role::primary_protected, 123456, 120000, 4242};
    return hb;
}

template <class R>
std::string error_text(const R& r)
{
    return r.has_value() ? std::string() : r.error();
}

struct TempDir {
    std::string path;
    TempDir()
    {
        char tmpl[] = "/tmp/xenft-test-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir()
    {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    std::string write(const std::string& name, const std::string& content, mode_t mode)
    {
        const std::string p = path + "/" + name;
        std::ofstream(p, std::ios::binary) << content;
        ::chmod(p.c_str(), mode);
        return p;
    }
};

SocketAddress addr(const std::string& s)
{
    auto a = SocketAddress::parse(s);
    BOOST_TEST_REQUIRE(a.has_value(), error_text(a));
    return *a;
}

// Binds a UDP socket on an ephemeral loopback port and returns it with its address.
std::pair<UniqueFd, SocketAddress> udp_on(const std::string& host)
{
    SocketAddress a = addr(host + ":0");
    UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    BOOST_TEST_REQUIRE(::bind(fd.get(), a.get(), a.length) == 0);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    return {std::move(fd), SocketAddress::from(ss, len)};
}

std::uint16_t free_udp_port()
{
    auto [fd, a] = udp_on("127.0.0.1");
    return ntohs(reinterpret_cast<const sockaddr_in&>(a.storage).sin_port);
}

std::vector<protocol::HeartbeatMsg> receive_for(HeartbeatSocket& s, int ms)
{
    std::vector<protocol::HeartbeatMsg> all;
    for (int i = 0; i < ms; ++i) {
        auto got = s.receive();
        all.insert(all.end(), got.begin(), got.end());
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return all;
}

} // namespace

BOOST_AUTO_TEST_CASE(heartbeat_round_trips)
{
    const auto bytes = encode_heartbeat(sample(), key_of(1));
    BOOST_TEST(bytes.size() == kHeartbeatBytes);
    auto back = decode_heartbeat(bytes, key_of(1));
    BOOST_TEST_REQUIRE(back.has_value(), error_text(back));
    BOOST_TEST(back->vm_id == 77u);
    BOOST_TEST(back->sender == 1u);
    BOOST_TEST(back->nonce == sample().nonce);
    BOOST_TEST(back->counter == 9u);
    BOOST_TEST(back->msg.epoch == 5u);
    BOOST_TEST((back->msg.role == protocol::Role::primary_protected));
    BOOST_TEST(back->msg.sent_at == 123456u);
    BOOST_TEST(back->msg.echo == 120000u);
    BOOST_TEST(back->msg.position == 4242u);
}

BOOST_AUTO_TEST_CASE(wrong_key_fails_authentication)
{
    auto r = decode_heartbeat(encode_heartbeat(sample(), key_of(1)), key_of(2));
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().find("failed authentication") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(every_bit_flip_is_rejected)
{
    const auto good = encode_heartbeat(sample(), key_of(3));
    for (std::size_t bit = 0; bit < 8 * good.size(); ++bit) {
        auto bad = good;
        bad[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
        BOOST_TEST_REQUIRE(!decode_heartbeat(bad, key_of(3)).has_value(), "bit " << bit);
    }
}

BOOST_AUTO_TEST_CASE(wrong_sizes_are_rejected_with_the_size)
{
    const auto good = encode_heartbeat(sample(), key_of(3));
    auto r = decode_heartbeat(std::span(good).first(98), key_of(3));
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().find("98 bytes") != std::string::npos);
    std::vector<std::uint8_t> longer(good.begin(), good.end());
    longer.push_back(0);
    BOOST_TEST(!decode_heartbeat(longer, key_of(3)).has_value());
    BOOST_TEST(!decode_heartbeat({}, key_of(3)).has_value());
}

BOOST_AUTO_TEST_CASE(header_errors_name_the_field)
{
    auto good = encode_heartbeat(sample(), key_of(3));
    auto v = good;
    v[4] = 2;
    BOOST_TEST(error_text(decode_heartbeat(v, key_of(3))).find("version 2") != std::string::npos);
    auto m = good;
    m[0] = 'Y';
    BOOST_TEST(error_text(decode_heartbeat(m, key_of(3))).find("bad magic") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(authentic_heartbeat_with_unknown_role_is_rejected)
{
    Heartbeat hb = sample();
    // Every role a replica can say it is in travels, the last ones too (a replica that halted
    // or whose VM ended says so).
    for (auto role : {protocol::Role::starting, protocol::Role::halted, protocol::Role::ended}) {
        hb.msg.role = role;
        auto ok = decode_heartbeat(encode_heartbeat(hb, key_of(4)), key_of(4));
        BOOST_TEST_REQUIRE(ok.has_value(), (ok ? "" : ok.error()));
        BOOST_TEST((ok->msg.role == role));
    }
    hb.msg.role = static_cast<protocol::Role>(200);
    auto r = decode_heartbeat(encode_heartbeat(hb, key_of(4)), key_of(4));
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().find("unknown role 200") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(replay_guard_accepts_only_fresh_counters)
{
    ReplayGuard g;
    BOOST_TEST(g.accept(1, 5));
    BOOST_TEST(!g.accept(1, 5));
    BOOST_TEST(!g.accept(1, 4));
    BOOST_TEST(g.accept(1, 6));
    BOOST_TEST(g.accept(2, 1)); // the sender restarted with a new nonce
    BOOST_TEST(!g.accept(1, 6)); // the old session's datagrams stay rejected
    for (std::uint64_t n = 100; n < 100 + ReplayGuard::kNonces; ++n)
        BOOST_TEST(g.accept(n, 1));
    BOOST_TEST(g.accept(1, 6)); // nonce 1 forgotten after kNonces newer ones (documented limit)
}

BOOST_AUTO_TEST_CASE(key_files_raw_hex_and_their_errors)
{
    TempDir d;
    auto raw = load_heartbeat_key(d.write("raw", std::string(32, '\x07'), 0600));
    BOOST_TEST_REQUIRE(raw.has_value(), error_text(raw));
    BOOST_TEST((*raw == key_of(7)));
    auto hex = load_heartbeat_key(d.write("hex", std::string(64, 'a') + "\n", 0600));
    BOOST_TEST_REQUIRE(hex.has_value(), error_text(hex));
    BOOST_TEST((*hex == key_of(0xaa)));
    BOOST_TEST(error_text(load_heartbeat_key(d.write("open", std::string(32, 'x'), 0644))).find("chmod 600") !=
               std::string::npos);
    BOOST_TEST(error_text(load_heartbeat_key(d.write("short", "abc", 0600))).find("64 hex digits") != std::string::npos);
    BOOST_TEST(error_text(load_heartbeat_key(d.write("nothex", std::string(64, 'g'), 0600))).find("not a hex digit") !=
               std::string::npos);
    const auto missing = error_text(load_heartbeat_key(d.path + "/none"));
    BOOST_TEST(missing.find("cannot open") != std::string::npos);
    BOOST_TEST(missing.find(d.path + "/none") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(socket_addresses_parse_or_explain)
{
    BOOST_TEST(addr("10.0.0.2:7000").to_string() == "10.0.0.2:7000");
    BOOST_TEST(addr("[fd00::2]:7000").to_string() == "[fd00::2]:7000");
    BOOST_TEST(error_text(SocketAddress::parse("host.example:7000")).find("not a numeric") != std::string::npos);
    BOOST_TEST(error_text(SocketAddress::parse("10.0.0.2:70000")).find("port") != std::string::npos);
    BOOST_TEST(error_text(SocketAddress::parse("10.0.0.2")).find("HOST:PORT") != std::string::npos);
    BOOST_TEST(error_text(SocketAddress::parse("[fd00::2]7000")).find("[IPv6]:PORT") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(udp_heartbeats_between_real_sockets)
{
    const auto pa = free_udp_port(), pb = free_udp_port();
    const auto key = key_of(9);
    auto a = HeartbeatSocket::open({addr("127.0.0.1:" + std::to_string(pa)), addr("127.0.0.1:" + std::to_string(pb)), 77, 1, 2, key});
    auto b = HeartbeatSocket::open({addr("127.0.0.1:" + std::to_string(pb)), addr("127.0.0.1:" + std::to_string(pa)), 77, 2, 1, key});
    BOOST_TEST_REQUIRE(a.has_value(), error_text(a));
    BOOST_TEST_REQUIRE(b.has_value(), error_text(b));
    for (protocol::Time i = 0; i < 3; ++i)
        BOOST_TEST(a->send(protocol::HeartbeatMsg{5, protocol::Role::primary_protected, 1000 + i, 0, 10}).empty());
    const auto got = receive_for(*b, 50);
    BOOST_TEST_REQUIRE(got.size() == 3u);
    BOOST_TEST(got[2].sent_at == 1002u);
    BOOST_TEST(b->rejected().empty());

    // A second bind of the same address fails with the address in the message.
    auto dup = HeartbeatSocket::open({addr("127.0.0.1:" + std::to_string(pb)), addr("127.0.0.1:1"), 77, 2, 1, key});
    BOOST_TEST_REQUIRE(!dup.has_value());
    BOOST_TEST(dup.error().find("cannot bind 127.0.0.1:" + std::to_string(pb)) != std::string::npos);
}

BOOST_AUTO_TEST_CASE(forged_replayed_foreign_and_misaddressed_datagrams_are_ignored)
{
    const auto pb = free_udp_port();
    const auto key = key_of(9);
    auto [sender, sender_addr] = udp_on("127.0.0.1");
    auto b = HeartbeatSocket::open({addr("127.0.0.1:" + std::to_string(pb)), sender_addr, 77, 2, 1, key});
    BOOST_TEST_REQUIRE(b.has_value(), error_text(b));
    const SocketAddress to = addr("127.0.0.1:" + std::to_string(pb));
    auto send_raw = [&](int fd, const auto& bytes) { ::sendto(fd, bytes.data(), bytes.size(), 0, to.get(), to.length); };

    Heartbeat hb = sample();
    hb.vm_id = 77;
    hb.sender = 1;
    const auto genuine = encode_heartbeat(hb, key);
    send_raw(sender.get(), genuine);
    BOOST_TEST(receive_for(*b, 20).size() == 1u);

    send_raw(sender.get(), genuine); // replayed
    send_raw(sender.get(), encode_heartbeat(hb, key_of(10))); // forged with a guessed key
    Heartbeat other_vm = hb;
    other_vm.vm_id = 78;
    other_vm.counter = 100;
    send_raw(sender.get(), encode_heartbeat(other_vm, key)); // authentic, for another VM
    auto [stranger, stranger_addr] = udp_on("127.0.0.2");
    Heartbeat fresh = hb;
    fresh.counter = 200;
    send_raw(stranger.get(), encode_heartbeat(fresh, key)); // right key, wrong source address
    send_raw(sender.get(), std::array<std::uint8_t, 5>{1, 2, 3, 4, 5}); // garbage
    BOOST_TEST(receive_for(*b, 30).empty());

    const auto& why = b->rejected();
    BOOST_TEST(why.at("replayed") == 1u);
    BOOST_TEST(why.at("heartbeat failed authentication (wrong key or forged)") == 1u);
    BOOST_TEST(why.at("for another VM or from another host") == 1u);
    BOOST_TEST(why.at("from an address that is not the peer") == 1u);
    BOOST_TEST(why.at("heartbeat of 5 bytes, expected 99") == 1u);
}
