#include "policy/harness.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <istream>
#include <ostream>
#include <sstream>

#include "automation/host.h"
#include "policy/policy.h"
#include "util/encoding.h"

namespace orchard::policy {
namespace {

using plist::Value;

bool ParseTime(const Value& v, int64_t* ms) {
  if (const int64_t* i = v.AsInteger()) {
    *ms = *i * 1000;
    return true;
  }
  if (const double* d = v.AsReal(); d && std::isfinite(*d)) {
    *ms = static_cast<int64_t>(*d * 1000);
    return true;
  }
  if (const std::string* s = v.AsString()) {
    struct tm tm {};
    const char* end = strptime(s->c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end || (*end != 'Z' && *end != '\0')) return false;
    *ms = static_cast<int64_t>(timegm(&tm)) * 1000;
    return true;
  }
  return false;
}

store::Enrollment DeviceFrom(const std::string& id, const Value& d) {
  store::Enrollment e;
  e.id = id;
  e.udid = id.substr(0, id.find(':'));
  e.state = store::EnrollmentState::kEnrolled;
  for (auto [k, field] : {std::pair{"serial_number", &e.serial}, {"model", &e.model},
                          {"model_name", &e.model_name}, {"os_version", &e.os_version},
                          {"build_version", &e.build_version}, {"product_name", &e.product_name},
                          {"device_name", &e.device_name}, {"topic", &e.topic}, {"udid", &e.udid}}) {
    if (const std::string* s = d.Find(k) ? d.Find(k)->AsString() : nullptr) *field = *s;
  }
  e.awaiting_configuration = d.GetBool("awaiting_configuration", false);
  return e;
}

void Emit(std::ostream& out, size_t line, const std::string& event, Value v) {
  Value row;
  row.Set("line", Value::Integer(static_cast<int64_t>(line)));
  row.Set("event", Value::String(event));
  for (auto& [k, x] : *v.AsDict()) row.Set(k, std::move(x));
  out << plist::ToJson(row) << "\n";
}

void PrintDecisions(std::ostream& out, size_t line, const std::string& event, const automation::Decisions& d) {
  for (const auto& c : d.commands) {
    Value v;
    v.Set("kind", Value::String("command"));
    v.Set("enrollment_id", Value::String(c.enrollment_id));
    v.Set("command_uuid", Value::String(c.command_uuid));
    v.Set("request_type", Value::String(c.request_type));
    v.Set("priority", Value::Integer(c.priority));
    v.Set("push", Value::Bool(c.push));
    auto parsed = plist::ParseXml(c.plist);
    if (parsed.ok() && parsed->Find("Command")) v.Set("command", *parsed->Find("Command"));
    v.Set("plist", Value::String(c.plist));
    Emit(out, line, event, std::move(v));
  }
  for (const auto& id : d.pushes) {
    Value v;
    v.Set("kind", Value::String("push"));
    v.Set("enrollment_id", Value::String(id));
    Emit(out, line, event, std::move(v));
  }
  for (const auto& w : d.kv) {
    Value v;
    v.Set("kind", Value::String("store"));
    v.Set("key", Value::String(w.key));
    if (w.value) {
      auto parsed = plist::ParseJson(*w.value);
      v.Set("value", parsed.ok() ? std::move(parsed.value()) : Value::String(*w.value));
    } else {
      v.Set("deleted", Value::Bool(true));
    }
    Emit(out, line, event, std::move(v));
  }
  for (const auto& c : d.compliance) {
    Value v;
    v.Set("kind", Value::String("compliance"));
    v.Set("enrollment_id", Value::String(c.enrollment_id));
    v.Set("status", Value::String(automation::ComplianceStatusName(c.state.status)));
    v.Set("attempts", Value::Integer(c.state.attempts));
    v.Set("step", Value::Integer(c.state.step));
    if (c.state.first_failed_ms) v.Set("first_failed_at", Value::String(FormatRfc3339(c.state.first_failed_ms)));
    if (!c.state.reason.empty()) v.Set("reason", Value::String(c.state.reason));
    if (!c.state.last_command_uuid.empty()) v.Set("last_command_uuid", Value::String(c.state.last_command_uuid));
    Emit(out, line, event, std::move(v));
  }
  for (const auto& op : d.ddm) {
    Value v;
    v.Set("kind", Value::String("ddm"));
    v.Set("op", Value::String(automation::DdmOpName(op.kind)));
    switch (op.kind) {
      case automation::DdmOp::Kind::kPutDeclaration: {
        auto parsed = plist::ParseJson(op.a);
        v.Set("declaration", parsed.ok() ? std::move(parsed.value()) : Value::String(op.a));
        break;
      }
      case automation::DdmOp::Kind::kDeleteDeclaration:
      case automation::DdmOp::Kind::kTouch: v.Set("identifier", Value::String(op.a)); break;
      case automation::DdmOp::Kind::kSetAdd:
      case automation::DdmOp::Kind::kSetRemove:
        v.Set("set", Value::String(op.a));
        v.Set("identifier", Value::String(op.b));
        break;
      case automation::DdmOp::Kind::kAssign:
      case automation::DdmOp::Kind::kUnassign:
        v.Set("enrollment_id", Value::String(op.a));
        v.Set("set", Value::String(op.b));
        break;
    }
    Emit(out, line, event, std::move(v));
  }
  for (const auto& l : d.logs) {
    Value v;
    v.Set("kind", Value::String("log"));
    v.Set("level", Value::String(automation::LogLevelName(l.level)));
    v.Set("message", Value::String(l.message));
    Emit(out, line, event, std::move(v));
  }
}

}  // namespace

int RunHarness(const std::string& policy_file, std::istream& events, std::ostream& out, std::ostream& err,
               const HarnessOptions& options) {
  std::ifstream in(policy_file, std::ios::binary);
  if (!in) {
    err << "cannot read policy " << policy_file << "\n";
    return 2;
  }
  std::stringstream src;
  src << in.rdbuf();
  const std::string stem = std::filesystem::path(policy_file).stem().string();
  auto loaded = Policy::Load(ValidPolicyName(stem) ? stem : "policy", src.str(),
                             std::filesystem::path(policy_file).filename().string(), options.limits);
  if (!loaded.ok()) {
    err << policy_file << ": " << loaded.status().message() << "\n";
    return 2;
  }
  Policy& p = **loaded;
  const std::string consumer = "policy:" + p.info().name;
  automation::MemoryHost host;
  // ctx:renewal_profile() answers these bytes (the server makes a signed, device-bound profile).
  host.SetRenewalProfile("orchard harness renewal profile");
  int64_t clock_ms = NowMillis();
  int status = 0;
  std::string text;
  size_t line = 0;
  while (std::getline(events, text)) {
    ++line;
    if (!text.empty() && text.back() == '\r') text.pop_back();
    size_t first = text.find_first_not_of(" \t");
    if (first == std::string::npos || text[first] == '#') continue;
    plist::Limits lim;
    lim.drop_nulls = true;  // as the server reads event payloads: null = absent
    auto parsed = plist::ParseJson(text, lim);
    if (!parsed.ok() || !parsed->is(plist::Type::kDict)) {
      err << "events line " << line << ": not a JSON object"
          << (parsed.ok() ? "" : ": " + parsed.status().message()) << "\n";
      return 2;
    }
    const Value& row = *parsed;
    events::Event ev;
    ev.seq = line;
    ev.type = std::string(row.GetString("type"));
    if (ev.type.empty()) {
      err << "events line " << line << ": \"type\" (a string) is required\n";
      return 2;
    }
    for (auto [k, field] : {std::pair{"enrollment_id", &ev.enrollment_id}, {"command_uuid", &ev.command_uuid},
                            {"request_type", &ev.request_type}}) {
      const Value* v = row.Find(k);
      if (v && !v->AsString()) {
        err << "events line " << line << ": \"" << k << "\" must be a string\n";
        return 2;
      }
      if (v) *field = *v->AsString();
    }
    if (const Value* t = row.Find("time")) {
      if (!ParseTime(*t, &clock_ms)) {
        err << "events line " << line << ": \"time\" must be RFC 3339 (2026-12-01T10:00:00Z) or Unix seconds\n";
        return 2;
      }
    }
    ev.time_ms = clock_ms;
    Value payload;
    if (const Value* pl = row.Find("payload")) {
      if (!pl->is(plist::Type::kDict)) {
        err << "events line " << line << ": \"payload\" must be an object\n";
        return 2;
      }
      payload = *pl;
    }
    if (const Value* d = row.Find("device")) {
      if (!d->is(plist::Type::kDict) || ev.enrollment_id.empty()) {
        err << "events line " << line << ": \"device\" must be an object and needs an enrollment_id\n";
        return 2;
      }
      host.PutDevice(DeviceFrom(ev.enrollment_id, *d));
    }
    if (IsResultEvent(ev.type) && !ev.enrollment_id.empty() && !ev.request_type.empty()) {
      store::CommandResult r;
      r.command_uuid = ev.command_uuid;
      r.request_type = ev.request_type;
      r.status = std::string(payload.GetString("Status"));
      r.raw = plist::ToXml(payload);
      r.received_ms = clock_ms;
      host.PutResult(ev.enrollment_id, std::move(r));
    }
    // DDM status events also become what ddm.status / ddm.declaration_status read.
    if (ev.type == events::type::kDdmStatusChanged && !ev.enrollment_id.empty()) {
      const Value* value = payload.Find("value");
      host.PutDdmStatus(ev.enrollment_id, std::string(payload.GetString("item")),
                        value ? std::optional<Value>(*value) : std::nullopt);
    }
    if (ev.type == events::type::kDdmDeclarationStatus && !ev.enrollment_id.empty()) {
      const Value* removed = payload.Find("removed");
      const bool gone = removed && removed->AsBool() && *removed->AsBool();
      host.PutDdmDeclarationStatus(ev.enrollment_id, std::string(payload.GetString("identifier")),
                                   gone ? std::nullopt : std::optional<Value>(payload));
    }
    RunInput run{consumer, "0." + std::to_string(line), clock_ms, options.dry_run};
    automation::Decisions d;
    automation::RunOutcome o;
    if (ev.type == events::type::kScheduleTick) {
      const std::string name(row.GetString("schedule"));
      size_t index = p.info().schedules.size();
      for (size_t i = 0; i < p.info().schedules.size(); ++i)
        if (p.info().schedules[i].name == name || (name.empty() && i == 0)) index = i;
      if (index == p.info().schedules.size()) {
        err << "events line " << line << ": the policy has no schedule named \"" << name << "\"\n";
        return 2;
      }
      o = p.RunSchedule(run, index, ev.enrollment_id, &host, &d);
    } else if (p.Wants(ev.type, ev.request_type)) {
      o = p.HandleEvent(run, ev, payload, &host, &d);
    } else {
      continue;
    }
    PrintDecisions(out, line, ev.type, d);
    if (!o.ok()) {
      Value v;
      v.Set("kind", Value::String("error"));
      v.Set("error", Value::String(automation::RunErrorName(o.error)));
      v.Set("message", Value::String(o.message));
      Emit(out, line, ev.type, std::move(v));
      status = 1;
    } else if (!options.dry_run) {
      host.Commit(consumer, d);
    }
  }
  return status;
}

}  // namespace orchard::policy
