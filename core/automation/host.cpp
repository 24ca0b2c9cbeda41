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

}  // namespace orchard::automation
