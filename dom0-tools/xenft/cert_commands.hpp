// `xenft cert ...`: create a CA or a host's key and certificate for the logging channel, and
// print a certificate's fingerprint for pinning.
#pragma once

#include <string>
#include <vector>

namespace xenft::cli {

int run_cert_command(const std::vector<std::string>& args);

} // namespace xenft::cli
