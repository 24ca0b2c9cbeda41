#include "domain/enrollments.h"

#include <functional>

namespace orchard::domain {
namespace {
std::string SerialKey(const std::string& serial, const std::string& id) {
  std::string k = serial;
  k.push_back('\0');
  k += id;
  return k;
}

bool Matches(const EnrollmentFilter& f, const store::Enrollment& e) {
  if (!f.serial.empty() && e.serial != f.serial) return false;
  if (!f.model.empty() && e.model != f.model && e.product_name != f.model) return false;
  if (!f.os_version.empty() && e.os_version.rfind(f.os_version, 0) != 0) return false;
  if (!f.state.empty() && f.state != store::EnrollmentStateName(e.state)) return false;
  if (!f.type.empty() && f.type != store::EnrollmentTypeName(e.type)) return false;
  if (f.seen_after_ms && e.last_seen_ms < f.seen_after_ms) return false;
  if (f.seen_before_ms && e.last_seen_ms >= f.seen_before_ms) return false;
  if (f.blocked && e.blocked != *f.blocked) return false;
  return true;
}
}  // namespace

size_t EnrollmentLocks::StripeOf(const std::string& id) { return std::hash<std::string>{}(id) % kStripes; }

Result<std::optional<store::Enrollment>> Enrollments::Get(const std::string& id) {
  auto v = store_->Get(store::Cf::kEnrollments, id);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<store::Enrollment>();
  auto e = store::Enrollment::Decode(**v);
  if (!e.ok()) return e.status();
  return std::optional<store::Enrollment>(std::move(e.value()));
}

std::string Enrollments::StateCounter(store::EnrollmentState s) {
  return std::string("enrollments.") + store::EnrollmentStateName(s);
}

void Enrollments::Put(store::Batch& batch, const std::optional<store::Enrollment>& previous,
                      const store::Enrollment& e) {
  batch.Put(store::Cf::kEnrollments, e.id, e.Encode());
  if (!previous || previous->state != e.state) {
    if (previous) batch.AddCounter(StateCounter(previous->state), -1);
    batch.AddCounter(StateCounter(e.state), 1);
  }
  if (!previous || previous->serial != e.serial) {
    if (previous && !previous->serial.empty())
      batch.Delete(store::Cf::kSerials, SerialKey(previous->serial, e.id));
    if (!e.serial.empty()) batch.Put(store::Cf::kSerials, SerialKey(e.serial, e.id), "");
  }
}

Result<std::optional<std::string>> Enrollments::BoundTo(const std::string& cert_sha256) {
  return store_->Get(store::Cf::kCertBindings, cert_sha256);
}

void Enrollments::Bind(store::Batch& batch, const std::string& cert_sha256,
                       const std::string& device_id) {
  batch.Put(store::Cf::kCertBindings, cert_sha256, device_id);
}

void Enrollments::Unbind(store::Batch& batch, const std::string& cert_sha256) {
  batch.Delete(store::Cf::kCertBindings, cert_sha256);
}

Result<EnrollmentPage> Enrollments::List(const EnrollmentFilter& filter, const std::string& cursor,
                                         size_t limit, size_t scan_budget) {
  EnrollmentPage page;
  if (!filter.serial.empty()) {
    // Index lookup: serial -> ids.
    std::string prefix = filter.serial;
    prefix.push_back('\0');
    auto it = store_->Scan(store::Cf::kSerials, prefix, store::PrefixEnd(prefix));
    for (; it->Valid(); it->Next()) {
      std::string id(it->key().substr(prefix.size()));
      if (!cursor.empty() && id <= cursor) continue;
      auto e = Get(id);
      if (!e.ok()) return e.status();
      if (!e->has_value() || !Matches(filter, **e)) continue;
      if (page.items.size() == limit) {
        page.next_cursor = page.items.back().id;
        break;
      }
      page.items.push_back(std::move(**e));
    }
    ORCHARD_RETURN_IF_ERROR(it->status());
    return page;
  }
  std::string start = cursor;
  if (!start.empty()) start.push_back('\0');  // strictly after cursor
  auto it = store_->Scan(store::Cf::kEnrollments, start, "");
  size_t scanned = 0;
  std::string last_key;
  for (; it->Valid(); it->Next()) {
    if (++scanned > scan_budget && !last_key.empty()) {
      // Stop scanning; the client continues after the last key examined.
      page.next_cursor = last_key;
      return page;
    }
    last_key = std::string(it->key());
    auto e = store::Enrollment::Decode(it->value());
    if (!e.ok() || !Matches(filter, *e)) continue;
    if (page.items.size() == limit) {
      page.next_cursor = page.items.back().id;
      break;
    }
    page.items.push_back(std::move(e.value()));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return page;
}

Result<int64_t> Enrollments::CountInState(store::EnrollmentState s) {
  return store_->GetCounter(StateCounter(s));
}

}  // namespace orchard::domain
