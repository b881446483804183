// Frame encoder and decoder; see codec.hpp and docs/log-format.md.
#include "xenft/logformat/codec.hpp"

#include <limits>
#include <stdexcept>

#include "xenft/common/bytes.hpp"
#include "xenft/common/crc32c.hpp"

namespace xenft::logformat {

namespace {

// Entry tag byte.
constexpr std::uint8_t kTagKindMask = 0x1f;
constexpr std::uint8_t kTagHasVcpu = 0x20;
constexpr std::uint8_t kTagAbsExit = 0x40;
constexpr std::uint8_t kTagReserved = 0x80;

// IoRead flags byte.
constexpr std::uint8_t kIoMmio = 0x01;
constexpr std::uint8_t kIoSizeShift = 1; // bits 1-2: log2(size)
constexpr std::uint8_t kIoSameAddress = 0x08;
constexpr std::uint8_t kIoValueDelta = 0x10;
constexpr std::uint8_t kIoReserved = 0xe0;

// TimeRead flags byte.
constexpr std::uint8_t kTimeSourceMask = 0x03;
constexpr std::uint8_t kTimeDelta = 0x04;
constexpr std::uint8_t kTimeReserved = 0xf8;

constexpr std::uint64_t kMaxPort = 0xffff;

std::size_t varint_size(std::uint64_t v) noexcept
{
    std::size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        ++n;
    }
    return n;
}

bool value_fits(std::uint64_t value, std::uint8_t size) noexcept
{
    return size == 8 || value < (std::uint64_t{1} << (8 * size));
}

int log2_size(std::uint8_t size) noexcept
{
    switch (size) {
    case 1: return 0;
    case 2: return 1;
    case 4: return 2;
    case 8: return 3;
    default: return -1;
    }
}

[[noreturn]] void reject(const std::string& what)
{
    throw std::invalid_argument("log entry not encodable: " + what);
}

} // namespace

std::string_view kind_name(Kind k) noexcept
{
    switch (k) {
    case Kind::io_read: return "io_read";
    case Kind::time_read: return "time_read";
    case Kind::interrupt: return "interrupt";
    case Kind::dma_write: return "dma_write";
    case Kind::net_rx: return "net_rx";
    case Kind::disk_read: return "disk_read";
    case Kind::output: return "output";
    case Kind::state_digest: return "state_digest";
    case Kind::protection_start: return "protection_start";
    case Kind::epoch_change: return "epoch_change";
    case Kind::go_live: return "go_live";
    case Kind::xen_record: return "xen_record";
    case Kind::ioreq_stop: return "ioreq_stop";
    case Kind::vm_end: return "vm_end";
    case Kind::writes_done: return "writes_done";
    }
    return "unknown";
}

std::string_view errc_name(DecodeErrc c) noexcept
{
    switch (c) {
    case DecodeErrc::truncated: return "truncated";
    case DecodeErrc::bad_magic: return "bad magic";
    case DecodeErrc::unsupported_version: return "unsupported version";
    case DecodeErrc::reserved_flags: return "reserved frame flags set";
    case DecodeErrc::varint_overlong: return "overlong varint";
    case DecodeErrc::no_entries: return "frame has no entries";
    case DecodeErrc::too_many_entries: return "too many entries";
    case DecodeErrc::sequence_overflow: return "sequence number overflow";
    case DecodeErrc::body_too_large: return "frame body too large";
    case DecodeErrc::bad_crc: return "CRC mismatch";
    case DecodeErrc::unknown_kind: return "unknown entry kind";
    case DecodeErrc::reserved_bits: return "reserved bits set";
    case DecodeErrc::vcpu_out_of_range: return "vCPU out of range";
    case DecodeErrc::exit_without_base: return "exit delta without a base";
    case DecodeErrc::exit_not_monotonic: return "exit number goes backwards";
    case DecodeErrc::exit_overflow: return "exit number overflow";
    case DecodeErrc::missing_context: return "delta without a previous value";
    case DecodeErrc::bad_field: return "invalid field value";
    case DecodeErrc::length_limit: return "length over its limit";
    case DecodeErrc::body_length_mismatch: return "body length does not match its entries";
    }
    return "unknown error";
}

std::string DecodeError::message() const
{
    std::string m = "log frame: ";
    m += errc_name(code);
    m += " at byte " + std::to_string(offset);
    if (!detail.empty())
        m += ": " + detail;
    return m;
}

// ---------------------------------------------------------------------------------------------
// Encoder

FrameEncoder::FrameEncoder(std::uint64_t epoch, std::uint64_t first_seq) : epoch_(epoch), first_seq_(first_seq)
{
    reset_context();
}

