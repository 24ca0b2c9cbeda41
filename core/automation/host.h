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
#include "domain/tx.h"
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
  // The latest value a device reported over DDM for a status item (dotted
  // name, e.g. "device.operating-system.version"); nullopt when never reported.
  virtual Result<std::optional<plist::Value>> DdmStatus(const std::string& enrollment_id, const std::string& item) {
    return Status::Unavailable("Declarative Device Management is not available here");
  }
  // A declaration's reported status {identifier, kind, server_token, active,
  // valid, reasons, current}; nullopt when the device never reported it.
  virtual Result<std::optional<plist::Value>> DdmDeclarationStatus(const std::string& enrollment_id,
                                                                   const std::string& identifier) {
    return Status::Unavailable("Declarative Device Management is not available here");
  }
};

// DDM writes staged for one commit (DdmHost::Stage): holds the DDM write lock
// until destroyed, so nothing else changes the declaration store between the
// staging and the commit.
class DdmStaged {
 public:
  virtual ~DdmStaged() = default;
  // The enrollments whose sync commands Write queues: the caller must hold
  // their locks in the transaction (together with its own).
  virtual const std::vector<std::string>& enrollments() const = 0;
  // Puts the staged store writes, the token records and a sync command for
  // every changed enrolled enrollment into tx's batch.
  virtual Status Write(domain::Tx& tx, int64_t now_ms) = 0;
  // After the commit: pushes the enrollments that got a sync command.
  virtual void Wake() = 0;
};

// Declarative Device Management for handlers (the ddm module implements it).
class DdmHost {
 public:
  virtual ~DdmHost() = default;
  virtual Result<std::optional<plist::Value>> Status(const std::string& enrollment_id, const std::string& item) = 0;
  virtual Result<std::optional<plist::Value>> DeclarationStatus(const std::string& enrollment_id,
                                                                const std::string& identifier) = 0;
  // Applies ops in order, each seeing the ones before it, owned by owner
  // ("policy:<name>", "plugin:<name>"). outcomes[i] is empty when op i was
  // applied (or changed nothing), else why it was refused (an invalid
  // declaration, a set op on a declaration that does not exist): a refused
  // op is skipped, the others stand. Errors: storage failures only.
  virtual Result<std::unique_ptr<DdmStaged>> Stage(const std::vector<const DdmOp*>& ops, const std::string& owner,
                                                   int64_t now_ms, std::vector<std::string>* outcomes) = 0;
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
  Result<std::optional<plist::Value>> DdmStatus(const std::string& id, const std::string& item) override {
    return base_->DdmStatus(id, item);
  }
  Result<std::optional<plist::Value>> DdmDeclarationStatus(const std::string& id, const std::string& decl) override {
    return base_->DdmDeclarationStatus(id, decl);
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
  // DDM status as a device reported it (the harness feeds ddm.* events here).
  void PutDdmStatus(const std::string& id, const std::string& item, std::optional<plist::Value> value);
  void PutDdmDeclarationStatus(const std::string& id, const std::string& identifier,
                               std::optional<plist::Value> status);
  Result<std::optional<plist::Value>> DdmStatus(const std::string& id, const std::string& item) override;
  Result<std::optional<plist::Value>> DdmDeclarationStatus(const std::string& id, const std::string& decl) override;
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
  std::map<std::pair<std::string, std::string>, plist::Value> ddm_status_;        // (id, item)
  std::map<std::pair<std::string, std::string>, plist::Value> ddm_declarations_;  // (id, identifier)
};

// What handlers see of a device and of a command result (Lua tables for
// policies, JSON for plugins): the enrollment without its secrets (push
// magic, tokens only as has_* flags), times in seconds since the epoch; a
// result with its parsed report as "response".
plist::Value DeviceValue(const store::Enrollment& e);
plist::Value ResultValue(const store::CommandResult& r);

}  // namespace orchard::automation
