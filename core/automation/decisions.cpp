#include "automation/decisions.h"

#include <iterator>

#include "util/encoding.h"
#include "util/record.h"

namespace orchard::automation {
namespace {
constexpr uint64_t kComplianceVersion = 1;
constexpr const char* kStatusNames[] = {"unknown", "compliant", "non_compliant",
                                        "remediation_pending", "exempt"};
}  // namespace

const char* ComplianceStatusName(ComplianceStatus s) {
  int i = static_cast<int>(s);
  return i >= 0 && i < 5 ? kStatusNames[i] : "unknown";
}

bool ParseComplianceStatus(std::string_view name, ComplianceStatus* out) {
  for (int i = 0; i < 5; ++i) {
    if (name == kStatusNames[i]) {
      *out = static_cast<ComplianceStatus>(i);
      return true;
    }
  }
  return false;
}

std::string ComplianceState::Encode() const {
  RecordWriter w;
  w.PutVarint(kComplianceVersion);
  w.PutVarint(static_cast<uint64_t>(status));
  w.PutSigned(since_ms);
  w.PutSigned(first_failed_ms);
  w.PutSigned(attempts);
  w.PutSigned(step);
  w.PutSigned(updated_ms);
  w.PutString(last_command_uuid);
  w.PutString(reason);
  return w.Take();
}

Result<ComplianceState> ComplianceState::Decode(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kComplianceVersion) return Status::Internal("corrupt compliance record");
  ComplianceState s;
  uint64_t st = r.GetVarint();
  if (st > static_cast<uint64_t>(ComplianceStatus::kExempt))
    return Status::Internal("corrupt compliance record");
  s.status = static_cast<ComplianceStatus>(st);
  s.since_ms = r.GetSigned();
  s.first_failed_ms = r.GetSigned();
  s.attempts = r.GetSigned();
  s.step = r.GetSigned();
  s.updated_ms = r.GetSigned();
  s.last_command_uuid = r.GetString();
  s.reason = r.GetString();
  if (r.corrupt()) return Status::Internal("corrupt compliance record");
  return s;
}

const char* LogLevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

void Decisions::Append(Decisions&& o) {
  auto move_all = [](auto& to, auto& from) {
    to.insert(to.end(), std::make_move_iterator(from.begin()), std::make_move_iterator(from.end()));
  };
  move_all(commands, o.commands);
  move_all(pushes, o.pushes);
  move_all(kv, o.kv);
  move_all(compliance, o.compliance);
  move_all(ddm, o.ddm);
  move_all(logs, o.logs);
}

const char* DdmOpName(DdmOp::Kind k) {
  switch (k) {
    case DdmOp::Kind::kPutDeclaration: return "put_declaration";
    case DdmOp::Kind::kDeleteDeclaration: return "delete_declaration";
    case DdmOp::Kind::kTouch: return "touch";
    case DdmOp::Kind::kSetAdd: return "set_add";
    case DdmOp::Kind::kSetRemove: return "set_remove";
    case DdmOp::Kind::kAssign: return "assign";
    case DdmOp::Kind::kUnassign: return "unassign";
  }
  return "unknown";
}

const char* RunErrorName(RunError e) {
  switch (e) {
    case RunError::kNone: return "none";
    case RunError::kScript: return "script_error";
    case RunError::kInstructions: return "instruction_budget";
    case RunError::kMemory: return "memory_cap";
    case RunError::kTimeout: return "timeout";
    case RunError::kHost: return "host_error";
    case RunError::kLimit: return "decision_limit";
    case RunError::kPlugin: return "plugin_error";
  }
  return "unknown";
}

std::string DerivedCommandUuid(std::string_view consumer, std::string_view trigger, size_t index) {
  std::string material = "orchard-command-v1";
  material.push_back('\0');
  material.append(consumer);
  material.push_back('\0');
  material.append(trigger);
  material.push_back('\0');
  material.append(std::to_string(index));
  std::string h = Sha256(material).substr(0, 16);
  h[6] = static_cast<char>((h[6] & 0x0F) | 0x80);  // version 8 (custom)
  h[8] = static_cast<char>((h[8] & 0x3F) | 0x80);  // RFC 4122 variant
  std::string hex = HexEncode(h);
  for (auto& c : hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20, 12);
}

}  // namespace orchard::automation
