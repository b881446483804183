#include "xenft/engine/replay.hpp"

#include <poll.h>
#include <time.h>

#include <algorithm>
#include <thread>

#include "xenft/engine/output_gate.hpp"
#include "xenft/logformat/text.hpp"

namespace xenft::engine {

namespace {

constexpr std::uint32_t kNic = 0, kDisk = 0; // device indexes in log entries

std::string describe(const Exit& e)
{
    return std::string(e.is_pio() ? "port " : "mmio ") + logformat::hex(e.address) + "/" + std::to_string(e.size);
}

} // namespace

// ----- Recorder ---------------------------------------------------------------------------------

// What the devices see as the outside world on the recording replica: the host's TAP and disk,
// with every input and output logged at the current exit.
class Recorder::Ports final : public devices::NetTransmit, public devices::BlockPort {
public:
    explicit Ports(Recorder& r) : r_(r) {}

    void transmit(std::span<const std::uint8_t> frame) override
    {
        const std::uint64_t seq = r_.append(logformat::Output{logformat::OutputKind::net_tx, kNic, ++frames_});
        if (r_.io_.gate)
            r_.io_.gate->hold_frame(seq, frame);
        else if (r_.io_.tap)
            r_.io_.tap->transmit(frame);
    }
    bool read(std::uint64_t offset, std::span<std::uint8_t> out) override
    {
        const std::uint64_t sector = offset / devices::VirtioBlk::kSector;
        const bool ok = r_.io_.gate ? r_.io_.gate->read(offset, out) : r_.io_.disk && r_.io_.disk->read(offset, out);
        if (!ok) {
            r_.append(logformat::DiskRead::failed(kDisk, sector, out.size()));
            return false;
        }
        logformat::DiskRead d;
        d.device = kDisk;
        d.request = sector;
        d.data.assign(out.begin(), out.end());
        r_.append(std::move(d));
        return true;
    }
    bool write(std::uint64_t offset, std::span<const std::uint8_t> data) override
    {
        const std::uint64_t seq = r_.append(logformat::Output{logformat::OutputKind::disk_write, kDisk, ++writes_});
        if (r_.io_.gate) {
            r_.io_.gate->hold_write(seq, offset, data);
            return true;
        }
        return r_.io_.disk && r_.io_.disk->write(offset, data);
    }
    bool flush() override { return r_.io_.gate ? r_.io_.gate->flush() : r_.io_.disk && r_.io_.disk->flush(); }

private:
    Recorder& r_;
    std::uint64_t frames_ = 0, writes_ = 0;
};

Recorder::Recorder(Machine& machine, std::uint64_t digest_every, HostIo io, ResumePoint from)
    : machine_(machine), digest_every_(digest_every), io_(io), ports_(std::make_unique<Ports>(*this)), exit_(from.exit),
      seq_(from.next_seq)
{
    if (from.exit != 0)
        machine_.timer().rearm();
    machine_.connect_io(ports_.get(), ports_.get());
}

Recorder::~Recorder()
{
    machine_.connect_io(nullptr, nullptr);
}

std::uint64_t Recorder::append(logformat::Payload p)
{
    output_appended_ = output_appended_ || std::holds_alternative<logformat::Output>(p);
    log_->push_back(logformat::Entry{1, seq_, 0, exit_, std::move(p)});
    return seq_++;
}

bool Recorder::deliver_frame()
{
    auto* net = machine_.net();
    if (!net || !io_.tap)
        return false;
    while (!waiting_frame_) {
        waiting_frame_ = io_.tap->receive();
        if (!waiting_frame_)
            return false;
        if (waiting_frame_->size() > devices::VirtioNet::kMaxFrame || waiting_frame_->size() < 14)
            waiting_frame_.reset(); // the NIC could never take it; the guest never sees it
    }
    if (!net->can_receive())
        return false;
    append(logformat::NetRx{kNic, *waiting_frame_});
    net->receive(*waiting_frame_);
    waiting_frame_.reset();
    return true;
}

Expected<bool, std::string> Recorder::wait_while_halted()
{
    if (!machine_.backend().can_inject())
        return unexpected("exit " + std::to_string(exit_) + ": the guest halted with interrupts disabled");
    for (;;) {
        if (machine_.interrupting_device())
            return true;
        const auto tick = machine_.timer().next_tick_ns();
        const std::uint64_t now = machine_.now();
        if (tick && now >= *tick)
            return true;
        if (deliver_frame())
            continue;
        const bool can_receive = io_.tap && machine_.net();
        if (!tick && !can_receive)
            return unexpected("exit " + std::to_string(exit_) + ": the guest halted with no interrupt that can wake it");
        const std::uint64_t wait_ns = tick ? *tick - now : 100'000'000;
        if (can_receive) {
            pollfd p{io_.tap->fd(), POLLIN, 0};
            const timespec timeout{static_cast<time_t>(wait_ns / 1'000'000'000), static_cast<long>(wait_ns % 1'000'000'000)};
            (void)::ppoll(&p, 1, &timeout, nullptr);
        } else {
            std::this_thread::sleep_for(std::chrono::nanoseconds(wait_ns));
        }
    }
}

Expected<bool, std::string> Recorder::run(std::uint64_t exits, std::vector<logformat::Entry>& log)
{
    log_ = &log;
    Backend& backend = machine_.backend();
    const std::uint64_t stop = exit_ + exits;
    output_appended_ = false;
    while (exit_ < stop) {
        if (end_at_outputs_ && output_appended_)
            break; // the previous exit, fully handled, produced an output
        auto e = backend.run();
        if (!e)
            return unexpected("exit " + std::to_string(exit_ + 1) + ": " + e.error());
        ++exit_;
        devices::Device* dev = machine_.bus().find(e->is_pio(), e->address);
        if (e->is_read()) {
            const std::uint64_t v = dev ? dev->read(e->address, e->size) & all_ones(e->size) : all_ones(e->size);
            if (dev && !dev->read_is_deterministic(e->address))
                append(logformat::IoRead{e->is_pio() ? logformat::IoSpace::port : logformat::IoSpace::mmio, e->size,
                                         e->address, v});
            backend.complete_read(v);
        } else if (e->kind != Exit::Kind::hlt && dev) {
            dev->write(e->address, e->size, e->value);
        }
        if (digest_every_ != 0 && exit_ % digest_every_ == 0)
            append(logformat::StateDigest{machine_.digest()});

        deliver_frame();
        if (e->kind == Exit::Kind::hlt) {
            auto woke = wait_while_halted();
            if (!woke)
                return woke;
        }
        // Interrupts go in only here, at a synchronous exit: devices first (they have been
        // waiting), then the timer.
        if (!backend.can_inject())
            continue;
        if (devices::Device* d = machine_.interrupting_device()) {
            const std::uint8_t v = *d->pending_interrupt();
            d->interrupt_delivered();
            backend.inject(v);
            append(logformat::Interrupt{v, logformat::IrqSource::msi});
        } else if (auto tick = machine_.timer().next_tick_ns(); tick && machine_.now() >= *tick) {
            machine_.timer().take_tick();
            backend.inject(machine_.timer().vector());
            append(logformat::Interrupt{machine_.timer().vector(), logformat::IrqSource::lapic_timer});
        }
    }
    return true;
}

// ----- Replayer ---------------------------------------------------------------------------------

// What the devices see as the outside world on the replaying backup: inputs come from the log,
// outputs are checked against it and dropped.
class Replayer::Ports final : public devices::NetTransmit, public devices::BlockPort {
public:
    std::span<const logformat::Entry> log;
    std::size_t next = 0;
    std::uint64_t exit = 0;
    std::optional<std::string> divergence;

