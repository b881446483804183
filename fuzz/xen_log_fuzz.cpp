// libFuzzer target for the Xen backend's reading of the primary's log (XenLogReader): entries
// as the logging channel delivers them (logformat's frame decoder first), read into ring
// records and device events. Beyond "no crash", whatever is read must survive the way back:
// written again (XenLogWriter) and read by a fresh reader, it gives the same items.
// Built and run by `make fuzz` where the Xen backend is built (configure found the Xen libraries).
#include <cstdlib>

#include "xenft/backends/xen/xen_log.hpp"
#include "xenft/logformat/stream.hpp"

using namespace xenft::backends::xen;

namespace {

bool same(const XenLogItem& a, const XenLogItem& b)
{
    if (a.index() != b.index())
        return false;
    if (const auto* r = std::get_if<FtRecord>(&a)) {
        const auto& q = std::get<FtRecord>(b);
        return r->exit == q.exit && r->vcpu == q.vcpu && r->type == q.type && r->info == q.info &&
               r->value[0] == q.value[0] && r->value[1] == q.value[1];
    }
    const auto& d = std::get<DeviceEvent>(a);
    const auto& e = std::get<DeviceEvent>(b);
    return d.kind == e.kind && d.exit == e.exit && d.at_read == e.at_read && d.port == e.port &&
           d.address == e.address && d.bytes == e.bytes && d.sector == e.sector && d.length == e.length &&
           d.failed == e.failed;
}

// The items the entries give, up to the first one the backup cannot use (where it stops).
std::vector<XenLogItem> read_until_error(const std::vector<xenft::logformat::Frame>& frames)
{
    XenLogReader reader;
    std::vector<XenLogItem> items;
    for (const auto& f : frames)
        for (const auto& e : f.entries) {
            auto item = reader.read(e);
            if (!item)
                return items;
            if (*item)
                items.push_back(std::move(**item));
        }
    return items;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    auto frames = xenft::logformat::decode_frames(std::span<const std::uint8_t>(data, size));
    if (!frames)
        return 0;
    const auto items = read_until_error(*frames);
    XenLogWriter writer;
    std::vector<xenft::logformat::Entry> entries;
    for (const auto& item : items)
        writer.write(item, entries);
    XenLogReader again;
    std::size_t next = 0;
    for (const auto& e : entries) {
        auto item = again.read(e);
        if (!item)
            std::abort();
        if (*item && (next >= items.size() || !same(**item, items[next++])))
            std::abort();
    }
    if (next != items.size())
        std::abort();
    return 0;
}
