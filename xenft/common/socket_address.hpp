// Numeric socket addresses ("10.0.0.2:7000", "[fd00::2]:7000") for the daemon's peers. No DNS:
// an FT pair must not depend on a resolver being up while it fails over.
#pragma once

#include <sys/socket.h>

#include <string>

#include "xenft/common/expected.hpp"

namespace xenft {

struct SocketAddress {
    sockaddr_storage storage{};
    socklen_t length = 0;

    int family() const noexcept { return storage.ss_family; }
    const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&storage); }
    // Same host address (the port may differ).
    bool same_host(const sockaddr_storage& other) const noexcept;
    std::string to_string() const;

    static Expected<SocketAddress, std::string> parse(const std::string& text);
    static SocketAddress from(const sockaddr_storage& s, socklen_t len);
};

} // namespace xenft
