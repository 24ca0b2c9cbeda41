// The policy test harness behind `orchardctl policy test FILE --events FILE`:
// runs one policy in the real engine against an in-memory host and prints
// every decision as a JSON line, so admins can test policies in their CI.
//
// Input: one JSON object per line (blank lines and lines starting with '#'
// are skipped), with the event model's field names:
//   {"type": "command.acknowledged", "enrollment_id": "...", "command_uuid": "...",
//    "request_type": "SecurityInfo", "payload": {...}}
// plus optional harness fields:
//   "time":   the event time (RFC 3339 or Unix seconds); also the run's clock
//   "device": inventory of enrollment_id (os_version, serial_number, model, ...)
//   "schedule": for type "schedule.tick", the schedule's name
// Unknown fields are ignored. A command result event also becomes the
// device's last result of that RequestType, as on the server.
// ctx:renewal_profile() returns the bytes "orchard harness renewal profile".
//
// Output, one JSON object per decision, each with "line" and "event":
//   {"kind":"command", "enrollment_id", "command_uuid", "request_type",
//    "priority", "push", "command": {...}, "plist": "<?xml ..."}
//   {"kind":"push", "enrollment_id"}
//   {"kind":"store", "key", "value"} or {"kind":"store", "key", "deleted": true}
//   {"kind":"compliance", "enrollment_id", "status", "attempts", "step", ...}
//   {"kind":"log", "level", "message"}
//   {"kind":"error", "error", "message"}        (the run committed nothing)
// Exit status: 0 all runs succeeded, 1 a run failed, 2 bad input or a policy
// that does not load (message on err naming the line).
#pragma once

#include <iosfwd>
#include <string>

#include "policy/sandbox.h"

namespace orchard::policy {

struct HarnessOptions {
  bool dry_run = false;  // run as a dry-run policy (ctx.dry_run = true)
  SandboxLimits limits;
};

int RunHarness(const std::string& policy_file, std::istream& events, std::ostream& out, std::ostream& err,
               const HarnessOptions& options = {});

}  // namespace orchard::policy
