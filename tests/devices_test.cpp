// Tests of the device models on their own: the virtio-mmio transport (registers, feature
// negotiation, queue setup), virtio-blk requests against a real disk image file, virtio-net
// transmit and receive, what a hostile guest can do with descriptors (loops, addresses outside
// memory, oversized chains: the device resets itself, nothing else happens), device state
// round trips and damaged state, the guest disk on a real iSCSI LUN (istgt started by the
// test), and the host-side errors (disk files, TAP names, LUNs), the guest's console kept in a
// file, and the UART as Linux's 8250 driver probes and drives it. Guest memory here is a plain
// buffer, which is all a device model sees of it.
#define BOOST_TEST_MODULE devices
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/buffer_memory.hpp"
#include "tests/iscsi_fixture.hpp"
#include "tests/vm_fixture.hpp"
#include "xenft/devices/host_io.hpp"
#include "xenft/devices/iscsi_store.hpp"
#include "xenft/devices/virtio_blk.hpp"
#include "xenft/devices/virtio_net.hpp"

using namespace xenft;
using namespace xenft::devices;

namespace {

using testing::BufferMemory;

// Queue layout in the test memory: descriptors at 0x1000, driver ring at 0x2000, device ring
// at 0x3000, buffers from 0x10000.
constexpr std::uint64_t kDesc = 0x1000, kAvail = 0x2000, kUsed = 0x3000;
constexpr std::uint16_t kNext = 1, kWrite = 2;

struct Driver {
    VirtioMmio& dev;
    BufferMemory& mem;
    std::uint64_t base;
    std::uint16_t avail = 0;

    std::uint32_t reg(std::uint64_t off) { return static_cast<std::uint32_t>(dev.read(base + off, 4)); }
    void set(std::uint64_t off, std::uint32_t v) { dev.write(base + off, 4, v); }

    // The virtio 1.x initialization sequence, each queue at its own 0x10000 slice.
    void init(int queues)
    {
        set(0x70, 0);
        set(0x70, 3);
        set(0x24, 1);
        set(0x20, 1); // VERSION_1
        set(0x70, 11);
        for (int q = 0; q < queues; ++q) {
            const std::uint64_t at = 0x10000u * static_cast<std::uint64_t>(q);
            set(0x30, static_cast<std::uint32_t>(q));
            set(0x38, 16);
            set(0x80, static_cast<std::uint32_t>(at + kDesc));
            set(0x90, static_cast<std::uint32_t>(at + kAvail));
            set(0xa0, static_cast<std::uint32_t>(at + kUsed));
            set(0x44, 1);
        }
        set(0x70, 15);
    }
    void desc(int q, std::uint16_t i, std::uint64_t addr, std::uint32_t len, std::uint16_t flags, std::uint16_t next)
    {
        const std::uint64_t d = 0x10000u * static_cast<std::uint64_t>(q) + kDesc + 16u * i;
        mem.put(d, addr);
        mem.put(d + 8, len);
        mem.put(d + 12, flags);
        mem.put(d + 14, next);
    }
    void offer(int q, std::uint16_t head)
    {
        const std::uint64_t a = 0x10000u * static_cast<std::uint64_t>(q) + kAvail;
        const std::uint16_t idx = mem.get<std::uint16_t>(a + 2);
        mem.put<std::uint16_t>(a + 4 + 2 * (idx % 16), head);
        mem.put<std::uint16_t>(a + 2, static_cast<std::uint16_t>(idx + 1));
    }
    std::uint16_t used_idx(int q) { return mem.get<std::uint16_t>(0x10000u * static_cast<std::uint64_t>(q) + kUsed + 2); }
    std::uint32_t used_len(int q, std::uint16_t n)
    {
        return mem.get<std::uint32_t>(0x10000u * static_cast<std::uint64_t>(q) + kUsed + 4 + 8u * (n % 16) + 4);
    }
};

struct BlkRig {
    BufferMemory mem{1u << 20};
    testing::DiskImage image{64 * 1024};
    FileStore store = FileStore::open(image.path()).value();
    VirtioBlk blk{mem, store.size_bytes()};
    Driver drv{blk, mem, VirtioBlk::kDefaultBase};
    explicit BlkRig(BlockPort* port = nullptr)
    {
        blk.set_port(port ? port : &store);
        drv.init(1);
    }
    // One request: header at 0x20000, data at 0x30000, status at 0x40000. Returns the status.
    std::uint8_t request(std::uint32_t type, std::uint64_t sector, std::uint32_t len)
    {
        mem.put<std::uint32_t>(0x20000, type);
        mem.put<std::uint64_t>(0x20008, sector);
        mem.put<std::uint8_t>(0x40000, 0xee);
        const bool to_guest = type != 1;
        drv.desc(0, 0, 0x20000, 16, kNext, 1);
        if (len) {
            drv.desc(0, 1, 0x30000, len, static_cast<std::uint16_t>(kNext | (to_guest ? kWrite : 0)), 2);
            drv.desc(0, 2, 0x40000, 1, kWrite, 0);
        } else {
            drv.desc(0, 1, 0x40000, 1, kWrite, 0);
        }
        drv.offer(0, 0);
        drv.set(0x50, 0);
        return mem.get<std::uint8_t>(0x40000);
    }
};

} // namespace

