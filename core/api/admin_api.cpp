#include "api/admin_api.h"

#include "api/api_common.h"
#include "api/automation_api.h"
#include "api/enroll_api.h"
#include "api/ddm_api.h"

#include <algorithm>
#include <charconv>
#include <cctype>
#include <map>
#include <set>
#include <strings.h>

#include "log/log.h"
#include "plist/plist.h"
#include "util/encoding.h"

namespace orchard::api {
namespace {

constexpr const char* kLog = "api";
using plist::Value;

// Comma-separated ids, duplicates dropped (first occurrence kept).
std::vector<std::string> SplitIds(const std::string& ids) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  size_t i = 0;
  while (i <= ids.size()) {
    size_t j = ids.find(',', i);
    if (j == std::string::npos) j = ids.size();
    if (j > i && seen.insert(ids.substr(i, j - i)).second) out.push_back(ids.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

bool IStartsWith(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

Value EnrollmentJson(const store::Enrollment& e) {
  Value v;
  v.Set("id", Value::String(e.id));
  v.Set("type", Value::String(store::EnrollmentTypeName(e.type)));
  if (!e.parent_id.empty()) v.Set("parent_id", Value::String(e.parent_id));
  for (auto [k, s] : {std::pair{"udid", &e.udid}, {"enrollment_id", &e.enrollment_id},
                      {"user_id", &e.user_id}, {"user_short_name", &e.user_short_name},
                      {"user_long_name", &e.user_long_name},
                      {"enrollment_user_id", &e.enrollment_user_id}, {"topic", &e.topic},
                      {"serial_number", &e.serial}, {"model", &e.model},
                      {"model_name", &e.model_name}, {"os_version", &e.os_version},
                      {"build_version", &e.build_version}, {"product_name", &e.product_name},
                      {"device_name", &e.device_name}, {"imei", &e.imei}, {"meid", &e.meid},
                      {"cert_sha256", &e.cert_sha256}}) {
    if (!s->empty()) v.Set(k, Value::String(*s));
  }
  if (e.cert_not_after_ms) {  // the bound identity certificate's expiry (renewal: docs/enrollment.md)
    v.Set("cert_not_after", Time(e.cert_not_after_ms));
    const int64_t left = e.cert_not_after_ms - NowMillis();
    v.Set("cert_days_left", Value::Integer(left < 0 ? -((-left + 86399999) / 86400000) : left / 86400000));
  }
  v.Set("state", Value::String(store::EnrollmentStateName(e.state)));
  v.Set("blocked", Value::Bool(e.blocked));
  v.Set("generation", Value::Integer(e.generation));
  v.Set("authenticated_at", Time(e.authenticated_ms));
  v.Set("enrolled_at", Time(e.enrolled_ms));
  v.Set("last_seen_at", Time(e.last_seen_ms));
  if (e.checked_out_ms) v.Set("checked_out_at", Time(e.checked_out_ms));
  v.Set("token_updates", Value::Integer(e.token_updates));
  v.Set("awaiting_configuration", Value::Bool(e.awaiting_configuration));
  // Secrets are never returned: only whether they are present.
  v.Set("has_push_token", Value::Bool(!e.push_token.empty()));
  v.Set("has_unlock_token", Value::Bool(!e.unlock_token.empty()));
  v.Set("has_bootstrap_token", Value::Bool(!e.bootstrap_token.empty()));
  return v;
}

Value QueueEntryJson(const store::QueueEntry& q) {
  Value v;
  v.Set("command_uuid", Value::String(q.command_uuid));
  v.Set("request_type", Value::String(q.request_type));
  v.Set("status", Value::String(q.status == store::QueueStatus::kNotNow ? "NotNow" : "Pending"));
  v.Set("priority", Value::Integer(q.priority));
  v.Set("enqueued_at", Time(q.enqueued_ms));
  v.Set("last_sent_at", Time(q.last_sent_ms));
  v.Set("not_now_count", Value::Integer(q.not_now_count));
  v.Set("origin", Value::String(q.origin));
  if (!q.trigger.empty()) v.Set("trigger", Value::String(q.trigger));
  return v;
}

Value ResultJson(const store::CommandResult& r, bool with_response, const plist::Limits& limits) {
  Value v;
  v.Set("command_uuid", Value::String(r.command_uuid));
  v.Set("request_type", Value::String(r.request_type));
  v.Set("status", Value::String(r.status));
  v.Set("enqueued_at", Time(r.enqueued_ms));
  v.Set("received_at", Time(r.received_ms));
  v.Set("not_now_count", Value::Integer(r.not_now_count));
  v.Set("origin", Value::String(r.origin));
  if (!r.trigger.empty()) v.Set("trigger", Value::String(r.trigger));
  if (!r.error_chain.empty()) {
    auto chain = plist::ParseJson(r.error_chain, limits);
    if (chain.ok()) v.Set("error_chain", std::move(chain.value()));
  }
  if (with_response) {
    auto parsed = plist::ParseXml(r.raw, limits);
    if (parsed.ok()) v.Set("response", std::move(parsed.value()));
  }
  return v;
}

// A request-derived field for a log line: control bytes, quote and backslash as \xNN, so
// a client cannot put a line break or a fake key=value into the log. At most 200 bytes.
std::string LogSafe(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < 200; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\' || c == ' ') {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 200) out += "...";
  return out;
}

// Whether the per-id answer for ids surely fits max_bytes: each id's entry is at most its
// JSON-escaped id (6 bytes per byte at worst) and 1 KiB of results, plus 1 KiB overall.
bool IdAnswerFits(const std::vector<std::string>& ids, size_t max_bytes) {
  size_t total = 1024;
  for (const auto& id : ids) total += 6 * id.size() + 1024;
  return total <= max_bytes;
}

http::Response TooManyIds(size_t n) {
  return Error(400, "the answer for " + std::to_string(n) +
                        " ids could exceed api.max_response_bytes; send fewer ids per request");
}

// A single object within max_bytes: truncated (and flagged) when too big.
http::Response BoundedJson(Value v, size_t max_bytes) {
  std::string body = plist::ToJson(v) + "\n";
  if (body.size() > max_bytes) {
    Truncate(&v);
    body = plist::ToJson(v) + "\n";
    if (body.size() > max_bytes)
      return Error(500, "the answer is larger than api.max_response_bytes even truncated");
  }
  return http::Response{200, "application/json", std::move(body), {}};
}

constexpr size_t kFetchChunk = 32;  // entries read from the store at a time while paging

// NanoMDM's per-id result and overall status code.
struct IdResults {
  std::map<std::string, Value> by_id;
  size_t failed = 0;
  bool storage_full = false;  // a command could not be stored: disk full for now
  void Fail(const std::string& id, const char* key, const std::string& msg) {
    Value& v = by_id[id];
    if (!v.Find("command_error") && !v.Find("push_error")) ++failed;
    v.Set(key, Value::String(msg));
  }
  void Ok(const std::string& id, const char* key, const std::string& msg) {
    by_id[id].Set(key, Value::String(msg));
  }
  int HttpStatus(size_t total) const {
    if (failed == 0) return 200;
    if (failed >= total) return storage_full ? 503 : 500;
    return 207;
  }
  Value StatusValue() const {
    // by_id is sorted and unique: build the dict directly (Set would scan it each time).
    plist::Dict d;
    d.reserve(by_id.size());
    for (const auto& [id, r] : by_id) d.emplace_back(id, r);
    return Value::MakeDict(std::move(d));
  }
};

}  // namespace

AdminApi::AdminApi(const Options& options, const Deps& deps)
    : options_(options),
      d_(deps),
      automation_api_(std::make_unique<AutomationApi>(AutomationDeps{
          deps.events, deps.runner, deps.automation, deps.policies, options.max_response_bytes,
          options.max_body_bytes, deps.plugins})),
      enroll_api_(std::make_unique<EnrollApi>(EnrollDeps{deps.issued, deps.challenges, options.max_response_bytes,
                                                         options.max_body_bytes})),
      ddm_api_(std::make_unique<DdmApi>(DdmApiDeps{deps.ddm, options.max_response_bytes, options.max_body_bytes})) {}

AdminApi::~AdminApi() = default;

// /plugins/<name>/<rest>: the plugin's on_http (authenticated above). The
// plugin sees the percent-decoded rest ("/" at least), the raw query, the
// body and the headers; its answer is bounded by max_response_bytes.
http::Response AdminApi::PluginRoute(const http::Request& r) {
  const std::string tail = r.path.substr(std::string("/plugins/").size());
  const size_t slash = tail.find('/');
  auto name = PercentDecode(tail.substr(0, slash));
  if (!name || name->empty()) return Error(404, "no such route: " + r.path);
  if (d_.plugins == nullptr) return Error(404, "no loaded plugin " + *name);
  auto rest = PercentDecode(slash == std::string::npos ? std::string_view("/") : std::string_view(tail).substr(slash));
  if (!rest) return Error(400, "the path has a malformed percent escape");
  plugin::PluginHttpRequest req{r.method, *rest, r.query, r.body, r.headers};
  // The key stays with the host: the plugin never sees the admin credentials.
  req.headers.erase(std::remove_if(req.headers.begin(), req.headers.end(),
                                   [](const auto& h) {
                                     return strcasecmp(h.first.c_str(), "Authorization") == 0 ||
                                            strcasecmp(h.first.c_str(), "X-API-Key") == 0;
                                   }),
                    req.headers.end());
  plugin::PluginHttpResponse out = d_.plugins->Http(*name, req, options_.max_response_bytes);
  return http::Response{out.status, std::move(out.content_type), std::move(out.body), std::move(out.headers)};
}

bool AdminApi::Owns(const std::string& path) {
  return path.rfind("/v1/", 0) == 0 || path == "/version" || path.rfind("/plugins/", 0) == 0;
}

std::string AdminApi::RouteLabel(const http::Request& r) {
  // Labels come from a fixed set: a client must not be able to mint new series.
  if (r.path.rfind("/plugins/", 0) == 0) return "plugin_routes";
  auto parts = SplitPath(r.path);
  if (parts.size() == 1 && parts[0] == "version") return "api_version";
  if (parts.size() < 2 || parts[0] != "v1") return "api_other";
  static const std::set<std::string> kRoutes = {"enqueue",  "push",   "pushcert",    "pushcerts",
                                                "commands", "events", "enrollments", "consumers",
                                                "policies", "compliance", "plugins",
                                                "enroll", "certificates", "ddm"};
  if (!kRoutes.count(parts[1])) return "api_other";
  std::string label = "api_" + parts[1];
  if (parts[1] == "enrollments" && parts.size() >= 4) {
    static const std::set<std::string> kSubs = {"queue", "results", "block", "reenroll"};
    label += kSubs.count(parts[3]) ? "_" + parts[3] : "_other";
  }
  return label;
}

bool AdminApi::Authorized(const http::Request& r) const {
  std::string_view auth = r.Header("Authorization");
  std::string presented;
  if (IStartsWith(auth, "Basic ")) {
    auto dec = Base64Decode(auth.substr(6));
    if (dec) {
      auto colon = dec->find(':');
      presented = colon == std::string::npos ? *dec : dec->substr(colon + 1);
    }
  } else if (IStartsWith(auth, "Bearer ")) {
    presented = std::string(auth.substr(7));
  } else if (auto k = r.Header("X-API-Key"); !k.empty()) {
    presented = std::string(k);
  }
  if (presented.empty()) return false;
  return SecretEquals(presented, options_.api_key);
}

http::Response AdminApi::Handle(const http::Request& r) {
  // As NanoMDM: the version is public (no key, even with the admin API disabled).
  if (r.path == "/version" && r.method == "GET") {
    Value v;
    v.Set("version", Value::String(options_.version));
    return Json(200, v);
  }
  if (options_.api_key.empty())
    return Error(403, "the admin API is disabled: no api_key is configured");
  if (!Authorized(r)) {
    auto resp = Error(401, "missing or wrong API key");
    resp.headers.emplace_back("WWW-Authenticate", "Basic realm=\"orchard\"");
    return resp;
  }
  if (r.body.size() > options_.max_body_bytes)
    return Error(413, "request body of " + std::to_string(r.body.size()) + " bytes exceeds the limit of " +
                          std::to_string(options_.max_body_bytes));
  if (r.path.rfind("/plugins/", 0) == 0) return PluginRoute(r);
  auto p = SplitPath(r.path);
  const std::string& m = r.method;
  if (p.size() < 2 || p[0] != "v1") return Error(404, "no such route: " + r.path);
  const std::string& what = p[1];
  if (what == "enqueue" && p.size() == 3) {
    if (m != "PUT" && m != "POST") return Error(405, "use PUT");
    return Enqueue(r, p[2]);
  }
  if (what == "push" && p.size() == 3) {
    if (m != "GET" && m != "POST") return Error(405, "use GET or POST");
    return PushIds(p[2]);
  }
  if (what == "pushcert" && p.size() == 2) {
    if (m != "PUT" && m != "POST") return Error(405, "use PUT");
    return PutPushCert(r);
  }
  if (what == "pushcerts" && p.size() == 2 && m == "GET") return ListPushCerts(r);
  if (what == "commands" && p.size() == 2) {
    if (m != "POST") return Error(405, "use POST");
    return EnqueueJson(r);
  }
  if (what == "events" && p.size() == 2 && m == "GET") return ListEvents(r);
  if (auto automation = automation_api_->Handle(r, p)) return std::move(*automation);
  if (auto enroll = enroll_api_->Handle(r, p)) return std::move(*enroll);
  if (auto ddm = ddm_api_->Handle(r, p)) return std::move(*ddm);
  if (what == "consumers" && p.size() == 2) return m == "GET" ? ListConsumers() : Error(405, "use GET");
  if (what == "consumers" && p.size() == 3)
    return m == "DELETE" ? UnregisterConsumer(p[2]) : Error(405, "use DELETE");
  if (what == "enrollments") {
    if (p.size() == 2) return m == "GET" ? ListEnrollments(r) : Error(405, "use GET");
    const std::string& id = p[2];
    if (p.size() == 3) return m == "GET" ? GetEnrollment(id) : Error(405, "use GET");
    const std::string& sub = p[3];
    if (sub == "queue" && p.size() == 4) {
      if (m == "GET") return GetQueue(id, r);
      if (m == "DELETE") return ClearQueue(id);
      return Error(405, "use GET or DELETE");
    }
    if (sub == "queue" && p.size() == 5)
      return m == "DELETE" ? DeleteQueued(id, p[4]) : Error(405, "use DELETE");
    if (sub == "results" && p.size() == 4) return m == "GET" ? ListResults(id, r) : Error(405, "use GET");
    if (sub == "results" && p.size() == 5)
      return m == "GET" ? GetResult(id, p[4], r) : Error(405, "use GET");
    if (sub == "block" && p.size() == 4) {
      if (m == "PUT" || m == "POST") return SetBlocked(id, true);
      if (m == "DELETE") return SetBlocked(id, false);
      return Error(405, "use PUT or DELETE");
    }
    if (sub == "reenroll" && p.size() == 4) return m == "GET" ? GetReenroll(id) : Error(405, "use GET");
    if (sub == "reenroll" && p.size() == 5 && (p[4] == "approve" || p[4] == "deny"))
      return m == "POST" ? DecideReenroll(id, p[4] == "approve", r) : Error(405, "use POST");
  }
  return Error(404, "no such route: " + m + " " + r.path);
}

namespace {

struct PreparedCommand {
  std::string uuid, request_type, plist;
};

// An identifier that is logged and shown in tables: no control characters at all.
bool HasControl(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

// Validates a command plist, giving it a CommandUUID if it has none, and serializes it:
// the device gets exactly the command that was checked and is listed (never a raw body
// that another parser might read differently).
Result<PreparedCommand> PrepareCommand(Value v) {
  if (!v.is(plist::Type::kDict)) return Status::InvalidArgument("command plist is not a dict");
  const Value* cmd = v.Find("Command");
  if (!cmd || !cmd->is(plist::Type::kDict))
    return Status::InvalidArgument("command plist has no Command dict");
  std::string_view rt = cmd->GetString("RequestType");
  if (rt.empty()) return Status::InvalidArgument("Command has no RequestType");
  if (rt.size() > 128 || HasControl(rt))
    return Status::InvalidArgument("RequestType must be at most 128 characters without control characters");
  PreparedCommand out;
  out.request_type = std::string(rt);
  const Value* given = v.Find("CommandUUID");
  if (given && (!given->AsString() || given->AsString()->empty()))
    return Status::InvalidArgument("CommandUUID must be a non-empty string");
  if (!given) {
    out.uuid = NewUuid();
    v.Set("CommandUUID", Value::String(out.uuid));
  } else {
    const std::string& uuid = *given->AsString();
    if (uuid.size() > 128) return Status::InvalidArgument("CommandUUID is too long");
    if (HasControl(uuid))
      return Status::InvalidArgument("CommandUUID must not contain control characters");
    out.uuid = uuid;
  }
  Status clean = plist::CheckXmlStrings(v);
  if (!clean.ok()) return Status::InvalidArgument("command: " + clean.message());
  out.plist = plist::ToXml(v);
  return out;
}

}  // namespace

http::Response AdminApi::Enqueue(const http::Request& r, const std::string& id_list) {
  if (r.body.size() <= options_.max_body_bytes) {
    Status clean = plist::CheckXmlText(r.body);
    if (!clean.ok()) return FromStatus(clean);
  }
  plist::Limits limits{options_.max_body_bytes, options_.max_plist_depth};
  auto v = plist::ParseXml(r.body, limits);
  if (!v.ok()) return FromStatus(v.status());
  auto cmd = PrepareCommand(std::move(v.value()));
  if (!cmd.ok()) return FromStatus(cmd.status());
  const bool nopush = r.HasParam("nopush") && r.Param("nopush") != "0";
  return EnqueueToIds(SplitIds(id_list), {cmd->uuid, cmd->request_type, cmd->plist, 0, "api"}, nopush);
}

http::Response AdminApi::EnqueueToIds(const std::vector<std::string>& ids,
                                      const queue::NewCommand& nc, bool nopush) {
  if (ids.empty()) return Error(400, "no enrollment ids given");
  if (!IdAnswerFits(ids, options_.max_response_bytes)) return TooManyIds(ids.size());
  IdResults results;
  for (auto& r : d_.commands->Enqueue(ids, nc, !nopush)) {
    if (!r.status.ok()) {
      if (r.status.code() == Code::kResourceExhausted) results.storage_full = true;
      results.Fail(r.enrollment_id, "command_error", r.status.message());
      continue;
    }
    results.by_id[r.enrollment_id];  // present, no error yet
    if (!r.push) continue;
    if (r.push->ok) results.Ok(r.enrollment_id, "push_result", r.push->apns_id);
    else results.Fail(r.enrollment_id, "push_error", r.push->error);
  }
  log::Info(kLog, "event=enqueue command_uuid={} request_type={} ids={} failed={} nopush={}",
            LogSafe(nc.command_uuid), LogSafe(nc.request_type), ids.size(), results.failed, nopush);
  Value out;
  out.Set("status", results.StatusValue());
  if (nopush) out.Set("no_push", Value::Bool(true));
  out.Set("command_uuid", Value::String(nc.command_uuid));
  out.Set("request_type", Value::String(nc.request_type));
  auto resp = Json(results.HttpStatus(ids.size()), out);
  if (resp.status == 503) resp.headers.emplace_back("Retry-After", "30");
  return resp;
}

http::Response AdminApi::EnqueueJson(const http::Request& r) {
  plist::Limits limits{options_.max_body_bytes, options_.max_plist_depth};
  auto v = plist::ParseJson(r.body, limits);
  if (!v.ok()) return FromStatus(v.status());
  if (!v->is(plist::Type::kDict)) return Error(400, "body must be a JSON object");
  const Value* ids = v->Find("enrollment_ids");
  if (!ids || !ids->AsArray() || ids->AsArray()->empty())
    return Error(400, "enrollment_ids must be a non-empty array of strings");
  std::vector<std::string> id_vec;
  std::set<std::string> seen;
  for (const auto& id : *ids->AsArray()) {
    if (!id.AsString() || id.AsString()->empty())
      return Error(400, "enrollment_ids must be a non-empty array of strings");
    if (seen.insert(*id.AsString()).second) id_vec.push_back(*id.AsString());
  }
  const Value* command = v->Find("command");
  if (!command || !command->is(plist::Type::kDict))
    return Error(400, "command must be an object with a RequestType");
  int64_t priority = 0;
  if (const Value* p = v->Find("priority")) {
    if (!p->AsInteger() || *p->AsInteger() < 0 || *p->AsInteger() > 255)
      return Error(400, "priority must be an integer from 0 to 255");
    priority = *p->AsInteger();
  }
  // The server assigns the CommandUUID.
  Value full;
  full.Set("Command", *command);
  auto cmd = PrepareCommand(std::move(full));
  if (!cmd.ok()) return FromStatus(cmd.status());
  return EnqueueToIds(id_vec,
                      {cmd->uuid, cmd->request_type, cmd->plist, static_cast<int>(priority), "api"},
                      v->GetBool("nopush", false));
}

http::Response AdminApi::PushIds(const std::string& id_list) {
  auto ids = SplitIds(id_list);
  if (ids.empty()) return Error(400, "no enrollment ids given");
  if (!IdAnswerFits(ids, options_.max_response_bytes)) return TooManyIds(ids.size());
  IdResults results;
  for (const auto& o : d_.commands->Wake(ids)) {
    if (o.ok) results.Ok(o.enrollment_id, "push_result", o.apns_id);
    else results.Fail(o.enrollment_id, "push_error", o.error);
  }
  Value out;
  out.Set("status", results.StatusValue());
  return Json(results.HttpStatus(ids.size()), out);
}

http::Response AdminApi::PutPushCert(const http::Request& r) {
  // PEM (certificate + key, NanoMDM style) or PKCS#12 with its password in a header.
  const bool pkcs12 = r.Header("Content-Type").find("pkcs12") != std::string_view::npos ||
                      (!r.body.empty() && r.body[0] == 0x30);
  auto cert = pkcs12 ? push::ParsePushCertPkcs12(r.body, std::string(r.Header("X-Pkcs12-Password")))
                     : push::ParsePushCert(r.body);
  if (!cert.ok()) return FromStatus(cert.status());
  const std::string force = r.Param("force");
  if (!force.empty() && force != "true" && force != "1" && force != "false" && force != "0")
    return Error(400, "force must be true or false");
  auto previous = d_.push_certs->CurrentTopic();
  if (!previous.ok()) return FromStatus(previous.status());
  Status st = d_.push_certs->Put(*cert, force == "true" || force == "1");
  if (!st.ok()) return FromStatus(st);
  d_.push->CertificateUpdated(cert->topic);
  log::Info(kLog, "event=push_cert_stored topic={} not_after={}", LogSafe(cert->topic),
            FormatRfc3339(cert->not_after_unix * 1000));
  const bool changed = previous->has_value() && **previous != cert->topic;
  if (changed)
    log::Warn(kLog, "event=enrollment_topic_changed from={} to={} detail=\"forced: devices enrolled with the old "
                    "topic keep its certificate until it expires\"",
              LogSafe(**previous), LogSafe(cert->topic));
  Value out;
  out.Set("topic", Value::String(cert->topic));
  out.Set("enrollment_topic", Value::Bool(true));
  if (changed) out.Set("previous_topic", Value::String(**previous));
  out.Set("not_after", Value::String(FormatRfc3339(cert->not_after_unix * 1000)));
  return Json(200, out);
}

http::Response AdminApi::ListPushCerts(const http::Request& r) {
  http::Response error;
  int64_t limit = 0;
  std::string after;
  if (!PageLimit(r, 100, 1000, &limit, &error) || !PageCursor(r, 'p', &after, &error)) return error;
  PageWriter page(options_.max_response_bytes, 'p', "push_certs", Value());
  bool more = false;
  // One more than the page size, to know whether another page follows.
  auto certs = d_.push_certs->ListPage(after, static_cast<size_t>(limit) + 1);
  if (!certs.ok()) return FromStatus(certs.status());
  auto current = d_.push_certs->CurrentTopic();
  if (!current.ok()) return FromStatus(current.status());
  for (const auto& c : *certs) {
    if (page.count() == static_cast<size_t>(limit)) {
      more = true;
      break;
    }
    Value v;
    v.Set("topic", Value::String(c.topic));
    v.Set("not_after", Value::String(FormatRfc3339(c.not_after_unix * 1000)));
    if (!c.key_error.empty()) v.Set("key_error", Value::String(c.key_error));
    v.Set("enrollment_topic", Value::Bool(current->has_value() && **current == c.topic));
    auto added = page.Add(std::move(v), c.topic);
    if (!added.ok()) return FromStatus(added.status());
    if (!*added) {
      more = true;
      break;
    }
  }
  return page.Finish(more);
}

http::Response AdminApi::ListEnrollments(const http::Request& r) {
  domain::EnrollmentFilter f;
  f.serial = r.Param("serial");
  f.model = r.Param("model");
  f.os_version = r.Param("os");
  f.state = r.Param("state");
  f.type = r.Param("type");
  store::EnrollmentState ignored;
  if (!f.state.empty() && !store::ParseEnrollmentState(f.state, &ignored))
    return Error(400, "state must be authenticated, enrolled or checked_out");
  if (r.HasParam("blocked")) {
    const std::string b = r.Param("blocked");
    if (b != "true" && b != "false" && b != "1" && b != "0")
      return Error(400, "blocked must be true or false");
    f.blocked = b == "true" || b == "1";
  }
  if (!f.type.empty()) {
    bool known = false;
    for (int t = 0; t <= static_cast<int>(store::EnrollmentType::kUserEnrollmentUser); ++t)
      known |= f.type == store::EnrollmentTypeName(static_cast<store::EnrollmentType>(t));
    if (!known)
      return Error(400, "type must be device, user, shared_ipad_user, user_enrollment_device or "
                        "user_enrollment_user");
  }
  http::Response error;
  int64_t limit = 0;
  std::string after;
  if (!PageLimit(r, 100, 1000, &limit, &error) || !PageCursor(r, 'e', &after, &error)) return error;
  for (auto [name, field] : {std::pair{"seen_after", &f.seen_after_ms}, {"seen_before", &f.seen_before_ms}}) {
    if (r.HasParam(name) && !ParseInt(r.Param(name), field))
      return Error(400, std::string(name) + " must be a Unix time in milliseconds");
  }
  // One call (its scan is bounded by the store); records are at most one request body each.
  auto found = d_.enrollments->List(f, after, static_cast<size_t>(limit));
  if (!found.ok()) return FromStatus(found.status());
  PageWriter page(options_.max_response_bytes, 'e', "enrollments", Value(),
                  /*late_reserve=*/found->next_cursor.size() * 2 + 8);  // its cursor
  bool more = false;
  for (const auto& e : found->items) {
    auto added = page.Add(EnrollmentJson(e), e.id);
    if (!added.ok()) return FromStatus(added.status());
    if (!*added) {
      more = true;  // continues after the last item written
      break;
    }
  }
  if (more || found->next_cursor.empty()) return page.Finish(more);
  // The page size was reached, or the store stopped at its scan budget (possibly after
  // records that did not match): continue after the last record it looked at.
  const std::string cursor = EncodeCursor('e', found->next_cursor);
  return page.Finish(true, Value(), &cursor);
}

http::Response AdminApi::GetEnrollment(const std::string& id) {
  auto e = d_.enrollments->Get(id);
  if (!e.ok()) return FromStatus(e.status());
  if (!e->has_value()) return Error(404, "no enrollment " + id);
  Value v = EnrollmentJson(**e);
  auto ps = d_.push->State(id);  // includes outcomes not yet written
  if (ps.ok() && ps->has_value()) {
    const store::PushState* s = &**ps;
    {
      Value p;
      p.Set("last_push_at", Time(s->last_push_ms));
      p.Set("last_apns_id", Value::String(s->last_apns_id));
      p.Set("last_status", Value::Integer(s->last_status));
      if (!s->last_reason.empty()) p.Set("last_reason", Value::String(s->last_reason));
      p.Set("last_success_at", Time(s->last_success_ms));
      p.Set("consecutive_failures", Value::Integer(s->failures));
      p.Set("token_invalid", Value::Bool(s->token_invalid_ms != 0));
      if (s->token_invalid_ms) {
        p.Set("token_invalid_at", Time(s->token_invalid_ms));
        p.Set("token_invalid_reason", Value::String(s->token_invalid_reason));
      }
      v.Set("push", std::move(p));
    }
  }
  auto depth = d_.queue->Count(id);
  if (depth.ok()) v.Set("queue_depth", Value::Integer(static_cast<int64_t>(*depth)));
  if (d_.ddm != nullptr) {  // only where DDM is configured
    auto ddm = DdmEnrollmentJson(*d_.ddm, id);
    if (ddm.ok()) v.Set("ddm", std::move(*ddm));
    else log::Warn(kLog, "event=enrollment_ddm_unreadable enrollment_id={} error={}", LogSafe(id),
                   log::Quote(ddm.status().message()));
  }
  return BoundedJson(std::move(v), options_.max_response_bytes);
}

http::Response AdminApi::GetQueue(const std::string& id, const http::Request& r) {
  http::Response error;
  int64_t limit = 0;
  std::string after;
  if (!PageLimit(r, 1000, 100000, &limit, &error) || !PageCursor(r, 'q', &after, &error)) return error;
  auto e = d_.enrollments->Get(id);
  if (!e.ok()) return FromStatus(e.status());
  if (!e->has_value()) return Error(404, "no enrollment " + id);
  Value fields;
  fields.Set("enrollment_id", Value::String(id));
  PageWriter page(options_.max_response_bytes, 'q', "commands", std::move(fields));
  std::lock_guard lock(d_.locks->For(id));
  // Read in small chunks: entries hold whole command plists, only a page's worth is read.
  for (bool more = false;;) {
    const size_t want = std::min<size_t>(kFetchChunk, static_cast<size_t>(limit) - page.count() + 1);
    auto entries = d_.queue->ListPage(id, after, want);
    if (!entries.ok()) return FromStatus(entries.status());
    for (const auto& loc : *entries) {
      if (page.count() == static_cast<size_t>(limit)) {
        more = true;
        break;
      }
      const std::string pos = queue::CommandQueue::QueuePosition(id, loc.key);
      auto added = page.Add(QueueEntryJson(loc.entry), pos);
      if (!added.ok()) return FromStatus(added.status());
      if (!*added) {
        more = true;
        break;
      }
      after = pos;
    }
    if (more || entries->size() < want) return page.Finish(more);
  }
}

http::Response AdminApi::ClearQueue(const std::string& id) {
  auto e = d_.enrollments->Get(id);
  if (!e.ok()) return FromStatus(e.status());
  if (!e->has_value()) return Error(404, "no enrollment " + id);
  domain::Tx txn(d_.locks, d_.events);
  txn.Lock(id);
  auto n = d_.queue->Clear(txn.batch(), id);
  if (!n.ok()) return FromStatus(n.status());
  if (*n) {
    Value payload;
    payload.Set("removed", Value::Integer(static_cast<int64_t>(*n)));
    payload.Set("reason", Value::String("admin"));
    txn.Emit({.type = events::type::kQueueCleared, .enrollment_id = id,
              .payload_json = plist::ToJson(payload)});
  }
  Status st = txn.Commit();
  if (!st.ok()) return FromStatus(st);
  log::Info(kLog, "event=queue_cleared enrollment_id={} commands={}", LogSafe(id), *n);
  Value out;
  out.Set("removed", Value::Integer(static_cast<int64_t>(*n)));
  return Json(200, out);
}

http::Response AdminApi::DeleteQueued(const std::string& id, const std::string& uuid) {
  domain::Tx txn(d_.locks, d_.events);
  txn.Lock(id);
  auto loc = d_.queue->Find(id, uuid);
  if (!loc.ok()) return FromStatus(loc.status());
  if (!loc->has_value()) return Error(404, "command " + uuid + " is not queued for " + id);
  d_.queue->Remove(txn.batch(), id, **loc);
  txn.Emit({.type = events::type::kCommandDeleted, .enrollment_id = id, .command_uuid = uuid,
            .request_type = (*loc)->entry.request_type});
  Status st = txn.Commit();
  if (!st.ok()) return FromStatus(st);
  log::Info(kLog, "event=queued_command_deleted enrollment_id={} command_uuid={}", LogSafe(id),
            LogSafe(uuid));
  Value out;
  out.Set("removed", Value::Integer(1));
  return Json(200, out);
}

http::Response AdminApi::ListResults(const std::string& id, const http::Request& r) {
  http::Response error;
  int64_t limit = 0;
  std::string after;
  if (!PageLimit(r, 100, 10000, &limit, &error) || !PageCursor(r, 'r', &after, &error)) return error;
  auto e = d_.enrollments->Get(id);
  if (!e.ok()) return FromStatus(e.status());
  if (!e->has_value()) return Error(404, "no enrollment " + id);
  plist::Limits limits{options_.max_body_bytes, options_.max_plist_depth};
  Value fields;
  fields.Set("enrollment_id", Value::String(id));
  PageWriter page(options_.max_response_bytes, 'r', "results", std::move(fields));
  for (bool more = false;;) {
    const size_t want = std::min<size_t>(kFetchChunk, static_cast<size_t>(limit) - page.count() + 1);
    auto results = d_.queue->ListResults(id, want, after);
    if (!results.ok()) return FromStatus(results.status());
    for (const auto& res : *results) {
      if (page.count() == static_cast<size_t>(limit)) {
        more = true;
        break;
      }
      const std::string pos = queue::CommandQueue::ResultPosition(res);
      auto added = page.Add(ResultJson(res, false, limits), pos);
      if (!added.ok()) return FromStatus(added.status());
      if (!*added) {
        more = true;
        break;
      }
      after = pos;
    }
    if (more || results->size() < want) return page.Finish(more);
  }
}

http::Response AdminApi::GetResult(const std::string& id, const std::string& uuid,
                                   const http::Request& r) {
  auto res = d_.queue->GetResult(id, uuid);
  if (!res.ok()) return FromStatus(res.status());
  if (!res->has_value()) return Error(404, "no result for command " + uuid + " of " + id);
  const size_t max = options_.max_response_bytes;
  if (r.Param("format") == "plist") {
    if ((*res)->raw.size() > max)
      return Error(413, "the report is " + std::to_string((*res)->raw.size()) +
                            " bytes, over api.max_response_bytes (" + std::to_string(max) + ")");
    return http::Response{200, "application/xml", (*res)->raw, {}};
  }
  plist::Limits limits{options_.max_body_bytes, options_.max_plist_depth};
  Value v = ResultJson(**res, true, limits);
  if (plist::ToJson(v).size() + 1 > max) {
    // The report does not fit: answer without it (?format=plist may still have it).
    v.Erase("response");
    v.Set("response_truncated", Value::Bool(true));
  }
  return BoundedJson(std::move(v), max);
}

http::Response AdminApi::SetBlocked(const std::string& id, bool blocked) {
  domain::Tx txn(d_.locks, d_.events);
  txn.Lock(id);
  auto prev = d_.enrollments->Get(id);
  if (!prev.ok()) return FromStatus(prev.status());
  if (!prev->has_value()) return Error(404, "no enrollment " + id);
  store::Enrollment e = **prev;
  e.blocked = blocked;
  d_.enrollments->Put(txn.batch(), *prev, e);
  txn.Emit({.type = blocked ? events::type::kEnrollmentBlocked : events::type::kEnrollmentUnblocked,
            .enrollment_id = id});
  Status st = txn.Commit();
  if (!st.ok()) return FromStatus(st);
  log::Info(kLog, "event={} enrollment_id={}", blocked ? "blocked" : "unblocked", LogSafe(id));
  return BoundedJson(EnrollmentJson(e), options_.max_response_bytes);
}

namespace {
Value ReenrollJson(const domain::ReenrollRequest& q, bool approved) {
  Value v;
  v.Set("enrollment_id", Value::String(q.enrollment_id));
  v.Set("status", Value::String(approved ? "approved" : "pending"));
  v.Set("new_cert_sha256", Value::String(q.new_cert_sha256));
  v.Set("old_cert_sha256", Value::String(q.old_cert_sha256));
  v.Set("serial_number", Value::String(q.serial));
  v.Set(approved ? "approved_at" : "requested_at", Time(q.requested_ms));
  return v;
}

bool IsSha256Hex(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}
}  // namespace

// A re-enrollment waiting for approval (enroll.reenroll = approve) and an
// approval not yet used.
http::Response AdminApi::GetReenroll(const std::string& id) {
  domain::Reenrollments reenroll(d_.store);
  auto pending = reenroll.Pending(id);
  if (!pending.ok()) return FromStatus(pending.status());
  auto approved = reenroll.Approved(id);
  if (!approved.ok()) return FromStatus(approved.status());
  Value out;
  out.Set("enrollment_id", Value::String(id));
  if (pending->has_value()) out.Set("pending", ReenrollJson(**pending, false));
  if (approved->has_value()) out.Set("approved", ReenrollJson(**approved, true));
  if (!pending->has_value() && !approved->has_value()) return Error(404, "no re-enrollment request for " + id);
  return BoundedJson(out, options_.max_response_bytes);
}

// approve: lets the next Authenticate with that certificate (the pending one,
// or {"cert_sha256": ...}) take over the enrollment, once. deny: drops the
// pending request (the device stays refused).
http::Response AdminApi::DecideReenroll(const std::string& id, bool approve, const http::Request& r) {
  std::string cert;
  if (!r.body.empty()) {
    auto body = plist::ParseJson(r.body, {options_.max_body_bytes, 4});
    if (!body.ok() || !body->is(plist::Type::kDict)) return Error(400, "body must be a JSON object like {\"cert_sha256\": \"...\"}");
    for (const auto& [k, v] : *body->AsDict())
      if (k != "cert_sha256") return Error(400, "unknown field '" + k + "' (cert_sha256)");
    cert = std::string(body->GetString("cert_sha256"));
    if (!cert.empty() && !IsSha256Hex(cert)) return Error(400, "cert_sha256 must be 64 lower-case hex digits");
  }
  domain::Tx txn(d_.locks, d_.events);
  txn.Lock(id);
  domain::Reenrollments reenroll(d_.store);
  auto pending = reenroll.Pending(id);
  if (!pending.ok()) return FromStatus(pending.status());
  if (!approve) {
    if (!pending->has_value()) return Error(404, "no pending re-enrollment for " + id);
    reenroll.ClearPending(txn.batch(), id);
    Status st = txn.Commit();
    if (!st.ok()) return FromStatus(st);
    log::Info(kLog, "event=reenroll_denied enrollment_id={} cert_sha256={}", LogSafe(id), (*pending)->new_cert_sha256);
    Value out;
    out.Set("enrollment_id", Value::String(id));
    out.Set("status", Value::String("denied"));
    return Json(200, out);
  }
  auto e = d_.enrollments->Get(id);
  if (!e.ok()) return FromStatus(e.status());
  if (!e->has_value()) return Error(404, "no enrollment " + id);
  domain::ReenrollRequest q;
  if (pending->has_value()) q = **pending;
  if (!cert.empty()) q.new_cert_sha256 = cert;
  if (q.new_cert_sha256.empty())
    return Error(404, "no pending re-enrollment for " + id + "; give {\"cert_sha256\": ...} to approve one ahead");
  q.enrollment_id = id;
  q.old_cert_sha256 = (*e)->cert_sha256;
  q.requested_ms = NowMillis();
  reenroll.PutApproved(txn.batch(), q);
  Status st = txn.Commit();
  if (!st.ok()) return FromStatus(st);
  log::Info(kLog, "event=reenroll_approved enrollment_id={} cert_sha256={}", LogSafe(id), q.new_cert_sha256);
  return BoundedJson(ReenrollJson(q, true), options_.max_response_bytes);
}

http::Response AdminApi::ListEvents(const http::Request& r) {
  http::Response error;
  int64_t after = 0, limit = 0;
  if (!PageLimit(r, 100, 10000, &limit, &error)) return error;
  if (r.HasParam("after") && (!ParseInt(r.Param("after"), &after) || after < 0))
    return Error(400, "after must be an event sequence number (>= 0)");
  std::string position;
  if (!PageCursor(r, 'v', &position, &error)) return error;
  if (!position.empty()) {
    if (r.HasParam("after")) return Error(400, "give after or cursor, not both");
    if (position.size() != 8) return Error(400, "cursor is not one this server issued");
    after = static_cast<int64_t>(GetBigEndian64(position));
  }
  plist::Limits limits{options_.max_body_bytes, options_.max_plist_depth};
  PageWriter page(options_.max_response_bytes, 'v', "events", Value(),
                  /*late_reserve: ,"last_seq":N */ 32);
  uint64_t last = static_cast<uint64_t>(after);
  for (bool more = false;;) {
    const size_t want = std::min<size_t>(kFetchChunk, static_cast<size_t>(limit) - page.count() + 1);
    auto evs = d_.events->Read(last, want);
    if (!evs.ok()) return FromStatus(evs.status());
    for (const auto& ev : *evs) {
      if (page.count() == static_cast<size_t>(limit)) {
        more = true;
        break;
      }
      Value v;
      v.Set("seq", Value::Integer(static_cast<int64_t>(ev.seq)));
      v.Set("type", Value::String(ev.type));
      v.Set("time", Time(ev.time_ms));
      v.Set("enrollment_id", Value::String(ev.enrollment_id));
      if (!ev.command_uuid.empty()) v.Set("command_uuid", Value::String(ev.command_uuid));
      if (!ev.request_type.empty()) v.Set("request_type", Value::String(ev.request_type));
      if (!ev.payload_json.empty()) {
        auto payload = plist::ParseJson(ev.payload_json, limits);
        if (payload.ok()) v.Set("payload", std::move(payload.value()));
      }
      std::string pos;
      PutBigEndian64(&pos, ev.seq);
      auto added = page.Add(std::move(v), pos);
      if (!added.ok()) return FromStatus(added.status());
      if (!*added) {
        more = true;
        break;
      }
      last = ev.seq;
    }
    if (more || evs->size() < want) {
      Value late;
      late.Set("last_seq", Value::Integer(static_cast<int64_t>(last)));
      return page.Finish(more, late);
    }
  }
}

// Event consumers (policy, plugins) and their checkpoints. A consumer that is
// gone for good holds back event pruning until it is unregistered.
http::Response AdminApi::ListConsumers() {
  constexpr size_t kMax = 1000;
  auto consumers = d_.events->ListConsumers(kMax);
  if (!consumers.ok()) return FromStatus(consumers.status());
  Value list = Value::MakeArray();
  auto running = automation_api_->Statuses();
  for (const auto& c : *consumers) {
    Value v;
    v.Set("name", Value::String(c.name));
    v.Set("checkpoint", Value::Integer(static_cast<int64_t>(c.checkpoint)));
    v.Set("running", Value::Bool(false));
    for (const auto& s : running) {
      if (s.name != c.name) continue;
      v.Set("running", Value::Bool(true));
      v.Set("lag_ms", Value::Integer(s.lag_ms));
      v.Set("pending", Value::Integer(static_cast<int64_t>(s.pending)));
      v.Set("handled", Value::Integer(static_cast<int64_t>(s.handled)));
      v.Set("failed", Value::Integer(static_cast<int64_t>(s.failed)));
      v.Set("parked", Value::Integer(static_cast<int64_t>(s.parked)));
      if (!s.last_error.empty()) v.Set("last_error", Value::String(s.last_error));
    }
    list.AsArray()->push_back(std::move(v));
  }
  Value out;
  out.Set("consumers", std::move(list));
  return Json(200, out);
}

http::Response AdminApi::UnregisterConsumer(const std::string& name) {
  auto removed = d_.events->UnregisterConsumer(name);
  if (!removed.ok()) return FromStatus(removed.status());
  if (!*removed) return Error(404, "no consumer " + name);
  Value out;
  out.Set("removed", Value::Bool(true));
  return Json(200, out);
}

}  // namespace orchard::api
