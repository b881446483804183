// Real iSCSI targets for the arbiter tests, on loopback with private ports, files and sockets:
// istgt (COMPARE AND WRITE, persistent reservations) and tgtd (persistent reservations only).
// Each runs in the foreground as a child process and is killed by PID when the fixture ends.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace xenft::testing {

inline bool have_program(const char* name)
{
    return std::system((std::string("command -v ") + name + " > /dev/null 2>&1").c_str()) == 0;
}

// A loopback port nobody uses right now (SOCK_STREAM: TCP, SOCK_DGRAM: UDP).
inline std::uint16_t free_port(int type)
{
    const int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

inline std::uint16_t free_tcp_port() { return free_port(SOCK_STREAM); }

inline bool port_open(std::uint16_t port)
{
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

// Runs argv with extra environment entries; output to log. Returns the child's pid.
inline pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& log)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<std::string> envs(env);
    for (char** e = environ; *e; ++e)
        envs.emplace_back(*e);
    std::vector<char*> envp;
    for (auto& e : envs)
        envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = -1;
    if (posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), envp.data()) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

inline int run_and_wait(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& log)
{
    const pid_t pid = spawn(argv, env, log);
    int status = 0;
    if (pid < 0 || ::waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class Target {
public:
    Target(const Target&) = delete;
    Target& operator=(const Target&) = delete;
    virtual ~Target()
    {
        kill();
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }
    const std::string& url() const { return url_; }
    pid_t pid() const { return pid_; }
    void kill()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGCONT);
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
    }
    // SIGSTOP is asynchronous: wait until the kernel shows the target stopped, so a command
    // sent next cannot be answered in between.
    void pause()
    {
        ::kill(pid_, SIGSTOP);
        for (int i = 0; i < 200; ++i) {
            std::ifstream stat("/proc/" + std::to_string(pid_) + "/stat");
            std::string pid, comm, state;
            stat >> pid >> comm >> state;
            if (state == "T" || state == "t")
                return;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    void resume() { ::kill(pid_, SIGCONT); }
    // Stops the target and starts it again on the same port and backing file.
    void restart()
    {
        kill();
        start();
    }
    std::string log() const
    {
        std::ifstream in(dir_ + "/target.log");
        return std::string(std::istreambuf_iterator<char>(in), {});
    }

protected:
    Target()
    {
        char tmpl[] = "/tmp/xenft-iscsi-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
        port_ = free_tcp_port();
    }
    virtual void start() = 0;
    void wait_for_portal()
    {
        for (int i = 0; i < 500; ++i) {
            if (port_open(port_))
                return;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        throw std::runtime_error("iSCSI target did not open port " + std::to_string(port_) + ": " + log());
    }
    std::string dir_, url_;
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
};

class Istgt : public Target {
public:
    explicit Istgt(int megabytes = 16) : mb_(megabytes)
    {
        std::ofstream(dir_ + "/auth.conf");
        std::ofstream(dir_ + "/lun0.img");
        std::filesystem::resize_file(dir_ + "/lun0.img", static_cast<std::uintmax_t>(mb_) << 20);
        const std::uint16_t control = free_tcp_port();
        std::ofstream(dir_ + "/istgt.conf")
            << "[Global]\n  NodeBase \"iqn.2026-11.test.xenft\"\n  PidFile " << dir_ << "/istgt.pid\n  AuthFile " << dir_
            << "/auth.conf\n  MediaDirectory " << dir_ << "\n  LogFacility \"local7\"\n  Timeout 30\n  NopInInterval 20\n"
            << "  DiscoveryAuthMethod None\n  MaxSessions 16\n  MaxConnections 4\n"
            << "[UnitControl]\n  AuthMethod None\n  Portal UC1 127.0.0.1:" << control << "\n  Netmask 127.0.0.1\n"
            << "[PortalGroup1]\n  Portal DA1 127.0.0.1:" << port_ << "\n"
            << "[InitiatorGroup1]\n  InitiatorName \"ALL\"\n  Netmask 127.0.0.1/32\n"
            << "[LogicalUnit1]\n  TargetName arbiter\n  Mapping PortalGroup1 InitiatorGroup1\n  AuthMethod None\n"
            << "  UseDigest Auto\n  UnitType Disk\n  LUN0 Storage " << dir_ << "/lun0.img " << mb_ << "MB\n";
        url_ = "iscsi://127.0.0.1:" + std::to_string(port_) + "/iqn.2026-11.test.xenft:arbiter/0";
        start();
    }

protected:
    void start() override
    {
        pid_ = spawn({"istgt", "-c", dir_ + "/istgt.conf", "-D"}, {}, dir_ + "/target.log");
        wait_for_portal();
    }

private:
    int mb_;
};

class Tgtd : public Target {
public:
    Tgtd()
    {
        std::ofstream(dir_ + "/lun.img");
        std::filesystem::resize_file(dir_ + "/lun.img", std::uintmax_t{16} << 20);
        url_ = "iscsi://127.0.0.1:" + std::to_string(port_) + "/iqn.2026-11.test.xenft:fence/1";
        start();
    }

protected:
    void start() override
    {
        const std::vector<std::string> env = {"TGT_IPC_SOCKET=" + dir_ + "/ipc"};
        pid_ = spawn({"tgtd", "-f", "-C", "0", "--iscsi", "portal=127.0.0.1:" + std::to_string(port_)}, env, dir_ + "/target.log");
        // tgtd keeps no configuration: create the target and its LUN each time it starts.
        const std::string log = dir_ + "/tgtadm.log";
        for (int i = 0; i < 200; ++i) {
            if (run_and_wait({"tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "new", "--tid", "1", "--targetname",
                              "iqn.2026-11.test.xenft:fence"},
                             env, log) == 0)
                break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (run_and_wait({"tgtadm", "--lld", "iscsi", "--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1",
                          "--backing-store", dir_ + "/lun.img"},
                         env, log) != 0 ||
            run_and_wait({"tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address",
                          "ALL"},
                         env, log) != 0)
            throw std::runtime_error("tgtadm could not configure tgtd: " + log);
        wait_for_portal();
    }
};

} // namespace xenft::testing
