// The logging channel: the primary's LogSender streams log entries to the backup's LogReceiver
// over TLS 1.3 (tls.hpp), zstd-compressed and batched (wire.hpp).
//
// - Sequence numbers: the backup acks the highest contiguous entry in its buffer, coalesced
//   (at most ack_delay late, or at once when the primary flags an output waiting).
// - Flow control: the sender keeps every unacked entry (for resending) within buffer_bytes;
//   past that, append() refuses and the VM must stall. The receiver stops reading when its
//   buffer holds buffer_bytes or its owner closes the intake (the backup's replay is too far
//   behind: protocol::Replica::takes_log); an empty buffer stalls replay.
// - Reconnect: after a broken connection the sender reconnects, the receiver's hello reply says
//   what it holds, and the sender resends the rest; duplicates are dropped by sequence number.
// - Refusals: wrong certificate, wrong name, wrong VM or host, another epoch: the connection is
//   dropped with a log line that names the peer and the cause.
// - Live copy (re-protection, copy.hpp): a sender made with send_copy opens its first
//   connection with the copy flag and sends the copy records before any log entry; a receiver
//   told to await_copy() accepts only such a connection and hands the records to its owner,
//   who applies them and answers through copy_applied(). The sender confirms, and the log
//   follows on the same connection. A copy whose connection breaks is not resumed: it fails,
//   and the primary starts a new one when the backup asks again.
// Threads: LogSender's producer side (append, flush, acked, full, lag) may be called from the
// VM's thread while another thread runs pump(), so encoding stays with the producer and
// compression and TLS with the channel thread; a flush wakes pump() through an eventfd.
// LogReceiver is single-threaded: its owner calls pump() and pop() from one event loop.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <functional>
#include <optional>
#include <string>

#include "xenft/channel/copy.hpp"
#include "xenft/channel/tls.hpp"
#include "xenft/channel/wire.hpp"
#include "xenft/common/socket_address.hpp"
#include "xenft/logformat/entry.hpp"

namespace xenft::channel {

using Seq = std::uint64_t;
using Micros = std::int64_t;

struct ChannelConfig {
    SocketAddress address;               // sender: the backup's address; receiver: where to listen
    std::uint64_t vm_id = 0;
    std::uint32_t self = 0;              // host ids, checked in the hello
    std::uint32_t peer = 0;
    std::uint64_t epoch = 0;
    int zstd_level = 1;
    std::size_t buffer_bytes = 64u << 20;
    std::size_t entries_per_frame = 1024;
    // Sender: longest wait before an unforced flush. An output waiting flushes at once, so this
    // only trades the backup's lag for log bandwidth: at 10 ms an idle guest's per-batch framing
    // stops dominating its log (see docs/channel.md).
    Micros batch_delay = 10'000;
    Micros ack_delay = 1000;             // receiver: longest wait before an ack
    Micros reconnect_delay = 100'000;
    Micros handshake_timeout = 5'000'000;
    // Longest a live copy may make no progress: the backup applying the final state of a guest
    // under emulation took over 4.6 s in the lab, and a copy cancelled then leaves it replaying
    // a copy nobody confirmed (it halts and joins again).
    Micros copy_stall_timeout = 10'000'000;
    bool send_copy = false;              // sender: a live copy of the VM goes first (see above)
    // Where errors and notices go (default: stderr). Lines name the peer and the cause.
    std::function<void(const std::string&)> log;
};

enum class CopyState : std::uint8_t { none, copying, done, failed };

struct Lag {
    std::uint64_t entries = 0; // appended but not acked
    std::uint64_t bytes = 0;   // encoded bytes of those
    double seconds = 0;        // age of the oldest of those
};

class LogSender {
public:
    LogSender(ChannelConfig cfg, const TlsContext& tls);

