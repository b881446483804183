// Tests of the direct Linux boot (xenft/engine/linux_image.hpp): where a bzImage's pieces go,
// what the zero page, the page tables and the GDT say, the refusals of files and sizes that do
// not fit, and Debian's own kernel (XENFT_LINUX_KERNEL, or /boot/vmlinuz-*) laid out for 512 MiB.
#define BOOST_TEST_MODULE linux_image
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "xenft/engine/linux_image.hpp"

using namespace xenft::engine;
namespace utf = boost::unit_test;

namespace {

template <typename T> void put(std::vector<std::uint8_t>& b, std::size_t at, T v) { std::memcpy(b.data() + at, &v, sizeof v); }
template <typename T> T get(const std::vector<std::uint8_t>& b, std::size_t at)
{
    T v{};
    std::memcpy(&v, b.data() + at, sizeof v);
    return v;
}

// A bzImage as the kernel's build lays one out: 4 setup sectors after the boot sector, then
// the compressed kernel (here: a pattern).
std::vector<std::uint8_t> fake_bzimage(std::size_t kernel_bytes = 1 << 20)
{
    std::vector<std::uint8_t> b(5 * 512 + kernel_bytes, 0);
    b[0x1f1] = 4;
    put<std::uint16_t>(b, 0x1fe, 0xaa55);
    b[0x200] = 0xeb;
    b[0x201] = 0x66; // the setup header ends at 0x268
    put<std::uint32_t>(b, 0x202, 0x53726448);
    put<std::uint16_t>(b, 0x206, 0x020f);
    put<std::uint32_t>(b, 0x22c, 0x7fffffff);
    put<std::uint32_t>(b, 0x230, 0x200000);
    b[0x234] = 1;
    put<std::uint16_t>(b, 0x236, 0x7f);
    put<std::uint32_t>(b, 0x238, 2047);
    put<std::uint64_t>(b, 0x258, 0x1000000);
    put<std::uint32_t>(b, 0x260, 0x2000000);
    for (std::size_t i = 5 * 512; i < b.size(); ++i)
        b[i] = static_cast<std::uint8_t>(i * 7);
    return b;
}

// The error, for a failed check's message (the message is built whatever the outcome).
std::string why(const xenft::Expected<LinuxImage, std::string>& r) { return r ? std::string() : r.error(); }

const LinuxSegment& segment_at(const LinuxImage& image, std::uint64_t gpa)
{
    for (const auto& s : image.segments)
        if (s.gpa == gpa)
            return s;
    BOOST_FAIL("no segment at " << gpa);
    return image.segments.front();
}

std::string error_of(const std::vector<std::uint8_t>& kernel, std::uint64_t memory = 512u << 20,
                     std::size_t initrd_bytes = 0, std::string cmdline = "console=ttyS0")
{
    const std::vector<std::uint8_t> initrd(initrd_bytes, 1);
    auto r = build_linux_image(kernel, initrd, {memory, std::move(cmdline), std::nullopt});
    return r ? std::string() : r.error();
}

} // namespace

BOOST_AUTO_TEST_CASE(the_pieces_go_where_the_boot_protocol_says)
{
    const auto kernel = fake_bzimage();
    const std::vector<std::uint8_t> initrd(3u << 20, 0x5a);
    auto image = build_linux_image(kernel, initrd, {512u << 20, "console=ttyS0 nopv", std::nullopt});
    BOOST_REQUIRE_MESSAGE(image, why(image));
    BOOST_TEST(image->protocol == 0x020f);
    BOOST_TEST(image->kernel_gpa == 0x1000000u);
    BOOST_TEST(image->entry.rip == 0x1000200u); // startup_64
    const auto& k = segment_at(*image, 0x1000000);
    BOOST_TEST(k.bytes.size() == kernel.size() - 5 * 512);
    BOOST_TEST(std::equal(k.bytes.begin(), k.bytes.end(), kernel.begin() + 5 * 512));
    // The initrd at the top of memory, page-aligned, above the kernel's decompression room.
    BOOST_TEST(image->initrd_gpa == (512u << 20) - (3u << 20));
    BOOST_TEST(image->initrd_gpa >= 0x1000000u + 0x2000000u);
    BOOST_TEST(segment_at(*image, image->initrd_gpa).bytes == initrd);
    const auto& cmdline = segment_at(*image, 0x20000).bytes;
    BOOST_TEST(std::string(reinterpret_cast<const char*>(cmdline.data())) == "console=ttyS0 nopv");
    // Nothing overlaps.
    for (std::size_t i = 1; i < image->segments.size(); ++i)
        BOOST_TEST(image->segments[i - 1].gpa + image->segments[i - 1].bytes.size() <= image->segments[i].gpa);
}

