// The Xen backend's device-model side: xenftd as the ioreq server of a single-vCPU PVH domain.
// Xen forwards the guest's accesses to the port and MMIO ranges registered here (the UART, the
// clock register, the virtio-mmio devices; the LAPIC stays Xen's) as ioreqs in a shared page;
// the server answers each one and tells Xen through the vCPU's event channel. The ioreq page
// is mapped with xenforeignmemory_map_resource: PVH domains get no ioreq gfns, so the legacy
// path fails (../shared/design/XEN-4.17-HOOKS.md, "Measured in the lab").
//
// The domain should be created paused and unpaused only after enable(): until then its
// accesses read all ones (Xen's null handler). Destroying the server (the destructor) stops
// the forwarding; the guest's next access reads all ones again.
#pragma once

// xen_handles.hpp first: xenctrl.h brings the definitions Xen's other public headers rely on.
#include "xenft/backends/xen/xen_handles.hpp"

extern "C" {
#include <xendevicemodel.h>
#include <xen/hvm/ioreq.h>
}

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "xenft/common/expected.hpp"

namespace xenft::backends::xen {

struct DeviceModelCloser {
    void operator()(xendevicemodel_handle* h) const noexcept { xendevicemodel_close(h); }
};

// A libxendevicemodel handle (also used for injecting MSIs).
class DeviceModelHandle {
public:
    static Expected<DeviceModelHandle, std::string> open();
    xendevicemodel_handle* get() const noexcept { return dm_.get(); }

private:
    explicit DeviceModelHandle(xendevicemodel_handle* h) : dm_(h) {}
    std::unique_ptr<xendevicemodel_handle, DeviceModelCloser> dm_;
};

// One access of the guest, as the server sees it.
struct IoAccess {
    bool port = false;  // port I/O; otherwise MMIO
    bool read = false;
    std::uint64_t address = 0;
    std::uint8_t size = 0;    // 1, 2, 4 or 8
    std::uint64_t value = 0;  // a write's value; the handler sets a read's
};

class IoreqServer {
public:
    // Creates the server for domain `domid` (no buffered ioreqs), maps its ioreq page and binds
    // vCPU 0's event channel. Ranges are added before enable().
    static Expected<IoreqServer, std::string> create(std::uint32_t domid, const ForeignMemory& fm);
    IoreqServer(IoreqServer&& o) noexcept;
    IoreqServer& operator=(IoreqServer&&) = delete;
    IoreqServer(const IoreqServer&) = delete;
    ~IoreqServer();

    // Inclusive ranges, as Xen takes them.
    Expected<bool, std::string> map_ports(std::uint64_t first, std::uint64_t last);
    Expected<bool, std::string> map_mmio(std::uint64_t first, std::uint64_t last);
    Expected<bool, std::string> enable();

    // For poll(2): readable when Xen signalled a request.
    int fd() const { return channel_->fd(); }
    // Answers the request waiting on vCPU 0, if any: handler(access) performs it (and sets
    // access.value for a read). String operations (data in guest memory, REP INS/OUTS/MOVS)
    // are answered with all ones and nothing written, and counted: no FT guest's device uses
    // them. Returns whether a request was answered.
    Expected<bool, std::string> serve(const std::function<void(IoAccess&)>& handler);
    // The access waiting on vCPU 0, if any, without taking it (serve() answers it later).
    std::optional<IoAccess> waiting() const;
    std::uint64_t requests() const noexcept { return requests_; }
    std::uint64_t unsupported() const noexcept { return unsupported_; }
    std::uint32_t domid() const noexcept { return domid_; }
    const DeviceModelHandle& device_model() const noexcept { return *dm_; }

private:
    IoreqServer(std::uint32_t domid, std::unique_ptr<DeviceModelHandle> dm, ioservid_t id)
        : domid_(domid), dm_(std::move(dm)), id_(id) {}
    std::uint32_t domid_;
    std::unique_ptr<DeviceModelHandle> dm_; // null once moved from
    ioservid_t id_ = 0;
    std::optional<ResourceMapping> page_;
    std::optional<EventChannel> channel_;
    std::uint64_t requests_ = 0, unsupported_ = 0;
};

} // namespace xenft::backends::xen
