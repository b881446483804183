#include "xenft/arbiter/lun.hpp"

#include <iscsi/iscsi.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <iscsi/scsi-lowlevel.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>

#include "xenft/common/unique_fd.hpp"

namespace xenft::arbiter {

namespace {

constexpr std::uint32_t kIsidEnterprise = 0x584654; // "XFT"
constexpr int kUnitAttentionRetries = 5;
// Logins get longer than commands: some targets take a second per login (istgt does, and
// serializes them), and a login is never on the test-and-set's critical path.
constexpr int kLoginTimeoutS = 10;
// Write Exclusive, Registrants Only: every registered host may write, anyone may read. Fencing
// a host is removing its registration; the deposed host can still read the record and learn
// who won.
constexpr int kPrType = SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE_REGISTRANTS_ONLY;

const char* sense_key_name(int k)
{
    switch (k) {
    case 0x01: return "RECOVERED ERROR";
    case 0x02: return "NOT READY";
    case 0x03: return "MEDIUM ERROR";
    case 0x04: return "HARDWARE ERROR";
    case 0x05: return "ILLEGAL REQUEST";
    case 0x06: return "UNIT ATTENTION";
    case 0x07: return "DATA PROTECT";
    case 0x0b: return "ABORTED COMMAND";
    case 0x0e: return "MISCOMPARE";
    default: return "CHECK CONDITION";
    }
}

// The portal's host and port as libiscsi reads them: HOST, HOST:PORT, [V6] or [V6]:PORT, the
// port 3260 by default.
std::pair<std::string, std::string> portal_host_port(const std::string& portal)
{
    if (!portal.empty() && portal.front() == '[') {
        const auto close = portal.find(']');
        if (close != std::string::npos) {
            const std::string rest = portal.substr(close + 1);
            return {portal.substr(1, close - 1), rest.size() > 1 && rest[0] == ':' ? rest.substr(1) : "3260"};
        }
    }
    const auto colon = portal.find(':');
    if (colon != std::string::npos && portal.find(':', colon + 1) == std::string::npos)
        return {portal.substr(0, colon), portal.substr(colon + 1)};
    return {portal, "3260"};
}

// Empty if a TCP connection to one of the portal's addresses succeeds within timeout_s;
// otherwise the reason, as the resolver or the network gave it (libiscsi's own text for an
// unreachable portal, "Can not reconnect right now", says neither).
std::string reachable(const std::string& portal, int timeout_s)
{
    const auto [host, port] = portal_host_port(portal);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
        return "cannot resolve " + host + ": " + ::gai_strerror(rc);
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(found, ::freeaddrinfo);
    std::string why = "no address";
    for (const addrinfo* a = found; a; a = a->ai_next) {
        UniqueFd fd(::socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!fd.valid()) {
            why = std::strerror(errno);
            continue;
        }
        if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) == 0)
            return {};
        if (errno != EINPROGRESS) {
            why = std::strerror(errno);
            continue;
        }
        pollfd p{fd.get(), POLLOUT, 0};
        if (::poll(&p, 1, timeout_s * 1000) <= 0) {
            why = "no answer within " + std::to_string(timeout_s) + " s";
            continue;
        }
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err == 0)
            return {};
        why = std::strerror(err);
    }
    return why;
}

struct TaskFree {
    void operator()(scsi_task* t) const noexcept { scsi_free_scsi_task(t); }
};

} // namespace

Expected<Lun, std::string> Lun::connect(const LunConfig& cfg)
{
    Lun lun(cfg);
    if (auto r = lun.login(); !r)
        return unexpected(r.error());
    std::unique_ptr<scsi_task, TaskFree> t(iscsi_readcapacity16_sync(lun.ctx_, lun.lun_));
    if (!t || t->status != SCSI_STATUS_GOOD)
        return unexpected("LUN " + cfg.url + ": READ CAPACITY failed: " + iscsi_get_error(lun.ctx_));
    const auto* cap = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(t.get()));
    if (!cap)
        return unexpected("LUN " + cfg.url + ": unreadable READ CAPACITY reply");
    lun.block_size_ = cap->block_length;
    lun.blocks_ = cap->returned_lba + 1;
    if (lun.block_size_ < 512 || lun.block_size_ > 65536)
        return unexpected("LUN " + cfg.url + ": unsupported block size " + std::to_string(lun.block_size_));
    return lun;
}

Lun::Lun(Lun&& o) noexcept
    : cfg_(std::move(o.cfg_)), ctx_(std::exchange(o.ctx_, nullptr)), lun_(o.lun_), portal_(std::move(o.portal_)),
      target_(std::move(o.target_)), block_size_(o.block_size_), blocks_(o.blocks_)
{
}

Lun& Lun::operator=(Lun&& o) noexcept
{
    if (this != &o) {
        if (ctx_)
            iscsi_destroy_context(ctx_);
        cfg_ = std::move(o.cfg_);
        ctx_ = std::exchange(o.ctx_, nullptr);
        lun_ = o.lun_;
        portal_ = std::move(o.portal_);
        target_ = std::move(o.target_);
        block_size_ = o.block_size_;
        blocks_ = o.blocks_;
    }
    return *this;
}

