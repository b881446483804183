#include "xenft/common/version.hpp"

#include "config.h"
#include "xenft/logformat/entry.hpp"

namespace xenft {

std::string version_string()
{
    std::string v = PACKAGE_NAME " " PACKAGE_VERSION " (log format ";
    v += std::to_string(logformat::kFormatVersion);
#ifdef XENFT_HAVE_XEN
    v += ", Xen backend";
#else
    v += ", no Xen backend";
#endif
    v += ")";
    return v;
}

} // namespace xenft
