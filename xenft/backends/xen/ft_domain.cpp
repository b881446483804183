#include "xenft/backends/xen/ft_domain.hpp"

#include <openssl/evp.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <memory>

#include "xenft/backends/xen/copy_state.hpp"
#include "xenft/backends/xen/linux_boot.hpp"

namespace xenft::backends::xen {

namespace {

std::uint64_t now_ms()
{
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
}

std::string event_kind_name(DeviceEvent::Kind k)
{
    switch (k) {
    case DeviceEvent::Kind::net_rx: return "net_rx";
    case DeviceEvent::Kind::digest: return "digest";
    case DeviceEvent::Kind::disk_read: return "disk_read";
    }
    return "unknown";
}

std::string hex_address(std::uint64_t a)
{
    char b[24];
    std::snprintf(b, sizeof b, "%#llx", static_cast<unsigned long long>(a));
    return b;
}

Expected<bool, std::string> wait(std::initializer_list<int> fds, int timeout_ms, const std::string& who)
{
    if (timeout_ms == 0)
        return true; // the caller waited
    std::vector<pollfd> p;
    for (int fd : fds)
        if (fd >= 0)
            p.push_back({fd, POLLIN, 0});
    if (::poll(p.data(), p.size(), timeout_ms) < 0 && errno != EINTR)
        return unexpected(errno_text(who + ": poll"));
    return true;
}

// What every replica starts with: the device models serving the paused domain, and its FT
// mode with the ring mapped. The session borrows the models' handles, so it is declared after
// them (destroyed first).
struct Protection {
    std::unique_ptr<XenDeviceModel> dm;
    std::unique_ptr<FtSession> session;
};

Expected<Protection, std::string> protect(std::uint32_t domid, const FtSpec& spec, FtSession::Mode mode)
{
    auto dm = XenDeviceModel::create(domid, spec.devices);
    if (!dm)
        return unexpected(dm.error());
    if (spec.linux_image)
        if (auto r = boot_linux(**dm, *spec.linux_image); !r)
            return unexpected(r.error());
    auto session = FtSession::enable((*dm)->control(), (*dm)->foreign_memory(), domid, mode, spec.ring_pages);
    if (!session)
        return unexpected(session.error());
    return Protection{std::move(dm).value(), std::move(session).value()};
}

} // namespace

// --- the primary -----------------------------------------------------------------------------

RecordingDomain::RecordingDomain(std::unique_ptr<XenDeviceModel> dm, std::unique_ptr<FtSession> session,
                                 const FtSpec& spec)
    : dm_(std::move(dm)), session_(std::move(session)), spec_(spec), gate_(dm_->tap(), dm_->shared_disk())
{
    dm_->set_transmit(&gated_);
    if (dm_->shared_disk())
        dm_->set_disk_port(&logged_disk_);
}

bool RecordingDomain::LoggedDisk::read(std::uint64_t offset, std::span<std::uint8_t> out)
{
    if (out.empty())
        return true; // nothing to read, nothing to log (both replicas answer so)
    DeviceEvent e;
    e.kind = DeviceEvent::Kind::disk_read;
    e.sector = offset / devices::VirtioBlk::kSector;
    e.length = out.size();
    const bool ok = d_.gate_.read(offset, out);
    e.failed = !ok;
    if (ok)
        e.bytes.assign(out.begin(), out.end());
    d_.log_event(std::move(e));
    ++d_.disk_reads_;
    return ok;
}

bool RecordingDomain::LoggedDisk::write(std::uint64_t offset, std::span<const std::uint8_t> data)
{
    // Tagged with the items logged before it, like a frame: it reaches the LUN once the
    // backup has them, and the backup, replaying to here, makes the same write.
    ++d_.outputs_made_;
    d_.gate_.hold_write(d_.appended_, offset, data);
    return true;
}

void RecordingDomain::log_event(DeviceEvent e)
{
    e.exit = at_.exit;
    e.at_read = at_.access->read;
    e.port = at_.access->port;
    e.address = at_.access->address;
    append(*at_.log, std::move(e));
}

Expected<std::unique_ptr<RecordingDomain>, std::string> RecordingDomain::start(std::uint32_t domid,
                                                                                const FtSpec& spec)
{
    auto p = protect(domid, spec, FtSession::Mode::record);
    if (!p)
        return unexpected(p.error());
    std::unique_ptr<RecordingDomain> d(new RecordingDomain(std::move(p->dm), std::move(p->session), spec));
    if (spec.unpause)
        if (auto r = d->dm_->control().unpause(domid); !r)
            return unexpected(r.error());
    return d;
}

Expected<std::unique_ptr<RecordingDomain>, std::string> RecordingDomain::record_again(ReplayingDomain& live,
                                                                                       const FtSpec& spec)
{
    if (!live.dm_ || live.session_)
        return unexpected(std::string("the domain is not live"));
    live.state_digests_.reset(); // it points at the device models this takes
    XenDeviceModel& dm = *live.dm_;
    const std::uint32_t domid = dm.domid();
    if (auto r = dm.control().pause(domid); !r)
        return unexpected(r.error());
    auto session = FtSession::enable(dm.control(), dm.foreign_memory(), domid, FtSession::Mode::record, spec.ring_pages);
    if (!session) {
        (void)dm.control().unpause(domid);
        return unexpected(session.error());
    }
    std::unique_ptr<RecordingDomain> d(new RecordingDomain(std::move(live.dm_), std::move(session).value(), spec));
    d->continue_alone();
    if (auto r = d->dm_->control().unpause(domid); !r)
        return unexpected(r.error());
    return d;
}

void RecordingDomain::append(XenLog& log, XenLogItem item)
{
    log.push_back(std::move(item));
    ++appended_;
}

// The ring's records of exits the vCPU has passed (it is at exit `exits`, or stopped for good),
// then a progress record: everything up to there is logged.
Expected<bool, std::string> RecordingDomain::take_records(XenLog& log, bool stopped)
{
    FtRing& ring = session_->ring();
    const std::uint64_t exits = ring.exits(); // before the records: earlier exits' are all in
    const std::size_t before = held_.size();
    if (ring.take(held_, ring.slots()))
        if (auto r = session_->channel().notify(); !r) // room again, should the vCPU wait for it
            return unexpected(r.error());
    const std::uint64_t now = ring.exits();
    for (std::size_t i = before; i < held_.size(); ++i) {
        const FtRecord& r = held_[i];
        if (r.exit < last_exit_ || r.exit > now)
            return unexpected("domain " + std::to_string(dm_->domid()) + ": Xen's record " +
                              std::to_string(records_ + 1) + " (" + ft_record_type_name(r.type) + ") has exit " +
                              std::to_string(r.exit) + " after one of exit " + std::to_string(last_exit_) +
                              ", with the vCPU at exit " + std::to_string(now));
        last_exit_ = r.exit;
        ++records_;
    }
    const std::uint64_t passed = stopped ? now : (exits ? exits - 1 : 0);
    std::size_t ready = 0;
    while (ready < held_.size() && held_[ready].exit <= passed)
        append(log, held_[ready++]);
    held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(ready));
    if (passed > progress_) {
        FtRecord p{};
        p.exit = passed;
        p.type = ft_abi::kRecProgress;
        append(log, p);
        progress_ = passed;
    }
    return true;
}

