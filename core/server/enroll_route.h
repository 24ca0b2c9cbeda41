// /mdm/enroll in orchardd: builds the enrollment ProfileService from the
// configuration (reads the profile-signing certificate, key and chain and the
// anchor certificates) and turns HTTP requests into its requests.
// Internal to the server module. Thread-safety: Handle may be called
// concurrently; everything is immutable after Create.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "enroll/profile.h"
#include "http/server.h"
#include "util/status.h"

namespace orchard::server {

class EnrollRoute {
 public:
  // deps.signer is ignored (the route owns the signer it reads from the
  // config). Errors name the config key (unreadable file, key that does not
  // match, bad anchor PEM).
  static Result<std::unique_ptr<EnrollRoute>> Create(const config::Config& config, enroll::EnrollDeps deps);

  // GET/POST /mdm/enroll; *outcome says how it went (metrics). Logs refusals
  // (never the token or a challenge).
  http::Response Handle(const http::Request& r, enroll::EnrollOutcome* outcome);
  // The profile for a device the caller already trusts (renewal by
  // InstallProfile): as a machine-info POST from udid would get it (a one-time
  // challenge bound to udid, or a PKCS#12 identity recorded for it), signed when
  // a signer is configured. Needs enroll.public_url (Unavailable otherwise, as
  // without a push certificate); Internal for storage or OpenSSL failures.
  Result<std::string> DeviceProfile(const std::string& udid);
  // The same, marked as the renewal of the certificate renews_sha256 (bound to
  // udid): the certificate the device obtains with it replaces that one in place.
  Result<std::string> RenewalProfile(const std::string& udid, const std::string& renews_sha256);

 private:
  EnrollRoute() = default;
  // scheme://host[:port] of the request: enroll.public_url, else the Host
  // header (https when a trusted proxy says X-Forwarded-Proto: https); "" when
  // the Host header is missing or malformed.
  std::string BaseUrl(const http::Request& r) const;

  std::string public_url_;
  std::vector<std::string> trusted_proxies_;
  std::unique_ptr<enroll::ProfileSigner> signer_;
  std::unique_ptr<enroll::ProfileService> service_;
};

}  // namespace orchard::server