void FrameEncoder::restart(std::uint64_t epoch, std::uint64_t first_seq)
{
    epoch_ = epoch;
    first_seq_ = first_seq;
    reset_context();
}

void FrameEncoder::reset_context()
{
    count_ = 0;
    body_.clear();
    last_vcpu_ = 0;
    last_exit_.assign(kMaxVcpus, 0);
    has_exit_.assign(kMaxVcpus, false);
    has_io_ = false;
    has_time_ = false;
}

void FrameEncoder::append(const Entry& e)
{
    if (e.epoch != epoch_)
        reject("epoch " + std::to_string(e.epoch) + " in a frame of epoch " + std::to_string(epoch_));
    if (e.seq != next_seq())
        reject("sequence " + std::to_string(e.seq) + ", expected " + std::to_string(next_seq()));
    if (count_ >= kMaxEntriesPerFrame)
        reject("frame already holds the maximum number of entries");
    if (e.seq == std::numeric_limits<std::uint64_t>::max())
        reject("sequence number space exhausted");
    if (e.vcpu >= kMaxVcpus)
        reject("vCPU " + std::to_string(e.vcpu));
    if (has_exit_[e.vcpu] && e.exit < last_exit_[e.vcpu])
        reject("exit " + std::to_string(e.exit) + " before " + std::to_string(last_exit_[e.vcpu]));

    // Validate the payload before writing anything, so a rejected entry leaves the frame intact.
    std::visit(
        [](const auto& p) {
            using P = std::decay_t<decltype(p)>;
            if constexpr (std::is_same_v<P, IoRead>) {
                if (log2_size(p.size) < 0)
                    reject("I/O size " + std::to_string(p.size));
                if (!value_fits(p.value, p.size))
                    reject("I/O value wider than its size");
                if (p.space == IoSpace::port && p.address > kMaxPort)
                    reject("port address over 0xffff");
            } else if constexpr (std::is_same_v<P, TimeRead>) {
                if (p.source != TimeSource::rdtscp && p.aux != 0)
                    reject("TSC_AUX on a time read that is not RDTSCP");
            } else if constexpr (std::is_same_v<P, DmaWrite>) {
                if (p.data.empty() || p.data.size() > kMaxDmaBytes)
                    reject("DMA length " + std::to_string(p.data.size()));
            } else if constexpr (std::is_same_v<P, NetRx>) {
                if (p.device > kMaxDeviceIndex || p.frame.empty() || p.frame.size() > kMaxNetFrameBytes)
                    reject("network frame of " + std::to_string(p.frame.size()) + " bytes on device " +
                           std::to_string(p.device));
            } else if constexpr (std::is_same_v<P, DiskRead>) {
                if (p.device > kMaxDeviceIndex)
                    reject("disk device " + std::to_string(p.device));
                if (p.mode == DiskRead::Mode::data && (p.data.empty() || p.data.size() > kMaxDiskReadBytes))
                    reject("disk read of " + std::to_string(p.data.size()) + " bytes");
                if (p.mode == DiskRead::Mode::checksum &&
                    (!p.data.empty() || p.length == 0 || p.length > kMaxDiskReadBytes))
                    reject("checksummed disk read of " + std::to_string(p.length) + " bytes");
            } else if constexpr (std::is_same_v<P, Output>) {
                if (p.device > kMaxDeviceIndex)
                    reject("output device " + std::to_string(p.device));
            } else if constexpr (std::is_same_v<P, ProtectionStart>) {
                if (p.vcpus == 0 || p.vcpus > kMaxVcpus)
                    reject("protection of " + std::to_string(p.vcpus) + " vCPUs");
            }
        },
        e.payload);
    if (const auto* ec = std::get_if<EpochChange>(&e.payload); ec && ec->new_epoch <= epoch_)
        reject("epoch change to " + std::to_string(ec->new_epoch) + " from " + std::to_string(epoch_));

    ByteWriter w(body_);
    std::uint8_t tag = static_cast<std::uint8_t>(kind_of(e.payload));
    if (e.vcpu != last_vcpu_)
        tag |= kTagHasVcpu;
    if (!has_exit_[e.vcpu])
        tag |= kTagAbsExit;
    w.u8(tag);
    if (tag & kTagHasVcpu)
        w.varint(e.vcpu);
    w.varint((tag & kTagAbsExit) ? e.exit : e.exit - last_exit_[e.vcpu]);
    last_vcpu_ = e.vcpu;
    last_exit_[e.vcpu] = e.exit;
    has_exit_[e.vcpu] = true;

    std::visit(
        [&](const auto& p) {
            using P = std::decay_t<decltype(p)>;
            if constexpr (std::is_same_v<P, IoRead>) {
                std::uint8_t flags = static_cast<std::uint8_t>(log2_size(p.size) << kIoSizeShift);
                if (p.space == IoSpace::mmio)
                    flags |= kIoMmio;
                if (has_io_ && last_io_space_ == p.space && last_io_address_ == p.address)
                    flags |= kIoSameAddress;
                const std::uint64_t delta = zigzag_encode(static_cast<std::int64_t>(p.value - last_io_value_));
                if (has_io_ && varint_size(delta) < varint_size(p.value))
                    flags |= kIoValueDelta;
                w.u8(flags);
                if (!(flags & kIoSameAddress))
                    w.varint(p.address);
                w.varint((flags & kIoValueDelta) ? delta : p.value);
                has_io_ = true;
                last_io_space_ = p.space;
                last_io_address_ = p.address;
                last_io_value_ = p.value;
            } else if constexpr (std::is_same_v<P, TimeRead>) {
                std::uint8_t flags = static_cast<std::uint8_t>(p.source);
                const std::uint64_t delta = zigzag_encode(static_cast<std::int64_t>(p.value - last_time_value_));
                if (has_time_ && varint_size(delta) < varint_size(p.value))
                    flags |= kTimeDelta;
                w.u8(flags);
                w.varint((flags & kTimeDelta) ? delta : p.value);
                if (p.source == TimeSource::rdtscp)
                    w.varint(p.aux);
                has_time_ = true;
                last_time_value_ = p.value;
            } else if constexpr (std::is_same_v<P, Interrupt>) {
                w.u8(p.vector);
                w.u8(static_cast<std::uint8_t>(p.source));
            } else if constexpr (std::is_same_v<P, DmaWrite>) {
                w.varint(p.gpa);
                w.varint(p.data.size());
                w.bytes(p.data);
            } else if constexpr (std::is_same_v<P, NetRx>) {
                w.varint(p.device);
                w.varint(p.frame.size());
                w.bytes(p.frame);
            } else if constexpr (std::is_same_v<P, DiskRead>) {
                w.varint(p.device);
                w.varint(p.request);
                w.u8(static_cast<std::uint8_t>(p.mode));
                if (p.mode == DiskRead::Mode::data) {
                    w.varint(p.data.size());
                    w.bytes(p.data);
                } else {
                    w.varint(p.length);
                    w.bytes(p.checksum);
                }
            } else if constexpr (std::is_same_v<P, Output>) {
                w.u8(static_cast<std::uint8_t>(p.kind));
                w.varint(p.device);
                w.varint(p.id);
            } else if constexpr (std::is_same_v<P, StateDigest>) {
                w.bytes(p.digest);
            } else if constexpr (std::is_same_v<P, ProtectionStart>) {
                w.varint(p.vcpus);
            } else if constexpr (std::is_same_v<P, EpochChange>) {
                w.varint(p.new_epoch);
            } else if constexpr (std::is_same_v<P, GoLive>) {
                w.u8(static_cast<std::uint8_t>(p.reason));
            } else if constexpr (std::is_same_v<P, XenRecord>) {
                w.varint(p.type);
                w.varint(p.info);
                w.varint(p.value[0]);
                w.varint(p.value[1]);
            } else if constexpr (std::is_same_v<P, IoreqStop>) {
                w.u8(static_cast<std::uint8_t>((p.read ? 1 : 0) | (p.space == IoSpace::mmio ? 2 : 0)));
                w.varint(p.address);
            } else if constexpr (std::is_same_v<P, VmEnd>) {
                w.u8(static_cast<std::uint8_t>(p.reason));
            } else if constexpr (std::is_same_v<P, WritesDone>) {
                w.varint(p.count);
            }
        },
        e.payload);
    ++count_;
    if (body_.size() > kMaxFrameBody)
        throw std::length_error("log frame body over " + std::to_string(kMaxFrameBody) + " bytes");
}

