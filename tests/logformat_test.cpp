// Tests of the FT log format: CRC32C and varint primitives, round trips of every entry kind,
// randomized property tests, the compactness goal, and malformed frames the decoder must
// reject with a precise error (docs/log-format.md).
#define BOOST_TEST_MODULE logformat
#include <boost/test/unit_test.hpp>

#include <random>

#include "xenft/common/bytes.hpp"
#include "xenft/common/crc32c.hpp"
#include "xenft/logformat/codec.hpp"
#include "xenft/logformat/stream.hpp"
#include "xenft/logformat/synthetic.hpp"
#include "xenft/logformat/text.hpp"

using namespace xenft;
using namespace xenft::logformat;
using Bytes = std::vector<std::uint8_t>;

namespace {

std::uint32_t crc_of(const Bytes& b) { return crc32c(b); }

// The error message of a failed result, or "" for a success: Boost.Test formats assertion
// messages even when the assertion holds, so they must not touch error() unconditionally.
template <class R>
std::string error_text(const R& r)
{
    return r.has_value() ? std::string() : r.error().message();
}

// A frame with a hand-written body and a correct CRC, so body-level checks are reached.
Bytes raw_frame(const Bytes& body, std::uint64_t count, std::uint64_t epoch = 1, std::uint64_t first_seq = 0,
                std::uint8_t version = kFormatVersion, std::uint8_t flags = 0)
{
    Bytes out;
    ByteWriter w(out);
    w.bytes(kFrameMagic);
    w.u8(version);
    w.u8(flags);
    w.varint(epoch);
    w.varint(first_seq);
    w.varint(count);
    w.varint(body.size());
    w.bytes(body);
    w.u32le(crc_of(out));
    return out;
}

Bytes encode_one(const Entry& e)
{
    FrameEncoder enc(e.epoch, e.seq);
    enc.append(e);
    return enc.finish();
}

DecodeErrc decode_error_of(const Bytes& frame)
{
    auto r = decode_frame(frame);
    BOOST_REQUIRE_MESSAGE(!r, "malformed frame was accepted");
    BOOST_TEST_MESSAGE(r.error().message());
    return r.error().code;
}

} // namespace

// ---- primitives ------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(crc32c_matches_rfc3720_vectors)
{
    Bytes zeros(32, 0), ones(32, 0xff), up(32), down(32);
    for (std::uint8_t i = 0; i < 32; ++i) {
        up[i] = i;
        down[i] = static_cast<std::uint8_t>(31 - i);
    }
    const Bytes digits = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
    BOOST_TEST(crc32c(zeros) == 0x8A9136AAu);
    BOOST_TEST(crc32c(ones) == 0x62A8AB43u);
    BOOST_TEST(crc32c(up) == 0x46DD794Eu);
    BOOST_TEST(crc32c(down) == 0x113FDB5Cu);
    BOOST_TEST(crc32c(digits) == 0xE3069283u);
    BOOST_TEST(crc32c_portable(digits) == 0xE3069283u);
}

BOOST_AUTO_TEST_CASE(crc32c_hardware_and_portable_agree)
{
    std::mt19937_64 rng(7);
    for (std::size_t len = 0; len < 300; ++len) {
        Bytes b(len);
        for (auto& x : b)
            x = static_cast<std::uint8_t>(rng());
        BOOST_TEST_REQUIRE(crc32c(b) == crc32c_portable(b), "length " << len);
    }
}

BOOST_AUTO_TEST_CASE(varint_round_trips_boundaries)
{
    const std::uint64_t values[] = {0, 1, 127, 128, 255, 16383, 16384, (1ull << 32) - 1, 1ull << 35, ~0ull >> 1, ~0ull};
    for (std::uint64_t v : values) {
        Bytes b;
        ByteWriter(b).varint(v);
        ByteReader r(b);
        std::uint64_t back = 0;
        BOOST_TEST_REQUIRE((r.varint(back) == ReadStatus::ok));
        BOOST_TEST(back == v);
        BOOST_TEST(r.at_end());
    }
}

