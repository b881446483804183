// Test fixtures for running the bare-metal test guest on the KVM backend: a VM (machine +
// backend + clock), a real TAP interface with an address on the host side, a disk image file,
// and a client of the guest's UDP key-value service with a checker for the history it saw.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "xenft/backends/kvm/kvm_backend.hpp"
#include "xenft/devices/host_io.hpp"
#include "xenft/engine/machine.hpp"

namespace xenft::testing {

inline constexpr std::uint64_t kGuestMemory = 16u << 20;

inline std::string guest_path()
{
    const char* p = std::getenv("XENFT_GUEST");
    return p ? p : "tests/guest/xenft-guest.elf";
}

inline bool have_kvm()
{
    const int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    ::close(fd);
    return true;
}

// Creating a TAP needs /dev/net/tun and CAP_NET_ADMIN (root in CI).
inline bool have_tap()
{
    auto tap = devices::TapDevice::open("xftprobe" + std::to_string(::getpid() % 10000));
    return tap.has_value();
}

// One VM with its devices. Time comes from the host's monotonic clock, counted from creation.
struct Vm {
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    devices::TimeSource now = [this] {
        return static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
    };
    std::unique_ptr<engine::Machine> machine;
    std::string error;

    explicit Vm(const engine::MachineSpec& spec = {}, const std::string& cmdline = {})
    {
        auto img = engine::load_pvh_image(guest_path(), kGuestMemory);
        if (!img) {
            error = img.error();
            return;
        }
        auto b = backends::KvmBackend::create(*img, kGuestMemory, cmdline);
        if (!b) {
            error = b.error();
            return;
        }
        machine = std::make_unique<engine::Machine>(std::move(b).value(), now, spec);
    }
};

// A TAP interface named xft<pid>n<n> with 10.<p>.<n>.1/24 on the host side, p from the
// process id so that tests running side by side do not share a subnet; the guest is
// 10.<p>.<n>.2. Removed when the fixture ends (the last descriptor closes).
class TapNet {
public:
    TapNet()
    {
        static std::atomic<int> counter{0};
        const int n = 1 + counter++ % 250;
        name_ = "xft" + std::to_string(::getpid() % 100000) + "n" + std::to_string(n);
        const std::string net = "10." + std::to_string(64 + ::getpid() % 128) + "." + std::to_string(n) + ".";
        host_ip_ = net + "1";
        guest_ip_ = net + "2";
        auto tap = devices::TapDevice::open(name_);
        if (!tap) {
            error_ = tap.error();
            return;
        }
        tap_ = std::make_unique<devices::TapDevice>(std::move(tap).value());
        const std::string cmd = "ip addr add " + host_ip_ + "/24 dev " + name_ + " && ip link set " + name_ + " up";
        if (std::system(cmd.c_str()) != 0)
            error_ = "cannot configure " + name_ + " (" + cmd + ")";
    }

    const std::string& error() const noexcept { return error_; }
    devices::TapDevice* tap() noexcept { return tap_.get(); }
    const std::string& host_ip() const noexcept { return host_ip_; }
    const std::string& guest_ip() const noexcept { return guest_ip_; }
    std::string cmdline() const { return "ip=" + guest_ip_; }

private:
    std::string name_, host_ip_, guest_ip_, error_;
    std::unique_ptr<devices::TapDevice> tap_;
};

// A zero-filled disk image in /tmp, removed at the end.
class DiskImage {
public:
    explicit DiskImage(std::uint64_t bytes)
    {
        char tmpl[] = "/tmp/xenft-disk-XXXXXX";
        const int fd = ::mkstemp(tmpl);
        path_ = tmpl;
        if (fd >= 0) {
            if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0)
                path_.clear();
            ::close(fd);
        }
    }
    ~DiskImage()
    {
        if (!path_.empty())
            ::unlink(path_.c_str());
    }
    const std::string& path() const noexcept { return path_; }

private:
    std::string path_;
};

// ----- The guest's key-value service (tests/guest/service.c) -----------------------------------

struct KvCall {
    std::uint32_t client = 0, seq = 0;
    std::uint8_t op = 0, key = 0; // op 1 ADD, 2 GET
    std::uint64_t arg = 0;
    bool answered = false;
    std::uint8_t status = 0;
    std::uint64_t version = 0, value = 0;
};

