// Guest-physical memory as device models see it: a backend (KVM, Xen) provides it, and device
// models use it only while the vCPU is stopped at a synchronous exit (ARCHITECTURE.md,
// "Determinism model"), so what they read and write is part of the deterministic execution.
#pragma once

#include <cstdint>
#include <span>

namespace xenft::devices {

class GuestMemory {
public:
    virtual ~GuestMemory() = default;
    // False when any byte of the range lies outside guest memory; nothing is copied then.
    virtual bool read_guest(std::uint64_t gpa, std::span<std::uint8_t> out) = 0;
    virtual bool write_guest(std::uint64_t gpa, std::span<const std::uint8_t> data) = 0;
};

} // namespace xenft::devices
