// Tests of the plain PC's ACPI tables (xenft/engine/acpi_tables.hpp): the root pointer and every
// table sum to zero and point where they should, and ACPICA's own disassembler (iasl, from
// acpica-tools) reads them back as the platform xenft means: the IO-APIC, ISA IRQ 0 on GSI 2,
// Xen's PM and HPET blocks, and each virtio-mmio device's window and edge-triggered line.
#define BOOST_TEST_MODULE acpi_tables
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "xenft/engine/acpi_tables.hpp"

using namespace xenft::engine;

namespace {

constexpr std::uint64_t kBase = 0xe0000;

template <typename T> T get(const std::vector<std::uint8_t>& b, std::uint64_t at)
{
    T v{};
    std::memcpy(&v, b.data() + at, sizeof v);
    return v;
}

unsigned sum(const std::vector<std::uint8_t>& b, std::uint64_t at, std::uint64_t n)
{
    unsigned s = 0;
    for (std::uint64_t i = 0; i < n; ++i)
        s += b[at + i];
    return s & 0xff;
}

const AcpiPlatform kPlatform{{{0xfeb01000, 0x200, 5}, {0xfeb02000, 0x200, 11}}};

// Every table the XSDT names, and the DSDT, by signature: their offsets in the blob.
std::map<std::string, std::uint64_t> tables(const AcpiTables& t)
{
    std::map<std::string, std::uint64_t> out;
    const std::uint64_t xsdt = get<std::uint64_t>(t.bytes, 24) - t.gpa;
    const std::uint32_t length = get<std::uint32_t>(t.bytes, xsdt + 4);
    for (std::uint64_t e = xsdt + 36; e < xsdt + length; e += 8) {
        const std::uint64_t at = get<std::uint64_t>(t.bytes, e) - t.gpa;
        out[std::string(reinterpret_cast<const char*>(t.bytes.data() + at), 4)] = at;
    }
    out["XSDT"] = xsdt;
    out["RSDT"] = get<std::uint32_t>(t.bytes, 16) - t.gpa;
    out["DSDT"] = get<std::uint64_t>(t.bytes, out.at("FACP") + 140) - t.gpa;
    out["FACS"] = get<std::uint64_t>(t.bytes, out.at("FACP") + 132) - t.gpa;
    return out;
}

std::string run(const std::string& command)
{
    std::string out;
    if (FILE* p = ::popen(command.c_str(), "r")) {
        char buf[4096];
        while (std::size_t n = std::fread(buf, 1, sizeof buf, p))
            out.append(buf, n);
        ::pclose(p);
    }
    return out;
}

} // namespace

BOOST_AUTO_TEST_CASE(the_root_pointer_and_every_table_sum_to_zero_and_point_inside)
{
    const AcpiTables t = build_acpi_tables(kPlatform, kBase);
    BOOST_TEST(t.gpa == kBase);
    BOOST_TEST(t.rsdp_gpa == kBase);
    BOOST_TEST(t.bytes.size() < 0x20000u); // the BIOS area, 0xe0000-0xfffff
    BOOST_TEST(std::string(reinterpret_cast<const char*>(t.bytes.data()), 8) == "RSD PTR ");
    BOOST_TEST(sum(t.bytes, 0, 20) == 0u);
    BOOST_TEST(sum(t.bytes, 0, 36) == 0u);
    BOOST_TEST(t.bytes[15] == 2u); // ACPI 2.0+: the XSDT is used

    const auto found = tables(t);
    for (const char* sig : {"FACP", "APIC", "HPET", "XSDT", "RSDT", "DSDT", "FACS"}) {
        BOOST_TEST_CONTEXT(sig)
        {
            BOOST_REQUIRE(found.count(sig) == 1u);
            const std::uint64_t at = found.at(sig);
            BOOST_TEST(std::string(reinterpret_cast<const char*>(t.bytes.data() + at), 4) == sig);
            const std::uint32_t length = get<std::uint32_t>(t.bytes, at + 4);
            BOOST_REQUIRE(at + length <= t.bytes.size());
            if (std::string(sig) != "FACS")
                BOOST_TEST(sum(t.bytes, at, length) == 0u);
        }
    }
    BOOST_TEST(found.at("FACS") % 64 == 0u);
    // The FADT's 32-bit pointers agree with its 64-bit ones (ACPICA warns otherwise).
    BOOST_TEST(get<std::uint32_t>(t.bytes, found.at("FACP") + 40) == get<std::uint64_t>(t.bytes, found.at("FACP") + 140));
    BOOST_TEST(get<std::uint16_t>(t.bytes, found.at("FACP") + 46) == kSciIrq);
    BOOST_TEST(get<std::uint32_t>(t.bytes, found.at("FACP") + 76) == kPmTimerBlock);
}