class KvClient {
public:
    KvClient(const std::string& local_ip, const std::string& server_ip, std::uint32_t client) : client_(client)
    {
        fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in local{};
        local.sin_family = AF_INET;
        ::inet_pton(AF_INET, local_ip.c_str(), &local.sin_addr);
        (void)::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local);
        server_.sin_family = AF_INET;
        server_.sin_port = htons(7000);
        ::inet_pton(AF_INET, server_ip.c_str(), &server_.sin_addr);
    }
    ~KvClient() { ::close(fd_); }
    KvClient(const KvClient&) = delete;
    KvClient& operator=(const KvClient&) = delete;

    // Sends the request until answered (same seq each time: the service applies it once) or
    // until `tries` timeouts of `wait` each.
    KvCall call(std::uint8_t op, std::uint8_t key, std::uint64_t arg, std::chrono::milliseconds wait, int tries)
    {
        KvCall c{client_, ++seq_, op, key, arg};
        std::uint8_t q[24] = {'X', 'F', 'T', '1'};
        std::memcpy(q + 4, &c.client, 4);
        std::memcpy(q + 8, &c.seq, 4);
        q[12] = op, q[13] = key;
        std::memcpy(q + 16, &arg, 8);
        timeval tv{0, static_cast<suseconds_t>(std::chrono::microseconds(wait).count())};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        for (int t = 0; t < tries && !c.answered; ++t) {
            (void)::sendto(fd_, q, sizeof q, 0, reinterpret_cast<const sockaddr*>(&server_), sizeof server_);
            const auto deadline = std::chrono::steady_clock::now() + wait;
            while (!c.answered && std::chrono::steady_clock::now() < deadline) {
                std::uint8_t r[64];
                const ssize_t n = ::recv(fd_, r, sizeof r, 0);
                if (n < 0)
                    break;
                std::uint32_t rc = 0, rs = 0;
                std::memcpy(&rc, r + 4, 4);
                std::memcpy(&rs, r + 8, 4);
                if (n != 32 || std::memcmp(r, "XFR1", 4) != 0 || rc != c.client || rs != c.seq)
                    continue; // a late answer to an earlier try of an earlier request
                c.answered = true;
                c.status = r[14];
                std::memcpy(&c.version, r + 16, 8);
                std::memcpy(&c.value, r + 24, 8);
            }
        }
        return c;
    }

private:
    int fd_ = -1;
    std::uint32_t client_;
    std::uint32_t seq_ = 0;
    sockaddr_in server_{};
};

// Whether the answered calls fit one sequential history of a service that started with every
// key at zero: ADD versions are 1..N with no gap (every applied ADD was answered), each ADD's
// value is the key's previous value plus its argument, and each GET saw the value the key had
// at the version it reports. Returns what is wrong, or nothing.
inline std::optional<std::string> check_history(const std::vector<KvCall>& calls)
{
    std::map<std::uint64_t, const KvCall*> adds;
    for (const auto& c : calls)
        if (c.answered && c.status == 0 && c.op == 1 && !adds.emplace(c.version, &c).second) {
            const KvCall& first = *adds[c.version];
            return "two ADDs answered with version " + std::to_string(c.version) + ": client " +
                   std::to_string(first.client) + " seq " + std::to_string(first.seq) + " key " +
                   std::to_string(first.key) + " value " + std::to_string(first.value) + ", and client " +
                   std::to_string(c.client) + " seq " + std::to_string(c.seq) + " key " + std::to_string(c.key) +
                   " value " + std::to_string(c.value);
        }
    std::uint64_t expect_version = 1;
    std::map<std::uint8_t, std::uint64_t> values;
    std::map<std::uint64_t, std::map<std::uint8_t, std::uint64_t>> at_version{{0, {}}};
    for (const auto& [v, c] : adds) {
        if (v != expect_version)
            return "ADD versions jump from " + std::to_string(expect_version - 1) + " to " + std::to_string(v);
        ++expect_version;
        values[c->key] += c->arg;
        if (values[c->key] != c->value)
            return "ADD version " + std::to_string(v) + " on key " + std::to_string(c->key) + " answered " +
                   std::to_string(c->value) + ", expected " + std::to_string(values[c->key]);
        at_version[v] = values;
    }
    for (const auto& c : calls) {
        if (!c.answered || c.op != 2 || c.status != 0)
            continue;
        auto it = at_version.upper_bound(c.version);
        if (it == at_version.begin())
            return "GET reports version " + std::to_string(c.version) + " before any history";
        --it;
        if (it->first != c.version)
            return "GET reports version " + std::to_string(c.version) + ", which no ADD produced";
        const auto k = it->second.find(c.key);
        const std::uint64_t expected = k == it->second.end() ? 0 : k->second;
        if (c.value != expected)
            return "GET of key " + std::to_string(c.key) + " at version " + std::to_string(c.version) + " answered " +
                   std::to_string(c.value) + ", expected " + std::to_string(expected);
    }
    return std::nullopt;
}

} // namespace xenft::testing
