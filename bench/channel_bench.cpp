// Logging-channel benchmark, over real TLS 1.3 on loopback:
// - throughput_mb_s: uncompressed log bytes per second through TLS + zstd, against zstd -1's
//   own compression speed on the same bytes in this run;
// - ack_rtt_p50_us / p99: one entry, forced flush, ack; against a plain TCP ping-pong;
// - compression_ratio_idle: an idle guest's log batched as the default batch_delay does, raw /
//   on the wire; and idle_log_mbit_s, that log's bandwidth against VMware FT's 1.43 Mbit/s;
// - ack_bytes_zstd: what compressing the ack direction would cost per ack, against 14 raw bytes.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>
#include <optional>
#include <thread>

#include "bench/report.hpp"
#include "tests/tls_fixture.hpp"
#include "xenft/channel/channel.hpp"
#include "xenft/logformat/stream.hpp"
#include "xenft/logformat/synthetic.hpp"

using namespace xenft;
using namespace xenft::channel;
using logformat::Entry;

namespace {

constexpr int kRuns = 5;

// A loaded guest: timer and clock entries, plus incoming frames that look like traffic (a
// repeated header, a varying body) and outputs.
std::vector<Entry> load_log(std::uint64_t n)
{
    std::vector<Entry> log;
    log.reserve(n);
    std::uint64_t x = 88172645463325252ull;
    for (std::uint64_t seq = 1; seq <= n; ++seq) {
        Entry e{1, seq, 0, seq * 3, logformat::Interrupt{0xec, logformat::IrqSource::lapic_timer}};
        if (seq % 4 == 1)
            e.payload = logformat::IoRead{logformat::IoSpace::mmio, 8, 0xfeb00000, seq * 997'000};
        if (seq % 8 == 3) {
            std::vector<std::uint8_t> frame(600);
            const char hdr[] = "GET /kv/item HTTP/1.1\r\nHost: guest\r\nUser-Agent: wrk\r\n\r\n";
            std::copy(hdr, hdr + sizeof hdr - 1, frame.begin());
            for (std::size_t i = sizeof hdr; i < frame.size(); ++i) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                frame[i] = static_cast<std::uint8_t>('a' + x % 16);
            }
            e.payload = logformat::NetRx{0, std::move(frame)};
        }
        if (seq % 8 == 5)
            e.payload = logformat::Output{logformat::OutputKind::net_tx, 0, seq};
        log.push_back(std::move(e));
    }
    return log;
}

ChannelConfig cfg(std::uint16_t port, std::uint32_t self, std::uint32_t peer)
{
    ChannelConfig c;
    c.address = *SocketAddress::parse("127.0.0.1:" + std::to_string(port));
    c.vm_id = 1;
    c.self = self;
    c.peer = peer;
    c.epoch = 1;
    return c;
}

struct Endpoints {
    testing::TlsFixture& f;
    TlsContext server, client;
    explicit Endpoints(testing::TlsFixture& fx)
        : f(fx), server(TlsContext::create(fx.backup(), TlsContext::Side::server).value()),
          client(TlsContext::create(fx.primary(), TlsContext::Side::client).value())
    {
    }
};

// A connected pair; the backup pumps and replays on its own thread until the session ends.
struct Session {
    std::optional<LogReceiver> rx;
    std::optional<LogSender> tx;
    std::atomic<bool> done{false};
    std::thread backup;

    explicit Session(Endpoints& ep)
    {
        rx.emplace(LogReceiver::listen(cfg(0, 2, 1), ep.server).value());
        tx.emplace(cfg(rx->port(), 1, 2), ep.client);
        backup = std::thread([this] {
            while (!done) {
                rx->pump(1);
                while (rx->pop()) {
                }
            }
        });
        while (!tx->streaming())
            tx->pump(1);
    }
    ~Session()
    {
        done = true;
        backup.join();
    }
};

// The primary appends and pumps on one thread (encoding, compression, TLS), the backup
// receives and replays on the other. (With the VM's appends on a third thread, two cores
// only get busier: measured lower here.)
double throughput_once(Endpoints& ep, const std::vector<Entry>& log)
{
    Session s(ep);
    LogSender& tx = *s.tx;
    const auto start = std::chrono::steady_clock::now();
    std::size_t i = 0;
    // Batches of 1,024 entries, as a busy guest's log arrives.
    while (tx.acked() < log.size()) {
        for (std::size_t b = 0; b < 1024 && i < log.size() && tx.append(log[i]); ++b)
            ++i;
        tx.flush(false);
        tx.pump(0);
    }
    return static_cast<double>(tx.raw_bytes_sent()) / 1e6 / bench::seconds_since(start);
}

std::vector<double> ack_rtts(Endpoints& ep, int n)
{
    Session s(ep);
    LogSender& tx = *s.tx;
    std::vector<double> us;
    for (std::uint64_t seq = 1; seq <= static_cast<std::uint64_t>(n); ++seq) {
        const auto t = std::chrono::steady_clock::now();
        tx.append(Entry{1, seq, 0, seq, logformat::Output{logformat::OutputKind::net_tx, 0, seq}});
        tx.flush(true);
        while (tx.acked() < seq)
            tx.pump(1);
        us.push_back(bench::seconds_since(t) * 1e6);
    }
    return us;
}

std::vector<double> tcp_pingpong(int n)
{
    int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
    auto a = *SocketAddress::parse("127.0.0.1:0");
    ::bind(lfd, a.get(), a.length);
    ::listen(lfd, 1);
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    ::getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);
    std::thread echo([&] {
        const int c = ::accept(lfd, nullptr, nullptr);
        const int one = 1;
        ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char buf[14];
        while (::recv(c, buf, sizeof buf, MSG_WAITALL) == sizeof buf)
            ::send(c, buf, sizeof buf, 0);
        ::close(c);
    });
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::connect(s, reinterpret_cast<sockaddr*>(&sa), len);
    std::vector<double> us;
    char buf[14] = {};
    for (int i = 0; i < n; ++i) {
        const auto t = std::chrono::steady_clock::now();
        ::send(s, buf, sizeof buf, 0);
        ::recv(s, buf, sizeof buf, MSG_WAITALL);
        us.push_back(bench::seconds_since(t) * 1e6);
    }
    ::close(s);
    echo.join();
    ::close(lfd);
    return us;
}

