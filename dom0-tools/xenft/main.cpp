// The xenft command-line tool for administrators: logs, logging-channel certificates, the
// shared LUN's arbitration record, and a running xenftd's status, failover, unprotect and protect
// (see xenft(8)).
#include <iostream>
#include <string>
#include <vector>

#include "dom0-tools/xenft/arbiter_commands.hpp"
#include "dom0-tools/xenft/cert_commands.hpp"
#include "dom0-tools/xenft/daemon_commands.hpp"
#include "dom0-tools/xenft/log_commands.hpp"
#include "xenft/common/version.hpp"

namespace {

constexpr const char* kUsage =
    "usage: xenft [--version] [--help] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  log sample   write a synthetic FT log file\n"
    "  log dump     print the entries of an FT log file\n"
    "  log stats    count frames, entries and bytes of an FT log file\n"
    "  cert ca      create a CA for the hosts' logging-channel certificates\n"
    "  cert create  create a host's key and certificate (CA-signed or self-signed)\n"
    "  cert fingerprint  print a certificate's SHA-256 fingerprint, for pinning\n"
    "  arbiter init write a fresh arbitration record on the shared LUN\n"
    "  arbiter show print the arbitration record and what the target supports\n"
    "  list         every VM this host protects: name, id, role, epoch, lag, last failover\n"
    "  status       role, epoch, log lag and held outputs of a protected VM (from xenftd)\n"
    "  failover     make the backup go live now (on the backup's host)\n"
    "  unprotect    drop the backup; the primary runs alone (on the primary's host)\n"
    "  protect      allow a backup again (on the primary), or join as backup now (on a halted host)\n"
    "  version      the package and log format versions and the backends xenftd can drive\n"
    "\n"
    "See xenft(8).\n";

} // namespace

int main(int argc, char** argv)
{
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::cerr << kUsage;
        return 2;
    }
    const std::string& cmd = args[0];
    if (cmd == "--version" || cmd == "version") {
        std::cout << xenft::version_string() << "\n";
        return 0;
    }
    if (cmd == "--help" || cmd == "help" || cmd == "-h") {
        std::cout << kUsage;
        return 0;
    }
    try {
        if (cmd == "log")
            return xenft::cli::run_log_command({args.begin() + 1, args.end()});
        if (cmd == "arbiter")
            return xenft::cli::run_arbiter_command({args.begin() + 1, args.end()});
        if (cmd == "list")
            return xenft::cli::run_list_command({args.begin() + 1, args.end()});
        if (cmd == "status" || cmd == "failover" || cmd == "unprotect" || cmd == "protect")
            return xenft::cli::run_daemon_command(cmd, {args.begin() + 1, args.end()});
        if (cmd == "cert")
            return xenft::cli::run_cert_command({args.begin() + 1, args.end()});
    } catch (const std::exception& e) {
        std::cerr << "xenft: " << cmd << ": " << e.what() << "\n";
        return 1;
    }
    std::cerr << "xenft: unknown command \"" << cmd << "\"\n" << kUsage;
    return 2;
}
