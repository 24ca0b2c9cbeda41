// The orchardd application: wires config, store, events, queue, auth, the
// device service, the admin API, metrics and housekeeping into one HTTP server.
// Used by main() and by in-process tests. Thread-safety: Start/Stop from one
// thread; the running app serves requests concurrently.
#pragma once

#include <memory>

#include "config/config.h"
#include "util/status.h"

namespace rocksdb {
class Env;
}

namespace orchard::server {

// Test hooks; production leaves them empty.
struct TestHooks {
  // The RocksDB environment the store runs on (e.g. one whose file system
  // injects faults). Borrowed; must outlive the App.
  rocksdb::Env* store_env = nullptr;
};

class App {
 public:
  static Result<std::unique_ptr<App>> Start(const config::Config& config,
                                            const TestHooks& hooks = {});
  virtual ~App() = default;
  virtual uint16_t port() const = 0;
  // Stops serving and closes the store (also done by the destructor).
  virtual void Stop() = 0;
};

extern const char kVersion[];

}  // namespace orchard::server
