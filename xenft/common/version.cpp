#include "xenft/common/version.hpp"

#include "config.h"
#include "xenft/logformat/entry.hpp"

namespace xenft {

std::string version_string()
{
    std::string v = PACKAGE_NAME " " PACKAGE_VERSION " (log format ";
    v += std::to_string(logformat::kFormatVersion);
    // The execution backends xenftd can drive. The Xen one is not in xenftd yet (only the
    // lab's controller uses xenft/backends/xen), whatever libraries configure found.
    v += ", backends: kvm)";
    return v;
}

} // namespace xenft