BOOST_AUTO_TEST_CASE(varint_rejects_overlong_and_truncated)
{
    std::uint64_t v = 0;
    Bytes redundant_zero = {0x80, 0x00};
    BOOST_TEST((ByteReader(redundant_zero).varint(v) == ReadStatus::varint_overlong));
    Bytes eleven(10, 0x80);
    eleven.push_back(0x01);
    BOOST_TEST((ByteReader(eleven).varint(v) == ReadStatus::varint_overlong));
    Bytes beyond64(9, 0xff);
    beyond64.push_back(0x02); // bit 64 set
    BOOST_TEST((ByteReader(beyond64).varint(v) == ReadStatus::varint_overlong));
    Bytes cut = {0x80, 0x80};
    BOOST_TEST((ByteReader(cut).varint(v) == ReadStatus::truncated));
}

BOOST_AUTO_TEST_CASE(zigzag_round_trips)
{
    const std::int64_t values[] = {0, -1, 1, -64, 63, INT64_MIN, INT64_MAX};
    for (std::int64_t v : values)
        BOOST_TEST(zigzag_decode(zigzag_encode(v)) == v);
    BOOST_TEST(zigzag_encode(-1) == 1u);
    BOOST_TEST(zigzag_encode(1) == 2u);
}

// ---- round trips -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(every_kind_round_trips_alone)
{
    Sha256 d{};
    d[0] = 0xab;
    d[31] = 0xcd;
    const Payload payloads[] = {
        IoRead{IoSpace::port, 1, 0x3fd, 0x60},
        IoRead{IoSpace::mmio, 8, 0xfeb00000, ~0ull},
        TimeRead{TimeSource::rdtsc, 123456789012345ull, 0},
        TimeRead{TimeSource::rdtscp, 42, 7},
        TimeRead{TimeSource::tsc_msr, 0, 0},
        Interrupt{0xec, IrqSource::lapic_timer},
        Interrupt{2, IrqSource::nmi},
        DmaWrite{0x1000, Bytes(4096, 0x5a)},
        NetRx{1, Bytes(1514, 0x11)},
        DiskRead{0, 99, DiskRead::Mode::data, Bytes(512, 7), 0, {}},
        DiskRead{1, 100, DiskRead::Mode::checksum, {}, 65536, d},
        Output{OutputKind::net_tx, 0, 12345},
        Output{OutputKind::disk_write, 3, 0},
        StateDigest{d},
        ProtectionStart{4},
        EpochChange{8},
        GoLive{GoLive::Reason::continue_alone},
        XenRecord{3, 0x104, {0xfeb00000, 0x123456789abcdefull}},
        XenRecord{4, 0, {0, 0}},
        IoreqStop{true, IoSpace::mmio, 0xfeb01050},
        IoreqStop{false, IoSpace::port, 0x3f8},
        VmEnd{VmEnd::Reason::shut_down},
        VmEnd{VmEnd::Reason::destroyed},
        WritesDone{0},
        WritesDone{1ull << 40},
    };
    for (const auto& p : payloads) {
        const Entry e{7, 1000, 3, 1u << 20, p};
        const Bytes frame = encode_one(e);
        auto back = decode_frame(frame);
        BOOST_TEST_REQUIRE(back.has_value(), kind_name(kind_of(p)) << ": " << error_text(back));
        BOOST_TEST_REQUIRE(back->entries.size() == 1u);
        BOOST_TEST((back->entries[0] == e), to_text(e) << " came back as " << to_text(back->entries[0]));
    }
}