BOOST_AUTO_TEST_CASE(the_dsdt_names_each_virtio_device_once_and_nothing_without_devices)
{
    const AcpiTables t = build_acpi_tables(kPlatform, kBase);
    const std::string all(t.bytes.begin(), t.bytes.end());
    std::size_t count = 0;
    for (std::size_t at = all.find("LNRO0005"); at != std::string::npos; at = all.find("LNRO0005", at + 1))
        ++count;
    BOOST_TEST(count == 2u);

    const AcpiTables none = build_acpi_tables({}, kBase);
    BOOST_TEST(std::string(none.bytes.begin(), none.bytes.end()).find("LNRO0005") == std::string::npos);
    BOOST_TEST(sum(none.bytes, 0, 36) == 0u);
    // Many devices: the AML's package lengths grow past one byte and must still parse (below).
    AcpiPlatform many;
    for (std::uint8_t i = 0; i < 40; ++i)
        many.virtio.push_back({0xfeb01000 + 0x1000ull * i, 0x200, 5});
    const AcpiTables big = build_acpi_tables(many, kBase);
    const auto found = tables(big);
    BOOST_TEST(sum(big.bytes, found.at("DSDT"), get<std::uint32_t>(big.bytes, found.at("DSDT") + 4)) == 0u);
}

// ACPICA reads the tables back: every table disassembles, and says what xenft means.
BOOST_AUTO_TEST_CASE(acpica_disassembles_them_as_the_platform_xenft_means)
{
    BOOST_REQUIRE_MESSAGE(run("command -v iasl") != "", "iasl is missing: apt-get install acpica-tools");
    char dir_template[] = "/tmp/xenft-acpi-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(dir_template) != nullptr);
    const std::filesystem::path dir = dir_template;

    AcpiPlatform many = kPlatform;
    for (std::uint8_t i = 0; i < 40; ++i)
        many.virtio.push_back({0xfec10000 + 0x1000ull * i, 0x200, 10});
    const AcpiTables t = build_acpi_tables(many, kBase);
    std::map<std::string, std::string> text;
    for (const auto& [sig, at] : tables(t)) {
        const std::uint32_t length = sig == "FACS" ? 64 : get<std::uint32_t>(t.bytes, at + 4);
        const auto file = dir / (sig + ".dat");
        std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(t.bytes.data() + at), length);
        const std::string out = run("cd " + dir.string() + " && iasl -d " + file.filename().string() + " 2>&1");
        std::ifstream dsl(dir / (sig + ".dsl"));
        std::stringstream s;
        s << dsl.rdbuf();
        text[sig] = s.str();
        BOOST_TEST_CONTEXT(sig << ": " << out)
        {
            BOOST_TEST(!text[sig].empty());
            BOOST_TEST(out.find("rror") == std::string::npos);
            BOOST_TEST(text[sig].find("Invalid") == std::string::npos);
        }
    }
    std::filesystem::remove_all(dir);

    BOOST_TEST(text["APIC"].find("Address : FEC00000") != std::string::npos);
    BOOST_TEST(text["APIC"].find("Interrupt : 00000002") != std::string::npos); // ISA IRQ 0 on GSI 2
    BOOST_TEST(text["HPET"].find("Address : 00000000FED00000") != std::string::npos);
    // Xen's PM blocks on a domain hvmloader never set up (ACPI_PM1A_EVT_BLK_ADDRESS_V0).
    BOOST_TEST(text["FACP"].find("PM1A Event Block Address : 00001F40") != std::string::npos);
    BOOST_TEST(text["FACP"].find("PM Timer Block Address : 00001F48") != std::string::npos);
    BOOST_TEST(text["FACP"].find("8042 Present on ports 60/64 (V2) : 0") != std::string::npos);
    const std::string& dsdt = text["DSDT"];
    BOOST_TEST(dsdt.find("Device (VR00)") != std::string::npos);
    BOOST_TEST(dsdt.find("Device (VR29)") != std::string::npos); // the 42nd device, uid 0x29
    BOOST_TEST(dsdt.find("Name (_HID, \"LNRO0005\")") != std::string::npos);
    BOOST_TEST(dsdt.find("0xFEB01000,         // Address Base") != std::string::npos);
    BOOST_TEST(dsdt.find("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )") != std::string::npos);
    BOOST_TEST(dsdt.find("0x0000000B,") != std::string::npos); // IRQ 11
    // The soft-off state a kernel's ACPI poweroff needs, with the sleep type xenft serves.
    BOOST_TEST(dsdt.find("Name (\\_S5, Package (0x04)") != std::string::npos);
    BOOST_TEST(dsdt.find("{\n        0x07, \n        0x07, \n        Zero, \n        Zero\n    })") != std::string::npos);
}
