#include "xenft/backends/xen/device_model.hpp"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "xenft/engine/acpi_tables.hpp"

namespace xenft::backends::xen {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kMsiAddress = 0xfee00000; // fixed delivery to APIC ID 0 (vCPU 0)

// What a read returns where no device answers, as on real hardware.
std::uint64_t all_ones(std::uint8_t size) { return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1; }

} // namespace

Expected<XenGuestMemory, std::string> XenGuestMemory::map(const ForeignMemory& fm, std::uint32_t domid, std::uint64_t bytes)
{
    auto pages = GuestPages::map(fm, domid, 0, bytes / kPage, true);
    if (!pages)
        return unexpected(pages.error());
    return XenGuestMemory(std::move(pages).value());
}

bool XenGuestMemory::valid(std::uint64_t gpa, std::size_t n) const
{
    if (gpa > pages_.count() * kPage || n > pages_.count() * kPage - gpa)
        return false;
    for (std::uint64_t p = gpa / kPage; n && p <= (gpa + n - 1) / kPage; ++p)
        if (!pages_.mapped(p))
            return false;
    return true;
}

bool XenGuestMemory::read_guest(std::uint64_t gpa, std::span<std::uint8_t> out)
{
    if (!valid(gpa, out.size()))
        return false;
    for (std::size_t done = 0; done < out.size();) {
        const std::uint64_t at = gpa + done;
        const std::size_t n = std::min<std::size_t>(out.size() - done, kPage - at % kPage);
        std::memcpy(out.data() + done, pages_.page(at / kPage).data() + at % kPage, n);
        done += n;
    }
    return true;
}

void XenGuestMemory::track_writes(bool on)
{
    written_.assign(on ? pages_.count() : 0, false);
}

std::vector<std::uint64_t> XenGuestMemory::take_written(std::vector<std::uint64_t> dirty)
{
    for (std::size_t i = 0; i < written_.size(); ++i)
        if (written_[i]) {
            dirty.push_back(i);
            written_[i] = false;
        }
    std::sort(dirty.begin(), dirty.end());
    dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());
    std::erase_if(dirty, [this](std::uint64_t gfn) { return page(gfn).empty(); });
    return dirty;
}

bool XenGuestMemory::write_guest(std::uint64_t gpa, std::span<const std::uint8_t> data)
{
    if (!valid(gpa, data.size()))
        return false;
    if (!written_.empty())
        for (std::uint64_t p = gpa / kPage; !data.empty() && p <= (gpa + data.size() - 1) / kPage; ++p)
            written_[p] = true;
    for (std::size_t done = 0; done < data.size();) {
        const std::uint64_t at = gpa + done;
        const std::size_t n = std::min<std::size_t>(data.size() - done, kPage - at % kPage);
        std::memcpy(pages_.writable_page(at / kPage).data() + at % kPage, data.data() + done, n);
        done += n;
    }
    return true;
}

bool TrackedDisk::write(std::uint64_t offset, std::span<const std::uint8_t> data)
{
    if (!store_.write(offset, data))
        return false;
    for (std::uint64_t b = offset / kBlockBytes; !data.empty() && b <= (offset + data.size() - 1) / kBlockBytes; ++b)
        written_.insert(b);
    return true;
}

std::uint64_t TrackedDisk::block_length(std::uint64_t block) const
{
    const std::uint64_t at = block * kBlockBytes;
    return at >= size_bytes() ? 0 : std::min(kBlockBytes, size_bytes() - at);
}

bool TrackedDisk::read_block(std::uint64_t block, std::span<std::uint8_t, kBlockBytes> out)
{
    const std::uint64_t n = block_length(block);
    std::fill(out.begin(), out.end(), std::uint8_t{0});
    return n != 0 && store_.read(block * kBlockBytes, std::span(out).first(n));
}

