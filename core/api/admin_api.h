// The admin API: HTTP + JSON, authenticated by an API key.
//
// NanoMDM-compatible routes (existing tools work unchanged):
//   PUT  /v1/enqueue/{id,id,...}[?nopush=1]   raw command plist
//   GET|POST /v1/push/{id,id,...}
//   PUT  /v1/pushcert                          PEM certificate + key, or PKCS#12
//                                              (password in X-Pkcs12-Password)
//   GET  /version                              (no API key needed, as NanoMDM)
// with NanoMDM's JSON result shape and 200 (all ok) / 207 (some failed) / 500.
// Commands are checked for what a device cannot parse and stored re-serialized.
// Every listing is paged by count and by bytes with an opaque cursor.
// Orchard's own routes are listed in docs/api.md.
//
// The key may be sent as HTTP Basic auth (any user name, key as password, as
// NanoMDM's tools do), "Authorization: Bearer KEY" or "X-API-Key: KEY"; it is
// compared in constant time. Errors are JSON {"error": "..."} with 400, 401,
// 403 (API disabled), 404, 405, 409, 413, 500 or 503 (a dependency such as a
// sealed push key is unavailable, or the disk is full: then with Retry-After).
// Thread-safety: Handle() may be called concurrently. Borrows its dependencies.
#pragma once

#include <memory>
#include <string>

#include "events/events.h"
#include "http/server.h"
#include "automation/runner.h"
#include "automation/store_host.h"
#include "domain/commands.h"
#include "enroll/challenges.h"
#include "enroll/issued.h"
#include "ddm/service.h"
#include "plugin/plugin_set.h"
#include "policy/policy_set.h"
#include "domain/enrollments.h"
#include "domain/reenroll.h"
#include "push/push.h"
#include "queue/queue.h"
#include "store/store.h"

namespace orchard::api {

class AutomationApi;
class EnrollApi;
class DdmApi;

struct Options {
  std::string api_key;  // empty: the admin API answers 403 (disabled)
  size_t max_body_bytes = 8 * 1024 * 1024;
  int max_plist_depth = 64;
  std::string version;
  // No answer body is larger (api.max_response_bytes): listings end a page early, an item
  // that alone is too big is shortened and flagged "truncated".
  size_t max_response_bytes = 16 * 1024 * 1024;
};

struct Deps {
  store::Store* store;
  events::EventLog* events;
  queue::CommandQueue* queue;
  domain::Enrollments* enrollments;
  domain::EnrollmentLocks* locks;
  push::PushProvider* push;
  push::PushCertStore* push_certs;
  domain::CommandService* commands;  // the one command path (queue + push)
  automation::Runner* runner;             // event consumers
  automation::AutomationStore* automation;  // their state and records
  policy::PolicySet* policies;            // may be null (no policies)
  plugin::PluginSet* plugins;             // may be null (no plugins)
  enroll::IssuedCerts* issued = nullptr;  // the device CA's records; null: /v1/certificates answers 503
  enroll::Challenges* challenges = nullptr;  // one-time SCEP challenges; may be null
  ddm::DdmService* ddm = nullptr;  // declarative device management; null: /v1/ddm answers 503
};

class AdminApi {
 public:
  AdminApi(const Options& options, const Deps& deps);
  ~AdminApi();

  // True if the path belongs to the admin API.
  static bool Owns(const std::string& path);
  // A stable route label for metrics (no ids).
  static std::string RouteLabel(const http::Request& request);
  http::Response Handle(const http::Request& request);

 private:
  bool Authorized(const http::Request& request) const;
  http::Response PluginRoute(const http::Request& request);
  http::Response GetReenroll(const std::string& id);
  http::Response DecideReenroll(const std::string& id, bool approve, const http::Request& r);
  http::Response Enqueue(const http::Request& request, const std::string& ids);
  http::Response EnqueueJson(const http::Request& request);
  http::Response EnqueueToIds(const std::vector<std::string>& ids, const queue::NewCommand& command,
                              bool nopush);
  http::Response PushIds(const std::string& ids);
  http::Response PutPushCert(const http::Request& request);
  http::Response ListPushCerts(const http::Request& request);
  http::Response ListEnrollments(const http::Request& request);
  http::Response GetEnrollment(const std::string& id);
  http::Response GetQueue(const std::string& id, const http::Request& request);
  http::Response ClearQueue(const std::string& id);
  http::Response DeleteQueued(const std::string& id, const std::string& uuid);
  http::Response ListResults(const std::string& id, const http::Request& request);
  http::Response GetResult(const std::string& id, const std::string& uuid, const http::Request& request);
  http::Response SetBlocked(const std::string& id, bool blocked);
  http::Response ListEvents(const http::Request& request);
  http::Response ListConsumers();
  http::Response UnregisterConsumer(const std::string& name);

  Options options_;
  Deps d_;
  std::unique_ptr<AutomationApi> automation_api_;
  std::unique_ptr<EnrollApi> enroll_api_;
  std::unique_ptr<DdmApi> ddm_api_;
};

}  // namespace orchard::api
