#include "automation/host.h"

#include <algorithm>

namespace orchard::automation {
namespace {
bool InRange(const std::string& key, const std::string& prefix, const std::string& after) {
  return key.compare(0, prefix.size(), prefix) == 0 && key > after;
}
}  // namespace

KvPairs MergeScan(KvPairs base,
                  const std::vector<std::pair<std::string, std::optional<std::string>>>& pending,
                  const std::string& prefix, const std::string& after, size_t limit) {
  std::map<std::string, std::string> merged(std::make_move_iterator(base.begin()),
                                            std::make_move_iterator(base.end()));
  for (const auto& [k, v] : pending) {
    if (!InRange(k, prefix, after)) continue;
    if (v) merged[k] = *v;
    else merged.erase(k);
  }
  KvPairs out;
  for (auto& [k, v] : merged) {
    if (out.size() >= limit) break;
    out.emplace_back(k, std::move(v));
  }
  return out;
}

void Overlay::Apply(const std::string& consumer, const Decisions& d) {
  for (const auto& w : d.kv) kv_[{consumer, w.key}] = w.value;
  for (const auto& c : d.compliance) compliance_[{consumer, c.enrollment_id}] = c.state;
}

Result<std::optional<std::string>> Overlay::KvGet(const std::string& ns, const std::string& key) {
  auto it = kv_.find({ns, key});
  if (it != kv_.end()) return it->second;
  return base_->KvGet(ns, key);
}

Result<KvPairs> Overlay::KvScan(const std::string& ns, const std::string& prefix,
                                const std::string& after, size_t limit) {
  std::vector<std::pair<std::string, std::optional<std::string>>> pending;
  for (auto it = kv_.lower_bound({ns, prefix}); it != kv_.end() && it->first.first == ns; ++it)
    pending.emplace_back(it->first.second, it->second);
  // Deleted keys may hide base entries: read enough to still fill the page.
  auto base = base_->KvScan(ns, prefix, after, limit + pending.size());
  if (!base.ok()) return base.status();
  return MergeScan(std::move(base.value()), pending, prefix, after, limit);
}

Result<std::optional<ComplianceState>> Overlay::Compliance(const std::string& policy,
                                                           const std::string& id) {
  auto it = compliance_.find({policy, id});
  if (it != compliance_.end()) return std::optional<ComplianceState>(it->second);
  return base_->Compliance(policy, id);
}

void MemoryHost::PutDevice(store::Enrollment e) {
  std::lock_guard lock(mu_);
  std::string id = e.id;
  devices_[id] = std::move(e);
}

void MemoryHost::PutResult(const std::string& id, store::CommandResult r) {
  std::lock_guard lock(mu_);
  std::string rt = r.request_type;
  results_[{id, rt}] = std::move(r);
}

void MemoryHost::Commit(const std::string& consumer, const Decisions& d) {
  std::lock_guard lock(mu_);
  for (const auto& w : d.kv) {
    if (w.value) kv_[{consumer, w.key}] = *w.value;
    else kv_.erase({consumer, w.key});
  }
  for (const auto& c : d.compliance) compliance_[{consumer, c.enrollment_id}] = c.state;
}

Status MemoryHost::KvWriteNow(const std::string& ns, const std::vector<KvWrite>& writes) {
  std::lock_guard lock(mu_);
  for (const auto& w : writes) {
    if (w.value) kv_[{ns, w.key}] = *w.value;
    else kv_.erase({ns, w.key});
  }
  return Status::Ok();
}

void MemoryHost::SetRenewalProfile(std::string bytes) {
  std::lock_guard lock(mu_);
  renewal_profile_ = std::move(bytes);
}

Result<std::optional<std::string>> MemoryHost::RenewalProfile(const std::string&) {
  std::lock_guard lock(mu_);
  if (!renewal_profile_) return Status::Unavailable("enrollment profiles are not available here");
  return std::optional<std::string>(*renewal_profile_);
}

void MemoryHost::PutDdmStatus(const std::string& id, const std::string& item, std::optional<plist::Value> value) {
  std::lock_guard lock(mu_);
  if (value) ddm_status_[{id, item}] = std::move(*value);
  else ddm_status_.erase({id, item});
}

void MemoryHost::PutDdmDeclarationStatus(const std::string& id, const std::string& identifier,
                                         std::optional<plist::Value> status) {
  std::lock_guard lock(mu_);
  if (status) ddm_declarations_[{id, identifier}] = std::move(*status);
  else ddm_declarations_.erase({id, identifier});
}

Result<std::optional<plist::Value>> MemoryHost::DdmStatus(const std::string& id, const std::string& item) {
  std::lock_guard lock(mu_);
  auto it = ddm_status_.find({id, item});
  if (it == ddm_status_.end()) return std::optional<plist::Value>();
  return std::optional<plist::Value>(it->second);
}

Result<std::optional<plist::Value>> MemoryHost::DdmDeclarationStatus(const std::string& id, const std::string& decl) {
  std::lock_guard lock(mu_);
  auto it = ddm_declarations_.find({id, decl});
  if (it == ddm_declarations_.end()) return std::optional<plist::Value>();
  return std::optional<plist::Value>(it->second);
}

Result<std::optional<store::Enrollment>> MemoryHost::Device(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end()) return std::optional<store::Enrollment>();
  return std::optional<store::Enrollment>(it->second);
}