void FrameEncoder::finish_into(std::vector<std::uint8_t>& out)
{
    if (count_ == 0)
        throw std::logic_error("finishing a log frame with no entries");
    const std::size_t start = out.size();
    ByteWriter w(out);
    w.bytes(kFrameMagic);
    w.u8(kFormatVersion);
    w.u8(0); // flags
    w.varint(epoch_);
    w.varint(first_seq_);
    w.varint(count_);
    w.varint(body_.size());
    w.bytes(body_);
    w.u32le(crc32c(std::span<const std::uint8_t>(out).subspan(start)));

    first_seq_ += count_;
    reset_context();
}

std::vector<std::uint8_t> FrameEncoder::finish()
{
    std::vector<std::uint8_t> out;
    out.reserve(body_.size() + 32);
    finish_into(out);
    return out;
}

// ---------------------------------------------------------------------------------------------
// Decoder

namespace {

struct Header {
    std::uint64_t epoch = 0;
    std::uint64_t first_seq = 0;
    std::uint64_t count = 0;
    std::uint64_t body_len = 0;
    std::size_t header_bytes = 0;
};

// Turns a ByteReader status into a DecodeError at the reader's offset.
DecodeError read_error(ReadStatus s, std::size_t offset, const char* field)
{
    const DecodeErrc c = s == ReadStatus::truncated ? DecodeErrc::truncated : DecodeErrc::varint_overlong;
    return DecodeError{c, offset, field};
}

#define XENFT_READ(reader, call, field)                                                                     \
    do {                                                                                                    \
        const std::size_t at_ = (reader).offset();                                                          \
        if (const ReadStatus s_ = (reader).call; s_ != ReadStatus::ok)                                      \
            return unexpected(read_error(s_, at_, field));                                                  \
    } while (0)

// Parses the header. A truncated header reports truncated; every other problem is final.
Expected<Header, DecodeError> parse_header(ByteReader& r)
{
    Header h;
    std::span<const std::uint8_t> magic;
    XENFT_READ(r, bytes(4, magic), "magic");
    for (std::size_t i = 0; i < magic.size(); ++i)
        if (magic[i] != kFrameMagic[i])
            return unexpected(DecodeError{DecodeErrc::bad_magic, 0, "expected \"XFTL\""});
    std::uint8_t version = 0, flags = 0;
    XENFT_READ(r, u8(version), "version");
    if (version != kFormatVersion)
        return unexpected(DecodeError{DecodeErrc::unsupported_version, 4,
                                      "version " + std::to_string(version) + ", this build reads " +
                                          std::to_string(kFormatVersion)});
    XENFT_READ(r, u8(flags), "flags");
    if (flags != 0)
        return unexpected(DecodeError{DecodeErrc::reserved_flags, 5, "flags " + std::to_string(flags)});
    XENFT_READ(r, varint(h.epoch), "epoch");
    XENFT_READ(r, varint(h.first_seq), "first sequence");
    std::size_t at = r.offset();
    XENFT_READ(r, varint(h.count), "entry count");
    if (h.count == 0)
        return unexpected(DecodeError{DecodeErrc::no_entries, at, {}});
    if (h.count > kMaxEntriesPerFrame)
        return unexpected(DecodeError{DecodeErrc::too_many_entries, at,
                                      std::to_string(h.count) + " > " + std::to_string(kMaxEntriesPerFrame)});
    if (h.first_seq > std::numeric_limits<std::uint64_t>::max() - h.count)
        return unexpected(DecodeError{DecodeErrc::sequence_overflow, at, {}});
    at = r.offset();
    XENFT_READ(r, varint(h.body_len), "body length");
    if (h.body_len > kMaxFrameBody)
        return unexpected(DecodeError{DecodeErrc::body_too_large, at,
                                      std::to_string(h.body_len) + " > " + std::to_string(kMaxFrameBody)});
    if (h.body_len < 2 * h.count) // every entry takes at least a tag and an exit byte
        return unexpected(DecodeError{DecodeErrc::body_length_mismatch, at,
                                      std::to_string(h.count) + " entries in " + std::to_string(h.body_len) +
                                          " bytes"});
    h.header_bytes = r.offset();
    return h;
}

class EntryDecoder {
public:
    EntryDecoder(ByteReader& r, std::uint64_t epoch) : r_(r), epoch_(epoch)
    {
        last_exit_.assign(kMaxVcpus, 0);
        has_exit_.assign(kMaxVcpus, false);
    }

