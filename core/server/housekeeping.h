// Periodic maintenance (result retention, event pruning, re-push, certificate
// expiry checks) on one background thread.
//
// Each task runs when its interval has passed. A task that throws (anything:
// std::exception or not) is logged and the thread goes on with the other
// tasks and later rounds, so nothing here can std::terminate the server.
// Long tasks should check stop_requested() between bounded steps.
//
// Thread-safety: construct, Start and Stop from one thread; stop_requested()
// from any thread (tasks call it).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace orchard::server {

class Housekeeper {
 public:
  struct Task {
    std::string name;                      // for logs
    std::chrono::milliseconds interval;    // between runs (> 0)
    std::chrono::milliseconds first_delay; // before the first run (0: at start)
    std::function<void(int64_t now_ms)> run;
  };

  explicit Housekeeper(std::vector<Task> tasks);
  ~Housekeeper();  // Stop()
  Housekeeper(const Housekeeper&) = delete;
  Housekeeper& operator=(const Housekeeper&) = delete;

  void Start();
  // Asks the running task to finish, wakes the thread and joins it.
  void Stop();
  bool stop_requested() const { return stopping_.load(); }

 private:
  void Loop();
  // Runs one task, catching whatever it throws.
  void RunGuarded(Task& task, int64_t now_ms);

  struct Slot {
    Task task;
    std::chrono::steady_clock::time_point due;
  };
  std::vector<Slot> slots_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stopping_{false};
};

}  // namespace orchard::server