BOOST_AUTO_TEST_CASE(the_transport_registers_follow_virtio_mmio_version_2)
{
    BufferMemory mem(1u << 20);
    VirtioNet net(mem, {2, 0, 0, 0, 0, 9});
    Driver d{net, mem, VirtioNet::kDefaultBase};
    BOOST_TEST(d.reg(0x000) == 0x74726976u);
    BOOST_TEST(d.reg(0x004) == 2u);
    BOOST_TEST(d.reg(0x008) == 1u);
    d.set(0x14, 1);
    BOOST_TEST(d.reg(0x010) == 1u); // VIRTIO_F_VERSION_1 is bit 32
    d.set(0x14, 0);
    BOOST_TEST((d.reg(0x010) & (1u << 5)) != 0u); // VIRTIO_NET_F_MAC
    BOOST_TEST(net.read(VirtioNet::kDefaultBase + 0x105, 1) == 9u);
    // Queue sizes must be powers of two up to the maximum; a queue without a size stays off.
    d.set(0x30, 0);
    d.set(0x38, 12);
    d.set(0x44, 1);
    BOOST_TEST(d.reg(0x44) == 0u);
    d.set(0x38, 16);
    d.set(0x44, 1);
    BOOST_TEST(d.reg(0x44) == 1u);
    // Reads of the common registers that are not 32 bits wide return nothing.
    BOOST_TEST(net.read(VirtioNet::kDefaultBase, 2) == 0u);
    BOOST_TEST(!net.driver_ready());
}

BOOST_AUTO_TEST_CASE(block_requests_reach_the_disk_image)
{
    BlkRig rig;
    BOOST_TEST(rig.blk.read(VirtioBlk::kDefaultBase + 0x100, 8) == 128u); // 64 KiB in sectors
    std::memset(rig.mem.bytes.data() + 0x30000, 0xab, 1024);
    BOOST_TEST(rig.request(1, 5, 1024) == 0u); // write sectors 5-6
    std::memset(rig.mem.bytes.data() + 0x30000, 0, 1024);
    BOOST_TEST(rig.request(0, 5, 1024) == 0u); // read them back
    BOOST_TEST(rig.mem.get<std::uint64_t>(0x30000 + 1016) == 0xababababababababull);
    BOOST_TEST(rig.drv.used_len(0, 1) == 1025u); // data and status
    std::vector<std::uint8_t> file(512);
    BOOST_TEST(rig.store.read(6 * 512, file));
    BOOST_TEST(file[511] == 0xabu);
    BOOST_TEST(rig.request(4, 0, 0) == 0u);         // flush
    BOOST_TEST(rig.request(0, 127, 1024) == 1u);    // runs past the end: I/O error
    BOOST_TEST(rig.request(0, 1, 100) == 1u);       // not whole sectors
    BOOST_TEST(rig.request(99, 0, 512) == 2u);      // unsupported
    BOOST_TEST(rig.request(8, 0, 20) == 0u);        // GET_ID
    BOOST_TEST(std::string(reinterpret_cast<const char*>(rig.mem.bytes.data() + 0x30000)) == "xenft-virtio-blk");
    BOOST_TEST(rig.drv.used_idx(0) == 7u);
    BOOST_TEST((rig.blk.pending_interrupt() == std::optional<std::uint8_t>(VirtioBlk::kDefaultVector)));
    BOOST_TEST(rig.drv.reg(0x60) == 1u); // used buffer notification
    rig.drv.set(0x64, 1);
    BOOST_TEST(rig.drv.reg(0x60) == 0u);
}

