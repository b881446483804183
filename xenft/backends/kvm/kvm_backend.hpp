// The KVM backend: one single-vCPU VM on raw /dev/kvm, for tests and the local demo on machines
// without Xen. No in-kernel irqchip or PIT (their timing is not deterministic); interrupts are
// injected with KVM_INTERRUPT only at synchronous exits, never through an interrupt window;
// CPUID is fixed with KVM_SET_CPUID2 (RDRAND and RDSEED hidden, since they cannot be trapped);
// a pending I/O is completed with immediate_exit before the state is read.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "xenft/common/unique_fd.hpp"
#include "xenft/engine/backend.hpp"
#include "xenft/engine/pvh_image.hpp"

namespace xenft::backends {

class KvmBackend final : public engine::Backend {
public:
    static constexpr std::size_t kMaxCmdline = 0xeff;

    // Creates the VM with memory_bytes of RAM at guest-physical 0, loads the image and sets the
    // vCPU at its PVH entry, with `cmdline` in hvm_start_info as Xen passes a PVH guest's
    // cmdline= setting. The error names the step that failed and why.
    static Expected<std::unique_ptr<KvmBackend>, std::string> create(const engine::PvhImage& image, std::uint64_t memory_bytes,
                                                                     const std::string& cmdline = {});
    // Opens /dev/kvm and checks its API version. Machines of our kind may have no /dev/kvm at
    // all (a kvm_pvm host that is itself such a guest): the error then says so and what to do,
    // so xenftd can refuse at start instead of failing in the middle of forming a pair.
    static Expected<UniqueFd, std::string> open_device();
    ~KvmBackend() override;

    Expected<engine::Exit, std::string> run() override;
    void complete_read(std::uint64_t value) override;
    bool can_inject() override;
    void inject(std::uint8_t vector) override;
    bool read_guest(std::uint64_t gpa, std::span<std::uint8_t> out) override;
    bool write_guest(std::uint64_t gpa, std::span<const std::uint8_t> data) override;
    std::uint64_t memory_bytes() const override { return memory_bytes_; }
    std::vector<std::uint64_t> dirty_pages() override;
    logformat::Sha256 digest() override;
    std::vector<std::uint8_t> save_state() override;
    Expected<bool, std::string> restore_state(std::span<const std::uint8_t> blob) override;
    std::vector<std::uint8_t> save_cpu_state() override;
    Expected<bool, std::string> restore_cpu_state(std::span<const std::uint8_t> blob) override;

private:
    KvmBackend() = default;
    Expected<bool, std::string> setup(const engine::PvhImage& image, std::uint64_t memory_bytes, const std::string& cmdline);
    void mark_host_dirty(std::uint64_t gpa, std::uint64_t bytes);
    void finish_pending_io();

    UniqueFd kvm_, vm_, vcpu_;
    kvm_run* run_ = nullptr;
    std::size_t run_size_ = 0;
    std::uint8_t* memory_ = nullptr;
    std::uint64_t memory_bytes_ = 0;
    bool io_pending_ = false; // a read was completed but KVM has not consumed it yet
    // KVM logs only the guest's own writes; ours (DMA, restores) are tracked here.
    std::vector<std::uint64_t> host_dirty_;
};

} // namespace xenft::backends