Lun::~Lun()
{
    if (ctx_) {
        if (iscsi_is_logged_in(ctx_))
            iscsi_logout_sync(ctx_);
        iscsi_destroy_context(ctx_);
    }
}

std::string Lun::url_problem(const std::string& url)
{
    const std::string form = " (expected iscsi://HOST[:PORT]/TARGET-IQN/LUN)";
    if (url.rfind("iscsi://", 0) != 0)
        return "\"" + url + "\" is not an iscsi:// URL" + form;
    iscsi_context* ctx = iscsi_create_context("iqn.2026-12.org.xenft:check");
    if (!ctx)
        return "cannot create an iSCSI context to parse it";
    iscsi_url* u = iscsi_parse_full_url(ctx, url.c_str());
    std::string why;
    if (!u)
        why = std::string(iscsi_get_error(ctx)) + form;
    else
        iscsi_destroy_url(u);
    iscsi_destroy_context(ctx);
    return why;
}

Expected<bool, std::string> Lun::login()
{
    if (ctx_) {
        iscsi_destroy_context(ctx_);
        ctx_ = nullptr;
    }
    ctx_ = iscsi_create_context(cfg_.initiator_name.c_str());
    if (!ctx_)
        return unexpected("LUN " + cfg_.url + ": cannot create an iSCSI context for initiator " + cfg_.initiator_name);
    if (portal_.empty()) {
        iscsi_url* u = iscsi_parse_full_url(ctx_, cfg_.url.c_str());
        if (!u)
            return unexpected("LUN " + cfg_.url + ": " + iscsi_get_error(ctx_) +
                              " (expected iscsi://HOST[:PORT]/TARGET-IQN/LUN)");
        portal_ = u->portal;
        target_ = u->target;
        lun_ = u->lun;
        iscsi_destroy_url(u);
    }
    iscsi_set_timeout(ctx_, std::max(cfg_.timeout_s, kLoginTimeoutS));
    iscsi_set_noautoreconnect(ctx_, 1); // a lost reply must surface as "unknown", not hang in retries
    iscsi_set_isid_en(ctx_, kIsidEnterprise, cfg_.isid_qualifier);
    iscsi_set_targetname(ctx_, target_.c_str());
    iscsi_set_session_type(ctx_, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(ctx_, ISCSI_HEADER_DIGEST_NONE_CRC32C);
    if (iscsi_full_connect_sync(ctx_, portal_.c_str(), lun_) != 0) {
        // libiscsi's text for an unreachable portal is cryptic; say what the network says.
        if (auto reach = reachable(portal_, cfg_.timeout_s); !reach.empty())
            return unexpected("LUN " + cfg_.url + ": cannot reach portal " + portal_ + ": " + reach);
        return unexpected("LUN " + cfg_.url + ": login failed: " + iscsi_get_error(ctx_));
    }
    iscsi_set_timeout(ctx_, cfg_.timeout_s); // for every command from now on
    return true;
}

template <class Issue>
ScsiResult Lun::run(Issue issue, std::vector<std::uint8_t>* data_in)
{
    ScsiResult r;
    for (int attempt = 0; attempt <= kUnitAttentionRetries; ++attempt) {
        if (!ctx_ || !iscsi_is_logged_in(ctx_)) {
            if (auto l = login(); !l) {
                r.kind = ScsiResult::Kind::transport_error;
                r.message = l.error();
                return r;
            }
        }
        std::unique_ptr<scsi_task, TaskFree> t(issue(ctx_));
        if (!t || t->status == SCSI_STATUS_TIMEOUT || t->status == SCSI_STATUS_ERROR || t->status == SCSI_STATUS_CANCELLED) {
            r.kind = ScsiResult::Kind::transport_error;
            r.message = (t && t->status == SCSI_STATUS_TIMEOUT)
                            ? "no reply within " + std::to_string(cfg_.timeout_s) + " s"
                            : std::string("transport error: ") + iscsi_get_error(ctx_);
            // The session state is unknown now: log in afresh for the next command.
            iscsi_destroy_context(ctx_);
            ctx_ = nullptr;
            return r;
        }
        if (t->status == SCSI_STATUS_GOOD) {
            r = ScsiResult{};
            if (data_in)
                data_in->assign(t->datain.data, t->datain.data + t->datain.size);
            return r;
        }
        if (t->status == SCSI_STATUS_RESERVATION_CONFLICT) {
            r.kind = ScsiResult::Kind::reservation_conflict;
            r.message = "RESERVATION CONFLICT";
            return r;
        }
        if (t->status == SCSI_STATUS_CHECK_CONDITION) {
            r.kind = ScsiResult::Kind::check_condition;
            r.sense_key = static_cast<int>(t->sense.key);
            r.asc = (t->sense.ascq >> 8) & 0xff;
            r.ascq = t->sense.ascq & 0xff;
            char buf[96];
            std::snprintf(buf, sizeof buf, "%s (asc 0x%02x, ascq 0x%02x)", sense_key_name(r.sense_key), r.asc, r.ascq);
            r.message = buf;
            if (r.sense_key == 0x06)
                continue; // UNIT ATTENTION (after login, reset or reservation change): retry
            return r;
        }
        r.kind = ScsiResult::Kind::other_status;
        r.message = "SCSI status " + std::to_string(t->status);
        return r;
    }
    return r;
}

ScsiResult Lun::read_blocks(std::uint64_t lba, std::uint32_t count, std::vector<std::uint8_t>& data)
{
    const std::uint32_t bytes = count * block_size_;
    return run([&](iscsi_context* c) { return iscsi_read16_sync(c, lun_, lba, bytes, static_cast<int>(block_size_), 0, 1, 0, 0, 0); },
               &data);
}

ScsiResult Lun::write_blocks(std::uint64_t lba, std::span<const std::uint8_t> block)
{
    std::vector<std::uint8_t> data(block.begin(), block.end());
    const auto bytes = static_cast<std::uint32_t>(data.size() / block_size_ * block_size_);
    return run(
        [&](iscsi_context* c) {
            return iscsi_write16_sync(c, lun_, lba, data.data(), bytes, static_cast<int>(block_size_), 0, 0, 1, 0, 0);
        },
        nullptr);
}

ScsiResult Lun::synchronize_cache()
{
    return run([&](iscsi_context* c) { return iscsi_synchronizecache16_sync(c, lun_, 0, 0, 0, 0); }, nullptr);
}

ScsiResult Lun::compare_and_write(std::uint64_t lba, std::span<const std::uint8_t> expect, std::span<const std::uint8_t> replace)
{
    std::vector<std::uint8_t> data(expect.begin(), expect.end());
    data.insert(data.end(), replace.begin(), replace.end());
    return run(
        [&](iscsi_context* c) {
            return iscsi_compareandwrite_sync(c, lun_, lba, data.data(), 2 * block_size_, static_cast<int>(block_size_), 0, 0,
                                              1, 0, 0);
        },
        nullptr);
}

ScsiResult Lun::pr_register(std::uint64_t key)
{
    scsi_persistent_reserve_out_basic p{};
    p.service_action_reservation_key = key;
    return run(
        [&](iscsi_context* c) {
            return iscsi_persistent_reserve_out_sync(c, lun_, SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, &p);
        },
        nullptr);
}

ScsiResult Lun::pr_reserve(std::uint64_t key)
{
    scsi_persistent_reserve_out_basic p{};
    p.reservation_key = key;
    return run(
        [&](iscsi_context* c) { return iscsi_persistent_reserve_out_sync(c, lun_, SCSI_PERSISTENT_RESERVE_RESERVE, 0, kPrType, &p); },
        nullptr);
}

ScsiResult Lun::pr_preempt(std::uint64_t key, std::uint64_t victim)
{
    scsi_persistent_reserve_out_basic p{};
    p.reservation_key = key;
    p.service_action_reservation_key = victim;
    return run(
        [&](iscsi_context* c) { return iscsi_persistent_reserve_out_sync(c, lun_, SCSI_PERSISTENT_RESERVE_PREEMPT, 0, kPrType, &p); },
        nullptr);
}

ScsiResult Lun::pr_read_keys(std::vector<std::uint64_t>& keys)
{
    std::vector<std::uint8_t> raw;
    auto r = run([&](iscsi_context* c) { return iscsi_persistent_reserve_in_sync(c, lun_, SCSI_PERSISTENT_RESERVE_READ_KEYS, 4096); },
                 &raw);
    keys.clear();
    if (!r.ok() || raw.size() < 8)
        return r;
    auto be = [&](std::size_t off, int n) {
        std::uint64_t v = 0;
        for (int i = 0; i < n; ++i)
            v = v << 8 | raw[off + static_cast<std::size_t>(i)];
        return v;
    };
    const std::size_t len = std::min<std::size_t>(be(4, 4), raw.size() - 8);
    for (std::size_t off = 8; off + 8 <= 8 + len; off += 8)
        keys.push_back(be(off, 8));
    return r;
}

ScsiResult Lun::pr_read_holder(std::uint64_t& key)
{
    std::vector<std::uint8_t> raw;
    auto r = run(
        [&](iscsi_context* c) { return iscsi_persistent_reserve_in_sync(c, lun_, SCSI_PERSISTENT_RESERVE_READ_RESERVATION, 4096); },
        &raw);
    key = 0;
    if (r.ok() && raw.size() >= 16) {
        std::uint32_t len = 0;
        for (std::size_t i = 4; i < 8; ++i)
            len = len << 8 | raw[i];
        if (len >= 8)
            for (int i = 0; i < 8; ++i)
                key = key << 8 | raw[8 + static_cast<std::size_t>(i)];
    }
    return r;
}

} // namespace xenft::arbiter
