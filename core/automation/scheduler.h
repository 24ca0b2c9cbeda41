// The Scheduler: turns consumers' schedules into schedule.tick events.
//
// Periods start at multiples of the interval (UTC). In each period a per-device
// schedule emits one tick per enrolled device channel, walking enrollments in
// id order and spreading them evenly over the splay window (by the enrolled
// count); a per-period schedule emits one tick at a fixed offset within the
// splay. Ticks carry request_type "<consumer>/<schedule>" and payload
// {"schedule", "period" (its start, Unix ms)}; progress (period, last device) is stored with the
// ticks it emitted, in the same batch, so a crash neither loses nor repeats a
// device's tick. At most max_ticks_per_round are emitted per round.
//
// Thread-safety: SetSchedules and RunRound may be called from any thread;
// rounds run one at a time. Borrows store, events and enrollments.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "automation/schedule.h"
#include "domain/enrollments.h"
#include "events/events.h"
#include "store/store.h"

namespace orchard::automation {

struct SchedulerOptions {
  int64_t round_ms = 1000;
  size_t max_ticks_per_round = 5000;
  size_t batch = 500;  // ticks per transaction
};

class Scheduler : public ScheduleRegistry {
 public:
  Scheduler(const SchedulerOptions& options, store::Store* store, events::EventLog* events,
            domain::Enrollments* enrollments);
  ~Scheduler() override;

  void SetSchedules(const std::string& consumer, const std::vector<ScheduleInfo>& schedules) override;
  // Emits the ticks due at now_ms; returns how many.
  Result<size_t> RunRound(int64_t now_ms);
  // A thread calling RunRound every round_ms (every failure is logged).
  void Start();
  void Stop();

 private:
  Result<size_t> RunOne(const std::string& consumer, const ScheduleInfo& s, int64_t now_ms, size_t budget);

  SchedulerOptions options_;
  store::Store* store_;
  events::EventLog* events_;
  domain::Enrollments* enrollments_;
  std::mutex mu_;  // schedules_
  std::map<std::string, std::vector<ScheduleInfo>> schedules_;
  std::mutex round_mu_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace orchard::automation