BOOST_AUTO_TEST_CASE(mixed_logs_round_trip_and_reencode_identically)
{
    for (std::uint64_t seed = 1; seed <= 200; ++seed) {
        const auto log = mixed_log(300, seed);
        const std::size_t per_frame = 1 + seed % 97;
        const Bytes bytes = encode_frames(log, per_frame);
        auto frames = decode_frames(bytes);
        BOOST_TEST_REQUIRE(frames.has_value(), "seed " << seed << ": " << error_text(frames));
        std::vector<Entry> back;
        for (auto& f : *frames)
            back.insert(back.end(), f.entries.begin(), f.entries.end());
        BOOST_TEST_REQUIRE(back.size() == log.size(), "seed " << seed);
        for (std::size_t i = 0; i < log.size(); ++i)
            BOOST_TEST_REQUIRE((back[i] == log[i]), "seed " << seed << " entry " << i << ": " << to_text(log[i]));
        BOOST_TEST_REQUIRE((encode_frames(back, per_frame) == bytes), "seed " << seed);
    }
}

BOOST_AUTO_TEST_CASE(sequence_numbers_and_epochs_are_carried_by_frames)
{
    const auto log = mixed_log(2000, 99);
    auto frames = decode_frames(encode_frames(log, 64));
    BOOST_TEST_REQUIRE(frames.has_value());
    std::uint64_t expect_seq = log.front().seq;
    for (const auto& f : *frames) {
        BOOST_TEST(f.first_seq == expect_seq);
        for (const auto& e : f.entries) {
            BOOST_TEST(e.epoch == f.epoch);
            BOOST_TEST(e.seq == expect_seq++);
        }
    }
}

