// A domain transaction: the enrollments it locks (held until it ends), the
// writes bound to it (a store batch the repositories write into) and the
// events it emits, committed atomically.
//
// The boundary every writer uses (device service, admin API, automation
// host): lock -> read -> change -> emit -> commit. Locking is by enrollment,
// not by storage key, so a PostgreSQL backend can take row locks instead of
// stripes (docs/architecture.md). Event sequences are assigned at commit.
//
// Usage: Lock() one enrollment, or LockAll() several (stripes taken in
// ascending order: deadlock-free against other LockAll and single locks);
// not both, and only before the first read. Thread-compatible (one per
// request); borrows locks and the event log.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "domain/enrollments.h"
#include "events/events.h"
#include "util/status.h"

namespace orchard::domain {

class Tx {
 public:
  Tx(EnrollmentLocks* locks, events::EventLog* log) : locks_(locks), log_(log), txn_(log) {}
  ~Tx() { Unlock(); }
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;

  // Locks one enrollment until the transaction ends.
  void Lock(const std::string& enrollment_id);
  // Locks several enrollments (any order, duplicates allowed) until it ends.
  void LockAll(const std::vector<std::string>& enrollment_ids);

  store::Batch& batch() { return txn_.batch(); }
  void Emit(events::Event event) { txn_.Emit(std::move(event)); }
  // Writes everything atomically; the locks are released afterwards either way.
  Status Commit();
  // The sequences of the emitted events (after a successful Commit).
  const std::vector<uint64_t>& sequences() const { return txn_.sequences(); }

 private:
  void Unlock();
  EnrollmentLocks* locks_;
  events::EventLog* log_;
  events::Transaction txn_;
  std::vector<size_t> held_;  // stripes, ascending
};

}  // namespace orchard::domain
