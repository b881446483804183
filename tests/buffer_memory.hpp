// Guest memory as a plain buffer, for driving device models without a VM (devices_test, the
// virtio fuzzer): all a device model ever sees of guest memory is this interface.
#pragma once

#include <cstring>
#include <vector>

#include "xenft/devices/guest_memory.hpp"

namespace xenft::testing {

class BufferMemory final : public devices::GuestMemory {
public:
    explicit BufferMemory(std::size_t size) : bytes(size, 0) {}
    bool read_guest(std::uint64_t gpa, std::span<std::uint8_t> out) override
    {
        if (gpa > bytes.size() || out.size() > bytes.size() - gpa)
            return false;
        if (!out.empty())
            std::memcpy(out.data(), bytes.data() + gpa, out.size());
        return true;
    }
    bool write_guest(std::uint64_t gpa, std::span<const std::uint8_t> data) override
    {
        if (gpa > bytes.size() || data.size() > bytes.size() - gpa)
            return false;
        if (!data.empty())
            std::memcpy(bytes.data() + gpa, data.data(), data.size());
        return true;
    }
    template <class T>
    void put(std::uint64_t gpa, T v)
    {
        std::memcpy(bytes.data() + gpa, &v, sizeof v);
    }
    template <class T>
    T get(std::uint64_t gpa) const
    {
        T v{};
        std::memcpy(&v, bytes.data() + gpa, sizeof v);
        return v;
    }
    std::vector<std::uint8_t> bytes;
};

} // namespace xenft::testing
