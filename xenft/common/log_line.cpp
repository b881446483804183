#include "xenft/common/log_line.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace xenft {

std::string format_log_line(LogPriority priority, std::string_view text, bool to_journal,
                            std::chrono::system_clock::time_point now)
{
    std::string line;
    if (to_journal) {
        line = "<" + std::to_string(static_cast<int>(priority)) + ">";
    } else {
        const auto since_epoch = now.time_since_epoch();
        const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
        const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - seconds).count();
        const std::time_t t = static_cast<std::time_t>(seconds.count());
        std::tm utc{};
        ::gmtime_r(&t, &utc);
        char stamp[40];
        const std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
        std::snprintf(stamp + n, sizeof stamp - n, ".%03dZ ", static_cast<int>(millis));
        line = stamp;
        if (priority == LogPriority::error)
            line += "error: ";
        else if (priority == LogPriority::warning)
            line += "warning: ";
    }
    line += text;
    line += '\n';
    return line;
}

bool stderr_is_journal()
{
    const char* stream = std::getenv("JOURNAL_STREAM");
    if (!stream)
        return false;
    struct stat st{};
    if (::fstat(STDERR_FILENO, &st) != 0)
        return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2)
        return false;
    return dev == static_cast<unsigned long long>(st.st_dev) && ino == static_cast<unsigned long long>(st.st_ino);
}

void write_log_line(LogPriority priority, std::string_view text)
{
    static const bool to_journal = stderr_is_journal();
    const std::string line = format_log_line(priority, text, to_journal, std::chrono::system_clock::now());
    std::size_t done = 0;
    while (done < line.size()) {
        const ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; // nowhere to log to: nothing better to do
        done += static_cast<std::size_t>(n);
    }
}

} // namespace xenft