BOOST_AUTO_TEST_CASE(idle_guest_log_is_at_most_half_a_naive_record)
{
    // The goal: <= 0.5 of a fixed 32-byte record per entry for a 1 kHz idle guest,
    // counting frame overhead at 256 entries per frame.
    const auto log = idle_guest_log(10'000, 1000, 1);
    const Bytes bytes = encode_frames(log, 256);
    const double per_entry = static_cast<double>(bytes.size()) / static_cast<double>(log.size());
    BOOST_TEST_MESSAGE("idle guest: " << per_entry << " bytes per entry");
    BOOST_TEST(per_entry <= 16.0);
}

BOOST_AUTO_TEST_CASE(frame_extent_reports_need_more_then_size)
{
    const Bytes frame = encode_frames(idle_guest_log(50, 1000, 3), 1000);
    for (std::size_t cut = 0; cut < 8; ++cut) {
        auto ext = frame_extent(std::span(frame).first(cut));
        BOOST_TEST_REQUIRE(ext.has_value());
        BOOST_TEST(!ext->complete_header);
    }
    auto ext = frame_extent(std::span(frame).first(frame.size() / 2));
    BOOST_TEST_REQUIRE(ext.has_value());
    BOOST_TEST(ext->complete_header);
    BOOST_TEST(ext->frame_bytes == frame.size());
}

// ---- the encoder refuses what the decoder would reject ----------------------------------------

BOOST_AUTO_TEST_CASE(encoder_rejects_invalid_entries_and_keeps_the_frame)
{
    FrameEncoder enc(5, 10);
    enc.append(Entry{5, 10, 0, 100, Interrupt{0x30, IrqSource::pic}});
    const std::size_t before = enc.body_bytes();
    BOOST_CHECK_THROW(enc.append(Entry{4, 11, 0, 101, Interrupt{}}), std::invalid_argument);     // epoch
    BOOST_CHECK_THROW(enc.append(Entry{5, 12, 0, 101, Interrupt{}}), std::invalid_argument);     // sequence gap
    BOOST_CHECK_THROW(enc.append(Entry{5, 11, 0, 99, Interrupt{}}), std::invalid_argument);      // exit backwards
    BOOST_CHECK_THROW(enc.append(Entry{5, 11, 200, 1, Interrupt{}}), std::invalid_argument);     // vCPU
    BOOST_CHECK_THROW(enc.append(Entry{5, 11, 0, 101, IoRead{IoSpace::port, 3, 0, 0}}), std::invalid_argument);
    BOOST_CHECK_THROW(enc.append(Entry{5, 11, 0, 101, IoRead{IoSpace::port, 1, 0x10000, 0}}), std::invalid_argument);
    BOOST_CHECK_THROW(enc.append(Entry{5, 11, 0, 101, IoRead{IoSpace::mmio, 2, 0, 0x10000}}), std::invalid_argument);
    BOOST_CHECK_THROW(enc.append(Entry{5, 11, 0, 101, DmaWrite{0, {}}}), std::invalid_argument);
    BOOST_CHECK_THROW(enc.append(Entry{5, 11, 0, 101, NetRx{0, Bytes(kMaxNetFrameBytes + 1)}}), std::invalid_argument);
    BOOST_CHECK_THROW(enc.append(Entry{5, 11, 0, 101, EpochChange{5}}), std::invalid_argument);
    BOOST_CHECK_THROW(enc.append(Entry{5, 11, 0, 101, ProtectionStart{0}}), std::invalid_argument);
    BOOST_CHECK_THROW(enc.append(Entry{5, 11, 0, 101, TimeRead{TimeSource::rdtsc, 1, 5}}), std::invalid_argument);
    BOOST_TEST(enc.body_bytes() == before);
    BOOST_TEST(enc.entry_count() == 1u);
    auto f = decode_frame(enc.finish());
    BOOST_TEST_REQUIRE(f.has_value());
    BOOST_TEST(f->entries.size() == 1u);
}

// ---- malformed input: each is rejected with the precise reason --------------------------------

namespace {
// Tag byte: kind | 0x20 (has vCPU) | 0x40 (absolute exit).
constexpr std::uint8_t kAbs = 0x40;
constexpr std::uint8_t tag(Kind k, std::uint8_t flags = kAbs) { return static_cast<std::uint8_t>(static_cast<std::uint8_t>(k) | flags); }
const Bytes kInterruptBody = {tag(Kind::interrupt), 5, 0xec, 0};
} // namespace

BOOST_AUTO_TEST_CASE(malformed_empty_input) { BOOST_TEST((decode_error_of({}) == DecodeErrc::truncated)); }

BOOST_AUTO_TEST_CASE(malformed_truncated_header)
{
    BOOST_TEST((decode_error_of({'X', 'F', 'T'}) == DecodeErrc::truncated));
}

BOOST_AUTO_TEST_CASE(malformed_bad_magic)
{
    Bytes f = raw_frame(kInterruptBody, 1);
    f[0] = 'Y';
    BOOST_TEST((decode_error_of(f) == DecodeErrc::bad_magic));
}

BOOST_AUTO_TEST_CASE(malformed_unknown_version)
{
    BOOST_TEST((decode_error_of(raw_frame(kInterruptBody, 1, 1, 0, 2)) == DecodeErrc::unsupported_version));
}

BOOST_AUTO_TEST_CASE(malformed_reserved_frame_flags)
{
    BOOST_TEST((decode_error_of(raw_frame(kInterruptBody, 1, 1, 0, kFormatVersion, 0x80)) == DecodeErrc::reserved_flags));
}

BOOST_AUTO_TEST_CASE(malformed_zero_entries)
{
    BOOST_TEST((decode_error_of(raw_frame(kInterruptBody, 0)) == DecodeErrc::no_entries));
}

BOOST_AUTO_TEST_CASE(malformed_too_many_entries)
{
    BOOST_TEST((decode_error_of(raw_frame(kInterruptBody, kMaxEntriesPerFrame + 1)) == DecodeErrc::too_many_entries));
}

BOOST_AUTO_TEST_CASE(malformed_oversized_body_length)
{
    // The header promises 8 MiB + 1 bytes; the decoder refuses before waiting for or reading them.
    Bytes f;
    ByteWriter w(f);
    w.bytes(kFrameMagic);
    w.u8(kFormatVersion);
    w.u8(0);
    w.varint(1);
    w.varint(0);
    w.varint(1);
    w.varint(kMaxFrameBody + 1);
    BOOST_TEST((decode_error_of(f) == DecodeErrc::body_too_large));
    auto ext = frame_extent(f);
    BOOST_TEST_REQUIRE(!ext.has_value());
    BOOST_TEST((ext.error().code == DecodeErrc::body_too_large));
}

BOOST_AUTO_TEST_CASE(malformed_sequence_overflow)
{
    BOOST_TEST((decode_error_of(raw_frame(kInterruptBody, 1, 1, ~0ull)) == DecodeErrc::sequence_overflow));
}

BOOST_AUTO_TEST_CASE(malformed_overlong_varint_in_header)
{
    Bytes f;
    ByteWriter w(f);
    w.bytes(kFrameMagic);
    w.u8(kFormatVersion);
    w.u8(0);
    w.u8(0x81);
    w.u8(0x00); // epoch 1 with a redundant zero byte
    BOOST_TEST((decode_error_of(f) == DecodeErrc::varint_overlong));
}

BOOST_AUTO_TEST_CASE(malformed_truncated_body)
{
    Bytes f = encode_frames(idle_guest_log(20, 1000, 1), 100);
    f.resize(f.size() - 10);
    BOOST_TEST((decode_error_of(f) == DecodeErrc::truncated));
}

BOOST_AUTO_TEST_CASE(malformed_trailing_bytes_after_crc)
{
    Bytes f = raw_frame(kInterruptBody, 1);
    f.push_back(0);
    BOOST_TEST((decode_error_of(f) == DecodeErrc::body_length_mismatch));
}

BOOST_AUTO_TEST_CASE(malformed_flipped_body_bit_fails_crc)
{
    Bytes f = encode_frames(idle_guest_log(20, 1000, 1), 100);
    f[f.size() / 2] ^= 0x10;
    BOOST_TEST((decode_error_of(f) == DecodeErrc::bad_crc));
}

BOOST_AUTO_TEST_CASE(malformed_flipped_crc)
{
    Bytes f = raw_frame(kInterruptBody, 1);
    f.back() ^= 1;
    BOOST_TEST((decode_error_of(f) == DecodeErrc::bad_crc));
}

BOOST_AUTO_TEST_CASE(malformed_kind_zero)
{
    BOOST_TEST((decode_error_of(raw_frame({kAbs, 5, 0, 0}, 1)) == DecodeErrc::unknown_kind));
}

BOOST_AUTO_TEST_CASE(malformed_kind_from_the_future)
{
    BOOST_TEST((decode_error_of(raw_frame({static_cast<std::uint8_t>(kMaxKind + 1) | kAbs, 5, 0, 0}, 1)) ==
                DecodeErrc::unknown_kind));
}

BOOST_AUTO_TEST_CASE(malformed_reserved_tag_bit)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::interrupt, kAbs | 0x80), 5, 0xec, 0}, 1)) == DecodeErrc::reserved_bits));
}

