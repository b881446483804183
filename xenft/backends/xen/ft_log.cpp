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

Expected<FtControl, std::string> FtControl::open()
{
    xencall_handle* h = xencall_open(nullptr, 0);
    if (!h)
        return unexpected(errno_text("cannot open libxencall (is this dom0 with privcmd loaded?)"));
    return FtControl(h);
}

Expected<ft_abi::DomctlFtOp, int> FtControl::call(std::uint32_t domid, const ft_abi::DomctlFtOp& op) const
{
    // The hypervisor reads and writes the domctl in memory libxencall locked for it.
    struct BufferFree {
        xencall_handle* h;
        void operator()(void* p) const noexcept { xencall_free_buffer(h, p); }
    };
    std::unique_ptr<void, BufferFree> buffer(xencall_alloc_buffer(xcall_.get(), sizeof(xen_domctl)),
                                             BufferFree{xcall_.get()});
    if (!buffer)
        return unexpected(errno);
    auto* domctl = static_cast<xen_domctl*>(buffer.get());
    std::memset(domctl, 0, sizeof(*domctl));
    domctl->cmd = ft_abi::kDomctlFtOp;
    domctl->interface_version = XEN_DOMCTL_INTERFACE_VERSION;
    domctl->domain = static_cast<domid_t>(domid);
    static_assert(sizeof(ft_abi::DomctlFtOp) <= sizeof(domctl->u.pad));
    std::memcpy(domctl->u.pad, &op, sizeof(op));
    if (xencall1(xcall_.get(), __HYPERVISOR_domctl, reinterpret_cast<std::uintptr_t>(domctl)) < 0)
        return unexpected(errno);
    ft_abi::DomctlFtOp result{};
    std::memcpy(&result, domctl->u.pad, sizeof(result));
    return result;
}

namespace {

std::string domctl_error(std::uint32_t domid, const std::string& what, int error)
{
    std::string text = "domain " + std::to_string(domid) + ": cannot " + what + ": " + std::strerror(error);
    if (error == ENOSYS || error == EOPNOTSUPP)
        text += " (FT needs Xen 4.17 with xenft's hvm-patches, one vCPU, tsc_mode=\"always_emulate\", no nested "
                "HVM, and Xen booted with apicv=0)";
    else if (error == EACCES)
        text += " (the hypervisor's domctl interface is not the one of Xen 4.17 that xenft was built for)";
    return text;
}

} // namespace

Expected<std::uint32_t, std::string> FtControl::enable(std::uint32_t domid, std::uint32_t mode,
                                                       unsigned ring_pages) const
{
    ft_abi::DomctlFtOp op{};
    op.cmd = ft_abi::kOpEnable;
    op.mode = mode;
    op.ring_pages = ring_pages;
    auto r = call(domid, op);
    if (!r)
        return unexpected(domctl_error(
            domid, std::string("enable FT ") + (mode == ft_abi::kModeRecord ? "record" : "replay"), r.error()));
    return r->port;
}

Expected<bool, std::string> FtControl::disable(std::uint32_t domid) const
{
    ft_abi::DomctlFtOp op{};
    op.cmd = ft_abi::kOpDisable;
    if (auto r = call(domid, op); !r)
        return unexpected(domctl_error(domid, "disable FT", r.error()));
    return true;
}

Expected<ft_abi::DomctlFtOp, std::string> FtControl::state(std::uint32_t domid) const
{
    ft_abi::DomctlFtOp op{};
    op.cmd = ft_abi::kOpGet;
    auto r = call(domid, op);
    if (!r)
        return unexpected(domctl_error(domid, "read the FT state", r.error()));
    return *r;
}

Expected<bool, std::string> FtControl::go_live(const XenControl& xc, std::uint32_t domid) const
{
    ft_abi::DomctlFtOp op{};
    op.cmd = ft_abi::kOpGoLive;
    if (auto r = call(domid, op); !r) {
        if (r.error() == EBUSY)
            return false;
        return unexpected(domctl_error(domid, "go live", r.error()));
    }
    // Xen's timers did not run the guest while it replayed: loading the HVM context back re-arms
    // the vLAPIC, PIT, RTC and HPET timers from the guest's registers.
    const int size = xc_domain_hvm_getcontext(xc.get(), domid, nullptr, 0);
    if (size <= 0)
        return unexpected(errno_text("domain " + std::to_string(domid) + ": went live, but cannot read its HVM context"));
    std::vector<std::uint8_t> context(static_cast<std::size_t>(size));
    const int got = xc_domain_hvm_getcontext(xc.get(), domid, context.data(), static_cast<std::uint32_t>(size));
    if (got <= 0 || xc_domain_hvm_setcontext(xc.get(), domid, context.data(), static_cast<std::uint32_t>(got)) != 0)
        return unexpected(errno_text("domain " + std::to_string(domid) + ": went live, but cannot re-arm its timers"));
    return true;
}

Expected<FtRing, std::string> FtRing::attach(void* base, std::size_t bytes)
{
    if (bytes < 2 * XC_PAGE_SIZE)
        return unexpected(std::string("FT ring: mapping too small"));
    auto* header = static_cast<ft_abi::RingHeader*>(base);
    if (header->magic != ft_abi::kRingMagic)
        return unexpected("FT ring: bad magic " + std::to_string(header->magic));
    if (header->version != ft_abi::kRingVersion)
        return unexpected("FT ring: version " + std::to_string(header->version) + ", this xenft knows " +
                          std::to_string(ft_abi::kRingVersion));
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
    auto control = FtControl::open();
    if (!control)
        return unexpected(name + ": " + control.error());
    std::unique_ptr<FtSession> s(new FtSession(xc, std::move(*control), domid));
    auto port = s->control_.enable(domid, static_cast<std::uint32_t>(mode), ring_pages);
    if (!port)
        return unexpected(port.error());
    s->enabled_ = true;
    auto mapping = ResourceMapping::map(fm, domid, ft_abi::kResourceFtRing, 0, 0, ring_pages);
    if (!mapping)
        return unexpected(mapping.error());
    s->mapping_.emplace(std::move(*mapping));
    auto ring = FtRing::attach(s->mapping_->address(), s->mapping_->bytes());
    if (!ring)
        return unexpected(name + ": " + ring.error());
    s->ring_.emplace(*ring);
    auto channel = EventChannel::bind(domid, *port);
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
        (void)control_.disable(domid_); // the domain may be gone already: nothing to undo then
}

Expected<ft_abi::DomctlFtOp, std::string> FtSession::state() const
{
    return control_.state(domid_);
}

Expected<bool, std::string> FtSession::go_live()
{
    auto r = control_.go_live(xc_, domid_);
    if (r && *r)
        enabled_ = false;
    return r;
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
    case ft_abi::kRecInject: return "inject";
    case ft_abi::kRecTsc: return "tsc";
    case ft_abi::kRecIoRead: return "io-read";
    case ft_abi::kRecProgress: return "progress";
    default: return "unknown";
    }
}

} // namespace xenft::backends::xen
