// Certificates for the channel tests, made with xenft's own certificate code: a CA with two
// host certificates, a foreign CA with a host certificate, an expired certificate, a
// certificate for the wrong name, and self-signed certificates for fingerprint pinning.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "xenft/channel/certs.hpp"
#include "xenft/channel/tls.hpp"

namespace xenft::testing {

class TlsFixture {
public:
    static constexpr const char* kPrimary = "hosta.xenft.test";
    static constexpr const char* kBackup = "hostb.xenft.test";

    TlsFixture()
    {
        char tmpl[] = "/tmp/xenft-tls-XXXXXX";
        dir = ::mkdtemp(tmpl);
        auto ca_key = channel::generate_key();
        auto ca = channel::make_certificate({"xenft test CA", true, 0, 30}, ca_key.get(), nullptr, nullptr);
        save("ca", ca.get(), ca_key.get());
        issue("a", kPrimary, ca.get(), ca_key.get(), 0, 30);
        issue("b", kBackup, ca.get(), ca_key.get(), 0, 30);
        issue("expired", kPrimary, ca.get(), ca_key.get(), -30, -1);
        issue("wrongname", "hostc.xenft.test", ca.get(), ca_key.get(), 0, 30);
        auto other_key = channel::generate_key();
        auto other = channel::make_certificate({"someone else's CA", true, 0, 30}, other_key.get(), nullptr, nullptr);
        save("otherca", other.get(), other_key.get());
        issue("foreign", kPrimary, other.get(), other_key.get(), 0, 30);
        issue("selfa", kPrimary, nullptr, nullptr, 0, 30);
        issue("selfb", kBackup, nullptr, nullptr, 0, 30);
    }
    ~TlsFixture()
    {
        std::error_code ignored;
        std::filesystem::remove_all(dir, ignored);
    }
    TlsFixture(const TlsFixture&) = delete;
    TlsFixture& operator=(const TlsFixture&) = delete;

    std::string cert(const std::string& n) const { return dir + "/" + n + ".crt"; }
    std::string key(const std::string& n) const { return dir + "/" + n + ".key"; }
    std::string fingerprint_of(const std::string& n) const
    {
        auto c = channel::read_cert_pem(cert(n));
        return channel::fingerprint(c->get());
    }

    // The primary (client) presenting `who`, trusting the CA, expecting the backup's name.
    channel::TlsConfig primary(const std::string& who = "a") const { return {cert(who), key(who), cert("ca"), "", kBackup}; }
    channel::TlsConfig backup(const std::string& who = "b") const { return {cert(who), key(who), cert("ca"), "", kPrimary}; }

    std::string dir;

private:
    void save(const std::string& n, X509* c, EVP_PKEY* k)
    {
        (void)channel::write_cert_pem(cert(n), c);
        (void)channel::write_key_pem(key(n), k);
    }
    void issue(const std::string& n, const std::string& name, X509* issuer, EVP_PKEY* issuer_key, long from, long to)
    {
        auto k = channel::generate_key();
        auto c = channel::make_certificate({name, false, from, to}, k.get(), issuer, issuer_key);
        save(n, c.get(), k.get());
    }
};

} // namespace xenft::testing
