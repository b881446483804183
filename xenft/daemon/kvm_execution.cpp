#include "xenft/daemon/kvm_execution.hpp"

#include <algorithm>
#include <thread>

namespace xenft::daemon {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kExitsPerChunk = 32;
// Live copy: the pause ends the rounds once a round's dirty pages are this few (2 MiB: a few
// ms on the channel), or after this many rounds, whichever comes first.
constexpr std::size_t kFinalRoundPages = 512;
constexpr unsigned kMaxCopyRounds = 30;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

} // namespace

KvmExecution::KvmExecution(std::unique_ptr<engine::Backend> backend, const engine::MachineSpec& machine,
                           std::uint64_t digest_every, devices::TapDevice* tap, devices::BlockPort* disk,
                           std::function<void(const std::string&)> say)
    : gate_(tap, disk), digest_every_(digest_every), tap_(tap), disk_(disk), say_(std::move(say))
{
    const auto start = start_;
    machine_ = std::make_unique<engine::Machine>(
        std::move(backend),
        [start] {
            return static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
        },
        machine);
}

KvmExecution::~KvmExecution()
{
    rep_.reset();
    rec_.reset();
}

engine::Recorder& KvmExecution::recorder()
{
    if (!rec_) {
        rec_.emplace(*machine_, digest_every_, engine::HostIo{tap_, disk_, &gate_}, resume_);
        rec_->end_at_outputs(true); // an output waits for the backup's ack: ship its entry at once
    }
    return *rec_;
}

Expected<bool, std::string> KvmExecution::record(std::vector<logformat::Entry>& log, std::vector<protocol::VmOutput>& outputs)
{
    engine::Recorder& rec = recorder();
    if (copy_ && !copy_step()) {
        copy_.reset();
        return true; // the copy's end first: the node switches the log over before the guest runs on
    }
    const std::size_t before = log.size();
    auto ok = rec.run(kExitsPerChunk, log);
    exits_ = rec.exits();
    if (!ok)
        return unexpected("the guest stopped: " + ok.error());
    for (std::size_t i = before; i < log.size(); ++i)
        if (std::holds_alternative<logformat::Output>(log[i].payload))
            outputs.push_back(protocol::VmOutput{log[i].seq, log[i].seq});
    return true;
}

// ----- the live copy, sending -------------------------------------------------------------------

void KvmExecution::copy_to(channel::CopySink& sink)
{
    copy_.emplace();
    copy_->sink = &sink;
    report_.reset();
}

Expected<bool, std::string> KvmExecution::queue_pages(std::span<const std::uint64_t> pages, bool wait)
{
    CopyRun& c = *copy_;
    engine::Backend& vm = machine_->backend();
    std::size_t i = 0;
    while (i < pages.size()) {
        if (!wait && !c.sink->has_room())
            return true; // the channel is busy; resumes from c.next later
        const std::size_t n = std::min(channel::kCopyPagesPerRecord, pages.size() - i);
        channel::CopyPages rec;
        rec.numbers.assign(pages.begin() + static_cast<std::ptrdiff_t>(i), pages.begin() + static_cast<std::ptrdiff_t>(i + n));
        rec.data.resize(n * channel::kCopyPageBytes);
        for (std::size_t k = 0; k < n; ++k)
            if (!vm.read_guest(rec.numbers[k] * channel::kCopyPageBytes,
                               std::span(rec.data).subspan(k * channel::kCopyPageBytes, channel::kCopyPageBytes)))
                return unexpected("cannot read page " + std::to_string(rec.numbers[k]) + " of guest memory");
        if (auto r = c.sink->send(std::move(rec)); !r)
            return r;
        i += n;
        c.next += n;
    }
    return true;
}

bool KvmExecution::copy_step()
{
    CopyRun& c = *copy_;
    engine::Backend& vm = machine_->backend();
    auto failed = [&](const std::string& why) {
        report_ = CopyReport{false, why, 0, "failed in round " + std::to_string(c.round)};
        return false;
    };
    if (c.todo.empty() && c.next == 0 && c.round == 1) {
        // Round 1: every page. Dirty tracking restarts now, so what the guest writes from here
        // on is in the next round.
        (void)vm.dirty_pages();
        const std::uint64_t pages = vm.memory_bytes() / engine::Backend::kPageBytes;
        c.todo.resize(pages);
        for (std::uint64_t p = 0; p < pages; ++p)
            c.todo[p] = p;
        if (auto r = c.sink->send(channel::CopyBegin{vm.memory_bytes(), pages}); !r)
            return failed(r.error());
        say_("live copy: " + std::to_string(pages) + " pages (" + std::to_string(vm.memory_bytes() >> 20) +
             " MiB) while the guest runs");
    }
    // Queue what the channel takes now (a few MiB); the guest runs on meanwhile.
    if (c.next < c.todo.size()) {
        const std::size_t n = std::min<std::size_t>(c.todo.size() - c.next, 8 * channel::kCopyPagesPerRecord);
        if (auto r = queue_pages(std::span(c.todo).subspan(c.next, n), false); !r)
            return failed(r.error());
        return true;
    }
    if (c.sink->backlog() > 0)
        return true; // the round is still on its way
    auto dirty = vm.dirty_pages();
    if (dirty.size() <= kFinalRoundPages || c.round >= kMaxCopyRounds) {
        copy_finish(std::move(dirty));
        return false;
    }
    c.todo = std::move(dirty);
    c.next = 0;
    ++c.round;
    return true;
}