    // ---- producer side: any one thread -------------------------------------------------------
    // Adds the next entry (its seq must follow the last). Returns false, taking nothing, when
    // buffer_bytes are unacked: the VM must stall until acks make room.
    bool append(const logformat::Entry& e);
    // Sends everything appended so far now. output_waiting asks the backup to ack at once.
    void flush(bool output_waiting);
    Seq acked() const;
    Seq appended() const;
    bool full() const;
    Lag lag() const;
    // Live copy (send_copy senders, before the first log entry): queues a record. False, taking
    // nothing, while kCopyQueueBytes wait: the producer runs its VM a little and tries again.
    static constexpr std::size_t kCopyQueueBytes = 8u << 20;
    bool append_copy(const CopyRecord& r);
    // Copy bytes queued or written but not yet taken by the socket.
    std::size_t copy_backlog() const;
    CopyState copy_state() const noexcept { return copy_state_; }
    std::string copy_error() const;

    // ---- channel side: one thread ------------------------------------------------------------
    // Connects, handshakes, compresses, writes and reads for up to timeout_ms.
    void pump(int timeout_ms);
    bool streaming() const noexcept { return state_ == State::streaming; }
    // The backup answered with less log than it had acked: it restarted and lost its buffer,
    // so the unacked tail is all this sender could resend. The sender stops; the pair must
    // be formed again (protocol::BackupRestarted).
    bool backup_lost_log() const noexcept { return lost_log_; }
    std::uint64_t connections() const noexcept { return connections_; }
    // Bytes before and after compression, since the start (for the log-bandwidth figures).
    std::uint64_t raw_bytes_sent() const noexcept { return raw_sent_; }
    std::uint64_t wire_bytes_sent() const noexcept { return wire_sent_; }

private:
    enum class State { disconnected, connecting, handshaking, awaiting_reply, copying, streaming };
    struct Frame {
        Seq first, last;
        std::vector<std::uint8_t> bytes;
        std::chrono::steady_clock::time_point appended_at;
    };
    void close_frame(); // with mu_ held
    void send_unsent(bool ack_now);
    void send_copy();
    void start_connect();
    void disconnect(std::string why); // by value: callers pass strings of the stream it closes
    void on_message(const ChannelMsg& m);
    void wake();

    ChannelConfig cfg_;
    const TlsContext& tls_;
    UniqueFd wake_fd_; // eventfd: the producer's flush wakes pump()

    // Shared between the producer and the channel thread.
    mutable std::mutex mu_;
    logformat::FrameEncoder open_{0, 1}; // the frame being filled (reused, keeps its buffer)
    std::chrono::steady_clock::time_point open_since_;
    std::deque<Frame> unacked_; // the producer only appends; only pump() removes
    std::size_t unsent_ = 0;    // index into unacked_ of the first frame not sent on this connection
    std::size_t unacked_bytes_ = 0;
    Seq next_seq_ = 1;
    Seq acked_ = 0;
    bool first_append_ = true;
    bool flush_requested_ = false;
    bool ack_now_requested_ = false;
    std::deque<std::vector<std::uint8_t>> copy_queue_; // encoded copy records
    std::size_t copy_queue_bytes_ = 0;
    std::string copy_error_;

    // Channel thread only.
    std::atomic<State> state_{State::disconnected};
    UniqueFd connecting_fd_;
    std::optional<TlsStream> stream_;
    std::optional<LogCompressor> compressor_;
    MessageReader reader_;
    std::chrono::steady_clock::time_point retry_at_{}, deadline_{};
    std::atomic<std::uint64_t> connections_{0}, raw_sent_{0}, wire_sent_{0};
    std::atomic<CopyState> copy_state_{CopyState::none};
    std::atomic<bool> lost_log_{false};
    std::atomic<std::size_t> copy_in_socket_{0};
    std::chrono::steady_clock::time_point copy_progress_at_{};
};

class LogReceiver {
public:
    static Expected<LogReceiver, std::string> listen(ChannelConfig cfg, const TlsContext& tls);

