// The logging channel's sender and receiver; see channel.hpp.
#include "xenft/channel/channel.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <system_error>

namespace xenft::channel {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kMaxFrameBytes = 256 * 1024; // close a frame early when its body is this large
constexpr std::size_t kMaxPendingHandshakes = 4;
constexpr Seq kAckEvery = 4096; // ack at least this often even without a timer
constexpr std::size_t kCopyInSocketBytes = 1u << 20; // compressed copy bytes queued on the TLS stream

void log_line(const ChannelConfig& cfg, const std::string& line)
{
    if (cfg.log)
        cfg.log(line);
    else
        std::cerr << "xenft channel: " << line << "\n";
}

Micros since(Clock::time_point t) { return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count(); }

int ms_until(Clock::time_point t)
{
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(t - Clock::now()).count();
    return us <= 0 ? 0 : static_cast<int>((us + 999) / 1000);
}

void set_nodelay(int fd)
{
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// What an entry costs in the receiver's buffer, for flow control.
std::size_t entry_cost(const logformat::Entry& e)
{
    std::size_t n = 48;
    if (const auto* d = std::get_if<logformat::DmaWrite>(&e.payload))
        n += d->data.size();
    else if (const auto* r = std::get_if<logformat::NetRx>(&e.payload))
        n += r->frame.size();
    else if (const auto* k = std::get_if<logformat::DiskRead>(&e.payload))
        n += k->data.size();
    return n;
}

} // namespace

// ---- sender ----------------------------------------------------------------------------------

LogSender::LogSender(ChannelConfig cfg, const TlsContext& tls)
    : cfg_(std::move(cfg)), tls_(tls), wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC))
{
    if (!wake_fd_.valid())
        throw std::system_error(errno, std::generic_category(), "logging channel: eventfd");
}

void LogSender::wake()
{
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_.get(), &one, sizeof one);
}

bool LogSender::append(const logformat::Entry& e)
{
    std::lock_guard lock(mu_);
    if (first_append_) {
        if (e.seq == 0)
            throw std::invalid_argument("log sequence numbers start at 1");
        next_seq_ = e.seq;
        acked_ = e.seq - 1;
        first_append_ = false;
    }
    if (e.seq != next_seq_)
        throw std::invalid_argument("log entry " + std::to_string(e.seq) + " appended after " +
                                    std::to_string(next_seq_ - 1));
    if (unacked_bytes_ + open_.body_bytes() >= cfg_.buffer_bytes)
        return false;
    if (open_.entry_count() > 0 && open_.epoch() != e.epoch)
        close_frame();
    if (open_.entry_count() == 0) {
        open_.restart(e.epoch, e.seq);
        open_since_ = Clock::now();
    }
    open_.append(e);
    ++next_seq_;
    if (open_.entry_count() >= cfg_.entries_per_frame || open_.body_bytes() >= kMaxFrameBytes)
        close_frame();
    return true;
}

void LogSender::close_frame()
{
    if (open_.entry_count() == 0)
        return;
    const Seq first = open_.next_seq() - open_.entry_count();
    Frame f{first, open_.next_seq() - 1, open_.finish(), open_since_};
    unacked_bytes_ += f.bytes.size();
    unacked_.push_back(std::move(f));
}

void LogSender::flush(bool output_waiting)
{
    {
        std::lock_guard lock(mu_);
        close_frame();
        flush_requested_ = true;
        ack_now_requested_ = ack_now_requested_ || output_waiting;
    }
    wake();
}

Seq LogSender::acked() const
{
    std::lock_guard lock(mu_);
    return acked_;
}

Seq LogSender::appended() const
{
    std::lock_guard lock(mu_);
    return next_seq_ - 1;
}

bool LogSender::full() const
{
    std::lock_guard lock(mu_);
    return unacked_bytes_ + open_.body_bytes() >= cfg_.buffer_bytes;
}

void LogSender::send_unsent(bool ack_now)
{
    // Frames are immutable once closed and only this thread removes them, so they can be
    // compressed without holding the lock while the producer keeps appending.
    std::vector<const Frame*> batch;
    {
        std::lock_guard lock(mu_);
        for (; unsent_ < unacked_.size(); ++unsent_)
            batch.push_back(&unacked_[unsent_]);
    }
    if (batch.empty())
        return;
    std::vector<std::uint8_t> wire;
    for (const Frame* f : batch) {
        compressor_->add(f->bytes, wire);
        raw_sent_ += f->bytes.size();
    }
    compressor_->flush(ack_now, wire);
    wire_sent_ += wire.size();
    stream_->queue(wire.data(), wire.size());
    if (stream_->flush() == TlsStream::Io::error)
        disconnect(stream_->error());
}

