#include "xenft/engine/output_gate.hpp"

#include <algorithm>
#include <set>

namespace xenft::engine {

bool OutputGate::send(const Held& h)
{
    ++released_;
    if (!h.is_write) {
        if (net_)
            net_->transmit(h.bytes);
        return true;
    }
    if (disk_ && disk_->write(h.offset, h.bytes)) {
        writes_performed_ += !writes_broken_;
        return true;
    }
    ++write_errors_;
    writes_broken_ = true;
    return false;
}

void OutputGate::hold_frame(std::uint64_t seq, std::span<const std::uint8_t> frame)
{
    std::lock_guard lock(mu_);
    Held h{seq, false, 0, {frame.begin(), frame.end()}};
    if (passthrough_)
        (void)send(h);
    else
        held_.push_back(std::move(h));
}

void OutputGate::hold_write(std::uint64_t seq, std::uint64_t offset, std::span<const std::uint8_t> data)
{
    std::lock_guard lock(mu_);
    Held h{seq, true, offset, {data.begin(), data.end()}};
    ++writes_given_;
    if (passthrough_) {
        (void)send(h);
    } else {
        held_.push_back(std::move(h));
        ++held_writes_;
    }
}

bool OutputGate::read(std::uint64_t offset, std::span<std::uint8_t> out)
{
    std::lock_guard lock(mu_);
    if (!disk_ || !disk_->read(offset, out))
        return false;
    // Held writes, oldest first, over what the disk has.
    for (const auto& h : held_) {
        if (!h.is_write || h.offset >= offset + out.size() || h.offset + h.bytes.size() <= offset)
            continue;
        const std::uint64_t from = std::max(offset, h.offset);
        const std::uint64_t to = std::min(offset + out.size(), h.offset + h.bytes.size());
        std::copy(h.bytes.begin() + static_cast<std::ptrdiff_t>(from - h.offset),
                  h.bytes.begin() + static_cast<std::ptrdiff_t>(to - h.offset), out.begin() + static_cast<std::ptrdiff_t>(from - offset));
    }
    return true;
}

bool OutputGate::flush()
{
    // A flush completes when the writes before it are safe: held ones are in the backup's log
    // (or will be before anything depending on the flush leaves) and are re-issued by the
    // backup if this host dies, so only what has reached the disk needs flushing.
    std::lock_guard lock(mu_);
    return !disk_ || disk_->flush();
}

bool OutputGate::release_through(std::uint64_t seq)
{
    std::lock_guard lock(mu_);
    bool ok = true;
    while (!held_.empty() && held_.front().seq <= seq) {
        ok = send(held_.front()) && ok;
        held_writes_ -= held_.front().is_write;
        held_.pop_front();
    }
    return ok;
}

void OutputGate::set_passthrough(bool on)
{
    std::lock_guard lock(mu_);
    passthrough_ = on;
    if (on) {
        for (const auto& h : held_)
            (void)send(h);
        held_.clear();
        held_writes_ = 0;
    }
}

std::size_t OutputGate::discard_all()
{
    std::lock_guard lock(mu_);
    const std::size_t n = held_.size();
    writes_broken_ = writes_broken_ || held_writes_ > 0;
    held_.clear();
    held_writes_ = 0;
    return n;
}

std::size_t OutputGate::held() const
{
    std::lock_guard lock(mu_);
    return held_.size();
}

bool OutputGate::full() const
{
    std::lock_guard lock(mu_);
    return held_writes_ >= kMaxHeldWrites;
}

std::uint64_t OutputGate::released() const
{
    std::lock_guard lock(mu_);
    return released_;
}

std::uint64_t OutputGate::write_errors() const
{
    std::lock_guard lock(mu_);
    return write_errors_;
}

std::uint64_t OutputGate::writes_given() const
{
    std::lock_guard lock(mu_);
    return writes_given_;
}

std::uint64_t OutputGate::writes_performed() const
{
    std::lock_guard lock(mu_);
    return writes_performed_;
}

void RecentWrites::add(std::uint64_t offset, std::span<const std::uint8_t> data)
{
    if (++added_ <= performed_)
        return; // the primary has performed it already
    writes_.push_back(Write{added_, offset, {data.begin(), data.end()}});
    if (writes_.size() > kKept)
        writes_.pop_front();
}

void RecentWrites::performed_through(std::uint64_t count)
{
    performed_ = std::max(performed_, count);
    while (!writes_.empty() && writes_.front().number <= performed_)
        writes_.pop_front();
}

Expected<std::size_t, std::string> RecentWrites::reissue(devices::BlockPort& disk)
{
    std::vector<bool> replaced(writes_.size(), false);
    std::set<std::pair<std::uint64_t, std::size_t>> later;
    for (std::size_t i = writes_.size(); i-- > 0;)
        replaced[i] = !later.emplace(writes_[i].offset, writes_[i].bytes.size()).second;
    std::size_t n = 0;
    for (std::size_t i = 0; i < writes_.size(); ++i) {
        if (replaced[i])
            continue;
        if (!disk.write(writes_[i].offset, writes_[i].bytes))
            return unexpected("re-issuing the guest's disk write at byte " + std::to_string(writes_[i].offset) + " failed");
        ++n;
    }
    writes_.clear();
    return n;
}

} // namespace xenft::engine
