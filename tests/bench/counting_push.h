// A push provider for in-process benchmarks: every push is accepted and
// counted, not sent (the APNs client has its own benchmark, scripts/bench-push;
// orchardd's PushService only queues pushes on the committing thread too).
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "push/push.h"

namespace orchard::bench {

class CountingPush : public push::PushProvider {
 public:
  std::vector<push::Outcome> Push(const std::vector<push::Target>& targets) override {
    pushes_.fetch_add(targets.size());
    std::vector<push::Outcome> out(targets.size());
    for (size_t i = 0; i < targets.size(); ++i) {
      out[i].enrollment_id = targets[i].enrollment_id;
      out[i].ok = true;
    }
    return out;
  }
  Result<std::optional<store::PushState>> State(const std::string&) override {
    return std::optional<store::PushState>{};
  }
  uint64_t pushes() const { return pushes_.load(); }

 private:
  std::atomic<uint64_t> pushes_{0};
};

}  // namespace orchard::bench
