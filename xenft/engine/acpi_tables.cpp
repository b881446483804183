#include "xenft/engine/acpi_tables.hpp"

#include <numeric>
#include <string_view>

namespace xenft::engine {

namespace {

using Bytes = std::vector<std::uint8_t>;

void put8(Bytes& b, std::uint64_t v) { b.push_back(static_cast<std::uint8_t>(v)); }
void put16(Bytes& b, std::uint64_t v) { put8(b, v), put8(b, v >> 8); }
void put32(Bytes& b, std::uint64_t v) { put16(b, v), put16(b, v >> 16); }
void put64(Bytes& b, std::uint64_t v) { put32(b, v), put32(b, v >> 32); }
void put_text(Bytes& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }
void set32(Bytes& b, std::size_t at, std::uint64_t v)
{
    for (int i = 0; i < 4; ++i)
        b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
}

std::uint8_t checksum(const Bytes& b, std::size_t from, std::size_t n)
{
    const unsigned sum = std::accumulate(b.begin() + static_cast<std::ptrdiff_t>(from),
                                         b.begin() + static_cast<std::ptrdiff_t>(from + n), 0u);
    return static_cast<std::uint8_t>(0x100 - (sum & 0xff));
}

// The 36-byte header every table but the RSDP and FACS starts with; length and checksum are
// filled in by finish().
Bytes header(std::string_view signature, std::uint8_t revision)
{
    Bytes b;
    put_text(b, signature);
    put32(b, 0); // length
    put8(b, revision);
    put8(b, 0); // checksum
    put_text(b, "XENFT ");
    put_text(b, "XENFTPC ");
    put32(b, 1); // OEM revision
    put_text(b, "XNFT");
    put32(b, 1); // creator revision
    return b;
}

Bytes finish(Bytes b)
{
    set32(b, 4, b.size());
    b[9] = checksum(b, 0, b.size());
    return b;
}

// A generic address structure: system I/O (1) or memory (0).
void put_gas(Bytes& b, std::uint8_t space, std::uint8_t bits, std::uint64_t address)
{
    put8(b, space);
    put8(b, bits);
    put8(b, 0); // bit offset
    put8(b, space == 1 ? (bits >= 32 ? 3 : bits / 8 == 2 ? 2 : 1) : 0); // access size
    put64(b, address);
}

// --- AML, the few encodings the DSDT needs (ACPI 6.x, chapter 20) -------------------------

// PkgLength counts itself and what follows it.
void put_pkg_length(Bytes& b, std::size_t body)
{
    if (body + 1 < 0x40) {
        put8(b, body + 1);
    } else if (body + 2 < 0x1000) {
        const std::size_t n = body + 2;
        put8(b, 0x40 | (n & 0xf));
        put8(b, n >> 4);
    } else {
        const std::size_t n = body + 3;
        put8(b, 0x80 | (n & 0xf));
        put8(b, n >> 4);
        put8(b, n >> 12);
    }
}

void put_name_seg(Bytes& b, std::string_view seg) { put_text(b, seg); } // exactly four characters

void aml_name(Bytes& b, std::string_view seg, const Bytes& value)
{
    put8(b, 0x08); // NameOp
    put_name_seg(b, seg);
    b.insert(b.end(), value.begin(), value.end());
}

Bytes aml_string(std::string_view s)
{
    Bytes b{0x0d}; // StringPrefix
    put_text(b, s);
    put8(b, 0);
    return b;
}

Bytes aml_integer(std::uint8_t v)
{
    if (v == 0)
        return {0x00}; // ZeroOp
    if (v == 1)
        return {0x01}; // OneOp
    return {0x0a, v};  // BytePrefix
}

// A resource template: a 32-bit fixed memory window and one extended interrupt.
Bytes aml_resources(const AcpiVirtioDevice& d)
{
    Bytes r;
    put8(r, 0x86); // Memory32Fixed
    put16(r, 9);
    put8(r, 1); // read/write
    put32(r, d.base);
    put32(r, d.size);
    put8(r, 0x89); // Extended Interrupt
    put16(r, 6);
    put8(r, 0x01 | 0x02); // consumer, edge-triggered, active high, exclusive
    put8(r, 1);           // one interrupt
    put32(r, d.isa_irq);
    put8(r, 0x79); // End Tag, checksum 0: "treated as summed to zero"
    put8(r, 0);

    Bytes body;
    const Bytes size = aml_integer(static_cast<std::uint8_t>(r.size()));
    body.insert(body.end(), size.begin(), size.end());
    body.insert(body.end(), r.begin(), r.end());
    Bytes b{0x11}; // BufferOp
    put_pkg_length(b, body.size());
    b.insert(b.end(), body.begin(), body.end());
    return b;
}

Bytes aml_virtio_device(const AcpiVirtioDevice& d, std::uint8_t uid)
{
    Bytes body;
    static constexpr char kHex[] = "0123456789ABCDEF";
    const char name[] = {'V', 'R', kHex[uid >> 4], kHex[uid & 15]};
    put_name_seg(body, std::string_view(name, 4));
    aml_name(body, "_HID", aml_string("LNRO0005"));
    aml_name(body, "_UID", aml_integer(uid));
    aml_name(body, "_CRS", aml_resources(d));
    Bytes b{0x5b, 0x82}; // DeviceOp
    put_pkg_length(b, body.size());
    b.insert(b.end(), body.begin(), body.end());
    return b;
}

Bytes dsdt(const AcpiPlatform& p)
{
    Bytes scope_body{0x5c, '_', 'S', 'B', '_'}; // \_SB_
    for (std::size_t i = 0; i < p.virtio.size(); ++i) {
        const Bytes dev = aml_virtio_device(p.virtio[i], static_cast<std::uint8_t>(i));
        scope_body.insert(scope_body.end(), dev.begin(), dev.end());
    }
    Bytes b = header("DSDT", 2);
    // Name (\_S5, Package (4) {SLP_TYP a, SLP_TYP b, 0, 0})
    const Bytes s5_type = aml_integer(kS5SleepType);
    Bytes s5_body{4}; // NumElements
    for (int i = 0; i < 2; ++i)
        s5_body.insert(s5_body.end(), s5_type.begin(), s5_type.end());
    s5_body.insert(s5_body.end(), {0x00, 0x00});
    Bytes s5{0x12}; // PackageOp
    put_pkg_length(s5, s5_body.size());
    s5.insert(s5.end(), s5_body.begin(), s5_body.end());
    put8(b, 0x08); // NameOp, from the root
    put8(b, 0x5c);
    b.insert(b.end(), {'_', 'S', '5', '_'});
    b.insert(b.end(), s5.begin(), s5.end());
    put8(b, 0x10); // ScopeOp
    put_pkg_length(b, scope_body.size());
    b.insert(b.end(), scope_body.begin(), scope_body.end());
    return finish(std::move(b));
}

Bytes facs()
{
    Bytes b;
    put_text(b, "FACS");
    put32(b, 64);
    put32(b, 0); // hardware signature
    put32(b, 0); // firmware waking vector
    put32(b, 0); // global lock
    put32(b, 0); // flags
    put64(b, 0); // X firmware waking vector
    put8(b, 2);  // version
    b.resize(64, 0);
    return b;
}

Bytes fadt(std::uint64_t facs_gpa, std::uint64_t dsdt_gpa)
{
    constexpr std::uint32_t kWbinvd = 1u << 0, kProcC1 = 1u << 2, kFixRtc = 1u << 6, kTmrValExt = 1u << 8,
                            kUsePlatformClock = 1u << 15;
    constexpr std::uint16_t kLegacyDevices = 1u << 0, kNoVga = 1u << 2; // no 8042 either (bit 1 clear)
    Bytes b = header("FACP", 5);
    put32(b, facs_gpa);
    put32(b, dsdt_gpa);
    put8(b, 0);       // reserved
    put8(b, 0);       // preferred PM profile: unspecified
    put16(b, kSciIrq);
    put32(b, 0);      // SMI command port: none, the PC is always in ACPI mode
    put8(b, 0), put8(b, 0), put8(b, 0), put8(b, 0); // ACPI enable/disable, S4BIOS, P-state control
    put32(b, kPm1aEventBlock);
    put32(b, 0);
    put32(b, kPm1aControlBlock);
    put32(b, 0);
    put32(b, 0);      // PM2 control
    put32(b, kPmTimerBlock);
    put32(b, 0), put32(b, 0); // no GPE blocks: nothing raises general-purpose events
    put8(b, 4), put8(b, 2), put8(b, 0), put8(b, 4); // PM1 event, PM1 control, PM2, PM timer lengths
    put8(b, 0), put8(b, 0), put8(b, 0), put8(b, 0); // GPE0/1 lengths, GPE1 base, C-state control
    put16(b, 0x0fff); // no C2
    put16(b, 0x0fff); // no C3
    put16(b, 0), put16(b, 0); // flush size and stride
    put8(b, 0), put8(b, 0);   // duty cycle
    put8(b, 0), put8(b, 0), put8(b, 0x32); // RTC day/month alarm, century at CMOS 0x32
    put16(b, kLegacyDevices | kNoVga);
    put8(b, 0);
    put32(b, kWbinvd | kProcC1 | kFixRtc | kTmrValExt | kUsePlatformClock);
    put_gas(b, 0, 0, 0); // no reset register
    put8(b, 0);          // reset value
    put16(b, 0);         // ARM boot flags
    put8(b, 0);          // minor version
    put64(b, facs_gpa);
    put64(b, dsdt_gpa);
    put_gas(b, 1, 32, kPm1aEventBlock);
    put_gas(b, 0, 0, 0);
    put_gas(b, 1, 16, kPm1aControlBlock);
    put_gas(b, 0, 0, 0);
    put_gas(b, 0, 0, 0); // PM2 control
    put_gas(b, 1, 32, kPmTimerBlock);
    put_gas(b, 0, 0, 0), put_gas(b, 0, 0, 0); // GPE0, GPE1
    put_gas(b, 0, 0, 0), put_gas(b, 0, 0, 0); // sleep control and status (hardware-reduced only)
    return finish(std::move(b));
}

Bytes madt()
{
    Bytes b = header("APIC", 4);
    put32(b, kLocalApicAddress);
    put32(b, 1); // PCAT_COMPAT: the 8259 pair is there (and masked once the IO-APIC is used)
    put8(b, 0), put8(b, 8), put8(b, 0), put8(b, 0), put32(b, 1); // local APIC: UID 0, ID 0, enabled
    put8(b, 1), put8(b, 12), put8(b, 1), put8(b, 0);              // IO-APIC ID 1
    put32(b, kIoApicAddress);
    put32(b, 0); // GSI base
    put8(b, 2), put8(b, 10), put8(b, 0), put8(b, 0);              // ISA IRQ 0 ...
    put32(b, 2);                                                  // ... is GSI 2
    put16(b, 0); // bus-conforming polarity and trigger; the SCI keeps ACPI's level, active low
    return finish(std::move(b));
}

Bytes hpet()
{
    Bytes b = header("HPET", 1);
    put32(b, 0x8086a201); // event timer block ID: Xen's vHPET's capabilities (3 timers, legacy route)
    put_gas(b, 0, 64, kHpetAddress);
    put8(b, 0);      // HPET number
    put16(b, 0x80);  // minimum tick for periodic mode
    put8(b, 0);      // page protection
    return finish(std::move(b));
}

Bytes sdt(std::string_view signature, const std::vector<std::uint64_t>& tables, bool wide)
{
    Bytes b = header(signature, 1);
    for (std::uint64_t t : tables)
        wide ? put64(b, t) : put32(b, t);
    return finish(std::move(b));
}

void place(Bytes& out, std::uint64_t base, const Bytes& table, std::size_t align, std::uint64_t& gpa)
{
    out.resize((out.size() + align - 1) / align * align, 0);
    gpa = base + out.size();
    out.insert(out.end(), table.begin(), table.end());
}

} // namespace

AcpiTables build_acpi_tables(const AcpiPlatform& platform, std::uint64_t gpa)
{
    // The RSDP first, then FACS (64-byte aligned), then the rest; the pointers between them
    // are known once each is placed, so the tables that hold pointers come last.
    constexpr std::size_t kRsdpBytes = 36;
    Bytes out(kRsdpBytes, 0);
    std::uint64_t facs_gpa = 0, dsdt_gpa = 0, fadt_gpa = 0, madt_gpa = 0, hpet_gpa = 0, xsdt_gpa = 0, rsdt_gpa = 0;
    place(out, gpa, facs(), 64, facs_gpa);
    place(out, gpa, dsdt(platform), 16, dsdt_gpa);
    place(out, gpa, fadt(facs_gpa, dsdt_gpa), 16, fadt_gpa);
    place(out, gpa, madt(), 16, madt_gpa);
    place(out, gpa, hpet(), 16, hpet_gpa);
    const std::vector<std::uint64_t> tables = {fadt_gpa, madt_gpa, hpet_gpa};
    place(out, gpa, sdt("XSDT", tables, true), 16, xsdt_gpa);
    place(out, gpa, sdt("RSDT", tables, false), 16, rsdt_gpa);

    Bytes rsdp;
    put_text(rsdp, "RSD PTR ");
    put8(rsdp, 0); // checksum of the first 20 bytes
    put_text(rsdp, "XENFT ");
    put8(rsdp, 2); // revision: ACPI 2.0+, with an XSDT
    put32(rsdp, rsdt_gpa);
    put32(rsdp, kRsdpBytes);
    put64(rsdp, xsdt_gpa);
    put8(rsdp, 0); // extended checksum
    put8(rsdp, 0), put8(rsdp, 0), put8(rsdp, 0);
    rsdp[8] = checksum(rsdp, 0, 20);
    rsdp[32] = checksum(rsdp, 0, kRsdpBytes);
    std::copy(rsdp.begin(), rsdp.end(), out.begin());
    return {gpa, gpa, std::move(out)};
}

} // namespace xenft::engine
