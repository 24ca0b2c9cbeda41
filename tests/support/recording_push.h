// A push provider for tests that accepts every push and records the
// enrollment ids it was asked to wake, in order. Thread-safe (lock mu to read
// pushed while pushes may still arrive).
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "push/push.h"

namespace orchard::testing {

class RecordingPush : public push::PushProvider {
 public:
  std::vector<push::Outcome> Push(const std::vector<push::Target>& targets) override {
    std::lock_guard lock(mu);
    std::vector<push::Outcome> out;
    for (const auto& t : targets) {
      pushed.push_back(t.enrollment_id);
      out.push_back({t.enrollment_id, true, "APNS-ID", "", push::PushRefusal::kNone, false});
    }
    return out;
  }
  Result<std::optional<store::PushState>> State(const std::string&) override {
    return std::optional<store::PushState>();
  }
  std::mutex mu;
  std::vector<std::string> pushed;
};

}  // namespace orchard::testing
