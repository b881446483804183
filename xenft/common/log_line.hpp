// One line of a daemon's log, as an administrator reads it. Under systemd (stderr connected to
// the journal, which sets JOURNAL_STREAM) a line starts with the "<N>" prefix journald takes as
// its syslog priority, and the journal adds the time; anywhere else (the file the xl hook
// redirects xenftd to on a dom0 without systemd, a terminal) it starts with the time in UTC,
// to the millisecond, and warnings and errors say so. Each line is written with one write(2),
// so the node's threads never interleave within a line.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace xenft {

// syslog(3)'s numbers, which journald's "<N>" prefix uses.
enum class LogPriority : int { error = 3, warning = 4, notice = 5, info = 6 };

// The line as write_log_line() writes it (with its newline).
std::string format_log_line(LogPriority priority, std::string_view text, bool to_journal,
                            std::chrono::system_clock::time_point now);

// Whether stderr is the journal stream systemd connected (JOURNAL_STREAM names its device and
// inode), not something it was redirected to since.
bool stderr_is_journal();

void write_log_line(LogPriority priority, std::string_view text);

} // namespace xenft
