// What the replay engine needs from a hypervisor, and nothing else (ARCHITECTURE.md, "Layers"):
// run the vCPU to its next synchronous exit, say what the exit was, complete it, inject an
// interrupt at it, read and write guest memory at it (device models' DMA), track dirty pages
// for a live copy, and save, restore and digest the VM state. The KVM backend (tests, local
// demo) and the Xen backend (the product) implement it. Device state is not the backend's:
// engine::Machine adds it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"
#include "xenft/devices/guest_memory.hpp"
#include "xenft/logformat/entry.hpp"

namespace xenft::engine {

// A synchronous exit: one the guest's own instruction stream caused.
struct Exit {
    enum class Kind : std::uint8_t { pio_read, pio_write, mmio_read, mmio_write, hlt };
    Kind kind = Kind::hlt;
    std::uint64_t address = 0; // port or guest-physical address
    std::uint8_t size = 0;     // 1, 2, 4 or 8
    std::uint64_t value = 0;   // for writes
    bool is_read() const noexcept { return kind == Kind::pio_read || kind == Kind::mmio_read; }
    bool is_pio() const noexcept { return kind == Kind::pio_read || kind == Kind::pio_write; }
};

class Backend : public devices::GuestMemory {
public:
    static constexpr std::uint64_t kPageBytes = 4096;

    virtual ~Backend() = default;

    // Runs the guest until its next synchronous exit. Asynchronous exits (host signals,
    // interrupt windows) are absorbed here and never returned. An error (triple fault, failed
    // entry) ends the run.
    virtual Expected<Exit, std::string> run() = 0;
    // Supplies the value a read exit returns to the guest.
    virtual void complete_read(std::uint64_t value) = 0;
    // Whether an interrupt injected now is delivered on the next entry (interrupts enabled, no
    // interrupt shadow). Only asked at synchronous exits.
    virtual bool can_inject() = 0;
    virtual void inject(std::uint8_t vector) = 0;
    // Guest memory (GuestMemory::read_guest / write_guest) is touched only here, while the
    // vCPU is stopped at an exit.
    virtual std::uint64_t memory_bytes() const = 0;
    // The pages (by number) written since the previous call, by the guest or through
    // write_guest; the first call reports every page written since the VM was created.
    virtual std::vector<std::uint64_t> dirty_pages() = 0;
    // SHA-256 of guest memory and vCPU state, taken at the current exit.
    virtual logformat::Sha256 digest() = 0;
    // The whole VM state (memory, vCPU) at the current exit, as an opaque blob that
    // restore_state() of the same backend kind accepts; restoring it reproduces the VM bit for
    // bit, so replay can start from a checkpoint.
    virtual std::vector<std::uint8_t> save_state() = 0;
    virtual Expected<bool, std::string> restore_state(std::span<const std::uint8_t> blob) = 0;
    // The vCPU alone (a live copy sends memory page by page and this at the end).
    virtual std::vector<std::uint8_t> save_cpu_state() = 0;
    virtual Expected<bool, std::string> restore_cpu_state(std::span<const std::uint8_t> blob) = 0;
};

} // namespace xenft::engine
