// The UDP side of the failure detector: sends this replica's heartbeats to the peer and turns
// the peer's datagrams into protocol heartbeats, after checking source address, authentication,
// protected VM, sender and freshness. Rejected datagrams are counted by reason, never fatal.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "xenft/common/socket_address.hpp"
#include "xenft/common/unique_fd.hpp"
#include "xenft/detector/heartbeat.hpp"

namespace xenft::detector {

struct HeartbeatSocketConfig {
    SocketAddress local;   // where to listen
    SocketAddress peer;    // where the peer listens (and the only source accepted)
    std::uint64_t vm_id = 0;
    protocol::HostId self = 0;
    protocol::HostId peer_id = 0;
    HeartbeatKey key{};
};

class HeartbeatSocket {
public:
    // Binds the local address; the error names the address and the cause.
    static Expected<HeartbeatSocket, std::string> open(const HeartbeatSocketConfig& cfg);

    int fd() const noexcept { return fd_.get(); }

    // Sends one heartbeat; a failed send is returned as text (the peer may be unreachable,
    // which the detector will notice by itself).
    std::string send(const protocol::HeartbeatMsg& msg);

    // Reads every datagram waiting on the socket (non-blocking) and returns the accepted ones.
    std::vector<protocol::HeartbeatMsg> receive();

    // Rejections so far, by reason ("failed authentication", "replayed", ...).
    const std::map<std::string, std::uint64_t>& rejected() const noexcept { return rejected_; }

private:
    HeartbeatSocket(const HeartbeatSocketConfig& cfg, UniqueFd fd, std::uint64_t nonce)
        : cfg_(cfg), fd_(std::move(fd)), nonce_(nonce)
    {
    }
    void reject(const std::string& why) { ++rejected_[why]; }

    HeartbeatSocketConfig cfg_;
    UniqueFd fd_;
    std::uint64_t nonce_;
    std::uint64_t counter_ = 0;
    ReplayGuard guard_;
    std::map<std::string, std::uint64_t> rejected_;
};

} // namespace xenft::detector
