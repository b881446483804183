// One replica of an FT pair for the failure-detector tests between network namespaces
// (tests/detector_netns_test.sh): the real protocol core on the real clock, real authenticated
// UDP heartbeats, and log/ack traffic over a real TCP connection. The log traffic is a
// stand-in until the logging channel exists: small fixed records of LogMsg/AckMsg, no TLS, used
// only inside the test's own network namespaces.
//
// Prints JSON lines: {"event":"ready"}; {"event":"suspected",...} when the protocol asks for the
// test-and-set (the replica keeps running, as a real one would while it arbitrates, so the
// peer keeps hearing from it); and {"event":"done","suspected":...} on SIGTERM (the test stops
// both replicas at the same moment, so neither outlives the other) or after --duration-ms.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>

#include "xenft/common/socket_address.hpp"
#include "xenft/common/unique_fd.hpp"
#include "xenft/detector/heartbeat_socket.hpp"
#include "xenft/protocol/replica.hpp"

namespace po = boost::program_options;
using namespace xenft;
using namespace xenft::protocol;

namespace {

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop(int) { g_stop = 1; }

Time monotonic_us()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<Time>(ts.tv_sec) * 1'000'000 + static_cast<Time>(ts.tv_nsec) / 1000;
}

long long realtime_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<long long>(ts.tv_sec) * 1'000'000'000LL + ts.tv_nsec;
}

// Log-traffic records: type (1 log, 2 ack), then four u64 fields.
constexpr std::size_t kRecord = 33;

void put64(std::uint8_t* p, std::uint64_t v)
{
    for (int i = 0; i < 8; ++i)
        p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint64_t get64(const std::uint8_t* p)
{
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
        v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return v;
}

} // namespace