Expected<bool, std::string> RecordingDomain::at_ioreq(IoAccess& a, XenLog& log)
{
    // Exit N's records are not in the ring yet (a read's value is logged once we answer), so
    // this takes those of N - 1 and before: the device events follow them.
    const std::uint64_t exit = session_->ring().exits();
    if (auto r = take_records(log, false); !r)
        return r;
    // A copy at an MMIO access: before the access, which the backup's vCPU makes again.
    if (copy_ && copy_->final_due && !a.port && exit > 0)
        copy_final(exit - 1);
    at_ = AtIoreq{&log, &a, exit};
    auto event = [&](DeviceEvent::Kind kind, std::span<const std::uint8_t> bytes) {
        DeviceEvent e;
        e.kind = kind;
        e.bytes.assign(bytes.begin(), bytes.end());
        log_event(std::move(e));
    };
    // Digests at writes only: the backup stops at those too. Not while a copy has log-dirty
    // mode (the backup taking it starts its digests with the first one after it).
    if (!a.read && digests_on_ && !copy_ && now_ms() - last_digest_ms_ >= spec_.digest_interval_ms) {
        auto d = take_digest(state_digests_, *dm_);
        if (!d)
            return unexpected(d.error());
        event(DeviceEvent::Kind::digest, d->digest);
        last_digest_ = {exit, std::move(d).value()};
        last_digest_ms_ = now_ms();
        ++digests_;
    }
    dm_->handle(a);
    // The guest powered off (ACPI S5): Xen shuts the domain down once this write is answered.
    // The write is in the log like any other; the node tells the backup the VM ended.
    if (auto off = dm_->carry_out_poweroff(); !off)
        return unexpected(off.error());
    devices::VirtioNet* net = dm_->net();
    while (net && !frames_.empty() && net->can_receive()) {
        net->receive(frames_.front());
        event(DeviceEvent::Kind::net_rx, frames_.front());
        frames_.pop_front();
        ++frames_in_;
    }
    auto delivered = dm_->deliver_interrupts();
    // A copy at a port write: after everything the primary does at it (the instruction has
    // retired; the interrupts raised here are in the vLAPIC and Xen logs their injection next).
    if (delivered && copy_ && copy_->final_due && a.port && !a.read)
        copy_final(exit);
    return delivered;
}

namespace {

// An ioreq needed and none for this long: the guest is nudged (step()).
constexpr std::uint64_t kNudgeAfterMs = 20;
// A round this small ends the rounds: its pages go in the final pause (1 MiB).
constexpr std::size_t kFinalRoundPages = 256;
// Rounds while the guest runs, at most: a guest that writes faster than the channel copies
// gets its final pause after this many anyway.
constexpr unsigned kMaxCopyRounds = 6;
// Pages sent per step between the domain's ioreqs.
constexpr std::size_t kCopyPagesPerStep = 512;

} // namespace

void RecordingDomain::copy_to(CopySink& sink)
{
    stop_digests(); // the copy needs log-dirty mode; the backup taking it starts digests anew
    copy_.reset();
    copy_.emplace();
    copy_->sink = &sink;
    copy_->began_ms = now_ms();
}

void RecordingDomain::cancel_copy()
{
    copy_.reset(); // log-dirty mode off
    dm_->memory().track_writes(false);
}

void RecordingDomain::end_copy(Expected<bool, std::string> result)
{
    CopyOutcome o = std::move(copy_->outcome);
    o.ok = result.has_value();
    if (!result)
        o.error = result.error();
    o.ms = now_ms() - copy_->began_ms;
    cancel_copy();
    copy_outcome_ = std::move(o);
}

// `pages` from index c.sent on: all of them (`wait`), or as many as the channel has room for
// now (at most kCopyPagesPerStep, so the domain's ioreqs are not held up).
Expected<bool, std::string> RecordingDomain::send_pages(CopyRun& c, std::span<const std::uint64_t> pages, bool wait)
{
    XenGuestMemory& mem = dm_->memory();
    std::size_t done = 0;
    while (c.sent < pages.size() && (wait || (done < kCopyPagesPerStep && c.sink->has_room()))) {
        channel::CopyPages batch;
        while (c.sent < pages.size() && batch.numbers.size() < channel::kCopyPagesPerRecord) {
            const std::uint64_t gfn = pages[c.sent++];
            const auto page = mem.page(gfn);
            batch.numbers.push_back(gfn);
            batch.data.insert(batch.data.end(), page.begin(), page.end());
        }
        done += batch.numbers.size();
        c.outcome.pages += batch.numbers.size();
        if (auto r = c.sink->send(std::move(batch)); !r)
            return r;
    }
    return true;
}

