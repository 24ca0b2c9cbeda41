// The durable event stream (outbox).
//
// Every state change the core makes (a device check-in, a command result, an
// admin action) is written together with the typed event that describes it, in
// one RocksDB WriteBatch: either both land or neither does. Consumers (the Lua
// policy engine, plugins, webhooks) read events in sequence order and store a
// checkpoint; after a crash they resume from it, so delivery is at-least-once.
//
// Sequence numbers are unique and increasing. Because concurrent transactions
// may commit out of order, readers only see events up to the committed
// watermark: the highest sequence below which every reserved sequence has been
// committed or abandoned. So a consumer never checkpoints past a hole that a
// slower writer is about to fill.
//
// Thread-safety: EventLog and its methods are safe for concurrent use.
// Transaction is single-threaded. EventLog borrows the Store (must outlive it).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "orchard/events.h"
#include "store/store.h"
#include "util/status.h"

namespace orchard::events {

// Event type names (stable strings; consumers match on them). The catalogue
// is the public C header <orchard/events.h> (plugins include it); these are
// its names for C++, and docs/events.md describes each event.
namespace type {
inline constexpr const char* kEnrollmentAuthenticated = ORCHARD_EVENT_ENROLLMENT_AUTHENTICATED;
inline constexpr const char* kEnrollmentEnrolled = ORCHARD_EVENT_ENROLLMENT_ENROLLED;
inline constexpr const char* kEnrollmentTokenUpdated = ORCHARD_EVENT_ENROLLMENT_TOKEN_UPDATED;
inline constexpr const char* kEnrollmentCheckedOut = ORCHARD_EVENT_ENROLLMENT_CHECKED_OUT;
inline constexpr const char* kEnrollmentBlocked = ORCHARD_EVENT_ENROLLMENT_BLOCKED;
inline constexpr const char* kEnrollmentUnblocked = ORCHARD_EVENT_ENROLLMENT_UNBLOCKED;
inline constexpr const char* kBootstrapTokenSet = ORCHARD_EVENT_BOOTSTRAP_TOKEN_SET;
inline constexpr const char* kEnrollmentReenroll = ORCHARD_EVENT_ENROLLMENT_REENROLL;
inline constexpr const char* kCommandEnqueued = ORCHARD_EVENT_COMMAND_ENQUEUED;
inline constexpr const char* kCommandDeleted = ORCHARD_EVENT_COMMAND_DELETED;
inline constexpr const char* kQueueCleared = ORCHARD_EVENT_QUEUE_CLEARED;
inline constexpr const char* kCommandAcknowledged = ORCHARD_EVENT_COMMAND_ACKNOWLEDGED;
inline constexpr const char* kCommandError = ORCHARD_EVENT_COMMAND_ERROR;
inline constexpr const char* kCommandNotNow = ORCHARD_EVENT_COMMAND_NOT_NOW;
inline constexpr const char* kCommandFormatError = ORCHARD_EVENT_COMMAND_FORMAT_ERROR;
inline constexpr const char* kCommandFailed = ORCHARD_EVENT_COMMAND_FAILED;
inline constexpr const char* kDeviceIdle = ORCHARD_EVENT_DEVICE_IDLE;
inline constexpr const char* kDeviceSilent = ORCHARD_EVENT_DEVICE_SILENT;
inline constexpr const char* kCertificateExpiring = ORCHARD_EVENT_CERTIFICATE_EXPIRING;
inline constexpr const char* kScheduleTick = ORCHARD_EVENT_SCHEDULE_TICK;
inline constexpr const char* kPolicyRun = ORCHARD_EVENT_POLICY_RUN;
inline constexpr const char* kDdmStatusChanged = ORCHARD_EVENT_DDM_STATUS_CHANGED;
inline constexpr const char* kDdmDeclarationStatus = ORCHARD_EVENT_DDM_DECLARATION_STATUS;
inline constexpr const char* kDdmStatusError = ORCHARD_EVENT_DDM_STATUS_ERROR;
inline constexpr const char* kDdmCapabilitiesChanged = ORCHARD_EVENT_DDM_CAPABILITIES_CHANGED;
inline constexpr const char* kDdmSynced = ORCHARD_EVENT_DDM_SYNCED;
}  // namespace type

// Whether anyone consumes events of a type. Writers of high-volume events
// (device.idle) ask before emitting them, so an event nobody subscribes to
// costs nothing. Implementations are thread-safe and answer fast.
class Interest {
 public:
  virtual ~Interest() = default;
  virtual bool Wanted(std::string_view type) const = 0;
};

struct Event {
  uint64_t seq = 0;  // assigned by Transaction::Emit
  std::string type;
  int64_t time_ms = 0;
  std::string enrollment_id;
  std::string command_uuid;
  std::string request_type;
  // Event-specific data as JSON (the plist JSON mapping: <data> is {"$data": b64}).
  // For command events this is the parsed device report; secrets are removed.
  std::string payload_json;

