// Heartbeat datagrams of the failure detector: wire format, HMAC authentication and replay
// protection. The failure detector proper (silence on every kind of traffic for T) lives in the
// protocol core; this module gets heartbeats across a network that may forge, replay, reorder
// or corrupt them.
//
// Wire format, version 1, 99 bytes, little-endian:
//   magic "XFHB" | version u8 | flags u8 (0) | vm_id u64 | sender u32 | epoch u64 | role u8 |
//   nonce u64 | counter u64 | sent_at u64 | echo u64 | position u64 | HMAC-SHA256 (32 bytes)
// The HMAC covers every byte before it. nonce is drawn at random when the sender starts and
// counter increases with every heartbeat, so a receiver rejects replays of genuine datagrams.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"
#include "xenft/protocol/replica.hpp"

namespace xenft::detector {

inline constexpr std::size_t kHeartbeatBytes = 99;
inline constexpr std::size_t kHeartbeatKeyBytes = 32;
using HeartbeatKey = std::array<std::uint8_t, kHeartbeatKeyBytes>;

struct Heartbeat {
    std::uint64_t vm_id = 0;
    protocol::HostId sender = 0;
    std::uint64_t nonce = 0;
    std::uint64_t counter = 0;
    protocol::HeartbeatMsg msg;
};

std::array<std::uint8_t, kHeartbeatBytes> encode_heartbeat(const Heartbeat& hb, const HeartbeatKey& key);

// Checks size, magic, version, flags, role and the HMAC (in constant time), in that order.
// The error names what was wrong, never the key.
Expected<Heartbeat, std::string> decode_heartbeat(std::span<const std::uint8_t> bytes, const HeartbeatKey& key);

// Reads a key file: exactly 32 bytes, or 64 hex digits with an optional trailing newline. The
// file must not be readable by group or others.
Expected<HeartbeatKey, std::string> load_heartbeat_key(const std::string& path);

// Rejects heartbeats already seen. Remembers the highest counter of the last kNonces sender
// nonces (one per sender restart), so replaying a genuine old datagram gains nothing.
class ReplayGuard {
public:
    static constexpr std::size_t kNonces = 16;
    // True if (nonce, counter) is new; records it.
    bool accept(std::uint64_t nonce, std::uint64_t counter);

private:
    std::deque<std::pair<std::uint64_t, std::uint64_t>> seen_; // nonce, highest counter; newest first
};

} // namespace xenft::detector
