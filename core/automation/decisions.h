// What an automation consumer (a Lua policy, a plugin) decides when it handles
// one event, and the per-(policy, device) compliance state it keeps.
//
// A handler run never writes anything itself: it fills a Decisions value, and
// the host applies all of it in one transaction together with the consumer's
// checkpoint (or, in a dry run, only records it). So a run that fails or
// overruns its budget leaves no trace but its error.
//
// Value types; thread-safe as values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace orchard::automation {

enum class ComplianceStatus : int {
  kUnknown = 0,
  kCompliant = 1,
  kNonCompliant = 2,
  kRemediationPending = 3,
  kExempt = 4,
};
const char* ComplianceStatusName(ComplianceStatus s);  // "unknown", "compliant", ...
bool ParseComplianceStatus(std::string_view name, ComplianceStatus* out);
// Non-compliant and remediation-pending are the failing states.
inline bool IsFailing(ComplianceStatus s) {
  return s == ComplianceStatus::kNonCompliant || s == ComplianceStatus::kRemediationPending;
}

// Per (policy, enrollment) state. A failing streak starts when the status goes
// from passing (or unknown) to failing; first_failed_ms, attempts and step
// belong to the current streak and reset when it ends.
struct ComplianceState {
  ComplianceStatus status = ComplianceStatus::kUnknown;
  int64_t since_ms = 0;         // when status last changed
  int64_t first_failed_ms = 0;  // start of the current failing streak (0: not failing)
  int64_t attempts = 0;         // remediation attempts in this streak
  int64_t step = 0;             // escalation steps taken in this streak
  int64_t updated_ms = 0;       // last write
  std::string last_command_uuid;
  std::string reason;

  std::string Encode() const;
  static Result<ComplianceState> Decode(std::string_view bytes);
};

struct CommandDecision {
  std::string enrollment_id;
  std::string command_uuid;  // derived from (consumer, trigger, index): a replay cannot queue twice
  std::string request_type;
  std::string plist;  // the complete command plist ({CommandUUID, Command})
  int priority = 0;
  bool push = true;  // wake the device after the commit
};

struct KvWrite {
  std::string key;
  std::optional<std::string> value;  // nullopt: delete
};

// A Declarative Device Management write (docs/ddm.md), applied by the host in
// the run's transaction with the token changes and sync commands it causes.
struct DdmOp {
  enum class Kind : int { kPutDeclaration = 0, kDeleteDeclaration, kTouch, kSetAdd, kSetRemove, kAssign, kUnassign };
  Kind kind = Kind::kPutDeclaration;
  // kPutDeclaration: a = the declaration JSON; kDeleteDeclaration, kTouch:
  // a = Identifier; kSetAdd, kSetRemove: a = set, b = Identifier; kAssign,
  // kUnassign: a = enrollment id, b = set.
  std::string a, b;
};
const char* DdmOpName(DdmOp::Kind k);  // "put_declaration", "set_add", ...

struct ComplianceWrite {
  std::string enrollment_id;
  ComplianceState state;
};

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
const char* LogLevelName(LogLevel l);

struct LogLine {
  LogLevel level = LogLevel::kInfo;
  std::string message;
};

// Everything one handler run decided, in the order it was decided.
struct Decisions {
  std::vector<CommandDecision> commands;
  std::vector<std::string> pushes;  // enrollment ids to wake without a command
  std::vector<KvWrite> kv;          // in the consumer's own namespace
  std::vector<ComplianceWrite> compliance;
  std::vector<DdmOp> ddm;
  std::vector<LogLine> logs;

  // Anything beyond log lines.
  bool HasEffects() const {
    return !commands.empty() || !pushes.empty() || !kv.empty() || !compliance.empty() || !ddm.empty();
  }
  bool empty() const { return !HasEffects() && logs.empty(); }
  void Clear() { *this = Decisions{}; }
  // Appends other's decisions after this one's.
  void Append(Decisions&& other);
};

// Why a handler run failed (never matched by message text).
enum class RunError : int {
  kNone = 0,
  kScript,        // the handler raised an error (message has the traceback)
  kInstructions,  // instruction budget exhausted
  kMemory,        // memory cap reached
  kTimeout,       // wall-clock deadline passed
  kHost,          // a host call failed (storage error); worth retrying
  kLimit,         // too many decisions in one run
  kPlugin,        // a plugin's hook returned an error (message: its status and error text)
};
const char* RunErrorName(RunError e);

struct RunOutcome {
  RunError error = RunError::kNone;
  std::string message;  // with the Lua traceback for kScript
  bool ok() const { return error == RunError::kNone; }
};

// The CommandUUID for the index-th command a consumer decides for a trigger
// (an event cursor, or a schedule run). Deterministic, UUID-shaped (version 8,
// upper case), so replaying a trigger produces the same UUIDs.
std::string DerivedCommandUuid(std::string_view consumer, std::string_view trigger, size_t index);

}  // namespace orchard::automation
