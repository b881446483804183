#include "xenft/channel/certs.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace xenft::channel {

namespace {

struct FileClose {
    void operator()(FILE* f) const noexcept { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileClose>;

bool add_ext(X509* cert, X509* issuer, int nid, const char* value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    if (!ext)
        return false;
    const bool ok = X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

} // namespace

std::string openssl_error()
{
    const unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0)
        return "unknown OpenSSL error";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

Pkey generate_key()
{
    return Pkey(EVP_EC_gen("P-256"));
}

Cert make_certificate(const CertSpec& spec, EVP_PKEY* key, X509* issuer_cert, EVP_PKEY* issuer_key)
{
    Cert cert(X509_new());
    if (!cert)
        return nullptr;
    X509_set_version(cert.get(), 2);
    unsigned char serial[16];
    RAND_bytes(serial, sizeof serial);
    serial[0] &= 0x7f;
    BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
    BN_free(bn);
    X509_time_adj_ex(X509_getm_notBefore(cert.get()), static_cast<int>(spec.not_before_days), 0, nullptr);
    X509_time_adj_ex(X509_getm_notAfter(cert.get()), static_cast<int>(spec.not_after_days), 0, nullptr);
    X509_set_pubkey(cert.get(), key);
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(spec.name.c_str()), -1,
                               -1, 0);
    X509* issuer = issuer_cert ? issuer_cert : cert.get();
    X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer));
    bool ok = true;
    if (spec.is_ca) {
        ok = add_ext(cert.get(), issuer, NID_basic_constraints, "critical,CA:TRUE") &&
             add_ext(cert.get(), issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        const std::string san = "DNS:" + spec.name;
        ok = add_ext(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(cert.get(), issuer, NID_key_usage, "critical,digitalSignature") &&
             add_ext(cert.get(), issuer, NID_ext_key_usage, "serverAuth,clientAuth") &&
             add_ext(cert.get(), issuer, NID_subject_alt_name, san.c_str());
    }
    ok = ok && add_ext(cert.get(), issuer, NID_subject_key_identifier, "hash");
    if (!ok || X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) == 0)
        return nullptr;
    return cert;
}

Expected<bool, std::string> write_key_pem(const std::string& path, EVP_PKEY* key)
{
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return unexpected("key " + path + ": cannot create: " + std::strerror(errno));
    File f(::fdopen(fd, "w"));
    if (!f) {
        ::close(fd);
        return unexpected("key " + path + ": " + std::strerror(errno));
    }
    if (PEM_write_PrivateKey(f.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
        return unexpected("key " + path + ": " + openssl_error());
    return true;
}

Expected<bool, std::string> write_cert_pem(const std::string& path, X509* cert)
{
    File f(std::fopen(path.c_str(), "w"));
    if (!f)
        return unexpected("certificate " + path + ": cannot create: " + std::strerror(errno));
    if (PEM_write_X509(f.get(), cert) != 1)
        return unexpected("certificate " + path + ": " + openssl_error());
    return true;
}

Expected<Cert, std::string> read_cert_pem(const std::string& path)
{
    File f(std::fopen(path.c_str(), "r"));
    if (!f)
        return unexpected("certificate " + path + ": cannot open: " + std::strerror(errno));
    Cert c(PEM_read_X509(f.get(), nullptr, nullptr, nullptr));
    if (!c)
        return unexpected("certificate " + path + ": not a PEM certificate (" + openssl_error() + ")");
    return c;
}

Expected<Pkey, std::string> read_key_pem(const std::string& path)
{
    File f(std::fopen(path.c_str(), "r"));
    if (!f)
        return unexpected("key " + path + ": cannot open: " + std::strerror(errno));
    Pkey k(PEM_read_PrivateKey(f.get(), nullptr, nullptr, nullptr));
    if (!k)
        return unexpected("key " + path + ": not a PEM private key (" + openssl_error() + ")");
    return k;
}

std::string fingerprint(X509* cert)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    X509_digest(cert, EVP_sha256(), md, &len);
    static constexpr char digits[] = "0123456789abcdef";
    std::string s = "SHA256:";
    for (unsigned int i = 0; i < len; ++i) {
        s += digits[md[i] >> 4];
        s += digits[md[i] & 15];
    }
    return s;
}

} // namespace xenft::channel