bool TrackedDisk::write_block(std::uint64_t block, std::span<const std::uint8_t, kBlockBytes> data)
{
    const std::uint64_t n = block_length(block);
    return n != 0 && write(block * kBlockBytes, std::span(data).first(n));
}

Expected<std::unique_ptr<XenDeviceModel>, std::string> XenDeviceModel::create(std::uint32_t domid, const DeviceModelSpec& spec)
{
    auto xc = XenControl::open();
    if (!xc)
        return unexpected(xc.error());
    auto fm = ForeignMemory::open();
    if (!fm)
        return unexpected(fm.error());
    std::unique_ptr<XenDeviceModel> dm(new XenDeviceModel(domid, std::move(xc).value(), std::move(fm).value()));
    auto memory = XenGuestMemory::map(dm->fm_, domid, spec.memory_bytes);
    if (!memory)
        return unexpected(memory.error());
    dm->memory_.emplace(std::move(memory).value());

    dm->uart_.set_sink(spec.console);
    if (spec.isa_lines) // COM1 on IRQ 4: Linux's 8250 driver takes it as ttyS0
        dm->uart_.wire_to_isa_line(devices::Uart16550::kIsaLine);
    dm->bus_.attach(dm->uart_);
    if (spec.isa_lines) {
        // The plain PC's PM1a control block, where a kernel's ACPI poweroff writes.
        dm->power_ = std::make_unique<devices::AcpiPowerControl>();
        dm->bus_.attach(*dm->power_);
    }
    dm->bus_.attach(dm->clock_);
    if (!spec.tap.empty()) {
        auto tap = devices::TapDevice::open(spec.tap);
        if (!tap)
            return unexpected(tap.error());
        dm->tap_.emplace(std::move(tap).value());
        dm->net_ = std::make_unique<devices::VirtioNet>(*dm->memory_, spec.mac);
        dm->net_->set_transmit(&*dm->tap_);
        if (spec.isa_lines)
            dm->net_->wire_to_isa_line(devices::VirtioNet::kIsaLine);
        dm->bus_.attach(*dm->net_);
    }
    devices::BlockPort* disk_port = spec.shared_disk;
    std::uint64_t disk_bytes = spec.shared_disk_bytes;
    if (!spec.disk.empty()) {
        auto disk = devices::FileStore::open(spec.disk);
        if (!disk)
            return unexpected(disk.error());
        dm->disk_.emplace(std::move(disk).value());
        disk_port = &*dm->disk_;
        disk_bytes = dm->disk_->size_bytes();
    } else {
        dm->shared_disk_ = spec.shared_disk;
    }
    if (disk_port) {
        dm->blk_ = std::make_unique<devices::VirtioBlk>(*dm->memory_, disk_bytes);
        dm->blk_->set_port(disk_port);
        if (spec.isa_lines)
            dm->blk_->wire_to_isa_line(devices::VirtioBlk::kIsaLine);
        dm->bus_.attach(*dm->blk_);
    }

    auto server = IoreqServer::create(domid, dm->fm_);
    if (!server)
        return unexpected(server.error());
    dm->server_.emplace(std::move(server).value());
    const std::uint64_t mmio[] = {devices::ClockReg::kBase, devices::VirtioNet::kDefaultBase, devices::VirtioBlk::kDefaultBase};
    for (std::uint64_t base : mmio)
        if (auto r = dm->server_->map_mmio(base, base + kPage - 1); !r)
            return unexpected(r.error());
    if (auto r = dm->server_->map_ports(devices::Uart16550::kBase, devices::Uart16550::kBase + 7); !r)
        return unexpected(r.error());
    if (dm->power_)
        if (auto r = dm->server_->map_ports(devices::AcpiPowerControl::kBase, devices::AcpiPowerControl::kBase + 1); !r)
            return unexpected(r.error());
    if (auto r = dm->server_->enable(); !r)
        return unexpected(r.error());
    return dm;
}

std::vector<std::uint8_t> XenDeviceModel::save_devices() const
{
    return bus_.save_state();
}

