#include "server/repush.h"

#include "log/log.h"
#include "store/records.h"

namespace orchard::server {

Result<uint64_t> RepushStale(store::Store* store, domain::Enrollments* enrollments,
                             push::PushProvider* push, int64_t interval_ms, int64_t now_ms) {
  std::vector<push::Target> batch;
  uint64_t pushed = 0, waiting = 0;
  std::string start;
  while (true) {
    // One seek per enrollment that has a queue: jump past the rest of its entries.
    auto it = store->Scan(store::Cf::kQueue, start, "");
    if (!it->Valid()) {
      ORCHARD_RETURN_IF_ERROR(it->status());
      break;
    }
    std::string_view key = it->key();
    std::string id(key.substr(0, key.find('\0')));
    start = store::PrefixEnd(id + std::string(1, '\0'));
    auto e = enrollments->Get(id);
    if (!e.ok() || !e->has_value()) continue;
    const store::Enrollment& en = **e;
    if (en.state != store::EnrollmentState::kEnrolled || en.blocked || en.push_token.empty()) continue;
    if (now_ms - en.last_seen_ms < interval_ms) continue;
    if (push->Pending(en.push_token)) {  // still waiting for APNs: that push will wake it
      ++waiting;
      continue;
    }
    auto ps = push->State(id);
    if (ps.ok() && ps->has_value() &&
        ((*ps)->token_invalid_ms || now_ms - (*ps)->last_push_ms < interval_ms))
      continue;
    batch.push_back({id, en.topic, en.push_token, en.push_magic, en.last_seen_ms});
    if (batch.size() >= 1000) {
      push->PushAsync(batch);
      pushed += batch.size();
      batch.clear();
    }
  }
  if (!batch.empty()) {
    push->PushAsync(batch);
    pushed += batch.size();
  }
  if (pushed || waiting)
    log::Info("server", "event=repush count={} waiting_for_apns={} interval_ms={}", pushed, waiting,
              interval_ms);
  return pushed;
}

}  // namespace orchard::server
