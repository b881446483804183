#include "xenft/channel/tls.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "xenft/channel/certs.hpp"

namespace xenft::channel {

namespace {

// Chain errors that a pinned fingerprint overrides. Expiry and name mismatches are never
// overridden: a pinned certificate must still be valid and name the peer.
bool chain_trust_error(int err)
{
    switch (err) {
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
        return true;
    default:
        return false;
    }
}

int verify_pinned(int preverify_ok, X509_STORE_CTX* store)
{
    if (preverify_ok)
        return 1;
    const int err = X509_STORE_CTX_get_error(store);
    auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    const auto* cfg = static_cast<const TlsConfig*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
    if (!chain_trust_error(err) || cfg->pinned_fingerprint.empty())
        return 0;
    // The pin is on the peer's own certificate (depth 0), whatever signed it.
    X509* leaf = sk_X509_value(X509_STORE_CTX_get0_chain(store), 0);
    if (!leaf || fingerprint(leaf) != cfg->pinned_fingerprint)
        return 0;
    X509_STORE_CTX_set_error(store, X509_V_OK);
    return 1;
}

} // namespace

Expected<TlsContext, std::string> TlsContext::create(const TlsConfig& cfg, Side side)
{
    if (cfg.ca_file.empty() == cfg.pinned_fingerprint.empty())
        return unexpected(std::string("TLS: configure exactly one of a CA file and a pinned peer fingerprint"));
    if (!cfg.pinned_fingerprint.empty() &&
        (cfg.pinned_fingerprint.rfind("SHA256:", 0) != 0 || cfg.pinned_fingerprint.size() != 7 + 64))
        return unexpected("TLS: pinned fingerprint \"" + cfg.pinned_fingerprint +
                          "\" is not SHA256: followed by 64 hex digits (see xenft cert fingerprint)");
    if (cfg.peer_name.empty())
        return unexpected(std::string("TLS: the peer's name (its certificate identity) is not configured"));

    std::unique_ptr<SSL_CTX, CtxFree> ctx(SSL_CTX_new(side == Side::client ? TLS_client_method() : TLS_server_method()));
    if (!ctx)
        return unexpected("TLS: " + openssl_error());
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_num_tickets(ctx.get(), 0); // no resumption: every connection authenticates in full
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), cfg.cert_file.c_str()) != 1)
        return unexpected("TLS: certificate " + cfg.cert_file + ": " + openssl_error());
    // The key that authenticates this host to the peer: anyone who can read it can be this host.
    struct stat key_stat {};
    if (::stat(cfg.key_file.c_str(), &key_stat) == 0 && (key_stat.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", key_stat.st_mode & 07777u);
        return unexpected("TLS: key " + cfg.key_file + " is readable by group or others (mode " + mode + "): chmod 600 " +
                          cfg.key_file);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), cfg.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            return unexpected("TLS: key " + cfg.key_file + " does not match certificate " + cfg.cert_file);
        }
        return unexpected("TLS: key " + cfg.key_file + ": " + openssl_error());
    }
    if (SSL_CTX_check_private_key(ctx.get()) != 1)
        return unexpected("TLS: key " + cfg.key_file + " does not match certificate " + cfg.cert_file);
    if (!cfg.ca_file.empty() && SSL_CTX_load_verify_locations(ctx.get(), cfg.ca_file.c_str(), nullptr) != 1)
        return unexpected("TLS: CA file " + cfg.ca_file + ": " + openssl_error());

    auto owned = std::make_unique<TlsConfig>(cfg);
    SSL_CTX_set_app_data(ctx.get(), owned.get());
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       cfg.pinned_fingerprint.empty() ? nullptr : verify_pinned);
    // Both sides check the other's name: the server learns which host is connecting.
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx.get());
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (X509_VERIFY_PARAM_set1_host(param, cfg.peer_name.c_str(), 0) != 1)
        return unexpected("TLS: peer name \"" + cfg.peer_name + "\": " + openssl_error());
    return TlsContext(std::move(ctx), std::move(owned), side);
}

