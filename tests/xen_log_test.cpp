// Tests of the Xen backend's log on the logging channel (xenft/backends/xen/xen_log.hpp): the
// device events of an ioreq (a digest, the disk reads a request made on the shared LUN, a
// failed one, a frame) travel as logformat entries and come back the same, in order, after
// the ring records around them; entries the Xen backend cannot replay are refused by name.
#define BOOST_TEST_MODULE xen_log
#include <boost/test/unit_test.hpp>

#include "xenft/backends/xen/xen_log.hpp"

using namespace xenft::backends::xen;

namespace {

DeviceEvent event(DeviceEvent::Kind kind, std::vector<std::uint8_t> bytes)
{
    DeviceEvent e;
    e.kind = kind;
    e.exit = 41;
    e.address = 0xfeb00050; // the disk's QueueNotify
    e.bytes = std::move(bytes);
    return e;
}

DeviceEvent disk_read(std::uint64_t sector, std::vector<std::uint8_t> data)
{
    DeviceEvent e = event(DeviceEvent::Kind::disk_read, std::move(data));
    e.sector = sector;
    e.length = e.bytes.size();
    return e;
}

std::vector<xenft::logformat::Entry> written(const std::vector<XenLogItem>& items)
{
    XenLogWriter writer;
    std::vector<xenft::logformat::Entry> entries;
    for (const auto& item : items)
        writer.write(item, entries);
    for (std::size_t i = 0; i < entries.size(); ++i)
        entries[i].seq = i + 1;
    return entries;
}

void check_same(const DeviceEvent& a, const DeviceEvent& b)
{
    BOOST_TEST(static_cast<int>(a.kind) == static_cast<int>(b.kind));
    BOOST_TEST(a.exit == b.exit);
    BOOST_TEST(a.at_read == b.at_read);
    BOOST_TEST(a.address == b.address);
    BOOST_TEST(a.bytes == b.bytes);
    BOOST_TEST(a.sector == b.sector);
    BOOST_TEST(a.length == b.length);
    BOOST_TEST(a.failed == b.failed);
}

} // namespace

BOOST_AUTO_TEST_CASE(an_ioreqs_disk_reads_come_back_in_order_with_their_data)
{
    FtRecord before{};
    before.exit = 40;
    before.type = ft_abi::kRecProgress;
    DeviceEvent failed = disk_read(8, {});
    failed.failed = true;
    failed.length = 4096;
    const std::vector<XenLogItem> items = {
        before,
        event(DeviceEvent::Kind::digest, std::vector<std::uint8_t>(32, 0xab)),
        disk_read(2048, std::vector<std::uint8_t>(4096, 0x5a)),
        disk_read(0, std::vector<std::uint8_t>(512, 0x01)),
        failed,
        event(DeviceEvent::Kind::net_rx, std::vector<std::uint8_t>(60, 0x11)),
    };
    const auto entries = written(items);
    // The record, one ioreq_stop for the ioreq, then its four events.
    BOOST_TEST(entries.size() == 1 + 1 + 5);
    XenLogReader reader;
    std::vector<XenLogItem> back;
    for (const auto& e : entries) {
        auto item = reader.read(e);
        BOOST_TEST_REQUIRE(item.has_value(), (item ? std::string() : item.error()));
        if (*item)
            back.push_back(std::move(**item));
    }
    BOOST_TEST_REQUIRE(back.size() == items.size());
    BOOST_TEST(std::get<FtRecord>(back[0]).exit == 40u);
    for (std::size_t i = 1; i < items.size(); ++i)
        check_same(std::get<DeviceEvent>(items[i]), std::get<DeviceEvent>(back[i]));
}

BOOST_AUTO_TEST_CASE(a_checksummed_disk_read_is_refused_by_name)
{
    // The KVM backend's option to log only a read's checksum: the Xen backup cannot read the
    // LUN at the primary's moment, so it needs the data.
    auto entries = written({disk_read(16, std::vector<std::uint8_t>(512, 7))});
    auto& read = std::get<xenft::logformat::DiskRead>(entries.back().payload);
    read.mode = xenft::logformat::DiskRead::Mode::checksum;
    read.length = 512;
    read.data.clear();
    read.checksum[0] = 1;
    XenLogReader reader;
    BOOST_TEST_REQUIRE(reader.read(entries[0]).has_value());
    auto r = reader.read(entries[1]);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().find("only a checksum") != std::string::npos, r.error());
}

BOOST_AUTO_TEST_CASE(a_disk_read_without_its_ioreq_is_refused)
{
    auto entries = written({disk_read(16, std::vector<std::uint8_t>(512, 7))});
    XenLogReader reader;
    auto r = reader.read(entries.back()); // the ioreq_stop before it skipped
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().find("has no ioreq_stop before it") != std::string::npos, r.error());
}