Lag LogSender::lag() const
{
    std::lock_guard lock(mu_);
    Lag l;
    l.entries = next_seq_ - 1 - acked_;
    l.bytes = unacked_bytes_ + open_.body_bytes();
    if (!unacked_.empty())
        l.seconds = static_cast<double>(since(unacked_.front().appended_at)) / 1e6;
    else if (open_.entry_count() > 0)
        l.seconds = static_cast<double>(since(open_since_)) / 1e6;
    return l;
}

bool LogSender::append_copy(const CopyRecord& r)
{
    if (!cfg_.send_copy)
        throw std::logic_error("live copy records on a sender made without send_copy");
    {
        std::lock_guard lock(mu_);
        if (copy_queue_bytes_ >= kCopyQueueBytes)
            return false;
        copy_queue_.push_back(encode_copy_record(r));
        copy_queue_bytes_ += copy_queue_.back().size();
    }
    wake();
    return true;
}

std::size_t LogSender::copy_backlog() const
{
    std::lock_guard lock(mu_);
    return copy_queue_bytes_ + copy_in_socket_;
}

std::string LogSender::copy_error() const
{
    std::lock_guard lock(mu_);
    return copy_error_;
}

void LogSender::send_copy()
{
    // Compress here, on the channel thread, so the VM's thread only copies pages; keep about
    // kCopyInSocketBytes on the TLS stream so the socket never runs dry nor hoards the copy.
    while (state_ == State::copying && stream_->pending() < kCopyInSocketBytes) {
        std::vector<std::uint8_t> raw;
        {
            std::lock_guard lock(mu_);
            if (copy_queue_.empty())
                break;
            raw = std::move(copy_queue_.front());
            copy_queue_.pop_front();
            copy_queue_bytes_ -= raw.size();
        }
        std::vector<std::uint8_t> wire;
        append_message(wire, CopyChunk{compress_copy_record(raw, cfg_.zstd_level)});
        raw_sent_ += raw.size();
        wire_sent_ += wire.size();
        stream_->queue(wire.data(), wire.size());
        copy_progress_at_ = Clock::now();
    }
    if (state_ != State::copying)
        return;
    const std::size_t before = stream_->pending();
    if (stream_->flush() == TlsStream::Io::error)
        return disconnect(stream_->error());
    if (stream_->pending() < before)
        copy_progress_at_ = Clock::now();
    copy_in_socket_ = stream_->pending();
}

