// Store: Orchard's embedded RocksDB, one column family per kind of record.
//
// All durable state lives here: enrollments, certificate bindings, command
// queues, results, the event outbox, counters and small key/value settings.
// Callers group every change caused by one request into a WriteBatch and commit
// it with Write(), so state and the events it causes land atomically (column
// families share one WAL). With sync=false a committed batch survives kill -9
// (it is in the OS page cache) but not power loss; sync=true survives both.
//
// Faults are never silent: every RocksDB error the store sees (reads, writes,
// iteration, background flushes and compactions) is classified, counted and
// logged, and health() says whether writes currently work. RocksDB's own info
// log goes to Orchard's logger (no LOG file in the data directory).
//
// Thread-safety: Store is safe for concurrent use. Batch is not (one per request).
// Ownership: Store owns the DB; iterators must not outlive it.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace rocksdb {
class Env;
}

namespace orchard::store {

enum class Cf : int {
  kMeta = 0,      // settings, consumer checkpoints, push certificates, high-water marks
  kEnrollments,   // enrollment id -> Enrollment record
  kCertBindings,  // cert sha256 hex -> enrollment id
  kSerials,       // serial '\0' enrollment id -> "" (search index)
  kQueue,         // enrollment id '\0' priority byte seq(8) -> QueueEntry
  kQueueIndex,    // enrollment id '\0' command uuid -> priority byte seq(8)
  kResults,       // enrollment id '\0' command uuid -> CommandResult
  kResultsByTime, // finished ms(8) enrollment id '\0' command uuid -> "" (retention sweep)
  kEvents,        // seq(8) -> Event
  kCounters,      // name -> int64 (little-endian), updated with Merge (atomic add)
  kPushState,     // enrollment id -> PushState
  kResultsByEnrollment,  // enrollment id '\0' ~received ms(8) command uuid -> CommandResult
                         // without raw (newest-first listing)
  kLatestResults,  // enrollment id '\0' request type -> command uuid of its newest result
  kAutomation,     // automation host state: consumer key-value stores, compliance, decision
                   // records, parked events, policy flags, schedules, event markers
                   // (key layout: docs/architecture.md)
  kEnroll,         // device CA: issued certificates (by sha256, serial and udid indexes) and
                   // one-time SCEP challenges (by hash); key layout in core/enroll/issued.h
  kDdm,            // declarative device management: declarations, sets, assignments and
                   // each enrollment's DeclarationsToken; key layout in core/ddm/declarations.h
  kCount
};
const char* CfName(Cf cf);

// What to do when the write-ahead log is damaged at start-up.
enum class WalRecovery {
  // Refuse to open, naming the path and what to do. Only an incomplete final
  // record (a write cut short by a crash or kill -9, never acknowledged) is
  // dropped, with a warning.
  kStrict,
  // Keep everything before the first damaged record and discard everything
  // after it (acknowledged writes included), with a warning. An operator's
  // explicit choice after reading docs/operations.md.
  kPointInTime,
};
// "strict" | "point_in_time"; nullopt for anything else.
std::optional<WalRecovery> ParseWalRecovery(std::string_view name);
const char* WalRecoveryName(WalRecovery mode);

struct Options {
  std::string path;
  bool sync = false;               // fsync every write (power-loss durability)
  size_t block_cache_bytes = 64 << 20;
  size_t write_buffer_budget = 128 << 20;  // all memtables together
  WalRecovery wal_recovery = WalRecovery::kStrict;
  // Test hook: the RocksDB environment to run on (e.g. one whose file system
  // injects faults). Borrowed; must outlive the Store. nullptr: the default.
  rocksdb::Env* env = nullptr;
};

// Classes of storage error, for counting and health.
enum class ErrorKind { kCorruption = 0, kNoSpace, kIo, kOther };
inline constexpr size_t kErrorKinds = 4;
// "corruption" | "no_space" | "io" | "other" (metric label values).
const char* ErrorKindName(ErrorKind kind);

// A snapshot of the store's health (cheap: a few atomics and a short lock).
struct Health {
  // False while writes fail: a background error stopped them (e.g. the disk is
  // full; RocksDB retries by itself) or the last write failed.
  bool writable = true;
  // A corruption was seen since the store opened (stays set until restart:
  // the data is damaged and an operator has to look).
  bool corrupt = false;
  // RocksDB reported a background error that has not cleared yet: one that
  // stops writes, or a soft one (e.g. no space for a compaction) that stops
  // flushes and compactions only, and soon writes.
  bool background_error = false;
  std::string reason;  // why unhealthy; empty when healthy
  std::array<uint64_t, kErrorKinds> errors{};  // RocksDB errors since open, by ErrorKind
  bool healthy() const { return writable && !corrupt && !background_error; }
};

class Batch {
 public:
  struct Op {
    enum Kind { kPut, kDelete, kMerge, kDeleteRange } kind;
    Cf cf;
    std::string key, value;  // for kDeleteRange, value is the exclusive upper key
  };
  void Put(Cf cf, std::string_view key, std::string_view value) {
    ops_.push_back({Op::kPut, cf, std::string(key), std::string(value)});
  }
  void Delete(Cf cf, std::string_view key) { ops_.push_back({Op::kDelete, cf, std::string(key), {}}); }
  // Deletes [lower, upper) with one range tombstone.
  void DeleteRange(Cf cf, std::string_view lower, std::string_view upper) {
    ops_.push_back({Op::kDeleteRange, cf, std::string(lower), std::string(upper)});
  }
  // Adds delta to a counter (Cf::kCounters).
  void AddCounter(std::string_view name, int64_t delta);
  size_t Count() const { return ops_.size(); }
  bool empty() const { return ops_.empty(); }
  const std::vector<Op>& ops() const { return ops_; }
  void Clear() {
    ops_.clear();
    ++generation_;
  }
  // Bumped by Clear: ops only ever grow within one generation (what a reader
  // indexing the batch incrementally relies on).
  uint64_t generation() const { return generation_; }