    Expected<Entry, DecodeError> next(std::uint64_t seq)
    {
        Entry e;
        e.epoch = epoch_;
        e.seq = seq;
        const std::size_t tag_at = r_.offset();
        std::uint8_t tag = 0;
        XENFT_READ(r_, u8(tag), "entry tag");
        if (tag & kTagReserved)
            return fail(DecodeErrc::reserved_bits, tag_at, "entry tag " + std::to_string(tag));
        const std::uint8_t kind = tag & kTagKindMask;
        if (kind == 0 || kind > kMaxKind)
            return fail(DecodeErrc::unknown_kind, tag_at, "kind " + std::to_string(kind));

        e.vcpu = last_vcpu_;
        if (tag & kTagHasVcpu) {
            std::uint64_t vcpu = 0;
            const std::size_t at = r_.offset();
            XENFT_READ(r_, varint(vcpu), "vCPU");
            if (vcpu >= kMaxVcpus)
                return fail(DecodeErrc::vcpu_out_of_range, at, "vCPU " + std::to_string(vcpu));
            e.vcpu = static_cast<std::uint32_t>(vcpu);
        }
        const std::size_t exit_at = r_.offset();
        std::uint64_t exit = 0;
        XENFT_READ(r_, varint(exit), "exit number");
        if (tag & kTagAbsExit) {
            if (has_exit_[e.vcpu] && exit < last_exit_[e.vcpu])
                return fail(DecodeErrc::exit_not_monotonic, exit_at,
                            "vCPU " + std::to_string(e.vcpu) + " exit " + std::to_string(exit) + " after " +
                                std::to_string(last_exit_[e.vcpu]));
            e.exit = exit;
        } else {
            if (!has_exit_[e.vcpu])
                return fail(DecodeErrc::exit_without_base, exit_at, "vCPU " + std::to_string(e.vcpu));
            if (exit > std::numeric_limits<std::uint64_t>::max() - last_exit_[e.vcpu])
                return fail(DecodeErrc::exit_overflow, exit_at, {});
            e.exit = last_exit_[e.vcpu] + exit;
        }
        last_vcpu_ = e.vcpu;
        last_exit_[e.vcpu] = e.exit;
        has_exit_[e.vcpu] = true;

        switch (static_cast<Kind>(kind)) {
        case Kind::io_read: return finish(e, io_read());
        case Kind::time_read: return finish(e, time_read());
        case Kind::interrupt: return finish(e, interrupt());
        case Kind::dma_write: return finish(e, dma_write());
        case Kind::net_rx: return finish(e, net_rx());
        case Kind::disk_read: return finish(e, disk_read());
        case Kind::output: return finish(e, output());
        case Kind::state_digest: return finish(e, state_digest());
        case Kind::protection_start: return finish(e, protection_start());
        case Kind::epoch_change: return finish(e, epoch_change());
        case Kind::go_live: return finish(e, go_live());
        case Kind::xen_record: return finish(e, xen_record());
        case Kind::ioreq_stop: return finish(e, ioreq_stop());
        case Kind::vm_end: return finish(e, vm_end());
        case Kind::writes_done: return finish(e, writes_done());
        }
        return fail(DecodeErrc::unknown_kind, tag_at, "kind " + std::to_string(kind));
    }

private:
    template <class P>
    using Result = Expected<P, DecodeError>;