BOOST_AUTO_TEST_CASE(the_zero_page_carries_the_header_the_map_and_the_pointers)
{
    const auto kernel = fake_bzimage();
    const std::vector<std::uint8_t> initrd(4096, 1);
    auto image = build_linux_image(kernel, initrd, {256u << 20, "ro", std::nullopt});
    BOOST_REQUIRE_MESSAGE(image, why(image));
    BOOST_TEST(image->entry.rsi == 0x7000u);
    const auto& z = segment_at(*image, 0x7000).bytes;
    BOOST_REQUIRE(z.size() == 4096u);
    BOOST_TEST(get<std::uint32_t>(z, 0x202) == 0x53726448u); // the header, copied
    BOOST_TEST(get<std::uint64_t>(z, 0x258) == 0x1000000u);
    BOOST_TEST(z[0x210] == 0xffu);       // type_of_loader
    BOOST_TEST((z[0x211] & 1) == 1);     // LOADED_HIGH
    BOOST_TEST(get<std::uint32_t>(z, 0x228) == 0x20000u);
    BOOST_TEST(get<std::uint32_t>(z, 0x218) == image->initrd_gpa);
    BOOST_TEST(get<std::uint32_t>(z, 0x21c) == 4096u);
    BOOST_REQUIRE(z[0x1e8] == 3);
    // RAM below 640 KiB, the legacy hole reserved, RAM from 1 MiB to the end.
    BOOST_TEST(get<std::uint64_t>(z, 0x2d0) == 0u);
    BOOST_TEST(get<std::uint32_t>(z, 0x2d0 + 16) == 1u);
    BOOST_TEST(get<std::uint32_t>(z, 0x2d0 + 20 + 16) == 2u);
    BOOST_TEST(get<std::uint64_t>(z, 0x2d0 + 40) == 1u << 20);
    BOOST_TEST(get<std::uint64_t>(z, 0x2d0 + 48) == (256u << 20) - (1u << 20));
    BOOST_TEST(get<std::uint32_t>(z, 0x2d0 + 56) == 1u);
}

BOOST_AUTO_TEST_CASE(acpi_tables_go_in_the_bios_area_and_the_zero_page_points_at_them)
{
    const AcpiPlatform platform{{{0xfeb01000, 0x200, 5}}};
    auto image = build_linux_image(fake_bzimage(), {}, {128u << 20, "", platform});
    BOOST_REQUIRE_MESSAGE(image, why(image));
    const auto& tables = segment_at(*image, kAcpiTablesGpa).bytes;
    BOOST_TEST(tables == build_acpi_tables(platform, kAcpiTablesGpa).bytes);
    BOOST_TEST(kAcpiTablesGpa + tables.size() <= 0x100000u); // inside the reserved legacy hole
    const auto& z = segment_at(*image, 0x7000).bytes;
    BOOST_TEST(get<std::uint64_t>(z, 0x070) == kAcpiTablesGpa); // acpi_rsdp_addr
    // Without a platform: no tables, no pointer.
    auto bare = build_linux_image(fake_bzimage(), {}, {128u << 20, "", std::nullopt});
    BOOST_REQUIRE_MESSAGE(bare, why(bare));
    for (const auto& s : bare->segments)
        BOOST_TEST(s.gpa != kAcpiTablesGpa);
    BOOST_TEST(get<std::uint64_t>(segment_at(*bare, 0x7000).bytes, 0x070) == 0u);
}

