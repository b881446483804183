#include "xenft/backends/kvm/kvm_backend.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace xenft::backends {

namespace {

constexpr std::uint64_t kStartInfoGpa = 0x7000; // hvm_start_info for the PVH entry
constexpr std::uint32_t kStartInfoMagic = 0x336ec578;
constexpr std::uint64_t kTssAddr = 0xfffbd000;

// g++ makes sizeof(struct kvm_cpuid2) 12 where C makes it 8 (its trailing zero-length array
// of 4-byte-aligned entries), which changes the ioctl numbers built from it and gets EINVAL.
// Build them from the header's real layout.
struct CpuidHeader {
    std::uint32_t nent;
    std::uint32_t padding;
};
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CpuidHeader);

std::string err(const char* what)
{
    return std::string("KVM: ") + what + ": " + std::strerror(errno);
}

void flat_segment(kvm_segment& s, std::uint16_t selector, std::uint8_t type)
{
    s = {};
    s.base = 0;
    s.limit = 0xffffffff;
    s.selector = selector;
    s.type = type;
    s.present = 1;
    s.dpl = 0;
    s.db = 1;
    s.s = 1;
    s.l = 0;
    s.g = 1;
}

} // namespace

Expected<std::unique_ptr<KvmBackend>, std::string> KvmBackend::create(const engine::PvhImage& image, std::uint64_t memory_bytes,
                                                                 const std::string& cmdline)
{
    std::unique_ptr<KvmBackend> b(new KvmBackend());
    if (auto r = b->setup(image, memory_bytes, cmdline); !r)
        return unexpected(r.error());
    return b;
}