  std::string Encode() const;
  static Result<Event> Decode(uint64_t seq, std::string_view bytes);
};

class EventLog;

// Collects the writes and events of one state change; commit with EventLog::Commit.
// Dropping an uncommitted Transaction abandons it (nothing is written).
// Sequence numbers are assigned at commit, so a transaction that takes long
// between its first Emit and its commit holds no reader back.
class Transaction {
 public:
  explicit Transaction(EventLog* log) : log_(log) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  store::Batch& batch() { return batch_; }
  // Adds the event (time defaults to now); its sequence is assigned at commit.
  void Emit(Event event);
  size_t pending_events() const { return events_.size(); }
  // After a successful commit: the sequences assigned, in Emit order.
  const std::vector<uint64_t>& sequences() const { return seqs_; }

 private:
  friend class EventLog;
  EventLog* log_;
  store::Batch batch_;
  std::vector<Event> events_;
  std::vector<uint64_t> seqs_;
};

class EventLog {
 public:
  // Recovers the next sequence number from the store.
  static Result<std::unique_ptr<EventLog>> Open(store::Store* store);

  // Writes the transaction's batch; on success its events become visible to
  // readers (once earlier reservations settle). On failure nothing is written.
  Status Commit(Transaction& txn);

  // Up to `limit` committed events with seq > after, in order.
  Result<std::vector<Event>> Read(uint64_t after, size_t limit);
  // Blocks until an event with seq > after is committed or the timeout passes.
  // Returns true if one is available.
  bool WaitFor(uint64_t after, std::chrono::milliseconds timeout);
  uint64_t Watermark();

  // A consumer is registered by its first checkpoint. Every registered
  // consumer's checkpoint holds back pruning, so a consumer that is gone for
  // good must be unregistered (or its events are kept forever).
  Status SetCheckpoint(const std::string& consumer, uint64_t seq);
  Result<uint64_t> GetCheckpoint(const std::string& consumer);
  // Removes the consumer's checkpoint; false if it had none.
  Result<bool> UnregisterConsumer(const std::string& consumer);
  struct Consumer {
    std::string name;
    uint64_t checkpoint = 0;
  };
  // Registered consumers in name order, at most limit.
  Result<std::vector<Consumer>> ListConsumers(size_t limit);

  // Deletes every event older than min_age_ms whose seq is at or below every
  // registered consumer's checkpoint, batch_size events per write (each batch
  // one range deletion), until none is left or keep_going (if given) returns
  // false between batches. Returns the number removed. Call from one thread.
  Result<uint64_t> Prune(int64_t min_age_ms, size_t batch_size = 10000,
                         const std::function<bool()>& keep_going = nullptr);

  // Lane checkpoints of the automation host: (consumer, partition, lane) ->
  // (seq, epoch), written in the batch that carries the lane's decisions.
  // They hold back pruning like SetCheckpoint's, and UnregisterConsumer
  // removes them with the consumer.
  struct LaneCheckpoint {
    uint64_t seq = 0;
    uint64_t epoch = 0;
  };
  static void PutLaneCheckpoint(store::Batch& batch, const std::string& consumer, uint32_t partition,
                                int lane, const LaneCheckpoint& cp);
  Result<std::map<int, LaneCheckpoint>> LaneCheckpoints(const std::string& consumer, uint32_t partition);
  // The number of partitions (one on RocksDB) and the committed head of one.
  uint32_t partitions() const { return 1; }

 private:
  explicit EventLog(store::Store* store, uint64_t next) : store_(store), next_(next) {}
  store::Store* store_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_;                  // next sequence to hand out
  std::set<uint64_t> in_flight_;   // reserved, not yet committed/abandoned
  uint64_t pruned_below_ = 0;      // every event below this seq has been pruned
};

std::string EventKey(uint64_t seq);

}  // namespace orchard::events