BOOST_AUTO_TEST_CASE(malformed_vcpu_out_of_range)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::interrupt, kAbs | 0x20), 0x80, 0x01, 5, 0xec, 0}, 1)) ==
                DecodeErrc::vcpu_out_of_range));
}

BOOST_AUTO_TEST_CASE(malformed_exit_delta_without_base)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::interrupt, 0), 5, 0xec, 0}, 1)) == DecodeErrc::exit_without_base));
}

BOOST_AUTO_TEST_CASE(malformed_exit_going_backwards)
{
    const Bytes body = {tag(Kind::interrupt), 9, 0xec, 0, tag(Kind::interrupt), 8, 0xec, 0};
    BOOST_TEST((decode_error_of(raw_frame(body, 2)) == DecodeErrc::exit_not_monotonic));
}

BOOST_AUTO_TEST_CASE(malformed_exit_overflow)
{
    Bytes body = {tag(Kind::interrupt)};
    ByteWriter w(body);
    w.varint(~0ull);
    w.u8(0xec);
    w.u8(0);
    w.u8(tag(Kind::interrupt, 0));
    w.varint(1);
    w.u8(0xec);
    w.u8(0);
    BOOST_TEST((decode_error_of(raw_frame(body, 2)) == DecodeErrc::exit_overflow));
}

