#include "automation/device_watch.h"

#include <algorithm>
#include <memory>

#include "automation/store_host.h"
#include "log/log.h"
#include "plist/plist.h"
#include "util/encoding.h"

namespace orchard::automation {
namespace {
constexpr int64_t kDay = 86400 * 1000LL;
constexpr size_t kEventsPerCommit = 500;

struct Marker {
  std::string subject;  // last_seen (silence) or certificate hash (expiry)
  int64_t threshold = -1;
};

Result<Marker> ReadMarker(store::Store* store, const std::string& key) {
  auto v = store->Get(store::Cf::kAutomation, key);
  if (!v.ok()) return v.status();
  Marker m;
  if (!v->has_value()) return m;
  auto p = plist::ParseJson(**v);
  if (!p.ok()) return m;
  m.subject = std::string(p->GetString("subject"));
  if (const plist::Value* t = p->Find("threshold"); t && t->AsInteger()) m.threshold = *t->AsInteger();
  return m;
}

std::string MarkerValue(const std::string& subject, int64_t threshold) {
  plist::Value v;
  v.Set("subject", plist::Value::String(subject));
  v.Set("threshold", plist::Value::Integer(threshold));
  return plist::ToJson(v);
}
}  // namespace

Status DeviceWatch::Check(const store::Enrollment& e, int64_t now, events::Transaction* txn, size_t* emitted) {
  // Silence: the largest threshold the silence has reached, once.
  if (!options_.silent_days.empty() && e.last_seen_ms > 0) {
    const int64_t days = (now - e.last_seen_ms) / kDay;
    int reached = -1;
    for (int d : options_.silent_days)
      if (days >= d) reached = d;
    if (reached > 0) {
      const std::string key = AutomationStore::Key("mk", "silent", e.id);
      auto m = ReadMarker(store_, key);
      if (!m.ok()) return m.status();
      const std::string subject = std::to_string(e.last_seen_ms);
      if (m->subject != subject || m->threshold < reached) {
        plist::Value payload;
        payload.Set("last_seen_at", plist::Value::String(FormatRfc3339(e.last_seen_ms)));
        payload.Set("days_silent", plist::Value::Integer(days));
        payload.Set("threshold_days", plist::Value::Integer(reached));
        txn->Emit({.type = events::type::kDeviceSilent, .time_ms = now, .enrollment_id = e.id,
                   .payload_json = plist::ToJson(payload)});
        txn->batch().Put(store::Cf::kAutomation, key, MarkerValue(subject, reached));
        ++*emitted;
      }
    }
  }
  // Identity certificate expiry: the smallest threshold crossed, once.
  if (!options_.cert_warn_days.empty() && e.cert_not_after_ms > 0) {
    const int64_t days_left = (e.cert_not_after_ms - now) / kDay;
    int crossed = -1;
    for (auto it = options_.cert_warn_days.rbegin(); it != options_.cert_warn_days.rend(); ++it)
      if (days_left <= *it) crossed = *it;
    if (crossed > 0) {
      const std::string key = AutomationStore::Key("mk", "cert", e.id);
      auto m = ReadMarker(store_, key);
      if (!m.ok()) return m.status();
      if (m->subject != e.cert_sha256 || m->threshold < 0 || crossed < m->threshold) {
        plist::Value payload;
        payload.Set("kind", plist::Value::String("identity"));
        payload.Set("not_after", plist::Value::String(FormatRfc3339(e.cert_not_after_ms)));
        payload.Set("days_left", plist::Value::Integer(days_left));
        payload.Set("threshold_days", plist::Value::Integer(crossed));
        payload.Set("sha256", plist::Value::String(e.cert_sha256));
        txn->Emit({.type = events::type::kCertificateExpiring, .time_ms = now, .enrollment_id = e.id,
                   .payload_json = plist::ToJson(payload)});
        txn->batch().Put(store::Cf::kAutomation, key, MarkerValue(e.cert_sha256, crossed));
        ++*emitted;
      }
    }
  }
  return Status::Ok();
}

Result<size_t> DeviceWatch::Round(int64_t now) {
  if (options_.silent_days.empty() && options_.cert_warn_days.empty()) return size_t{0};
  domain::EnrollmentFilter filter;
  filter.state = "enrolled";
  filter.blocked = false;
  size_t examined = 0, emitted = 0;
  while (examined < options_.per_round) {
    auto page = enrollments_->List(filter, cursor_, std::min<size_t>(500, options_.per_round - examined));
    if (!page.ok()) return page.status();
    auto txn = std::make_unique<events::Transaction>(events_);
    size_t in_txn = 0;
    for (const auto& e : page->items) {
      cursor_ = e.id;
      if (e.type != store::EnrollmentType::kDevice && e.type != store::EnrollmentType::kUserEnrollmentDevice)
        continue;
      ORCHARD_RETURN_IF_ERROR(Check(e, now, txn.get(), &in_txn));
      if (in_txn >= kEventsPerCommit) {
        ORCHARD_RETURN_IF_ERROR(events_->Commit(*txn));
        emitted += in_txn;
        in_txn = 0;
        txn = std::make_unique<events::Transaction>(events_);
      }
    }
    ORCHARD_RETURN_IF_ERROR(events_->Commit(*txn));
    emitted += in_txn;
    examined += page->items.size();
    if (page->next_cursor.empty()) {
      cursor_.clear();  // a full pass: the next round starts over
      break;
    }
    if (page->items.empty()) cursor_ = page->next_cursor;
  }
  return emitted;
}

}  // namespace orchard::automation