Expected<bool, std::string> XenDeviceModel::load_devices(std::span<const std::uint8_t> blob)
{
    return bus_.load_state(blob);
}

std::uint64_t XenDeviceModel::clock_ns() const
{
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count());
}

void XenDeviceModel::continue_clock_from(std::uint64_t ns)
{
    start_ = std::chrono::steady_clock::now() - std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

void XenDeviceModel::handle(IoAccess& a)
{
    devices::Device* d = bus_.find(a.port, a.address);
    if (a.read)
        a.value = d ? d->read(a.address, a.size) : all_ones(a.size);
    else if (d)
        d->write(a.address, a.size, a.value);
}

Expected<bool, std::string> XenDeviceModel::deliver_interrupts()
{
    for (devices::Device* d : bus_.devices()) {
        const auto vector = d->pending_interrupt();
        if (!vector)
            continue;
        xendevicemodel_handle* xdm = server_->device_model().get();
        const auto domid = static_cast<domid_t>(domid_);
        if (const auto line = d->isa_line()) {
            // An edge: Xen's 8259 and IO-APIC latch it; the vector is the guest's choice.
            if (xendevicemodel_set_isa_irq_level(xdm, domid, *line, 1) != 0 ||
                xendevicemodel_set_isa_irq_level(xdm, domid, *line, 0) != 0)
                return unexpected(errno_text("domain " + std::to_string(domid_) + ": cannot raise ISA IRQ " +
                                             std::to_string(*line) + " (" + d->name() + ")"));
        } else if (xendevicemodel_inject_msi(xdm, domid, kMsiAddress, *vector) != 0) {
            return unexpected(errno_text("domain " + std::to_string(domid_) + ": cannot inject vector " +
                                         std::to_string(*vector) + " (" + d->name() + ")"));
        }
        d->interrupt_delivered();
        ++interrupts_;
    }
    return true;
}

Expected<bool, std::string> XenDeviceModel::nudge()
{
    devices::Device* d = net_ && net_->isa_line() ? static_cast<devices::Device*>(net_.get())
                         : blk_ && blk_->isa_line() ? static_cast<devices::Device*>(blk_.get())
                                                    : nullptr;
    if (!d)
        return false;
    xendevicemodel_handle* xdm = server_->device_model().get();
    const auto domid = static_cast<domid_t>(domid_);
    const std::uint8_t line = *d->isa_line();
    if (xendevicemodel_set_isa_irq_level(xdm, domid, line, 1) != 0 ||
        xendevicemodel_set_isa_irq_level(xdm, domid, line, 0) != 0)
        return unexpected(errno_text("domain " + std::to_string(domid_) + ": cannot raise ISA IRQ " +
                                     std::to_string(line) + " (" + d->name() + ")"));
    return true;
}

void XenDeviceModel::interrupts_taken_elsewhere()
{
    for (devices::Device* d : bus_.devices())
        if (d->pending_interrupt())
            d->interrupt_delivered();
}

Expected<unsigned, std::string> XenDeviceModel::reassert_interrupts()
{
    unsigned reasserted = 0;
    for (devices::Device* d : bus_.devices())
        reasserted += d->reassert_unacknowledged_interrupt() ? 1u : 0u;
    if (auto r = deliver_interrupts(); !r)
        return unexpected(r.error());
    return reasserted;
}

// The register the FADT names and the sleep type the DSDT's \_S5 gives are the ones served.
static_assert(devices::AcpiPowerControl::kBase == engine::kPm1aControlBlock);
static_assert(devices::AcpiPowerControl::kSoftOffSleepType == engine::kS5SleepType);

Expected<bool, std::string> XenDeviceModel::carry_out_poweroff()
{
    if (!power_ || !power_->poweroff_requested() || poweroff_asked_)
        return false;
    // The vCPU waits in the ioreq of the write: Xen completes the shutdown once it is answered.
    if (auto r = xc_.shut_down(domid_, SHUTDOWN_poweroff); !r)
        return unexpected("domain " + std::to_string(domid_) + ": the guest powered off (ACPI S5): " + r.error());
    poweroff_asked_ = true;
    return true;
}

namespace {

const char* shutdown_reason_name(unsigned reason)
{
    switch (reason) {
    case SHUTDOWN_poweroff: return "poweroff";
    case SHUTDOWN_reboot: return "reboot";
    case SHUTDOWN_suspend: return "suspend";
    case SHUTDOWN_crash: return "crash";
    case SHUTDOWN_watchdog: return "watchdog";
    case SHUTDOWN_soft_reset: return "soft reset";
    }
    return "unknown reason";
}

} // namespace

std::optional<DomainEnd> XenDeviceModel::end_state() const
{
    using Reason = logformat::VmEnd::Reason;
    auto info = xc_.domain_info(domid_);
    // The guest powered off and this replica asked Xen to shut it down: the toolstack may have
    // removed the domain already (on_poweroff=destroy), which is still the guest's poweroff.
    if (poweroff_asked_ && (!info || info->dying || (info->shutdown && !info->crashed)))
        return DomainEnd{Reason::shut_down, "the guest powered off (ACPI S5)"};
    if (!info)
        return DomainEnd{Reason::destroyed, "the domain is gone"};
    if (info->crashed) {
        // Xen crashes a replaying domain whose replay diverged, and says why on its console
        // (hvm-patches 0006): that is this host's failure, not the guest's, and the one line
        // an administrator needs.
        std::lock_guard lock(crash_mu_);
        if (!crash_text_) {
            const std::string xen = xc_.console_line(domid_, "FT replay diverged");
            crash_text_ = xen.empty() ? "the domain crashed" : "the domain crashed: Xen: " + xen;
        }
        return DomainEnd{Reason::crashed, *crash_text_};
    }
    if (info->dying)
        return DomainEnd{Reason::destroyed, "the domain is being destroyed"};
    if (info->shutdown)
        return DomainEnd{Reason::shut_down,
                         std::string("the domain shut down (") + shutdown_reason_name(info->shutdown_reason) + ")"};
    return std::nullopt;
}

Expected<bool, std::string> XenDeviceModel::take_frames()
{
    if (!tap_ || !net_)
        return true;
    for (;;) {
        if (!waiting_frame_) {
            waiting_frame_ = tap_->receive();
            if (!waiting_frame_)
                return true;
        }
        if (!net_->can_receive())
            return true; // it stays waiting until the guest posts a buffer
        net_->receive(*waiting_frame_);
        waiting_frame_.reset();
        ++frames_in_;
    }
}

Expected<bool, std::string> XenDeviceModel::serve_once(int timeout_ms)
{
    const std::string domain = "domain " + std::to_string(domid_);
    pollfd fds[2] = {{server_->fd(), POLLIN, 0}, {tap_ ? tap_->fd() : -1, POLLIN, 0}};
    const int n = ::poll(fds, tap_ && !waiting_frame_ ? 2 : 1, timeout_ms);
    if (n < 0 && errno != EINTR)
        return unexpected(errno_text(domain + ": poll"));
    Expected<bool, std::string> step = server_->serve([this](IoAccess& a) { handle(a); });
    if (step)
        step = carry_out_poweroff();
    if (step)
        step = take_frames();
    if (step)
        step = deliver_interrupts();
    // A domain destroyed under us shows as failing calls or as silence: either way, say so
    // rather than report the failed call.
    if (!step || n == 0) {
        if (end_state())
            return false;
        if (!step)
            return unexpected(step.error());
    }
    return true;
}

Expected<std::string, std::string> XenDeviceModel::run(const std::atomic<bool>& stop)
{
    while (!stop.load()) {
        auto step = serve_once(100);
        if (!step)
            return unexpected(step.error());
        if (!*step)
            return *ended();
    }
    return std::string("stopped");
}

} // namespace xenft::backends::xen
