// Tests of the reading of Xen's console ring (xenft/backends/xen/xen_console.hpp): xenftd
// finds the line in which Xen named a domain's replay divergence, for that domain only, the
// last one, without Xen's prefix, and nothing where there is none.
#define BOOST_TEST_MODULE xen_console
#include <boost/test/unit_test.hpp>

#include "xenft/backends/xen/xen_console.hpp"

using xenft::backends::xen::console_line_about;

namespace {

// As `xl dmesg` shows the lab's ring: time stamps, other domains, a line cut by the ring's wrap.
constexpr std::string_view kRing =
    "ap\n"
    "(XEN) [  101.220301] HVM1 restore: CPU 0\n"
    "(XEN) [  130.001234] d11v0 FT replay diverged at exit 9: the TSC is read another way; the log ends\n"
    "(XEN) [  131.500000] d1v0 FT replay diverged at exit 40: the guest reads another device register; the log has type 3 info 0x1f4 at exit 41\r\n"
    "(XEN) [  131.500100] d1v0 Domain crashed\n"
    "(XEN) [  140.000000] d1v0 FT replay diverged at exit 157058: the guest is not where the interrupt was injected; the log has type 1 info 0x30 at exit 157058\n"
    "(XEN) [  150.000000] d2v0 FT record ring full\n";

} // namespace

BOOST_AUTO_TEST_CASE(the_last_divergence_of_the_domain_without_xens_prefix)
{
    BOOST_TEST(console_line_about(kRing, 1, "FT replay diverged") ==
               "d1v0 FT replay diverged at exit 157058: the guest is not where the interrupt was injected; the log "
               "has type 1 info 0x30 at exit 157058");
}

BOOST_AUTO_TEST_CASE(another_domain_whose_number_ends_the_same_is_not_this_one)
{
    BOOST_TEST(console_line_about(kRing, 11, "FT replay diverged") ==
               "d11v0 FT replay diverged at exit 9: the TSC is read another way; the log ends");
    BOOST_TEST(console_line_about("(XEN) d11v0 FT replay diverged at exit 9\n", 1, "FT replay diverged").empty());
}

BOOST_AUTO_TEST_CASE(nothing_where_xen_said_nothing_of_it)
{
    BOOST_TEST(console_line_about(kRing, 2, "FT replay diverged").empty());
    BOOST_TEST(console_line_about(kRing, 3, "FT replay diverged").empty());
    BOOST_TEST(console_line_about("", 1, "FT replay diverged").empty());
    BOOST_TEST(console_line_about("d1v", 1, "FT replay diverged").empty());
}

BOOST_AUTO_TEST_CASE(a_line_without_its_end_and_a_carriage_return)
{
    // The ring's last line may have no newline yet; a serial console's lines end in \r\n.
    BOOST_TEST(console_line_about("(XEN) d4v1 FT replay diverged at exit 7: the log ends", 4, "FT replay diverged") ==
               "d4v1 FT replay diverged at exit 7: the log ends");
    BOOST_TEST(console_line_about("(XEN) d4v1 FT replay diverged at exit 8 \r\n", 4, "FT replay diverged") ==
               "d4v1 FT replay diverged at exit 8");
}