// Between ioreqs, while the guest runs: the rounds.
void RecordingDomain::advance_copy()
{
    if (!copy_ || copy_->final_due)
        return;
    CopyRun& c = *copy_;
    XenGuestMemory& mem = dm_->memory();
    if (!c.dirty) {
        // Round 1: every populated page, with Xen logging what the guest writes from now on.
        auto dirty = DirtyLog::enable(dm_->control(), dm_->domid(), mem.page_count());
        if (!dirty)
            return end_copy(unexpected(dirty.error()));
        c.dirty.emplace(std::move(dirty).value());
        mem.track_writes(true);
        for (std::uint64_t gfn = 0; gfn < mem.page_count(); ++gfn)
            if (!mem.page(gfn).empty())
                c.pending.push_back(gfn);
        c.outcome.rounds = 1;
        if (auto r = c.sink->send(channel::CopyBegin{mem.page_count() * channel::kCopyPageBytes, c.pending.size()}); !r)
            return end_copy(r);
    }
    if (auto r = send_pages(c, c.pending, false); !r)
        return end_copy(r);
    if (c.sent < c.pending.size() || c.sink->backlog() > 0)
        return;
    // The round is out: what was written meanwhile is the next one, or the final pause's.
    auto dirty = c.dirty->take();
    if (!dirty)
        return end_copy(unexpected(dirty.error()));
    c.pending = dm_->memory().take_written(std::move(dirty).value());
    c.sent = 0;
    if (c.pending.size() <= kFinalRoundPages || c.outcome.rounds >= kMaxCopyRounds)
        c.final_due = true;
    else
        ++c.outcome.rounds;
}

void RecordingDomain::copy_final(std::uint64_t exit)
{
    const std::uint64_t began = now_ms();
    copy_->outcome.items = appended_;
    copy_->outcome.exit = exit;
    auto r = send_final(*copy_, exit);
    copy_->outcome.pause_ms = now_ms() - began;
    end_copy(std::move(r));
}

// The vCPU waits in an ioreq meanwhile, and nothing else writes guest memory (xenft's devices
// only act at ioreqs), so what is read here completes one consistent state.
Expected<bool, std::string> RecordingDomain::send_final(CopyRun& c, std::uint64_t exit)
{
    const std::uint32_t domid = dm_->domid();
    const std::string who = "domain " + std::to_string(domid);
    // The last round's pages and what was written since.
    auto dirty = c.dirty->take();
    if (!dirty)
        return unexpected(dirty.error());
    std::vector<std::uint64_t> last = std::move(c.pending);
    last.insert(last.end(), dirty->begin(), dirty->end());
    last = dm_->memory().take_written(std::move(last));
    c.sent = 0;
    c.outcome.final_pages = last.size();
    if (auto r = send_pages(c, last, true); !r)
        return r;
    // The disk's written blocks, numbered after the memory's pages.
    const std::uint64_t pages = dm_->memory().page_count();
    TrackedDisk* disk = dm_->disk();
    if (disk) {
        channel::CopyPages batch;
        std::array<std::uint8_t, TrackedDisk::kBlockBytes> block{};
        for (std::uint64_t b : disk->written()) {
            if (!disk->read_block(b, block))
                return unexpected(who + ": cannot read block " + std::to_string(b) + " of the disk image");
            batch.numbers.push_back(pages + b);
            batch.data.insert(batch.data.end(), block.begin(), block.end());
            ++c.outcome.disk_blocks;
            if (batch.numbers.size() == channel::kCopyPagesPerRecord)
                if (auto r = c.sink->send(std::exchange(batch, {})); !r)
                    return r;
        }
        if (!batch.numbers.empty())
            if (auto r = c.sink->send(std::move(batch)); !r)
                return r;
    }

    XenVcpuCopy vcpu;
    xc_interface* xch = dm_->control().get();
    const int size = xc_domain_hvm_getcontext(xch, domid, nullptr, 0);
    if (size <= 0)
        return unexpected(errno_text(who + ": cannot size the HVM context"));
    vcpu.hvm_context.resize(static_cast<std::size_t>(size));
    const int got = xc_domain_hvm_getcontext(xch, domid, vcpu.hvm_context.data(), static_cast<std::uint32_t>(size));
    if (got <= 0)
        return unexpected(errno_text(who + ": cannot read the HVM context"));
    vcpu.hvm_context.resize(static_cast<std::size_t>(got));
    if (xc_domain_get_tsc_info(xch, domid, &vcpu.tsc_mode, &vcpu.tsc_elapsed_ns, &vcpu.tsc_khz, &vcpu.tsc_incarnation) != 0)
        return unexpected(errno_text(who + ": cannot read the TSC parameters"));
    vcpu.clock_ns = dm_->clock_ns();
    vcpu.disk_bytes = dm_->disk_bytes();
    // The backup's replay makes the guest's writes after this point: it counts them from
    // here, and so does writes_done_to_log().
    writes_base_ = gate_.writes_given();
    writes_done_logged_ = 0;
    channel::CopyFinal final;
    final.exit = exit;
    final.cpu = encode_xen_vcpu_copy(vcpu);
    final.devices = dm_->save_devices();
    if (final.cpu.size() > channel::kMaxCopyStateBytes || final.devices.size() > channel::kMaxCopyStateBytes)
        return unexpected(who + ": the vCPU or device state is over the copy's " +
                          std::to_string(channel::kMaxCopyStateBytes) + "-byte limit");
    if (auto r = c.sink->send(std::move(final)); !r)
        return r;
    return c.sink->finish();
}

std::optional<std::uint64_t> RecordingDomain::writes_done_to_log()
{
    const std::uint64_t performed = gate_.writes_performed();
    if (!writes_base_ || performed <= *writes_base_)
        return std::nullopt;
    const std::uint64_t done = performed - *writes_base_;
    if (done <= writes_done_logged_)
        return std::nullopt;
    const std::uint64_t now = now_ms();
    if (done - writes_done_logged_ < kWritesDoneStep && now - writes_done_ms_ < kWritesDoneMs)
        return std::nullopt;
    writes_done_logged_ = done;
    writes_done_ms_ = now;
    return done;
}

std::vector<int> RecordingDomain::wait_fds() const
{
    std::vector<int> fds{dm_->ioreq_fd(), session_->channel().fd()};
    if (const devices::TapDevice* tap = dm_->tap())
        fds.push_back(tap->fd());
    return fds;
}

