#include "xenft/backends/xen/xen_log.hpp"

#include <algorithm>

namespace xenft::backends::xen {

void XenLogWriter::write(const XenLogItem& item, std::vector<logformat::Entry>& out)
{
    using namespace logformat;
    if (const auto* r = std::get_if<FtRecord>(&item)) {
        Entry e;
        e.vcpu = r->vcpu;
        e.exit = r->exit;
        e.payload = XenRecord{r->type, r->info, {r->value[0], r->value[1]}};
        out.push_back(std::move(e));
        stop_.reset(); // device events after a record belong to a new ioreq
        return;
    }
    const auto& d = std::get<DeviceEvent>(item);
    const IoreqStop stop{d.at_read, d.port ? IoSpace::port : IoSpace::mmio, d.address};
    if (!stop_ || !(*stop_ == stop) || stop_exit_ != d.exit) {
        Entry e;
        e.exit = d.exit;
        e.payload = stop;
        out.push_back(std::move(e));
        stop_ = stop;
        stop_exit_ = d.exit;
    }
    Entry e;
    e.exit = d.exit;
    if (d.kind == DeviceEvent::Kind::net_rx) {
        e.payload = NetRx{0, d.bytes};
    } else if (d.kind == DeviceEvent::Kind::disk_read) {
        if (d.failed) {
            e.payload = DiskRead::failed(0, d.sector, d.length);
        } else {
            DiskRead r;
            r.request = d.sector;
            r.data = d.bytes;
            e.payload = std::move(r);
        }
    } else {
        StateDigest s;
        std::copy_n(d.bytes.begin(), std::min(d.bytes.size(), s.digest.size()), s.digest.begin());
        e.payload = s;
    }
    out.push_back(std::move(e));
}

Expected<std::optional<XenLogItem>, std::string> XenLogReader::read(const logformat::Entry& e)
{
    using namespace logformat;
    if (const auto* x = std::get_if<XenRecord>(&e.payload)) {
        FtRecord r{};
        r.exit = e.exit;
        r.vcpu = static_cast<std::uint16_t>(e.vcpu);
        r.type = x->type;
        r.info = x->info;
        r.value[0] = x->value[0];
        r.value[1] = x->value[1];
        stop_.reset();
        return std::optional<XenLogItem>(r);
    }
    if (const auto* s = std::get_if<IoreqStop>(&e.payload)) {
        stop_ = *s;
        stop_exit_ = e.exit;
        return std::optional<XenLogItem>();
    }
    const auto* rx = std::get_if<NetRx>(&e.payload);
    const auto* digest = std::get_if<StateDigest>(&e.payload);
    const auto* disk = std::get_if<DiskRead>(&e.payload);
    if (!rx && !digest && !disk)
        return unexpected("log entry " + std::to_string(e.seq) + " (" + std::string(kind_name(kind_of(e.payload))) +
                          ") is not one the Xen backend logs");
    if (!stop_ || stop_exit_ != e.exit)
        return unexpected("log entry " + std::to_string(e.seq) + " (" + std::string(kind_name(kind_of(e.payload))) +
                          ") at exit " + std::to_string(e.exit) + " has no ioreq_stop before it");
    DeviceEvent d;
    d.exit = e.exit;
    d.at_read = stop_->read;
    d.port = stop_->space == IoSpace::port;
    d.address = stop_->address;
    if (rx) {
        d.kind = DeviceEvent::Kind::net_rx;
        d.bytes = rx->frame;
    } else if (disk) {
        const bool failed = disk->is_failed();
        if (disk->mode == DiskRead::Mode::checksum && !failed)
            return unexpected("log entry " + std::to_string(e.seq) + " (disk_read) has only a checksum; the Xen "
                                                                      "backend logs the data it read");
        d.kind = DeviceEvent::Kind::disk_read;
        d.sector = disk->request;
        d.failed = failed;
        d.length = failed ? disk->length : disk->data.size();
        if (!failed)
            d.bytes = disk->data;
    } else {
        d.kind = DeviceEvent::Kind::digest;
        d.bytes.assign(digest->digest.begin(), digest->digest.end());
    }
    return std::optional<XenLogItem>(std::move(d));
}

} // namespace xenft::backends::xen