void LogSender::start_connect()
{
    UniqueFd fd(::socket(cfg_.address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid())
        return disconnect(std::string("socket: ") + std::strerror(errno));
    set_nodelay(fd.get());
    if (::connect(fd.get(), cfg_.address.get(), cfg_.address.length) != 0 && errno != EINPROGRESS)
        return disconnect(std::string("cannot connect: ") + std::strerror(errno));
    connecting_fd_ = std::move(fd);
    state_ = State::connecting;
    deadline_ = Clock::now() + std::chrono::microseconds(cfg_.handshake_timeout);
}

void LogSender::disconnect(std::string why)
{
    if (state_ != State::disconnected || !why.empty())
        log_line(cfg_, "backup " + cfg_.address.to_string() + ": " + why);
    stream_.reset();
    connecting_fd_.reset();
    compressor_.reset();
    reader_ = MessageReader();
    {
        std::lock_guard lock(mu_);
        unsent_ = 0; // everything unacked goes again on the next connection
    }
    state_ = State::disconnected;
    retry_at_ = Clock::now() + std::chrono::microseconds(cfg_.reconnect_delay);
    if (cfg_.send_copy && copy_state_ != CopyState::done) {
        // A copy is not resumed on a new connection: the primary starts over when the backup
        // asks again (copy.hpp).
        {
            std::lock_guard lock(mu_);
            copy_error_ = why.empty() ? "the connection broke" : why;
            copy_queue_.clear();
            copy_queue_bytes_ = 0;
        }
        copy_in_socket_ = 0;
        copy_state_ = CopyState::failed;
        retry_at_ = Clock::time_point::max();
    }
}

void LogSender::on_message(const ChannelMsg& m)
{
    // Forgets frames the backup holds (with mu_ held).
    auto drop_acked = [this] {
        while (!unacked_.empty() && unacked_.front().last <= acked_) {
            unacked_bytes_ -= unacked_.front().bytes.size();
            unacked_.pop_front();
            if (unsent_ > 0)
                --unsent_;
        }
    };
    if (const auto* reply = std::get_if<HelloReply>(&m); reply && state_ == State::awaiting_reply) {
        if (!reply->accepted)
            return disconnect("refused the connection: " + reply->reason);
        Seq resend_from = 0;
        std::string wrong; // decided under the lock, acted on without it (disconnect takes it)
        {
            std::lock_guard lock(mu_);
            if (reply->received > next_seq_ - 1) {
                wrong = "claims entry " + std::to_string(reply->received) + " but only " + std::to_string(next_seq_ - 1) +
                        " were appended";
            } else if (reply->received < acked_ && !first_append_) {
                lost_log_ = true;
                wrong = "holds entry " + std::to_string(reply->received) + " but had acked " + std::to_string(acked_) +
                        ": it restarted and lost its log";
            } else {
                acked_ = std::max(acked_, reply->received);
                unsent_ = 0;
                drop_acked();
                resend_from = acked_ + 1;
            }
        }
        if (!wrong.empty()) {
            disconnect(wrong);
            if (lost_log_)
                retry_at_ = Clock::time_point::max(); // nothing to resend would help that backup
            return;
        }
        ++connections_;
        if (cfg_.send_copy && copy_state_ == CopyState::none) {
            state_ = State::copying;
            copy_state_ = CopyState::copying;
            copy_progress_at_ = Clock::now();
            log_line(cfg_, "backup " + cfg_.address.to_string() + ": sending a live copy of the VM");
            return send_copy();
        }
        compressor_.emplace(cfg_.zstd_level);
        state_ = State::streaming;
        if (connections_ > 1)
            log_line(cfg_, "backup " + cfg_.address.to_string() + ": reconnected, resending from entry " +
                               std::to_string(resend_from));
        send_unsent(true);
        return;
    }
    if (const auto* done = std::get_if<CopyDone>(&m); done && state_ == State::copying) {
        if (!done->ok)
            return disconnect("could not apply the live copy: " + done->reason);
        std::vector<std::uint8_t> confirm;
        append_message(confirm, CopyDone{true, {}});
        stream_->queue(confirm.data(), confirm.size());
        compressor_.emplace(cfg_.zstd_level);
        copy_in_socket_ = 0;
        copy_state_ = CopyState::done;
        state_ = State::streaming;
        send_unsent(true);
        return;
    }
    if (const auto* ack = std::get_if<Ack>(&m); ack && state_ == State::streaming) {
        std::string wrong;
        {
            std::lock_guard lock(mu_);
            if (ack->acked > next_seq_ - 1) {
                wrong = "acked entry " + std::to_string(ack->acked) + " beyond the last appended, " +
                        std::to_string(next_seq_ - 1);
            } else {
                acked_ = std::max(acked_, ack->acked);
                drop_acked();
            }
        }
        if (!wrong.empty())
            disconnect(wrong);
        return;
    }
    disconnect("sent an unexpected message");
}

void LogSender::pump(int timeout_ms)
{
    if (state_ == State::disconnected && Clock::now() >= retry_at_)
        start_connect();

    // Whatever the producer asked for, or a batch that has waited long enough.
    auto send_due = [this] {
        if (state_ != State::streaming)
            return;
        bool due = false, ack_now = false;
        {
            std::lock_guard lock(mu_);
            if (open_.entry_count() > 0 && since(open_since_) >= cfg_.batch_delay)
                close_frame();
            due = flush_requested_ || unsent_ < unacked_.size();
            ack_now = ack_now_requested_;
            flush_requested_ = ack_now_requested_ = false;
        }
        if (due)
            send_unsent(ack_now);
    };
    send_due();
    if (state_ == State::copying)
        send_copy();

    pollfd p[2] = {{-1, 0, 0}, {wake_fd_.get(), POLLIN, 0}};
    Clock::time_point wake_at = Clock::now() + std::chrono::milliseconds(timeout_ms);
    switch (state_) {
    case State::disconnected:
        wake_at = std::min(wake_at, retry_at_);
        break;
    case State::connecting:
        p[0] = {connecting_fd_.get(), POLLOUT, 0};
        break;
    default:
        p[0] = {stream_->fd(), static_cast<short>(POLLIN | (stream_->pending() > 0 ? POLLOUT : 0)), 0};
        break;
    }
    if (state_ == State::streaming) {
        std::lock_guard lock(mu_);
        if (open_.entry_count() > 0)
            wake_at = std::min(wake_at, open_since_ + std::chrono::microseconds(cfg_.batch_delay));
    }
    if (state_ != State::disconnected && state_ != State::streaming && state_ != State::copying)
        wake_at = std::min(wake_at, deadline_);
    ::poll(p, 2, ms_until(wake_at));
    if (p[1].revents & POLLIN) {
        std::uint64_t n = 0;
        (void)!::read(wake_fd_.get(), &n, sizeof n);
    }
    send_due();
    if (state_ == State::copying)
        send_copy();

    if (state_ == State::connecting && p[0].revents != 0) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(connecting_fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0)
            return disconnect(std::string("cannot connect: ") + std::strerror(err));
        stream_.emplace(tls_, std::move(connecting_fd_));
        state_ = State::handshaking;
    }
    if (state_ == State::handshaking) {
        const auto r = stream_->handshake();
        if (r == TlsStream::Io::error || r == TlsStream::Io::closed)
            return disconnect(stream_->error().empty() ? "closed the connection during the TLS handshake" : stream_->error());
        if (r == TlsStream::Io::done) {
            std::vector<std::uint8_t> hello;
            append_message(hello, Hello{cfg_.vm_id, cfg_.self, cfg_.epoch, cfg_.send_copy && copy_state_ == CopyState::none});
            stream_->queue(hello.data(), hello.size());
            state_ = State::awaiting_reply;
        }
    }
    if (state_ == State::awaiting_reply || state_ == State::copying || state_ == State::streaming) {
        // What came before the end of the stream is read first: a refusal's reason, say.
        std::string ended;
        for (;;) {
            std::vector<std::uint8_t> buf;
            const auto r = stream_->read(buf, kReadChunk);
            if (r == TlsStream::Io::closed)
                ended = "closed the connection";
            else if (r == TlsStream::Io::error)
                ended = stream_->error();
            if (r != TlsStream::Io::done)
                break;
            reader_.feed(buf);
        }
        for (;;) {
            auto m = reader_.next();
            if (!m)
                return disconnect("protocol error: " + m.error());
            if (!*m)
                break;
            on_message(**m);
            if (state_ == State::disconnected)
                return;
        }
        if (!ended.empty())
            return disconnect(ended);
        if (stream_->flush() == TlsStream::Io::error)
            return disconnect(stream_->error());
    }
    if (state_ == State::copying && since(copy_progress_at_) >= cfg_.copy_stall_timeout)
        return disconnect("the live copy made no progress for " + std::to_string(cfg_.copy_stall_timeout / 1000) + " ms");
    if (state_ != State::disconnected && state_ != State::streaming && state_ != State::copying &&
        Clock::now() >= deadline_)
        disconnect("no TLS session within " + std::to_string(cfg_.handshake_timeout / 1000) + " ms");
}