Expected<bool, std::string> RecordingDomain::step(XenLog& log, int timeout_ms)
{
    const std::string who = "domain " + std::to_string(dm_->domid());
    devices::TapDevice* tap = dm_->tap();
    if (auto r = wait({dm_->ioreq_fd(), session_->channel().fd(), tap ? tap->fd() : -1}, timeout_ms, who); !r)
        return r;
    (void)session_->channel().acknowledge();
    // Frames wait here for the next ioreq; a guest that takes none for long loses the excess,
    // as a NIC's full ring would.
    constexpr std::size_t kMaxWaitingFrames = 512;
    while (tap) {
        auto f = tap->receive();
        if (!f)
            break;
        if (frames_.size() < kMaxWaitingFrames)
            frames_.push_back(std::move(*f));
        else
            ++frames_dropped_;
    }
    auto info = dm_->control().domain_info(dm_->domid());
    if (!info)
        return unexpected(info.error());
    if (info->crashed)
        return unexpected(who + ": the recording domain crashed (xl dmesg says why)");
    if (auto r = take_records(log, info->shutdown); !r)
        return r;
    error_.clear();
    auto served = dm_->serve([&](IoAccess& a) {
        if (auto r = at_ioreq(a, log); !r && error_.empty())
            error_ = r.error();
    });
    if (!served)
        return unexpected(served.error());
    if (!error_.empty())
        return unexpected(error_);
    advance_copy();
    // Frames, and a copy's copy point, wait for an ioreq; a guest idle in HLT makes none for
    // as long as it sleeps (a tickless Linux: seconds). Then one interrupt without a cause
    // gets its driver to read the device's status: that read is the ioreq.
    const std::uint64_t now = now_ms();
    if (*served)
        last_ioreq_ms_ = now;
    const bool waiting = !frames_.empty() || (copy_ && copy_->final_due);
    if (waiting && now - last_ioreq_ms_ >= kNudgeAfterMs && now - last_nudge_ms_ >= kNudgeAfterMs) {
        auto nudged = dm_->nudge();
        if (!nudged)
            return unexpected(nudged.error());
        last_nudge_ms_ = now;
        nudges_ += *nudged ? 1u : 0u;
    }
    return true;
}

// --- the backup ------------------------------------------------------------------------------

ReplayingDomain::ReplayingDomain(std::unique_ptr<XenDeviceModel> dm, std::unique_ptr<FtSession> session)
    : dm_(std::move(dm)), session_(std::move(session))
{
    dm_->set_transmit(&kept_);
    if (dm_->shared_disk())
        dm_->set_disk_port(&replayed_disk_);
}

bool ReplayingDomain::ReplayedDisk::read(std::uint64_t offset, std::span<std::uint8_t> out)
{
    if (out.empty())
        return true;
    if (reads.empty() && lun_when_log_ends && !direct && !go_direct(*lun_when_log_ends)) {
        divergence = "going live: the kept disk writes could not be written again";
        return false;
    }
    if (direct)
        return direct->read(offset, out);
    const std::uint64_t sector = offset / devices::VirtioBlk::kSector;
    if (reads.empty() || reads.front().sector != sector || reads.front().length != out.size()) {
        if (divergence.empty())
            divergence = "the guest read " + std::to_string(out.size()) + " bytes of its disk at sector " +
                         std::to_string(sector) + " where the primary " +
                         (reads.empty() ? std::string("read nothing more")
                                        : "read " + std::to_string(reads.front().length) + " bytes at sector " +
                                              std::to_string(reads.front().sector));
        return false;
    }
    const DeviceEvent e = std::move(reads.front());
    reads.pop_front();
    ++replayed;
    if (e.failed)
        return false; // the primary's guest got an I/O error here: so does this one
    std::copy(e.bytes.begin(), e.bytes.end(), out.begin());
    return true;
}

Expected<std::unique_ptr<ReplayingDomain>, std::string> ReplayingDomain::await_copy(std::uint32_t domid,
                                                                                     const FtSpec& spec)
{
    auto dm = XenDeviceModel::create(domid, spec.devices);
    if (!dm)
        return unexpected(dm.error());
    std::unique_ptr<ReplayingDomain> d(new ReplayingDomain(std::move(dm).value(), nullptr));
    d->spec_ = spec;
    // A pause of our own, so the toolstack's unpause (or ours, spec.unpause) leaves the domain
    // paused until the copy is in; apply_copy() takes it back.
    if (!spec.paused_by_xenft)
        if (auto r = d->dm_->control().pause(domid); !r)
            return unexpected(r.error());
    if (spec.unpause)
        if (auto r = d->dm_->control().unpause(domid); !r)
            return unexpected(r.error());
    return d;
}

Expected<bool, std::string> ReplayingDomain::apply_copy(const channel::CopyRecord& record)
{
    const std::string who = "domain " + std::to_string(dm_->domid()) + ": live copy";
    if (session_ && !copy_unconfirmed_)
        return unexpected(who + ": this domain replays already");
    if (session_ && std::holds_alternative<channel::CopyBegin>(record)) {
        // A new copy after one the primary never confirmed (it cancelled it): that one never
        // ran here, and this one overwrites all of it (memory, disk blocks, vCPU, devices).
        session_.reset();
        copy_unconfirmed_ = false;
    } else if (session_) {
        return unexpected(who + ": a record of a new copy before its beginning");
    }
    XenGuestMemory& mem = dm_->memory();
    const std::uint64_t pages = mem.page_count();
    if (const auto* b = std::get_if<channel::CopyBegin>(&record)) {
        if (b->memory_bytes != pages * channel::kCopyPageBytes)
            return unexpected(who + ": the primary's domain has " + std::to_string(b->memory_bytes >> 20) +
                              " MiB of memory, this one " + std::to_string((pages * channel::kCopyPageBytes) >> 20) +
                              " MiB (memory= in the xl configuration, [vm] memory-mib in xenft.conf)");
        return true;
    }
    if (const auto* p = std::get_if<channel::CopyPages>(&record)) {
        TrackedDisk* disk = dm_->disk();
        for (std::size_t k = 0; k < p->numbers.size(); ++k) {
            const std::uint64_t n = p->numbers[k];
            const auto bytes = std::span(p->data).subspan(k * channel::kCopyPageBytes, channel::kCopyPageBytes);
            if (n < pages) {
                if (!mem.write_guest(n * channel::kCopyPageBytes, bytes))
                    return unexpected(who + ": guest page " + std::to_string(n) +
                                      " is populated on the primary but not here (not the same configuration)");
            } else if (!disk || !disk->write_block(n - pages, bytes.first<TrackedDisk::kBlockBytes>())) {
                return unexpected(who + ": disk block " + std::to_string(n - pages) + " is outside " +
                                  (disk ? "this host's disk image" : "any disk: this domain has none"));
            }
        }
        return true;
    }
    return load_final(std::get<channel::CopyFinal>(record));
}

