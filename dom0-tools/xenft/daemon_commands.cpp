// `xenft status | failover | unprotect | protect`; see daemon_commands.hpp and xenft(8).
#include "dom0-tools/xenft/daemon_commands.hpp"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>

#include "xenft/common/unique_fd.hpp"
#include "xenft/daemon/config.hpp"

namespace po = boost::program_options;

namespace xenft::cli {

namespace {

constexpr const char* kUsage = "usage: xenft status    (--vm NAME|ID | --socket PATH) [--json] [--timeout S]\n"
                               "       xenft failover  (--vm NAME|ID | --socket PATH) [--timeout S]   on the backup's host\n"
                               "       xenft unprotect (--vm NAME|ID | --socket PATH) [--timeout S]   on the primary's host\n"
                               "       xenft protect   (--vm NAME|ID | --socket PATH) [--timeout S]   on either host\n"
                               "       xenft list      [--json] [--timeout S]   every VM this host's configurations name\n"
                               "--vm: the VM's configuration name (NAME.conf, as in ft=\"NAME\") or its id\n"
                               "--timeout: how long to wait for xenftd's answer (default 10 s; list: 2 s per VM)\n";

// Where the VMs' configurations are (xenft.conf(5)); XENFT_CONFDIR for tests, as the xl hook.
std::string config_dir()
{
    const char* d = std::getenv("XENFT_CONFDIR");
    return d && *d ? d : "/etc/xenft";
}

// Every NAME.conf of the configuration directory (not the example), by name.
std::vector<std::filesystem::path> config_files()
{
    std::vector<std::filesystem::path> files;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(config_dir(), ec))
        if (e.path().extension() == ".conf" && e.is_regular_file(ec))
            files.push_back(e.path());
    std::sort(files.begin(), files.end());
    return files;
}

bool all_digits(const std::string& s)
{
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The control socket of --vm NAME (its configuration's) or --vm ID (the configuration with that
// id, else the default path); empty with `error` set if NAME has no usable configuration.
std::string socket_of(const std::string& vm, std::string& error)
{
    if (all_digits(vm)) {
        for (const auto& f : config_files()) {
            auto c = daemon::read_config(f.string());
            if (c.problems.empty() && std::to_string(c.config.vm_id) == vm)
                return c.config.control_socket;
        }
        return "/run/xenft/vm-" + vm + ".sock";
    }
    const std::string file = config_dir() + "/" + vm + ".conf";
    if (vm.find('/') != std::string::npos || !std::filesystem::exists(file)) {
        error = "no configuration " + file + " for VM \"" + vm + "\" (give its name as in ft=\"NAME\", or its id)";
        return {};
    }
    auto c = daemon::read_config(file);
    if (!c.problems.empty()) {
        error = c.describe(c.problems.front()) + " (xenftd --config " + file + " --check-config lists every problem)";
        return {};
    }
    return c.config.control_socket;
}

// Sends one command, returns the daemon's JSON reply or an error naming the socket. A daemon
// that accepts and never answers (stopped, or stuck) fails it after timeout_s, not never: the
// xl hook's readiness loop and scripts call this.
std::optional<nlohmann::json> ask(const std::string& path, const std::string& cmd, unsigned timeout_s, std::string& error)
{
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
        error = "socket path " + path + " is too long";
        return std::nullopt;
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const timeval limit{static_cast<time_t>(timeout_s), 0};
    // (on a Unix socket the send timeout also bounds a connect to a daemon whose backlog is full)
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    const std::string no_answer = "xenftd at " + path + " did not answer within " + std::to_string(timeout_s) + " s";
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        error = errno == EAGAIN ? no_answer
                                : "cannot reach xenftd at " + path + ": " + std::strerror(errno) + " (is xenftd running for this VM?)";
        return std::nullopt;
    }
    const std::string line = cmd + "\n";
    (void)!::write(fd.get(), line.data(), line.size());
    std::string reply;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd.get(), buf, sizeof buf)) > 0)
        reply.append(buf, static_cast<std::size_t>(n));
    if (n < 0) {
        error = errno == EAGAIN || errno == EWOULDBLOCK ? no_answer : "xenftd at " + path + ": " + std::strerror(errno);
        return std::nullopt;
    }
    auto j = nlohmann::json::parse(reply, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        error = "xenftd at " + path + " sent something that is not a JSON object";
        return std::nullopt;
    }
    return j;
}