// ---- receiver --------------------------------------------------------------------------------

Expected<LogReceiver, std::string> LogReceiver::listen(ChannelConfig cfg, const TlsContext& tls)
{
    UniqueFd fd(::socket(cfg.address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid())
        return unexpected(std::string("logging channel: socket: ") + std::strerror(errno));
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), cfg.address.get(), cfg.address.length) != 0 || ::listen(fd.get(), 8) != 0)
        return unexpected("logging channel: cannot listen on " + cfg.address.to_string() + ": " + std::strerror(errno));
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    const auto port = ss.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in&>(ss).sin_port)
                                              : ntohs(reinterpret_cast<sockaddr_in6&>(ss).sin6_port);
    return LogReceiver(std::move(cfg), tls, std::move(fd), port);
}

std::optional<logformat::Entry> LogReceiver::pop()
{
    if (buffer_.empty())
        return std::nullopt;
    logformat::Entry e = std::move(buffer_.front());
    buffer_.pop_front();
    buffer_bytes_ -= entry_cost(e);
    return e;
}

void LogReceiver::await_copy(std::uint64_t epoch)
{
    cfg_.epoch = epoch;
    copy_phase_ = CopyPhase::awaiting;
    copies_.clear();
    buffer_.clear();
    buffer_bytes_ = 0;
    received_ = acked_sent_ = 0;
    if (active_) {
        log_line(cfg_, "primary " + active_->peer + ": connection closed: this backup now needs a live copy");
        active_.reset();
    }
}