    void pump(int timeout_ms);
    // The next entry to replay, or nothing: the buffer is empty and replay must stall.
    std::optional<logformat::Entry> pop();
    bool empty() const noexcept { return buffer_.empty(); }
    Seq received() const noexcept { return received_; }
    // The last entry the primary was told this receiver holds.
    Seq acks_sent() const noexcept { return acked_sent_; }
    std::size_t buffered_bytes() const noexcept { return buffer_bytes_; }
    // Flow control from the owner: while closed, nothing more is read from the primary (so
    // nothing more is acked); acks of what was read and new connections still go on.
    void set_intake(bool open) noexcept { intake_open_ = open; }
    bool connected() const noexcept { return active_.has_value(); }
    void set_epoch(std::uint64_t e) { cfg_.epoch = e; }
    // The epoch it accepts a primary of (a live copy from a newer one moves it there).
    std::uint64_t epoch() const noexcept { return cfg_.epoch; }

    // Live copy. From now on only a primary of `epoch` or a newer one sending a copy is
    // accepted (the receiver then takes the copy's epoch); the buffer starts over.
    void await_copy(std::uint64_t epoch);
    struct ReceivedCopy {
        std::uint64_t attempt; // a new connection's copy starts over with a higher attempt
        CopyRecord record;
    };
    // The next copy record to apply, in order.
    std::optional<ReceivedCopy> pop_copy();
    // The owner applied the final record of `attempt` (or could not): tells the primary.
    void copy_applied(std::uint64_t attempt, bool ok, const std::string& reason);
    // The primary confirmed the copy: log entries from the final record's next_seq follow.
    bool copy_confirmed() const noexcept { return copy_phase_ == CopyPhase::confirmed; }
    std::uint64_t copy_attempt() const noexcept { return copy_attempt_; }
    // The port actually bound (for listening on port 0 in tests).
    std::uint16_t port() const noexcept { return port_; }
    std::uint64_t connections() const noexcept { return accepted_; }

private:
    struct Conn {
        TlsStream stream;
        std::string peer;
        bool handshaken = false;
        bool hello = false;
        MessageReader reader;
        LogDecompressor decompressor;
        std::chrono::steady_clock::time_point deadline;
    };
    LogReceiver(ChannelConfig cfg, const TlsContext& tls, UniqueFd listener, std::uint16_t port)
        : cfg_(std::move(cfg)), tls_(tls), listener_(std::move(listener)), port_(port)
    {
    }
    // Drives one connection; false means drop it (the reason has been logged).
    bool service(Conn& c, bool is_active);
    bool on_message(Conn& c, const ChannelMsg& m, bool& promote);
    bool on_copy_message(Conn& c, const ChannelMsg& m);
    void send_ack(Conn& c);
    // The active connection is gone; a copy in progress on it starts over.
    void drop_active();

    // none: not copying (a replaying backup); awaiting: needs a copy; receiving: records
    // arrive; applying: the final record arrived, the owner applies it; answered: copy_done
    // sent, waiting for the primary's confirmation; confirmed: the log follows.
    enum class CopyPhase : std::uint8_t { none, awaiting, receiving, applying, answered, confirmed };

    ChannelConfig cfg_;
    const TlsContext& tls_;
    UniqueFd listener_;
    std::uint16_t port_;
    std::vector<Conn> pending_;
    std::optional<Conn> active_;
    std::deque<logformat::Entry> buffer_;
    std::size_t buffer_bytes_ = 0;
    bool intake_open_ = true;
    // The buffer is full or the owner closed the intake: the active connection is not read.
    bool reads_held() const noexcept { return buffer_bytes_ >= cfg_.buffer_bytes || !intake_open_; }
    Seq received_ = 0;
    Seq acked_sent_ = 0;
    bool ack_now_ = false;
    std::chrono::steady_clock::time_point unacked_since_{};
    std::uint64_t accepted_ = 0;
    CopyPhase copy_phase_ = CopyPhase::none;
    std::uint64_t copy_attempt_ = 0;
    std::deque<ReceivedCopy> copies_;
};

} // namespace xenft::channel
