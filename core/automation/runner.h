// The automation host's runner: delivers the durable event stream to every
// registered consumer (a Lua policy, a plugin), at least once, in order per
// device, in parallel across devices.
//
// Per consumer: one reader thread tails the event log from the consumer's
// checkpoints and hands each event it wants to one of the consumer's lanes
// (lane = hash of the device channel id, so a device's events stay in order);
// each lane has a thread, a bounded queue (a full queue stops the reader:
// backpressure) and its own checkpoint per (consumer, partition, lane). A lane
// handles a few events, then commits their decisions together with its
// checkpoint in one transaction (Committer): a crash replays only events whose
// effects were not written, and CommandUUIDs derived from the event make a
// replay harmless anyway. Runs that decide nothing only move the checkpoint,
// which is written at most every commit_interval_ms.
//
// A run that fails is retried; after max_attempts failures the event is
// parked (recorded with its error, visible to admins) and the lane moves on.
// A host failure (storage) is not the event's fault: it is retried with
// backoff and never parks the event. Every thread catches at its top.
//
// Multi-node ready: checkpoints are per (consumer, partition, lane) and saved
// with the lease epoch under which the lane runs (Committer checks it).
//
// Thread-safety: all public methods are safe for concurrent use.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "automation/decisions.h"
#include "automation/host.h"
#include "events/events.h"
#include "util/status.h"

namespace orchard::automation {

// An opaque position in the event stream: (partition, sequence). One
// partition on RocksDB; the text form is "<partition>.<seq>".
struct Cursor {
  uint32_t partition = 0;
  uint64_t seq = 0;
  std::string ToString() const;
  static std::optional<Cursor> Parse(std::string_view text);
  bool operator==(const Cursor&) const = default;
};

// Where events come from (the event log).
class EventSource {
 public:
  virtual ~EventSource() = default;
  virtual uint32_t partitions() const { return 1; }
  // Up to limit committed events of the partition with seq > after, in order.
  virtual Result<std::vector<events::Event>> Read(uint32_t partition, uint64_t after, size_t limit) = 0;
  // Waits until an event after `after` is committed or the timeout passes.
  virtual bool WaitFor(uint32_t partition, uint64_t after, std::chrono::milliseconds timeout) = 0;
  // The highest committed sequence of the partition (its watermark).
  virtual uint64_t Head(uint32_t partition) = 0;
};

// The outcome of one handler run, as the host records and applies it.
struct RunRecord {
  events::Event event;  // the trigger (payload not needed again)
  Decisions decisions;  // applied unless dry_run or parked
  RunOutcome outcome;   // failed runs are recorded only when parked
  int attempts = 1;
  bool dry_run = false;
  bool parked = false;
};

struct LaneKey {
  std::string consumer;
  uint32_t partition = 0;
  int lane = 0;
};

struct SavedCheckpoint {
  uint64_t seq = 0;
  uint64_t epoch = 0;
};

// Applies a lane's runs and its new checkpoint in one transaction; records
// dry-run and parked runs instead of applying them. On failure nothing is
// written (the runner retries). Thread-safe.
class Committer {
 public:
  virtual ~Committer() = default;
  virtual Status Commit(const LaneKey& lane, uint64_t checkpoint_seq, uint64_t epoch,
                        std::vector<RunRecord>& runs) = 0;
  // Every saved lane checkpoint of (consumer, partition), by lane.
  virtual Result<std::map<int, SavedCheckpoint>> LoadCheckpoints(const std::string& consumer,
                                                                 uint32_t partition) = 0;
  // Removes every checkpoint of the consumer (it stops pinning event pruning).
  virtual Status DropCheckpoints(const std::string& consumer) = 0;
  // The reader for runs (committed state).
  virtual HostReader* reader() = 0;
};

// One consumer of events (a policy, a plugin).
class Consumer {
 public:
  virtual ~Consumer() = default;
  virtual const std::string& name() const = 0;
  virtual int lanes() const { return 2; }
  // Cheap filter on the event's type and request type.
  virtual bool Wants(const events::Event& event) const = 0;
  // Whether events of this type may interest it at all (for high-volume
  // types that are only written while someone wants them). Conservative.
  virtual bool WantsType(std::string_view type) const { return true; }
  // Handles one event on a lane (never called concurrently for one lane).
  // trigger is the event's cursor text. Fills *out; dry-run consumers set
  // *dry_run so the host records instead of applying.
  virtual RunOutcome Handle(int lane, const events::Event& event, const std::string& trigger,
                            HostReader* reader, Decisions* out, bool* dry_run) = 0;
  // New events start here when the consumer has no checkpoint yet:
  // true = only events after registration, false = from the oldest kept.
  virtual bool StartAtHead() const { return true; }
};

struct RunnerOptions {
  size_t read_batch = 512;            // events per read
  size_t lane_queue = 4096;           // events a lane may have waiting (backpressure)
  size_t commit_batch = 256;          // runs per lane transaction at most
  int64_t commit_interval_ms = 200;   // checkpoint-only commits at most this often
  int max_attempts = 3;               // failures before an event is parked
  int64_t host_retry_ms = 200;        // first backoff after a host failure (doubles, max 10 s)
  int64_t poll_ms = 500;              // reader wait per poll
  // After a short read, the reader lets events gather this long before it
  // reads again: at most one read and one wake-up per lane per linger instead
  // of one per event (on a busy 2-core machine wake-ups cost more than a
  // trivial handler). Adds at most this much latency; 0 = read as soon as
  // anything is committed.
  int64_t read_linger_us = 250;
};

struct ConsumerStatus {
  std::string name;
  int lanes = 0;
  std::string checkpoint;       // lowest lane checkpoint (cursor text)
  std::string read;             // reader position (cursor text)
  int64_t lag_ms = 0;           // age of the oldest event not yet committed (0: caught up)
  uint64_t pending = 0;         // events waiting in lanes
  uint64_t handled = 0;         // runs since start
  uint64_t failed = 0;          // failed runs since start (retried or parked)
  uint64_t parked = 0;          // events parked since start
  uint64_t commits = 0;
  std::string last_error;
  bool running = false;
};

class Runner : public events::Interest {
 public:
  // Borrows source and committer (they must outlive the runner).
  Runner(const RunnerOptions& options, EventSource* source, Committer* committer);
  ~Runner();