std::optional<LogReceiver::ReceivedCopy> LogReceiver::pop_copy()
{
    // Built in place: GCC 12 warns falsely about a moved variant of vectors otherwise.
    std::optional<ReceivedCopy> r;
    if (copies_.empty())
        return r;
    r.emplace(std::move(copies_.front()));
    copies_.pop_front();
    if (const auto* p = std::get_if<CopyPages>(&r->record))
        buffer_bytes_ -= std::min(buffer_bytes_, p->data.size());
    return r;
}

void LogReceiver::copy_applied(std::uint64_t attempt, bool ok, const std::string& reason)
{
    if (attempt != copy_attempt_ || copy_phase_ != CopyPhase::applying || !active_)
        return; // that copy's connection is gone; the primary starts over
    std::vector<std::uint8_t> out;
    append_message(out, CopyDone{ok, reason});
    active_->stream.queue(out.data(), out.size());
    copy_phase_ = ok ? CopyPhase::answered : CopyPhase::awaiting;
    if (!ok)
        log_line(cfg_, "primary " + active_->peer + ": live copy refused: " + reason);
}

void LogReceiver::drop_active()
{
    active_.reset();
    acked_sent_ = received_;
    if (copy_phase_ == CopyPhase::receiving || copy_phase_ == CopyPhase::applying || copy_phase_ == CopyPhase::answered) {
        copy_phase_ = CopyPhase::awaiting;
        copies_.clear();
        buffer_.clear();
        buffer_bytes_ = 0;
        received_ = acked_sent_ = 0;
    }
}

bool LogReceiver::on_copy_message(Conn& c, const ChannelMsg& m)
{
    if (const auto* chunk = std::get_if<CopyChunk>(&m); chunk && copy_phase_ == CopyPhase::receiving) {
        auto rec = decompress_copy_record(chunk->compressed);
        if (!rec) {
            log_line(cfg_, "primary " + c.peer + ": live copy: " + rec.error());
            return false;
        }
        if (const auto* f = std::get_if<CopyFinal>(&*rec)) {
            if (f->epoch != cfg_.epoch) {
                log_line(cfg_, "primary " + c.peer + ": live copy of epoch " + std::to_string(f->epoch) +
                                   " on a connection of epoch " + std::to_string(cfg_.epoch));
                return false;
            }
            // The log continues after the copy's last entry; what follows is buffered as usual.
            received_ = acked_sent_ = f->next_seq - 1;
            copy_phase_ = CopyPhase::applying;
        } else if (const auto* p = std::get_if<CopyPages>(&*rec)) {
            buffer_bytes_ += p->data.size();
        }
        copies_.push_back({copy_attempt_, std::move(rec).value()});
        return true;
    }
    if (const auto* done = std::get_if<CopyDone>(&m); done && done->ok && copy_phase_ == CopyPhase::answered) {
        copy_phase_ = CopyPhase::confirmed;
        log_line(cfg_, "primary " + c.peer + ": live copy confirmed; the log follows from entry " +
                           std::to_string(received_ + 1));
        return true;
    }
    log_line(cfg_, "primary " + c.peer + ": unexpected message during the live copy");
    return false;
}

void LogReceiver::send_ack(Conn& c)
{
    std::vector<std::uint8_t> out;
    append_message(out, Ack{received_});
    c.stream.queue(out.data(), out.size());
    acked_sent_ = received_;
    ack_now_ = false;
}

