#include "xenft/devices/virtio_net.hpp"

#include <vector>

namespace xenft::devices {

namespace {
constexpr std::uint64_t kFeatureMac = 1u << 5; // VIRTIO_NET_F_MAC
constexpr std::uint32_t kRxQueue = 0, kTxQueue = 1;
} // namespace

VirtioNet::VirtioNet(GuestMemory& memory, MacAddress mac, std::uint64_t base, std::uint8_t vector)
    : VirtioMmio(base, 1, vector, kFeatureMac, 2, memory), mac_(mac)
{
}

std::uint64_t VirtioNet::read_config(std::uint64_t offset, std::uint8_t size)
{
    std::uint64_t v = 0;
    for (std::uint8_t i = 0; i < size && i < 8; ++i)
        if (offset + i < mac_.size())
            v |= std::uint64_t{mac_[offset + i]} << (8 * i);
    return v;
}

void VirtioNet::notify(std::uint32_t q)
{
    if (q != kTxQueue)
        return; // new receive buffers: the engine asks can_receive() at the next exit
    std::vector<std::uint8_t> packet;
    drain(kTxQueue, [&](const VirtqChain& chain) -> std::optional<std::uint32_t> {
        if (!gather(memory_, chain, packet, kHeaderBytes + kMaxFrame) || packet.size() < kHeaderBytes + 14)
            return 0; // too big or not a frame: a real NIC drops it; the buffer still goes back
        ++tx_frames_;
        tx_bytes_ += packet.size() - kHeaderBytes;
        if (tx_)
            tx_->transmit(std::span(packet).subspan(kHeaderBytes));
        return 0;
    });
}

bool VirtioNet::can_receive()
{
    Virtqueue* rx = driver_ready() ? queue(kRxQueue) : nullptr;
    bool broken = false;
    const bool yes = rx && rx->has_available(memory_, &broken);
    if (broken)
        fail();
    return yes && !broken;
}

VirtioNet::Rx VirtioNet::receive(std::span<const std::uint8_t> frame)
{
    if (!can_receive())
        return Rx::no_buffer;
    if (frame.size() > kMaxFrame || frame.size() < 14)
        return Rx::dropped;
    bool broken = false;
    auto chain = queue(kRxQueue)->pop(memory_, &broken);
    if (!chain) {
        fail();
        return Rx::dropped;
    }
    // virtio_net_hdr: no offloads; num_buffers = 1 (VERSION_1 always has the field).
    std::uint8_t header[kHeaderBytes] = {};
    header[10] = 1;
    const std::uint64_t room = writable_bytes(*chain);
    std::uint32_t written = 0;
    if (room >= kHeaderBytes + frame.size()) {
        if (!scatter(memory_, *chain, header) || !scatter(memory_, *chain, frame, kHeaderBytes)) {
            fail();
            return Rx::dropped;
        }
        written = static_cast<std::uint32_t>(kHeaderBytes + frame.size());
        ++rx_frames_;
        rx_bytes_ += frame.size();
    }
    // A buffer too small for the frame goes back empty and the frame is dropped.
    if (!queue(kRxQueue)->push(memory_, chain->head, written)) {
        fail();
        return Rx::dropped;
    }
    used_buffer_notification();
    return written ? Rx::delivered : Rx::dropped;
}

} // namespace xenft::devices
