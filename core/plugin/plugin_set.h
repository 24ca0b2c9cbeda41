// The plugins of a directory (shared objects speaking <orchard/plugin.h>),
// each a consumer of the automation host, like the Lua policies.
//
// Loading one file, in order; the first check that fails refuses it:
//   - it is a regular file, not writable by group or others, owned by root
//     or by the server's uid (the directory itself must not be writable by
//     group or others either: Start refuses such a directory);
//   - dlopen(RTLD_NOW | RTLD_LOCAL) succeeds and the file exports
//     ORCHARD_PLUGIN_ENTRY;
//   - the entry returns ORCHARD_OK and a descriptor of at least the ABI 1.0
//     size, the host's major, a minor not newer than the host's, a valid name
//     and subscription list, lanes 0..16; the name is not already loaded;
//   - init (if any) returns ORCHARD_OK with the plugin's config section.
// A loaded plugin runs as consumer "plugin:<name>" on the shared Runner:
// at-least-once delivery from durable checkpoints, off the request path; a
// hook error is a failed run (retried, then parked by the runner). Its host
// calls become Decisions committed with its checkpoint. Its schedules (ABI
// 1.1) go to the ScheduleRegistry as consumer "plugin:<name>"; its on_http
// answers /plugins/<name>/... through Http().
//
// Thread-safety: all public methods are safe for concurrent use. Borrows the
// runner (it must outlive the set).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "automation/host.h"
#include "automation/runner.h"
#include "automation/schedule.h"
#include "util/status.h"

namespace orchard::plugin {

// Why a plugin is not running (never matched by message text).
enum class LoadError : int {
  kNone = 0,
  kNotRegularFile,  // not a regular file / cannot be read
  kInsecureFile,    // writable by group or others, or owned by another user
  kOpen,            // dlopen failed
  kNoEntry,         // ORCHARD_PLUGIN_ENTRY not exported
  kEntryFailed,     // the entry returned an error or no descriptor
  kBadDescriptor,   // descriptor too small or with invalid fields
  kAbiMajor,        // another ABI major than the host's
  kAbiMinor,        // needs a newer ABI minor than the host's
  kDuplicate,       // another loaded plugin has the name
  kInitFailed,      // init returned an error
  kRegister,        // the runner refused the consumer
};
const char* LoadErrorName(LoadError e);  // "insecure_file", ...

enum class PluginState : int { kLoaded = 0, kRefused, kError };
const char* PluginStateName(PluginState s);  // "loaded", "refused", "error"

// What a plugin can use besides the runner (each may be null: the host
// functions needing it answer ORCHARD_ERR_UNSUPPORTED, schedules are not run).
struct PluginSetDeps {
  automation::Runner* runner = nullptr;              // required
  automation::HostReader* reader = nullptr;          // kv_read, kv_scan (committed state)
  automation::KvWriter* kv_writer = nullptr;         // kv_write
  automation::ScheduleRegistry* schedules = nullptr; // descriptor schedules (ABI 1.1)
};

// A request to a plugin's routes and its answer (AdminApi translates HTTP).
struct PluginHttpRequest {
  std::string method;
  std::string path;   // decoded, after "/plugins/<name>"; "/" at least
  std::string query;  // raw
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};
struct PluginHttpResponse {
  int status = 204;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct PluginSetOptions {
  std::string dir;                             // "" = no plugins
  std::map<std::string, std::string> configs;  // plugin name -> config section (JSON object)
  int default_lanes = 2;                       // for descriptors with lanes = 0
};

struct PluginStatus {
  std::string name;  // the descriptor's name (refused before it was read: the file name)
  std::string version;
  std::string file;
  PluginState state = PluginState::kRefused;
  LoadError error = LoadError::kNone;
  std::string message;  // why it is refused / in error ("" when loaded)
  std::string abi;      // "major.minor" the plugin declared ("" if unknown)
  std::vector<std::string> event_types;
  int lanes = 0;
  std::vector<std::string> schedules;  // "<name> every <interval_ms>ms" (ABI 1.1)
  bool http = false;                   // has on_http (routes under /plugins/<name>/)
  // From the runner (loaded plugins):
  uint64_t handled = 0;
  uint64_t errors = 0;  // failed runs since start (retried or parked)
  uint64_t parked = 0;
  std::string last_error;
  int64_t lag_ms = 0;
};

class PluginSet {
 public:
  PluginSet(const PluginSetOptions& options, automation::Runner* runner);
  PluginSet(const PluginSetOptions& options, const PluginSetDeps& deps);
  ~PluginSet();

  // Loads every "*.so" of the directory in name order. Refusals of single
  // files do not fail the call (they are in List()); a missing directory or
  // one writable by group or others does.
  Status Start();
  // Loads one file (also used by Start). The error, if any, is also listed.
  Status Load(const std::string& path);
  // Unregisters every plugin from the runner, calls shutdown, unloads it.
  void Stop();

  // Every plugin (loaded, refused, in error), at most limit, by file name.
  std::vector<PluginStatus> List(size_t limit = 1000);
  // The consumer of a loaded plugin (tests drive it directly); nullptr if none.
  std::shared_ptr<automation::Consumer> ConsumerOf(const std::string& name);

  // Serves a request to /plugins/<name><request.path> with the plugin's
  // on_http: 404 when there is no such loaded plugin or it has no routes, 503
  // while another call of the same plugin runs, 500 when the plugin fails or
  // its body exceeds max_body.
  PluginHttpResponse Http(const std::string& name, const PluginHttpRequest& request, size_t max_body);

  static std::string ConsumerName(const std::string& plugin) { return "plugin:" + plugin; }

  class Loaded;  // one loaded plugin (internal)

 private:
  struct Entry {
    PluginStatus status;
    std::shared_ptr<Loaded> loaded;  // null unless running
  };
  Status Refuse(Entry* e, PluginState state, LoadError error, std::string message);

  PluginSetOptions options_;
  PluginSetDeps deps_;
  automation::Runner* runner_;
  std::mutex mu_;
  std::map<std::string, Entry> entries_;  // by file path
};

}  // namespace orchard::plugin