BOOST_AUTO_TEST_CASE(a_device_wired_to_an_isa_line_says_so_and_still_asks_for_its_interrupt)
{
    BlkRig rig;
    BOOST_TEST(!rig.blk.isa_line().has_value()); // MSI vectors, as xenft's test guest wants
    rig.blk.wire_to_isa_line(VirtioBlk::kIsaLine);
    BOOST_TEST((rig.blk.isa_line() == std::optional<std::uint8_t>(VirtioBlk::kIsaLine)));
    BOOST_TEST(rig.request(4, 0, 0) == 0u); // a flush completes: a used-buffer notification
    BOOST_TEST(rig.blk.pending_interrupt().has_value());
    rig.blk.interrupt_delivered();
    BOOST_TEST(!rig.blk.pending_interrupt().has_value());
    // The wiring is the platform's, not guest state: a checkpoint neither carries nor drops it.
    std::vector<std::uint8_t> state;
    StateWriter w(state);
    rig.blk.save(w);
    StateReader r(state);
    BOOST_TEST(rig.blk.load(r));
    BOOST_TEST((rig.blk.isa_line() == std::optional<std::uint8_t>(VirtioBlk::kIsaLine)));
}

// A backup going live asserts again what the driver has not acknowledged: its log may end
// before the primary injected the completion's interrupt, which the backup was told was taken.
BOOST_AUTO_TEST_CASE(an_unacknowledged_interrupt_is_asserted_again_and_an_acknowledged_one_is_not)
{
    BlkRig rig;
    BOOST_TEST(!rig.blk.reassert_unacknowledged_interrupt()); // nothing happened yet
    BOOST_TEST(rig.request(4, 0, 0) == 0u);
    rig.blk.interrupt_delivered(); // "taken elsewhere": the replica replaying the log
    BOOST_TEST(!rig.blk.pending_interrupt().has_value());
    BOOST_TEST(rig.blk.reassert_unacknowledged_interrupt());
    BOOST_TEST((rig.blk.pending_interrupt() == std::optional<std::uint8_t>(VirtioBlk::kDefaultVector)));
    rig.blk.interrupt_delivered();
    rig.drv.set(0x64, 1); // the driver's handler acknowledges the used-buffer notification
    BOOST_TEST(!rig.blk.reassert_unacknowledged_interrupt());
    BOOST_TEST(!rig.blk.pending_interrupt().has_value());
}

BOOST_AUTO_TEST_CASE(a_hostile_descriptor_chain_only_resets_the_device)
{
    {
        BlkRig rig; // a chain that loops back on itself
        rig.drv.desc(0, 0, 0x20000, 16, kNext, 1);
        rig.drv.desc(0, 1, 0x30000, 512, kNext | kWrite, 0);
        rig.drv.offer(0, 0);
        rig.drv.set(0x50, 0);
        BOOST_TEST((rig.drv.reg(0x70) & VirtioMmio::kStatusNeedsReset) != 0u);
        BOOST_TEST(rig.drv.used_idx(0) == 0u);
        // Once broken, notifications do nothing until the driver resets the device.
        rig.drv.set(0x50, 0);
        BOOST_TEST(rig.drv.used_idx(0) == 0u);
        rig.drv.init(1);
        BOOST_TEST(rig.drv.reg(0x70) == 15u);
    }
    {
        BlkRig rig; // a buffer beyond guest memory
        rig.drv.desc(0, 0, 0x20000, 16, kNext, 1);
        rig.drv.desc(0, 1, 0xfffffffff000ull, 512, kNext | kWrite, 2);
        rig.drv.desc(0, 2, 0x40000, 1, kWrite, 0);
        rig.drv.offer(0, 0);
        rig.drv.set(0x50, 0);
        BOOST_TEST((rig.drv.reg(0x70) & VirtioMmio::kStatusNeedsReset) != 0u);
    }
    {
        BlkRig rig; // more data than one request may carry, and a head index out of range
        rig.drv.desc(0, 0, 0x20000, 16, kNext, 1);
        rig.drv.desc(0, 1, 0x0, 0xffffff00u, kNext | kWrite, 2);
        rig.drv.desc(0, 2, 0x40000, 1, kWrite, 0);
        rig.drv.offer(0, 0);
        rig.drv.set(0x50, 0);
        BOOST_TEST((rig.drv.reg(0x70) & VirtioMmio::kStatusNeedsReset) != 0u);
        BlkRig rig2;
        rig2.drv.offer(0, 200);
        rig2.drv.set(0x50, 0);
        BOOST_TEST((rig2.drv.reg(0x70) & VirtioMmio::kStatusNeedsReset) != 0u);
    }
}