std::string fixed(double v, int decimals)
{
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

std::string local_time(std::uint64_t unix_ms)
{
    const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

} // namespace

int run_daemon_command(const std::string& cmd, const std::vector<std::string>& args)
{
    if (!args.empty() && (args[0] == "--help" || args[0] == "help")) {
        std::cout << kUsage;
        return 0;
    }
    std::string socket, vm_name;
    po::options_description opts("xenft " + cmd);
    unsigned timeout_s = 10;
    opts.add_options()("vm", po::value(&vm_name))("socket", po::value(&socket))("json", "")("timeout", po::value(&timeout_s));
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(args).options(opts).run(), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "xenft: " << cmd << ": " << e.what() << "\n" << kUsage;
        return 2;
    }
    if (socket.empty() == vm_name.empty()) {
        std::cerr << "xenft: " << cmd << ": give --vm NAME|ID or --socket PATH\n" << kUsage;
        return 2;
    }
    if (timeout_s < 1 || timeout_s > 3600) {
        std::cerr << "xenft: " << cmd << ": --timeout " << timeout_s << " is outside 1..3600 seconds\n";
        return 2;
    }
    std::string error;
    if (socket.empty()) {
        socket = socket_of(vm_name, error);
        if (socket.empty()) {
            std::cerr << "xenft: " << cmd << ": " << error << "\n";
            return 1;
        }
    }
    const auto reply = ask(socket, cmd, timeout_s, error);
    if (!reply) {
        std::cerr << "xenft: " << cmd << ": " << error << "\n";
        return 1;
    }
    if (reply->contains("error")) {
        std::cerr << "xenft: " << cmd << ": " << (*reply)["error"].get<std::string>() << "\n";
        return 1;
    }
    if (vm.count("json")) {
        std::cout << reply->dump() << "\n";
        return 0;
    }
    if (cmd != "status") {
        std::cout << reply->value("note", std::string("done")) << "\n";
        return 0;
    }
    const auto& r = *reply;
    std::cout << "vm " << r.value("vm", 0) << " on host " << r.value("host", 0) << " (peer host " << r.value("peer", 0) << ")\n"
              << "  role:          " << r.value("role_text", std::string("?")) << ", epoch " << r.value("epoch", 0) << "\n"
              << "  exits:         " << r.value("exits", 0) << "\n"
              << "  log:           logged " << r.value("logged", 0) << ", acked " << r.value("acked", 0) << ", received "
              << r.value("received", 0) << ", replayed " << r.value("executed", 0) << "\n";
    // The primary measures the lag in time and the log's rate on its sender; a backup knows
    // only how much it holds that it has not replayed yet.
    if (r.value("role", std::string()).rfind("primary-", 0) == 0)
        std::cout << "  lag:           " << r.value("lag_entries", 0) << " entries not acked, "
                  << fixed(r.value("lag_ms", 0.0), 1) << " ms\n"
                  << "  log rate:      " << fixed(r.value("log_mbit_s", 0.0), 3) << " Mbit/s\n";
    else
        std::cout << "  lag:           " << r.value("lag_entries", 0) << " entries not replayed yet\n";
    std::cout << "  held outputs:  " << r.value("held_outputs", 0) << "\n";
    if (r.contains("domain") && r["domain"].is_object()) {
        // The Xen backend: the protected domain and its state digests (primary: taken at write
        // exits; backup: compared with the primary's at the same exits, each one matched).
        const auto& d = r["domain"];
        const auto last = d.value("last_digest", std::string());
        std::cout << "  domain:        " << d.value("domid", 0) << " (Xen), logging channel "
                  << (d.value("channel_up", false) ? "up" : "down") << "\n"
                  << "  digests:       " << d.value("digests", 0) << " " << d.value("digests_are", std::string("?"));
        if (!last.empty())
            std::cout << ", last at exit " << d.value("last_digest_exit", 0) << ": " << last.substr(0, 16) << "... ("
                      << fixed(d.value("last_digest_ms", 0.0), 1) << " ms, " << d.value("last_digest_pages", 0)
                      << " pages hashed, " << fixed(100.0 * d.value("digest_coverage", 0.0), 0) << "% of memory swept)";
        std::cout << "\n";
        // The backup's domain starts from a live copy of the primary's (one per backup).
        if (const auto copy = d.value("last_copy", std::string()); !copy.empty())
            std::cout << "  live copy:     " << d.value("copies", 0) << ", the last " << copy << "\n";
        // A backup's replay: where it is and what it waits for (its vCPU, or the log).
        if (d.contains("replay") && d["replay"].is_string())
            std::cout << "  replay:        " << d["replay"].get<std::string>() << "\n";
    }
    if (r.contains("copy") && r["copy"].is_object()) {
        const auto& c = r["copy"];
        if (c.value("active", false))
            std::cout << "  live copy:     " << c.value("direction", std::string()) << ", round " << c.value("round", 0)
                      << ", " << fixed(c.value("percent", 0.0), 0) << "% of " << c.value("pages_total", 0) << " pages, "
                      << fixed(c.value("mib_per_s", 0.0), 1) << " MiB/s, ETA " << fixed(c.value("eta_s", 0.0), 1) << " s\n";
        else if (c.value("copies_done", 0) > 0 && c.value("direction", std::string()) == "sending")
            std::cout << "  last copy:     sent in " << fixed(c.value("last_seconds", 0.0), 2) << " s, " << c.value("last_rounds", 0)
                      << " rounds, final pause " << fixed(c.value("last_pause_ms", 0.0), 1) << " ms\n";
        else if (c.value("copies_done", 0) > 0)
            std::cout << "  last copy:     received " << c.value("pages_copied", 0) << " pages in "
                      << fixed(c.value("last_seconds", 0.0), 2) << " s\n";
        if (const auto e = c.value("last_error", std::string()); !e.empty())
            std::cout << "  copy failed:   " << e << "\n";
    }
    if (const auto f = r.value("last_failover", std::string()); !f.empty())
        std::cout << "  last failover: " << local_time(r.value("last_failover_unix_ms", std::uint64_t{0})) << ": " << f << "\n";
    if (r.contains("heartbeats_rejected") && r["heartbeats_rejected"].is_object() && !r["heartbeats_rejected"].empty()) {
        std::cout << "  heartbeats rejected:";
        for (const auto& [why, n] : r["heartbeats_rejected"].items())
            std::cout << " " << n << " " << why << ";";
        std::cout << "\n";
    }
    if (const auto h = r.value("last_halt", std::string()); !h.empty())
        std::cout << "  last halt:     " << local_time(r.value("last_halt_unix_ms", std::uint64_t{0})) << ": " << h << "\n";
    if (const auto reason = r.value("reason", std::string()); !reason.empty())
        std::cout << "  last event:    " << reason << "\n";
    if (const auto failure = r.value("failure", std::string()); !failure.empty())
        std::cout << "  stopped:       " << failure << "\n";
    return 0;
}