Expected<bool, std::string> ReplayingDomain::load_final(const channel::CopyFinal& f)
{
    const std::uint32_t domid = dm_->domid();
    const std::string who = "domain " + std::to_string(domid) + ": live copy";
    state_digests_.reset(); // the primary's start anew after a copy: so do ours
    auto vcpu = decode_xen_vcpu_copy(f.cpu);
    if (!vcpu)
        return unexpected(who + ": " + vcpu.error());
    if (vcpu->disk_bytes != dm_->disk_bytes())
        return unexpected(who + ": the primary's guest disk has " + std::to_string(vcpu->disk_bytes) +
                          " bytes, this host's " + std::to_string(dm_->disk_bytes()) +
                          " ([disk] in xenft.conf must say the same on both hosts)");
    xc_interface* xch = dm_->control().get();
    // As Xen's own restore does: the TSC parameters first, then the HVM context.
    if (xc_domain_set_tsc_info(xch, domid, vcpu->tsc_mode, vcpu->tsc_elapsed_ns, vcpu->tsc_khz,
                               vcpu->tsc_incarnation) != 0)
        return unexpected(errno_text(who + ": cannot set the TSC parameters"));
    if (xc_domain_hvm_setcontext(xch, domid, vcpu->hvm_context.data(),
                                 static_cast<std::uint32_t>(vcpu->hvm_context.size())) != 0)
        return unexpected(errno_text(who + ": Xen refused the HVM context"));
    if (auto r = dm_->load_devices(f.devices); !r)
        return unexpected(who + ": " + r.error());
    dm_->continue_clock_from(vcpu->clock_ns);
    auto session = FtSession::enable(dm_->control(), dm_->foreign_memory(), domid, FtSession::Mode::replay,
                                     spec_.ring_pages);
    if (!session)
        return unexpected(session.error());
    session_ = std::move(session).value();
    exit_base_ = f.exit;
    last_published_exit_ = f.exit;
    replayed_disk_.writes = engine::RecentWrites{}; // counted from the copy, as the primary's writes_done
    copy_unconfirmed_ = true; // the pause await_copy() took stays until start_replay()
    return true;
}

Expected<bool, std::string> ReplayingDomain::start_replay()
{
    if (!copy_unconfirmed_)
        return true;
    if (auto r = dm_->control().unpause(dm_->domid()); !r)
        return r;
    copy_unconfirmed_ = false;
    return true;
}

Expected<std::unique_ptr<ReplayingDomain>, std::string> ReplayingDomain::start(std::uint32_t domid,
                                                                                const FtSpec& spec)
{
    auto p = protect(domid, spec, FtSession::Mode::replay);
    if (!p)
        return unexpected(p.error());
    std::unique_ptr<ReplayingDomain> d(new ReplayingDomain(std::move(p->dm), std::move(p->session)));
    if (spec.unpause)
        if (auto r = d->dm_->control().unpause(domid); !r)
            return unexpected(r.error());
    return d;
}

Expected<bool, std::string> ReplayingDomain::apply(const DeviceEvent& e)
{
    const std::string where = "domain " + std::to_string(dm_->domid()) + " at exit " + std::to_string(e.exit);
    switch (e.kind) {
    case DeviceEvent::Kind::digest: {
        auto d = take_digest(state_digests_, *dm_);
        if (!d)
            return unexpected(d.error());
        if (e.bytes.size() != d->digest.size() || !std::equal(d->digest.begin(), d->digest.end(), e.bytes.begin())) {
            Digest primary{};
            std::copy_n(e.bytes.begin(), std::min(e.bytes.size(), primary.size()), primary.begin());
            std::string unlogged;
            if (d->unlogged != 0) {
                unlogged = " (" + std::to_string(d->unlogged) + " page(s) changed here that no write logged:";
                for (std::uint64_t gfn : d->unlogged_pages)
                    unlogged += " " + std::to_string(gfn);
                unlogged += ")";
            }
            return unexpected(where + ": the backup's state digest " + hex(d->digest).substr(0, 16) +
                              " differs from the primary's " + hex(primary).substr(0, 16) + unlogged +
                              ": the replay diverged");
        }
        ++digests_matched_;
        last_digest_ = {e.exit, std::move(d).value()};
        return true;
    }
    case DeviceEvent::Kind::disk_read:
        // A disk request runs at the write that notifies the device (at_ioreq takes its reads).
        return unexpected(where + ": the log has a disk read at a read of " + hex_address(e.address) +
                          "; the primary's disk reads only at writes");
    case DeviceEvent::Kind::net_rx:
        if (!dm_->net() || dm_->net()->receive(e.bytes) == devices::VirtioNet::Rx::no_buffer)
            return unexpected(where + ": the NIC has no buffer for the frame the primary delivered there: "
                                      "the replay diverged");
        ++frames_replayed_;
        return true;
    }
    return unexpected(where + ": unknown device event");
}

