// Per-enrollment durable command queues and command results.
//
// Keys: queue entries sort by (enrollment, priority descending, sequence), so a
// queue is FIFO within a priority. Finished commands leave the queue and their
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
  std::string origin = "api";
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
  // CommandUUID is already queued for the enrollment.
  Status Enqueue(store::Batch& batch, const std::string& enrollment_id, const NewCommand& cmd,
                 int64_t now_ms);
  // The next command to hand out; NotNow entries are skipped when
  // skip_not_now (i.e. within the session in which the device said NotNow).
  // exclude_key names an entry the caller is finishing in its uncommitted batch.
  Result<std::optional<Located>> Next(const std::string& enrollment_id, bool skip_not_now,
                                      const std::string& exclude_key = {});
  Result<std::optional<Located>> Find(const std::string& enrollment_id, const std::string& uuid);
  // Updates an entry in place (e.g. NotNow status).
  void Update(store::Batch& batch, const std::string& enrollment_id, const Located& loc);
  // Records that the entry was handed to the device now. Kept in the small
  // index value, not the entry, so a delivery does not rewrite the command.
  void MarkSent(store::Batch& batch, const std::string& enrollment_id, const Located& loc,
                int64_t now_ms);
  // Removes an entry from the queue.
  void Remove(store::Batch& batch, const std::string& enrollment_id, const Located& loc);
  // Lists up to limit queued entries in delivery order.
  Result<std::vector<store::QueueEntry>> List(const std::string& enrollment_id, size_t limit);
  // Number of queued entries of the enrollment (scans its index keys only).
  Result<uint64_t> Count(const std::string& enrollment_id);
  // Removes every queued entry of the enrollment; returns how many.
  Result<uint64_t> Clear(store::Batch& batch, const std::string& enrollment_id);

  // Results.
  void PutResult(store::Batch& batch, const std::string& enrollment_id,
                 const store::CommandResult& result);
  Result<std::optional<store::CommandResult>> GetResult(const std::string& enrollment_id,
                                                        const std::string& uuid);
  // The newest `limit` results of the enrollment, newest first, without the raw
  // reports (GetResult has them).
  Result<std::vector<store::CommandResult>> ListResults(const std::string& enrollment_id,
                                                        size_t limit);
  // Deletes every result received before cutoff_ms, batch_size index entries
  // per write, until none is left or keep_going (if given) returns false
  // between batches. Returns the number of index entries swept. Call from one
  // thread at a time.
  Result<uint64_t> SweepResults(int64_t cutoff_ms, size_t batch_size = 10000,
                                const std::function<bool()>& keep_going = nullptr);

  // Total queued commands across all enrollments (a counter, O(1)).
  Result<int64_t> Depth();

  static constexpr const char* kDepthCounter = "queue.depth";

 private:
  std::string NextSeqKey(int priority);
  void LowerHint(const std::string& enrollment_id, const std::string& key);

  store::Store* store_;
  std::atomic<uint64_t> seq_;
  std::atomic<uint64_t> lease_end_;
  std::mutex lease_mu_;
  std::mutex hint_mu_;
  std::unordered_map<std::string, std::string> head_hint_;  // enrollment id -> first live key
};

}  // namespace orchard::queue
