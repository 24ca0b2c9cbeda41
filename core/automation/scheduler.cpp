#include "automation/scheduler.h"

#include <algorithm>

#include "automation/store_host.h"
#include "log/log.h"
#include "plist/plist.h"
#include "util/encoding.h"

namespace orchard::automation {
namespace {
constexpr const char* kLog = "scheduler";

struct Progress {
  int64_t period = -1;
  int64_t interval_ms = 0;
  std::string cursor;  // the last device ticked in this period
  int64_t emitted = 0;
  bool done = false;
  // When this period's splay window opened: the period's start, or, in the
  // period a schedule was first seen or changed, that moment (so loading a
  // policy mid-period spreads its first runs instead of running them all at once).
  int64_t window_start_ms = 0;
};

std::string Encode(const Progress& p) {
  plist::Value v;
  v.Set("period", plist::Value::Integer(p.period));
  v.Set("interval_ms", plist::Value::Integer(p.interval_ms));
  v.Set("cursor", plist::Value::String(p.cursor));
  v.Set("emitted", plist::Value::Integer(p.emitted));
  v.Set("done", plist::Value::Bool(p.done));
  v.Set("window_start", plist::Value::Integer(p.window_start_ms));
  return plist::ToJson(v);
}

Progress Decode(const std::string& s) {
  Progress p;
  auto v = plist::ParseJson(s);
  if (!v.ok()) return p;
  if (auto* i = v->Find("period") ? v->Find("period")->AsInteger() : nullptr) p.period = *i;
  if (auto* i = v->Find("interval_ms") ? v->Find("interval_ms")->AsInteger() : nullptr) p.interval_ms = *i;
  if (auto* i = v->Find("emitted") ? v->Find("emitted")->AsInteger() : nullptr) p.emitted = *i;
  p.cursor = std::string(v->GetString("cursor"));
  p.done = v->GetBool("done", false);
  if (auto* i = v->Find("window_start") ? v->Find("window_start")->AsInteger() : nullptr) p.window_start_ms = *i;
  return p;
}

}  // namespace

Scheduler::Scheduler(const SchedulerOptions& options, store::Store* store, events::EventLog* events,
                     domain::Enrollments* enrollments)
    : options_(options), store_(store), events_(events), enrollments_(enrollments) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::SetSchedules(const std::string& consumer, const std::vector<ScheduleInfo>& schedules) {
  std::lock_guard lock(mu_);
  if (schedules.empty()) schedules_.erase(consumer);
  else schedules_[consumer] = schedules;
}

Result<size_t> Scheduler::RunRound(int64_t now_ms) {
  std::lock_guard round(round_mu_);
  std::map<std::string, std::vector<ScheduleInfo>> all;
  {
    std::lock_guard lock(mu_);
    all = schedules_;
  }
  size_t total = 0;
  for (const auto& [consumer, list] : all) {
    for (const auto& s : list) {
      if (total >= options_.max_ticks_per_round) return total;
      auto n = RunOne(consumer, s, now_ms, options_.max_ticks_per_round - total);
      if (!n.ok()) return n.status();
      total += *n;
    }
  }
  return total;
}

Result<size_t> Scheduler::RunOne(const std::string& consumer, const ScheduleInfo& s, int64_t now, size_t budget) {
  if (s.interval_ms <= 0) return size_t{0};
  const std::string key = AutomationStore::Key("sc", consumer, s.name);
  auto stored = store_->Get(store::Cf::kAutomation, key);
  if (!stored.ok()) return stored.status();
  Progress p = stored->has_value() ? Decode(**stored) : Progress{};
  const int64_t period = now / s.interval_ms;
  const int64_t start = period * s.interval_ms;
  if (p.period != period || p.interval_ms != s.interval_ms) {
    const bool new_schedule = !stored->has_value() || p.interval_ms != s.interval_ms;
    p = Progress{period, s.interval_ms, "", 0, false, new_schedule ? now : start};
    store::Batch b;  // the window's start must survive until the first tick is written
    b.Put(store::Cf::kAutomation, key, Encode(p));
    ORCHARD_RETURN_IF_ERROR(store_->Write(b));
  }
  if (p.done) return size_t{0};
  const int64_t window = std::max(start, p.window_start_ms);
  const std::string target = consumer + "/" + s.name;
  plist::Value payload;
  payload.Set("schedule", plist::Value::String(s.name));
  payload.Set("period", plist::Value::Integer(start));  // the period's start, Unix ms
  const std::string payload_json = plist::ToJson(payload);

  if (!s.per_device) {
    const int64_t offset = s.splay_ms > 0 ? static_cast<int64_t>(StableHash64(target) % static_cast<uint64_t>(s.splay_ms)) : 0;
    if (now < window + offset) return size_t{0};
    events::Transaction txn(events_);
    txn.Emit({.type = events::type::kScheduleTick, .time_ms = now, .request_type = target, .payload_json = payload_json});
    p.done = true;
    p.emitted = 1;
    txn.batch().Put(store::Cf::kAutomation, key, Encode(p));
    ORCHARD_RETURN_IF_ERROR(events_->Commit(txn));
    return size_t{1};
  }

  // How many devices should have had their tick by now: all of them once the
  // splay window has passed, a proportional share before (rounded down: with
  // n devices the k-th ticks k/n of the way through the window, none at its
  // very start).
  auto enrolled = enrollments_->CountInState(store::EnrollmentState::kEnrolled);
  if (!enrolled.ok()) return enrolled.status();
  int64_t due = *enrolled;
  if (s.splay_ms > 0 && now - window < s.splay_ms) due = *enrolled * (now - window) / s.splay_ms;
  size_t emitted = 0;
  domain::EnrollmentFilter filter;
  filter.state = "enrolled";
  filter.type = "device";
  while (p.emitted < due && emitted < budget && !p.done) {
    const size_t want = std::min({options_.batch, budget - emitted, static_cast<size_t>(due - p.emitted)});
    auto page = enrollments_->List(filter, p.cursor, want);
    if (!page.ok()) return page.status();
    events::Transaction txn(events_);
    for (const auto& e : page->items) {
      txn.Emit({.type = events::type::kScheduleTick, .time_ms = now, .enrollment_id = e.id, .request_type = target,
                .payload_json = payload_json});
      p.cursor = e.id;
      ++p.emitted;
    }
    if (page->next_cursor.empty()) p.done = true;  // every device had its tick
    else if (page->items.empty()) p.cursor = page->next_cursor;  // a scan that matched nothing yet
    txn.batch().Put(store::Cf::kAutomation, key, Encode(p));
    ORCHARD_RETURN_IF_ERROR(events_->Commit(txn));
    emitted += page->items.size();
    if (page->items.empty() && p.done) break;
  }
  if (emitted)
    log::Debug(kLog, "event=schedule_ticks consumer={} schedule={} period={} emitted={} total={}", consumer,
               log::Quote(s.name), period, emitted, p.emitted);
  return emitted;
}

void Scheduler::Start() {
  thread_ = std::thread([this] {
    std::unique_lock lock(stop_mu_);
    while (!stopping_) {
      lock.unlock();
      try {
        auto n = RunRound(NowMillis());
        if (!n.ok()) log::Error(kLog, "event=schedule_round_failed error={}", log::Quote(n.status().ToString()));
      } catch (const std::exception& e) {
        log::Error(kLog, "event=schedule_round_exception error={}", log::Quote(e.what()));
      } catch (...) {
        log::Error(kLog, "event=schedule_round_exception");
      }
      lock.lock();
      stop_cv_.wait_for(lock, std::chrono::milliseconds(options_.round_ms), [this] { return stopping_; });
    }
  });
}

void Scheduler::Stop() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace orchard::automation
