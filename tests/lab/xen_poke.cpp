// xenft-xen-poke: the lab's way to make a replica diverge. It flips one byte of a domain's
// memory from dom0, as a bit error in the backup host's RAM would, so that the backup's next
// state digest differs from the primary's (tests/lab/failover.sh, case backup-diverges).
//
//   xenft-xen-poke DOMID GFN OFFSET
//
// Prints "poke: domain D page G byte O: A -> B" and exits 0; an error names what failed.
#include <cstdlib>
#include <iostream>
#include <string>

#include "xenft/backends/xen/xen_handles.hpp"

using namespace xenft::backends::xen;

namespace {

bool number(const char* s, unsigned long long max, unsigned long long& out)
{
    char* end = nullptr;
    out = std::strtoull(s, &end, 0);
    return end != s && *end == 0 && out <= max;
}

} // namespace

int main(int argc, char** argv)
{
    unsigned long long domid = 0, gfn = 0, offset = 0;
    if (argc != 4 || !number(argv[1], 0x7fef, domid) || domid == 0 || !number(argv[2], 1ull << 40, gfn) ||
        !number(argv[3], 4095, offset)) {
        std::cerr << "usage: xenft-xen-poke DOMID GFN OFFSET (OFFSET < 4096)\n";
        return 2;
    }
    auto fm = ForeignMemory::open();
    if (!fm) {
        std::cerr << "poke: " << fm.error() << "\n";
        return 1;
    }
    auto pages = GuestPages::map(*fm, static_cast<std::uint32_t>(domid), gfn, 1, true);
    if (!pages || !pages->mapped(0)) {
        std::cerr << "poke: domain " << domid << " page " << gfn << ": "
                  << (pages ? std::string("not populated") : pages.error()) << "\n";
        return 1;
    }
    auto page = pages->writable_page(0);
    const unsigned before = page[offset];
    page[offset] = static_cast<std::uint8_t>(~page[offset]);
    std::cout << "poke: domain " << domid << " page " << gfn << " byte " << offset << ": " << before << " -> "
              << static_cast<unsigned>(page[offset]) << std::endl;
    return 0;
}
