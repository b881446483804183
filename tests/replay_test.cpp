// Tests of deterministic execution on the KVM backend with the bare-metal test guest
// (tests/guest): the PVH loader and command line, the guest's modes, record and replay
// bit-identical in memory, vCPU and device state, checkpoints, divergence reports, a backup that
// replays a live recording and goes live, dirty-page tracking and a live copy, and the
// acceptance run: the guest's key-value service over a real TAP interface and a disk image,
// driven by a client with random requests for more than 100,000 exits, replayed 3 times out
// of 3, from a mid-run checkpoint, and taken over by the replica.
// Needs /dev/kvm; the network tests also need a TAP interface (root). XENFT_GUEST names the
// guest image (make check sets it).
#define BOOST_TEST_MODULE replay
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <random>
#include <thread>

#include "tests/vm_fixture.hpp"
#include "xenft/engine/replay.hpp"
#include "xenft/logformat/stream.hpp"
#include "xenft/logformat/text.hpp"

using namespace xenft;
using namespace xenft::engine;
using xenft::testing::DiskImage;
using xenft::testing::KvCall;
using xenft::testing::KvClient;
using xenft::testing::TapNet;
using xenft::testing::Vm;
namespace utf = boost::unit_test;

namespace {

constexpr std::uint64_t kDiskBytes = 1u << 20;

boost::test_tools::assertion_result need_kvm(utf::test_unit_id)
{
    boost::test_tools::assertion_result r(testing::have_kvm());
    r.message() << "this machine has no usable /dev/kvm";
    return r;
}

boost::test_tools::assertion_result need_kvm_and_tap(utf::test_unit_id)
{
    if (!testing::have_kvm()) {
        boost::test_tools::assertion_result r(false);
        r.message() << "this machine has no usable /dev/kvm";
        return r;
    }
    boost::test_tools::assertion_result r(testing::have_tap());
    r.message() << "cannot create a TAP interface here (needs /dev/net/tun and CAP_NET_ADMIN)";
    return r;
}

template <class R>
std::string error_of(const R& r)
{
    return r.has_value() ? std::string() : r.error();
}

#define REQUIRE_VM(vm) BOOST_TEST_REQUIRE((vm).machine != nullptr, (vm).error)

struct Recording {
    std::vector<logformat::Entry> log;
    std::uint64_t exits = 0;
    logformat::Sha256 final_digest{};
    std::string uart;
};

Recording record(std::uint64_t exits, std::uint64_t digest_every, const std::string& cmdline = {})
{
    Vm vm({}, cmdline);
    REQUIRE_VM(vm);
    Recorder rec(*vm.machine, digest_every);
    Recording r;
    auto ok = rec.run(exits, r.log);
    BOOST_TEST_REQUIRE(ok.has_value(), error_of(ok));
    r.exits = rec.exits();
    r.final_digest = vm.machine->digest();
    r.uart = vm.machine->uart().output();
    return r;
}

template <class P>
std::size_t count(const std::vector<logformat::Entry>& log)
{
    std::size_t n = 0;
    for (const auto& e : log)
        n += std::holds_alternative<P>(e.payload);
    return n;
}

} // namespace

