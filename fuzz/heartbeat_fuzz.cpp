// libFuzzer target for the heartbeat decoder. Raw input exercises the checks before the MAC;
// input re-MACed with the fuzzer's key reaches the field decoding behind it, and whatever
// decodes must encode back to the same bytes.
#include <cstdlib>
#include <cstring>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "xenft/detector/heartbeat.hpp"

using namespace xenft::detector;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    HeartbeatKey key;
    key.fill(0x42);
    (void)decode_heartbeat(std::span<const std::uint8_t>(data, size), key);
    if (size != kHeartbeatBytes)
        return 0;
    std::uint8_t buf[kHeartbeatBytes];
    std::memcpy(buf, data, size);
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), buf, kHeartbeatBytes - 32, buf + kHeartbeatBytes - 32, &len);
    auto hb = decode_heartbeat(std::span<const std::uint8_t>(buf, size), key);
    if (hb && std::memcmp(encode_heartbeat(*hb, key).data(), buf, size) != 0)
        std::abort();
    return 0;
}
