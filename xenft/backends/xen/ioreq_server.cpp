#include "xenft/backends/xen/ioreq_server.hpp"

extern "C" {
#include <xen/hvm/hvm_op.h>
#include <xen/memory.h>
}

#include <atomic>
#include <utility>

namespace xenft::backends::xen {

Expected<DeviceModelHandle, std::string> DeviceModelHandle::open()
{
    xendevicemodel_handle* h = xendevicemodel_open(nullptr, 0);
    if (!h)
        return unexpected(errno_text("cannot open libxendevicemodel"));
    return DeviceModelHandle(h);
}

Expected<IoreqServer, std::string> IoreqServer::create(std::uint32_t domid, const ForeignMemory& fm)
{
    const std::string domain = "domain " + std::to_string(domid);
    auto dm = DeviceModelHandle::open();
    if (!dm)
        return unexpected(dm.error());
    auto handle = std::make_unique<DeviceModelHandle>(std::move(dm).value());
    ioservid_t id = 0;
    if (xendevicemodel_create_ioreq_server(handle->get(), static_cast<domid_t>(domid), HVM_IOREQSRV_BUFIOREQ_OFF, &id) != 0)
        return unexpected(errno_text(domain + ": cannot create an ioreq server"));
    IoreqServer server(domid, std::move(handle), id);
    auto page = ResourceMapping::map(fm, domid, XENMEM_resource_ioreq_server, id, XENMEM_resource_ioreq_server_frame_ioreq(0), 1);
    if (!page)
        return unexpected(domain + ": cannot map the ioreq server's page: " + page.error());
    server.page_.emplace(std::move(page).value());
    return server;
}

IoreqServer::IoreqServer(IoreqServer&& o) noexcept
    : domid_(o.domid_), dm_(std::move(o.dm_)), id_(o.id_), page_(std::move(o.page_)), channel_(std::move(o.channel_)), requests_(o.requests_), unsupported_(o.unsupported_)
{
    o.page_.reset();
    o.channel_.reset();
}

IoreqServer::~IoreqServer()
{
    if (!dm_)
        return;
    channel_.reset();
    page_.reset();
    // Destroying disables it too: the guest's accesses go back to Xen's null handler.
    xendevicemodel_destroy_ioreq_server(dm_->get(), static_cast<domid_t>(domid_), id_);
}

Expected<bool, std::string> IoreqServer::map_ports(std::uint64_t first, std::uint64_t last)
{
    if (xendevicemodel_map_io_range_to_ioreq_server(dm_->get(), static_cast<domid_t>(domid_), id_, 0, first, last) != 0)
        return unexpected(errno_text("domain " + std::to_string(domid_) + ": cannot take ports " + std::to_string(first) +
                                     "-" + std::to_string(last)));
    return true;
}

Expected<bool, std::string> IoreqServer::map_mmio(std::uint64_t first, std::uint64_t last)
{
    if (xendevicemodel_map_io_range_to_ioreq_server(dm_->get(), static_cast<domid_t>(domid_), id_, 1, first, last) != 0)
        return unexpected(errno_text("domain " + std::to_string(domid_) + ": cannot take MMIO " + std::to_string(first) +
                                     "-" + std::to_string(last)));
    return true;
}

Expected<bool, std::string> IoreqServer::enable()
{
    const std::string domain = "domain " + std::to_string(domid_);
    if (xendevicemodel_set_ioreq_server_state(dm_->get(), static_cast<domid_t>(domid_), id_, 1) != 0)
        return unexpected(errno_text(domain + ": cannot enable the ioreq server"));
    // Xen writes vCPU 0's event channel port into its slot when the server is enabled.
    const auto* shared = static_cast<const shared_iopage_t*>(page_->address());
    const evtchn_port_t port = shared->vcpu_ioreq[0].vp_eport;
    auto channel = EventChannel::bind(domid_, port);
    if (!channel)
        return unexpected(domain + ": the ioreq server's event channel: " + channel.error());
    channel_.emplace(std::move(channel).value());
    return true;
}

namespace {

// A port or MMIO ioreq as the handler sees it (a write's value; a read's is the handler's).
IoAccess access_of(const ioreq_t& req)
{
    IoAccess a;
    a.port = req.type == IOREQ_TYPE_PIO;
    a.read = req.dir == IOREQ_READ;
    a.address = req.addr;
    a.size = static_cast<std::uint8_t>(req.size);
    a.value = req.data;
    return a;
}

} // namespace

std::optional<IoAccess> IoreqServer::waiting() const
{
    const auto* shared = static_cast<const shared_iopage_t*>(page_->address());
    const ioreq_t* req = &shared->vcpu_ioreq[0];
    std::atomic_thread_fence(std::memory_order_acquire);
    if (req->state != STATE_IOREQ_READY)
        return std::nullopt;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (req->type != IOREQ_TYPE_PIO && req->type != IOREQ_TYPE_COPY)
        return std::nullopt;
    return access_of(*req);
}

Expected<bool, std::string> IoreqServer::serve(const std::function<void(IoAccess&)>& handler)
{
    if (auto ack = channel_->acknowledge(); !ack)
        return unexpected(ack.error());
    auto* shared = static_cast<shared_iopage_t*>(page_->address());
    ioreq_t* req = &shared->vcpu_ioreq[0];
    // The state is Xen's hand-over: READY means every other field is written.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (req->state != STATE_IOREQ_READY)
        return false;
    std::atomic_thread_fence(std::memory_order_acquire);
    req->state = STATE_IOREQ_INPROCESS;
    ++requests_;
    if (req->type == IOREQ_TYPE_PIO || req->type == IOREQ_TYPE_COPY) {
        if (req->data_is_ptr || req->count != 1 || (req->size != 1 && req->size != 2 && req->size != 4 && req->size != 8)) {
            ++unsupported_;
            if (req->dir == IOREQ_READ && !req->data_is_ptr)
                req->data = ~0ull;
        } else {
            IoAccess a = access_of(*req);
            handler(a);
            if (a.read)
                req->data = a.size == 8 ? a.value : a.value & ((1ull << (8 * a.size)) - 1);
        }
    }
    // Anything else (TIMEOFFSET, INVALIDATE) needs only the answer.
    std::atomic_thread_fence(std::memory_order_release);
    req->state = STATE_IORESP_READY;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (auto n = channel_->notify(); !n)
        return unexpected(n.error());
    return true;
}

} // namespace xenft::backends::xen
