// Synthetic logs; see synthetic.hpp.
#include "xenft/logformat/synthetic.hpp"

#include <random>

namespace xenft::logformat {

std::vector<Entry> idle_guest_log(std::uint64_t ticks, std::uint32_t timer_hz, std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<std::uint64_t> jitter_ns(0, 50'000);
    const std::uint64_t period_ns = 1'000'000'000ull / timer_hz;

    std::vector<Entry> log;
    log.reserve(2 * ticks + 1);
    std::uint64_t seq = 1;
    std::uint64_t exit = 0;
    log.push_back(Entry{1, seq++, 0, exit, ProtectionStart{1}});
    for (std::uint64_t t = 1; t <= ticks; ++t) {
        exit += 3; // HLT; after the tick: clock read, EOI write, then HLT again
        log.push_back(Entry{1, seq++, 0, exit, Interrupt{kSyntheticTimerVector, IrqSource::lapic_timer}});
        const std::uint64_t now = t * period_ns + jitter_ns(rng);
        log.push_back(Entry{1, seq++, 0, exit + 1, IoRead{IoSpace::mmio, 8, kSyntheticClockMmio, now}});
    }
    return log;
}

std::vector<Entry> mixed_log(std::uint64_t count, std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    auto pick = [&](std::uint64_t lo, std::uint64_t hi) { return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng); };
    auto bytes = [&](std::size_t n) {
        std::vector<std::uint8_t> b(n);
        for (auto& x : b)
            x = static_cast<std::uint8_t>(rng());
        return b;
    };
    auto digest = [&] {
        Sha256 d;
        for (auto& x : d)
            x = static_cast<std::uint8_t>(rng());
        return d;
    };

    std::vector<Entry> log;
    log.reserve(count);
    std::uint64_t epoch = 1 + pick(0, 3);
    std::uint64_t seq = pick(0, 1u << 20);
    const std::uint32_t vcpus = static_cast<std::uint32_t>(pick(1, 4));
    std::vector<std::uint64_t> exits(vcpus);
    for (auto& x : exits)
        x = pick(0, 1u << 30);
    log.push_back(Entry{epoch, seq++, 0, exits[0], ProtectionStart{vcpus}});

    while (log.size() < count) {
        const auto vcpu = static_cast<std::uint32_t>(pick(0, vcpus - 1));
        exits[vcpu] += pick(0, 2) == 0 ? 0 : pick(1, 5000);
        Entry e{epoch, seq++, vcpu, exits[vcpu], {}};
        switch (pick(0, 24)) {
        case 0: case 1: case 2: case 3: {
            static constexpr std::uint8_t sizes[] = {1, 2, 4, 8};
            const std::uint8_t size = sizes[pick(0, 3)];
            const bool mmio = pick(0, 1) == 1;
            const std::uint64_t addr = mmio ? 0xfeb00000 + 8 * pick(0, 3) : 0x3f8 + pick(0, 7);
            const std::uint64_t value = size == 8 ? rng() : rng() & ((std::uint64_t{1} << (8 * size)) - 1);
            e.payload = IoRead{mmio ? IoSpace::mmio : IoSpace::port, size, addr, value};
            break;
        }
        case 4: case 5: case 6: {
            const auto src = static_cast<TimeSource>(pick(0, 2));
            e.payload = TimeRead{src, rng() >> pick(0, 40), src == TimeSource::rdtscp ? static_cast<std::uint32_t>(pick(0, 7)) : 0u};
            break;
        }
        case 7: case 8: case 9: case 10:
            e.payload = Interrupt{static_cast<std::uint8_t>(pick(0x20, 0xff)), static_cast<IrqSource>(pick(0, 6))};
            break;
        case 11:
            e.payload = DmaWrite{pick(0, 1ull << 32), bytes(pick(1, 600))};
            break;
        case 12: case 13:
            e.payload = NetRx{static_cast<std::uint32_t>(pick(0, 2)), bytes(pick(14, 1514))};
            break;
        case 14:
            if (pick(0, 1) == 0) {
                e.payload = DiskRead{static_cast<std::uint32_t>(pick(0, 1)), pick(0, 1u << 20), DiskRead::Mode::data,
                                     bytes(512 * pick(1, 8)), 0, {}};
            } else {
                e.payload = DiskRead{static_cast<std::uint32_t>(pick(0, 1)), pick(0, 1u << 20), DiskRead::Mode::checksum,
                                     {}, 4096 * pick(1, 16), digest()};
            }
            break;
        case 15: case 16:
            e.payload = Output{static_cast<OutputKind>(pick(0, 1)), static_cast<std::uint32_t>(pick(0, 2)), pick(0, 1u << 24)};
            break;
        case 17:
            e.payload = StateDigest{digest()};
            break;
        case 18:
            e.payload = GoLive{static_cast<GoLive::Reason>(pick(0, 2))};
            break;
        case 19:
            e.payload = XenRecord{static_cast<std::uint16_t>(pick(1, 4)), static_cast<std::uint32_t>(pick(0, 0x3ff)),
                                  {pick(0, 1u << 30), pick(0, ~0ull)}};
            break;
        case 20:
            e.payload = IoreqStop{pick(0, 1) == 1, pick(0, 1) ? IoSpace::mmio : IoSpace::port, pick(0, 0xffff)};
            break;
        case 21:
            e.payload = VmEnd{static_cast<VmEnd::Reason>(pick(0, 2))};
            break;
        case 22:
            e.payload = WritesDone{pick(0, 1u << 20)};
            break;
        default:
            if (pick(0, 3) == 0) {
                const std::uint64_t next = epoch + pick(1, 3);
                e.payload = EpochChange{next};
                log.push_back(std::move(e));
                epoch = next;
                continue;
            }
            e.payload = Interrupt{0xec, IrqSource::lapic_timer};
            break;
        }
        log.push_back(std::move(e));
    }
    return log;
}

} // namespace xenft::logformat
