#include "xenft/engine/linux_image.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>

namespace xenft::engine {

namespace {

// Offsets in the bzImage's first sector and in the zero page (boot_params), which share the
// setup header's layout.
constexpr std::size_t kSetupSects = 0x1f1, kBootFlag = 0x1fe, kJump = 0x200, kHeaderMagic = 0x202,
                      kVersion = 0x206, kTypeOfLoader = 0x210, kLoadFlags = 0x211, kRamdiskImage = 0x218,
                      kRamdiskSize = 0x21c, kCmdLinePtr = 0x228, kInitrdAddrMax = 0x22c,
                      kKernelAlignment = 0x230, kRelocatable = 0x234, kXLoadFlags = 0x236,
                      kCmdlineSize = 0x238, kPrefAddress = 0x258, kInitSize = 0x260, kHeaderEnd = 0x264;
constexpr std::size_t kE820Entries = 0x1e8, kE820Table = 0x2d0, kAcpiRsdpAddr = 0x070;
constexpr std::uint32_t kHdrS = 0x53726448; // "HdrS"
constexpr std::uint16_t kMinProtocol = 0x020c; // xloadflags, the 64-bit entry's flag
constexpr std::uint16_t kXlfKernel64 = 1;
constexpr std::uint8_t kLoadedHigh = 1;

// Where xenft puts the pieces below 1 MiB (conventional memory, free without firmware).
constexpr std::uint64_t kGdtGpa = 0x500, kZeroPageGpa = 0x7000, kStackTop = 0x7000, kPml4Gpa = 0x9000,
                        kCmdlineGpa = 0x20000, kCmdlineMax = 0x10000;
constexpr std::uint64_t kPage = 4096, kMiB = 1 << 20, kGiB = 1ull << 30;
constexpr std::uint64_t kMinMemory = 64 * kMiB, kMaxMemory = 3 * kGiB; // below the PCI hole
constexpr std::uint64_t kIdentityGiB = 4; // page tables map the first 4 GiB

template <typename T> T get(std::span<const std::uint8_t> b, std::size_t at)
{
    T v{};
    std::memcpy(&v, b.data() + at, sizeof v); // x86: little-endian, as the file
    return v;
}

template <typename T> void put(std::vector<std::uint8_t>& b, std::size_t at, T v)
{
    std::memcpy(b.data() + at, &v, sizeof v);
}

std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }
std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v / a * a; }

std::string hex(std::uint64_t v)
{
    char b[24];
    std::snprintf(b, sizeof b, "%#llx", static_cast<unsigned long long>(v));
    return b;
}

// The e820 map the kernel gets: RAM below the EBDA, the legacy hole (video memory, option
// ROMs, BIOS) reserved, RAM from 1 MiB to the end.
struct E820 {
    std::uint64_t addr, size;
    std::uint32_t type; // 1 RAM, 2 reserved
};

// Flat 64-bit code and data descriptors at __BOOT_CS and __BOOT_DS.
std::vector<std::uint8_t> boot_gdt()
{
    const std::uint64_t entries[] = {0, 0, 0x00af9b000000ffffull, 0x00cf93000000ffffull};
    std::vector<std::uint8_t> b(sizeof entries);
    std::memcpy(b.data(), entries, sizeof entries);
    return b;
}

// PML4, one PDPT and four page directories of 2 MiB pages: the first 4 GiB identity-mapped.
std::vector<std::uint8_t> identity_page_tables()
{
    std::vector<std::uint8_t> b((2 + kIdentityGiB) * kPage, 0);
    constexpr std::uint64_t kPresentWritable = 3, kLarge = 0x80;
    put<std::uint64_t>(b, 0, (kPml4Gpa + kPage) | kPresentWritable);
    for (std::uint64_t g = 0; g < kIdentityGiB; ++g) {
        put<std::uint64_t>(b, kPage + g * 8, (kPml4Gpa + (2 + g) * kPage) | kPresentWritable);
        for (std::uint64_t m = 0; m < 512; ++m)
            put<std::uint64_t>(b, (2 + g) * kPage + m * 8, ((g * 512 + m) * 2 * kMiB) | kPresentWritable | kLarge);
    }
    return b;
}

} // namespace

