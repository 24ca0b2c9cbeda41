// Per-enrollment durable command queues and command results.
//
// Keys: queue entries sort by (enrollment, priority descending, sequence), so a
// queue is FIFO within a priority. The index (enrollment, CommandUUID) holds the
// entry's key suffix, then its last delivery time and how many times it was
// delivered since the device last reported on it. Finished commands leave the queue and their
// result is stored (raw report + status + ErrorChain) with a time index that the
// retention sweep uses. Every write goes into a caller-supplied Batch so that it
// commits atomically with the enrollment change and the events it causes.
//
// Thread-safety: the object is safe for concurrent use, but operations on ONE
// enrollment's queue must be serialized by the caller (the protocol service and
// the admin API hold the enrollment's lock), because Next() keeps a per-queue
// head hint that lets it skip deleted entries (tombstones) in O(1).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "store/records.h"
#include "store/store.h"
#include "util/status.h"

namespace orchard::queue {

struct NewCommand {
  std::string command_uuid;
  std::string request_type;
  std::string plist;  // complete command plist ({CommandUUID, Command: {...}})
  int priority = 0;   // 0..255, higher first
  std::string origin = "api";  // "api", "policy:<name>", "plugin:<name>"
  std::string trigger;         // automation: the event cursor that decided it
  // The CommandUUID was just generated (NewUuid, 122 random bits) by the
  // caller: the checks that it is not queued or used already are skipped
  // (they cost two reads per command in a fan-out).
  bool fresh_uuid = false;
};

// A queue entry together with its key suffix (needed to update or remove it).
struct Located {
  std::string key;
  store::QueueEntry entry;
};

class CommandQueue {
 public:
  explicit CommandQueue(store::Store* store);

  // Adds the command to the enrollment's queue. AlreadyExists if that
  // CommandUUID is already queued for the enrollment; InvalidArgument for an
  // empty CommandUUID or one or a RequestType longer than the limits below.
  Status Enqueue(store::Batch& batch, const std::string& enrollment_id, const NewCommand& cmd,
                 int64_t now_ms);
  // The next command to hand out in the enrollment's command session `session`
  // (store::Enrollment::session): entries the device answered NotNow in that
  // same session are skipped; NotNow answers of earlier sessions are offered
  // again, in queue order. exclude_keys name entries the caller is finishing or
  // failing in its uncommitted batch. The entry's last_sent_ms and deliveries
  // are filled from the index (one point read, only when an entry is returned).
  Result<std::optional<Located>> Next(const std::string& enrollment_id, int64_t session,
                                      const std::vector<std::string>& exclude_keys = {});
  Result<std::optional<Located>> Find(const std::string& enrollment_id, const std::string& uuid);
  // Updates an entry in place (e.g. NotNow status).
  void Update(store::Batch& batch, const std::string& enrollment_id, const Located& loc);
  // Records that the entry was handed to the device now: the delivery time and
  // loc.entry.deliveries + 1 (so loc must come from Next or Find). Kept in the
  // small index value, not the entry, so a delivery does not rewrite the command.
  void MarkSent(store::Batch& batch, const std::string& enrollment_id, const Located& loc,
                int64_t now_ms);
  // Records that the device reported on the entry (a NotNow, which keeps it
  // queued): its count of unanswered deliveries starts again from zero.
  void MarkAnswered(store::Batch& batch, const std::string& enrollment_id, const Located& loc);
  // Removes an entry from the queue.
  void Remove(store::Batch& batch, const std::string& enrollment_id, const Located& loc);
  // Lists up to limit queued entries in delivery order.
  Result<std::vector<store::QueueEntry>> List(const std::string& enrollment_id, size_t limit);
  // A page of the queue in delivery order: up to limit entries whose position comes after
  // `after` (empty: from the head). An entry's position is QueuePosition(id, located.key);
  // it stays valid while the entry is queued and after it leaves. Reads at most limit entries.
  Result<std::vector<Located>> ListPage(const std::string& enrollment_id, std::string_view after,
                                        size_t limit);
  static std::string QueuePosition(const std::string& enrollment_id, const std::string& key);
  // Number of queued entries of the enrollment (scans its index keys only).
  Result<uint64_t> Count(const std::string& enrollment_id);
  // Removes every queued entry of the enrollment; returns how many.
  Result<uint64_t> Clear(store::Batch& batch, const std::string& enrollment_id);

  // Results.
  void PutResult(store::Batch& batch, const std::string& enrollment_id,
                 const store::CommandResult& result);
  Result<std::optional<store::CommandResult>> GetResult(const std::string& enrollment_id,
                                                        const std::string& uuid);
  // The newest result of a command of this RequestType (raw report included),
  // if it is still kept (Cf::kLatestResults points at it).
  Result<std::optional<store::CommandResult>> LatestResult(const std::string& enrollment_id,
                                                           const std::string& request_type);
  // The newest `limit` results of the enrollment, newest first, without the raw
  // reports (GetResult has them). With `after` (a ResultPosition from an earlier call),
  // the page continues after that result. Reads at most limit index entries
  // (Cf::kResultsByEnrollment), never the reports.
  Result<std::vector<store::CommandResult>> ListResults(const std::string& enrollment_id,
                                                        size_t limit, std::string_view after = {});
  // The listing position of a result (opaque bytes; for paging ListResults).
  static std::string ResultPosition(const store::CommandResult& result);
  // Writes the newest-first index for results stored before it existed; done once (a
  // marker in Cf::kMeta records it), in batches. Called by the constructor.
  Status BackfillResultIndex();
  // Deletes every result received before cutoff_ms, batch_size index entries
  // per write, until none is left or keep_going (if given) returns false
  // between batches. Returns the number of index entries swept. Call from one
  // thread at a time.
  Result<uint64_t> SweepResults(int64_t cutoff_ms, size_t batch_size = 10000,
                                const std::function<bool()>& keep_going = nullptr);

  // Total queued commands across all enrollments (a counter, O(1)).
  Result<int64_t> Depth();

  static constexpr const char* kDepthCounter = "queue.depth";
  static constexpr size_t kMaxCommandUuidBytes = 128;
  static constexpr size_t kMaxRequestTypeBytes = 128;

 private:
  Result<std::string> NextSeqKey(int priority);
  void LowerHint(const std::string& enrollment_id, const std::string& key);

  store::Store* store_;
  std::atomic<uint64_t> seq_;
  std::atomic<uint64_t> lease_end_;
  std::mutex lease_mu_;
  std::mutex hint_mu_;
  std::unordered_map<std::string, std::string> head_hint_;  // enrollment id -> first live key
};

}  // namespace orchard::queue