double percentile(std::vector<double> v, double p)
{
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

} // namespace

int main(int argc, char** argv)
{
    const std::string dir = bench::out_dir(argc, argv);
    bench::Report report("channel");
    testing::TlsFixture fixture;
    Endpoints ep(fixture);

    // Throughput against zstd -1 on the same bytes.
    const auto log = load_log(400'000);
    const auto raw = logformat::encode_frames(log, 1024);
    std::vector<double> through, zstd_speed;
    std::vector<std::uint8_t> z(ZSTD_compressBound(raw.size()));
    for (int r = 0; r < kRuns; ++r) {
        through.push_back(throughput_once(ep, log));
        const auto t = std::chrono::steady_clock::now();
        const std::size_t zn = ZSTD_compress(z.data(), z.size(), raw.data(), raw.size(), 1);
        zstd_speed.push_back(static_cast<double>(raw.size()) / 1e6 / bench::seconds_since(t));
        if (r == 0)
            std::cout << "channel: " << log.size() << " entries, " << raw.size() << " raw bytes, zstd -1 ratio "
                      << static_cast<double>(raw.size()) / static_cast<double>(zn) << "; median of " << kRuns << " runs\n";
    }
    report.add("throughput_mb_s", bench::median(through), "MB/s", bench::median(zstd_speed));

    // Output commit: one entry, forced flush, ack; against a TCP ping-pong.
    std::vector<double> rtt, ping;
    for (int r = 0; r < kRuns; ++r) {
        auto a = ack_rtts(ep, 1000);
        rtt.insert(rtt.end(), a.begin(), a.end());
        auto b = tcp_pingpong(1000);
        ping.insert(ping.end(), b.begin(), b.end());
    }
    report.add("ack_rtt_p50_us", percentile(rtt, 0.5), "us", percentile(ping, 0.5));
    report.add("ack_rtt_p99_us", percentile(rtt, 0.99), "us", percentile(ping, 0.99));

    // An idle guest (1 kHz timer, two entries a tick) for 10 s, flushed every batch_delay.
    const auto idle = logformat::idle_guest_log(10'000, 1000, 1);
    const std::size_t per_batch = 2 * static_cast<std::size_t>(ChannelConfig{}.batch_delay / 1000);
    LogCompressor c(1);
    std::vector<std::uint8_t> wire;
    std::size_t raw_idle = 0;
    for (std::size_t i = 1; i < idle.size(); i += per_batch) {
        const auto batch = logformat::encode_frames(std::span(idle).subspan(i, std::min(per_batch, idle.size() - i)), per_batch);
        raw_idle += batch.size();
        c.compress(batch, false, wire);
    }
    report.add("compression_ratio_idle", static_cast<double>(raw_idle) / static_cast<double>(wire.size()), "x", std::nullopt);
    report.add("idle_log_mbit_s", static_cast<double>(wire.size()) * 8 / 10 / 1e6, "Mbit/s", 1.43);

    // Would compressing acks help? A zstd stream flushed per ack, against the raw 14 bytes.
    std::vector<std::uint8_t> acks, zacks(ZSTD_CStreamOutSize());
    std::unique_ptr<ZSTD_CCtx, ZstdCFree> cctx(ZSTD_createCCtx());
    std::size_t zbytes = 0;
    for (std::uint64_t a = 1; a <= 10'000; ++a) {
        acks.clear();
        append_message(acks, Ack{a * 37});
        ZSTD_inBuffer in{acks.data(), acks.size(), 0};
        ZSTD_outBuffer out{zacks.data(), zacks.size(), 0};
        ZSTD_compressStream2(cctx.get(), &out, &in, ZSTD_e_flush);
        zbytes += out.pos;
    }
    report.add("ack_bytes_zstd", static_cast<double>(zbytes) / 10'000, "bytes", 14.0);
    return report.write(dir) ? 0 : 1;
}
