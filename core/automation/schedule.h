// Schedules of automation consumers (policy:every, plugin timers): the host's
// Scheduler turns them into schedule.tick events in the durable stream, so a
// tick is delivered like any other event (in order per device, at least once,
// replay-safe).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "util/status.h"

namespace orchard::automation {

struct ScheduleInfo {
  std::string name;        // unique within its consumer
  int64_t interval_ms = 0; // period length; periods start at multiples of it (UTC)
  int64_t splay_ms = 0;    // ticks are spread over this window after a period starts (in the period a
                           // schedule is first seen or changed: after that moment)
  bool per_device = true;  // a tick per enrolled device channel, else one per period
};

// Where consumers declare their schedules (the Scheduler implements it).
class ScheduleRegistry {
 public:
  virtual ~ScheduleRegistry() = default;
  // Replaces every schedule of the consumer (an empty list removes them).
  virtual void SetSchedules(const std::string& consumer, const std::vector<ScheduleInfo>& schedules) = 0;
};

// Switches every consumer has, persisted by the host.
struct ConsumerFlags {
  bool enabled = true;
  bool dry_run = false;
};

class FlagStore {
 public:
  virtual ~FlagStore() = default;
  virtual Result<std::optional<ConsumerFlags>> GetFlags(const std::string& consumer) = 0;
  virtual Status PutFlags(const std::string& consumer, const ConsumerFlags& flags) = 0;
};

}  // namespace orchard::automation
