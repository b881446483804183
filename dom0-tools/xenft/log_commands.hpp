// `xenft log ...`: create, inspect and check FT log files (concatenated log frames).
#pragma once

#include <string>
#include <vector>

namespace xenft::cli {

// Runs `xenft log ARGS...`; returns the process exit status. Errors go to stderr.
int run_log_command(const std::vector<std::string>& args);

} // namespace xenft::cli
