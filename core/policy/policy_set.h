// The policies of a directory, each a consumer of the automation host.
//
// Every `*.lua` file in the directory is a policy (its name: the file's, or
// what it declares). Each policy runs as consumer "policy:<name>" with one
// loaded instance per lane. Lifecycle:
//   - load at start; a file that fails to load is reported (List) and skipped;
//   - reload (on request, or when a file changes: the directory is polled):
//     the new version is loaded on the side and swapped in between events; if
//     it fails to load, the previous version keeps running and the error is
//     reported;
//   - enable/disable: a disabled policy skips its events (its checkpoint moves
//     on, so re-enabling does not replay the backlog);
//   - dry run: runs and records decisions (commands with their plists, state
//     writes), applies nothing;
//   - schedules (policy:every) are registered with the host's Scheduler,
//     which emits schedule.tick events for them;
//   - a deleted file unloads the policy (its checkpoints are kept until the
//     consumer is unregistered with drop).
// Flags (enabled, dry run) persist in the store through automation::FlagStore,
// under the consumer's name.
//
// Thread-safety: all public methods are safe for concurrent use.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "automation/runner.h"
#include "automation/schedule.h"
#include "policy/policy.h"

namespace orchard::policy {

using PolicyFlagValues = automation::ConsumerFlags;

struct PolicySetOptions {
  std::string dir;  // "" = no policies
  SandboxLimits limits;
  int lanes = 2;
  int64_t watch_interval_ms = 2000;  // 0 = no watching (reload on request only)
};

struct PolicyStatus {
  std::string name;
  std::string file;
  bool loaded = false;  // a version is running
  PolicyInfo info;      // of the running version
  std::string load_error;  // the last load attempt's error ("" = it loaded)
  int64_t loaded_ms = 0;
  PolicyFlagValues flags;
  size_t memory_bytes = 0;  // all lanes
};

class PolicySet {
 public:
  // Borrows runner, flags and schedules (they must outlive the set).
  PolicySet(const PolicySetOptions& options, automation::Runner* runner, automation::FlagStore* flags,
            automation::ScheduleRegistry* schedules);
  ~PolicySet();

  // Loads every policy of the directory and starts watching it. Errors of
  // single files do not fail the call (they are in List()); a missing or
  // unreadable directory does.
  Status Start();
  void Stop();

  // Re-reads one policy's file ("" = all files). A policy whose new version
  // fails keeps its old one; the error is returned (and listed).
  Status Reload(const std::string& name = "");
  Status SetEnabled(const std::string& name, bool enabled);
  Status SetDryRun(const std::string& name, bool dry_run);
  std::vector<PolicyStatus> List();
  Result<PolicyStatus> Get(const std::string& name);

  static std::string ConsumerName(const std::string& policy) { return "policy:" + policy; }

  class Entry;  // one policy (internal)

 private:
  Status ReloadLocked(const std::string& only);
  Status LoadFile(const std::string& path, int64_t mtime_ns);
  void Watch();

  PolicySetOptions options_;
  automation::Runner* runner_;
  automation::FlagStore* flags_;
  automation::ScheduleRegistry* schedules_;
  std::mutex mu_;  // entries_ and reloads
  std::map<std::string, std::shared_ptr<Entry>> entries_;  // by policy name
  std::map<std::string, std::string> load_errors_;           // file -> error, for files that never loaded
  std::map<std::string, int64_t> seen_;                      // file -> mtime of its last load attempt
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool stopping_ = false;
  std::thread watcher_;
};

}  // namespace orchard::policy
