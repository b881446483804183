// The state of a device model as bytes: what a checkpoint carries to another replica and what
// goes into the state digest. Every field is a canonical varint, so equal states give equal
// bytes. A state blob comes from a peer, so the reader checks every value against its bound
// and remembers the first failure instead of throwing.
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/bytes.hpp"

namespace xenft::devices {

class StateWriter {
public:
    explicit StateWriter(std::vector<std::uint8_t>& out) : w_(out) {}
    void put(std::uint64_t v) { w_.varint(v); }
    void put_bytes(std::span<const std::uint8_t> b)
    {
        w_.varint(b.size());
        w_.bytes(b);
    }

private:
    ByteWriter w_;
};

class StateReader {
public:
    explicit StateReader(std::span<const std::uint8_t> in) : r_(in) {}

    // The next value; zero and a failure if it is missing or above max.
    std::uint64_t get(std::uint64_t max = std::numeric_limits<std::uint64_t>::max())
    {
        std::uint64_t v = 0;
        if (failed_ || r_.varint(v) != ReadStatus::ok || v > max) {
            failed_ = true;
            return 0;
        }
        return v;
    }
    std::vector<std::uint8_t> get_bytes(std::size_t max)
    {
        const std::uint64_t n = get(max);
        std::span<const std::uint8_t> b;
        if (failed_ || r_.bytes(n, b) != ReadStatus::ok) {
            failed_ = true;
            return {};
        }
        return {b.begin(), b.end()};
    }
    // A value was readable but makes no sense together with the others.
    void reject() noexcept { failed_ = true; }
    bool ok() const noexcept { return !failed_; }
    bool at_end() const noexcept { return r_.at_end(); }

private:
    ByteReader r_;
    bool failed_ = false;
};

} // namespace xenft::devices
