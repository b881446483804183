// TLS 1.3 with mutual X.509 authentication for the logging channel (OpenSSL). Each host
// presents its certificate; the peer's is verified against a CA or a pinned SHA-256
// fingerprint, and its name must be the configured peer identity. There is no plaintext mode.
// Streams are non-blocking: every call says whether it is done or waits for the socket.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"
#include "xenft/common/unique_fd.hpp"

namespace xenft::channel {

struct TlsConfig {
    std::string cert_file;          // this host's certificate (PEM, may carry its chain)
    std::string key_file;           // this host's private key (PEM)
    std::string ca_file;            // trust the peer if a CA in this file signed it, or
    std::string pinned_fingerprint; // trust exactly this certificate ("SHA256:<64 hex>")
    std::string peer_name;          // the name (CN/DNS SAN) the peer's certificate must carry
};

class TlsContext {
public:
    enum class Side { client, server };
    // Loads and checks the files; the error names the file and the cause.
    static Expected<TlsContext, std::string> create(const TlsConfig& cfg, Side side);

    SSL_CTX* get() const noexcept { return ctx_.get(); }
    const TlsConfig& config() const noexcept { return *cfg_; }
    Side side() const noexcept { return side_; }

private:
    struct CtxFree {
        void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
    };
    TlsContext(std::unique_ptr<SSL_CTX, CtxFree> ctx, std::unique_ptr<TlsConfig> cfg, Side side)
        : ctx_(std::move(ctx)), cfg_(std::move(cfg)), side_(side)
    {
    }
    std::unique_ptr<SSL_CTX, CtxFree> ctx_;
    std::unique_ptr<TlsConfig> cfg_; // stable address: the verify callback reads it
    Side side_;
};

class TlsStream {
public:
    enum class Io { done, want_read, want_write, closed, error };

    // Takes a connected non-blocking socket.
    TlsStream(const TlsContext& ctx, UniqueFd fd);

    int fd() const noexcept { return fd_.get(); }
    Io handshake();
    // Appends whatever is readable now (up to max bytes) to out.
    Io read(std::vector<std::uint8_t>& out, std::size_t max);
    // Queues bytes; flush() writes as much as the socket takes.
    void queue(const std::uint8_t* data, std::size_t n) { out_.insert(out_.end(), data, data + n); }
    Io flush();
    std::size_t pending() const noexcept { return out_.size() - out_pos_; }
    // Why the last call returned error (verification result, TLS alert, socket error).
    const std::string& error() const noexcept { return error_; }

private:
    struct SslFree {
        void operator()(SSL* s) const noexcept { SSL_free(s); }
    };
    Io status(int ret, const char* what);

    UniqueFd fd_;
    std::unique_ptr<SSL, SslFree> ssl_;
    std::vector<std::uint8_t> out_;
    std::size_t out_pos_ = 0;
    std::string error_;
};

} // namespace xenft::channel