  // Starts delivering to the consumer; AlreadyExists if the name is taken.
  Status Register(std::shared_ptr<Consumer> consumer);
  // Stops it (finishing the runs in progress); drop_checkpoints also removes
  // its checkpoints so they no longer pin pruning.
  Status Unregister(const std::string& name, bool drop_checkpoints);
  std::vector<ConsumerStatus> Statuses();
  // Waits until every registered consumer has committed every event up to
  // the source's current head (tests, benchmarks). False on timeout.
  bool WaitCaughtUp(std::chrono::milliseconds timeout);
  void Stop();

  // Which lane a device's events go to.
  static int LaneOf(const std::string& enrollment_id, int lanes);

  // events::Interest: device.idle is wanted while a running consumer wants it
  // (recomputed on Register/Unregister and RefreshInterest); any other type is.
  bool Wanted(std::string_view type) const override;
  // Consumers' interests changed (e.g. a policy was reloaded or disabled).
  void RefreshInterest();

 private:
  struct Lane;
  struct Running;
  void ReaderLoop(Running* r);
  void LaneLoop(Running* r, Lane* lane);
  // Handles a batch (retrying and parking); false if stopping.
  bool RunBatch(Running* r, Lane* lane, std::vector<events::Event>& batch, std::vector<RunRecord>* runs);
  // Commits runs and the lane checkpoint, retrying with backoff; false if stopping.
  bool CommitWithRetry(Running* r, Lane* lane, uint64_t target, std::vector<RunRecord>& runs);
  // Waits *backoff_ms (doubling it, at most 10 s); false if stopping.
  bool Pause(Running* r, int64_t* backoff_ms);
  void Stop(Running* r);

  RunnerOptions options_;
  EventSource* source_;
  Committer* committer_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Running>> running_;
  std::atomic<bool> idle_wanted_{false};
};

}  // namespace orchard::automation
