// Tests of deterministic execution on the KVM backend: the PVH image loader, the bare-metal
// test guest booting through its PVH entry, a recorded run replayed bit-identically into a
// fresh VM (memory, vCPU), periodic digests checked along the way, and an altered log entry
// reported as a divergence at the right exit. Needs /dev/kvm; XENFT_GUEST names the guest
// image (make check sets it).
#define BOOST_TEST_MODULE replay
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "xenft/backends/kvm/kvm_backend.hpp"
#include "xenft/engine/replay.hpp"
#include "xenft/logformat/stream.hpp"
#include "xenft/logformat/text.hpp"

using namespace xenft;
using namespace xenft::engine;
namespace utf = boost::unit_test;

namespace {

constexpr std::uint64_t kMemory = 16u << 20;

boost::test_tools::assertion_result have_kvm(utf::test_unit_id)
{
    const int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    const bool ok = fd >= 0;
    if (ok)
        ::close(fd);
    boost::test_tools::assertion_result r(ok);
    r.message() << "this machine has no usable /dev/kvm";
    return r;
}

std::string guest_path()
{
    const char* p = std::getenv("XENFT_GUEST");
    return p ? p : "tests/guest/xenft-guest.elf";
}

// One VM with its devices. The recording side reads time from the host clock.
struct Vm {
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    devices::TimeSource now = [this] {
        return static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
    };
    devices::Uart16550 uart;
    devices::LapicTimer timer{now};
    devices::ClockReg clock{now};
    devices::DeviceBus bus;
    std::unique_ptr<backends::KvmBackend> backend;

    Vm()
    {
        auto img = load_pvh_image(guest_path(), kMemory);
        BOOST_TEST_REQUIRE(img.has_value(), (img ? "" : img.error()));
        auto b = backends::KvmBackend::create(*img, kMemory);
        BOOST_TEST_REQUIRE(b.has_value(), (b ? "" : b.error()));
        backend = std::move(b).value();
        bus.attach(uart);
        bus.attach(timer);
        bus.attach(clock);
    }
};

template <class R>
std::string error_of(const R& r)
{
    return r.has_value() ? std::string() : r.error();
}

struct Recording {
    std::vector<logformat::Entry> log;
    std::uint64_t exits = 0;
    logformat::Sha256 final_digest{};
    std::string uart;
};

Recording record(std::uint64_t exits, std::uint64_t digest_every)
{
    Vm vm;
    Recorder rec(*vm.backend, vm.bus, vm.timer, vm.now, digest_every);
    Recording r;
    auto ok = rec.run(exits, r.log);
    BOOST_TEST_REQUIRE(ok.has_value(), (ok ? "" : ok.error()));
    r.exits = rec.exits();
    r.final_digest = vm.backend->digest();
    r.uart = vm.uart.output();
    return r;
}

} // namespace