Expected<LinuxImage, std::string> build_linux_image(std::span<const std::uint8_t> kernel,
                                                    std::span<const std::uint8_t> initrd,
                                                    const LinuxBootSpec& spec)
{
    if (spec.memory_bytes < kMinMemory || spec.memory_bytes > kMaxMemory || spec.memory_bytes % kPage)
        return unexpected("the guest's memory must be whole pages from " + std::to_string(kMinMemory >> 20) +
                          " MiB to " + std::to_string(kMaxMemory >> 20) + " MiB");
    if (kernel.size() < kHeaderEnd || get<std::uint16_t>(kernel, kBootFlag) != 0xaa55 ||
        get<std::uint32_t>(kernel, kHeaderMagic) != kHdrS)
        return unexpected(std::string("not a Linux bzImage (no boot sector with a HdrS setup header)"));
    LinuxImage image;
    image.protocol = get<std::uint16_t>(kernel, kVersion);
    if (image.protocol < kMinProtocol)
        return unexpected("boot protocol " + hex(image.protocol) + " is older than 2.12 (no 64-bit entry to use)");
    if (!(get<std::uint16_t>(kernel, kXLoadFlags) & kXlfKernel64))
        return unexpected(std::string("the kernel has no 64-bit entry point (xloadflags)"));
    const std::size_t setup_sects = kernel[kSetupSects] ? kernel[kSetupSects] : 4;
    const std::size_t kernel_offset = (setup_sects + 1) * 512;
    if (kernel_offset >= kernel.size())
        return unexpected("the setup code (" + std::to_string(setup_sects) + " sectors) is past the file's end");
    const std::size_t header_end = kJump + 2 + kernel[kJump + 1];
    if (header_end < kHeaderEnd || header_end > kernel_offset)
        return unexpected(std::string("the setup header's length is out of range"));

    // The kernel where it prefers to run (a relocatable one may go elsewhere, but needs not),
    // with room for its decompression (init_size) below the initrd.
    const std::uint64_t alignment = get<std::uint32_t>(kernel, kKernelAlignment);
    const std::uint64_t init_size = get<std::uint32_t>(kernel, kInitSize);
    std::uint64_t kernel_gpa = get<std::uint64_t>(kernel, kPrefAddress);
    if (kernel_gpa < kMiB)
        kernel_gpa = 16 * kMiB;
    if (kernel[kRelocatable] && alignment && (alignment & (alignment - 1)) == 0)
        kernel_gpa = align_up(kernel_gpa, alignment);
    const std::uint64_t kernel_bytes = kernel.size() - kernel_offset;
    const std::uint64_t kernel_end = kernel_gpa + std::max<std::uint64_t>(init_size, kernel_bytes);
    if (kernel_end > spec.memory_bytes)
        return unexpected("the kernel needs memory up to " + hex(kernel_end) + ", the guest has " +
                          std::to_string(spec.memory_bytes >> 20) + " MiB");

    // The initrd at the top of what the kernel can reach.
    const std::uint64_t initrd_limit = std::min<std::uint64_t>(spec.memory_bytes,
                                                               std::uint64_t{get<std::uint32_t>(kernel, kInitrdAddrMax)} + 1);
    std::uint64_t initrd_gpa = 0;
    if (!initrd.empty()) {
        if (initrd.size() > initrd_limit)
            return unexpected("the initrd (" + std::to_string(initrd.size()) + " bytes) does not fit the guest's memory");
        initrd_gpa = align_down(initrd_limit - initrd.size(), kPage);
        if (initrd_gpa < kernel_end)
            return unexpected("the initrd (" + std::to_string(initrd.size() >> 20) + " MiB) and the kernel (" +
                              std::to_string((kernel_end - kernel_gpa) >> 20) + " MiB decompressed) need more than the guest's " +
                              std::to_string(spec.memory_bytes >> 20) + " MiB");
    }

    const std::uint64_t cmdline_size = get<std::uint32_t>(kernel, kCmdlineSize);
    if (spec.cmdline.size() + 1 > std::min(cmdline_size ? cmdline_size : 256, kCmdlineMax))
        return unexpected("the command line is longer than the kernel's " + std::to_string(cmdline_size) + " bytes");
    if (spec.cmdline.find('\0') != std::string::npos)
        return unexpected(std::string("the command line has a NUL byte"));

    // The zero page: the file's setup header, then what the loader fills in.
    std::vector<std::uint8_t> zero_page(kPage, 0);
    std::copy(kernel.begin() + kSetupSects, kernel.begin() + static_cast<std::ptrdiff_t>(header_end),
              zero_page.begin() + kSetupSects);
    zero_page[kTypeOfLoader] = 0xff; // a loader with no assigned id
    zero_page[kLoadFlags] = static_cast<std::uint8_t>(zero_page[kLoadFlags] | kLoadedHigh);
    put<std::uint32_t>(zero_page, kCmdLinePtr, static_cast<std::uint32_t>(kCmdlineGpa));
    put<std::uint32_t>(zero_page, kRamdiskImage, static_cast<std::uint32_t>(initrd_gpa));
    put<std::uint32_t>(zero_page, kRamdiskSize, static_cast<std::uint32_t>(initrd.size()));
    const E820 map[] = {{0, 0x9fc00, 1}, {0x9fc00, 0x100000 - 0x9fc00, 2}, {kMiB, spec.memory_bytes - kMiB, 1}};
    zero_page[kE820Entries] = static_cast<std::uint8_t>(std::size(map));
    for (std::size_t i = 0; i < std::size(map); ++i) {
        put<std::uint64_t>(zero_page, kE820Table + i * 20, map[i].addr);
        put<std::uint64_t>(zero_page, kE820Table + i * 20 + 8, map[i].size);
        put<std::uint32_t>(zero_page, kE820Table + i * 20 + 16, map[i].type);
    }

    std::optional<AcpiTables> acpi;
    if (spec.acpi) {
        acpi = build_acpi_tables(*spec.acpi, kAcpiTablesGpa);
        if (acpi->bytes.size() > kMiB - kAcpiTablesGpa)
            return unexpected("the ACPI tables (" + std::to_string(acpi->bytes.size()) + " bytes, " +
                              std::to_string(spec.acpi->virtio.size()) + " devices) do not fit the BIOS area");
        put<std::uint64_t>(zero_page, kAcpiRsdpAddr, acpi->rsdp_gpa);
    }

    std::vector<std::uint8_t> cmdline(spec.cmdline.begin(), spec.cmdline.end());
    cmdline.push_back(0);
    const auto gdt = boot_gdt();
    image.segments.push_back({kGdtGpa, gdt});
    image.segments.push_back({kZeroPageGpa, std::move(zero_page)});
    image.segments.push_back({kPml4Gpa, identity_page_tables()});
    image.segments.push_back({kCmdlineGpa, std::move(cmdline)});
    if (acpi) // in the reserved BIOS area of the e820 map
        image.segments.push_back({acpi->gpa, std::move(acpi->bytes)});
    image.segments.push_back({kernel_gpa, std::vector<std::uint8_t>(kernel.begin() + static_cast<std::ptrdiff_t>(kernel_offset), kernel.end())});
    if (!initrd.empty())
        image.segments.push_back({initrd_gpa, std::vector<std::uint8_t>(initrd.begin(), initrd.end())});

    image.entry.rip = kernel_gpa + 0x200; // startup_64
    image.entry.rsi = kZeroPageGpa;
    image.entry.rsp = kStackTop;
    image.entry.cr3 = kPml4Gpa;
    image.entry.gdt_base = kGdtGpa;
    image.entry.gdt_limit = static_cast<std::uint16_t>(gdt.size() - 1);
    image.kernel_gpa = kernel_gpa;
    image.initrd_gpa = initrd_gpa;
    image.initrd_bytes = initrd.size();
    return image;
}

namespace {

Expected<std::vector<std::uint8_t>, std::string> read_file(const std::string& path, const char* what)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return unexpected(std::string("cannot open the ") + what + " " + path);
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad())
        return unexpected(std::string("cannot read the ") + what + " " + path);
    return bytes;
}

} // namespace

Expected<LinuxImage, std::string> load_linux_image(const std::string& kernel_path, const std::string& initrd_path,
                                                   const LinuxBootSpec& spec)
{
    auto kernel = read_file(kernel_path, "kernel");
    if (!kernel)
        return unexpected(kernel.error());
    std::vector<std::uint8_t> initrd;
    if (!initrd_path.empty()) {
        auto r = read_file(initrd_path, "initrd");
        if (!r)
            return unexpected(r.error());
        initrd = std::move(r).value();
    }
    auto image = build_linux_image(*kernel, initrd, spec);
    if (!image)
        return unexpected(kernel_path + ": " + image.error());
    return image;
}

} // namespace xenft::engine
