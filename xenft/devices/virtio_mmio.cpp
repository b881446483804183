#include "xenft/devices/virtio_mmio.hpp"

#include <algorithm>
#include <cstring>

namespace xenft::devices {

namespace {

constexpr std::uint32_t kMagic = 0x74726976; // "virt"
constexpr std::uint32_t kVendor = 0x5446584e; // "NXFT"
constexpr std::uint16_t kDescNext = 1, kDescWrite = 2, kDescIndirect = 4;

template <class T>
bool load_le(GuestMemory& mem, std::uint64_t gpa, T& v)
{
    std::uint8_t b[sizeof(T)];
    if (!mem.read_guest(gpa, b))
        return false;
    v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i)
        v |= static_cast<T>(static_cast<T>(b[i]) << (8 * i));
    return true;
}

template <class T>
bool store_le(GuestMemory& mem, std::uint64_t gpa, T v)
{
    std::uint8_t b[sizeof(T)];
    for (std::size_t i = 0; i < sizeof(T); ++i)
        b[i] = static_cast<std::uint8_t>(v >> (8 * i));
    return mem.write_guest(gpa, b);
}

} // namespace

bool gather(GuestMemory& mem, const VirtqChain& chain, std::vector<std::uint8_t>& out, std::size_t max)
{
    out.clear();
    for (const auto& b : chain.buffers) {
        if (b.device_writable)
            continue;
        if (b.length > max - out.size())
            return false;
        if (b.length == 0)
            continue;
        const std::size_t at = out.size();
        out.resize(at + b.length);
        if (!mem.read_guest(b.gpa, std::span(out).subspan(at)))
            return false;
    }
    return true;
}

std::uint64_t writable_bytes(const VirtqChain& chain)
{
    std::uint64_t n = 0;
    for (const auto& b : chain.buffers)
        n += b.device_writable ? b.length : 0;
    return n;
}

bool scatter(GuestMemory& mem, const VirtqChain& chain, std::span<const std::uint8_t> data, std::uint64_t skip)
{
    if (data.empty())
        return true;
    for (const auto& b : chain.buffers) {
        if (!b.device_writable)
            continue;
        if (skip >= b.length) {
            skip -= b.length;
            continue;
        }
        const std::uint64_t room = b.length - skip;
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(room, data.size()));
        if (!mem.write_guest(b.gpa + skip, data.first(n)))
            return false;
        data = data.subspan(n);
        skip = 0;
        if (data.empty())
            return true;
    }
    return data.empty();
}

bool Virtqueue::has_available(GuestMemory& mem, bool* broken) const
{
    std::uint16_t avail_idx = 0;
    if (!load_le(mem, driver + 2, avail_idx)) {
        *broken = true;
        return false;
    }
    return avail_idx != last_avail;
}

std::optional<VirtqChain> Virtqueue::pop(GuestMemory& mem, bool* broken)
{
    *broken = false;
    if (!has_available(mem, broken))
        return std::nullopt;
    VirtqChain chain;
    if (!load_le(mem, driver + 4 + 2 * (last_avail % size), chain.head) || chain.head >= size) {
        *broken = true;
        return std::nullopt;
    }
    // Walk the chain; more links than the queue has entries means a loop.
    std::uint16_t i = chain.head;
    for (std::uint32_t n = 0;; ++n) {
        if (n == size || i >= size) {
            *broken = true;
            return std::nullopt;
        }
        std::uint8_t d[16];
        if (!mem.read_guest(desc + 16u * i, d)) {
            *broken = true;
            return std::nullopt;
        }
        VirtqBuffer b;
        std::uint16_t flags = 0, next = 0;
        std::memcpy(&b.gpa, d, 8);
        std::memcpy(&b.length, d + 8, 4);
        std::memcpy(&flags, d + 12, 2);
        std::memcpy(&next, d + 14, 2);
        if (flags & kDescIndirect) { // not offered (VIRTIO_F_INDIRECT_DESC), so not allowed
            *broken = true;
            return std::nullopt;
        }
        b.device_writable = flags & kDescWrite;
        chain.buffers.push_back(b);
        if (!(flags & kDescNext))
            break;
        i = next;
    }
    ++last_avail;
    return chain;
}

bool Virtqueue::push(GuestMemory& mem, std::uint16_t head, std::uint32_t written)
{
    const std::uint64_t elem = device + 4 + 8u * (used_idx % size);
    if (!store_le<std::uint32_t>(mem, elem, head) || !store_le<std::uint32_t>(mem, elem + 4, written))
        return false;
    ++used_idx;
    return store_le<std::uint16_t>(mem, device + 2, used_idx);
}

void Virtqueue::save(StateWriter& out) const
{
    for (std::uint64_t v : {std::uint64_t{size}, std::uint64_t{ready}, desc, driver, device, std::uint64_t{last_avail},
                            std::uint64_t{used_idx}})
        out.put(v);
}

void Virtqueue::load(StateReader& in)
{
    size = static_cast<std::uint32_t>(in.get(kMaxSize));
    ready = in.get(1);
    desc = in.get();
    driver = in.get();
    device = in.get();
    last_avail = static_cast<std::uint16_t>(in.get(0xffff));
    used_idx = static_cast<std::uint16_t>(in.get(0xffff));
    if (ready && (size == 0 || (size & (size - 1)) != 0))
        in.reject();
}

