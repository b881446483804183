// xenftd, the per-host FT daemon (see xenftd(8)). This build knows its configuration and its
// version; the protection engine (logging channel, arbiter, replay) lands component by
// component, and the README's status table says which parts run today.
#include <boost/program_options.hpp>
#include <iostream>
#include <string>

#include "xenft/common/version.hpp"

namespace po = boost::program_options;

int main(int argc, char** argv)
{
    std::string config_path = "/etc/xenft/xenft.conf";
    po::options_description opts("usage: xenftd [options]");
    opts.add_options()("help,h", "show this help")("version", "print the version")(
        "config,c", po::value(&config_path), "configuration file (default /etc/xenft/xenft.conf)");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, opts), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "xenftd: " << e.what() << "\n" << opts;
        return 2;
    }
    if (vm.count("help")) {
        std::cout << opts;
        return 0;
    }
    if (vm.count("version")) {
        std::cout << xenft::version_string() << "\n";
        return 0;
    }
    std::cerr << "xenftd: cannot protect domains yet: this build has no protection engine "
                 "(see the status table in README.md)\n";
    return 1;
}
