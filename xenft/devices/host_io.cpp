#include "xenft/devices/host_io.hpp"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "xenft/common/log_line.hpp"

namespace xenft::devices {

Expected<TapDevice, std::string> TapDevice::open(const std::string& name)
{
    if (name.empty() || name.size() >= IFNAMSIZ)
        return unexpected("TAP interface name '" + name + "': must be 1 to " + std::to_string(IFNAMSIZ - 1) + " characters");
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!fd.valid())
        return unexpected("TAP " + name + ": cannot open /dev/net/tun: " + std::strerror(errno));
    ifreq ifr{};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    std::memcpy(ifr.ifr_name, name.data(), name.size());
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0)
        return unexpected("TAP " + name + ": TUNSETIFF failed: " + std::strerror(errno));
    return TapDevice(std::move(fd), name);
}

std::optional<std::vector<std::uint8_t>> TapDevice::receive()
{
    std::vector<std::uint8_t> frame(65536);
    const ssize_t n = ::read(fd_.get(), frame.data(), frame.size());
    if (n <= 0)
        return std::nullopt;
    frame.resize(static_cast<std::size_t>(n));
    return frame;
}

void TapDevice::transmit(std::span<const std::uint8_t> frame)
{
    // A full queue drops the frame, as a switch port would; TCP and the clients' retries
    // recover. Counted, so a test can see it.
    if (::write(fd_.get(), frame.data(), frame.size()) != static_cast<ssize_t>(frame.size()))
        ++tx_errors_;
}

Expected<FileStore, std::string> FileStore::open(const std::string& path)
{
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid())
        return unexpected("disk " + path + ": " + std::strerror(errno));
    const off_t end = ::lseek(fd.get(), 0, SEEK_END);
    if (end < 0)
        return unexpected("disk " + path + ": cannot find its size: " + std::strerror(errno));
    if (end < VirtioBlk::kSector || end % VirtioBlk::kSector != 0)
        return unexpected("disk " + path + ": size " + std::to_string(end) + " is not a positive multiple of 512 bytes");
    return FileStore(std::move(fd), static_cast<std::uint64_t>(end));
}

bool FileStore::read(std::uint64_t offset, std::span<std::uint8_t> out)
{
    if (offset > size_ || out.size() > size_ - offset)
        return false;
    return ::pread(fd_.get(), out.data(), out.size(), static_cast<off_t>(offset)) == static_cast<ssize_t>(out.size());
}

bool FileStore::write(std::uint64_t offset, std::span<const std::uint8_t> data)
{
    if (offset > size_ || data.size() > size_ - offset)
        return false;
    return ::pwrite(fd_.get(), data.data(), data.size(), static_cast<off_t>(offset)) == static_cast<ssize_t>(data.size());
}

bool FileStore::flush()
{
    return ::fdatasync(fd_.get()) == 0;
}

Expected<std::unique_ptr<ConsoleLog>, std::string> ConsoleLog::open(const std::string& path)
{
    const std::filesystem::path file(path);
    if (!file.is_absolute() || !file.has_filename())
        return unexpected("console log \"" + path + "\": not an absolute file name");
    std::error_code ec;
    if (!std::filesystem::exists(file.parent_path(), ec)) {
        std::filesystem::create_directories(file.parent_path(), ec);
        if (ec)
            return unexpected("console log " + path + ": cannot create " + file.parent_path().string() + ": " + ec.message());
        std::filesystem::permissions(file.parent_path(), std::filesystem::perms(0750), ec);
    }
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640));
    if (!fd.valid())
        return unexpected("console log " + path + ": " + std::strerror(errno));
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
        return unexpected("console log " + path + ": not a regular file");
    return std::unique_ptr<ConsoleLog>(new ConsoleLog(path, std::move(fd)));
}

ConsoleLog::~ConsoleLog()
{
    std::lock_guard lock(mu_);
    if (!line_.empty())
        write_line_locked(line_);
}

void ConsoleLog::put(char c)
{
    std::lock_guard lock(mu_);
    if (c == '\r')
        return;
    if (c == '\n') {
        write_line_locked(line_);
        line_.clear();
        return;
    }
    line_ += c;
    if (line_.size() >= kMaxLine) {
        write_line_locked(line_);
        line_.clear();
    }
}

void ConsoleLog::note(std::string_view text)
{
    std::lock_guard lock(mu_);
    if (!line_.empty()) {
        write_line_locked(line_);
        line_.clear();
    }
    write_line_locked(text);
}

std::string ConsoleLog::error() const
{
    std::lock_guard lock(mu_);
    return error_;
}

void ConsoleLog::write_line_locked(std::string_view text)
{
    if (!error_.empty())
        return;
    const std::string line = format_log_line(LogPriority::info, text, false, std::chrono::system_clock::now());
    std::size_t done = 0;
    while (done < line.size()) {
        const ssize_t n = ::write(fd_.get(), line.data() + done, line.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            error_ = "console log " + path_ + ": " + (n < 0 ? std::strerror(errno) : "nothing written");
            return;
        }
        done += static_cast<std::size_t>(n);
    }
}

} // namespace xenft::devices
