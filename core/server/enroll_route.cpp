#include "server/enroll_route.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "log/log.h"
#include "util/encoding.h"

namespace orchard::server {
namespace {

constexpr const char kLog[] = "enroll";

Result<std::string> ReadText(const std::string& key, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::InvalidArgument(key + ": cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every certificate in a PEM file, as DER.
Result<std::vector<std::string>> PemCertsToDer(const std::string& key, const std::string& pem) {
  std::vector<std::string> out;
  constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----", kEnd = "-----END CERTIFICATE-----";
  size_t at = 0;
  while ((at = pem.find(kBegin, at)) != std::string::npos) {
    const size_t body = at + kBegin.size();
    const size_t end = pem.find(kEnd, body);
    if (end == std::string::npos) return Status::InvalidArgument(key + ": unterminated PEM certificate");
    auto der = Base64Decode(std::string_view(pem).substr(body, end - body));
    if (!der || der->empty()) return Status::InvalidArgument(key + ": PEM certificate is not base64");
    out.push_back(std::move(*der));
    at = end + kEnd.size();
  }
  if (out.empty()) return Status::InvalidArgument(key + ": no PEM certificate in it");
  return out;
}

// "mdm.example.com" -> "com.example.mdm"; "" for an IP address or nothing.
std::string ReversedHost(const std::string& url) {
  size_t start = url.find("://");
  if (start == std::string::npos) return {};
  start += 3;
  std::string host = url.substr(start, url.find_first_of(":/", start) - start);
  if (host.empty() || std::all_of(host.begin(), host.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; }))
    return {};
  std::string out;
  size_t end = host.size();
  while (true) {
    size_t dot = host.rfind('.', end - 1);
    size_t from = dot == std::string::npos ? 0 : dot + 1;
    if (!out.empty()) out += '.';
    out += host.substr(from, end - from);
    if (dot == std::string::npos || dot == 0) break;
    end = dot;
  }
  return out;
}

bool IsHostHeader(std::string_view h) {
  if (h.empty() || h.size() > 255) return false;
  return std::all_of(h.begin(), h.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == ':' || c == '[' || c == ']';
  });
}

}  // namespace

Result<std::unique_ptr<EnrollRoute>> EnrollRoute::Create(const config::Config& c, enroll::EnrollDeps deps) {
  std::unique_ptr<EnrollRoute> route(new EnrollRoute());
  route->public_url_ = c.enroll_public_url;
  route->trusted_proxies_ = c.trusted_proxies;

  enroll::EnrollOptions o;
  enroll::ProfileSettings& p = o.profile;
  p.identifier = c.enroll_profile_identifier;
  if (p.identifier.empty()) {
    const std::string reversed = ReversedHost(c.enroll_public_url);
    p.identifier = reversed.empty() ? "orchard.mdm.enrollment" : reversed + ".orchard";
  }
  p.display_name = c.enroll_profile_display_name;
  p.organization = c.enroll_profile_organization;
  auto url = [&](const std::string& explicit_url, const char* path) {
    if (!explicit_url.empty()) return explicit_url;
    return c.enroll_public_url.empty() ? std::string() : c.enroll_public_url + path;
  };
  p.server_url = url(c.enroll_server_url, "/mdm/connect");
  p.checkin_url = url(c.enroll_checkin_url, "/mdm/checkin");
  p.scep.url = url(c.enroll_scep_url, "/scep");
  p.identity = c.enroll_identity == "pkcs12" ? enroll::IdentityKind::kPkcs12 : enroll::IdentityKind::kScep;
  p.scep.name = "Orchard";
  for (const auto& file : c.enroll_anchor_certs) {
    auto pem = ReadText("enroll.anchor_certs", file);
    if (!pem.ok()) return pem.status();
    auto ders = PemCertsToDer("enroll.anchor_certs " + file, *pem);
    if (!ders.ok()) return ders.status();
    for (auto& der : *ders) p.anchors.push_back({std::move(der), ""});
  }
  o.token = c.enroll_token;
  o.static_challenge = c.enroll_scep_challenge;
  o.challenge_ttl_seconds = c.enroll_challenge_ttl_seconds;
  o.pkcs12_validity_days = c.enroll_cert_validity_days;

  if (!c.enroll_profile_signing_cert.empty()) {
    auto cert = ReadText("enroll.profile_signing_cert", c.enroll_profile_signing_cert);
    if (!cert.ok()) return cert.status();
    auto key = ReadText("enroll.profile_signing_key", c.enroll_profile_signing_key);
    if (!key.ok()) return key.status();
    std::string chain;
    if (!c.enroll_profile_signing_chain.empty()) {
      auto ch = ReadText("enroll.profile_signing_chain", c.enroll_profile_signing_chain);
      if (!ch.ok()) return ch.status();
      chain = std::move(ch).value();
    }
    auto signer = enroll::ProfileSigner::FromPem(*cert, *key, chain);
    if (!signer.ok()) return Status::InvalidArgument("enroll.profile_signing_cert: " + signer.status().message());
    route->signer_ = std::move(signer).value();
    log::Info(kLog, "event=profile_signing subject={}", log::Quote(route->signer_->subject()));
  }
  if (c.enroll_public_url.empty())
    log::Warn(kLog, "event=enroll_public_url_unset detail=\"profiles name the address each request used "
                    "(Host header); set enroll.public_url in production\"");
  else if (c.enroll_public_url.rfind("https://", 0) != 0)
    log::Warn(kLog, "event=enroll_public_url_not_https detail=\"devices only accept https:// server URLs\"");
  deps.signer = route->signer_.get();
  route->service_ = std::make_unique<enroll::ProfileService>(std::move(o), deps);
  return route;
}

std::string EnrollRoute::BaseUrl(const http::Request& r) const {
  if (!public_url_.empty()) return public_url_;
  const std::string_view host = r.Header("Host");
  if (!IsHostHeader(host)) return {};
  const bool trusted = std::find(trusted_proxies_.begin(), trusted_proxies_.end(), r.peer) != trusted_proxies_.end();
  const bool https = trusted && r.Header("X-Forwarded-Proto") == "https";
  return (https ? "https://" : "http://") + std::string(host);
}

http::Response EnrollRoute::Handle(const http::Request& r, enroll::EnrollOutcome* outcome) {
  enroll::EnrollRequest req;
  req.method = r.method;
  req.base_url = BaseUrl(r);
  req.token = r.Param("token");
  if (req.token.empty()) {
    const std::string_view auth = r.Header("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (auth.substr(0, kBearer.size()) == kBearer) req.token = std::string(auth.substr(kBearer.size()));
  }
  req.challenge = r.Param("challenge");
  req.content_type = std::string(r.Header("Content-Type"));
  req.body = r.body;
  enroll::EnrollReply e = service_->Handle(req, NowMillis());
  *outcome = e.outcome;
  if (e.status >= 400)
    log::Warn(kLog, "event=enroll_refused method={} status={} outcome={} udid={} reason={} peer={}",
              log::Quote(r.method), e.status, enroll::EnrollOutcomeName(e.outcome), log::Quote(e.udid),
              log::Quote(e.reason), log::Quote(r.peer));
  else
    log::Info(kLog, "event=enroll_profile_served udid={} signed={}", log::Quote(e.udid), e.signed_profile);
  http::Response resp{e.status, std::move(e.content_type), std::move(e.body), {}};
  if (e.status == 200)
    resp.headers.emplace_back("Content-Disposition", "attachment; filename=\"orchard-enroll.mobileconfig\"");
  return resp;
}

Result<std::string> EnrollRoute::DeviceProfile(const std::string& udid) {
  enroll::EnrollReply e = service_->Make(public_url_, udid, NowMillis());
  if (e.status == 200) {
    log::Info(kLog, "event=device_profile_made udid={} signed={}", log::Quote(udid), e.signed_profile);
    return std::move(e.body);
  }
  if (e.status == 503) return Status::Unavailable(e.reason);
  return Status::Internal(e.reason);
}

Result<std::string> EnrollRoute::RenewalProfile(const std::string& udid, const std::string& renews_sha256) {
  enroll::EnrollReply e = service_->MakeRenewal(public_url_, udid, renews_sha256, NowMillis());
  if (e.status == 200) {
    log::Info(kLog, "event=renewal_profile_made udid={} renews_sha256={} signed={}", log::Quote(udid), renews_sha256,
              e.signed_profile);
    return std::move(e.body);
  }
  if (e.status == 503) return Status::Unavailable(e.reason);
  return Status::Internal(e.reason);
}

}  // namespace orchard::server
