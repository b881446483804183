#include "xenft/daemon/config.hpp"

#include <netinet/in.h>

#include <boost/program_options.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "xenft/arbiter/lun.hpp"

namespace xenft::daemon {

namespace po = boost::program_options;

bool parse_mac(const std::string& text, std::uint8_t (&out)[6])
{
    unsigned b[6];
    char tail = 0;
    if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
        return false;
    for (int i = 0; i < 6; ++i)
        out[i] = static_cast<std::uint8_t>(b[i]);
    return !(out[0] & 1); // a unicast address
}

std::string iscsi_name_problem(const std::string& name)
{
    auto hex_digits = [&](std::size_t from, std::size_t n) {
        if (name.size() != from + n)
            return false;
        for (std::size_t i = from; i < name.size(); ++i)
            if (!std::isxdigit(static_cast<unsigned char>(name[i])))
                return false;
        return true;
    };
    if (name.rfind("eui.", 0) == 0)
        return hex_digits(4, 16) ? "" : "an eui. name has 16 hex digits (eui.0123456789abcdef)";
    if (name.rfind("naa.", 0) == 0)
        return hex_digits(4, 16) || hex_digits(4, 32) ? "" : "a naa. name has 16 or 32 hex digits";
    const std::string example = " (like iqn.2026-12.org.example:host-a)";
    if (name.rfind("iqn.", 0) != 0)
        return "not an iSCSI name: it starts with iqn., eui. or naa." + example;
    // iqn.YYYY-MM.reversed.domain[:anything]
    if (name.size() < 13 || !std::isdigit(static_cast<unsigned char>(name[4])) ||
        !std::isdigit(static_cast<unsigned char>(name[5])) || !std::isdigit(static_cast<unsigned char>(name[6])) ||
        !std::isdigit(static_cast<unsigned char>(name[7])) || name[8] != '-' ||
        !std::isdigit(static_cast<unsigned char>(name[9])) || !std::isdigit(static_cast<unsigned char>(name[10])) ||
        name[11] != '.')
        return "an iqn. name has a date and a naming authority after it" + example;
    for (char ch : name)
        if (!(std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch)) ||
              ch == '.' || ch == '-' || ch == ':'))
            return std::string("'") + ch + "' is not allowed in an iqn. name (lower-case letters, digits, . - :)";
    if (name.size() > 223)
        return "longer than iSCSI's 223 bytes";
    return {};
}

void ConfigCheck::problem(const std::string& key, const std::string& why)
{
    const auto at = lines.find(key);
    problems.push_back({key, at == lines.end() ? 0u : at->second, why});
}

void ConfigCheck::sort_by_line()
{
    std::stable_sort(problems.begin(), problems.end(), [](const ConfigProblem& a, const ConfigProblem& b) {
        return (a.line ? a.line : ~0u) < (b.line ? b.line : ~0u);
    });
}

std::string ConfigCheck::describe(const ConfigProblem& p) const
{
    return path + (p.line ? ":" + std::to_string(p.line) : std::string()) + ": " + (p.key.empty() ? "" : p.key + ": ") +
           p.why;
}