BOOST_AUTO_TEST_CASE(pvh_images_are_validated)
{
    auto img = load_pvh_image(testing::guest_path(), testing::kGuestMemory);
    BOOST_TEST_REQUIRE(img.has_value(), error_of(img));
    BOOST_TEST(img->entry == 0x100000u);
    BOOST_TEST(!img->segments.empty());
    std::vector<std::uint8_t> junk(200, 0x7f);
    BOOST_TEST(parse_pvh_image(junk, testing::kGuestMemory).error() == "not an ELF file");
    BOOST_TEST(load_pvh_image(testing::guest_path(), 0x1000).error().find("does not fit in guest memory") != std::string::npos);
    BOOST_TEST(load_pvh_image("/nonexistent", testing::kGuestMemory).error().find("cannot open") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(bad_machine_settings_are_refused, *utf::precondition(need_kvm))
{
    auto img = load_pvh_image(testing::guest_path(), testing::kGuestMemory);
    BOOST_TEST_REQUIRE(img.has_value());
    BOOST_TEST(error_of(backends::KvmBackend::create(*img, testing::kGuestMemory, std::string(5000, 'x'))).find("command line") !=
               std::string::npos);
    BOOST_TEST(error_of(backends::KvmBackend::create(*img, testing::kGuestMemory + 1)).find("whole number of pages") !=
               std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_guest_boots_through_its_pvh_entry, *utf::precondition(need_kvm))
{
    const auto r = record(3000, 0);
    BOOST_TEST(r.uart.find("xenft test guest: ready, mode service\n") == 0u, r.uart);
    const std::size_t ticks = count<logformat::Interrupt>(r.log), reads = count<logformat::IoRead>(r.log);
    BOOST_TEST_MESSAGE(r.exits << " exits: " << ticks << " timer interrupts, " << reads << " clock reads logged");
    BOOST_TEST(ticks > 10u);
    BOOST_TEST(reads > 100u);
}

BOOST_AUTO_TEST_CASE(the_command_line_selects_the_guest_mode, *utf::precondition(need_kvm))
{
    // Idle: nothing but timer ticks, each with the clock read of its handler.
    const auto idle = record(3000, 0, "mode=idle");
    BOOST_TEST(idle.uart.find("mode idle\n") != std::string::npos, idle.uart);
    const std::size_t ticks = count<logformat::Interrupt>(idle.log), reads = count<logformat::IoRead>(idle.log);
    BOOST_TEST(ticks > 500u);
    BOOST_TEST(ticks <= reads + 1);
    BOOST_TEST(reads <= ticks);
    // CPU: work units reported on the console, exits only for clock reads and the console.
    const auto cpu = record(400, 0, "mode=cpu");
    BOOST_TEST(cpu.uart.find("mode cpu\n") != std::string::npos);
    BOOST_TEST(cpu.uart.find("work 16\n") != std::string::npos, cpu.uart);
}

BOOST_AUTO_TEST_CASE(a_recorded_run_replays_bit_identically, *utf::precondition(need_kvm))
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
    BOOST_TEST_MESSAGE("recorded " << exits << " exits in " << rec_s << " s: " << log.size() << " entries, " << bytes.size()
                                   << " bytes");

    for (int attempt = 1; attempt <= 3; ++attempt) {
        Vm vm;
        REQUIRE_VM(vm);
        Replayer rep(*vm.machine);
        const auto t = std::chrono::steady_clock::now();
        auto ok = rep.run(log, rec.exits);
        BOOST_TEST_REQUIRE(ok.has_value(), "attempt " << attempt << ": " << (ok ? "" : ok.error().message()));
        BOOST_TEST_MESSAGE("replay " << attempt << ": "
                                     << std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() << " s");
        BOOST_TEST((vm.machine->digest() == rec.final_digest), "attempt " << attempt << ": final state differs");
        BOOST_TEST(vm.machine->uart().output() == rec.uart);
    }
}

BOOST_AUTO_TEST_CASE(replay_from_a_mid_run_checkpoint, *utf::precondition(need_kvm))
{
    // Record 5,000 exits, checkpoint the whole machine, record 5,000 more; a fresh VM restored
    // from the checkpoint replays the second half to the recorder's final state.
    Vm vm;
    REQUIRE_VM(vm);
    Recorder rec(*vm.machine, 1000);
    std::vector<logformat::Entry> log;
    BOOST_TEST_REQUIRE(rec.run(5000, log).has_value());
    const std::uint64_t at = rec.exits();
    const auto checkpoint = vm.machine->save_state();
    const std::size_t first_after = log.size();
    BOOST_TEST_REQUIRE(rec.run(5000, log).has_value());
    const auto final_digest = vm.machine->digest();

    for (int attempt = 1; attempt <= 3; ++attempt) {
        Vm replica;
        REQUIRE_VM(replica);
        auto restored = replica.machine->restore_state(checkpoint);
        BOOST_TEST_REQUIRE(restored.has_value(), error_of(restored));
        Replayer rep(*replica.machine);
        rep.resume_after(at);
        auto ok = rep.run(std::span(log).subspan(first_after), rec.exits());
        BOOST_TEST_REQUIRE(ok.has_value(), "attempt " << attempt << ": " << (ok ? "" : ok.error().message()));
        BOOST_TEST((replica.machine->digest() == final_digest), "attempt " << attempt);
    }
    // A damaged checkpoint, or one of a machine with other devices, is refused.
    std::vector<std::uint8_t> damaged(checkpoint.begin(), checkpoint.begin() + 100);
    BOOST_TEST(error_of(vm.machine->restore_state(damaged)).find("truncated") != std::string::npos);
    engine::MachineSpec with_nic;
    with_nic.network = true;
    Vm other(with_nic);
    REQUIRE_VM(other);
    BOOST_TEST(error_of(other.machine->restore_state(checkpoint)).find("device state") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(an_altered_log_entry_is_reported_at_its_exit, *utf::precondition(need_kvm))
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
    REQUIRE_VM(vm);
    Replayer rep(*vm.machine);
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
    REQUIRE_VM(vm2);
    Replayer rep2(*vm2.machine);
    auto r2 = rep2.run(log, rec.exits);
    BOOST_TEST_REQUIRE(!r2.has_value());
    BOOST_TEST_MESSAGE(r2.error().message() << " (interrupt dropped at exit " << irq_exit << ")");
    BOOST_TEST(r2.error().exit >= irq_exit);
}

BOOST_AUTO_TEST_CASE(dirty_pages_are_tracked_and_a_live_copy_converges, *utf::precondition(need_kvm))
{
    // The source keeps running between copy rounds; each round sends only what the guest (or
    // a device) wrote since the last. The last round, with the source stopped, plus the vCPU
    // and device state, makes a copy with the same digest, which then replays the source's
    // next exits to the same state again.
    Vm source;
    REQUIRE_VM(source);
    Recorder rec(*source.machine, 0);
    std::vector<logformat::Entry> log;
    BOOST_TEST_REQUIRE(rec.run(500, log).has_value());
    Vm copy;
    REQUIRE_VM(copy);
    Backend& from = source.machine->backend();
    Backend& to = copy.machine->backend();
    const std::uint64_t pages = from.memory_bytes() / Backend::kPageBytes;

    auto send = [&](const std::vector<std::uint64_t>& list) {
        std::vector<std::uint8_t> page(Backend::kPageBytes);
        for (std::uint64_t p : list) {
            BOOST_TEST_REQUIRE(from.read_guest(p * Backend::kPageBytes, page));
            BOOST_TEST_REQUIRE(to.write_guest(p * Backend::kPageBytes, page));
        }
    };
    (void)from.dirty_pages(); // start of round 1: everything, tracked from here on
    std::vector<std::uint64_t> all(pages);
    for (std::uint64_t p = 0; p < pages; ++p)
        all[p] = p;
    send(all);
    std::vector<std::size_t> round_sizes;
    for (int round = 0; round < 3; ++round) {
        BOOST_TEST_REQUIRE(rec.run(1000, log).has_value());
        const auto dirty = from.dirty_pages();
        round_sizes.push_back(dirty.size());
        send(dirty);
    }
    // The guest writes its stack and variables all the time, but a small part of its memory.
    for (std::size_t n : round_sizes) {
        BOOST_TEST(n > 0u);
        BOOST_TEST(n < pages / 10);
    }
    BOOST_TEST(from.dirty_pages().empty()); // nothing ran since the last round

    BOOST_TEST_REQUIRE(rec.run(300, log).has_value());
    send(from.dirty_pages()); // the final, stopped round
    BOOST_TEST_REQUIRE(to.restore_cpu_state(from.save_cpu_state()).has_value());
    BOOST_TEST_REQUIRE(copy.machine->load_devices(source.machine->save_devices()).has_value());
    BOOST_TEST((copy.machine->digest() == source.machine->digest()));
    BOOST_TEST_MESSAGE("live copy: " << pages << " pages, then rounds of " << round_sizes[0] << ", " << round_sizes[1] << ", "
                                     << round_sizes[2] << " dirty pages");

    // From here both run the same exits: the copy replays what the source records.
    const std::uint64_t at = rec.exits();
    const std::size_t first = log.size();
    BOOST_TEST_REQUIRE(rec.run(2000, log).has_value());
    Replayer rep(*copy.machine);
    rep.resume_after(at);
    auto ok = rep.run(std::span(log).subspan(first), rec.exits());
    BOOST_TEST_REQUIRE(ok.has_value(), (ok ? "" : ok.error().message()));
    BOOST_TEST((copy.machine->digest() == source.machine->digest()));
}

// ----- The acceptance run: network, disk, timer, 100,000+ exits ---------------------------------

namespace {

struct ServiceRecording {
    std::vector<logformat::Entry> log;
    std::uint64_t exits = 0;
    logformat::Sha256 final_digest{};
    std::string uart;
    std::vector<std::uint8_t> checkpoint;
    std::uint64_t checkpoint_exit = 0;
    std::size_t checkpoint_entry = 0;
    std::vector<KvCall> calls;
    double seconds = 0;
};

engine::MachineSpec service_spec()
{
    engine::MachineSpec spec;
    spec.network = true;
    spec.disk_bytes = kDiskBytes;
    return spec;
}

// Clients send random ADDs and GETs with random pauses while the recorder runs; they stop
// when the recorder passes stop_clients_at and the recorder goes on until the last answer.
ServiceRecording record_service(TapNet& net, devices::BlockPort& disk, std::uint64_t min_exits, std::uint64_t checkpoint_at,
                                unsigned seed)
{
    Vm vm(service_spec(), net.cmdline());
    REQUIRE_VM(vm);
    Recorder rec(*vm.machine, 5000, HostIo{net.tap(), &disk});
    ServiceRecording r;
    std::atomic<bool> stop{false};
    std::atomic<int> running{2};
    std::vector<KvCall> calls[2];
    std::vector<std::thread> clients;
    for (int c = 0; c < 2; ++c)
        clients.emplace_back([&, c] {
            std::mt19937 rng(seed + static_cast<unsigned>(c));
            KvClient client(net.host_ip(), net.guest_ip(), 100 + static_cast<std::uint32_t>(c));
            while (!stop) {
                const bool add = rng() % 10 < 7;
                calls[c].push_back(client.call(add ? 1 : 2, static_cast<std::uint8_t>(rng() % 8), rng() % 1000,
                                               std::chrono::milliseconds(200), 50));
                std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
            }
            --running;
        });
    const auto t0 = std::chrono::steady_clock::now();
    while (rec.exits() < min_exits || running > 0) {
        auto ok = rec.run(1000, r.log);
        if (!ok) {
            stop = true;
            for (auto& t : clients)
                t.join();
            BOOST_TEST_REQUIRE(false, ok.error());
        }
        if (r.checkpoint.empty() && rec.exits() >= checkpoint_at) {
            r.checkpoint = vm.machine->save_state();
            r.checkpoint_exit = rec.exits();
            r.checkpoint_entry = r.log.size();
        }
        if (rec.exits() >= min_exits - 5000)
            stop = true;
    }
    for (auto& t : clients)
        t.join();
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.exits = rec.exits();
    r.final_digest = vm.machine->digest();
    r.uart = vm.machine->uart().output();
    for (auto& v : calls)
        r.calls.insert(r.calls.end(), v.begin(), v.end());
    return r;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_service_run_with_network_disk_and_timer_replays_bit_identically,
                     *utf::precondition(need_kvm_and_tap))
{
    TapNet net;
    BOOST_TEST_REQUIRE(net.error().empty(), net.error());
    DiskImage image(kDiskBytes);
    auto disk = devices::FileStore::open(image.path());
    BOOST_TEST_REQUIRE(disk.has_value(), error_of(disk));

    const auto rec = record_service(net, *disk, 100'000, 50'000, 20261125);
    std::size_t answered = 0, adds = 0;
    for (const auto& c : rec.calls) {
        answered += c.answered;
        adds += c.answered && c.op == 1;
    }
    BOOST_TEST_MESSAGE("recorded " << rec.exits << " exits in " << rec.seconds << " s: " << rec.log.size() << " entries ("
                                   << count<logformat::NetRx>(rec.log) << " frames in, "
                                   << count<logformat::Output>(rec.log) << " outputs, "
                                   << count<logformat::DiskRead>(rec.log) << " disk reads, "
                                   << count<logformat::Interrupt>(rec.log) << " interrupts, "
                                   << count<logformat::IoRead>(rec.log) << " clock reads); " << rec.calls.size()
                                   << " client requests, " << answered << " answered");
    BOOST_TEST(rec.exits >= 100'000u);
    BOOST_TEST(answered == rec.calls.size());
    BOOST_TEST(adds > 50u);
    const auto verdict = testing::check_history(rec.calls);
    BOOST_TEST(!verdict.has_value(), verdict.value_or(""));
    BOOST_TEST(count<logformat::NetRx>(rec.log) > 100u);
    BOOST_TEST(count<logformat::DiskRead>(rec.log) >= 1u);

    // Three replays from the start, each to the same memory, vCPU and device state.
    std::unique_ptr<Vm> last;
    for (int attempt = 1; attempt <= 3; ++attempt) {
        auto vm = std::make_unique<Vm>(service_spec(), net.cmdline());
        REQUIRE_VM(*vm);
        Replayer rep(*vm->machine);
        const auto t = std::chrono::steady_clock::now();
        auto ok = rep.run(rec.log, rec.exits);
        BOOST_TEST_REQUIRE(ok.has_value(), "attempt " << attempt << ": " << (ok ? "" : ok.error().message()));
        BOOST_TEST_MESSAGE("replay " << attempt << ": "
                                     << std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() << " s");
        BOOST_TEST((vm->machine->digest() == rec.final_digest), "attempt " << attempt << ": final state differs");
        BOOST_TEST(vm->machine->uart().output() == rec.uart);
        last = std::move(vm);
    }

    // From the checkpoint taken mid-run.
    {
        Vm vm(service_spec(), net.cmdline());
        REQUIRE_VM(vm);
        BOOST_TEST_REQUIRE(vm.machine->restore_state(rec.checkpoint).has_value());
        Replayer rep(*vm.machine);
        rep.resume_after(rec.checkpoint_exit);
        auto ok = rep.run(std::span(rec.log).subspan(rec.checkpoint_entry), rec.exits);
        BOOST_TEST_REQUIRE(ok.has_value(), (ok ? "" : ok.error().message()));
        BOOST_TEST((vm.machine->digest() == rec.final_digest), "replay from the checkpoint at exit " << rec.checkpoint_exit);
    }

    // The last replica goes live where the recording ended: same state at the switch, then it
    // serves the same clients from the same disk, continuing their history.
    Recorder live(*last->machine, 5000, HostIo{net.tap(), &*disk}, ResumePoint{rec.exits, rec.log.back().seq + 1});
    std::vector<logformat::Entry> after;
    std::atomic<bool> done{false};
    std::vector<KvCall> calls = rec.calls;
    std::thread client([&] {
        KvClient c(net.host_ip(), net.guest_ip(), 300);
        for (int i = 0; i < 10; ++i)
            calls.push_back(c.call(static_cast<std::uint8_t>(1 + i % 2), static_cast<std::uint8_t>(i % 8), 7,
                                   std::chrono::milliseconds(200), 50));
        done = true;
    });
    while (!done) {
        auto ok = live.run(500, after);
        if (!ok) {
            done = true;
            client.join();
            BOOST_TEST_REQUIRE(false, ok.error());
        }
    }
    client.join();
    for (std::size_t i = rec.calls.size(); i < calls.size(); ++i)
        BOOST_TEST(calls[i].answered, "request " << i - rec.calls.size() << " after the switch");
    const auto verdict_after = testing::check_history(calls);
    BOOST_TEST(!verdict_after.has_value(), verdict_after.value_or(""));
    BOOST_TEST(after.front().seq == rec.log.back().seq + 1);
}

BOOST_AUTO_TEST_CASE(an_altered_frame_is_reported_as_a_divergence, *utf::precondition(need_kvm_and_tap))
{
    TapNet net;
    BOOST_TEST_REQUIRE(net.error().empty(), net.error());
    DiskImage image(kDiskBytes);
    auto disk = devices::FileStore::open(image.path());
    BOOST_TEST_REQUIRE(disk.has_value());
    const auto rec = record_service(net, *disk, 15'000, 0, 7);
    // Change the argument of an ADD the guest applied: the key's value in its memory differs
    // from then on, so the next digest differs. (A changed GET would only change a reply
    // buffer that later frames overwrite: no lasting difference, nothing to report.)
    auto log = rec.log;
    std::size_t victim = 0;
    for (std::size_t i = log.size() / 3; i < log.size() && victim == 0; ++i)
        if (auto* rx = std::get_if<logformat::NetRx>(&log[i].payload); rx && rx->frame.size() >= 42 + 24 &&
                                                                          rx->frame[12] == 0x08 && rx->frame[13] == 0x00 &&
                                                                          rx->frame[23] == 17 && rx->frame[42 + 12] == 1)
            victim = i;
    BOOST_TEST_REQUIRE(victim != 0u, "no ADD request in the second part of the log");
    std::get<logformat::NetRx>(log[victim].payload).frame[42 + 16] ^= 0x55;
    Vm vm(service_spec(), net.cmdline());
    REQUIRE_VM(vm);
    Replayer rep(*vm.machine);
    auto r = rep.run(log, rec.exits);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST_MESSAGE(r.error().message() << " (frame altered at exit " << log[victim].exit << ")");
    BOOST_TEST(r.error().exit >= log[victim].exit);
    BOOST_TEST(r.error().exit <= log[victim].exit + 5000);
}
