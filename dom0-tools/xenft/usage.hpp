// Shared by the xenft subcommands: "help" and a missing subcommand print the usage.
#pragma once

#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace xenft::cli {

// The exit status when args asks for help (0, usage on stdout) or is empty (2, usage on
// stderr); nothing when there is a subcommand to run.
inline std::optional<int> help_requested(const std::vector<std::string>& args, const char* usage)
{
    if (!args.empty() && args[0] != "--help" && args[0] != "help")
        return std::nullopt;
    (args.empty() ? std::cerr : std::cout) << usage;
    return args.empty() ? 2 : 0;
}

} // namespace xenft::cli