    void transmit(std::span<const std::uint8_t> frame) override
    {
        expect_output(logformat::OutputKind::net_tx);
        recent_frames.emplace_back(frame.begin(), frame.end());
        if (recent_frames.size() > kResendFrames)
            recent_frames.pop_front();
    }
    std::deque<std::vector<std::uint8_t>> recent_frames;
    bool read(std::uint64_t offset, std::span<std::uint8_t> out) override
    {
        const std::uint64_t sector = offset / devices::VirtioBlk::kSector;
        const auto* d = current<logformat::DiskRead>();
        if (!d || d->request != sector || (d->mode == logformat::DiskRead::Mode::data ? d->data.size() : d->length) != out.size()) {
            diverge("the guest read " + std::to_string(out.size()) + " bytes at sector " + std::to_string(sector));
            return false;
        }
        ++next;
        if (d->is_failed())
            return false;
        if (d->mode != logformat::DiskRead::Mode::data) {
            diverge("the log has a checksummed disk read; this backup replays logged data only");
            return false;
        }
        std::copy(d->data.begin(), d->data.end(), out.begin());
        return true;
    }
    bool write(std::uint64_t offset, std::span<const std::uint8_t> data) override
    {
        expect_output(logformat::OutputKind::disk_write);
        recent_writes.add(offset, data);
        return true;
    }
    RecentWrites recent_writes;
    bool flush() override { return true; }

private:
    template <class P>
    const P* current() const
    {
        return next < log.size() && log[next].exit == exit ? std::get_if<P>(&log[next].payload) : nullptr;
    }
    void diverge(const std::string& what)
    {
        if (!divergence)
            divergence = what + " but the log has " +
                         (next < log.size() ? logformat::to_text(log[next]) : std::string("nothing more"));
    }
    // The output ids are the recorder's own numbering (for the output gate); what must match
    // is that the guest produced this kind of output at this exit.
    void expect_output(logformat::OutputKind kind)
    {
        const auto* o = current<logformat::Output>();
        if (!o || o->kind != kind) {
            diverge(std::string("the guest produced ") + (kind == logformat::OutputKind::net_tx ? "a frame" : "a disk write"));
            return;
        }
        ++next;
    }
};

Expected<bool, Divergence> Replayer::replay_available(std::deque<logformat::Entry>& pending, bool final)
{
    if (pending.empty())
        return true;
    const std::uint64_t newest = pending.back().exit;
    const std::uint64_t until = final ? newest : newest - 1;
    if (until <= exit_) {
        if (pending.front().exit > exit_)
            return true; // nothing complete yet
        return unexpected(Divergence{exit_, "the log's next entry (" + logformat::to_text(pending.front()) +
                                                ") belongs to an exit already replayed"});
    }
    std::vector<logformat::Entry> batch;
    while (!pending.empty() && pending.front().exit <= until) {
        batch.push_back(std::move(pending.front()));
        pending.pop_front();
    }
    return run(batch, until);
}

Expected<std::size_t, std::string> Replayer::reissue_writes(devices::BlockPort& disk)
{
    return ports_->recent_writes.reissue(disk);
}

std::size_t Replayer::resend_frames(devices::NetTransmit& net)
{
    auto& frames = ports_->recent_frames;
    const std::size_t n = frames.size();
    for (const auto& f : frames)
        net.transmit(f);
    frames.clear();
    return n;
}

Replayer::Replayer(Machine& machine) : machine_(machine), ports_(std::make_unique<Ports>())
{
    machine_.connect_io(ports_.get(), ports_.get());
}

Replayer::~Replayer()
{
    machine_.connect_io(nullptr, nullptr);
}

Expected<bool, Divergence> Replayer::run(std::span<const logformat::Entry> log, std::uint64_t until_exit)
{
    Ports& ports = *ports_;
    ports.log = log;
    ports.next = 0;
    std::size_t& next = ports.next;
    Backend& backend = machine_.backend();
    auto diverge = [&](std::string what) { return unexpected(Divergence{exit_, std::move(what)}); };
    while (exit_ < until_exit) {
        auto e = backend.run();
        if (!e)
            return diverge("the guest stopped: " + e.error());
        ++exit_;
        ports.exit = exit_;
        if (next < log.size() && log[next].exit < exit_)
            return diverge("the log's next entry (" + logformat::to_text(log[next]) + ") belongs to an earlier exit");
        devices::Device* dev = machine_.bus().find(e->is_pio(), e->address);
        if (e->is_read()) {
            std::uint64_t v = all_ones(e->size);
            if (dev && !dev->read_is_deterministic(e->address)) {
                const auto* r = next < log.size() && log[next].exit == exit_ ? std::get_if<logformat::IoRead>(&log[next].payload)
                                                                              : nullptr;
                if (!r)
                    return diverge("the guest read " + describe(*e) + " but the log has " +
                                   (next < log.size() ? logformat::to_text(log[next]) : std::string("nothing more")));
                if (r->address != e->address || r->size != e->size || (r->space == logformat::IoSpace::port) != e->is_pio())
                    return diverge("the guest read " + describe(*e) + " but the log has " + logformat::to_text(log[next]));
                v = r->value;
                machine_.observe_time(dev, v);
                ++next;
            } else if (dev) {
                v = dev->read(e->address, e->size) & all_ones(e->size);
            }
            backend.complete_read(v);
        } else if (e->kind != Exit::Kind::hlt && dev) {
            dev->write(e->address, e->size, e->value);
        }
        if (ports.divergence)
            return diverge(*ports.divergence);
        for (; next < log.size() && log[next].exit == exit_; ++next) {
            const auto& entry = log[next];
            if (const auto* d = std::get_if<logformat::StateDigest>(&entry.payload)) {
                if (machine_.digest() != d->digest)
                    return diverge("state digest differs from the primary's (entry " + std::to_string(entry.seq) + ")");
            } else if (const auto* rx = std::get_if<logformat::NetRx>(&entry.payload)) {
                auto* net = machine_.net();
                if (!net || rx->device != kNic || !net->can_receive())
                    return diverge("the log delivers a frame but this guest's NIC has no receive buffer");
                net->receive(rx->frame);
            } else if (const auto* irq = std::get_if<logformat::Interrupt>(&entry.payload)) {
                if (!backend.can_inject())
                    return diverge("the log injects vector " + std::to_string(irq->vector) + " but the guest cannot take it");
                if (irq->source != logformat::IrqSource::lapic_timer) {
                    devices::Device* source = machine_.device_with_vector(irq->vector);
                    if (!source)
                        return diverge("the log injects device vector " + std::to_string(irq->vector) +
                                       " but no device here has that interrupt pending");
                    source->interrupt_delivered();
                }
                backend.inject(irq->vector);
            } else {
                return diverge("unexpected log entry " + logformat::to_text(entry));
            }
        }
    }
    if (next < log.size())
        return diverge(std::to_string(log.size() - next) + " log entries beyond the last exit");
    if (!log.empty())
        last_seq_ = log.back().seq;
    return true;
}

} // namespace xenft::engine
