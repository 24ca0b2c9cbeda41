// The admin API's automation routes (docs/api.md#automation): policies
// (list, show, reload, flags, run now, decisions, parked events), fleet
// compliance and plugins (list, show). Internal to the api module: AdminApi authenticates and routes.
//
// Thread-safety: Handle() may be called concurrently. Borrows its dependencies.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "automation/runner.h"
#include "automation/store_host.h"
#include "events/events.h"
#include "http/server.h"
#include "plugin/plugin_set.h"
#include "policy/policy_set.h"

namespace orchard::api {

struct AutomationDeps {
  events::EventLog* events;
  automation::Runner* runner;
  automation::AutomationStore* automation;
  policy::PolicySet* policies;
  size_t max_response_bytes;
  size_t max_body_bytes;
  plugin::PluginSet* plugins;  // may be null (no plugins)
};

class AutomationApi {
 public:
  explicit AutomationApi(const AutomationDeps& deps) : d_(deps) {}
  // The answer for /v1/policies..., /v1/compliance... and /v1/plugins... (p: the decoded path
  // segments, p[0] == "v1"); nullopt for any other path.
  std::optional<http::Response> Handle(const http::Request& r, const std::vector<std::string>& p);
  // The runner's view of each running consumer, for GET /v1/consumers.
  std::vector<automation::ConsumerStatus> Statuses() const { return d_.runner->Statuses(); }

 private:
  http::Response ListPolicies();
  http::Response GetPolicy(const std::string& name);
  http::Response Reload(const std::string& name);
  http::Response SetFlags(const std::string& name, const http::Request& r);
  http::Response RunNow(const std::string& name, const http::Request& r);
  http::Response Records(const std::string& kind, const std::string& consumer, const http::Request& r);
  http::Response ComplianceSummary();
  http::Response ComplianceList(const std::string& name, const http::Request& r);
  http::Response ListPlugins();
  http::Response GetPlugin(const std::string& name);

  AutomationDeps d_;
};

}  // namespace orchard::api