namespace {

// Every key the file may have; all are read as text and converted here, so that "-3" or
// "12abc" are refused instead of wrapping around or being cut short.
const char* const kKeys[] = {
    "vm.id", "vm.backend", "vm.image", "vm.cmdline", "vm.memory-mib", "vm.kernel", "vm.initrd",
    "vm.console-log",
    "pair.host-id", "pair.peer-id", "pair.role", "pair.epoch", "pair.record-owner", "pair.rejoin",
    "network.tap", "network.mac",
    "disk.lun", "disk.file", "disk.first-lba", "disk.size-mib",
    "arbiter.lun", "arbiter.record-lba", "arbiter.initiator", "arbiter.timeout-s",
    "channel.listen", "channel.peer", "channel.cert", "channel.key", "channel.ca", "channel.fingerprint",
    "channel.peer-name",
    "heartbeat.listen", "heartbeat.peer", "heartbeat.key-file",
    "failover.after-ms", "failover.digest-ms", "failover.backup-wait-ms",
    "control.socket",
};
const char* const kRequired[] = {
    "vm.id", "pair.host-id", "pair.peer-id", "pair.role", "arbiter.lun", "arbiter.initiator", "channel.listen",
    "channel.peer", "channel.cert", "channel.key", "channel.peer-name", "heartbeat.listen", "heartbeat.peer",
    "heartbeat.key-file",
};
// Host ids: the arbiter's iSCSI sessions use the id as their ISID qualifier and the guest
// disk's 0x1000 + id, which must stay apart.
constexpr std::uint64_t kMaxHostId = 4095;

// Where each "section.key" is first set, from the file's lines (for the messages only: Boost
// parses the values).
std::map<std::string, unsigned> index_lines(std::istream& in)
{
    std::map<std::string, unsigned> at;
    std::string line, section;
    for (unsigned n = 1; std::getline(in, line); ++n) {
        const auto first = line.find_first_not_of(" \t");
        if (first == std::string::npos || line[first] == '#' || line[first] == ';')
            continue;
        if (line[first] == '[') {
            const auto close = line.find(']', first);
            section = line.substr(first + 1, close == std::string::npos ? std::string::npos : close - first - 1);
            at.try_emplace(section, n);
            continue;
        }
        const auto eq = line.find('=', first);
        std::string key = line.substr(first, eq == std::string::npos ? std::string::npos : eq - first);
        while (!key.empty() && (key.back() == ' ' || key.back() == '\t'))
            key.pop_back();
        at.try_emplace(section.empty() ? key : section + "." + key, n);
    }
    return at;
}

class Values {
public:
    Values(ConfigCheck& check, std::map<std::string, std::string> raw) : c_(check), raw_(std::move(raw)) {}

    std::optional<std::string> text(const char* key) const
    {
        const auto it = raw_.find(key);
        return it == raw_.end() ? std::nullopt : std::optional<std::string>(it->second);
    }
    void text(const char* key, std::string& out) const
    {
        if (auto t = text(key))
            out = *t;
    }
    // A whole decimal number within [lo, hi]; out keeps its default when the key is absent.
    template <class T>
    void number(const char* key, T& out, std::uint64_t lo, std::uint64_t hi, const std::string& what = {})
    {
        const auto t = text(key);
        if (!t)
            return;
        std::uint64_t v = 0;
        const char* end = t->data() + t->size();
        const auto r = std::from_chars(t->data(), end, v);
        if (t->empty() || r.ec != std::errc() || r.ptr != end) {
            c_.problem(key, "\"" + *t + "\" is not a whole number " + range(lo, hi) + what);
            return;
        }
        if (v < lo || v > hi) {
            c_.problem(key, *t + " is outside " + range(lo, hi) + what);
            return;
        }
        out = static_cast<T>(v);
    }
    void flag(const char* key, bool& out)
    {
        const auto t = text(key);
        if (!t)
            return;
        if (*t == "true" || *t == "yes" || *t == "on" || *t == "1")
            out = true;
        else if (*t == "false" || *t == "no" || *t == "off" || *t == "0")
            out = false;
        else
            c_.problem(key, "\"" + *t + "\" is neither true nor false");
    }
    // HOST:PORT with a port other than 0 (the pair's addresses are fixed: the peer's
    // configuration names them).
    void address(const char* key, SocketAddress& out)
    {
        const auto t = text(key);
        if (!t)
            return;
        auto a = SocketAddress::parse(*t);
        if (!a) {
            c_.problem(key, a.error());
            return;
        }
        const auto* s = a->get();
        const unsigned port = a->family() == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6*>(s)->sin6_port)
                                                      : ntohs(reinterpret_cast<const sockaddr_in*>(s)->sin_port);
        if (port == 0) {
            c_.problem(key, *t + ": port 0 is not a fixed port (the peer's configuration names this address)");
            return;
        }
        out = *a;
    }

private:
    static std::string range(std::uint64_t lo, std::uint64_t hi)
    {
        return std::to_string(lo) + ".." + std::to_string(hi);
    }
    ConfigCheck& c_;
    std::map<std::string, std::string> raw_;
};

} // namespace

