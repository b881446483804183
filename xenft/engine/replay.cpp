#include "xenft/engine/replay.hpp"

#include <thread>

#include "xenft/logformat/text.hpp"

namespace xenft::engine {

namespace {

std::string describe(const Exit& e)
{
    return std::string(e.is_pio() ? "port " : "mmio ") + logformat::hex(e.address) + "/" + std::to_string(e.size);
}

} // namespace

Recorder::Recorder(Backend& backend, devices::DeviceBus& bus, devices::LapicTimer& timer, devices::TimeSource now,
                   std::uint64_t digest_every)
    : backend_(backend), bus_(bus), timer_(timer), now_(std::move(now)), digest_every_(digest_every)
{
}

void Recorder::append(std::vector<logformat::Entry>& log, logformat::Payload p)
{
    log.push_back(logformat::Entry{1, seq_++, 0, exit_, std::move(p)});
}

Expected<bool, std::string> Recorder::run(std::uint64_t exits, std::vector<logformat::Entry>& log)
{
    const std::uint64_t stop = exit_ + exits;
    while (exit_ < stop) {
        auto e = backend_.run();
        if (!e)
            return unexpected("exit " + std::to_string(exit_ + 1) + ": " + e.error());
        ++exit_;
        devices::Device* dev = bus_.find(e->is_pio(), e->address);
        if (e->is_read()) {
            const std::uint64_t v = dev ? dev->read(e->address, e->size) & all_ones(e->size) : all_ones(e->size);
            if (dev && !dev->read_is_deterministic(e->address))
                append(log, logformat::IoRead{e->is_pio() ? logformat::IoSpace::port : logformat::IoSpace::mmio, e->size,
                                              e->address, v});
            backend_.complete_read(v);
        } else if (e->kind != Exit::Kind::hlt && dev) {
            dev->write(e->address, e->size, e->value);
        }
        if (digest_every_ != 0 && exit_ % digest_every_ == 0)
            append(log, logformat::StateDigest{backend_.digest()});

        // Interrupts go in only here, at a synchronous exit. A halted vCPU waits for its tick.
        auto tick = timer_.next_tick_ns();
        if (e->kind == Exit::Kind::hlt) {
            if (!tick || !backend_.can_inject())
                return unexpected("exit " + std::to_string(exit_) + ": the guest halted with no interrupt that can wake it");
            const std::uint64_t now = now_();
            if (*tick > now)
                std::this_thread::sleep_for(std::chrono::nanoseconds(*tick - now));
        }
        if (tick && now_() >= *tick && backend_.can_inject()) {
            timer_.take_tick();
            backend_.inject(timer_.vector());
            append(log, logformat::Interrupt{timer_.vector(), logformat::IrqSource::lapic_timer});
        }
    }
    return true;
}

Expected<bool, Divergence> Replayer::run(std::span<const logformat::Entry> log, std::uint64_t until_exit)
{
    std::size_t next = 0;
    auto diverge = [&](std::string what) { return unexpected(Divergence{exit_, std::move(what)}); };
    while (exit_ < until_exit) {
        auto e = backend_.run();
        if (!e)
            return diverge("the guest stopped: " + e.error());
        ++exit_;
        if (next < log.size() && log[next].exit < exit_)
            return diverge("the log's next entry (" + logformat::to_text(log[next]) + ") belongs to an earlier exit");
        devices::Device* dev = bus_.find(e->is_pio(), e->address);
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
                ++next;
            } else if (dev) {
                v = dev->read(e->address, e->size) & all_ones(e->size);
            }
            backend_.complete_read(v);
        } else if (e->kind != Exit::Kind::hlt && dev) {
            dev->write(e->address, e->size, e->value);
        }
        for (; next < log.size() && log[next].exit == exit_; ++next) {
            const auto& entry = log[next];
            if (const auto* d = std::get_if<logformat::StateDigest>(&entry.payload)) {
                if (backend_.digest() != d->digest)
                    return diverge("state digest differs from the primary's (entry " + std::to_string(entry.seq) + ")");
            } else if (const auto* irq = std::get_if<logformat::Interrupt>(&entry.payload)) {
                if (!backend_.can_inject())
                    return diverge("the log injects vector " + std::to_string(irq->vector) + " but the guest cannot take it");
                backend_.inject(irq->vector);
            } else {
                return diverge("unexpected log entry " + logformat::to_text(entry));
            }
        }
    }
    if (next < log.size())
        return diverge(std::to_string(log.size() - next) + " log entries beyond the last exit");
    return true;
}

} // namespace xenft::engine
