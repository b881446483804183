// Heartbeat encoding and authentication; see heartbeat.hpp.
#include "xenft/detector/heartbeat.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "xenft/common/unique_fd.hpp"

namespace xenft::detector {

namespace {

constexpr std::uint8_t kMagic[4] = {'X', 'F', 'H', 'B'};
constexpr std::uint8_t kVersion = 1;
constexpr std::size_t kMacOffset = kHeartbeatBytes - 32;

class Writer {
public:
    explicit Writer(std::uint8_t* p) : p_(p) {}
    void u8(std::uint8_t v) { *p_++ = v; }
    void u32(std::uint32_t v) { le(v, 4); }
    void u64(std::uint64_t v) { le(v, 8); }
    void bytes(const std::uint8_t* b, std::size_t n)
    {
        std::memcpy(p_, b, n);
        p_ += n;
    }

private:
    void le(std::uint64_t v, int n)
    {
        for (int i = 0; i < n; ++i)
            *p_++ = static_cast<std::uint8_t>(v >> (8 * i));
    }
    std::uint8_t* p_;
};

class Reader {
public:
    explicit Reader(const std::uint8_t* p) : p_(p) {}
    std::uint8_t u8() { return *p_++; }
    std::uint32_t u32() { return static_cast<std::uint32_t>(le(4)); }
    std::uint64_t u64() { return le(8); }
    void skip(std::size_t n) { p_ += n; }

private:
    std::uint64_t le(int n)
    {
        std::uint64_t v = 0;
        for (int i = 0; i < n; ++i)
            v |= static_cast<std::uint64_t>(*p_++) << (8 * i);
        return v;
    }
    const std::uint8_t* p_;
};

std::array<std::uint8_t, 32> hmac_sha256(const HeartbeatKey& key, const std::uint8_t* data, std::size_t n)
{
    std::array<std::uint8_t, 32> mac{};
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data, n, mac.data(), &len);
    return mac;
}

} // namespace

std::array<std::uint8_t, kHeartbeatBytes> encode_heartbeat(const Heartbeat& hb, const HeartbeatKey& key)
{
    std::array<std::uint8_t, kHeartbeatBytes> out{};
    Writer w(out.data());
    w.bytes(kMagic, 4);
    w.u8(kVersion);
    w.u8(0);
    w.u64(hb.vm_id);
    w.u32(hb.sender);
    w.u64(hb.msg.epoch);
    w.u8(static_cast<std::uint8_t>(hb.msg.role));
    w.u64(hb.nonce);
    w.u64(hb.counter);
    w.u64(hb.msg.sent_at);
    w.u64(hb.msg.echo);
    w.u64(hb.msg.position);
    const auto mac = hmac_sha256(key, out.data(), kMacOffset);
    w.bytes(mac.data(), mac.size());
    return out;
}

Expected<Heartbeat, std::string> decode_heartbeat(std::span<const std::uint8_t> bytes, const HeartbeatKey& key)
{
    if (bytes.size() != kHeartbeatBytes)
        return unexpected("heartbeat of " + std::to_string(bytes.size()) + " bytes, expected " +
                          std::to_string(kHeartbeatBytes));
    if (!std::equal(bytes.begin(), bytes.begin() + 4, kMagic))
        return unexpected(std::string("heartbeat with a bad magic"));
    if (bytes[4] != kVersion)
        return unexpected("heartbeat version " + std::to_string(bytes[4]) + ", this build reads " +
                          std::to_string(kVersion));
    if (bytes[5] != 0)
        return unexpected("heartbeat with reserved flags " + std::to_string(bytes[5]));
    const auto mac = hmac_sha256(key, bytes.data(), kMacOffset);
    if (CRYPTO_memcmp(mac.data(), bytes.data() + kMacOffset, mac.size()) != 0)
        return unexpected(std::string("heartbeat failed authentication (wrong key or forged)"));

    Reader r(bytes.data() + 6);
    Heartbeat hb;
    hb.vm_id = r.u64();
    hb.sender = r.u32();
    hb.msg.epoch = r.u64();
    const std::uint8_t role = r.u8();
    if (role > static_cast<std::uint8_t>(protocol::Role::ended))
        return unexpected("heartbeat with unknown role " + std::to_string(role));
    hb.msg.role = static_cast<protocol::Role>(role);
    hb.nonce = r.u64();
    hb.counter = r.u64();
    hb.msg.sent_at = r.u64();
    hb.msg.echo = r.u64();
    hb.msg.position = r.u64();
    return hb;
}

Expected<HeartbeatKey, std::string> load_heartbeat_key(const std::string& path)
{
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid())
        return unexpected("heartbeat key " + path + ": cannot open: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
        return unexpected("heartbeat key " + path + ": cannot stat: " + std::strerror(errno));
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
        return unexpected("heartbeat key " + path + ": readable by group or others (chmod 600 it)");
    std::uint8_t buf[130];
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0)
        return unexpected("heartbeat key " + path + ": read failed: " + std::strerror(errno));
    HeartbeatKey key{};
    if (n == static_cast<ssize_t>(kHeartbeatKeyBytes)) {
        std::copy(buf, buf + kHeartbeatKeyBytes, key.begin());
        return key;
    }
    std::size_t len = static_cast<std::size_t>(n);
    if (len > 0 && buf[len - 1] == '\n')
        --len;
    auto nibble = [](std::uint8_t c) -> int {
        if (c >= '0' && c <= '9')
            return c - '0';
        if (c >= 'a' && c <= 'f')
            return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
            return c - 'A' + 10;
        return -1;
    };
    if (len != 2 * kHeartbeatKeyBytes)
        return unexpected("heartbeat key " + path + ": expected 32 bytes or 64 hex digits");
    for (std::size_t i = 0; i < kHeartbeatKeyBytes; ++i) {
        const int hi = nibble(buf[2 * i]), lo = nibble(buf[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return unexpected("heartbeat key " + path + ": not a hex digit at offset " + std::to_string(2 * i));
        key[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return key;
}

bool ReplayGuard::accept(std::uint64_t nonce, std::uint64_t counter)
{
    for (auto it = seen_.begin(); it != seen_.end(); ++it) {
        if (it->first != nonce)
            continue;
        if (counter <= it->second)
            return false;
        it->second = counter;
        return true;
    }
    seen_.emplace_front(nonce, counter);
    if (seen_.size() > kNonces)
        seen_.pop_back();
    return true;
}

} // namespace xenft::detector
