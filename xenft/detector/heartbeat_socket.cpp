#include "xenft/detector/heartbeat_socket.hpp"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace xenft::detector {

Expected<HeartbeatSocket, std::string> HeartbeatSocket::open(const HeartbeatSocketConfig& cfg)
{
    UniqueFd fd(::socket(cfg.local.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid())
        return unexpected("heartbeat socket: " + std::string(std::strerror(errno)));
    if (::bind(fd.get(), cfg.local.get(), cfg.local.length) != 0)
        return unexpected("heartbeat socket: cannot bind " + cfg.local.to_string() + ": " + std::strerror(errno));
    std::uint64_t nonce = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&nonce), sizeof nonce) != 1)
        return unexpected(std::string("heartbeat socket: no randomness for the sender nonce"));
    return HeartbeatSocket(cfg, std::move(fd), nonce);
}

std::string HeartbeatSocket::send(const protocol::HeartbeatMsg& msg)
{
    const Heartbeat hb{cfg_.vm_id, cfg_.self, nonce_, ++counter_, msg};
    const auto bytes = encode_heartbeat(hb, cfg_.key);
    if (::sendto(fd_.get(), bytes.data(), bytes.size(), 0, cfg_.peer.get(), cfg_.peer.length) < 0)
        return "heartbeat to " + cfg_.peer.to_string() + ": " + std::strerror(errno);
    return {};
}

std::vector<protocol::HeartbeatMsg> HeartbeatSocket::receive()
{
    std::vector<protocol::HeartbeatMsg> out;
    for (;;) {
        std::uint8_t buf[512];
        sockaddr_storage from{};
        socklen_t from_len = sizeof from;
        const ssize_t n = ::recvfrom(fd_.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
        if (n < 0)
            break; // EAGAIN: drained (other errors are transient ICMP reports on UDP)
        if (!cfg_.peer.same_host(from)) {
            reject("from an address that is not the peer");
            continue;
        }
        auto hb = decode_heartbeat(std::span<const std::uint8_t>(buf, static_cast<std::size_t>(n)), cfg_.key);
        if (!hb) {
            reject(hb.error());
            continue;
        }
        if (hb->vm_id != cfg_.vm_id || hb->sender != cfg_.peer_id) {
            reject("for another VM or from another host");
            continue;
        }
        if (!guard_.accept(hb->nonce, hb->counter)) {
            reject("replayed");
            continue;
        }
        out.push_back(hb->msg);
    }
    return out;
}

} // namespace xenft::detector
