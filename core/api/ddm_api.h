// The admin API's Declarative Device Management routes under /v1/ddm/
// (docs/api.md#declarative-device-management), shaped after KMFDDM's API:
// declarations, sets, set-declarations, enrollment-sets, declaration-sets,
// declaration-status, status-errors, status-values, status-report, notify,
// and preview (what an enrollment would be answered). Writes take ?nonotify
// (tokens and sync commands written, nothing pushed). Internal to the api
// module: AdminApi authenticates and routes.
//
// Thread-safety: Handle() may be called concurrently. Borrows its dependencies.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ddm/service.h"
#include "http/server.h"
#include "plist/plist.h"
#include "util/status.h"

namespace orchard::api {

// The DDM state of an enrollment as the admin API shows it (GET
// /v1/ddm/enrollments/{id}, and "ddm" in GET /v1/enrollments/{id}):
// {enabled, declarations_token, token_changed_at, served_token, served_at,
// in_sync, synced_token, synced_at, last_status_at, sync_command,
// sync_queued_at, declarations, sets}. Reads only.
Result<plist::Value> DdmEnrollmentJson(ddm::DdmService& ddm, const std::string& enrollment_id);

struct DdmApiDeps {
  ddm::DdmService* ddm;  // may be null: every route answers 503
  size_t max_response_bytes;
  size_t max_body_bytes;
};

class DdmApi {
 public:
  explicit DdmApi(const DdmApiDeps& deps) : d_(deps) {}
  // The answer for /v1/ddm/... (p: the decoded path segments, p[0] == "v1");
  // nullopt for any other path.
  std::optional<http::Response> Handle(const http::Request& r, const std::vector<std::string>& p);

 private:
  http::Response Declarations(const http::Request& r, const std::vector<std::string>& p);
  http::Response Sets(const http::Request& r);
  http::Response Membership(const http::Request& r, const std::vector<std::string>& p);
  http::Response StatusRoute(const http::Request& r, const std::vector<std::string>& p);
  http::Response Notify(const http::Request& r);
  http::Response Preview(const http::Request& r, const std::vector<std::string>& p);
  http::Response Enrollment(const std::string& id);

  DdmApiDeps d_;
};

}  // namespace orchard::api
