// `xenft arbiter ...`: prepare the shared LUN's arbitration record and show who holds it.
#pragma once

#include <string>
#include <vector>

namespace xenft::cli {

int run_arbiter_command(const std::vector<std::string>& args);

} // namespace xenft::cli