BOOST_AUTO_TEST_CASE(malformed_same_address_without_previous_read)
{
    // flags: mmio | size 8 | same-address
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::io_read), 1, 0x01 | 0x06 | 0x08, 5}, 1)) ==
                DecodeErrc::missing_context));
}

BOOST_AUTO_TEST_CASE(malformed_value_delta_without_previous_read)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::io_read), 1, 0x10, 0x40, 5}, 1)) == DecodeErrc::missing_context));
}

BOOST_AUTO_TEST_CASE(malformed_io_value_wider_than_size)
{
    // port read of 1 byte returning 0x100
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::io_read), 1, 0x00, 0x40, 0x80, 0x02}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_port_address_over_16_bits)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::io_read), 1, 0x00, 0x80, 0x80, 0x04, 1}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_io_reserved_flags)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::io_read), 1, 0x20, 0x40, 1}, 1)) == DecodeErrc::reserved_bits));
}

BOOST_AUTO_TEST_CASE(malformed_time_source)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::time_read), 1, 0x03, 5}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_tsc_aux_over_32_bits)
{
    Bytes body = {tag(Kind::time_read), 1, 0x01, 5};
    ByteWriter(body).varint(1ull << 32);
    BOOST_TEST((decode_error_of(raw_frame(body, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_interrupt_source)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::interrupt), 1, 0x30, 7}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_dma_length_zero)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::dma_write), 1, 0x10, 0}, 1)) == DecodeErrc::length_limit));
}

BOOST_AUTO_TEST_CASE(malformed_dma_length_over_limit)
{
    Bytes body = {tag(Kind::dma_write), 1, 0x10};
    ByteWriter(body).varint(kMaxDmaBytes + 1);
    BOOST_TEST((decode_error_of(raw_frame(body, 1)) == DecodeErrc::length_limit));
}

BOOST_AUTO_TEST_CASE(malformed_dma_range_wraps)
{
    Bytes body = {tag(Kind::dma_write), 1};
    ByteWriter w(body);
    w.varint(~0ull - 1);
    w.varint(4);
    w.bytes(Bytes(4, 0));
    BOOST_TEST((decode_error_of(raw_frame(body, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_net_frame_longer_than_body)
{
    Bytes body = {tag(Kind::net_rx), 1, 0};
    ByteWriter(body).varint(60000);
    body.insert(body.end(), 10, 0xaa);
    BOOST_TEST((decode_error_of(raw_frame(body, 1)) == DecodeErrc::body_length_mismatch));
}

BOOST_AUTO_TEST_CASE(malformed_net_device_out_of_range)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::net_rx), 1, 0x80, 0x02, 1, 0xaa}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_disk_read_mode)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::disk_read), 1, 0, 9, 2, 1, 0}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_output_kind)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::output), 1, 2, 0, 1}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_protection_of_zero_vcpus)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::protection_start), 0, 0}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_epoch_change_not_forward)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::epoch_change), 0, 3}, 1, 3)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_go_live_reason)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::go_live), 0, 3}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_xen_record_type)
{
    // type 0 and type 256 (varint 0x80 0x02) are outside 1..255
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::xen_record), 0, 0, 0, 0, 0}, 1)) == DecodeErrc::bad_field));
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::xen_record), 0, 0x80, 0x02, 0, 0, 0}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_xen_record_info_over_32_bits)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::xen_record), 0, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0}, 1)) ==
                DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_vm_end_reason)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::vm_end), 0, 3}, 1)) == DecodeErrc::bad_field));
    // The reason byte missing: the body ends inside the entry.
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::vm_end), 0}, 1)) == DecodeErrc::body_length_mismatch));
}

