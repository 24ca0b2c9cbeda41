// The admin API's device CA routes (docs/api.md#device-ca-and-scep): one-time SCEP
// challenges and the certificates the CA issued (list, show, revoke). Internal to the
// api module: AdminApi authenticates and routes.
//
// Thread-safety: Handle() may be called concurrently. Borrows its dependencies.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "enroll/challenges.h"
#include "enroll/issued.h"
#include "http/server.h"

namespace orchard::api {

struct EnrollDeps {
  enroll::IssuedCerts* issued;        // may be null (no device CA): routes answer 503
  enroll::Challenges* challenges;     // may be null
  size_t max_response_bytes;
  size_t max_body_bytes;
};

class EnrollApi {
 public:
  explicit EnrollApi(const EnrollDeps& deps) : d_(deps) {}
  // The answer for /v1/enroll/... and /v1/certificates... (p: the decoded path
  // segments, p[0] == "v1"); nullopt for any other path.
  std::optional<http::Response> Handle(const http::Request& r, const std::vector<std::string>& p);

 private:
  http::Response NewChallenge(const http::Request& r);
  http::Response List(const http::Request& r);
  http::Response Show(const std::string& serial);
  http::Response Revoke(const std::string& serial, const http::Request& r);

  EnrollDeps d_;
};

}  // namespace orchard::api
