// The package version and the log format version, for --version output and peer checks.
#pragma once

#include <string>

namespace xenft {

std::string version_string(); // e.g. "xenft 0.1.0 (log format 1)"

} // namespace xenft
