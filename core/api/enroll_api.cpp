#include "api/enroll_api.h"

#include "api/api_common.h"
#include "log/log.h"
#include "plist/plist.h"
#include "util/encoding.h"

namespace orchard::api {
namespace {

using plist::Value;
constexpr const char* kLog = "api";
constexpr int64_t kDefaultTtlSeconds = 3600;

Value CertJson(const enroll::IssuedCert& c) {
  Value v;
  v.Set("serial", Value::String(c.serial_hex));
  v.Set("subject", Value::String(c.subject));
  v.Set("sha256", Value::String(c.sha256));
  v.Set("udid", Value::String(c.udid));
  v.Set("enrollment_id", Value::String(c.enrollment_id));
  v.Set("issued_at", Time(c.issued_ms));
  v.Set("not_before", Time(c.not_before_ms));
  v.Set("not_after", Time(c.not_after_ms));
  v.Set("revoked", Value::Bool(c.revoked));
  if (c.revoked) {
    v.Set("revoked_at", Time(c.revoked_ms));
    v.Set("revoked_reason", Value::String(c.revoked_reason));
  }
  if (!c.renewed_from.empty()) v.Set("renewed_from", Value::String(c.renewed_from));
  return v;
}

// A JSON object body with only the allowed keys ("" body = {}).
Result<Value> JsonBody(const http::Request& r, size_t max_bytes, std::initializer_list<std::string_view> allowed) {
  if (r.body.empty()) return Value::MakeDict();
  auto v = plist::ParseJson(r.body, {max_bytes, 4});
  if (!v.ok() || !v->is(plist::Type::kDict)) return Status::InvalidArgument("body must be a JSON object");
  for (const auto& [k, ignored] : *v->AsDict()) {
    bool ok = false;
    for (auto a : allowed) ok = ok || k == a;
    if (!ok) return Status::InvalidArgument("unknown field '" + k + "'");
  }
  return std::move(v.value());
}

}  // namespace

std::optional<http::Response> EnrollApi::Handle(const http::Request& r, const std::vector<std::string>& p) {
  const std::string& m = r.method;
  if (p.size() >= 2 && p[1] == "enroll") {
    if (p.size() == 3 && p[2] == "challenges") return m == "POST" ? NewChallenge(r) : Error(405, "use POST");
    return Error(404, "no such route: " + m + " " + r.path);
  }
  if (p.size() < 2 || p[1] != "certificates") return std::nullopt;
  if (d_.issued == nullptr) return Error(503, "no device CA");
  if (p.size() == 2) return m == "GET" ? List(r) : Error(405, "use GET");
  if (p.size() == 3) return m == "GET" ? Show(p[2]) : Error(405, "use GET");
  if (p.size() == 4 && p[3] == "revoke") return m == "POST" ? Revoke(p[2], r) : Error(405, "use POST");
  return Error(404, "no such route: " + m + " " + r.path);
}

http::Response EnrollApi::NewChallenge(const http::Request& r) {
  if (d_.challenges == nullptr) return Error(503, "no device CA");
  auto body = JsonBody(r, d_.max_body_bytes, {"ttl_seconds", "udid"});
  if (!body.ok()) return FromStatus(body.status());
  int64_t ttl = kDefaultTtlSeconds;
  if (const Value* t = body->Find("ttl_seconds")) {
    if (!t->AsInteger()) return Error(400, "ttl_seconds must be an integer");
    ttl = *t->AsInteger();
  }
  std::string udid;
  if (const Value* u = body->Find("udid")) {
    if (!u->AsString()) return Error(400, "udid must be a string");
    udid = *u->AsString();
  }
  auto c = d_.challenges->Create(ttl, udid, NowMillis());
  if (!c.ok()) return FromStatus(c.status());
  Value out;
  out.Set("challenge", Value::String(c->challenge));
  out.Set("expires_at", Time(c->expires_ms));
  out.Set("udid", Value::String(c->udid));
  return Json(200, out);
}

http::Response EnrollApi::List(const http::Request& r) {
  http::Response error;
  int64_t limit = 0;
  std::string after;
  if (!PageLimit(r, 100, 1000, &limit, &error) || !PageCursor(r, 'c', &after, &error)) return error;
  const std::string udid = r.Param("udid");
  PageWriter page(d_.max_response_bytes, 'c', "certificates", Value());
  // One more than the page size, to know whether another page follows.
  auto certs = d_.issued->List(after, static_cast<size_t>(limit) + 1, udid);
  if (!certs.ok()) return FromStatus(certs.status());
  bool more = false;
  for (const auto& c : *certs) {
    if (page.count() == static_cast<size_t>(limit)) {
      more = true;
      break;
    }
    auto added = page.Add(CertJson(c), c.serial_hex);
    if (!added.ok()) return FromStatus(added.status());
    if (!*added) {
      more = true;
      break;
    }
  }
  return page.Finish(more);
}

http::Response EnrollApi::Show(const std::string& serial) {
  if (!enroll::NormalizeSerial(serial)) return Error(400, "not a serial number (hex): " + serial);
  auto c = d_.issued->BySerial(serial);
  if (!c.ok()) return FromStatus(c.status());
  if (!c->has_value()) return Error(404, "no certificate with serial " + serial);
  return Json(200, CertJson(**c));
}

http::Response EnrollApi::Revoke(const std::string& serial, const http::Request& r) {
  if (!enroll::NormalizeSerial(serial)) return Error(400, "not a serial number (hex): " + serial);
  auto body = JsonBody(r, d_.max_body_bytes, {"reason"});
  if (!body.ok()) return FromStatus(body.status());
  std::string reason = "revoked by an admin";
  if (const Value* v = body->Find("reason")) {
    if (!v->AsString()) return Error(400, "reason must be a string");
    if (v->AsString()->size() > 512) return Error(400, "reason is longer than 512 bytes");
    reason = *v->AsString();
  }
  Status st = d_.issued->Revoke(serial, reason);
  if (!st.ok()) return FromStatus(st);
  return Show(serial);
}

}  // namespace orchard::api