    static Unexpected<DecodeError> fail(DecodeErrc c, std::size_t at, std::string detail)
    {
        return unexpected(DecodeError{c, at, std::move(detail)});
    }

    template <class P>
    static Expected<Entry, DecodeError> finish(Entry& e, Result<P> p)
    {
        if (!p)
            return unexpected(p.error());
        e.payload = std::move(p).value();
        return std::move(e);
    }

    Expected<std::uint64_t, DecodeError> device(const char* field)
    {
        std::uint64_t v = 0;
        const std::size_t at = r_.offset();
        XENFT_READ(r_, varint(v), field);
        if (v > kMaxDeviceIndex)
            return fail(DecodeErrc::bad_field, at, std::string(field) + " " + std::to_string(v));
        return v;
    }

    // A length field followed by that many bytes, with 1 <= length <= limit.
    Result<std::vector<std::uint8_t>> sized_bytes(std::uint64_t limit, const char* field)
    {
        std::uint64_t len = 0;
        const std::size_t at = r_.offset();
        XENFT_READ(r_, varint(len), field);
        if (len == 0 || len > limit)
            return fail(DecodeErrc::length_limit, at,
                        std::string(field) + " " + std::to_string(len) + " not in 1.." + std::to_string(limit));
        std::span<const std::uint8_t> bytes;
        XENFT_READ(r_, bytes(static_cast<std::size_t>(len), bytes), field);
        return std::vector<std::uint8_t>(bytes.begin(), bytes.end());
    }

    Result<Sha256> sha256(const char* field)
    {
        std::span<const std::uint8_t> bytes;
        XENFT_READ(r_, bytes(32, bytes), field);
        Sha256 d;
        std::copy(bytes.begin(), bytes.end(), d.begin());
        return d;
    }

