#include "xenft/backends/xen/ft_log.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>

namespace xenft::backends::xen {

namespace {

std::uint64_t load_acquire(const std::uint64_t& v)
{
    return std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(v)).load(std::memory_order_acquire);
}

void store_release(std::uint64_t& v, std::uint64_t value)
{
    std::atomic_ref<std::uint64_t>(v).store(value, std::memory_order_release);
}

} // namespace

Expected<FtRing, std::string> FtRing::attach(void* base, std::size_t bytes)
{
    if (bytes < 2 * XC_PAGE_SIZE)
        return unexpected(std::string("FT ring: mapping too small"));
    auto* header = static_cast<xen_ft_ring*>(base);
    if (header->magic != XEN_FT_RING_MAGIC)
        return unexpected("FT ring: bad magic " + std::to_string(header->magic));
    if (header->version != XEN_FT_RING_VERSION)
        return unexpected("FT ring: version " + std::to_string(header->version) + ", this xenft knows " +
                          std::to_string(XEN_FT_RING_VERSION));
    if (header->record_size != sizeof(FtRecord))
        return unexpected("FT ring: record size " + std::to_string(header->record_size) + ", expected " +
                          std::to_string(sizeof(FtRecord)));
    const std::size_t capacity = (bytes - XC_PAGE_SIZE) / sizeof(FtRecord);
    if (header->nr_slots == 0 || header->nr_slots > capacity)
        return unexpected("FT ring: " + std::to_string(header->nr_slots) + " slots do not fit the " +
                          std::to_string(bytes) + "-byte mapping");
    auto* slots = reinterpret_cast<FtRecord*>(static_cast<std::uint8_t*>(base) + XC_PAGE_SIZE);
    return FtRing(header, slots, header->nr_slots);
}

std::uint64_t FtRing::exits() const { return load_acquire(header_->exits); }
std::uint64_t FtRing::produced() const { return load_acquire(header_->prod); }
std::uint64_t FtRing::consumed() const { return load_acquire(header_->cons); }
std::uint64_t FtRing::full_count() const { return load_acquire(header_->full); }

std::size_t FtRing::take(std::vector<FtRecord>& out, std::size_t max)
{
    const std::uint64_t cons = header_->cons;
    const std::uint64_t prod = load_acquire(header_->prod);
    std::size_t n = 0;
    for (std::uint64_t i = cons; i != prod && n < max; ++i, ++n)
        out.push_back(slots_[i % nr_slots_]);
    if (n)
        store_release(header_->cons, cons + n);
    return n;
}

std::size_t FtRing::room() const
{
    return nr_slots_ - static_cast<std::size_t>(header_->prod - load_acquire(header_->cons));
}

std::size_t FtRing::put(std::span<const FtRecord> records)
{
    const std::uint64_t prod = header_->prod;
    const std::size_t n = std::min(records.size(), room());
    for (std::size_t i = 0; i < n; ++i)
        slots_[(prod + i) % nr_slots_] = records[i];
    if (n)
        store_release(header_->prod, prod + n);
    return n;
}

Expected<std::unique_ptr<FtSession>, std::string> FtSession::enable(const XenControl& xc, const ForeignMemory& fm,
                                                                    std::uint32_t domid, Mode mode,
                                                                    unsigned ring_pages)
{
    const std::string name = "domain " + std::to_string(domid);
    std::unique_ptr<FtSession> s(new FtSession(xc, domid));
    evtchn_port_t port = 0;
    if (xc_ft_enable(xc.get(), domid, static_cast<std::uint32_t>(mode), ring_pages, &port) != 0) {
        const int e = errno;
        std::string why = std::strerror(e);
        if (e == EOPNOTSUPP)
            why += " (FT needs one vCPU, tsc_mode=\"always_emulate\", no nested HVM, and Xen booted with apicv=0)";
        return unexpected(name + ": cannot enable FT " + (mode == Mode::record ? "record" : "replay") + ": " + why);
    }
    s->enabled_ = true;
    auto mapping = ResourceMapping::map(fm, domid, XENMEM_resource_ft_ring, 0, 0, ring_pages);
    if (!mapping)
        return unexpected(mapping.error());
    s->mapping_.emplace(std::move(*mapping));
    auto ring = FtRing::attach(s->mapping_->address(), s->mapping_->bytes());
    if (!ring)
        return unexpected(name + ": " + ring.error());
    s->ring_.emplace(*ring);
    auto channel = EventChannel::bind(domid, port);
    if (!channel)
        return unexpected(channel.error());
    s->channel_.emplace(std::move(*channel));
    return s;
}

FtSession::~FtSession()
{
    channel_.reset();
    ring_.reset();
    mapping_.reset();
    if (enabled_)
        xc_ft_disable(xc_.get(), domid_); // the domain may be gone already: nothing to undo then
}

Expected<xen_domctl_ft_op, std::string> FtSession::state() const
{
    xen_domctl_ft_op op{};
    if (xc_ft_get_state(xc_.get(), domid_, &op) != 0)
        return unexpected(errno_text("domain " + std::to_string(domid_) + ": cannot read the FT state"));
    return op;
}

Expected<bool, std::string> FtSession::go_live()
{
    if (xc_ft_go_live(xc_.get(), domid_) != 0) {
        if (errno == EBUSY)
            return false;
        return unexpected(errno_text("domain " + std::to_string(domid_) + ": cannot go live"));
    }
    enabled_ = false;
    return true;
}

std::size_t whole_exits_prefix(std::span<const FtRecord> records, std::size_t limit)
{
    if (limit >= records.size())
        return records.size();
    std::size_t n = limit;
    while (n > 0 && records[n].exit == records[n - 1].exit)
        --n;
    return n;
}

const char* ft_record_type_name(std::uint16_t type)
{
    switch (type) {
    case XEN_FT_REC_INJECT: return "inject";
    case XEN_FT_REC_TSC: return "tsc";
    case XEN_FT_REC_IO_READ: return "io-read";
    case XEN_FT_REC_PROGRESS: return "progress";
    default: return "unknown";
    }
}

} // namespace xenft::backends::xen
