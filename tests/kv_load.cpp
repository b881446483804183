// kv_load: clients of the test guest's key-value service (tests/guest/service.c) for the demo
// and the system tests. K clients send random ADDs and GETs for S seconds, each retried until
// answered; then every client's history is checked together (tests/vm_fixture.hpp,
// check_history). Prints a progress line every second and, at the end, the longest time no
// answer came after the first one (the failover stall) and the verdict. Exit status 0 only if every request was
// answered and the history is consistent.
#include <boost/program_options.hpp>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "tests/vm_fixture.hpp"

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv)
{
    std::string server, local;
    double seconds = 20;
    int clients = 2;
    unsigned seed = 1;
    po::options_description opts("usage: kv_load --server IP --local IP [--seconds S] [--clients K] [--seed N]");
    opts.add_options()("server", po::value(&server)->required())("local", po::value(&local)->required())(
        "seconds", po::value(&seconds))("clients", po::value(&clients))("seed", po::value(&seed));
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, opts), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "kv_load: " << e.what() << "\n" << opts;
        return 2;
    }
    std::mutex mu;
    std::vector<xenft::testing::KvCall> calls;
    std::atomic<bool> stop{false};
    std::atomic<int> answered{0};
    std::optional<Clock::time_point> last_answer; // gaps count from the first answer on
    double longest_gap_ms = 0;
    std::vector<std::thread> threads;
    const auto start = Clock::now();
    for (int c = 0; c < clients; ++c)
        threads.emplace_back([&, c] {
            std::mt19937 rng(seed * 100 + static_cast<unsigned>(c));
            xenft::testing::KvClient client(local, server, 1000 + static_cast<std::uint32_t>(c));
            while (!stop) {
                auto call = client.call(rng() % 10 < 7 ? 1 : 2, static_cast<std::uint8_t>(rng() % 8), rng() % 1000,
                                        std::chrono::milliseconds(200), 150);
                std::lock_guard lock(mu);
                if (call.answered) {
                    const auto now = Clock::now();
                    if (last_answer)
                        longest_gap_ms =
                            std::max(longest_gap_ms, std::chrono::duration<double, std::milli>(now - *last_answer).count());
                    last_answer = now;
                    ++answered;
                }
                calls.push_back(call);
            }
        });
    for (int s = 1; s <= static_cast<int>(seconds); ++s) {
        std::this_thread::sleep_until(start + std::chrono::seconds(s));
        std::cout << "client: " << s << " s, " << answered << " answered" << std::endl;
    }
    stop = true;
    for (auto& t : threads)
        t.join();
    std::size_t unanswered = 0;
    for (const auto& c : calls)
        unanswered += !c.answered;
    const auto verdict = xenft::testing::check_history(calls);
    std::cout << "client: " << calls.size() << " requests, " << unanswered << " unanswered, longest wait for an answer "
              << static_cast<long>(longest_gap_ms) << " ms\n";
    if (verdict || unanswered || calls.empty()) {
        std::cout << "verdict: INCONSISTENT: " << (verdict ? *verdict : std::to_string(unanswered) + " requests never answered")
                  << "\n";
        return 1;
    }
    std::cout << "verdict: consistent: one history, every acknowledged request kept\n";
    return 0;
}