BOOST_AUTO_TEST_CASE(page_tables_map_4_gib_identically_and_the_gdt_is_flat_64_bit)
{
    auto image = build_linux_image(fake_bzimage(), {}, {128u << 20, "", std::nullopt});
    BOOST_REQUIRE_MESSAGE(image, why(image));
    const auto& pt = segment_at(*image, image->entry.cr3).bytes;
    // Walk an address through PML4, PDPT and the 2 MiB page directory.
    for (std::uint64_t va : {0ull, 0x1000200ull, 0xfec00000ull, 0xffffffffull}) {
        const std::uint64_t pml4e = get<std::uint64_t>(pt, ((va >> 39) & 511) * 8);
        BOOST_REQUIRE(pml4e & 1);
        const std::uint64_t pdpt = (pml4e & ~0xfffull) - image->entry.cr3;
        const std::uint64_t pdpte = get<std::uint64_t>(pt, pdpt + ((va >> 30) & 511) * 8);
        BOOST_REQUIRE(pdpte & 1);
        const std::uint64_t pd = (pdpte & ~0xfffull) - image->entry.cr3;
        const std::uint64_t pde = get<std::uint64_t>(pt, pd + ((va >> 21) & 511) * 8);
        BOOST_TEST((pde & 0x83) == 0x83u); // present, writable, 2 MiB
        BOOST_TEST((pde & ~0x1fffffull) + (va & 0x1fffff) == va);
    }
    const auto& gdt = segment_at(*image, image->entry.gdt_base).bytes;
    BOOST_TEST(image->entry.gdt_limit + 1u == gdt.size());
    const auto code = get<std::uint64_t>(gdt, LinuxEntry::kCodeSelector);
    BOOST_TEST(((code >> 53) & 1) == 1u); // L: 64-bit code
    BOOST_TEST(((code >> 47) & 1) == 1u); // present
    const auto data = get<std::uint64_t>(gdt, LinuxEntry::kDataSelector);
    BOOST_TEST(((data >> 41) & 1) == 1u); // writable
}

BOOST_AUTO_TEST_CASE(files_and_sizes_that_do_not_fit_are_refused_by_name)
{
    BOOST_TEST(error_of({1, 2, 3}).find("not a Linux bzImage") != std::string::npos);
    auto old = fake_bzimage();
    put<std::uint16_t>(old, 0x206, 0x0206);
    BOOST_TEST(error_of(old).find("older than 2.12") != std::string::npos);
    auto no64 = fake_bzimage();
    put<std::uint16_t>(no64, 0x236, 0);
    BOOST_TEST(error_of(no64).find("no 64-bit entry") != std::string::npos);
    auto truncated = fake_bzimage();
    truncated[0x1f1] = 200;
    truncated.resize(5 * 512 + 100);
    BOOST_TEST(error_of(truncated).find("past the file's end") != std::string::npos);
    BOOST_TEST(error_of(fake_bzimage(), 32u << 20).find("memory must be") != std::string::npos);
    BOOST_TEST(error_of(fake_bzimage(), 64u << 20, 40u << 20).find("need more than") != std::string::npos);
    BOOST_TEST(error_of(fake_bzimage(), 512u << 20, 0, std::string(3000, 'x')).find("longer than") != std::string::npos);
    BOOST_TEST(error_of(fake_bzimage(), 512u << 20, 0, std::string("a\0b", 3)).find("NUL") != std::string::npos);
}

namespace {

// XENFT_LINUX_KERNEL (scripts/test: tests/debian_kernel.sh), else the machine's own.
std::string debian_kernel()
{
    if (const char* k = std::getenv("XENFT_LINUX_KERNEL"); k && *k)
        return k;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/boot", ec))
        if (e.path().filename().string().rfind("vmlinuz-", 0) == 0)
            return e.path().string();
    return {};
}

boost::test_tools::assertion_result have_debian_kernel(utf::test_unit_id)
{
    boost::test_tools::assertion_result r(!debian_kernel().empty());
    r.message() << "no Debian kernel here: XENFT_LINUX_KERNEL is not set and /boot has no vmlinuz-*";
    return r;
}

} // namespace

BOOST_AUTO_TEST_CASE(debians_own_kernel_is_laid_out_for_512_mib, *utf::precondition(have_debian_kernel))
{
    const std::string kernel = debian_kernel();
    // An initrd the size of Debian's (its package has none: initramfs-tools makes it).
    const std::string initrd = "linux_image_test.initrd";
    std::ofstream(initrd, std::ios::binary) << std::string(35u << 20, 'i');
    auto image = load_linux_image(kernel, initrd, {512u << 20, "console=ttyS0 nopv", std::nullopt});
    std::filesystem::remove(initrd);
    BOOST_REQUIRE_MESSAGE(image, why(image));
    BOOST_TEST_MESSAGE(kernel << ": boot protocol " << std::hex << image->protocol << ", kernel at " << image->kernel_gpa
                              << ", initrd " << std::dec << (image->initrd_bytes >> 20) << " MiB at " << std::hex
                              << image->initrd_gpa);
    BOOST_TEST(image->protocol >= 0x020cu);
    BOOST_TEST(image->entry.rip == image->kernel_gpa + 0x200);
    BOOST_TEST(load_linux_image("/nonexistent/vmlinuz", "", {512u << 20, "", std::nullopt}).error().find("cannot open the kernel") == 0u);
}