Expected<UniqueFd, std::string> KvmBackend::open_device()
{
    UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
    if (!kvm.valid()) {
        const int e = errno;
        std::string why = std::string("backend = kvm needs /dev/kvm, which ") +
                          (e == ENOENT ? "this machine does not have" : "cannot be opened") + " (" + std::strerror(e) +
                          ")";
        if (e == ENOENT)
            why += ": load the kvm_intel or kvm_amd module (the CPU's virtualisation must reach this kernel), or "
                   "protect a Xen domain instead (backend = xen)";
        else if (e == EACCES || e == EPERM)
            why += ": run xenftd as root";
        return unexpected(why);
    }
    if (::ioctl(kvm.get(), KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
        return unexpected(std::string("/dev/kvm: unexpected KVM API version"));
    return kvm;
}

KvmBackend::~KvmBackend()
{
    if (run_)
        ::munmap(run_, run_size_);
    if (memory_)
        ::munmap(memory_, memory_bytes_);
}

Expected<bool, std::string> KvmBackend::setup(const engine::PvhImage& image, std::uint64_t memory_bytes,
                                              const std::string& cmdline)
{
    if (cmdline.size() > kMaxCmdline || cmdline.find('\0') != std::string::npos)
        return unexpected("guest command line: longer than " + std::to_string(kMaxCmdline) + " bytes or contains NUL");
    if (memory_bytes % kPageBytes != 0 || memory_bytes < (1u << 20))
        return unexpected("guest memory: " + std::to_string(memory_bytes) + " bytes is not a whole number of pages of at least 1 MiB");
    auto device = open_device();
    if (!device)
        return unexpected(device.error());
    kvm_ = std::move(device).value();
    vm_.reset(::ioctl(kvm_.get(), KVM_CREATE_VM, 0));
    if (!vm_.valid())
        return unexpected(err("KVM_CREATE_VM"));
    (void)::ioctl(vm_.get(), KVM_SET_TSS_ADDR, kTssAddr); // needed by VMX for some modes; harmless elsewhere

    memory_bytes_ = memory_bytes;
    void* mem = ::mmap(nullptr, memory_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED)
        return unexpected(err("mmap guest memory"));
    memory_ = static_cast<std::uint8_t*>(mem);
    kvm_userspace_memory_region region{0, KVM_MEM_LOG_DIRTY_PAGES, 0, memory_bytes, reinterpret_cast<std::uint64_t>(memory_)};
    if (::ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0)
        return unexpected(err("KVM_SET_USER_MEMORY_REGION"));

    for (const auto& seg : image.segments) {
        if (seg.paddr + seg.bytes.size() > memory_bytes)
            return unexpected(std::string("KVM: a guest image segment lies beyond guest memory"));
        std::memcpy(memory_ + seg.paddr, seg.bytes.data(), seg.bytes.size());
    }
    // struct hvm_start_info, version 1: magic, version, flags, nr_modules, modlist_paddr,
    // cmdline_paddr (the command line follows the structure), rsdp_paddr.
    const std::uint32_t start_info[4] = {kStartInfoMagic, 1, 0, 0};
    std::memcpy(memory_ + kStartInfoGpa, start_info, sizeof start_info);
    if (!cmdline.empty()) {
        const std::uint64_t cmdline_gpa = kStartInfoGpa + 0x100;
        std::memcpy(memory_ + kStartInfoGpa + 24, &cmdline_gpa, sizeof cmdline_gpa);
        std::memcpy(memory_ + cmdline_gpa, cmdline.c_str(), cmdline.size() + 1);
    }
    host_dirty_.assign((memory_bytes / kPageBytes + 63) / 64, 0);

    vcpu_.reset(::ioctl(vm_.get(), KVM_CREATE_VCPU, 0));
    if (!vcpu_.valid())
        return unexpected(err("KVM_CREATE_VCPU"));
    const int mmap_size = ::ioctl(kvm_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
    if (mmap_size <= 0)
        return unexpected(err("KVM_GET_VCPU_MMAP_SIZE"));
    run_size_ = static_cast<std::size_t>(mmap_size);
    void* run = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_.get(), 0);
    if (run == MAP_FAILED)
        return unexpected(err("mmap kvm_run"));
    run_ = static_cast<kvm_run*>(run);

    // CPUID: what KVM supports, minus what cannot be replayed.
    constexpr int kEntries = 100;
    std::vector<std::uint8_t> buf(sizeof(CpuidHeader) + kEntries * sizeof(kvm_cpuid_entry2));
    auto* cpuid = reinterpret_cast<CpuidHeader*>(buf.data());
    auto* entries = reinterpret_cast<kvm_cpuid_entry2*>(buf.data() + sizeof(CpuidHeader));
    cpuid->nent = kEntries;
    if (::ioctl(kvm_.get(), kGetSupportedCpuid, cpuid) != 0)
        return unexpected(err("KVM_GET_SUPPORTED_CPUID"));
    for (std::uint32_t i = 0; i < cpuid->nent; ++i) {
        auto& e = entries[i];
        if (e.function == 1)
            e.ecx &= ~(1u << 30); // RDRAND
        if (e.function == 7 && e.index == 0)
            e.ebx &= ~(1u << 18); // RDSEED
    }
    if (::ioctl(vcpu_.get(), kSetCpuid2, cpuid) != 0)
        return unexpected(err("KVM_SET_CPUID2"));

    // The PVH entry state: 32-bit flat protected mode, paging off, EBX -> hvm_start_info.
    kvm_sregs sregs{};
    if (::ioctl(vcpu_.get(), KVM_GET_SREGS, &sregs) != 0)
        return unexpected(err("KVM_GET_SREGS"));
    flat_segment(sregs.cs, 0x08, 0xb);
    flat_segment(sregs.ds, 0x10, 0x3);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.tr = {};
    sregs.tr.limit = 0x67;
    sregs.tr.type = 0xb;
    sregs.tr.present = 1;
    sregs.cr0 = 0x11; // PE | ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    if (::ioctl(vcpu_.get(), KVM_SET_SREGS, &sregs) != 0)
        return unexpected(err("KVM_SET_SREGS"));
    kvm_regs regs{};
    regs.rip = image.entry;
    regs.rflags = 0x2;
    regs.rbx = kStartInfoGpa;
    if (::ioctl(vcpu_.get(), KVM_SET_REGS, &regs) != 0)
        return unexpected(err("KVM_SET_REGS"));
    return true;
}

Expected<engine::Exit, std::string> KvmBackend::run()
{
    for (;;) {
        io_pending_ = false;
        if (::ioctl(vcpu_.get(), KVM_RUN, 0) != 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue; // a host signal: asynchronous, not the guest's doing
            return unexpected(err("KVM_RUN"));
        }
        engine::Exit e;
        switch (run_->exit_reason) {
        case KVM_EXIT_IO:
            if (run_->io.count != 1)
                return unexpected(std::string("KVM: string I/O is not supported by the device models"));
            e.kind = run_->io.direction == KVM_EXIT_IO_IN ? engine::Exit::Kind::pio_read : engine::Exit::Kind::pio_write;
            e.address = run_->io.port;
            e.size = run_->io.size;
            if (e.kind == engine::Exit::Kind::pio_write)
                std::memcpy(&e.value, reinterpret_cast<std::uint8_t*>(run_) + run_->io.data_offset, e.size);
            return e;
        case KVM_EXIT_MMIO:
            e.kind = run_->mmio.is_write ? engine::Exit::Kind::mmio_write : engine::Exit::Kind::mmio_read;
            e.address = run_->mmio.phys_addr;
            e.size = static_cast<std::uint8_t>(run_->mmio.len);
            if (run_->mmio.is_write)
                std::memcpy(&e.value, run_->mmio.data, e.size);
            return e;
        case KVM_EXIT_HLT:
            e.kind = engine::Exit::Kind::hlt;
            return e;
        case KVM_EXIT_INTR:
        case KVM_EXIT_IRQ_WINDOW_OPEN:
            continue;
        case KVM_EXIT_SHUTDOWN:
            return unexpected(std::string("guest shut down (triple fault)"));
        case KVM_EXIT_FAIL_ENTRY:
            return unexpected("KVM: VM entry failed, hardware reason " +
                              std::to_string(run_->fail_entry.hardware_entry_failure_reason));
        case KVM_EXIT_INTERNAL_ERROR:
            return unexpected("KVM: internal error, suberror " + std::to_string(run_->internal.suberror));
        default:
            return unexpected("KVM: unexpected exit reason " + std::to_string(run_->exit_reason));
        }
    }
}

void KvmBackend::complete_read(std::uint64_t value)
{
    if (run_->exit_reason == KVM_EXIT_IO)
        std::memcpy(reinterpret_cast<std::uint8_t*>(run_) + run_->io.data_offset, &value, run_->io.size);
    else if (run_->exit_reason == KVM_EXIT_MMIO)
        std::memcpy(run_->mmio.data, &value, run_->mmio.len);
    io_pending_ = true;
}

bool KvmBackend::can_inject()
{
    return run_->ready_for_interrupt_injection && run_->if_flag;
}

void KvmBackend::inject(std::uint8_t vector)
{
    kvm_interrupt irq{vector};
    (void)::ioctl(vcpu_.get(), KVM_INTERRUPT, &irq);
}

bool KvmBackend::read_guest(std::uint64_t gpa, std::span<std::uint8_t> out)
{
    if (gpa > memory_bytes_ || out.size() > memory_bytes_ - gpa)
        return false;
    if (!out.empty())
        std::memcpy(out.data(), memory_ + gpa, out.size());
    return true;
}

bool KvmBackend::write_guest(std::uint64_t gpa, std::span<const std::uint8_t> data)
{
    if (gpa > memory_bytes_ || data.size() > memory_bytes_ - gpa)
        return false;
    if (!data.empty())
        std::memcpy(memory_ + gpa, data.data(), data.size());
    mark_host_dirty(gpa, data.size());
    return true;
}

void KvmBackend::mark_host_dirty(std::uint64_t gpa, std::uint64_t bytes)
{
    if (bytes == 0)
        return;
    for (std::uint64_t page = gpa / kPageBytes; page <= (gpa + bytes - 1) / kPageBytes; ++page)
        host_dirty_[page / 64] |= std::uint64_t{1} << (page % 64);
}

std::vector<std::uint64_t> KvmBackend::dirty_pages()
{
    std::vector<std::uint64_t> bitmap(host_dirty_.size(), 0);
    kvm_dirty_log log{};
    log.slot = 0;
    log.dirty_bitmap = bitmap.data();
    (void)::ioctl(vm_.get(), KVM_GET_DIRTY_LOG, &log); // fetches and clears the guest's writes
    std::vector<std::uint64_t> pages;
    for (std::size_t w = 0; w < bitmap.size(); ++w) {
        std::uint64_t bits = bitmap[w] | host_dirty_[w];
        host_dirty_[w] = 0;
        while (bits) {
            pages.push_back(w * 64 + static_cast<std::uint64_t>(__builtin_ctzll(bits)));
            bits &= bits - 1;
        }
    }
    return pages;
}

void KvmBackend::finish_pending_io()
{
    // KVM writes a completed read into the guest's registers only on the next KVM_RUN; run it
    // with immediate_exit so the state we read is the one the guest will continue from.
    if (!io_pending_)
        return;
    run_->immediate_exit = 1;
    (void)::ioctl(vcpu_.get(), KVM_RUN, 0);
    run_->immediate_exit = 0;
    io_pending_ = false;
}

logformat::Sha256 KvmBackend::digest()
{
    finish_pending_io();
    kvm_regs regs{};
    kvm_sregs sregs{};
    (void)::ioctl(vcpu_.get(), KVM_GET_REGS, &regs);
    (void)::ioctl(vcpu_.get(), KVM_GET_SREGS, &sregs);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    EVP_DigestUpdate(ctx, &regs, sizeof regs);
    const std::uint64_t control[] = {sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer, sregs.cs.selector, sregs.ss.selector};
    EVP_DigestUpdate(ctx, control, sizeof control);
    EVP_DigestUpdate(ctx, memory_, memory_bytes_);
    logformat::Sha256 out{};
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, out.data(), &len);
    EVP_MD_CTX_free(ctx);
    return out;
}

namespace {

// The vCPU state a checkpoint carries, in a fixed layout (same build on both ends).
struct VcpuState {
    kvm_regs regs;
    kvm_sregs sregs;
    kvm_fpu fpu;
    kvm_vcpu_events events;
    kvm_debugregs debugregs;
    kvm_mp_state mp_state;
};
constexpr std::uint32_t kStateMagic = 0x58534b31; // "XSK1"

} // namespace

std::vector<std::uint8_t> KvmBackend::save_cpu_state()
{
    finish_pending_io();
    VcpuState v{};
    (void)::ioctl(vcpu_.get(), KVM_GET_REGS, &v.regs);
    (void)::ioctl(vcpu_.get(), KVM_GET_SREGS, &v.sregs);
    (void)::ioctl(vcpu_.get(), KVM_GET_FPU, &v.fpu);
    (void)::ioctl(vcpu_.get(), KVM_GET_VCPU_EVENTS, &v.events);
    (void)::ioctl(vcpu_.get(), KVM_GET_DEBUGREGS, &v.debugregs);
    (void)::ioctl(vcpu_.get(), KVM_GET_MP_STATE, &v.mp_state);
    std::vector<std::uint8_t> blob(sizeof kStateMagic + sizeof v);
    std::memcpy(blob.data(), &kStateMagic, sizeof kStateMagic);
    std::memcpy(blob.data() + sizeof kStateMagic, &v, sizeof v);
    return blob;
}

Expected<bool, std::string> KvmBackend::restore_cpu_state(std::span<const std::uint8_t> blob)
{
    std::uint32_t magic = 0;
    if (blob.size() != sizeof magic + sizeof(VcpuState))
        return unexpected(std::string("KVM vCPU state: wrong size"));
    std::memcpy(&magic, blob.data(), sizeof magic);
    if (magic != kStateMagic)
        return unexpected(std::string("KVM vCPU state: not a state of this backend"));
    VcpuState v{};
    std::memcpy(&v, blob.data() + sizeof magic, sizeof v);
    // Special registers first: they set the mode the others are interpreted in.
    if (::ioctl(vcpu_.get(), KVM_SET_SREGS, &v.sregs) != 0 || ::ioctl(vcpu_.get(), KVM_SET_REGS, &v.regs) != 0 ||
        ::ioctl(vcpu_.get(), KVM_SET_FPU, &v.fpu) != 0 || ::ioctl(vcpu_.get(), KVM_SET_VCPU_EVENTS, &v.events) != 0 ||
        ::ioctl(vcpu_.get(), KVM_SET_DEBUGREGS, &v.debugregs) != 0 || ::ioctl(vcpu_.get(), KVM_SET_MP_STATE, &v.mp_state) != 0)
        return unexpected(err("restoring vCPU state"));
    io_pending_ = false;
    return true;
}

std::vector<std::uint8_t> KvmBackend::save_state()
{
    std::vector<std::uint8_t> blob = save_cpu_state();
    const std::size_t at = blob.size();
    blob.resize(at + sizeof memory_bytes_ + memory_bytes_);
    std::memcpy(blob.data() + at, &memory_bytes_, sizeof memory_bytes_);
    std::memcpy(blob.data() + at + sizeof memory_bytes_, memory_, memory_bytes_);
    return blob;
}

Expected<bool, std::string> KvmBackend::restore_state(std::span<const std::uint8_t> blob)
{
    constexpr std::size_t cpu = sizeof kStateMagic + sizeof(VcpuState);
    std::uint64_t mem = 0;
    if (blob.size() < cpu + sizeof mem)
        return unexpected(std::string("KVM state: truncated"));
    std::memcpy(&mem, blob.data() + cpu, sizeof mem);
    if (mem != memory_bytes_ || blob.size() != cpu + sizeof mem + mem)
        return unexpected(std::string("KVM state: not a checkpoint of a VM this size"));
    auto restored = restore_cpu_state(blob.first(cpu));
    if (!restored)
        return restored;
    std::memcpy(memory_, blob.data() + cpu + sizeof mem, memory_bytes_);
    mark_host_dirty(0, memory_bytes_);
    return true;
}

} // namespace xenft::backends