    Result<IoRead> io_read()
    {
        IoRead p;
        const std::size_t at = r_.offset();
        std::uint8_t flags = 0;
        XENFT_READ(r_, u8(flags), "I/O flags");
        if (flags & kIoReserved)
            return fail(DecodeErrc::reserved_bits, at, "I/O flags " + std::to_string(flags));
        p.space = (flags & kIoMmio) ? IoSpace::mmio : IoSpace::port;
        p.size = static_cast<std::uint8_t>(1u << ((flags >> kIoSizeShift) & 3));
        if (flags & kIoSameAddress) {
            if (!has_io_ || last_io_space_ != p.space)
                return fail(DecodeErrc::missing_context, at, "same-address I/O read without a previous one");
            p.address = last_io_address_;
        } else {
            const std::size_t addr_at = r_.offset();
            XENFT_READ(r_, varint(p.address), "I/O address");
            if (p.space == IoSpace::port && p.address > kMaxPort)
                return fail(DecodeErrc::bad_field, addr_at, "port " + std::to_string(p.address));
        }
        const std::size_t value_at = r_.offset();
        std::uint64_t raw = 0;
        XENFT_READ(r_, varint(raw), "I/O value");
        if (flags & kIoValueDelta) {
            if (!has_io_)
                return fail(DecodeErrc::missing_context, value_at, "I/O value delta without a previous read");
            p.value = last_io_value_ + static_cast<std::uint64_t>(zigzag_decode(raw));
        } else {
            p.value = raw;
        }
        if (!value_fits(p.value, p.size))
            return fail(DecodeErrc::bad_field, value_at,
                        "I/O value " + std::to_string(p.value) + " wider than " + std::to_string(p.size) +
                            " bytes");
        has_io_ = true;
        last_io_space_ = p.space;
        last_io_address_ = p.address;
        last_io_value_ = p.value;
        return p;
    }

    Result<TimeRead> time_read()
    {
        TimeRead p;
        const std::size_t at = r_.offset();
        std::uint8_t flags = 0;
        XENFT_READ(r_, u8(flags), "time flags");
        if (flags & kTimeReserved)
            return fail(DecodeErrc::reserved_bits, at, "time flags " + std::to_string(flags));
        const std::uint8_t source = flags & kTimeSourceMask;
        if (source > static_cast<std::uint8_t>(TimeSource::tsc_msr))
            return fail(DecodeErrc::bad_field, at, "time source " + std::to_string(source));
        p.source = static_cast<TimeSource>(source);
        const std::size_t value_at = r_.offset();
        std::uint64_t raw = 0;
        XENFT_READ(r_, varint(raw), "time value");
        if (flags & kTimeDelta) {
            if (!has_time_)
                return fail(DecodeErrc::missing_context, value_at, "time delta without a previous value");
            p.value = last_time_value_ + static_cast<std::uint64_t>(zigzag_decode(raw));
        } else {
            p.value = raw;
        }
        if (p.source == TimeSource::rdtscp) {
            std::uint64_t aux = 0;
            const std::size_t aux_at = r_.offset();
            XENFT_READ(r_, varint(aux), "TSC_AUX");
            if (aux > std::numeric_limits<std::uint32_t>::max())
                return fail(DecodeErrc::bad_field, aux_at, "TSC_AUX " + std::to_string(aux));
            p.aux = static_cast<std::uint32_t>(aux);
        }
        has_time_ = true;
        last_time_value_ = p.value;
        return p;
    }

    Result<Interrupt> interrupt()
    {
        Interrupt p;
        XENFT_READ(r_, u8(p.vector), "vector");
        const std::size_t at = r_.offset();
        std::uint8_t source = 0;
        XENFT_READ(r_, u8(source), "interrupt source");
        if (source > static_cast<std::uint8_t>(IrqSource::ipi))
            return fail(DecodeErrc::bad_field, at, "interrupt source " + std::to_string(source));
        p.source = static_cast<IrqSource>(source);
        return p;
    }

    Result<DmaWrite> dma_write()
    {
        DmaWrite p;
        XENFT_READ(r_, varint(p.gpa), "DMA address");
        auto data = sized_bytes(kMaxDmaBytes, "DMA length");
        if (!data)
            return unexpected(data.error());
        if (p.gpa > std::numeric_limits<std::uint64_t>::max() - data->size())
            return fail(DecodeErrc::bad_field, r_.offset(), "DMA range wraps around");
        p.data = std::move(data).value();
        return p;
    }

    Result<NetRx> net_rx()
    {
        NetRx p;
        auto dev = device("network device");
        if (!dev)
            return unexpected(dev.error());
        p.device = static_cast<std::uint32_t>(*dev);
        auto frame = sized_bytes(kMaxNetFrameBytes, "network frame length");
        if (!frame)
            return unexpected(frame.error());
        p.frame = std::move(frame).value();
        return p;
    }