bool LogReceiver::on_message(Conn& c, const ChannelMsg& m, bool& promote)
{
    if (const auto* h = std::get_if<Hello>(&m); h && !c.hello) {
        std::string refusal;
        if (h->vm_id != cfg_.vm_id)
            refusal = "VM " + std::to_string(h->vm_id) + " is not protected here (this backup replays VM " +
                      std::to_string(cfg_.vm_id) + ")";
        else if (h->host != cfg_.peer)
            refusal = "host " + std::to_string(h->host) + " is not this VM's primary (expected host " +
                      std::to_string(cfg_.peer) + ")";
        else if (h->epoch != cfg_.epoch && !(h->copy && h->epoch > cfg_.epoch && copy_phase_ == CopyPhase::awaiting))
            refusal = std::string(h->epoch < cfg_.epoch ? "older" : "newer") + " epoch " + std::to_string(h->epoch) +
                      ", this backup is in epoch " + std::to_string(cfg_.epoch);
        else if (!h->copy && copy_phase_ != CopyPhase::none && copy_phase_ != CopyPhase::confirmed)
            refusal = "this backup has no copy of the VM yet: it needs a live copy first";
        else if (h->copy && copy_phase_ != CopyPhase::awaiting && copy_phase_ != CopyPhase::receiving &&
                 copy_phase_ != CopyPhase::applying && copy_phase_ != CopyPhase::answered)
            refusal = "this backup already replays the VM's log: it needs no copy";
        std::vector<std::uint8_t> out;
        append_message(out, HelloReply{refusal.empty(), received_, refusal});
        c.stream.queue(out.data(), out.size());
        if (!refusal.empty()) {
            (void)c.stream.flush();
            log_line(cfg_, "refused primary " + c.peer + ": " + refusal);
            return false;
        }
        c.hello = true;
        promote = true;
        if (h->copy && h->epoch > cfg_.epoch) {
            // A backup without a copy has no state of its own: it takes the VM in whatever
            // newer epoch the primary runs it (the primary claimed the VM after this backup
            // read the arbitration record).
            log_line(cfg_, "primary " + c.peer + " runs the VM in epoch " + std::to_string(h->epoch) +
                               ", this backup knew epoch " + std::to_string(cfg_.epoch) + ": taking its copy in epoch " +
                               std::to_string(h->epoch));
            cfg_.epoch = h->epoch;
        }
        if (h->copy) {
            // A new copy replaces any earlier, unfinished one.
            copy_phase_ = CopyPhase::receiving;
            ++copy_attempt_;
            copies_.clear();
            buffer_.clear();
            buffer_bytes_ = 0;
            received_ = 0;
        }
        acked_sent_ = received_;
        return true;
    }
    if (c.hello && (std::holds_alternative<CopyChunk>(m) || std::holds_alternative<CopyDone>(m)))
        return on_copy_message(c, m);
    if (std::holds_alternative<LogChunk>(m) && copy_phase_ != CopyPhase::none && copy_phase_ != CopyPhase::confirmed &&
        copy_phase_ != CopyPhase::answered) {
        log_line(cfg_, "primary " + c.peer + ": log before the live copy was complete");
        return false;
    }
    if (const auto* chunk = std::get_if<LogChunk>(&m); chunk && c.hello) {
        std::string error;
        auto fed = c.decompressor.feed(chunk->compressed, [&](logformat::Frame&& f) {
            if (!error.empty())
                return;
            if (f.epoch != cfg_.epoch) {
                error = "log of epoch " + std::to_string(f.epoch) + " on a connection of epoch " + std::to_string(cfg_.epoch);
                return;
            }
            for (auto& e : f.entries) {
                if (e.seq <= received_)
                    continue; // resent after a reconnect: already here
                if (e.seq != received_ + 1) {
                    error = "log jumps from entry " + std::to_string(received_) + " to " + std::to_string(e.seq);
                    return;
                }
                buffer_bytes_ += entry_cost(e);
                received_ = e.seq;
                buffer_.push_back(std::move(e));
            }
        });
        if (!fed)
            error = fed.error();
        if (!error.empty()) {
            log_line(cfg_, "primary " + c.peer + ": " + error);
            return false;
        }
        if (received_ > acked_sent_ && !ack_now_ && unacked_since_ <= Clock::time_point{})
            unacked_since_ = Clock::now();
        ack_now_ = ack_now_ || chunk->ack_now;
        return true;
    }
    log_line(cfg_, "primary " + c.peer + ": unexpected message");
    return false;
}

