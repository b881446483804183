#include "xenft/common/version.hpp"

#include "config.h"
#include "xenft/logformat/entry.hpp"

namespace xenft {

std::string version_string()
{
    std::string v = PACKAGE_NAME " " PACKAGE_VERSION " (log format ";
    v += std::to_string(logformat::kFormatVersion);
    // The execution backends xenftd can drive: Xen's where configure found its libraries.
#ifdef XENFT_HAVE_XEN
    v += ", backends: kvm, xen)";
#else
    v += ", backends: kvm)";
#endif
    return v;
}

} // namespace xenft