Expected<bool, std::string> ReplayingDomain::at_ioreq(IoAccess& a)
{
    const std::uint64_t exit = session_ ? exits() : 0;
    const std::string where = "domain " + std::to_string(dm_->domid()) + " at exit " + std::to_string(exit);
    if (session_ && a.read)
        return unexpected(where + ": a read of " + hex_address(a.address) +
                          " reached the device model; Xen answers reads from the log in replay");
    if (session_) {
        if (exit == last_write_exit_)
            ++same_exit_writes_;
        last_write_exit_ = exit;
    }
    if (session_ && !pending_.empty() && !pending_at_read_ && pending_exit_ <= exit) {
        if (pending_exit_ < exit)
            return unexpected(where + ": the domain passed exit " + std::to_string(pending_exit_) +
                              " without the device access the primary had there: the replay diverged");
        if (pending_.front().address != a.address)
            return unexpected(where + ": the domain writes " + hex_address(a.address) + " where the primary wrote " +
                              hex_address(pending_.front().address) + ": the replay diverged");
        // The primary's order: digest, the write (with the disk reads it made), frames,
        // interrupts.
        for (const DeviceEvent& e : pending_) {
            if (e.kind == DeviceEvent::Kind::digest)
                if (auto r = apply(e); !r)
                    return r;
            if (e.kind == DeviceEvent::Kind::disk_read)
                replayed_disk_.reads.push_back(e);
        }
        if (auto r = handle_replayed(a, where); !r)
            return r;
        for (const DeviceEvent& e : pending_)
            if (e.kind == DeviceEvent::Kind::net_rx)
                if (auto r = apply(e); !r)
                    return r;
        pending_.clear();
    } else if (session_) {
        if (auto r = handle_replayed(a, where); !r)
            return r;
    } else {
        dm_->handle(a);
        if (auto off = dm_->carry_out_poweroff(); !off) // live: as the primary does
            return off;
    }
    if (session_)
        dm_->interrupts_taken_elsewhere();
    else if (auto r = dm_->deliver_interrupts(); !r)
        return r;
    return true;
}

Expected<std::size_t, std::string> ReplayingDomain::ReplayedDisk::go_direct(devices::BlockPort& lun)
{
    auto n = writes.reissue(lun);
    if (!n)
        return n;
    reissued = *n;
    direct = &lun;
    return n;
}

// A write ioreq while replaying: the device models perform it, a disk request taking its
// reads from those the primary logged at this exit, all of them.
Expected<bool, std::string> ReplayingDomain::handle_replayed(IoAccess& a, const std::string& where)
{
    dm_->handle(a);
    if (replayed_disk_.divergence.empty() && !replayed_disk_.reads.empty())
        replayed_disk_.divergence = "the primary read its disk " + std::to_string(replayed_disk_.reads.size()) +
                                    " more time(s) here (next: sector " +
                                    std::to_string(replayed_disk_.reads.front().sector) + ")";
    replayed_disk_.reads.clear();
    if (!replayed_disk_.divergence.empty())
        return unexpected(where + ": " + std::exchange(replayed_disk_.divergence, {}) + ": the replay diverged");
    return true;
}

Expected<bool, std::string> ReplayingDomain::put_records(std::span<const FtRecord> records)
{
    if (records.empty())
        return true;
    // Xen counts this domain's exits from the copy on: the log's numbers less the copy's exit.
    std::vector<FtRecord> ours(records.begin(), records.end());
    for (FtRecord& r : ours) {
        if (r.exit < exit_base_)
            return unexpected("domain " + std::to_string(dm_->domid()) + ": the log has a record of exit " +
                              std::to_string(r.exit) + ", before the live copy's exit " + std::to_string(exit_base_));
        r.exit -= exit_base_;
    }
    if (session_->ring().put(ours) != ours.size())
        return unexpected("domain " + std::to_string(dm_->domid()) + ": the FT ring took part of an exit");
    for (const FtRecord& r : records)
        last_published_exit_ = std::max(last_published_exit_, r.exit);
    return session_->channel().notify();
}

// Publishes from the front of `log` up to the next device event, which becomes pending (and
// stops publishing) until the domain reaches its exit. `final`: nothing more will come (the
// primary is gone), so the log's end also ends its last exit.
Expected<bool, std::string> ReplayingDomain::publish(XenLog& log, bool final)
{
    const std::string who = "domain " + std::to_string(dm_->domid());
    FtRing& ring = session_->ring();
    auto record_at = [&](std::size_t i) { return std::get_if<FtRecord>(&log[i]); };
    auto event_at = [&](std::size_t i) { return std::get_if<DeviceEvent>(&log[i]); };
    waiting_for_log_ = false;
    while (!log.empty() && pending_.empty()) {
        if (record_at(0)) {
            // What fits in the ring, and one record more to see whether its last exit is whole:
            // never the whole backlog (a backup behind the primary would copy it at every step
            // and fall further behind).
            std::vector<FtRecord> run;
            const std::size_t look = std::min(log.size(), ring.room() + 1);
            for (std::size_t i = 0; i < look && record_at(i); ++i)
                run.push_back(*record_at(i));
            const std::size_t n = whole_exits_prefix(run, ring.room());
            if (n == 0)
                return true; // the ring is full: the vCPU makes room
            if (auto r = put_records(std::span(run.data(), n)); !r)
                return r;
            log.erase(log.begin(), log.begin() + static_cast<std::ptrdiff_t>(n));
            taken_ += n;
            continue;
        }
        const DeviceEvent& first = *event_at(0);
        const std::uint64_t exit = first.exit;
        std::size_t events = 0;
        while (events < log.size() && event_at(events) && event_at(events)->exit == exit)
            ++events;
        // The log can end inside an ioreq's events (a channel frame ends anywhere). Taken in
        // part, the rest would come as a second batch of the same exit after the vCPU went
        // past its ioreq, and block every record behind it: the replay hung so (CI and the
        // lab, 2026-12-03: one net_rx waiting at the exit the vCPU had passed).
        if (events == log.size() && !final) {
            waiting_for_log_ = true;
            return true;
        }
        if (!first.at_read) {
            // A write: the backup gets the ioreq too. Let the vCPU run up to exit N.
            if (exit > last_published_exit_) {
                FtRecord p{};
                p.exit = exit;
                p.type = ft_abi::kRecProgress;
                if (ring.room() == 0)
                    return true;
                if (auto r = put_records(std::span(&p, 1)); !r)
                    return r;
            }
            pending_at_read_ = false;
        } else {
            // A read: Xen answers it from the log, so publish exit N's records (its value, an
            // injection) and nothing later; once the value is taken, the vCPU waits before
            // re-entering the guest and the events are applied then.
            std::size_t end = events;
            while (end < log.size() && record_at(end) && record_at(end)->exit == exit)
                ++end;
            if (end == log.size() && !final) {
                waiting_for_log_ = true;
                return true; // exit N may have more records to come
            }
            std::vector<FtRecord> records;
            std::size_t value_at = end;
            for (std::size_t i = events; i < end; ++i) {
                if (record_at(i)->type == ft_abi::kRecIoRead && value_at == end)
                    value_at = records.size();
                records.push_back(*record_at(i));
            }
            if (value_at == end) {
                if (end == log.size() && final) {
                    // The primary died in this ioreq: its guest never saw the read finish.
                    dropped_ += log.size();
                    taken_ += log.size();
                    log.clear();
                    return true;
                }
                return unexpected(who + ": the log has device events at read exit " + std::to_string(exit) +
                                  " but no value for the read");
            }
            if (ring.room() < records.size())
                return true;
            read_consumed_target_ = ring.produced() + value_at + 1;
            if (auto r = put_records(records); !r)
                return r;
            for (std::size_t i = 0; i < events; ++i)
                pending_.push_back(*event_at(i));
            log.erase(log.begin() + static_cast<std::ptrdiff_t>(events), log.begin() + static_cast<std::ptrdiff_t>(end));
            taken_ += end - events;
            pending_at_read_ = true;
            pending_exit_ = exit;
            log.erase(log.begin(), log.begin() + static_cast<std::ptrdiff_t>(events));
            taken_ += events;
            return true;
        }
        for (std::size_t i = 0; i < events; ++i)
            pending_.push_back(*event_at(i));
        log.erase(log.begin(), log.begin() + static_cast<std::ptrdiff_t>(events));
        taken_ += events;
        pending_exit_ = exit;
    }
    return true;
}

