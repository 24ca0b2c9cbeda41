#include "api/automation_api.h"

#include "api/api_common.h"
#include "log/log.h"
#include "util/encoding.h"

namespace orchard::api {
namespace {

constexpr const char* kLog = "api";
using plist::Value;

Value ConsumerJson(const automation::ConsumerStatus& s) {
  Value v;
  v.Set("lanes", Value::Integer(s.lanes));
  v.Set("checkpoint", Value::String(s.checkpoint));
  v.Set("read", Value::String(s.read));
  v.Set("lag_ms", Value::Integer(s.lag_ms));
  v.Set("pending", Value::Integer(static_cast<int64_t>(s.pending)));
  v.Set("handled", Value::Integer(static_cast<int64_t>(s.handled)));
  v.Set("failed", Value::Integer(static_cast<int64_t>(s.failed)));
  v.Set("parked", Value::Integer(static_cast<int64_t>(s.parked)));
  v.Set("commits", Value::Integer(static_cast<int64_t>(s.commits)));
  if (!s.last_error.empty()) v.Set("last_error", Value::String(s.last_error));
  return v;
}

Value PolicyJson(const policy::PolicyStatus& s, const std::vector<automation::ConsumerStatus>& consumers) {
  Value v;
  v.Set("name", Value::String(s.name));
  v.Set("file", Value::String(s.file));
  v.Set("loaded", Value::Bool(s.loaded));
  if (s.loaded) {
    v.Set("description", Value::String(s.info.description));
    v.Set("version", Value::String(s.info.version));
    v.Set("sha256", Value::String(s.info.source_sha256));
    v.Set("loaded_at", Time(s.loaded_ms));
    Value events = Value::MakeArray(), results = Value::MakeArray(), schedules = Value::MakeArray();
    for (const auto& e : s.info.event_types) events.AsArray()->push_back(Value::String(e));
    for (const auto& rt : s.info.result_types) results.AsArray()->push_back(Value::String(rt));
    for (const auto& sc : s.info.schedules) {
      Value x;
      x.Set("name", Value::String(sc.name));
      x.Set("interval_seconds", Value::Integer(sc.interval_ms / 1000));
      x.Set("splay_seconds", Value::Integer(sc.splay_ms / 1000));
      x.Set("per_device", Value::Bool(sc.per_device));
      schedules.AsArray()->push_back(std::move(x));
    }
    v.Set("events", std::move(events));
    v.Set("results", std::move(results));
    v.Set("schedules", std::move(schedules));
    v.Set("memory_bytes", Value::Integer(static_cast<int64_t>(s.memory_bytes)));
  }
  v.Set("enabled", Value::Bool(s.flags.enabled));
  v.Set("dry_run", Value::Bool(s.flags.dry_run));
  if (!s.load_error.empty()) v.Set("load_error", Value::String(s.load_error));
  const std::string consumer = policy::PolicySet::ConsumerName(s.name);
  for (const auto& c : consumers)
    if (c.name == consumer) v.Set("consumer", ConsumerJson(c));
  return v;
}

Value PluginJson(const plugin::PluginStatus& s) {
  Value v;
  v.Set("name", Value::String(s.name));
  v.Set("version", Value::String(s.version));
  v.Set("file", Value::String(s.file));
  v.Set("status", Value::String(plugin::PluginStateName(s.state)));
  if (s.error != plugin::LoadError::kNone) {
    v.Set("error", Value::String(plugin::LoadErrorName(s.error)));
    v.Set("message", Value::String(s.message));
  }
  if (!s.abi.empty()) v.Set("abi", Value::String(s.abi));
  if (s.state == plugin::PluginState::kLoaded) {
    Value types = Value::MakeArray();
    for (const auto& t : s.event_types) types.AsArray()->push_back(Value::String(t));
    v.Set("events", std::move(types));
    v.Set("lanes", Value::Integer(s.lanes));
    Value schedules = Value::MakeArray();
    for (const auto& t : s.schedules) schedules.AsArray()->push_back(Value::String(t));
    v.Set("schedules", std::move(schedules));
    v.Set("routes", Value::Bool(s.http));
    v.Set("consumer", Value::String(plugin::PluginSet::ConsumerName(s.name)));
    v.Set("handled", Value::Integer(static_cast<int64_t>(s.handled)));
    v.Set("errors", Value::Integer(static_cast<int64_t>(s.errors)));
    v.Set("parked", Value::Integer(static_cast<int64_t>(s.parked)));
    v.Set("lag_ms", Value::Integer(s.lag_ms));
    if (!s.last_error.empty()) v.Set("last_error", Value::String(s.last_error));
  }
  return v;
}

}  // namespace

std::optional<http::Response> AutomationApi::Handle(const http::Request& r, const std::vector<std::string>& p) {
  const std::string& m = r.method;
  if (p.size() < 2) return std::nullopt;
  if (p[1] == "policies") {
    if (d_.policies == nullptr) return Error(503, "policies are not available");
    if (p.size() == 2) return m == "GET" ? ListPolicies() : Error(405, "use GET");
    // POST /v1/policies/reload reloads every policy; GET is a policy that may be named "reload".
    if (p.size() == 3 && p[2] == "reload" && m == "POST") return Reload("");
    const std::string& name = p[2];
    if (p.size() == 3)
      return m == "GET" ? GetPolicy(name) : Error(405, name == "reload" ? "use POST or GET" : "use GET");
    if (p.size() != 4) return Error(404, "no such route: " + r.path);
    const std::string& sub = p[3];
    if (sub == "reload") return m == "POST" ? Reload(name) : Error(405, "use POST");
    if (sub == "flags") return m == "PUT" || m == "POST" ? SetFlags(name, r) : Error(405, "use PUT");
    if (sub == "run") return m == "POST" ? RunNow(name, r) : Error(405, "use POST");
    const std::string consumer = policy::PolicySet::ConsumerName(name);
    if (sub == "decisions") return m == "GET" ? Records("dl", consumer, r) : Error(405, "use GET");
    if (sub == "parked") return m == "GET" ? Records("pk", consumer, r) : Error(405, "use GET");
    return Error(404, "no such route: " + r.path);
  }
  if (p[1] == "plugins") {
    if (m != "GET") return Error(405, "use GET");
    if (d_.plugins == nullptr) {
      if (p.size() == 2) {  // no plugin.dir: an empty list, not an error
        Value out;
        out.Set("plugins", Value::MakeArray());
        return Json(200, out);
      }
      return Error(404, "no plugin " + p[2]);
    }
    if (p.size() == 2) return ListPlugins();
    if (p.size() == 3) return GetPlugin(p[2]);
    // What a plugin decided and what it parked, as for policies.
    if (p.size() == 4 && (p[3] == "decisions" || p[3] == "parked")) {
      if (d_.plugins->ConsumerOf(p[2]) == nullptr) return Error(404, "no loaded plugin " + p[2]);
      return Records(p[3] == "decisions" ? "dl" : "pk", plugin::PluginSet::ConsumerName(p[2]), r);
    }
    return Error(404, "no such route: " + r.path);
  }
  if (p[1] == "compliance") {
    if (m != "GET") return Error(405, "use GET");
    if (p.size() == 2) return ComplianceSummary();
    if (p.size() == 3) return ComplianceList(p[2], r);
    return Error(404, "no such route: " + r.path);
  }
  return std::nullopt;
}

http::Response AutomationApi::ListPolicies() {
  auto consumers = d_.runner->Statuses();
  Value list = Value::MakeArray();
  for (const auto& s : d_.policies->List()) list.AsArray()->push_back(PolicyJson(s, consumers));
  Value out;
  out.Set("policies", std::move(list));
  return Json(200, out);
}

http::Response AutomationApi::GetPolicy(const std::string& name) {
  auto s = d_.policies->Get(name);
  if (!s.ok()) return FromStatus(s.status());
  return Json(200, PolicyJson(*s, d_.runner->Statuses()));
}

http::Response AutomationApi::Reload(const std::string& name) {
  Status st = d_.policies->Reload(name);
  log::Info(kLog, "event=policy_reload_requested policy={} ok={}", log::Quote(name.empty() ? "*" : name), st.ok());
  if (st.code() == Code::kNotFound) return FromStatus(st);
  // A file that fails keeps its previous version running: the answer says so.
  Value out;
  out.Set("reloaded", Value::Bool(st.ok()));
  if (!st.ok()) out.Set("error", Value::String(st.message()));
  Value list = Value::MakeArray();
  auto consumers = d_.runner->Statuses();
  for (const auto& s : d_.policies->List())
    if (name.empty() || s.name == name) list.AsArray()->push_back(PolicyJson(s, consumers));
  out.Set("policies", std::move(list));
  return Json(st.ok() ? 200 : 422, out);
}

http::Response AutomationApi::SetFlags(const std::string& name, const http::Request& r) {
  auto body = plist::ParseJson(r.body, {d_.max_body_bytes, 8});
  if (!body.ok() || !body->is(plist::Type::kDict))
    return Error(400, "body must be a JSON object like {\"enabled\": true, \"dry_run\": false}");
  for (const auto& [k, v] : *body->AsDict()) {
    if (k != "enabled" && k != "dry_run") return Error(400, "unknown field '" + k + "' (enabled, dry_run)");
    if (!v.AsBool()) return Error(400, k + " must be true or false");
  }
  if (const Value* e = body->Find("enabled")) {
    Status st = d_.policies->SetEnabled(name, *e->AsBool());
    if (!st.ok()) return FromStatus(st);
  }
  if (const Value* d = body->Find("dry_run")) {
    Status st = d_.policies->SetDryRun(name, *d->AsBool());
    if (!st.ok()) return FromStatus(st);
  }
  return GetPolicy(name);
}

// Run now: a policy.run event for the policy (and the device), handled by the
// policy like any event; its decisions show in /decisions under the cursor.
http::Response AutomationApi::RunNow(const std::string& name, const http::Request& r) {
  auto s = d_.policies->Get(name);
  if (!s.ok()) return FromStatus(s.status());
  // Nothing would ever handle the event: a policy registered later does not see earlier events.
  if (!s->loaded)
    return Error(409, "policy " + name + " is not loaded (" + s->load_error +
                          "); fix its file and reload it first");
  auto body = plist::ParseJson(r.body.empty() ? std::string_view("{}") : std::string_view(r.body),
                               {d_.max_body_bytes, 32});
  if (!body.ok() || !body->is(plist::Type::kDict))
    return Error(400, "body must be a JSON object like {\"enrollment_id\": \"...\", \"args\": {...}}");
  const Value* id = body->Find("enrollment_id");
  if (id && (!id->AsString() || id->AsString()->empty() || id->AsString()->size() > 512))
    return Error(400, "enrollment_id must be a non-empty string");
  const Value* args = body->Find("args");
  if (args && !args->is(plist::Type::kDict)) return Error(400, "args must be an object");
  Status clean = plist::CheckXmlStrings(*body);
  if (!clean.ok()) return FromStatus(clean);
  Value payload;
  payload.Set("args", args ? *args : Value());
  events::Transaction txn(d_.events);
  txn.Emit({.type = events::type::kPolicyRun,
            .enrollment_id = id ? *id->AsString() : std::string(),
            .request_type = policy::PolicySet::ConsumerName(name),
            .payload_json = plist::ToJson(payload)});
  Status st = d_.events->Commit(txn);
  if (!st.ok()) return FromStatus(st);
  const std::string cursor = automation::Cursor{0, txn.sequences().at(0)}.ToString();
  log::Info(kLog, "event=policy_run_requested policy={} enrollment_id={} cursor={}", name,
            log::Quote(id ? *id->AsString() : ""), cursor);
  Value out;
  out.Set("policy", Value::String(name));
  out.Set("cursor", Value::String(cursor));
  if (!s->flags.enabled) out.Set("warning", Value::String("the policy is disabled: the run will be skipped"));
  return Json(202, out);
}

http::Response AutomationApi::Records(const std::string& kind, const std::string& consumer, const http::Request& r) {
  http::Response error;
  int64_t limit = 0;
  if (!PageLimit(r, 100, 1000, &limit, &error)) return error;
  std::string position;
  if (!PageCursor(r, kind == "dl" ? 'd' : 'k', &position, &error)) return error;
  if (!position.empty() && !automation::Cursor::Parse(position)) return Error(400, "cursor is not one this server issued");
  auto page = d_.automation->Records(kind, consumer, r.Param("enrollment_id"), position,
                                     static_cast<size_t>(limit));
  if (!page.ok()) return FromStatus(page.status());
  PageWriter out(d_.max_response_bytes, kind == "dl" ? 'd' : 'k', kind == "dl" ? "decisions" : "parked", Value(), 64);
  std::string last;
  bool more = !page->next_after.empty();
  for (auto& item : page->items) {
    std::string cursor(item.GetString("cursor"));
    auto added = out.Add(std::move(item), cursor);
    if (!added.ok()) return FromStatus(added.status());
    if (!*added) {
      more = true;
      break;
    }
    last = cursor;
  }
  if (!more) return out.Finish(false);
  // Continue after the last record written (or after the scan's end when the
  // page filtered everything out).
  const std::string next = EncodeCursor(kind == "dl" ? 'd' : 'k', last.empty() ? page->next_after : last);
  return out.Finish(true, Value(), &next);
}

http::Response AutomationApi::ComplianceSummary() {
  Value list = Value::MakeArray();
  for (const auto& s : d_.policies->List()) {
    auto counts = d_.automation->ComplianceCounts(policy::PolicySet::ConsumerName(s.name));
    if (!counts.ok()) return FromStatus(counts.status());
    Value c;
    for (const auto& [status, n] : *counts) c.Set(status, Value::Integer(n));
    Value v;
    v.Set("policy", Value::String(s.name));
    v.Set("enabled", Value::Bool(s.flags.enabled));
    v.Set("dry_run", Value::Bool(s.flags.dry_run));
    v.Set("devices", std::move(c));
    list.AsArray()->push_back(std::move(v));
  }
  Value out;
  out.Set("compliance", std::move(list));
  return Json(200, out);
}

http::Response AutomationApi::ComplianceList(const std::string& name, const http::Request& r) {
  http::Response error;
  int64_t limit = 0;
  if (!PageLimit(r, 100, 1000, &limit, &error)) return error;
  std::string position;
  if (!PageCursor(r, 'c', &position, &error)) return error;
  std::optional<automation::ComplianceStatus> status;
  if (r.HasParam("status")) {
    automation::ComplianceStatus st;
    if (!automation::ParseComplianceStatus(r.Param("status"), &st))
      return Error(400, "status must be compliant, non_compliant, remediation_pending, exempt or unknown");
    status = st;
  }
  std::string next;
  auto entries = d_.automation->ComplianceList(policy::PolicySet::ConsumerName(name), status, position,
                                               static_cast<size_t>(limit), &next);
  if (!entries.ok()) return FromStatus(entries.status());
  Value fields;
  fields.Set("policy", Value::String(name));
  PageWriter out(d_.max_response_bytes, 'c', "devices", std::move(fields));
  std::string last;
  bool more = !next.empty();
  for (const auto& e : *entries) {
    Value v;
    v.Set("enrollment_id", Value::String(e.enrollment_id));
    v.Set("status", Value::String(automation::ComplianceStatusName(e.state.status)));
    if (!e.state.reason.empty()) v.Set("reason", Value::String(e.state.reason));
    v.Set("since", Time(e.state.since_ms));
    if (e.state.first_failed_ms) v.Set("first_failed_at", Time(e.state.first_failed_ms));
    v.Set("attempts", Value::Integer(e.state.attempts));
    v.Set("step", Value::Integer(e.state.step));
    if (!e.state.last_command_uuid.empty()) v.Set("last_command_uuid", Value::String(e.state.last_command_uuid));
    v.Set("updated_at", Time(e.state.updated_ms));
    auto added = out.Add(std::move(v), e.enrollment_id);
    if (!added.ok()) return FromStatus(added.status());
    if (!*added) {
      more = true;
      break;
    }
    last = e.enrollment_id;
  }
  if (!more) return out.Finish(false);
  const std::string cursor = EncodeCursor('c', last.empty() ? next : last);
  return out.Finish(true, Value(), &cursor);
}

// Every plugin the server tried to load (loaded, refused, in error), at most
// kMaxPlugins, and whether the list was cut.
http::Response AutomationApi::ListPlugins() {
  constexpr size_t kMaxPlugins = 1000;
  auto all = d_.plugins->List(kMaxPlugins + 1);
  Value list = Value::MakeArray();
  for (size_t i = 0; i < all.size() && i < kMaxPlugins; ++i) list.AsArray()->push_back(PluginJson(all[i]));
  Value out;
  out.Set("plugins", std::move(list));
  if (all.size() > kMaxPlugins) out.Set("truncated", Value::Bool(true));
  return Json(200, out);
}

http::Response AutomationApi::GetPlugin(const std::string& name) {
  for (const auto& s : d_.plugins->List())
    if (s.name == name) return Json(200, PluginJson(s));
  return Error(404, "no plugin " + name);
}

}  // namespace orchard::api