void KvmExecution::copy_finish(std::vector<std::uint64_t> last_pages)
{
    // The pause: the guest does not run until the backup has applied the copy. Then both are at
    // the same exit, and the log from the next entry on is all the backup needs.
    CopyRun& c = *copy_;
    engine::Recorder& rec = recorder();
    const auto paused = Clock::now();
    c.todo = std::move(last_pages);
    c.next = 0;
    const std::size_t last = c.todo.size();
    auto done = queue_pages(c.todo, true);
    channel::CopyFinal f;
    f.exit = rec.exits();
    f.next_seq = rec.next_seq();
    f.cpu = machine_->backend().save_cpu_state();
    f.devices = machine_->save_devices();
    if (done)
        done = c.sink->send(std::move(f));
    if (done)
        done = c.sink->finish();
    const double pause_ms = seconds_since(paused) * 1000;
    if (!done) {
        report_ = CopyReport{false, done.error(), 0, "failed at the final pause"};
        return;
    }
    // From here the backup replays; what the guest produces waits for its acks.
    gate_.set_passthrough(false);
    report_ = CopyReport{true, {}, rec.next_seq() - 1,
                         std::to_string(c.round) + " rounds in " + std::to_string(seconds_since(c.started)).substr(0, 5) +
                             " s, the final pause " + std::to_string(pause_ms).substr(0, 5) + " ms (" +
                             std::to_string(last) + " pages), at exit " + std::to_string(rec.exits()),
                         pause_ms, c.round};
}

// ----- the backup -----------------------------------------------------------------------------------

Expected<std::optional<protocol::Seq>, std::string> KvmExecution::apply_copy(const channel::CopyRecord& record)
{
    engine::Backend& vm = machine_->backend();
    const std::uint64_t pages = vm.memory_bytes() / engine::Backend::kPageBytes;
    if (const auto* b = std::get_if<channel::CopyBegin>(&record)) {
        if (b->memory_bytes != vm.memory_bytes())
            return unexpected("the primary's VM has " + std::to_string(b->memory_bytes >> 20) + " MiB of memory, this one " +
                              std::to_string(vm.memory_bytes() >> 20) + " MiB (vm.memory-mib differs)");
        return std::optional<protocol::Seq>{};
    }
    if (const auto* p = std::get_if<channel::CopyPages>(&record)) {
        for (std::size_t k = 0; k < p->numbers.size(); ++k) {
            if (p->numbers[k] >= pages)
                return unexpected("page " + std::to_string(p->numbers[k]) + " is outside the VM's " +
                                  std::to_string(pages) + " pages");
            (void)vm.write_guest(p->numbers[k] * engine::Backend::kPageBytes,
                                 std::span(p->data).subspan(k * channel::kCopyPageBytes, channel::kCopyPageBytes));
        }
        return std::optional<protocol::Seq>{};
    }
    const auto& f = std::get<channel::CopyFinal>(record);
    if (auto r = vm.restore_cpu_state(f.cpu); !r)
        return unexpected("vCPU state: " + r.error());
    if (auto r = machine_->load_devices(f.devices); !r)
        return unexpected("device state: " + r.error());
    resume_ = {f.exit, f.next_seq};
    exits_ = f.exit;
    return std::optional<protocol::Seq>{f.next_seq - 1};
}

Expected<protocol::Seq, std::string> KvmExecution::replay(std::deque<logformat::Entry>& log, bool final)
{
    if (!rep_) {
        rep_.emplace(*machine_);
        if (resume_.exit > 0)
            rep_->resume_after(resume_.exit, resume_.next_seq - 1);
    }
    const std::uint64_t before = rep_->exits();
    auto ok = rep_->replay_available(log, final);
    exits_ = rep_->exits();
    if (!ok)
        return unexpected(ok.error().message());
    if (rep_->exits() == before)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    return rep_->last_seq();
}

Expected<std::string, std::string> KvmExecution::go_live()
{
    if (!rep_)
        rep_.emplace(*machine_);
    engine::Replayer& rep = *rep_;
    // Go live: the protocol core has the test-and-set won and every received entry replayed.
    std::string reissued;
    if (disk_) {
        auto n = rep.reissue_writes(*disk_);
        if (!n)
            say_("going live: " + n.error());
        else
            reissued = "re-issued the last " + std::to_string(*n) + " disk writes";
    }
    if (tap_) {
        if (auto* nic = machine_->net())
            announce_mac(nic->mac()); // before the frames: the switch learns where the guest is
        const std::size_t frames = rep.resend_frames(*tap_);
        reissued += (reissued.empty() ? "" : ", ") + std::string("re-sent the last ") + std::to_string(frames) + " frames";
    }
    const std::string what = "at exit " + std::to_string(rep.exits()) + ", after log entry " +
                             std::to_string(rep.last_seq()) + (reissued.empty() ? "" : ": " + reissued);
    gate_.set_passthrough(true);
    resume_ = engine::ResumePoint{rep.exits(), rep.last_seq() + 1};
    rep_.reset();
    recorder();
    return what;
}

void KvmExecution::announce_mac(const devices::MacAddress& mac)
{
    if (!tap_)
        return;
    std::vector<std::uint8_t> f(60, 0);
    std::fill(f.begin(), f.begin() + 6, 0xff); // broadcast
    std::copy(mac.begin(), mac.end(), f.begin() + 6);
    const std::uint8_t rarp[] = {0x80, 0x35, 0, 1, 0x08, 0x00, 6, 4, 0, 3}; // RARP request-reverse
    std::copy(std::begin(rarp), std::end(rarp), f.begin() + 12);
    std::copy(mac.begin(), mac.end(), f.begin() + 22); // sender hardware address
    std::copy(mac.begin(), mac.end(), f.begin() + 32); // target hardware address
    for (int i = 0; i < 3; ++i)
        tap_->transmit(f);
}

} // namespace xenft::daemon