Expected<bool, std::string> ReplayingDomain::serve_and_publish(XenLog& log, int timeout_ms, bool final)
{
    const std::string who = "domain " + std::to_string(dm_->domid());
    if (auto r = wait({dm_->ioreq_fd(), session_->channel().fd()}, timeout_ms, who); !r)
        return r;
    (void)session_->channel().acknowledge();
    auto info = dm_->control().domain_info(dm_->domid());
    if (!info)
        return unexpected(info.error());
    if (info->crashed)
        return unexpected(who + ": the replaying domain crashed at exit " + std::to_string(exits()) +
                          " (xl dmesg names the record" +
                          (exit_base_ ? ", counting from the live copy's exit " + std::to_string(exit_base_) : "") + ")");
    error_.clear();
    // A second write ioreq at one exit (the exit count does not move between them): its device
    // events come after the first one's in the log, which may end between the two. Answered
    // without them, the vCPU would go on past the events while they block everything behind
    // them (the replay hung so in CI and in the lab). So the log is taken first, and the
    // ioreq waits while the log shows nothing after the first one's events.
    if (const auto w = dm_->waiting_ioreq(); w && !w->read && pending_.empty() && exits() == last_write_exit_) {
        if (auto r = publish(log, final); !r)
            return r;
        if (pending_.empty() && log.empty() && !final) {
            if (deferred_exit_ != last_write_exit_) {
                deferred_exit_ = last_write_exit_;
                ++deferred_ioreqs_;
            }
            return true;
        }
    }
    auto served = dm_->serve([&](IoAccess& a) {
        if (auto r = at_ioreq(a); !r && error_.empty())
            error_ = r.error();
    });
    if (!served)
        return unexpected(served.error());
    if (!error_.empty())
        return unexpected(error_);
    // A read exit's events: once Xen took the value, the vCPU waits before the guest.
    if (!pending_.empty() && pending_at_read_ && session_->ring().consumed() >= read_consumed_target_) {
        for (const DeviceEvent& e : pending_)
            if (auto r = apply(e); !r)
                return r;
        pending_.clear();
        dm_->interrupts_taken_elsewhere();
    }
    return publish(log, final);
}

Expected<bool, std::string> ReplayingDomain::go_live(XenLog& log)
{
    const std::string who = "domain " + std::to_string(dm_->domid());
    // However long the rest of the log takes, it is replayed while the vCPU makes progress:
    // giving up on a backup that is only slow would lose the VM. A vCPU that makes no exit for
    // kGoLiveStuckSeconds waits for something the log will never give it.
    const std::uint64_t started_ms = now_ms();
    tail_items_ = log.size();
    auto progress_at = std::chrono::steady_clock::now();
    std::uint64_t progress_exit = exits();
    std::size_t progress_left = log.size();
    replayed_disk_.lun_when_log_ends = dm_->shared_disk();
    for (;;) {
        const auto now = std::chrono::steady_clock::now();
        if (exits() != progress_exit || log.size() < progress_left) {
            progress_at = now;
            progress_exit = exits();
            progress_left = log.size();
        } else if (now - progress_at > std::chrono::seconds(kGoLiveStuckSeconds)) {
            return unexpected(who + ": the rest of the log cannot be replayed: no progress for " +
                              std::to_string(kGoLiveStuckSeconds) + " s at exit " + std::to_string(exits()) + " (" +
                              std::to_string(log.size()) + " items and " + std::to_string(pending_.size()) +
                              " device events left)");
        }
        // Consumed: all but an injection Xen holds for the next entry, which going live delivers.
        FtRing& ring = session_->ring();
        if (log.empty() && pending_.empty() && ring.produced() - ring.consumed() <= 1) {
            if (auto r = dm_->control().pause(dm_->domid()); !r)
                return r;
            live_exit_ = exits();
            auto live = session_->go_live();
            if (auto r = dm_->control().unpause(dm_->domid()); !r)
                return r;
            if (!live)
                return unexpected(live.error());
            if (*live)
                break;
        }
        if (auto r = serve_and_publish(log, 10, true); !r)
            return r;
    }
    tail_ms_ = now_ms() - started_ms;
    session_.reset();
    state_digests_.reset(); // nothing to compare with now; log-dirty mode off for a later copy
    // Live: the NIC's frames go out; what the TAP queued while replaying was the primary's.
    devices::TapDevice* tap = dm_->tap();
    if (tap) {
        while (tap->receive()) {
        }
        for (const auto& f : kept_.frames)
            tap->transmit(f);
    }
    resent_ = kept_.frames.size();
    dm_->set_transmit(tap);
    // The disk on the shared LUN: the writes the primary's gate may have held when it died,
    // again and in order, before the guest's next request; from then on the LUN itself.
    if (devices::BlockPort* lun = dm_->shared_disk()) {
        const std::uint64_t reissue_started_ms = now_ms();
        if (!replayed_disk_.direct)
            if (auto n = replayed_disk_.go_direct(*lun); !n)
                return unexpected(who + ": going live: " + n.error());
        reissue_ms_ = now_ms() - reissue_started_ms;
        dm_->set_disk_port(lun);
    }
    // While replaying, Xen injected the logged interrupts and the devices were told theirs were
    // taken; one the primary raised but had not injected (the guest had interrupts off, or the
    // primary died first) is in no log: without it a driver waits forever for a completion
    // (a disk request the backup did complete at the primary's exit).
    auto reasserted = dm_->reassert_interrupts();
    if (!reasserted)
        return unexpected(reasserted.error());
    reasserted_ = *reasserted;
    // The guest had powered off when its primary died, before the primary's shutdown of the
    // domain reached the backup as the VM's end: this replica carries it out now.
    if (auto off = dm_->carry_out_poweroff(); !off)
        return unexpected(off.error());
    return true;
}