namespace {
struct Sink final : NetTransmit {
    std::vector<std::vector<std::uint8_t>> frames;
    void transmit(std::span<const std::uint8_t> f) override { frames.emplace_back(f.begin(), f.end()); }
};
} // namespace

BOOST_AUTO_TEST_CASE(frames_go_out_and_come_in_through_the_queues)
{
    BufferMemory mem(1u << 20);
    VirtioNet net(mem, {2, 0, 0, 0, 0, 1});
    Sink sink;
    net.set_transmit(&sink);
    Driver d{net, mem, VirtioNet::kDefaultBase};
    d.init(2);
    BOOST_TEST(!net.can_receive());
    BOOST_TEST((net.receive(std::vector<std::uint8_t>(60, 1)) == VirtioNet::Rx::no_buffer));

    // Transmit: a 12-byte header then the frame.
    for (int i = 0; i < 72; ++i)
        mem.bytes[0x50000 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
    d.desc(1, 0, 0x50000, 72, 0, 0);
    d.offer(1, 0);
    d.set(0x50, 1);
    BOOST_TEST_REQUIRE(sink.frames.size() == 1u);
    BOOST_TEST(sink.frames[0].size() == 60u);
    BOOST_TEST(sink.frames[0][0] == 12u);
    BOOST_TEST(d.used_idx(1) == 1u);

    // Receive into a posted buffer; a frame larger than the buffer is dropped and the buffer
    // returned empty.
    d.desc(0, 0, 0x60000, 1526, kWrite, 0);
    d.desc(0, 1, 0x61000, 40, kWrite, 0);
    d.offer(0, 0);
    d.offer(0, 1);
    BOOST_TEST(net.can_receive());
    std::vector<std::uint8_t> frame(100, 0x5a);
    BOOST_TEST((net.receive(frame) == VirtioNet::Rx::delivered));
    BOOST_TEST(d.used_len(0, 0) == 112u);
    BOOST_TEST(mem.bytes[0x60000 + 10] == 1u); // num_buffers
    BOOST_TEST(mem.bytes[0x60000 + 12] == 0x5au);
    BOOST_TEST((net.receive(frame) == VirtioNet::Rx::dropped));
    BOOST_TEST(d.used_len(0, 1) == 0u);
    BOOST_TEST(net.frames_received() == 1u);
    BOOST_TEST((net.receive(std::vector<std::uint8_t>(2000, 1)) == VirtioNet::Rx::no_buffer));
}

BOOST_AUTO_TEST_CASE(device_state_round_trips_and_damaged_state_is_refused)
{
    BlkRig rig;
    std::memset(rig.mem.bytes.data() + 0x30000, 1, 512);
    BOOST_TEST(rig.request(1, 0, 512) == 0u);
    std::vector<std::uint8_t> state;
    StateWriter w(state);
    rig.blk.save(w);

    BufferMemory mem2(1u << 20);
    VirtioBlk other(mem2, 64 * 1024);
    StateReader r(state);
    BOOST_TEST(other.load(r));
    BOOST_TEST(r.at_end());
    std::vector<std::uint8_t> again;
    StateWriter w2(again);
    other.save(w2);
    BOOST_TEST(again == state);

    for (std::size_t cut = 0; cut < state.size(); ++cut) {
        VirtioBlk victim(mem2, 64 * 1024);
        StateReader partial(std::span<const std::uint8_t>(state).first(cut));
        BOOST_TEST(!victim.load(partial), "state cut at " << cut);
    }
    std::vector<std::uint8_t> junk(state.size(), 0xff);
    VirtioBlk victim(mem2, 64 * 1024);
    StateReader bad(junk);
    BOOST_TEST(!victim.load(bad));

    // The timer keeps its registers; the UART its line control.
    LapicTimer timer([] { return std::uint64_t{0}; });
    timer.write(LapicTimer::kBase + 0x320, 4, 0x200ec);
    std::vector<std::uint8_t> ts;
    StateWriter tw(ts);
    timer.save(tw);
    LapicTimer timer2([] { return std::uint64_t{0}; });
    StateReader tr(ts);
    BOOST_TEST(timer2.load(tr));
    BOOST_TEST(timer2.vector() == 0xecu);
}

BOOST_AUTO_TEST_CASE(host_side_errors_name_the_object_and_the_cause)
{
    BOOST_TEST(FileStore::open("/nonexistent/disk.img").error() == "disk /nonexistent/disk.img: No such file or directory");
    testing::DiskImage odd(1000);
    BOOST_TEST(FileStore::open(odd.path()).error().find("is not a positive multiple of 512 bytes") != std::string::npos);
    BOOST_TEST(TapDevice::open("").error().find("must be 1 to 15 characters") != std::string::npos);
    BOOST_TEST(TapDevice::open("a-name-that-is-too-long").error().find("must be 1 to 15 characters") != std::string::npos);
    testing::DiskImage small(4096);
    auto store = FileStore::open(small.path());
    BOOST_TEST_REQUIRE(store.has_value());
    std::vector<std::uint8_t> buf(512);
    BOOST_TEST(!store->read(4096, buf));
    BOOST_TEST(!store->write(~0ull - 10, buf));
}

namespace {
boost::test_tools::assertion_result have_istgt(boost::unit_test::test_unit_id)
{
    boost::test_tools::assertion_result r(testing::have_program("istgt"));
    r.message() << "istgt is not installed (apt-get install istgt)";
    return r;
}
} // namespace

BOOST_AUTO_TEST_CASE(the_guest_disk_can_live_on_the_shared_iscsi_lun, *boost::unit_test::precondition(have_istgt))
{
    testing::Istgt target(4);
    auto lun = arbiter::Lun::connect({target.url(), "iqn.2026-11.test.xenft:devices", 7, 2});
    BOOST_TEST_REQUIRE(lun.has_value(), (lun ? "" : lun.error()));
    // Past the end of the 4 MiB LUN: refused with the LUN named.
    auto lun2 = arbiter::Lun::connect({target.url(), "iqn.2026-11.test.xenft:devices", 8, 2});
    BOOST_TEST_REQUIRE(lun2.has_value());
    const auto too_big = IscsiStore::open(std::move(*lun2), 64, 4u << 20);
    BOOST_TEST(too_big.error().find("run past the LUN's 8192 blocks") != std::string::npos, too_big.error());
    BOOST_TEST(too_big.error().find(target.url()) != std::string::npos);

    auto store = IscsiStore::open(std::move(*lun), 64, 64 * 1024); // blocks 64..191, after an arbiter record
    BOOST_TEST_REQUIRE(store.has_value(), (store ? "" : store.error()));
    BlkRig rig(&*store);
    for (std::size_t i = 0; i < 4096; ++i)
        rig.mem.bytes[0x30000 + i] = static_cast<std::uint8_t>(i * 7);
    BOOST_TEST(rig.request(1, 3, 4096) == 0u);
    std::memset(rig.mem.bytes.data() + 0x30000, 0, 4096);
    BOOST_TEST(rig.request(0, 3, 4096) == 0u);
    BOOST_TEST(rig.mem.bytes[0x30000 + 4095] == static_cast<std::uint8_t>(4095 * 7));
    BOOST_TEST(rig.request(4, 0, 0) == 0u, store->last_error());
    BOOST_TEST(rig.request(0, 127, 1024) == 1u); // past the end of the disk

    // The target dies: the guest gets I/O errors, the log line names the LUN and the cause.
    target.kill();
    BOOST_TEST(rig.request(0, 3, 512) == 1u);
    BOOST_TEST(store->last_error().find(target.url()) != std::string::npos, store->last_error());
    BOOST_TEST(store->last_error().find("read at block 67") != std::string::npos, store->last_error());
}

// The guest's console kept in a file (xenft.conf(5), vm.console-log): whole lines with the time,
// carriage returns dropped, a line too long cut, xenftd's own notes after the guest's partial
// line, and what the UART prints reaching it.
BOOST_AUTO_TEST_CASE(the_console_log_keeps_the_guests_lines_with_their_time)
{
    char tmpl[] = "/tmp/xenft-console-XXXXXX";
    BOOST_TEST_REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl, path = dir + "/logs/vm.console"; // the folder is made
    {
        auto log = ConsoleLog::open(path);
        BOOST_TEST_REQUIRE(log.has_value(), (log ? "" : log.error()));
        Uart16550 uart;
        uart.set_sink(log->get());
        for (char c : std::string("Linux version 6.1\r\nlogin: "))
            uart.write(Uart16550::kBase, 1, static_cast<unsigned char>(c));
        (*log)->note("--- xenftd: went live ---");
        for (std::size_t i = 0; i < ConsoleLog::kMaxLine + 10; ++i)
            (*log)->put('x');
        (*log)->put('\n');
        (*log)->put('e'); // unfinished: written when the log closes
        BOOST_TEST((*log)->error().empty());
        BOOST_TEST(uart.output() == "Linux version 6.1\r\nlogin: ");
    }
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);)
        lines.push_back(line);
    BOOST_TEST_REQUIRE(lines.size() == 6u);
    // "2026-12-04T05:01:02.123Z " and the text.
    for (const auto& line : lines) {
        BOOST_TEST(line.size() > 25u);
        BOOST_TEST(line.substr(10, 1) == "T");
        BOOST_TEST(line.substr(23, 2) == "Z ");
    }
    BOOST_TEST(lines[0].substr(25) == "Linux version 6.1");
    BOOST_TEST(lines[1].substr(25) == "login: ");
    BOOST_TEST(lines[2].substr(25) == "--- xenftd: went live ---");
    BOOST_TEST(lines[3].substr(25) == std::string(ConsoleLog::kMaxLine, 'x'));
    BOOST_TEST(lines[4].substr(25) == std::string(10, 'x'));
    BOOST_TEST(lines[5].substr(25) == "e");
    struct stat st{};
    BOOST_TEST(::stat(path.c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 0777) == 0640u);
    // Opened again, it appends.
    {
        auto again = ConsoleLog::open(path);
        BOOST_TEST_REQUIRE(again.has_value());
        (*again)->note("second");
    }
    std::ifstream in2(path);
    std::size_t count = 0;
    for (std::string line; std::getline(in2, line);)
        ++count;
    BOOST_TEST(count == 7u);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_console_log_that_cannot_be_opened_says_which_and_why)
{
    const auto relative = ConsoleLog::open("logs/vm.console");
    BOOST_TEST(relative.error() == "console log \"logs/vm.console\": not an absolute file name");
    const auto directory = ConsoleLog::open("/tmp");
    BOOST_TEST(directory.error() == "console log /tmp: Is a directory", directory.error());
    const auto device = ConsoleLog::open("/dev/null");
    BOOST_TEST(device.error() == "console log /dev/null: not a regular file", device.error());
    // Under a file: the file is no folder, nor can one be made under it.
    testing::DiskImage file(512);
    const auto under = ConsoleLog::open(file.path() + "/vm.console");
    BOOST_TEST(under.error() == "console log " + file.path() + "/vm.console: Not a directory", under.error());
    const auto deeper = ConsoleLog::open(file.path() + "/logs/vm.console");
    BOOST_TEST(deeper.error().find("console log " + file.path() + "/logs/vm.console: cannot create " + file.path() +
                                   "/logs: ") == 0u,
               deeper.error());
}