BOOST_AUTO_TEST_CASE(malformed_ioreq_stop)
{
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::ioreq_stop), 0, 4, 0}, 1)) == DecodeErrc::reserved_bits));
    // a port above 0xffff (varint 0x80 0x80 0x04 = 0x10000)
    BOOST_TEST((decode_error_of(raw_frame({tag(Kind::ioreq_stop), 0, 1, 0x80, 0x80, 0x04}, 1)) == DecodeErrc::bad_field));
}

BOOST_AUTO_TEST_CASE(malformed_bytes_after_last_entry)
{
    Bytes body = kInterruptBody;
    body.push_back(0);
    body.push_back(0);
    BOOST_TEST((decode_error_of(raw_frame(body, 1)) == DecodeErrc::body_length_mismatch));
}

BOOST_AUTO_TEST_CASE(malformed_count_larger_than_body_allows)
{
    BOOST_TEST((decode_error_of(raw_frame(kInterruptBody, 3)) == DecodeErrc::body_length_mismatch));
}

BOOST_AUTO_TEST_CASE(malformed_stream_ends_inside_a_frame)
{
    Bytes s = encode_frames(idle_guest_log(100, 1000, 1), 32);
    s.resize(s.size() - 3);
    auto r = decode_frames(s);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST((r.error().error.code == DecodeErrc::truncated));
    BOOST_TEST(r.error().frame_index > 0u);
}

BOOST_AUTO_TEST_CASE(error_messages_name_field_and_offset)
{
    Bytes f = raw_frame({tag(Kind::interrupt), 1, 0x30, 7}, 1);
    auto r = decode_frame(f);
    BOOST_TEST_REQUIRE(!r.has_value());
    const std::string m = r.error().message();
    BOOST_TEST(m.find("invalid field value") != std::string::npos, m);
    BOOST_TEST(m.find("interrupt source 7") != std::string::npos, m);
    BOOST_TEST(m.find("at byte") != std::string::npos, m);
}

// Any single-byte corruption of a valid frame is rejected (CRC32C catches all of them) and never
// crashes; this also exercises the CRC path under the sanitizer build.
BOOST_AUTO_TEST_CASE(every_single_byte_corruption_is_rejected)
{
    const Bytes f = encode_frames(mixed_log(40, 5), 1000);
    for (std::size_t i = 0; i < f.size(); ++i) {
        Bytes g = f;
        g[i] ^= 0x5a;
        BOOST_TEST_REQUIRE(!decode_frame(g).has_value(), "corruption at byte " << i << " accepted");
    }
}

// Random bodies with a valid CRC reach the entry decoder: it must reject or accept them without
// reading out of bounds (the sanitizer build checks the "without").
BOOST_AUTO_TEST_CASE(random_bodies_with_valid_crc_never_crash)
{
    std::mt19937_64 rng(11);
    std::size_t accepted = 0;
    for (int i = 0; i < 20000; ++i) {
        Bytes body(2 + rng() % 40);
        for (auto& b : body)
            b = static_cast<std::uint8_t>(rng());
        body[0] = static_cast<std::uint8_t>((body[0] & 0x1f) | kAbs);
        auto r = decode_frame(raw_frame(body, 1 + rng() % 2));
        if (r) {
            ++accepted;
            // Whatever decoded must re-encode to a frame that decodes to the same entries.
            auto again = decode_frame(encode_frames(r->entries, 1000));
            BOOST_TEST_REQUIRE(again.has_value());
            BOOST_TEST_REQUIRE((again->entries == r->entries));
        }
    }
    BOOST_TEST_MESSAGE(accepted << " of 20000 random bodies were valid");
    BOOST_TEST(accepted > 0u);
}
