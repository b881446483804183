// Host keys and X.509 certificates for the logging channel: create them (`xenft cert create`,
// the tests' own CA), and compute the SHA-256 fingerprint an administrator pins.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "xenft/common/expected.hpp"

namespace xenft::channel {

struct PkeyFree {
    void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct X509Free {
    void operator()(X509* p) const noexcept { X509_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;

// An ECDSA P-256 key.
Pkey generate_key();

struct CertSpec {
    std::string name;            // subject CN and DNS subjectAltName: the host's identity
    bool is_ca = false;
    long not_before_days = 0;    // relative to now; negative for the past
    long not_after_days = 3650;
};

// Signs with issuer_key as issuer_cert; a null issuer makes it self-signed.
Cert make_certificate(const CertSpec& spec, EVP_PKEY* key, X509* issuer_cert, EVP_PKEY* issuer_key);

// PEM files; the key file is created with mode 0600.
Expected<bool, std::string> write_key_pem(const std::string& path, EVP_PKEY* key);
Expected<bool, std::string> write_cert_pem(const std::string& path, X509* cert);
Expected<Cert, std::string> read_cert_pem(const std::string& path);
Expected<Pkey, std::string> read_key_pem(const std::string& path);

// "SHA256:" followed by 64 lowercase hex digits of the DER certificate's SHA-256.
std::string fingerprint(X509* cert);

// The last OpenSSL error as text (and clears the queue), for messages.
std::string openssl_error();

} // namespace xenft::channel
