// The simulator's Declarative Device Management client: follows Apple's
// rules for a device channel. Sync(): take the DeclarationsToken from the
// DeclarativeManagement command's Data (or ask `tokens`), stop when it is the
// one the client holds, else fetch `declaration-items`, fetch every new or
// changed declaration (a 404 drops it), drop those no longer listed, and send
// a status report with every declaration it holds (management.declarations).
// A non-200 answer stops the sync (the device retries later); the token is
// only adopted when everything succeeded.
//
// Not thread-safe; borrows the Device.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "sim/simulator.h"

namespace orchard::sim {

struct HeldDeclaration {
  std::string kind;  // activation, configuration, asset, management
  std::string server_token;
  std::string json;  // as fetched
};

struct DdmSyncStats {
  int requests = 0;        // DDM check-ins made
  int fetched = 0;         // declaration/... fetches answered 200
  int dropped = 0;         // removed (not listed, or 404)
  bool manifest_fetched = false;
  bool changed = false;    // the token differed
};

class DdmClient {
 public:
  explicit DdmClient(Device* device) : device_(device) {}

  // data: the Data of the DeclarativeManagement command (a TokensResponse), or
  // empty to ask the server's `tokens`.
  Result<DdmSyncStats> Sync(const std::string& data = "");
  // Sends a status report {"StatusItems": items, "Errors": [], "FullReport": full}
  // (items: a JSON object). Returns the HTTP status.
  Result<long> Report(const std::string& items_json, bool full = false);
  // One DeclarativeManagement check-in; the response as is.
  Result<HttpResponse> Call(const std::string& endpoint, const std::string* data = nullptr);

  const std::string& token() const { return token_; }
  const std::map<std::string, HeldDeclaration>& held() const { return held_; }
  // management.declarations as the device reports it for what it holds.
  std::string DeclarationsStatusJson() const;

 private:
  Device* device_;
  std::string token_;
  std::map<std::string, HeldDeclaration> held_;  // by Identifier
};

}  // namespace orchard::sim
