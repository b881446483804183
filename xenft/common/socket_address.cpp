#include "xenft/common/socket_address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace xenft {

Expected<SocketAddress, std::string> SocketAddress::parse(const std::string& text)
{
    std::string host, port;
    if (!text.empty() && text[0] == '[') {
        const auto close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return unexpected("address \"" + text + "\": expected [IPv6]:PORT");
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string::npos)
            return unexpected("address \"" + text + "\": expected HOST:PORT");
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    char* end = nullptr;
    const unsigned long p = std::strtoul(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p > 65535)
        return unexpected("address \"" + text + "\": port \"" + port + "\" is not 0..65535");

    SocketAddress a;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<std::uint16_t>(p));
        a.length = sizeof(sockaddr_in);
    } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<std::uint16_t>(p));
        a.length = sizeof(sockaddr_in6);
    } else {
        return unexpected("address \"" + text + "\": \"" + host + "\" is not a numeric IPv4 or IPv6 address");
    }
    return a;
}

SocketAddress SocketAddress::from(const sockaddr_storage& s, socklen_t len)
{
    SocketAddress a;
    a.storage = s;
    a.length = len;
    return a;
}

bool SocketAddress::same_host(const sockaddr_storage& other) const noexcept
{
    if (other.ss_family != storage.ss_family)
        return false;
    if (storage.ss_family == AF_INET)
        return reinterpret_cast<const sockaddr_in&>(other).sin_addr.s_addr ==
               reinterpret_cast<const sockaddr_in&>(storage).sin_addr.s_addr;
    if (storage.ss_family == AF_INET6)
        return std::memcmp(&reinterpret_cast<const sockaddr_in6&>(other).sin6_addr,
                           &reinterpret_cast<const sockaddr_in6&>(storage).sin6_addr, sizeof(in6_addr)) == 0;
    return false;
}

std::string SocketAddress::to_string() const
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (family() == AF_INET) {
        const auto& v4 = reinterpret_cast<const sockaddr_in&>(storage);
        inet_ntop(AF_INET, &v4.sin_addr, host, sizeof host);
        return std::string(host) + ":" + std::to_string(ntohs(v4.sin_port));
    }
    if (family() == AF_INET6) {
        const auto& v6 = reinterpret_cast<const sockaddr_in6&>(storage);
        inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof host);
        return "[" + std::string(host) + "]:" + std::to_string(ntohs(v6.sin6_port));
    }
    return "?";
}

} // namespace xenft
