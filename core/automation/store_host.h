// The automation host on Orchard's store: what handlers read (HostReader),
// how a lane's decisions are applied (Committer), consumer flags, decision
// records and parked events, and the event log as an EventSource.
//
// Applying a lane's runs is one domain transaction: the enrollments its
// commands are for are locked (sorted), every command goes through the one
// command path (domain::CommandService, so a replayed CommandUUID is refused as
// a duplicate and skipped), key-value and compliance writes, a decision record
// per run that decided something (dry runs: what they would have done), parked
// events, and the lane checkpoint (with its lease epoch) commit together; the
// pushes follow the commit.
//
// Keys (Cf::kAutomation; \0 separates, numbers big-endian):
//   kv \0 consumer \0 key                  -> value (plist JSON)
//   cs \0 consumer \0 enrollment id        -> ComplianceState
//   dl \0 consumer \0 partition(4) seq(8)  -> decision record (JSON)
//   pk \0 consumer \0 partition(4) seq(8)  -> parked event record (JSON)
//   fl \0 consumer                         -> flags (JSON)
// Compliance counters (Cf::kCounters): "compliance/<consumer>/<status>".
//
// Thread-safety: all classes are safe for concurrent use; they borrow the
// store and the domain services (which must outlive them).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "automation/host.h"
#include "automation/runner.h"
#include "automation/schedule.h"
#include "domain/commands.h"
#include "domain/enrollments.h"
#include "events/events.h"
#include "plist/plist.h"
#include "queue/queue.h"
#include "store/store.h"

namespace orchard::automation {

// A decision record or a parked event, as listed by the admin API.
struct RecordPage {
  std::vector<plist::Value> items;  // each with "cursor"
  std::string next_after;           // cursor text to continue after ("" at the end)
};

struct ComplianceEntry {
  std::string enrollment_id;
  ComplianceState state;
};

class AutomationStore : public HostReader, public FlagStore, public KvWriter {
 public:
  AutomationStore(store::Store* store, domain::Enrollments* enrollments, queue::CommandQueue* queue)
      : store_(store), enrollments_(enrollments), queue_(queue) {}


  // HostReader
  Result<std::optional<store::Enrollment>> Device(const std::string& id) override;
  Result<std::optional<store::CommandResult>> LastResult(const std::string& id, const std::string& rt) override;
  Result<std::optional<std::string>> KvGet(const std::string& ns, const std::string& key) override;
  Result<KvPairs> KvScan(const std::string& ns, const std::string& prefix, const std::string& after,
                         size_t limit) override;
  Result<std::optional<ComplianceState>> Compliance(const std::string& consumer, const std::string& id) override;
  Result<std::optional<std::string>> RenewalProfile(const std::string& id) override {
    if (renewals_ == nullptr) return Status::Unavailable("enrollment profiles are not configured");
    return renewals_->RenewalProfile(id);
  }
  // Where RenewalProfile comes from (borrowed; set once at start, before runs).
  void SetRenewalProfiles(RenewalProfiles* renewals) { renewals_ = renewals; }
  Result<std::optional<plist::Value>> DdmStatus(const std::string& id, const std::string& item) override {
    if (ddm_ == nullptr) return Status::Unavailable("Declarative Device Management is not configured");
    return ddm_->Status(id, item);
  }
  Result<std::optional<plist::Value>> DdmDeclarationStatus(const std::string& id, const std::string& decl) override {
    if (ddm_ == nullptr) return Status::Unavailable("Declarative Device Management is not configured");
    return ddm_->DeclarationStatus(id, decl);
  }
  // Where DDM reads and writes go (borrowed; set once at start, before runs).
  void SetDdm(DdmHost* ddm) { ddm_ = ddm; }
  DdmHost* ddm() const { return ddm_; }

  // KvWriter: one WriteBatch, synced as the store is configured.
  Status KvWriteNow(const std::string& ns, const std::vector<KvWrite>& writes) override;

  // FlagStore
  Result<std::optional<ConsumerFlags>> GetFlags(const std::string& consumer) override;
  Status PutFlags(const std::string& consumer, const ConsumerFlags& flags) override;

  // Decision records (kind "dl") or parked events ("pk") of a consumer, oldest
  // first, after a cursor; only those about enrollment_id if given. Scans at
  // most scan_budget records per call.
  Result<RecordPage> Records(const std::string& kind, const std::string& consumer, const std::string& enrollment_id,
                             const std::string& after, size_t limit, size_t scan_budget = 20000);
  // Compliance states of a consumer, in enrollment id order, after `after`;
  // only those in status when given.
  Result<std::vector<ComplianceEntry>> ComplianceList(const std::string& consumer,
                                                      const std::optional<ComplianceStatus>& status,
                                                      const std::string& after, size_t limit,
                                                      std::string* next_after, size_t scan_budget = 100000);
  // Devices per compliance status of a consumer (counters, O(1)).
  Result<std::map<std::string, int64_t>> ComplianceCounts(const std::string& consumer);
  // Deletes decision records and parked events older than cutoff_ms, in
  // batches, until none is left. Returns how many went.
  Result<uint64_t> PruneRecords(int64_t cutoff_ms, size_t batch_size = 10000);

  store::Store* store() const { return store_; }

  static std::string Key(std::string_view kind, std::string_view consumer, std::string_view rest);
  static std::string RecordKey(std::string_view kind, std::string_view consumer, uint32_t partition,
                               uint64_t seq);
  static std::string CounterName(const std::string& consumer, ComplianceStatus s);

 private:
  store::Store* store_;
  domain::Enrollments* enrollments_;
  queue::CommandQueue* queue_;
  RenewalProfiles* renewals_ = nullptr;
  DdmHost* ddm_ = nullptr;
};

struct CommitterDeps {
  AutomationStore* automation;
  events::EventLog* events;
  domain::CommandService* commands;
  domain::Enrollments* enrollments;
  domain::EnrollmentLocks* locks;
};

class StoreCommitter : public Committer {
 public:
  explicit StoreCommitter(const CommitterDeps& deps) : d_(deps) {}
  Status Commit(const LaneKey& lane, uint64_t checkpoint_seq, uint64_t epoch, std::vector<RunRecord>& runs) override;
  Result<std::map<int, SavedCheckpoint>> LoadCheckpoints(const std::string& consumer, uint32_t partition) override;
  Status DropCheckpoints(const std::string& consumer) override;
  HostReader* reader() override { return d_.automation; }

 private:
  CommitterDeps d_;
};

// The event log as the runner's source.
class LogSource : public EventSource {
 public:
  explicit LogSource(events::EventLog* log) : log_(log) {}
  uint32_t partitions() const override { return log_->partitions(); }
  Result<std::vector<events::Event>> Read(uint32_t, uint64_t after, size_t limit) override {
    return log_->Read(after, limit);
  }
  bool WaitFor(uint32_t, uint64_t after, std::chrono::milliseconds timeout) override {
    return log_->WaitFor(after, timeout);
  }
  uint64_t Head(uint32_t) override { return log_->Watermark(); }

 private:
  events::EventLog* log_;
};

}  // namespace orchard::automation