ConfigCheck read_config(const std::string& path)
{
    ConfigCheck check;
    check.path = path;
    DaemonConfig& c = check.config;
    std::ifstream file(path);
    if (!file) {
        check.problem("", "cannot read it");
        return check;
    }
    // Read once: indexed for the lines, then parsed.
    std::stringstream text;
    text << file.rdbuf();
    std::istringstream in(text.str());
    {
        std::istringstream lines(text.str());
        check.lines = index_lines(lines);
    }
    po::options_description o;
    for (const char* key : kKeys)
        o.add_options()(key, po::value<std::string>());
    std::map<std::string, std::string> raw;
    try {
        const auto parsed = po::parse_config_file(in, o, true);
        for (const auto& opt : parsed.options) {
            if (opt.unregistered) {
                check.problem(opt.string_key, "no such key in xenft.conf(5)");
                continue;
            }
            const std::string value = opt.value.empty() ? std::string() : opt.value.front();
            if (!raw.emplace(opt.string_key, value).second)
                check.problem(opt.string_key, "given twice");
        }
    } catch (const po::error& e) {
        check.problem("", e.what());
        return check;
    }
    for (const char* key : kRequired)
        if (!raw.contains(key))
            check.problem(key, "missing (xenft.conf(5) says what it is)");

    Values v(check, std::move(raw));
    v.number("vm.id", c.vm_id, 1, 0xffffffffu);
    v.text("vm.backend", c.backend);
    v.text("vm.image", c.image);
    v.text("vm.cmdline", c.cmdline);
    v.text("vm.kernel", c.kernel);
    v.text("vm.initrd", c.initrd);
    const bool console_log_given = v.text("vm.console-log").has_value();
    v.text("vm.console-log", c.console_log);
    v.number("vm.memory-mib", c.memory_mib, 2, 4096);
    v.number("pair.host-id", c.host_id, 1, kMaxHostId);
    v.number("pair.peer-id", c.peer_id, 1, kMaxHostId);
    std::string role;
    v.text("pair.role", role);
    v.number("pair.epoch", c.epoch, 1, std::uint64_t{1} << 62, " (the arbitration record's epochs start at 1)");
    v.number("pair.record-owner", c.record_owner, 0, kMaxHostId);
    v.flag("pair.rejoin", c.rejoin);
    v.text("network.tap", c.tap);
    v.text("network.mac", c.mac);
    v.text("disk.lun", c.disk_lun);
    v.text("disk.file", c.disk_file);
    v.number("disk.first-lba", c.disk_first_lba, 0, std::uint64_t{1} << 48);
    v.number("disk.size-mib", c.disk_mib, 1, 1u << 20);
    v.text("arbiter.lun", c.arbiter_lun);
    v.number("arbiter.record-lba", c.record_lba, 0, std::uint64_t{1} << 48);
    v.text("arbiter.initiator", c.initiator);
    // 0 would be libiscsi's "no timeout": a test-and-set that could hang for ever.
    v.number("arbiter.timeout-s", c.lun_timeout_s, 1, 60, " seconds");
    v.address("channel.listen", c.channel_listen);
    v.address("channel.peer", c.channel_peer);
    v.text("channel.cert", c.cert);
    v.text("channel.key", c.key);
    v.text("channel.ca", c.ca);
    v.text("channel.fingerprint", c.fingerprint);
    v.text("channel.peer-name", c.peer_name);
    v.address("heartbeat.listen", c.heartbeat_listen);
    v.address("heartbeat.peer", c.heartbeat_peer);
    v.text("heartbeat.key-file", c.heartbeat_key_file);
    v.number("failover.after-ms", c.failover_ms, 200, 600'000, " (at least two heartbeat intervals of 100 ms)");
    v.number("failover.digest-ms", c.digest_ms, 10, 3'600'000);
    v.text("control.socket", c.control_socket);

    // How the keys go together.
    if (v.text("pair.role") && role != "primary" && role != "backup")
        check.problem("pair.role", "\"" + role + "\" is neither primary nor backup");
    c.primary = role != "backup";
    if (c.backend != "kvm" && c.backend != "xen")
        check.problem("vm.backend", "\"" + c.backend + "\" is neither kvm nor xen");
    if (c.backend == "kvm" && c.image.empty())
        check.problem("vm.image", "needed with backend = kvm: the guest's PVH ELF image");
    if (c.backend == "kvm" && !c.kernel.empty())
        check.problem("vm.kernel", "only with backend = xen (a Linux guest on Xen's plain PC)");
    if (c.kernel.empty() && !c.initrd.empty())
        check.problem("vm.initrd", "without vm.kernel: give the kernel it belongs to");
    if (v.text("failover.backup-wait-ms"))
        check.problem("failover.backup-wait-ms", "no longer used: a primary runs the VM alone from the start and is "
                                                 "protected once a backup took its live copy; remove the line");
    if (c.host_id != 0 && c.host_id == c.peer_id)
        check.problem("pair.peer-id", "the same as pair.host-id: the two hosts need different ids");
    if (c.record_owner != 0 && c.record_owner != c.host_id && c.record_owner != c.peer_id)
        check.problem("pair.record-owner", std::to_string(c.record_owner) + " is neither this host (" +
                                               std::to_string(c.host_id) + ") nor its peer (" +
                                               std::to_string(c.peer_id) + ")");
    std::uint8_t mac[6];
    if (!parse_mac(c.mac, mac))
        check.problem("network.mac", "\"" + c.mac + "\" is not a unicast MAC address like 52:54:00:12:34:56");
    if (!c.disk_lun.empty() && !c.disk_file.empty())
        check.problem("disk", "give either lun or file, not both");
    if (c.ca.empty() == c.fingerprint.empty())
        check.problem("channel", "give exactly one of ca (trust a CA) and fingerprint (pin the peer's certificate)");
    if (!c.fingerprint.empty()) {
        bool hex = c.fingerprint.size() == 7 + 64 && c.fingerprint.rfind("SHA256:", 0) == 0;
        for (std::size_t i = 7; hex && i < c.fingerprint.size(); ++i)
            hex = std::isxdigit(static_cast<unsigned char>(c.fingerprint[i])) &&
                  !std::isupper(static_cast<unsigned char>(c.fingerprint[i]));
        if (!hex)
            check.problem("channel.fingerprint", "\"" + c.fingerprint + "\" is not SHA256: and 64 lower-case hex "
                                                 "digits (xenft cert fingerprint prints it)");
    }
    if (!c.initiator.empty())
        if (auto why = iscsi_name_problem(c.initiator); !why.empty())
            check.problem("arbiter.initiator", why);
    if (!c.arbiter_lun.empty())
        if (auto why = arbiter::Lun::url_problem(c.arbiter_lun); !why.empty())
            check.problem("arbiter.lun", why);
    if (!c.disk_lun.empty())
        if (auto why = arbiter::Lun::url_problem(c.disk_lun); !why.empty())
            check.problem("disk.lun", why);
    // The guest's disk beside the arbitration record on one LUN: the disk begins after it.
    if (!c.disk_lun.empty() && c.disk_lun == c.arbiter_lun && c.disk_first_lba <= c.record_lba)
        check.problem("disk.first-lba", std::to_string(c.disk_first_lba) + " puts the guest's disk over the "
                                        "arbitration record (arbiter.record-lba " + std::to_string(c.record_lba) +
                                        ") on the same LUN: start the disk after it");
    // The guest's console: beside the log the xl hook keeps of xenftd (NAME.log), NAME the
    // configuration's own (xenftd@NAME reads NAME.conf).
    if (!console_log_given && c.backend == "xen")
        c.console_log = "/var/log/xenft/" + std::filesystem::path(path).stem().string() + ".console";
    else if (c.console_log == "none")
        c.console_log.clear();
    else if (console_log_given && c.backend != "xen")
        check.problem("vm.console-log", "only with backend = xen (the domain's serial port)");
    else if (console_log_given && (c.console_log.empty() || c.console_log.front() != '/' || c.console_log.back() == '/'))
        check.problem("vm.console-log", "\"" + c.console_log + "\" is not an absolute file name (or none)");
    if (c.control_socket.empty())
        c.control_socket = "/run/xenft/vm-" + std::to_string(c.vm_id) + ".sock";
    else if (c.control_socket.front() != '/' || c.control_socket.size() >= 108)
        check.problem("control.socket", "\"" + c.control_socket + "\" must be an absolute path of at most 107 bytes");
    check.sort_by_line();
    return check;
}

Expected<DaemonConfig, std::string> load_config(const std::string& path)
{
    ConfigCheck check = read_config(path);
    if (!check.problems.empty())
        return unexpected("configuration " + check.describe(check.problems.front()));
    return std::move(check.config);
}

} // namespace xenft::daemon
