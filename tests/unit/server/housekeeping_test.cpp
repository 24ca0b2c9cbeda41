// The housekeeping thread: tasks run on their intervals and nothing a task
// throws ends the thread (or, uncaught, the whole server).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "server/housekeeping.h"

using namespace orchard;
using std::chrono::milliseconds;

namespace {
template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::seconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return pred();
}
}  // namespace

TEST_CASE("housekeeping: a task that throws is logged and every task keeps running", "[server][housekeeping]") {
  std::atomic<int> std_throws{0}, other_throws{0}, healthy{0};
  server::Housekeeper h({
      {"throws_std", milliseconds(1), milliseconds(0),
       [&](int64_t) {
         ++std_throws;
         throw std::runtime_error("boom");
       }},
      {"throws_int", milliseconds(1), milliseconds(0),
       [&](int64_t) {
         ++other_throws;
         throw 42;
       }},
      {"healthy", milliseconds(1), milliseconds(0), [&](int64_t) { ++healthy; }},
  });
  h.Start();
  // Several rounds: every task ran again after the others threw.
  CHECK(WaitUntil([&] { return std_throws >= 3 && other_throws >= 3 && healthy >= 3; },
                  std::chrono::seconds(10)));
  h.Stop();  // joins: returns only once the thread has ended
  CHECK(h.stop_requested());
}

TEST_CASE("housekeeping: intervals and first delays are kept", "[server][housekeeping]") {
  std::atomic<int> fast{0}, delayed{0};
  server::Housekeeper h({
      {"fast", milliseconds(1), milliseconds(0), [&](int64_t) { ++fast; }},
      {"delayed", std::chrono::hours(1), std::chrono::hours(1), [&](int64_t) { ++delayed; }},
  });
  h.Start();
  CHECK(WaitUntil([&] { return fast >= 5; }, std::chrono::seconds(10)));
  h.Stop();
  CHECK(delayed == 0);
}