VirtioMmio::VirtioMmio(std::uint64_t base, std::uint32_t device_id, std::uint8_t vector, std::uint64_t device_features,
                       std::size_t queues, GuestMemory& memory)
    : memory_(memory), base_(base), device_id_(device_id), vector_(vector),
      device_features_(device_features | (std::uint64_t{1} << 32) /* VIRTIO_F_VERSION_1 */), queues_(queues)
{
}

void VirtioMmio::reset()
{
    for (auto& q : queues_)
        q = Virtqueue{};
    status_ = device_features_sel_ = driver_features_sel_ = queue_sel_ = interrupt_status_ = 0;
    driver_features_ = 0;
    irq_pending_ = false;
    reset_device();
}

std::uint64_t VirtioMmio::read(std::uint64_t address, std::uint8_t size)
{
    const std::uint64_t off = address - base_;
    if (off >= 0x100)
        return read_config(off - 0x100, size);
    if (size != 4)
        return 0; // the spec allows only 32-bit accesses to the common registers
    const Virtqueue* q = queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr;
    switch (off) {
    case 0x000: return kMagic;
    case 0x004: return 2; // version: virtio 1.x register layout
    case 0x008: return device_id_;
    case 0x00c: return kVendor;
    case 0x010: return device_features_sel_ < 2 ? static_cast<std::uint32_t>(device_features_ >> (32 * device_features_sel_)) : 0;
    case 0x034: return q ? Virtqueue::kMaxSize : 0;
    case 0x044: return q ? q->ready : 0;
    case 0x060: return interrupt_status_;
    case 0x070: return status_;
    case 0x0fc: return 0; // config generation: the configuration never changes
    default: return 0;
    }
}

void VirtioMmio::write(std::uint64_t address, std::uint8_t size, std::uint64_t value)
{
    const std::uint64_t off = address - base_;
    if (off >= 0x100 || size != 4)
        return; // configuration space is read-only here
    const auto v = static_cast<std::uint32_t>(value);
    Virtqueue* q = queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr;
    auto set_low = [](std::uint64_t& r, std::uint32_t x) { r = (r & ~std::uint64_t{0xffffffff}) | x; };
    auto set_high = [](std::uint64_t& r, std::uint32_t x) { r = (r & 0xffffffff) | (std::uint64_t{x} << 32); };
    switch (off) {
    case 0x014: device_features_sel_ = v; break;
    case 0x020:
        if (driver_features_sel_ < 2) {
            const int shift = 32 * static_cast<int>(driver_features_sel_);
            driver_features_ = (driver_features_ & ~(std::uint64_t{0xffffffff} << shift)) | (std::uint64_t{v} << shift);
            driver_features_ &= device_features_; // a driver cannot accept what was not offered
        }
        break;
    case 0x024: driver_features_sel_ = v; break;
    case 0x030: queue_sel_ = v; break;
    case 0x038:
        if (q && !q->ready)
            q->size = (v != 0 && v <= Virtqueue::kMaxSize && (v & (v - 1)) == 0) ? v : 0;
        break;
    case 0x044:
        if (q)
            q->ready = v == 1 && q->size != 0;
        break;
    case 0x050:
        if (driver_ready() && v < queues_.size() && queues_[v].ready)
            notify(v);
        break;
    case 0x064: interrupt_status_ &= ~v; break;
    case 0x070:
        if (v == 0)
            reset();
        else
            status_ = v & 0xff;
        break;
    case 0x080: if (q && !q->ready) set_low(q->desc, v); break;
    case 0x084: if (q && !q->ready) set_high(q->desc, v); break;
    case 0x090: if (q && !q->ready) set_low(q->driver, v); break;
    case 0x094: if (q && !q->ready) set_high(q->driver, v); break;
    case 0x0a0: if (q && !q->ready) set_low(q->device, v); break;
    case 0x0a4: if (q && !q->ready) set_high(q->device, v); break;
    default: break;
    }
}

void VirtioMmio::save(StateWriter& out) const
{
    for (std::uint64_t v : {std::uint64_t{status_}, std::uint64_t{device_features_sel_}, std::uint64_t{driver_features_sel_},
                            std::uint64_t{queue_sel_}, std::uint64_t{interrupt_status_}, driver_features_,
                            std::uint64_t{irq_pending_}})
        out.put(v);
    for (const auto& q : queues_)
        q.save(out);
    save_device(out);
}

bool VirtioMmio::load(StateReader& in)
{
    status_ = static_cast<std::uint32_t>(in.get(0xff));
    device_features_sel_ = static_cast<std::uint32_t>(in.get(0xffffffff));
    driver_features_sel_ = static_cast<std::uint32_t>(in.get(0xffffffff));
    queue_sel_ = static_cast<std::uint32_t>(in.get(0xffffffff));
    interrupt_status_ = static_cast<std::uint32_t>(in.get(3));
    driver_features_ = in.get() & device_features_;
    irq_pending_ = in.get(1);
    for (auto& q : queues_)
        q.load(in);
    load_device(in);
    return in.ok();
}

} // namespace xenft::devices
