// What a handler may read while it runs: device inventory, the device's last
// command results, its consumer's key-value namespace and compliance state.
//
// Reads never take enrollment locks: a handler sees committed state (plus its
// own pending writes, through Overlay). Writes are never done here; they are
// Decisions, applied by the host after the run.
//
// Thread-safety: HostReader implementations are safe for concurrent use.
// Overlay is single-threaded (one per lane batch).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "automation/decisions.h"
#include "plist/plist.h"
#include "store/records.h"
#include "util/status.h"

namespace orchard::automation {

using KvPairs = std::vector<std::pair<std::string, std::string>>;

class HostReader {
 public:
  virtual ~HostReader() = default;
  // The enrollment record (secrets included: callers must not expose them).
  virtual Result<std::optional<store::Enrollment>> Device(const std::string& enrollment_id) = 0;
  // The newest stored result of a command with this RequestType, raw report included.
  virtual Result<std::optional<store::CommandResult>> LastResult(const std::string& enrollment_id,
                                                                 const std::string& request_type) = 0;
  // Key-value namespace ns (a consumer's name).
  virtual Result<std::optional<std::string>> KvGet(const std::string& ns, const std::string& key) = 0;
  // Keys starting with prefix and greater than after, in key order, at most limit.
  virtual Result<KvPairs> KvScan(const std::string& ns, const std::string& prefix,
                                 const std::string& after, size_t limit) = 0;
  // Compliance state a consumer keeps for an enrollment.
  virtual Result<std::optional<ComplianceState>> Compliance(const std::string& consumer,
                                                            const std::string& enrollment_id) = 0;
  // A fresh signed enrollment profile for renewing this device's identity (for
  // an InstallProfile command): its SCEP challenge is one-time, bound to the
  // device and marked as the renewal of the certificate bound to it, so the
  // certificate the device gets replaces the old one in place. nullopt: no such
  // device (or no certificate bound). Unavailable when enrollment profiles
  // cannot be made (no push certificate, no CA). Not a pure read: it creates
  // the challenge (which expires unused).
  virtual Result<std::optional<std::string>> RenewalProfile(const std::string& enrollment_id) {
    return Status::Unavailable("enrollment profiles are not available here");
  }
};

// Makes renewal profiles (the server wires the enroll module in).
class RenewalProfiles {
 public:
  virtual ~RenewalProfiles() = default;
  virtual Result<std::optional<std::string>> RenewalProfile(const std::string& enrollment_id) = 0;
};

// Writes to a key-value namespace outside any run (a plugin's own threads,
// through kv_write): atomic, durable when Ok, not tied to a checkpoint.
class KvWriter {
 public:
  virtual ~KvWriter() = default;
  virtual Status KvWriteNow(const std::string& ns, const std::vector<KvWrite>& writes) = 0;
};

// A HostReader that sees writes not yet committed (earlier runs of the same
// batch, then the current run) on top of a base reader. Borrows base.
class Overlay : public HostReader {
 public:
  explicit Overlay(HostReader* base) : base_(base) {}

  // Records a successful run's writes; consumer names its store namespace and
  // its compliance states.
  void Apply(const std::string& consumer, const Decisions& d);
  void Clear() {
    kv_.clear();
    compliance_.clear();
  }

  Result<std::optional<store::Enrollment>> Device(const std::string& id) override {
    return base_->Device(id);
  }
  Result<std::optional<store::CommandResult>> LastResult(const std::string& id,
                                                         const std::string& rt) override {
    return base_->LastResult(id, rt);
  }
  Result<std::optional<std::string>> RenewalProfile(const std::string& id) override {
    return base_->RenewalProfile(id);
  }
  Result<std::optional<std::string>> KvGet(const std::string& ns, const std::string& key) override;
  Result<KvPairs> KvScan(const std::string& ns, const std::string& prefix, const std::string& after,
                         size_t limit) override;
  Result<std::optional<ComplianceState>> Compliance(const std::string& policy,
                                                    const std::string& id) override;

 private:
  HostReader* base_;
  std::map<std::pair<std::string, std::string>, std::optional<std::string>> kv_;  // (ns, key)
  std::map<std::pair<std::string, std::string>, ComplianceState> compliance_;     // (policy, id)
};

// Merges pending writes (sorted by key, nullopt = deleted) into a base scan
// result: the shared logic of every overlay scan.
KvPairs MergeScan(KvPairs base, const std::vector<std::pair<std::string, std::optional<std::string>>>& pending,
                  const std::string& prefix, const std::string& after, size_t limit);

// An in-memory host: the policy test harness and unit tests. Thread-safe.
class MemoryHost : public HostReader, public KvWriter {
 public:
  void PutDevice(store::Enrollment e);
  void PutResult(const std::string& enrollment_id, store::CommandResult r);
  // Applies committed decisions of a consumer.
  void Commit(const std::string& consumer, const Decisions& d);
  // What RenewalProfile answers for every device (unset: Unavailable).
  void SetRenewalProfile(std::string bytes);
  Result<std::optional<std::string>> RenewalProfile(const std::string& id) override;
  Status KvWriteNow(const std::string& ns, const std::vector<KvWrite>& writes) override;

  Result<std::optional<store::Enrollment>> Device(const std::string& id) override;
  Result<std::optional<store::CommandResult>> LastResult(const std::string& id,
                                                         const std::string& rt) override;
  Result<std::optional<std::string>> KvGet(const std::string& ns, const std::string& key) override;
  Result<KvPairs> KvScan(const std::string& ns, const std::string& prefix, const std::string& after,
                         size_t limit) override;
  Result<std::optional<ComplianceState>> Compliance(const std::string& policy,
                                                    const std::string& id) override;

 private:
  std::mutex mu_;
  std::map<std::string, store::Enrollment> devices_;
  std::map<std::pair<std::string, std::string>, store::CommandResult> results_;  // (id, request type)
  std::map<std::pair<std::string, std::string>, std::string> kv_;
  std::map<std::pair<std::string, std::string>, ComplianceState> compliance_;
  std::optional<std::string> renewal_profile_;
};

// What handlers see of a device and of a command result (Lua tables for
// policies, JSON for plugins): the enrollment without its secrets (push
// magic, tokens only as has_* flags), times in seconds since the epoch; a
// result with its parsed report as "response".
plist::Value DeviceValue(const store::Enrollment& e);
plist::Value ResultValue(const store::CommandResult& r);

}  // namespace orchard::automation
