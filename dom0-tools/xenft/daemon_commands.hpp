// `xenft status | failover | unprotect`: talk to a running xenftd over its control socket
// (/run/xenft/vm-<id>.sock, one JSON line per request). See xenft(8).
#pragma once

#include <string>
#include <vector>

namespace xenft::cli {

// cmd is "status", "failover" or "unprotect"; args are the options after it.
int run_daemon_command(const std::string& cmd, const std::vector<std::string>& args);

} // namespace xenft::cli
