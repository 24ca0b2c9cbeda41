#include "api/ddm_api.h"

#include "api/api_common.h"
#include "log/log.h"
#include "plist/plist.h"

namespace orchard::api {
namespace {

using plist::Value;
constexpr const char* kLog = "api";
constexpr size_t kMaxNotify = 1000;

Value Outcome(const ddm::WriteOutcome& o) {
  Value v;
  v.Set("changed", Value::Bool(o.changed));
  v.Set("tokens_changed", Value::Integer(static_cast<int64_t>(o.tokens_changed)));
  v.Set("commands_queued", Value::Integer(static_cast<int64_t>(o.commands_queued)));
  v.Set("pushed", Value::Integer(static_cast<int64_t>(o.pushed)));
  if (!o.server_token.empty()) v.Set("server_token", Value::String(o.server_token));
  if (!o.warnings.empty()) {
    Value w = Value::MakeArray();
    for (const auto& s : o.warnings) w.AsArray()->push_back(Value::String(s));
    v.Set("warnings", std::move(w));
  }
  return v;
}

http::Response Write(const Result<ddm::WriteOutcome>& o) {
  if (!o.ok()) return FromStatus(o.status());
  return Json(200, Outcome(*o));
}

Value DeclarationSummary(const ddm::Declaration& d) {
  Value v;
  v.Set("identifier", Value::String(d.identifier));
  v.Set("type", Value::String(d.type));
  v.Set("kind", Value::String(ddm::KindName(d.kind)));
  v.Set("server_token", Value::String(d.server_token));
  v.Set("revision", Value::Integer(d.revision));
  v.Set("owner", Value::String(d.owner));
  v.Set("created_at", Time(d.created_ms));
  v.Set("modified_at", Time(d.modified_ms));
  return v;
}

Value Reasons(const std::vector<ddm::Reason>& reasons) {
  Value a = Value::MakeArray();
  for (const auto& r : reasons) {
    Value v;
    v.Set("code", Value::String(r.code));
    v.Set("description", Value::String(r.description));
    if (!r.details_json.empty()) {
      auto d = plist::ParseJson(r.details_json);
      if (d.ok()) v.Set("details", std::move(*d));
    }
    a.AsArray()->push_back(std::move(v));
  }
  return a;
}

// A raw JSON document as the answer (already valid JSON: built by the ddm module).
http::Response RawJson(std::string body) { return http::Response{200, "application/json", std::move(body) + "\n", {}}; }

// Reads ?limit= (1..1000, default 100) and ?cursor= of a listing of kind.
bool Paging(const http::Request& r, char kind, size_t* limit, std::string* after, http::Response* error) {
  int64_t l = 0;
  if (!PageLimit(r, 100, 1000, &l, error) || !PageCursor(r, kind, after, error)) return false;
  *limit = static_cast<size_t>(l);
  return true;
}

// One page of names from a store page.
http::Response Names(const Result<ddm::Page<std::string>>& page, size_t max_bytes, char kind, const char* key) {
  if (!page.ok()) return FromStatus(page.status());
  PageWriter w(max_bytes, kind, key, Value());
  bool more = !page->next.empty();
  for (const auto& n : page->items) {
    auto added = w.Add(Value::String(n), n);
    if (!added.ok()) return FromStatus(added.status());
    if (!*added) {
      more = true;
      break;
    }
  }
  return w.Finish(more);
}

bool Pushes(const http::Request& r) { return !r.HasParam("nonotify"); }

}  // namespace

std::optional<http::Response> DdmApi::Handle(const http::Request& r, const std::vector<std::string>& p) {
  if (p.size() < 2 || p[1] != "ddm") return std::nullopt;
  if (d_.ddm == nullptr) return Error(503, "declarative device management is not enabled");
  if (p.size() < 3) return Error(404, "no such route: " + r.method + " " + r.path);
  const std::string& what = p[2];
  if (what == "declarations") return Declarations(r, p);
  if (what == "sets" && p.size() == 3) return r.method == "GET" ? Sets(r) : Error(405, "use GET");
  if (what == "set-declarations" || what == "enrollment-sets" || what == "declaration-sets" ||
      what == "set-enrollments")
    return Membership(r, p);
  if (what == "declaration-status" || what == "status-errors" || what == "status-values" || what == "status-report")
    return StatusRoute(r, p);
  if (what == "notify" && p.size() == 3) return r.method == "POST" ? Notify(r) : Error(405, "use POST");
  if (what == "enrollments" && p.size() == 4) return r.method == "GET" ? Enrollment(p[3]) : Error(405, "use GET");
  if (what == "preview") return Preview(r, p);
  return Error(404, "no such route: " + r.method + " " + r.path);
}

http::Response DdmApi::Declarations(const http::Request& r, const std::vector<std::string>& p) {
  const std::string& m = r.method;
  ddm::DdmService& s = *d_.ddm;
  if (p.size() == 3) {
    if (m == "PUT" || m == "POST") {
      if (r.body.size() > d_.max_body_bytes) return Error(413, "body too large");
      auto o = s.Put(r.body, "admin", Pushes(r));
      if (o.ok()) log::Info(kLog, "event=ddm_declaration_put changed={} tokens_changed={}", o->changed, o->tokens_changed);
      return Write(o);
    }
    if (m != "GET") return Error(405, "use GET, PUT or POST");
    size_t limit = 0;
    std::string after;
    http::Response error;
    if (!Paging(r, 'd', &limit, &after, &error)) return error;
    auto page = s.declarations().List(after, limit);
    if (!page.ok()) return FromStatus(page.status());
    PageWriter w(d_.max_response_bytes, 'd', "declarations", Value());
    bool more = !page->next.empty();
    for (const auto& d : page->items) {
      auto added = w.Add(DeclarationSummary(d), d.identifier);
      if (!added.ok()) return FromStatus(added.status());
      if (!*added) {
        more = true;
        break;
      }
    }
    return w.Finish(more);
  }
  const std::string& id = p[3];
  if (p.size() == 4) {
    if (m == "DELETE") return Write(s.Delete(id, Pushes(r)));
    if (m != "GET") return Error(405, "use GET or DELETE");
    auto d = s.declarations().Get(id);
    if (!d.ok()) return FromStatus(d.status());
    if (!d->has_value()) return Error(404, "no declaration " + id);
    if (r.Param("format") == "summary") return Json(200, DeclarationSummary(**d));
    return RawJson(ddm::DeviceJson(**d));
  }
  if (p.size() == 5 && p[4] == "touch") return m == "POST" ? Write(s.Touch(id, Pushes(r))) : Error(405, "use POST");
  return Error(404, "no such route: " + m + " " + r.path);
}

http::Response DdmApi::Sets(const http::Request& r) {
  size_t limit = 0;
  std::string after;
  http::Response error;
  if (!Paging(r, 's', &limit, &after, &error)) return error;
  return Names(d_.ddm->declarations().Sets(after, limit), d_.max_response_bytes, 's', "sets");
}

http::Response DdmApi::Membership(const http::Request& r, const std::vector<std::string>& p) {
  if (p.size() != 4) return Error(404, "no such route: " + r.method + " " + r.path);
  const std::string& what = p[2];
  const std::string& key = p[3];
  ddm::DdmService& s = *d_.ddm;
  const std::string& m = r.method;
  if (m == "PUT" || m == "DELETE") {
    const bool put = m == "PUT";
    if (what == "set-declarations") {
      const std::string decl = r.Param("declaration");
      if (decl.empty()) return Error(400, "?declaration= is required");
      return Write(put ? s.SetAdd(key, decl, Pushes(r)) : s.SetRemove(key, decl, Pushes(r)));
    }
    if (what == "enrollment-sets") {
      const std::string set = r.Param("set");
      if (set.empty()) return Error(400, "?set= is required");
      return Write(put ? s.Assign(key, set, Pushes(r)) : s.Unassign(key, set, Pushes(r)));
    }
    return Error(405, "use GET");
  }
  if (m != "GET") return Error(405, "use GET, PUT or DELETE");
  size_t limit = 0;
  std::string after;
  http::Response error;
  if (!Paging(r, 'm', &limit, &after, &error)) return error;
  auto& store = s.declarations();
  if (what == "set-declarations")
    return Names(store.SetDeclarations(key, after, limit), d_.max_response_bytes, 'm', "declarations");
  if (what == "enrollment-sets") return Names(store.EnrollmentSets(key, after, limit), d_.max_response_bytes, 'm', "sets");
  if (what == "declaration-sets")
    return Names(store.DeclarationSets(key, after, limit), d_.max_response_bytes, 'm', "sets");
  return Names(store.SetEnrollments(key, after, limit), d_.max_response_bytes, 'm', "enrollment_ids");
}

http::Response DdmApi::StatusRoute(const http::Request& r, const std::vector<std::string>& p) {
  if (p.size() != 4) return Error(404, "no such route: " + r.method + " " + r.path);
  if (r.method != "GET") return Error(405, "use GET");
  const std::string& what = p[2];
  const std::string& id = p[3];
  ddm::StatusStore& st = d_.ddm->status();
  if (what == "status-errors") {
    auto errors = st.Errors(id);
    if (!errors.ok()) return FromStatus(errors.status());
    Value a = Value::MakeArray();
    for (const auto& e : *errors) {
      Value v;
      v.Set("status_item", Value::String(e.status_item));
      v.Set("reasons", Reasons(e.reasons));
      a.AsArray()->push_back(std::move(v));
    }
    Value out;
    out.Set("errors", std::move(a));
    return Json(200, out);
  }
  if (what == "status-report") {
    int64_t limit = 0;
    http::Response error;
    if (!PageLimit(r, 1, 100, &limit, &error)) return error;
    auto reports = st.RawReports(id, static_cast<size_t>(limit));
    if (!reports.ok()) return FromStatus(reports.status());
    PageWriter w(d_.max_response_bytes, 'r', "reports", Value());
    for (const auto& rep : *reports) {
      Value v;
      v.Set("received_at", Time(rep.received_ms));
      auto parsed = plist::ParseJson(rep.json);
      v.Set("report", parsed.ok() ? std::move(*parsed) : Value::String(rep.json));
      auto added = w.Add(std::move(v), std::to_string(rep.received_ms));
      if (!added.ok()) return FromStatus(added.status());
      if (!*added) break;
    }
    return w.Finish(false);
  }
  size_t limit = 0;
  std::string after;
  http::Response error;
  if (!Paging(r, 'v', &limit, &after, &error)) return error;
  if (what == "status-values") {
    auto page = st.Items(id, r.Param("prefix"), after, limit);
    if (!page.ok()) return FromStatus(page.status());
    PageWriter w(d_.max_response_bytes, 'v', "values", Value());
    bool more = !page->next.empty();
    for (const auto& [item, value] : page->items) {
      Value v;
      v.Set("item", Value::String(item));
      auto parsed = plist::ParseJson(value);
      v.Set("value", parsed.ok() ? std::move(*parsed) : Value::String(value));
      auto added = w.Add(std::move(v), item);
      if (!added.ok()) return FromStatus(added.status());
      if (!*added) {
        more = true;
        break;
      }
    }
    return w.Finish(more);
  }
  // declaration-status
  auto page = st.Declarations(id, after, limit);
  if (!page.ok()) return FromStatus(page.status());
  auto manifest = d_.ddm->declarations().ManifestOf(id);
  if (!manifest.ok()) return FromStatus(manifest.status());
  PageWriter w(d_.max_response_bytes, 'v', "declarations", Value());
  bool more = !page->next.empty();
  for (const auto& ds : page->items) {
    Value v;
    v.Set("identifier", Value::String(ds.identifier));
    v.Set("kind", Value::String(ddm::KindName(ds.kind)));
    v.Set("server_token", Value::String(ds.server_token));
    v.Set("active", Value::Bool(ds.active));
    v.Set("valid", Value::String(ds.valid));
    v.Set("reasons", Reasons(ds.reasons));
    v.Set("current", Value::Bool(ddm::IsCurrent(*manifest, ds)));
    auto added = w.Add(std::move(v), ds.identifier);
    if (!added.ok()) return FromStatus(added.status());
    if (!*added) {
      more = true;
      break;
    }
  }
  return w.Finish(more);
}

http::Response DdmApi::Notify(const http::Request& r) {
  std::vector<std::string> ids;
  if (!r.body.empty()) {
    auto body = plist::ParseJson(r.body, {d_.max_body_bytes, 4});
    const Value* list = body.ok() ? body->Find("enrollment_ids") : nullptr;
    if (list == nullptr || list->AsArray() == nullptr) return Error(400, "body must be {\"enrollment_ids\": [...]}");
    for (const auto& v : *list->AsArray()) {
      if (v.AsString() == nullptr || v.AsString()->empty()) return Error(400, "enrollment_ids must be strings");
      ids.emplace_back(*v.AsString());
    }
  } else if (!r.Param("id").empty()) {
    ids.push_back(r.Param("id"));
  }
  if (ids.empty()) return Error(400, "name the enrollments: ?id= or {\"enrollment_ids\": [...]}");
  if (ids.size() > kMaxNotify) return Error(400, "at most 1000 enrollment ids per call");
  return Write(d_.ddm->Notify(ids));
}

Result<Value> DdmEnrollmentJson(ddm::DdmService& ddm, const std::string& id) {
  auto state = ddm.State(id);
  if (!state.ok()) return state.status();
  auto m = ddm.declarations().ManifestOf(id);
  if (!m.ok()) return m.status();
  size_t sets = 0;
  for (std::string after;;) {
    auto page = ddm.declarations().EnrollmentSets(id, after, 1000);
    if (!page.ok()) return page.status();
    sets += page->items.size();
    if (page->next.empty()) break;
    after = page->next;
  }
  Value v;
  v.Set("enabled", Value::Bool(state->enabled));
  v.Set("declarations_token", Value::String(m->declarations_token));
  v.Set("token_changed_at", Time(m->changed_ms));
  v.Set("served_token", Value::String(state->served_token));
  v.Set("served_at", Time(state->served_ms));
  v.Set("in_sync", Value::Bool(state->served_token == m->declarations_token));
  v.Set("synced_token", Value::String(state->synced_token));
  v.Set("synced_at", Time(state->synced_ms));
  v.Set("last_status_at", Time(state->status_ms));
  v.Set("sync_command", Value::String(state->pending_command));
  v.Set("sync_queued_at", Time(state->sync_queued_ms));
  size_t n = 0;
  for (ddm::Kind k : {ddm::Kind::kActivation, ddm::Kind::kConfiguration, ddm::Kind::kAsset, ddm::Kind::kManagement})
    n += m->Of(k).size();
  v.Set("declarations", Value::Integer(static_cast<int64_t>(n)));
  v.Set("sets", Value::Integer(static_cast<int64_t>(sets)));
  return v;
}

http::Response DdmApi::Enrollment(const std::string& id) {
  auto ddm = DdmEnrollmentJson(*d_.ddm, id);
  if (!ddm.ok()) return FromStatus(ddm.status());
  Value v;
  v.Set("enrollment_id", Value::String(id));
  for (auto& [key, value] : *ddm->AsDict()) v.Set(key, std::move(value));
  return Json(200, v);
}

http::Response DdmApi::Preview(const http::Request& r, const std::vector<std::string>& p) {
  if (r.method != "GET") return Error(405, "use GET");
  if (p.size() < 5) return Error(404, "use /v1/ddm/preview/{enrollment_id}/tokens|declaration-items|declaration/{kind}/{identifier}");
  const std::string& id = p[3];
  auto& store = d_.ddm->declarations();
  if (p.size() == 5 && (p[4] == "tokens" || p[4] == "declaration-items")) {
    auto m = store.ManifestOf(id);
    if (!m.ok()) return FromStatus(m.status());
    return RawJson(p[4] == "tokens" ? ddm::TokensResponseJson(*m) : ddm::DeclarationItemsJson(*m));
  }
  if (p.size() == 7 && p[4] == "declaration") {
    auto kind = ddm::KindFromName(p[5]);
    if (!kind) return Error(400, "unknown declaration kind " + p[5]);
    auto d = store.Resolve(id, *kind, p[6]);
    if (!d.ok()) return FromStatus(d.status());
    if (!d->has_value()) return Error(404, "the enrollment would be answered 404 for this declaration");
    return RawJson(ddm::DeviceJson(**d));
  }
  return Error(404, "use /v1/ddm/preview/{enrollment_id}/tokens|declaration-items|declaration/{kind}/{identifier}");
}

}  // namespace orchard::api
