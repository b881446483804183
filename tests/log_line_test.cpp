// Tests of a daemon's log lines (xenft/common/log_line.hpp): the journal's priority prefix, the
// time stamp and priority word elsewhere, and telling the journal's stream from a redirection.
#define BOOST_TEST_MODULE log_line
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "xenft/common/log_line.hpp"

using xenft::LogPriority;

namespace {

// 2026-12-02 07:50:01.123 UTC
const std::chrono::system_clock::time_point kWhen{std::chrono::milliseconds(1'796'197'801'123)};

} // namespace

BOOST_AUTO_TEST_CASE(journal_lines_carry_the_syslog_priority)
{
    BOOST_TEST(xenft::format_log_line(LogPriority::warning, "xenftd: vm 7: test-and-set unknown", true, kWhen) ==
               "<4>xenftd: vm 7: test-and-set unknown\n");
    BOOST_TEST(xenft::format_log_line(LogPriority::error, "x", true, kWhen) == "<3>x\n");
    BOOST_TEST(xenft::format_log_line(LogPriority::notice, "x", true, kWhen) == "<5>x\n");
    BOOST_TEST(xenft::format_log_line(LogPriority::info, "x", true, kWhen) == "<6>x\n");
}

BOOST_AUTO_TEST_CASE(file_lines_carry_the_utc_time_and_say_warnings_and_errors)
{
    BOOST_TEST(xenft::format_log_line(LogPriority::info, "xenftd: vm 7: going live", false, kWhen) ==
               "2026-12-02T07:50:01.123Z xenftd: vm 7: going live\n");
    BOOST_TEST(xenft::format_log_line(LogPriority::notice, "n", false, kWhen) == "2026-12-02T07:50:01.123Z n\n");
    BOOST_TEST(xenft::format_log_line(LogPriority::warning, "w", false, kWhen) ==
               "2026-12-02T07:50:01.123Z warning: w\n");
    BOOST_TEST(xenft::format_log_line(LogPriority::error, "e", false, kWhen) == "2026-12-02T07:50:01.123Z error: e\n");
    // Milliseconds keep their leading zeros.
    const auto early = kWhen - std::chrono::milliseconds(120);
    BOOST_TEST(xenft::format_log_line(LogPriority::info, "t", false, early) == "2026-12-02T07:50:01.003Z t\n");
}

BOOST_AUTO_TEST_CASE(only_the_stream_systemd_connected_is_the_journal)
{
    struct stat st{};
    BOOST_REQUIRE(::fstat(STDERR_FILENO, &st) == 0);
    const std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
    ::unsetenv("JOURNAL_STREAM");
    BOOST_TEST(!xenft::stderr_is_journal());
    ::setenv("JOURNAL_STREAM", mine.c_str(), 1);
    BOOST_TEST(xenft::stderr_is_journal());
    // stderr redirected since (xenftd started by hand from a unit's shell): another inode.
    ::setenv("JOURNAL_STREAM", (std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1)).c_str(), 1);
    BOOST_TEST(!xenft::stderr_is_journal());
    ::setenv("JOURNAL_STREAM", "garbage", 1);
    BOOST_TEST(!xenft::stderr_is_journal());
    ::unsetenv("JOURNAL_STREAM");
}