namespace {

// OpenSSL writes to the socket with plain write(): a peer that closed the connection would
// kill the process with SIGPIPE. A library must not change the process's signal handling, so,
// as libpq and libcurl do, SIGPIPE is blocked in this thread around each TLS call and a SIGPIPE
// it raised is consumed before the mask is restored; the call then fails with EPIPE.
class SigpipeGuard {
public:
    SigpipeGuard()
    {
        sigemptyset(&pipe_);
        sigaddset(&pipe_, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
        sigset_t pending;
        sigpending(&pending);
        was_pending_ = sigismember(&pending, SIGPIPE) == 1; // not ours: leave it
    }
    ~SigpipeGuard()
    {
        if (!was_pending_) {
            const timespec zero{0, 0};
            while (sigtimedwait(&pipe_, nullptr, &zero) > 0) {
            }
        }
        pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    SigpipeGuard(const SigpipeGuard&) = delete;
    SigpipeGuard& operator=(const SigpipeGuard&) = delete;

private:
    sigset_t pipe_{}, old_{};
    bool was_pending_ = false;
};

} // namespace

TlsStream::TlsStream(const TlsContext& ctx, UniqueFd fd) : fd_(std::move(fd)), ssl_(SSL_new(ctx.get()))
{
    SSL_set_fd(ssl_.get(), fd_.get());
    if (ctx.side() == TlsContext::Side::client)
        SSL_set_connect_state(ssl_.get());
    else
        SSL_set_accept_state(ssl_.get());
}

TlsStream::Io TlsStream::status(int ret, const char* what)
{
    const int e = SSL_get_error(ssl_.get(), ret);
    switch (e) {
    case SSL_ERROR_WANT_READ: return Io::want_read;
    case SSL_ERROR_WANT_WRITE: return Io::want_write;
    case SSL_ERROR_ZERO_RETURN: return Io::closed;
    case SSL_ERROR_SYSCALL:
        error_ = std::string(what) + ": " + (errno != 0 ? std::strerror(errno) : "connection closed by peer");
        ERR_clear_error();
        return errno == 0 ? Io::closed : Io::error;
    default: {
        const long verify = SSL_get_verify_result(ssl_.get());
        error_ = std::string(what) + ": ";
        if (verify != X509_V_OK)
            error_ += std::string("peer certificate not trusted: ") + X509_verify_cert_error_string(verify);
        else {
            const unsigned long err = ERR_peek_last_error();
            const char* reason = ERR_reason_error_string(err);
            error_ += reason ? reason : "TLS error";
            if (ERR_GET_REASON(err) >= SSL_AD_REASON_OFFSET)
                error_ += " (the peer refused our certificate or protocol)";
        }
        ERR_clear_error();
        return Io::error;
    }
    }
}

TlsStream::Io TlsStream::handshake()
{
    SigpipeGuard guard;
    errno = 0;
    const int r = SSL_do_handshake(ssl_.get());
    return r == 1 ? Io::done : status(r, "TLS handshake failed");
}

TlsStream::Io TlsStream::read(std::vector<std::uint8_t>& out, std::size_t max)
{
    const std::size_t start = out.size();
    out.resize(start + max);
    std::size_t got = 0;
    SigpipeGuard guard; // TLS 1.3 may write while reading (key updates, tickets)
    errno = 0;
    const int r = SSL_read_ex(ssl_.get(), out.data() + start, max, &got);
    out.resize(start + got);
    return r == 1 ? Io::done : status(r, "TLS read");
}

TlsStream::Io TlsStream::flush()
{
    SigpipeGuard guard;
    while (out_pos_ < out_.size()) {
        std::size_t written = 0;
        errno = 0;
        const int r = SSL_write_ex(ssl_.get(), out_.data() + out_pos_, out_.size() - out_pos_, &written);
        if (r != 1)
            return status(r, "TLS write");
        out_pos_ += written;
    }
    out_.clear();
    out_pos_ = 0;
    return Io::done;
}

} // namespace xenft::channel