int main(int argc, char** argv)
{
    std::string role, listen, peer, log_addr, key_path;
    std::uint32_t self = 0, peer_id = 0;
    std::uint64_t duration_ms = 3000;
    po::options_description opts("detector_peer");
    opts.add_options()("role", po::value(&role)->required())("self", po::value(&self)->required())(
        "peer-id", po::value(&peer_id)->required())("listen", po::value(&listen)->required())(
        "peer", po::value(&peer)->required())("log", po::value(&log_addr)->required())(
        "key", po::value(&key_path)->required())("duration-ms", po::value(&duration_ms));
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, opts), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "detector_peer: " << e.what() << "\n";
        return 2;
    }
    const bool primary = role == "primary";
    auto key = detector::load_heartbeat_key(key_path);
    auto local = SocketAddress::parse(listen);
    auto remote = SocketAddress::parse(peer);
    auto log_sa = SocketAddress::parse(log_addr);
    if (!key || !local || !remote || !log_sa) {
        std::cerr << "detector_peer: " << (!key ? key.error() : !local ? local.error() : !remote ? remote.error() : log_sa.error())
                  << "\n";
        return 2;
    }
    auto hb = detector::HeartbeatSocket::open({*local, *remote, 42, self, peer_id, *key});
    if (!hb) {
        std::cerr << "detector_peer: " << hb.error() << "\n";
        return 1;
    }

    // Log traffic: the backup listens, the primary connects.
    UniqueFd listener, conn;
    if (!primary) {
        listener.reset(::socket(log_sa->family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
        const int one = 1;
        ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(listener.get(), log_sa->get(), log_sa->length) != 0 || ::listen(listener.get(), 1) != 0) {
            std::cerr << "detector_peer: log listener " << log_sa->to_string() << ": " << std::strerror(errno) << "\n";
            return 1;
        }
    }

    std::signal(SIGTERM, on_stop);
    std::signal(SIGINT, on_stop);
    const Config cfg; // the defaults under test
    const Time start = monotonic_us();
    Replica r = primary ? Replica::protected_primary(cfg, self, peer_id, 1, 0, start)
                        : Replica::replaying_backup(cfg, self, peer_id, 1, 0, start);
    std::cout << R"({"event":"ready","role":")" << role << "\"}" << std::endl;

    std::vector<std::uint8_t> inbuf;
    std::uint64_t heartbeats = 0, log_records = 0;
    Seq next_entry = 0;
    bool suspected = false;
    bool connected_once = false;
    Time last_vm = start;
    const Time end = start + duration_ms * 1000;

    auto perform = [&](const std::vector<Action>& actions, Time now) {
        for (const auto& a : actions) {
            if (const auto* s = std::get_if<Send>(&a)) {
                if (const auto* h = std::get_if<HeartbeatMsg>(&s->msg)) {
                    (void)hb->send(*h); // an unreachable peer shows up as silence, by design
                } else if (conn.valid()) {
                    std::uint8_t rec[kRecord];
                    if (const auto* l = std::get_if<LogMsg>(&s->msg)) {
                        rec[0] = 1;
                        put64(rec + 1, l->epoch), put64(rec + 9, l->first), put64(rec + 17, l->last), put64(rec + 25, l->sent_at);
                    } else {
                        const auto& k = std::get<AckMsg>(s->msg);
                        rec[0] = 2;
                        put64(rec + 1, k.epoch), put64(rec + 9, k.acked), put64(rec + 17, k.echo), put64(rec + 25, 0);
                    }
                    (void)::send(conn.get(), rec, sizeof rec, MSG_DONTWAIT | MSG_NOSIGNAL);
                }
            } else if (std::holds_alternative<RequestArbiter>(a) && !suspected) {
                suspected = true;
                std::cout << R"({"event":"suspected","role":")" << role << R"(","realtime_ns":)" << realtime_ns()
                          << R"(,"after_start_ms":)" << (now - start) / 1000 << R"(,"heartbeats":)" << heartbeats
                          << R"(,"log_records":)" << log_records << "}" << std::endl;
            }
        }
    };

    for (;;) {
        const Time now = monotonic_us();
        if (now >= end || g_stop)
            break;
        // Connect once, before any fault (a later blocking connect would stall the loop).
        if (primary && !connected_once) {
            UniqueFd c(::socket(log_sa->family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
            if (::connect(c.get(), log_sa->get(), log_sa->length) == 0) {
                const int one = 1;
                ::setsockopt(c.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                conn = std::move(c);
                connected_once = true;
            }
        }
        pollfd fds[3] = {{hb->fd(), POLLIN, 0}, {conn.valid() ? conn.get() : -1, POLLIN, 0},
                         {listener.valid() && !conn.valid() ? listener.get() : -1, POLLIN, 0}};
        ::poll(fds, 3, 5);
        const Time t = monotonic_us();
        if (fds[2].revents & POLLIN) {
            conn.reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        }
        if (fds[0].revents & POLLIN)
            for (const auto& msg : hb->receive()) {
                ++heartbeats;
                perform(r.step(t, Received{msg}), t);
            }
        if (conn.valid() && (fds[1].revents & (POLLIN | POLLHUP))) {
            std::uint8_t buf[4096];
            const ssize_t n = ::recv(conn.get(), buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0)
                conn.reset();
            else if (n > 0)
                inbuf.insert(inbuf.end(), buf, buf + n);
            while (inbuf.size() >= kRecord) {
                const std::uint8_t* p = inbuf.data();
                Message m = p[0] == 1 ? Message{LogMsg{get64(p + 1), get64(p + 9), get64(p + 17), get64(p + 25)}}
                                      : Message{AckMsg{get64(p + 1), get64(p + 9), get64(p + 17)}};
                inbuf.erase(inbuf.begin(), inbuf.begin() + kRecord);
                ++log_records;
                perform(r.step(t, Received{m}), t);
            }
        }
        if (primary && t - last_vm >= 10'000) {
            last_vm = t;
            perform(r.step(t, VmLogged{++next_entry}), t);
        }
        perform(r.step(t, Tick{}), t);
    }
    std::cout << R"({"event":"done","role":")" << role << R"(","suspected":)" << (suspected ? "true" : "false")
              << R"(,"heartbeats":)" << heartbeats
              << R"(,"log_records":)" << log_records << R"(,"rejected":)" << hb->rejected().size() << "}" << std::endl;
    return 0;
}