bool LogReceiver::service(Conn& c, bool is_active)
{
    if (!c.handshaken) {
        const auto r = c.stream.handshake();
        if (r == TlsStream::Io::want_read || r == TlsStream::Io::want_write)
            return true;
        if (r != TlsStream::Io::done) {
            log_line(cfg_, "connection from " + c.peer + " refused: " +
                               (c.stream.error().empty() ? "closed during the TLS handshake" : c.stream.error()));
            return false;
        }
        c.handshaken = true;
    }
    bool promote = false;
    // Handles every complete message already read: <0 drop the connection, >0 promoted.
    auto drain = [&]() -> int {
        for (;;) {
            auto m = c.reader.next();
            if (!m) {
                log_line(cfg_, "primary " + c.peer + ": protocol error: " + m.error());
                return -1;
            }
            if (!*m)
                return 0;
            if (!on_message(c, **m, promote))
                return -1;
            if (promote && !is_active)
                return 1;
        }
    };
    if (drain() < 0)
        return false;
    // A bounded number of reads per pump keeps acks and other connections moving under load.
    for (int reads = 0; reads < 32 && !promote && !(is_active && reads_held()); ++reads) {
        std::vector<std::uint8_t> buf;
        const auto r = c.stream.read(buf, kReadChunk);
        if (r == TlsStream::Io::closed) {
            log_line(cfg_, "primary " + c.peer + " closed the connection");
            return false;
        }
        if (r == TlsStream::Io::error) {
            log_line(cfg_, "primary " + c.peer + ": " + c.stream.error());
            return false;
        }
        if (r != TlsStream::Io::done)
            break;
        c.reader.feed(buf);
        if (drain() < 0)
            return false;
        if (ack_now_)
            break;
    }
    if (promote && !is_active) {
        if (active_)
            log_line(cfg_, "primary " + active_->peer + ": replaced by a new connection from " + c.peer);
        active_.emplace(std::move(c));

        ++accepted_;
        return false; // moved out of pending
    }
    return c.stream.flush() != TlsStream::Io::error;
}

void LogReceiver::pump(int timeout_ms)
{
    std::vector<pollfd> fds;
    fds.push_back({listener_.get(), POLLIN, 0});
    const bool full = reads_held();
    if (active_)
        fds.push_back({active_->stream.fd(), static_cast<short>((full ? 0 : POLLIN) | (active_->stream.pending() ? POLLOUT : 0)), 0});
    for (auto& c : pending_)
        fds.push_back({c.stream.fd(), static_cast<short>(POLLIN | (c.stream.pending() ? POLLOUT : 0)), 0});
    Clock::time_point wake = Clock::now() + std::chrono::milliseconds(timeout_ms);
    if (active_ && received_ > acked_sent_)
        wake = std::min(wake, unacked_since_ + std::chrono::microseconds(cfg_.ack_delay));
    ::poll(fds.data(), fds.size(), ack_now_ ? 0 : ms_until(wake));

    for (;;) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        UniqueFd fd(::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd.valid())
            break;
        const std::string peer = SocketAddress::from(ss, len).to_string();
        if (pending_.size() >= kMaxPendingHandshakes) {
            log_line(cfg_, "connection from " + peer + " dropped: too many handshakes in progress");
            continue;
        }
        set_nodelay(fd.get());
        pending_.push_back(Conn{TlsStream(tls_, std::move(fd)), peer, false, false, {}, {},
                                Clock::now() + std::chrono::microseconds(cfg_.handshake_timeout)});
    }

    if (active_ && !service(*active_, true))
        drop_active();
    for (std::size_t i = 0; i < pending_.size();) {
        const bool keep = service(pending_[i], false);
        if (keep && Clock::now() >= pending_[i].deadline) {
            log_line(cfg_, "connection from " + pending_[i].peer + " dropped: no hello within " +
                               std::to_string(cfg_.handshake_timeout / 1000) + " ms");
        } else if (keep) {
            ++i;
            continue;
        }
        pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    }

    if (active_ && received_ > acked_sent_ &&
        (ack_now_ || since(unacked_since_) >= cfg_.ack_delay || received_ - acked_sent_ >= kAckEvery)) {
        send_ack(*active_);
        unacked_since_ = Clock::time_point{};
    }
    if (active_ && active_->stream.flush() == TlsStream::Io::error) {
        log_line(cfg_, "primary " + active_->peer + ": " + active_->stream.error());
        drop_active();
    }
}

} // namespace xenft::channel