// The plain PC's PM1a control block: SCI_EN reads as set, what the guest writes is kept (not
// SLP_EN), and only SLP_EN with the soft-off sleep type is a poweroff; the request survives a
// state round trip (a live copy) and a damaged state is refused.
BOOST_AUTO_TEST_CASE(acpi_soft_off_is_slp_en_with_the_s5_sleep_type_and_nothing_else)
{
    AcpiPowerControl pm;
    constexpr std::uint64_t base = AcpiPowerControl::kBase;
    BOOST_TEST(pm.claims(true, base));
    BOOST_TEST(pm.claims(true, base + 1));
    BOOST_TEST(!pm.claims(true, base + 2));
    BOOST_TEST(!pm.claims(false, base));
    BOOST_TEST(pm.read(base, 2) == 1u); // SCI_EN: always in ACPI mode
    // SLP_TYP 5 (not soft-off) with SLP_EN, then SLP_TYP 7 without it: no poweroff.
    pm.write(base, 2, (5u << 10) | AcpiPowerControl::kSleepEnable);
    BOOST_TEST(!pm.poweroff_requested());
    pm.write(base, 2, 7u << 10);
    BOOST_TEST(!pm.poweroff_requested());
    BOOST_TEST(pm.read(base, 2) == ((7u << 10) | 1u)); // kept; SLP_EN is write-only
    BOOST_TEST(pm.read(base + 1, 1) == ((7u << 10) >> 8));
    // ACPICA's sequence: SLP_TYP first, then the same with SLP_EN; here as the high byte alone.
    pm.write(base + 1, 1, ((7u << 10) | AcpiPowerControl::kSleepEnable) >> 8);
    BOOST_TEST(pm.poweroff_requested());
    BOOST_TEST((pm.read(base, 2) & AcpiPowerControl::kSleepEnable) == 0u);

    std::vector<std::uint8_t> blob;
    StateWriter out(blob);
    pm.save(out);
    AcpiPowerControl copy;
    StateReader in(blob);
    BOOST_TEST(copy.load(in));
    BOOST_TEST(copy.poweroff_requested());
    BOOST_TEST(copy.read(base, 2) == pm.read(base, 2));
    const std::vector<std::uint8_t> damaged{0xff, 0xff, 0x07, 0x02}; // control above 16 bits
    StateReader bad(damaged);
    AcpiPowerControl refused;
    BOOST_TEST(!refused.load(bad));
}

