// `xenft log sample | dump | stats`; see log_commands.hpp and xenft(8).
#include "dom0-tools/xenft/log_commands.hpp"
#include "dom0-tools/xenft/usage.hpp"

#include <array>
#include <boost/program_options.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <span>

#include "xenft/logformat/stream.hpp"
#include "xenft/logformat/synthetic.hpp"
#include "xenft/logformat/text.hpp"

namespace po = boost::program_options;

namespace xenft::cli {

namespace {

constexpr const char* kLogUsage =
    "usage: xenft log sample [--workload idle|mixed] [--entries N] [--seed S] [--per-frame N] -o FILE\n"
    "       xenft log dump FILE [--limit N]\n"
    "       xenft log stats FILE\n";

// Reads a whole log file. Log files are bounded by what the channel would accept, but a file
// given on the command line is not: refuse anything over 1 GiB rather than exhaust memory.
bool read_file(const std::string& path, std::vector<std::uint8_t>& out)
{
    constexpr std::streamoff kMaxLogFile = std::streamoff{1} << 30;
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
        std::cerr << "xenft: log " << path << ": is a directory, not a log file\n";
        return false;
    }
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) {
        std::cerr << "xenft: log " << path << ": cannot open: " << std::strerror(errno) << "\n";
        return false;
    }
    const std::streamoff size = in.tellg();
    if (size < 0 || size > kMaxLogFile) {
        std::cerr << "xenft: log " << path << ": file size " << size << " is over the 1 GiB limit\n";
        return false;
    }
    out.resize(static_cast<std::size_t>(size));
    in.seekg(0);
    if (!in.read(reinterpret_cast<char*>(out.data()), size)) {
        std::cerr << "xenft: log " << path << ": read failed\n";
        return false;
    }
    return true;
}

int sample(const std::vector<std::string>& args)
{
    std::string workload = "idle", out;
    std::uint64_t entries = 2000, seed = 1, per_frame = 256;
    po::options_description opts("xenft log sample");
    opts.add_options()("workload", po::value(&workload), "idle (1 kHz timer + clock reads) or mixed (every entry kind)")(
        "entries", po::value(&entries), "number of entries (about)")("seed", po::value(&seed), "random seed")(
        "per-frame", po::value(&per_frame), "entries per frame")("output,o", po::value(&out)->required(), "output file");
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(opts).run(), vm);
    po::notify(vm);

    if (per_frame == 0 || per_frame > logformat::kMaxEntriesPerFrame) {
        std::cerr << "xenft: log sample: --per-frame must be 1.." << logformat::kMaxEntriesPerFrame << "\n";
        return 2;
    }
    if (entries == 0 || entries > 10'000'000) {
        std::cerr << "xenft: log sample: --entries must be 1..10000000\n";
        return 2;
    }
    std::vector<logformat::Entry> log;
    if (workload == "idle")
        log = logformat::idle_guest_log(entries / 2, 1000, seed);
    else if (workload == "mixed")
        log = logformat::mixed_log(entries, seed);
    else {
        std::cerr << "xenft: log sample: unknown workload \"" << workload << "\" (idle or mixed)\n";
        return 2;
    }
    const auto bytes = logformat::encode_frames(log, per_frame);
    std::ofstream f(out, std::ios::binary | std::ios::trunc);
    if (!f || !f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) {
        std::cerr << "xenft: log sample: cannot write " << out << ": " << std::strerror(errno) << "\n";
        return 1;
    }
    std::cout << "wrote " << log.size() << " entries in " << bytes.size() << " bytes to " << out << "\n";
    return 0;
}

int dump(const std::vector<std::string>& args)
{
    std::string path;
    std::uint64_t limit = 0;
    po::options_description opts("xenft log dump");
    opts.add_options()("file", po::value(&path)->required(), "log file")("limit", po::value(&limit),
                                                                         "print at most N entries (0: all)");
    po::positional_options_description pos;
    pos.add("file", 1);
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
    po::notify(vm);

    std::vector<std::uint8_t> bytes;
    if (!read_file(path, bytes))
        return 1;
    // A damaged or cut log still shows what comes before the first bad frame (what an
    // administrator looking at a crashed host's log wants), then the error.
    auto decoded = logformat::decode_frames(bytes);
    std::optional<logformat::StreamError> bad;
    if (!decoded) {
        bad = decoded.error();
        decoded = logformat::decode_frames(std::span<const std::uint8_t>(bytes).first(bad->frame_offset));
    }
    std::uint64_t printed = 0;
    if (decoded)
        for (const auto& frame : *decoded)
            for (const auto& e : frame.entries) {
                if (limit != 0 && printed == limit)
                    return 0;
                std::cout << logformat::to_text(e) << "\n";
                ++printed;
            }
    if (bad) {
        std::cout.flush();
        std::cerr << "xenft: log " << path << ": " << bad->message() << " (after " << printed << " entries)\n";
        return 1;
    }
    return 0;
}

int stats(const std::vector<std::string>& args)
{
    std::string path;
    po::options_description opts("xenft log stats");
    opts.add_options()("file", po::value(&path)->required(), "log file");
    po::positional_options_description pos;
    pos.add("file", 1);
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
    po::notify(vm);

    std::vector<std::uint8_t> bytes;
    if (!read_file(path, bytes))
        return 1;
    auto frames = logformat::decode_frames(bytes);
    if (!frames) {
        std::cerr << "xenft: log " << path << ": " << frames.error().message() << "\n";
        return 1;
    }
    std::array<std::uint64_t, logformat::kMaxKind + 1> per_kind{};
    std::uint64_t entries = 0;
    for (const auto& f : *frames)
        for (const auto& e : f.entries) {
            ++per_kind[static_cast<std::size_t>(logformat::kind_of(e.payload))];
            ++entries;
        }
    std::cout << "frames " << frames->size() << "\nentries " << entries << "\nbytes " << bytes.size() << "\n";
    if (entries > 0)
        std::cout << "bytes_per_entry " << static_cast<double>(bytes.size()) / static_cast<double>(entries) << "\n";
    for (std::uint8_t k = 1; k <= logformat::kMaxKind; ++k)
        if (per_kind[k] != 0)
            std::cout << "kind " << logformat::kind_name(static_cast<logformat::Kind>(k)) << " " << per_kind[k] << "\n";
    return 0;
}

} // namespace

int run_log_command(const std::vector<std::string>& args)
{
    if (const auto status = help_requested(args, kLogUsage))
        return *status;
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    try {
        if (args[0] == "sample")
            return sample(rest);
        if (args[0] == "dump")
            return dump(rest);
        if (args[0] == "stats")
            return stats(rest);
    } catch (const po::error& e) {
        std::cerr << "xenft: log " << args[0] << ": " << e.what() << "\n" << kLogUsage;
        return 2;
    }
    std::cerr << "xenft: log: unknown command \"" << args[0] << "\"\n" << kLogUsage;
    return 2;
}

} // namespace xenft::cli