    Result<DiskRead> disk_read()
    {
        DiskRead p;
        auto dev = device("disk device");
        if (!dev)
            return unexpected(dev.error());
        p.device = static_cast<std::uint32_t>(*dev);
        XENFT_READ(r_, varint(p.request), "disk request id");
        const std::size_t at = r_.offset();
        std::uint8_t mode = 0;
        XENFT_READ(r_, u8(mode), "disk read mode");
        if (mode == static_cast<std::uint8_t>(DiskRead::Mode::data)) {
            p.mode = DiskRead::Mode::data;
            auto data = sized_bytes(kMaxDiskReadBytes, "disk read length");
            if (!data)
                return unexpected(data.error());
            p.data = std::move(data).value();
        } else if (mode == static_cast<std::uint8_t>(DiskRead::Mode::checksum)) {
            p.mode = DiskRead::Mode::checksum;
            const std::size_t len_at = r_.offset();
            XENFT_READ(r_, varint(p.length), "disk read length");
            if (p.length == 0 || p.length > kMaxDiskReadBytes)
                return fail(DecodeErrc::length_limit, len_at, "disk read length " + std::to_string(p.length));
            auto sum = sha256("disk read checksum");
            if (!sum)
                return unexpected(sum.error());
            p.checksum = *sum;
        } else {
            return fail(DecodeErrc::bad_field, at, "disk read mode " + std::to_string(mode));
        }
        return p;
    }

    Result<Output> output()
    {
        Output p;
        const std::size_t at = r_.offset();
        std::uint8_t kind = 0;
        XENFT_READ(r_, u8(kind), "output kind");
        if (kind > static_cast<std::uint8_t>(OutputKind::disk_write))
            return fail(DecodeErrc::bad_field, at, "output kind " + std::to_string(kind));
        p.kind = static_cast<OutputKind>(kind);
        auto dev = device("output device");
        if (!dev)
            return unexpected(dev.error());
        p.device = static_cast<std::uint32_t>(*dev);
        XENFT_READ(r_, varint(p.id), "output id");
        return p;
    }

    Result<StateDigest> state_digest()
    {
        auto d = sha256("state digest");
        if (!d)
            return unexpected(d.error());
        return StateDigest{*d};
    }

    Result<ProtectionStart> protection_start()
    {
        std::uint64_t vcpus = 0;
        const std::size_t at = r_.offset();
        XENFT_READ(r_, varint(vcpus), "vCPU count");
        if (vcpus == 0 || vcpus > kMaxVcpus)
            return fail(DecodeErrc::bad_field, at, "vCPU count " + std::to_string(vcpus));
        return ProtectionStart{static_cast<std::uint32_t>(vcpus)};
    }

    Result<EpochChange> epoch_change()
    {
        EpochChange p;
        const std::size_t at = r_.offset();
        XENFT_READ(r_, varint(p.new_epoch), "new epoch");
        if (p.new_epoch <= epoch_)
            return fail(DecodeErrc::bad_field, at,
                        "epoch change to " + std::to_string(p.new_epoch) + " in epoch " + std::to_string(epoch_));
        return p;
    }

    Result<GoLive> go_live()
    {
        const std::size_t at = r_.offset();
        std::uint8_t reason = 0;
        XENFT_READ(r_, u8(reason), "go-live reason");
        if (reason > static_cast<std::uint8_t>(GoLive::Reason::continue_alone))
            return fail(DecodeErrc::bad_field, at, "go-live reason " + std::to_string(reason));
        return GoLive{static_cast<GoLive::Reason>(reason)};
    }

    Result<VmEnd> vm_end()
    {
        const std::size_t at = r_.offset();
        std::uint8_t reason = 0;
        XENFT_READ(r_, u8(reason), "end reason");
        if (reason > static_cast<std::uint8_t>(VmEnd::Reason::destroyed))
            return fail(DecodeErrc::bad_field, at, "end reason " + std::to_string(reason));
        return VmEnd{static_cast<VmEnd::Reason>(reason)};
    }

    Result<WritesDone> writes_done()
    {
        WritesDone p;
        XENFT_READ(r_, varint(p.count), "write count");
        return p;
    }

    Result<XenRecord> xen_record()
    {
        XenRecord p;
        std::uint64_t type = 0, info = 0;
        const std::size_t type_at = r_.offset();
        XENFT_READ(r_, varint(type), "Xen record type");
        if (type == 0 || type > kMaxXenRecordType)
            return fail(DecodeErrc::bad_field, type_at, "Xen record type " + std::to_string(type));
        const std::size_t info_at = r_.offset();
        XENFT_READ(r_, varint(info), "Xen record info");
        if (info > 0xffffffffu)
            return fail(DecodeErrc::bad_field, info_at, "Xen record info " + std::to_string(info));
        XENFT_READ(r_, varint(p.value[0]), "Xen record value");
        XENFT_READ(r_, varint(p.value[1]), "Xen record value");
        p.type = static_cast<std::uint16_t>(type);
        p.info = static_cast<std::uint32_t>(info);
        return p;
    }

