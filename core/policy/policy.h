// One Lua compliance policy: a file loaded into its own sandbox (sandbox.h),
// its metadata and the handlers it registered, and the runs of those handlers.
//
// A policy file reads like the admin's intent:
//   policy { name = "min-os", description = "...", version = "1.2" }
//   policy:on("enrollment.enrolled", function(ctx, event) ... end)
//   policy:on_result("DeviceInformation", function(ctx, result) ... end)
//   policy:every("6h", function(ctx) ... end, { splay = "1h" })
//   policy:on_status("device.operating-system.version", function(ctx, change) ... end)
// Handlers receive a ctx for this run only (docs/lua-api.md): the event, the
// device, enqueue/push, the policy's key-value store, compliance state,
// logging; the global ddm table declares state (ddm.put_declaration,
// ddm.assign, ...) and reads what devices report (ddm.status). Everything a
// run decides lands in a Decisions value; nothing is
// written by the policy itself. A run that raises, overruns its instruction
// budget or memory cap, or passes its deadline decides nothing (log lines are
// kept for diagnosis).
//
// Thread-compatible: one thread at a time per Policy (the host gives each
// lane its own Policy instance).
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "automation/decisions.h"
#include "automation/host.h"
#include "automation/schedule.h"
#include "events/events.h"
#include "plist/plist.h"
#include "policy/sandbox.h"
#include "util/status.h"

namespace orchard::policy {

using ScheduleInfo = automation::ScheduleInfo;

struct PolicyInfo {
  std::string name;  // [A-Za-z0-9._-], at most 64 bytes
  std::string description;
  std::string version;
  std::string source_sha256;
  std::set<std::string> event_types;   // from on()
  std::set<std::string> result_types;  // from on_result() ("*" = any)
  std::set<std::string> status_items;  // from on_status() (DDM status items)
  std::vector<ScheduleInfo> schedules;
};

struct RunInput {
  std::string consumer;  // names the decisions (UUID derivation), e.g. "policy:min-os"
  std::string trigger;   // the event cursor or schedule-run id
  int64_t now_ms = 0;
  bool dry_run = false;
};

// Event types that carry a command result (on_result handlers match these).
bool IsResultEvent(std::string_view type);

// Valid policy (and consumer) name.
bool ValidPolicyName(std::string_view name);
// Parses a duration ("90", "90s", "15m", "6h", "1d12h", "2w") into milliseconds.
bool ParseDuration(const char* s, size_t n, int64_t* out_ms);
// Compares dotted versions numerically ("17.10" > "17.9"): -1, 0 or 1.
int CompareVersions(const char* a, size_t na, const char* b, size_t nb);

class Policy {
 public:
  // Loads source (its top-level code runs under the same budgets as a
  // handler). default_name is used when the file does not name itself.
  // Errors (InvalidArgument) carry the Lua message with its line.
  static Result<std::unique_ptr<Policy>> Load(const std::string& default_name, std::string_view source,
                                              const std::string& chunk_name, const SandboxLimits& limits);
  ~Policy();

  const PolicyInfo& info() const { return info_; }
  // Whether any handler wants events of this type (and request type).
  bool Wants(std::string_view type, std::string_view request_type) const;

  // Runs every handler matching the event, in registration order, as one run
  // (one budget, one Decisions): on() handlers, then on_result() handlers for
  // command results, then for "policy.run" every per-device schedule of the
  // event's device. payload is the event's payload (the device report for
  // command events).
  automation::RunOutcome HandleEvent(const RunInput& in, const events::Event& event,
                                     const plist::Value& payload, automation::HostReader* host,
                                     automation::Decisions* out);
  // Runs schedule `index` (info().schedules) for one enrollment (empty for a
  // per-period schedule).
  automation::RunOutcome RunSchedule(const RunInput& in, size_t index, const std::string& enrollment_id,
                                     automation::HostReader* host, automation::Decisions* out);
  // Bytes the policy's Lua state holds.
  size_t memory_used() const;
  // What the file's top-level code logged while it loaded.
  const std::vector<automation::LogLine>& load_logs() const { return load_logs_; }

  struct Frame;    // the current run (internal)
  struct Scratch;  // values the C bindings hand to Lua (internal)

 private:
  Policy();
  // Runs the frame's handlers; fresh_budget starts new budgets (a new run).
  automation::RunOutcome Run(Frame* frame, bool fresh_budget);

  std::unique_ptr<Sandbox> sandbox_;
  PolicyInfo info_;

 public:
  struct Handler {
    enum Kind { kEvent, kResult, kSchedule, kStatus } kind;
    std::string key;  // event type, request type, schedule name or status item
    int ref;          // registry reference of the function
  };

 private:
  std::vector<Handler> handlers_;
  bool loading_ = false;
  uint64_t run_serial_ = 0;
  Frame* frame_ = nullptr;
  std::unique_ptr<Scratch> scratch_;
  std::vector<automation::LogLine> load_logs_;

  friend struct PolicyAccess;
};

}  // namespace orchard::policy