int run_list_command(const std::vector<std::string>& args)
{
    po::options_description opts("xenft list");
    unsigned timeout_s = 2;
    opts.add_options()("json", "")("timeout", po::value(&timeout_s));
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(args).options(opts).run(), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "xenft: list: " << e.what() << "\n" << kUsage;
        return 2;
    }
    if (timeout_s < 1 || timeout_s > 3600) {
        std::cerr << "xenft: list: --timeout " << timeout_s << " is outside 1..3600 seconds\n";
        return 2;
    }
    // One row per configuration: what its xenftd says, or why there is nothing to say.
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& f : config_files()) {
        auto c = daemon::read_config(f.string());
        nlohmann::json row = {{"name", f.stem().string()}, {"configuration", f.string()}};
        if (!c.problems.empty()) {
            row["state"] = "bad-configuration";
            row["error"] = c.describe(c.problems.front()) + (c.problems.size() > 1 ? " (and " +
                           std::to_string(c.problems.size() - 1) + " more: xenftd --check-config)" : "");
            rows.push_back(row);
            continue;
        }
        row["vm"] = c.config.vm_id;
        row["socket"] = c.config.control_socket;
        std::string error;
        const auto reply = ask(c.config.control_socket, "status", timeout_s, error);
        if (!reply || reply->contains("error")) {
            row["state"] = "not-running";
            row["error"] = reply ? (*reply)["error"].get<std::string>() : error;
        } else {
            row["state"] = "running";
            for (const char* key : {"role", "role_text", "epoch", "lag_entries", "held_outputs", "last_failover",
                                    "last_failover_unix_ms", "backend"})
                if (reply->contains(key))
                    row[key] = (*reply)[key];
        }
        rows.push_back(row);
    }
    if (vm.count("json")) {
        std::cout << nlohmann::json{{"schema", 2}, {"vms", rows}}.dump() << "\n";
        return 0;
    }
    if (rows.empty()) {
        std::cout << "no VM configurations in " << config_dir() << " (NAME.conf, xenft.conf(5))\n";
        return 0;
    }
    std::printf("%-16s %-6s %-24s %-6s %-8s %s\n", "NAME", "VM", "ROLE", "EPOCH", "LAG", "LAST FAILOVER");
    for (const auto& r : rows) {
        const std::string state = r.value("state", std::string());
        const std::string vm_text = r.contains("vm") ? std::to_string(r.value("vm", std::uint64_t{0})) : "-";
        std::string role = state == "running" ? r.value("role_text", std::string("?"))
                           : state == "not-running" ? "not running"
                                                    : "bad configuration";
        const std::string epoch = state == "running" ? std::to_string(r.value("epoch", std::uint64_t{0})) : "-";
        const std::string lag = state == "running" ? std::to_string(r.value("lag_entries", std::uint64_t{0})) : "-";
        std::string last = r.value("last_failover", std::string());
        if (!last.empty())
            last = local_time(r.value("last_failover_unix_ms", std::uint64_t{0})) + ": " + last;
        else if (state != "running")
            last = r.value("error", std::string());
        std::printf("%-16s %-6s %-24s %-6s %-8s %s\n", r.value("name", std::string()).c_str(), vm_text.c_str(),
                    role.c_str(), epoch.c_str(), lag.c_str(), last.c_str());
    }
    return 0;
}

} // namespace xenft::cli