// What Linux's 8250 driver does to a port before it registers it (autoconfig() in
// 8250_port.c): the IER scratch test, the FIFO probe through IIR, the scratch register, the
// loopback of the modem lines. The answers make it a 16450, driven by interrupts when wired.
BOOST_AUTO_TEST_CASE(the_uart_answers_the_8250_drivers_probe_as_a_16450)
{
    Uart16550 uart;
    constexpr std::uint64_t b = Uart16550::kBase;
    uart.write(b + 1, 1, 0);
    BOOST_TEST((uart.read(b + 1, 1) & 0x0f) == 0u);
    uart.write(b + 1, 1, 0x0f);
    BOOST_TEST((uart.read(b + 1, 1) & 0x0f) == 0x0fu);
    uart.write(b + 1, 1, 0);
    uart.write(b + 3, 1, 0xbf); // EFR access: ignored, there is none
    uart.write(b + 2, 1, 0);
    uart.write(b + 3, 1, 0);
    uart.write(b + 2, 1, 0x01); // enable FIFOs: there are none, so IIR's top bits stay clear
    BOOST_TEST((uart.read(b + 2, 1) >> 6) == 0u);
    for (std::uint64_t v : {0xa5u, 0x5au}) {
        uart.write(b + 7, 1, v);
        BOOST_TEST(uart.read(b + 7, 1) == v);
    }
    uart.write(b + 4, 1, 0x10 | 0x0a); // loopback, RTS and OUT2: CTS and DCD come back
    BOOST_TEST((uart.read(b + 6, 1) & 0xf0) == 0x90u);
    uart.write(b + 4, 1, 0);
    BOOST_TEST(uart.read(b + 6, 1) == 0xb0u); // a terminal is there
    BOOST_TEST(uart.read(b + 5, 1) == 0x60u); // the transmitter is empty, nothing received
    // The divisor latch holds the baud rate and hides the data and IER registers meanwhile.
    uart.write(b + 3, 1, 0x83);
    uart.write(b, 1, 0x01);
    uart.write(b + 1, 1, 0x00);
    BOOST_TEST(uart.read(b, 1) == 1u);
    uart.write(b + 3, 1, 0x03);
    BOOST_TEST(uart.output().empty());
    uart.write(b, 1, 'A');
    BOOST_TEST(uart.output() == "A");
}

