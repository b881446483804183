// `xenft status | failover | unprotect | protect | list`: talk to a running xenftd over its
// control socket (its configuration's control.socket, by default /run/xenft/vm-<id>.sock; one
// JSON line per request). See xenft(8).
#pragma once

#include <string>
#include <vector>

namespace xenft::cli {

// cmd is "status", "failover", "unprotect" or "protect"; args are the options after it.
int run_daemon_command(const std::string& cmd, const std::vector<std::string>& args);
// Every VM this host's configurations name, with what its xenftd says (or why nothing).
int run_list_command(const std::vector<std::string>& args);

} // namespace xenft::cli