    Result<IoreqStop> ioreq_stop()
    {
        IoreqStop p;
        const std::size_t at = r_.offset();
        std::uint8_t flags = 0;
        XENFT_READ(r_, u8(flags), "ioreq flags");
        if (flags & ~3u)
            return fail(DecodeErrc::reserved_bits, at, "ioreq flags " + std::to_string(flags));
        p.read = flags & 1;
        p.space = (flags & 2) ? IoSpace::mmio : IoSpace::port;
        const std::size_t address_at = r_.offset();
        XENFT_READ(r_, varint(p.address), "ioreq address");
        if (p.space == IoSpace::port && p.address > 0xffff)
            return fail(DecodeErrc::bad_field, address_at, "ioreq port " + std::to_string(p.address));
        return p;
    }

    ByteReader& r_;
    std::uint64_t epoch_;
    std::uint32_t last_vcpu_ = 0;
    std::vector<std::uint64_t> last_exit_;
    std::vector<bool> has_exit_;
    bool has_io_ = false;
    IoSpace last_io_space_ = IoSpace::port;
    std::uint64_t last_io_address_ = 0;
    std::uint64_t last_io_value_ = 0;
    bool has_time_ = false;
    std::uint64_t last_time_value_ = 0;
};

} // namespace

Expected<FrameExtent, DecodeError> frame_extent(std::span<const std::uint8_t> bytes)
{
    ByteReader r(bytes);
    auto h = parse_header(r);
    if (!h) {
        if (h.error().code == DecodeErrc::truncated)
            return FrameExtent{};
        return unexpected(h.error());
    }
    return FrameExtent{true, h->header_bytes + static_cast<std::size_t>(h->body_len) + 4};
}

Expected<Frame, DecodeError> decode_frame(std::span<const std::uint8_t> bytes)
{
    ByteReader r(bytes);
    auto h = parse_header(r);
    if (!h)
        return unexpected(h.error());
    const std::size_t total = h->header_bytes + static_cast<std::size_t>(h->body_len) + 4;
    if (bytes.size() < total)
        return unexpected(DecodeError{DecodeErrc::truncated, bytes.size(),
                                      "frame needs " + std::to_string(total) + " bytes, got " +
                                          std::to_string(bytes.size())});
    if (bytes.size() > total)
        return unexpected(DecodeError{DecodeErrc::body_length_mismatch, total,
                                      std::to_string(bytes.size() - total) + " bytes after the CRC"});

    // Check the CRC before interpreting the body: a corrupted frame reports bad_crc, not
    // whatever its corrupted contents happen to look like.
    const std::size_t crc_at = total - 4;
    std::uint32_t stored = 0;
    for (std::size_t i = 0; i < 4; ++i)
        stored |= static_cast<std::uint32_t>(bytes[crc_at + i]) << (8 * i);
    const std::uint32_t computed = crc32c(bytes.first(crc_at));
    if (stored != computed)
        return unexpected(DecodeError{DecodeErrc::bad_crc, crc_at, {}});

    Frame f;
    f.epoch = h->epoch;
    f.first_seq = h->first_seq;
    // Each entry takes at least two body bytes (checked in parse_header), so this reserve is
    // bounded by the body the peer actually sent.
    f.entries.reserve(static_cast<std::size_t>(h->count));
    ByteReader body(bytes.subspan(h->header_bytes, static_cast<std::size_t>(h->body_len)));
    EntryDecoder dec(body, h->epoch);
    for (std::uint64_t i = 0; i < h->count; ++i) {
        auto e = dec.next(h->first_seq + i);
        if (!e) {
            DecodeError err = e.error();
            err.offset += h->header_bytes;
            if (err.code == DecodeErrc::truncated)
                err = DecodeError{DecodeErrc::body_length_mismatch, err.offset,
                                  "entry " + std::to_string(i) + " runs past the body (" + err.detail + ")"};
            return unexpected(std::move(err));
        }
        f.entries.push_back(std::move(e).value());
    }
    if (!body.at_end())
        return unexpected(DecodeError{DecodeErrc::body_length_mismatch, h->header_bytes + body.offset(),
                                      std::to_string(body.remaining()) + " bytes after the last entry"});
    return f;
}

} // namespace xenft::logformat
