#include "xenft/engine/pvh_image.hpp"

#include <elf.h>

#include <cstring>
#include <fstream>
#include <iterator>

namespace xenft::engine {

namespace {

constexpr std::uint32_t kXenElfnotePhys32Entry = 18;
constexpr std::uint64_t kMaxSegments = 64;

template <class T>
bool read_at(std::span<const std::uint8_t> f, std::uint64_t off, T& out)
{
    if (off > f.size() || f.size() - off < sizeof(T))
        return false;
    std::memcpy(&out, f.data() + off, sizeof(T));
    return true;
}

} // namespace

Expected<PvhImage, std::string> parse_pvh_image(std::span<const std::uint8_t> f, std::uint64_t max_paddr)
{
    Elf64_Ehdr eh;
    if (!read_at(f, 0, eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
        return unexpected(std::string("not an ELF file"));
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
        return unexpected(std::string("not a little-endian x86-64 ELF64 image"));
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > kMaxSegments)
        return unexpected("unusable program header table (" + std::to_string(eh.e_phnum) + " entries)");

    PvhImage img;
    bool have_entry = false;
    std::uint64_t total = 0; // all segments together must fit guest memory too
    for (std::uint64_t i = 0; i < eh.e_phnum; ++i) {
        Elf64_Phdr ph;
        if (!read_at(f, eh.e_phoff + i * sizeof ph, ph))
            return unexpected("program header " + std::to_string(i) + " lies outside the file");
        if (ph.p_filesz > f.size() || ph.p_offset > f.size() - ph.p_filesz)
            return unexpected("segment " + std::to_string(i) + " lies outside the file");
        if (ph.p_type == PT_LOAD) {
            total += ph.p_memsz;
            if (ph.p_filesz > ph.p_memsz || ph.p_memsz > max_paddr || ph.p_paddr > max_paddr - ph.p_memsz ||
                total > max_paddr)
                return unexpected("segment " + std::to_string(i) + " does not fit in guest memory");
            PvhSegment s{ph.p_paddr, std::vector<std::uint8_t>(ph.p_memsz, 0)};
            if (ph.p_filesz > 0)
                std::memcpy(s.bytes.data(), f.data() + ph.p_offset, ph.p_filesz);
            img.segments.push_back(std::move(s));
        } else if (ph.p_type == PT_NOTE) {
            for (std::uint64_t off = ph.p_offset; off + 12 <= ph.p_offset + ph.p_filesz;) {
                std::uint32_t namesz = 0, descsz = 0, type = 0;
                if (!read_at(f, off, namesz) || !read_at(f, off + 4, descsz) || !read_at(f, off + 8, type))
                    return unexpected(std::string("truncated ELF note"));
                const std::uint64_t name = off + 12, desc = name + ((namesz + 3ull) & ~3ull);
                const std::uint64_t next = desc + ((descsz + 3ull) & ~3ull);
                if (next > ph.p_offset + ph.p_filesz)
                    return unexpected(std::string("truncated ELF note"));
                if (namesz == 4 && std::memcmp(f.data() + name, "Xen", 4) == 0 && type == kXenElfnotePhys32Entry &&
                    descsz >= 4) {
                    read_at(f, desc, img.entry);
                    have_entry = true;
                }
                off = next;
            }
        }
    }
    if (!have_entry)
        return unexpected(std::string("no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH image"));
    if (img.segments.empty())
        return unexpected(std::string("no loadable segment"));
    return img;
}

Expected<PvhImage, std::string> load_pvh_image(const std::string& path, std::uint64_t max_paddr)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return unexpected("guest image " + path + ": cannot open");
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.size() > (64u << 20))
        return unexpected("guest image " + path + ": over 64 MiB");
    auto img = parse_pvh_image(bytes, max_paddr);
    if (!img)
        return unexpected("guest image " + path + ": " + img.error());
    return img;
}

} // namespace xenft::engine