BOOST_AUTO_TEST_CASE(a_wired_uart_raises_its_line_when_the_transmitter_empties)
{
    constexpr std::uint64_t b = Uart16550::kBase;
    // Unwired (the KVM backend's test guest), the UART never interrupts, and IIR says so: the
    // 8250 driver's THRE test then finds it needs polling.
    Uart16550 plain;
    plain.write(b + 4, 1, 0x08);
    plain.write(b + 1, 1, 0x02);
    BOOST_TEST(plain.read(b + 2, 1) == 0x01u);
    BOOST_TEST(!plain.pending_interrupt());
    BOOST_TEST(!plain.reassert_unacknowledged_interrupt());

    Uart16550 uart;
    uart.wire_to_isa_line(Uart16550::kIsaLine);
    BOOST_TEST((uart.isa_line() == std::optional<std::uint8_t>(4)));
    // The driver's THRE test, before OUT2 is set: IIR reports the interrupt each time it is
    // enabled, the line stays low.
    uart.write(b + 1, 1, 0x02);
    BOOST_TEST(!uart.pending_interrupt());
    BOOST_TEST(uart.read(b + 2, 1) == 0x02u);
    uart.write(b + 1, 1, 0);
    BOOST_TEST(uart.read(b + 2, 1) == 0x01u);
    uart.write(b + 1, 1, 0x02);
    BOOST_TEST(uart.read(b + 2, 1) == 0x02u);
    uart.write(b + 1, 1, 0);
    // Startup: OUT2, then the tty layer enables the interrupt to send: an edge.
    uart.write(b + 4, 1, 0x0b);
    BOOST_TEST(!uart.pending_interrupt());
    uart.write(b + 1, 1, 0x02);
    BOOST_TEST(uart.pending_interrupt().has_value());
    uart.interrupt_delivered();
    BOOST_TEST(!uart.pending_interrupt());
    // The handler: IIR, a byte, which leaves at once and re-asserts the interrupt (an edge
    // per byte); then nothing more to send, the interrupt disabled, IIR clear.
    BOOST_TEST(uart.read(b + 2, 1) == 0x02u);
    uart.write(b, 1, 'x');
    BOOST_TEST(uart.pending_interrupt().has_value());
    uart.interrupt_delivered();
    BOOST_TEST(uart.read(b + 2, 1) == 0x02u);
    uart.write(b + 1, 1, 0);
    BOOST_TEST(uart.read(b + 2, 1) == 0x01u);
    BOOST_TEST(!uart.pending_interrupt());
    BOOST_TEST(!uart.reassert_unacknowledged_interrupt());
    uart.write(b, 1, 'y'); // polled output (the kernel's console) raises nothing
    BOOST_TEST(!uart.pending_interrupt());
    // A backup going live: an enabled interrupt is asserted again, since the primary may have
    // died before its injection was logged.
    uart.write(b + 1, 1, 0x02);
    uart.interrupt_delivered();
    BOOST_TEST(uart.reassert_unacknowledged_interrupt());
    BOOST_TEST(uart.pending_interrupt().has_value());

    // No read changes the state: a replaying backup's reads never reach its device model.
    std::vector<std::uint8_t> before;
    StateWriter bw(before);
    uart.save(bw);
    for (std::uint64_t lcr : {0x03u, 0x83u, 0xbfu}) {
        uart.write(b + 3, 1, lcr);
        std::vector<std::uint8_t> at;
        StateWriter aw(at);
        uart.save(aw);
        for (std::uint64_t reg = 0; reg < 8; ++reg) {
            (void)uart.read(b + reg, 1);
            std::vector<std::uint8_t> after;
            StateWriter w(after);
            uart.save(w);
            BOOST_TEST((after == at), "a read of register " << reg << " with LCR " << lcr << " changed the state");
        }
    }
    uart.write(b + 3, 1, 0x00); // as before the loop

    // All of it is guest state: a copy behaves the same, damaged state is refused.
    std::vector<std::uint8_t> blob;
    StateWriter out(blob);
    uart.save(out);
    BOOST_TEST((blob == before));
    Uart16550 copy;
    copy.wire_to_isa_line(Uart16550::kIsaLine);
    StateReader in(blob);
    BOOST_TEST(copy.load(in));
    BOOST_TEST(in.at_end());
    BOOST_TEST(copy.pending_interrupt().has_value());
    BOOST_TEST(copy.read(b + 4, 1) == 0x0bu);
    BOOST_TEST(copy.read(b + 2, 1) == 0x02u);
    for (std::size_t cut = 0; cut < blob.size(); ++cut) {
        Uart16550 victim;
        StateReader partial(std::span<const std::uint8_t>(blob).first(cut));
        BOOST_TEST(!victim.load(partial), "state cut at " << cut);
    }
    const std::vector<std::uint8_t> damaged{0x03, 0x1f, 0x0b, 0x00, 0x0c, 0x00}; // IER above 4 bits
    StateReader bad(damaged);
    Uart16550 refused;
    BOOST_TEST(!refused.load(bad));
}
