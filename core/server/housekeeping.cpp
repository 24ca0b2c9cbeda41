#include "server/housekeeping.h"

#include <algorithm>
#include <exception>

#include "log/log.h"
#include "util/encoding.h"

namespace orchard::server {
namespace {
constexpr const char* kLog = "server";
}  // namespace

Housekeeper::Housekeeper(std::vector<Task> tasks) {
  const auto now = std::chrono::steady_clock::now();
  for (auto& t : tasks) {
    const auto first = t.first_delay;
    slots_.push_back({std::move(t), now + first});
  }
}

Housekeeper::~Housekeeper() { Stop(); }

void Housekeeper::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Loop(); });
}

void Housekeeper::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Housekeeper::RunGuarded(Task& task, int64_t now_ms) {
  try {
    task.run(now_ms);
  } catch (const std::exception& e) {
    log::Error(kLog, "event=housekeeping_task_threw task={} error=\"{}\"", task.name, e.what());
  } catch (...) {
    log::Error(kLog, "event=housekeeping_task_threw task={} error=unknown", task.name);
  }
}

void Housekeeper::Loop() {
  // The thread's top: whatever escapes a task's own guard is caught here too,
  // and the loop goes on with the next round.
  while (!stopping_) {
    try {
      for (auto& slot : slots_) {
        if (stopping_) break;
        const auto now = std::chrono::steady_clock::now();
        if (now < slot.due) continue;
        slot.due = now + slot.task.interval;
        RunGuarded(slot.task, NowMillis());
      }
      auto next = std::chrono::steady_clock::time_point::max();
      for (const auto& slot : slots_) next = std::min(next, slot.due);
      std::unique_lock lock(mu_);
      if (next == std::chrono::steady_clock::time_point::max())
        cv_.wait(lock, [this] { return stopping_.load(); });
      else
        cv_.wait_until(lock, next, [this] { return stopping_.load(); });
    } catch (...) {
      // Only a failing logger or wait can get here; keep the thread (and the
      // server) alive, without spinning.
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_.load(); });
    }
  }
}

}  // namespace orchard::server
