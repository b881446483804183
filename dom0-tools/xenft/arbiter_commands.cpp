// `xenft arbiter init | show`; see arbiter_commands.hpp and xenft(8).
#include "dom0-tools/xenft/arbiter_commands.hpp"
#include "dom0-tools/xenft/usage.hpp"

#include <unistd.h>

#include <boost/program_options.hpp>
#include <iostream>

#include "xenft/arbiter/arbiter.hpp"

namespace po = boost::program_options;

namespace xenft::cli {

namespace {

constexpr const char* kArbiterUsage =
    "usage: xenft arbiter init --url iscsi://HOST[:PORT]/IQN/LUN --vm ID [--epoch N] [--force] [--lba N]\n"
    "       xenft arbiter show --url iscsi://HOST[:PORT]/IQN/LUN [--vm ID] [--lba N]\n"
    "common: [--initiator IQN] [--timeout SECONDS]\n";

std::string default_initiator()
{
    char host[256] = "localhost";
    ::gethostname(host, sizeof host - 1);
    return std::string("iqn.2026-11.org.xenft:") + host + ".cli";
}

} // namespace

int run_arbiter_command(const std::vector<std::string>& args)
{
    if (const auto status = help_requested(args, kArbiterUsage))
        return *status;
    const std::string sub = args[0];
    if (sub != "init" && sub != "show") {
        std::cerr << "xenft: arbiter: unknown command \"" << sub << "\"\n" << kArbiterUsage;
        return 2;
    }
    arbiter::ArbiterConfig cfg;
    std::uint64_t epoch = 1;
    cfg.lun.initiator_name = default_initiator();
    po::options_description opts("xenft arbiter");
    opts.add_options()("url", po::value(&cfg.lun.url)->required())("vm", po::value(&cfg.vm_id))(
        "epoch", po::value(&epoch))("force", "")("lba", po::value(&cfg.record_lba))(
        "initiator", po::value(&cfg.lun.initiator_name))("timeout", po::value(&cfg.lun.timeout_s));
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(std::vector<std::string>(args.begin() + 1, args.end())).options(opts).run(), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "xenft: arbiter " << sub << ": " << e.what() << "\n" << kArbiterUsage;
        return 2;
    }
    if (sub == "init" && !vm.count("vm")) {
        std::cerr << "xenft: arbiter init: --vm is required (the protected VM's id)\n";
        return 2;
    }
    // The CLI is neither host of the pair: it registers no key and fences nobody.
    cfg.host_id = 0xfffffffe;
    cfg.peer_id = 0xffffffff;
    cfg.fencing = false;
    auto a = arbiter::Arbiter::open(cfg);
    if (!a) {
        std::cerr << "xenft: " << a.error() << "\n";
        return 1;
    }
    if (sub == "init") {
        auto r = a->init(epoch, vm.count("force") > 0);
        if (!r) {
            std::cerr << "xenft: " << r.error() << "\n";
            return 1;
        }
        std::cout << "initialized: " << arbiter::to_string(*r) << "\n";
        return 0;
    }
    auto r = a->read();
    if (!r) {
        std::cerr << "xenft: " << r.error() << "\n";
        return 1;
    }
    if (vm.count("vm") && r->vm_id != cfg.vm_id) {
        std::cerr << "xenft: arbiter: the record arbitrates VM " << r->vm_id << ", not VM " << cfg.vm_id << "\n";
        return 1;
    }
    const auto& caps = a->capabilities();
    std::cout << arbiter::to_string(*r) << "\n"
              << "target: COMPARE AND WRITE " << (caps.compare_and_write ? "yes" : "no") << ", persistent reservations "
              << (caps.persistent_reservations ? "yes" : "no") << "\n";
    return 0;
}

} // namespace xenft::cli
