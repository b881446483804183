// `xenft cert ca | create | fingerprint`; see cert_commands.hpp and xenft(8).
#include "dom0-tools/xenft/cert_commands.hpp"
#include "dom0-tools/xenft/usage.hpp"

#include <sys/stat.h>

#include <boost/program_options.hpp>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <iostream>

#include "xenft/channel/certs.hpp"

namespace po = boost::program_options;

namespace xenft::cli {

namespace {

constexpr const char* kCertUsage =
    "usage: xenft cert ca --name NAME --out DIR [--days N]\n"
    "       xenft cert create --name HOST --out DIR [--ca-cert FILE --ca-key FILE] [--days N]\n"
    "       xenft cert fingerprint FILE\n";

// Writes DIR/NAME.key (mode 0600) and DIR/NAME.crt, refusing to overwrite either. DIR is
// created (mode 0700: it holds keys) if it does not exist; its parent must.
int write_pair(const std::string& dir, const std::string& name, EVP_PKEY* key, X509* cert)
{
    const std::string key_path = dir + "/" + name + ".key", cert_path = dir + "/" + name + ".crt";
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0 && ::mkdir(dir.c_str(), 0700) != 0) {
        std::cerr << "xenft: cert: cannot create the directory " << dir << ": " << std::strerror(errno) << "\n";
        return 1;
    }
    for (const auto& p : {key_path, cert_path})
        if (::stat(p.c_str(), &st) == 0) {
            std::cerr << "xenft: cert: " << p << " already exists; not overwriting it\n";
            return 1;
        }
    if (auto r = channel::write_key_pem(key_path, key); !r) {
        std::cerr << "xenft: cert: " << r.error() << "\n";
        return 1;
    }
    if (auto r = channel::write_cert_pem(cert_path, cert); !r) {
        std::cerr << "xenft: cert: " << r.error() << "\n";
        return 1;
    }
    std::cout << "key         " << key_path << "\ncertificate " << cert_path << "\nfingerprint "
              << channel::fingerprint(cert) << "\n";
    return 0;
}

bool valid_name(const std::string& n)
{
    if (n.empty() || n.size() > 253)
        return false;
    for (char c : n)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_'))
            return false;
    return true;
}

} // namespace

int run_cert_command(const std::vector<std::string>& args)
{
    if (const auto status = help_requested(args, kCertUsage))
        return *status;
    const std::string sub = args[0];
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    std::string name, out = ".", ca_cert, ca_key, file;
    long days = 3650;
    po::options_description opts("xenft cert");
    opts.add_options()("name", po::value(&name))("out", po::value(&out))("ca-cert", po::value(&ca_cert))(
        "ca-key", po::value(&ca_key))("days", po::value(&days))("file", po::value(&file));
    po::positional_options_description pos;
    pos.add("file", 1);
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(rest).options(opts).positional(pos).run(), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "xenft: cert " << sub << ": " << e.what() << "\n" << kCertUsage;
        return 2;
    }

    if (sub == "fingerprint") {
        if (file.empty()) {
            std::cerr << kCertUsage;
            return 2;
        }
        auto c = channel::read_cert_pem(file);
        if (!c) {
            std::cerr << "xenft: cert: " << c.error() << "\n";
            return 1;
        }
        std::cout << channel::fingerprint(c->get()) << "\n";
        return 0;
    }
    if (sub != "ca" && sub != "create") {
        std::cerr << "xenft: cert: unknown command \"" << sub << "\"\n" << kCertUsage;
        return 2;
    }
    if (!valid_name(name)) {
        std::cerr << "xenft: cert " << sub << ": --name must be a host name (letters, digits, '-', '.', '_')\n";
        return 2;
    }
    if (days < 1 || days > 36500) {
        std::cerr << "xenft: cert " << sub << ": --days must be 1..36500\n";
        return 2;
    }
    if (ca_cert.empty() != ca_key.empty()) {
        std::cerr << "xenft: cert create: give both --ca-cert and --ca-key, or neither (self-signed)\n";
        return 2;
    }
    auto key = channel::generate_key();
    if (sub == "ca") {
        auto cert = channel::make_certificate({name, true, 0, days}, key.get(), nullptr, nullptr);
        return cert ? write_pair(out, name, key.get(), cert.get()) : (std::cerr << "xenft: cert: " << channel::openssl_error() << "\n", 1);
    }
    channel::Cert issuer;
    channel::Pkey issuer_key;
    if (!ca_cert.empty()) {
        auto c = channel::read_cert_pem(ca_cert);
        auto k = channel::read_key_pem(ca_key);
        if (!c || !k) {
            std::cerr << "xenft: cert: " << (!c ? c.error() : k.error()) << "\n";
            return 1;
        }
        if (X509_check_private_key(c->get(), k->get()) != 1) {
            std::cerr << "xenft: cert: CA key " << ca_key << " does not match CA certificate " << ca_cert << "\n";
            return 1;
        }
        issuer = std::move(c).value();
        issuer_key = std::move(k).value();
    }
    auto cert = channel::make_certificate({name, false, 0, days}, key.get(), issuer.get(), issuer_key.get());
    if (!cert) {
        std::cerr << "xenft: cert: " << channel::openssl_error() << "\n";
        return 1;
    }
    return write_pair(out, name, key.get(), cert.get());
}

} // namespace xenft::cli
