// `xenft status | failover | unprotect`; see daemon_commands.hpp and xenft(8).
#include "dom0-tools/xenft/daemon_commands.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "xenft/common/unique_fd.hpp"

namespace po = boost::program_options;

namespace xenft::cli {

namespace {

constexpr const char* kUsage = "usage: xenft status    (--vm ID | --socket PATH) [--json]\n"
                               "       xenft failover  (--vm ID | --socket PATH)   on the backup's host\n"
                               "       xenft unprotect (--vm ID | --socket PATH)   on the primary's host\n";

// Sends one command, returns the daemon's JSON reply or an error naming the socket.
std::optional<nlohmann::json> ask(const std::string& path, const std::string& cmd, std::string& error)
{
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
        error = "socket path " + path + " is too long";
        return std::nullopt;
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        error = "cannot reach xenftd at " + path + ": " + std::strerror(errno) + " (is xenftd running for this VM?)";
        return std::nullopt;
    }
    const std::string line = cmd + "\n";
    (void)!::write(fd.get(), line.data(), line.size());
    std::string reply;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;)
        reply.append(buf, static_cast<std::size_t>(n));
    auto j = nlohmann::json::parse(reply, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        error = "xenftd at " + path + " sent something that is not a JSON object";
        return std::nullopt;
    }
    return j;
}

} // namespace

int run_daemon_command(const std::string& cmd, const std::vector<std::string>& args)
{
    if (!args.empty() && (args[0] == "--help" || args[0] == "help")) {
        std::cout << kUsage;
        return 0;
    }
    std::string socket;
    std::uint64_t vm_id = 0;
    po::options_description opts("xenft " + cmd);
    opts.add_options()("vm", po::value(&vm_id))("socket", po::value(&socket))("json", "");
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(args).options(opts).run(), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "xenft: " << cmd << ": " << e.what() << "\n" << kUsage;
        return 2;
    }
    if (socket.empty() == (vm_id == 0)) {
        std::cerr << "xenft: " << cmd << ": give --vm ID or --socket PATH\n" << kUsage;
        return 2;
    }
    if (socket.empty())
        socket = "/run/xenft/vm-" + std::to_string(vm_id) + ".sock";
    std::string error;
    const auto reply = ask(socket, cmd, error);
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
              << "  role:          " << r.value("role", std::string("?")) << ", epoch " << r.value("epoch", 0) << "\n"
              << "  exits:         " << r.value("exits", 0) << "\n"
              << "  log:           logged " << r.value("logged", 0) << ", acked " << r.value("acked", 0) << ", received "
              << r.value("received", 0) << ", replayed " << r.value("executed", 0) << "\n"
              << "  lag:           " << r.value("lag_entries", 0) << " entries\n"
              << "  held outputs:  " << r.value("held_outputs", 0) << "\n";
    if (r.contains("heartbeats_rejected") && r["heartbeats_rejected"].is_object() && !r["heartbeats_rejected"].empty()) {
        std::cout << "  heartbeats rejected:";
        for (const auto& [why, n] : r["heartbeats_rejected"].items())
            std::cout << " " << n << " " << why << ";";
        std::cout << "\n";
    }
    if (const auto reason = r.value("reason", std::string()); !reason.empty())
        std::cout << "  last failover: " << reason << "\n";
    if (const auto failure = r.value("failure", std::string()); !failure.empty())
        std::cout << "  stopped:       " << failure << "\n";
    return 0;
}

} // namespace xenft::cli
