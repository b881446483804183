// Guest images in the Xen PVH boot convention: an ELF file whose loadable segments go to their
// physical addresses and whose XEN_ELFNOTE_PHYS32_ENTRY note names a 32-bit entry point. The
// KVM backend loads the test guest this way so the same image boots as a Xen PVH domain.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xenft/common/expected.hpp"

namespace xenft::engine {

struct PvhSegment {
    std::uint64_t paddr = 0;
    std::vector<std::uint8_t> bytes; // file contents, then zeros up to the memory size
};

struct PvhImage {
    std::uint32_t entry = 0; // 32-bit protected-mode entry point
    std::vector<PvhSegment> segments;
};

// Validates everything it reads (an image is a file from outside): ELF64 x86-64, segment
// bounds within the file and below max_paddr, one PHYS32_ENTRY note.
Expected<PvhImage, std::string> parse_pvh_image(std::span<const std::uint8_t> file, std::uint64_t max_paddr);
Expected<PvhImage, std::string> load_pvh_image(const std::string& path, std::uint64_t max_paddr);

} // namespace xenft::engine