Expected<unsigned, std::string> ReplayingDomain::shut_down()
{
    const std::string who = "domain " + std::to_string(dm_->domid());
    if (auto r = dm_->control().shut_down(dm_->domid(), SHUTDOWN_poweroff); !r)
        return unexpected(r.error());
    // A vCPU waiting in an ioreq holds its domain's shutdown back until the device model
    // answers (Xen's shutdown deferral, ioreq_send), and this one may wait in one: the node
    // stopped serving when it read vm_end. The request is answered without being performed
    // (the guest never runs again); Xen sends no new one once the shutdown began.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    unsigned answered = 0;
    for (;;) {
        auto served = dm_->serve([](IoAccess& a) {
            if (a.read)
                a.value = ~0ull;
        });
        if (!served)
            return unexpected(served.error());
        answered += *served ? 1u : 0u;
        auto info = dm_->control().domain_info(dm_->domid());
        if (!info || info->shutdown || info->dying)
            return answered; // shut down, or already gone
        if (std::chrono::steady_clock::now() > deadline)
            return unexpected(who + ": asked to power off, but Xen has not shut it down within 2 s (" +
                              std::to_string(answered) + " waiting ioreqs answered)");
        if (auto r = wait({dm_->ioreq_fd()}, 10, who); !r)
            return unexpected(r.error());
    }
}

std::vector<int> ReplayingDomain::wait_fds() const
{
    if (!session_)
        return {dm_->ioreq_fd()};
    return {dm_->ioreq_fd(), session_->channel().fd()};
}

Expected<bool, std::string> ReplayingDomain::step(XenLog& log, int timeout_ms)
{
    auto r = serve_and_publish(log, timeout_ms, false);
    if (!r || !session_)
        return r;
    const auto now = std::chrono::steady_clock::now();
    if (log.empty() || waiting_for_log_ || exits() != stuck_exit_) {
        stuck_exit_ = exits();
        stuck_since_ = now;
    } else if (now - stuck_since_ > std::chrono::seconds(kReplayStuckSeconds)) {
        return unexpected("domain " + std::to_string(dm_->domid()) + ": the replay is stuck: no exit for " +
                          std::to_string(kReplayStuckSeconds) + " s with log items to replay; " + replay_state(log));
    }
    return r;
}

std::string ReplayingDomain::replay_state(const XenLog& log) const
{
    if (!session_)
        return live_exit_ ? "live since exit " + std::to_string(live_exit_) : "waiting for a live copy";
    const FtRing& ring = session_->ring();
    std::string s = "at exit " + std::to_string(exits());
    if (!pending_.empty()) {
        s += pending_at_read_ ? "; the read value of exit " + std::to_string(pending_exit_) +
                                    " waits to be taken (ring record " + std::to_string(read_consumed_target_) + ")"
                              : "; waits for the domain's write ioreq at exit " + std::to_string(pending_exit_);
        s += " with " + std::to_string(pending_.size()) + " device event(s) (the first " +
             event_kind_name(pending_.front().kind) + " at " + hex_address(pending_.front().address) + ")";
    }
    if (last_write_exit_ != kNoExit)
        s += "; the last write ioreq at exit " + std::to_string(last_write_exit_) + ", " +
             std::to_string(same_exit_writes_) + " at the exit of the one before, " +
             std::to_string(deferred_ioreqs_) + " of them waited for the log";
    s += "; ring: " + std::to_string(ring.produced()) + " records put, " + std::to_string(ring.consumed()) +
         " taken, published up to exit " + std::to_string(last_published_exit_);
    if (dm_->shared_disk())
        s += "; " + std::to_string(writes_kept()) + " disk write(s) to write again if it goes live";
    if (log.empty())
        return s + "; no item waiting";
    s += "; " + std::to_string(log.size()) + " item(s) waiting, the first ";
    if (const auto* r = std::get_if<FtRecord>(&log.front()))
        return s + std::string(ft_record_type_name(r->type)) + " record of exit " + std::to_string(r->exit);
    const auto& e = std::get<DeviceEvent>(log.front());
    return s + event_kind_name(e.kind) + " event of exit " + std::to_string(e.exit) + " at a " +
           (e.at_read ? "read" : "write") + " of " + hex_address(e.address);
}

Expected<std::string, std::string> ReplayingDomain::run_live(const std::atomic<bool>& stop)
{
    return dm_->run(stop);
}

} // namespace xenft::backends::xen