Result<std::optional<store::CommandResult>> MemoryHost::LastResult(const std::string& id,
                                                                   const std::string& rt) {
  std::lock_guard lock(mu_);
  auto it = results_.find({id, rt});
  if (it == results_.end()) return std::optional<store::CommandResult>();
  return std::optional<store::CommandResult>(it->second);
}

Result<std::optional<std::string>> MemoryHost::KvGet(const std::string& ns, const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = kv_.find({ns, key});
  if (it == kv_.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

Result<KvPairs> MemoryHost::KvScan(const std::string& ns, const std::string& prefix,
                                   const std::string& after, size_t limit) {
  std::lock_guard lock(mu_);
  KvPairs out;
  for (auto it = kv_.lower_bound({ns, std::max(prefix, after)}); it != kv_.end() && out.size() < limit;
       ++it) {
    if (it->first.first != ns || it->first.second.compare(0, prefix.size(), prefix) != 0) break;
    if (it->first.second > after) out.emplace_back(it->first.second, it->second);
  }
  return out;
}

Result<std::optional<ComplianceState>> MemoryHost::Compliance(const std::string& policy,
                                                              const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = compliance_.find({policy, id});
  if (it == compliance_.end()) return std::optional<ComplianceState>();
  return std::optional<ComplianceState>(it->second);
}

namespace {
plist::Value TimeValue(int64_t ms) { return plist::Value::Real(static_cast<double>(ms) / 1000.0); }
}  // namespace

plist::Value DeviceValue(const store::Enrollment& e) {
  plist::Value v;
  v.Set("id", plist::Value::String(e.id));
  v.Set("type", plist::Value::String(store::EnrollmentTypeName(e.type)));
  for (auto [k, s] : {std::pair{"parent_id", &e.parent_id}, {"udid", &e.udid},
                      {"enrollment_id", &e.enrollment_id}, {"user_id", &e.user_id},
                      {"user_short_name", &e.user_short_name}, {"user_long_name", &e.user_long_name},
                      {"enrollment_user_id", &e.enrollment_user_id}, {"topic", &e.topic},
                      {"serial_number", &e.serial}, {"model", &e.model}, {"model_name", &e.model_name},
                      {"os_version", &e.os_version}, {"build_version", &e.build_version},
                      {"product_name", &e.product_name}, {"device_name", &e.device_name},
                      {"imei", &e.imei}, {"meid", &e.meid}}) {
    if (!s->empty()) v.Set(k, plist::Value::String(*s));
  }
  v.Set("state", plist::Value::String(store::EnrollmentStateName(e.state)));
  v.Set("blocked", plist::Value::Bool(e.blocked));
  v.Set("generation", plist::Value::Integer(e.generation));
  v.Set("token_updates", plist::Value::Integer(e.token_updates));
  v.Set("awaiting_configuration", plist::Value::Bool(e.awaiting_configuration));
  for (auto [k, t] : {std::pair{"authenticated_at", e.authenticated_ms}, {"enrolled_at", e.enrolled_ms},
                      {"last_seen_at", e.last_seen_ms}, {"checked_out_at", e.checked_out_ms}}) {
    if (t) v.Set(k, TimeValue(t));
  }
  v.Set("has_push_token", plist::Value::Bool(!e.push_token.empty()));
  v.Set("has_unlock_token", plist::Value::Bool(!e.unlock_token.empty()));
  v.Set("has_bootstrap_token", plist::Value::Bool(!e.bootstrap_token.empty()));
  return v;
}

plist::Value ResultValue(const store::CommandResult& r) {
  plist::Value v;
  v.Set("command_uuid", plist::Value::String(r.command_uuid));
  v.Set("request_type", plist::Value::String(r.request_type));
  v.Set("status", plist::Value::String(r.status));
  v.Set("received_at", TimeValue(r.received_ms));
  v.Set("enqueued_at", TimeValue(r.enqueued_ms));
  v.Set("origin", plist::Value::String(r.origin));
  if (!r.error_chain.empty()) {
    auto chain = plist::ParseJson(r.error_chain);
    if (chain.ok()) v.Set("error_chain", std::move(chain.value()));
  }
  auto report = plist::ParseXml(r.raw);
  if (report.ok()) v.Set("response", std::move(report.value()));
  return v;
}

}  // namespace orchard::automation