 private:
  std::vector<Op> ops_;
  uint64_t generation_ = 0;
};

// Forward-only iterator over [lower, upper) of one column family.
class Iterator {
 public:
  virtual ~Iterator() = default;
  virtual bool Valid() const = 0;
  virtual void Next() = 0;
  virtual std::string_view key() const = 0;
  virtual std::string_view value() const = 0;
  // Non-Ok when iteration stopped on an I/O error rather than the end.
  virtual Status status() const = 0;
};

class Store {
 public:
  // Opens (creating if missing) the database at options.path. A DB locked by
  // another process or a damaged one returns an Io status naming the path and
  // what to do (see WalRecovery for a damaged write-ahead log).
  static Result<std::unique_ptr<Store>> Open(const Options& options);
  virtual ~Store() = default;

  // Errors: Io (corruption and I/O failures; logged and counted here), or
  // ResourceExhausted when the disk is full (a retry after space returns works).
  virtual Result<std::optional<std::string>> Get(Cf cf, std::string_view key) = 0;
  virtual Status Write(Batch& batch) = 0;
  // Iterates keys k with lower <= k < upper (upper empty = to the end of the CF).
  virtual std::unique_ptr<Iterator> Scan(Cf cf, std::string_view lower, std::string_view upper) = 0;
  // The last key in the column family, if any.
  virtual Result<std::optional<std::string>> LastKey(Cf cf) = 0;
  virtual Result<int64_t> GetCounter(std::string_view name) = 0;
  virtual const std::string& path() const = 0;
  virtual Health health() const = 0;
};

// Smallest string greater than every string that starts with prefix
// (prefix with its last byte incremented; empty if none exists).
std::string PrefixEnd(std::string_view prefix);

}  // namespace orchard::store