BOOST_AUTO_TEST_CASE(pvh_images_are_validated)
{
    auto img = load_pvh_image(guest_path(), kMemory);
    BOOST_TEST_REQUIRE(img.has_value(), (img ? "" : img.error()));
    BOOST_TEST(img->entry == 0x100000u);
    BOOST_TEST(!img->segments.empty());
    std::vector<std::uint8_t> junk(200, 0x7f);
    BOOST_TEST(parse_pvh_image(junk, kMemory).error() == "not an ELF file");
    BOOST_TEST(load_pvh_image(guest_path(), 0x1000).error().find("does not fit in guest memory") != std::string::npos);
    BOOST_TEST(load_pvh_image("/nonexistent", kMemory).error().find("cannot open") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_guest_boots_through_its_pvh_entry, *utf::precondition(have_kvm))
{
    const auto r = record(3000, 0);
    BOOST_TEST(r.uart.find("xenft test guest: ready\n") == 0u, r.uart);
    std::size_t ticks = 0, reads = 0;
    for (const auto& e : r.log) {
        ticks += std::holds_alternative<logformat::Interrupt>(e.payload);
        reads += std::holds_alternative<logformat::IoRead>(e.payload);
    }
    BOOST_TEST_MESSAGE(r.exits << " exits: " << ticks << " timer interrupts, " << reads << " clock reads logged");
    BOOST_TEST(ticks > 10u);
    BOOST_TEST(reads > 100u);
}

BOOST_AUTO_TEST_CASE(a_recorded_run_replays_bit_identically, *utf::precondition(have_kvm))
{
    const std::uint64_t exits = 20'000;
    const auto t0 = std::chrono::steady_clock::now();
    const auto rec = record(exits, 1000);
    const double rec_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // The log survives its own encoding: replay what went through the wire format.
    const auto bytes = logformat::encode_frames(rec.log, 1024);
    auto frames = logformat::decode_frames(bytes);
    BOOST_TEST_REQUIRE(frames.has_value());
    std::vector<logformat::Entry> log;
    for (auto& f : *frames)
        log.insert(log.end(), f.entries.begin(), f.entries.end());
    BOOST_TEST_MESSAGE("recorded " << exits << " exits in " << rec_s << " s: " << log.size() << " entries, "
                                   << bytes.size() << " bytes");

    for (int attempt = 1; attempt <= 3; ++attempt) {
        Vm vm;
        Replayer rep(*vm.backend, vm.bus);
        const auto t = std::chrono::steady_clock::now();
        auto ok = rep.run(log, rec.exits);
        BOOST_TEST_REQUIRE(ok.has_value(), "attempt " << attempt << ": " << (ok ? "" : ok.error().message()));
        BOOST_TEST_MESSAGE("replay " << attempt << ": "
                                     << std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() << " s");
        BOOST_TEST((vm.backend->digest() == rec.final_digest), "attempt " << attempt << ": final state differs");
        BOOST_TEST(vm.uart.output() == rec.uart);
    }
}

BOOST_AUTO_TEST_CASE(replay_from_a_mid_run_checkpoint, *utf::precondition(have_kvm))
{
    // Record 5,000 exits, checkpoint the whole VM, record 5,000 more; a fresh VM restored from
    // the checkpoint replays the second half to the recorder's final state.
    Vm vm;
    Recorder rec(*vm.backend, vm.bus, vm.timer, vm.now, 1000);
    std::vector<logformat::Entry> log;
    BOOST_TEST_REQUIRE(rec.run(5000, log).has_value());
    const std::uint64_t at = rec.exits();
    const auto checkpoint = vm.backend->save_state();
    const auto timer = vm.timer.registers();
    const auto lcr = vm.uart.line_control();
    const std::size_t first_after = log.size();
    BOOST_TEST_REQUIRE(rec.run(5000, log).has_value());
    const auto final_digest = vm.backend->digest();

    for (int attempt = 1; attempt <= 3; ++attempt) {
        Vm replica;
        auto restored = replica.backend->restore_state(checkpoint);
        BOOST_TEST_REQUIRE(restored.has_value(), (restored ? "" : restored.error()));
        replica.timer.set_registers(timer);
        replica.uart.set_line_control(lcr);
        Replayer rep(*replica.backend, replica.bus);
        rep.resume_after(at);
        auto ok = rep.run(std::span(log).subspan(first_after), rec.exits());
        BOOST_TEST_REQUIRE(ok.has_value(), "attempt " << attempt << ": " << (ok ? "" : ok.error().message()));
        BOOST_TEST((replica.backend->digest() == final_digest), "attempt " << attempt);
    }
    // A checkpoint of another VM size, or a damaged one, is refused.
    std::vector<std::uint8_t> damaged(checkpoint.begin(), checkpoint.begin() + 100);
    BOOST_TEST(error_of(vm.backend->restore_state(damaged)).find("truncated") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(an_altered_log_entry_is_reported_at_its_exit, *utf::precondition(have_kvm))
{
    const auto rec = record(6000, 500);
    // Change one clock value in the middle: the guest folds it into its state, so the next
    // digest differs, and the report names that digest's exit.
    auto log = rec.log;
    std::size_t victim = 0;
    for (std::size_t i = log.size() / 2; i < log.size(); ++i)
        if (std::holds_alternative<logformat::IoRead>(log[i].payload)) {
            victim = i;
            break;
        }
    BOOST_TEST_REQUIRE(victim != 0u);
    std::get<logformat::IoRead>(log[victim].payload).value += 1;
    std::uint64_t next_digest = 0;
    for (std::size_t i = victim; i < log.size() && next_digest == 0; ++i)
        if (std::holds_alternative<logformat::StateDigest>(log[i].payload))
            next_digest = log[i].exit;
    BOOST_TEST_REQUIRE(next_digest != 0u);

    Vm vm;
    Replayer rep(*vm.backend, vm.bus);
    auto r = rep.run(log, rec.exits);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST_MESSAGE(r.error().message() << " (value altered at exit " << log[victim].exit << ")");
    BOOST_TEST(r.error().exit == next_digest);
    BOOST_TEST(r.error().what.find("state digest differs") != std::string::npos);

    // A dropped interrupt shifts everything after it: the guest then reads where the log
    // expects nothing, or the digest differs, at or after that exit, never before.
    log = rec.log;
    std::size_t irq = 0;
    for (std::size_t i = log.size() / 3; i < log.size(); ++i)
        if (std::holds_alternative<logformat::Interrupt>(log[i].payload)) {
            irq = i;
            break;
        }
    const std::uint64_t irq_exit = log[irq].exit;
    log.erase(log.begin() + static_cast<std::ptrdiff_t>(irq));
    Vm vm2;
    Replayer rep2(*vm2.backend, vm2.bus);
    auto r2 = rep2.run(log, rec.exits);
    BOOST_TEST_REQUIRE(!r2.has_value());
    BOOST_TEST_MESSAGE(r2.error().message() << " (interrupt dropped at exit " << irq_exit << ")");
    BOOST_TEST(r2.error().exit >= irq_exit);
}
