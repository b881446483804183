// A protected domain's state digests, taken at an ioreq where both replicas stop: SHA-256 over
// guest memory (engine::PageDigests: the pages written since the last digest, named by Xen's
// log-dirty mode and by the device models' own writes, plus a sweep), vCPU 0's general
// registers, RIP and RFLAGS, and every device model's state.
//
// Log-dirty mode has one user at a time: a primary's live copy needs it for itself, so a
// replica holds a StateDigests only while it compares digests (ft_domain.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "xenft/backends/xen/device_model.hpp"
#include "xenft/backends/xen/dirty_log.hpp"
#include "xenft/engine/page_digests.hpp"

namespace xenft::backends::xen {

using Digest = std::array<std::uint8_t, 32>;
std::string hex(const Digest& d);

// One digest and what it cost.
struct DigestTaken {
    Digest digest{};
    std::uint64_t us = 0;            // the vCPU waited this long for it
    std::uint64_t pages_hashed = 0;  // written since the last one, and swept
    std::uint64_t covered = 0, pages = 0; // the sweep has reached `covered` of the domain's pages
    std::uint64_t unlogged = 0;      // pages found changed that no log named (see PageDigests)
    std::vector<std::uint64_t> unlogged_pages;
};

class StateDigests {
public:
    // Turns Xen's log-dirty mode and the device models' write tracking on for `dm`'s domain;
    // both stay on until this is destroyed.
    static Expected<std::unique_ptr<StateDigests>, std::string> start(XenDeviceModel& dm);
    ~StateDigests();
    StateDigests(const StateDigests&) = delete;
    StateDigests& operator=(const StateDigests&) = delete;

    // The digest now. The vCPU must wait in an ioreq.
    Expected<DigestTaken, std::string> take();

private:
    StateDigests(XenDeviceModel& dm, DirtyLog log);
    XenDeviceModel& dm_;
    DirtyLog dirty_;
    engine::PageDigests pages_;
};

// The digest now, with `digests` started for `dm` first if it is not yet (a replica starts them
// at its first digest: ft_domain.hpp).
Expected<DigestTaken, std::string> take_digest(std::unique_ptr<StateDigests>& digests, XenDeviceModel& dm);

} // namespace xenft::backends::xen
