#include "store/store.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/write_buffer_manager.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <vector>

#include "log/log.h"
#include "util/encoding.h"

namespace orchard::store {
namespace {

constexpr const char* kLog = "store";
constexpr const char* kCfNames[] = {"default",  "enrollments", "cert_bindings", "serials",
                                    "queue",    "queue_index", "results",       "results_by_time",
                                    "events",   "counters",    "push_state",  "results_by_enrollment",
                                    "latest_results", "automation", "enroll", "ddm"};
static_assert(sizeof(kCfNames) / sizeof(kCfNames[0]) == static_cast<size_t>(Cf::kCount));

std::string EncodeInt64(int64_t v) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &v, 8);
  return s;
}

int64_t DecodeInt64(const rocksdb::Slice& s) {
  if (s.size() != 8) return 0;
  int64_t v;
  std::memcpy(&v, s.data(), 8);
  return v;
}

// Counters: values are little-endian int64, merges add.
class AddOperator : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice&, const rocksdb::Slice* existing, const rocksdb::Slice& value,
             std::string* new_value, rocksdb::Logger*) const override {
    int64_t base = existing ? DecodeInt64(*existing) : 0;
    *new_value = EncodeInt64(base + DecodeInt64(value));
    return true;
  }
  const char* Name() const override { return "OrchardInt64Add"; }
};

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string m = std::string(what) + ": " + s.ToString();
  if (s.IsNoSpace()) return Status::ResourceExhausted(std::move(m));
  return Status::Io(std::move(m));
}

ErrorKind Classify(const rocksdb::Status& s) {
  if (s.IsCorruption()) return ErrorKind::kCorruption;
  if (s.IsNoSpace()) return ErrorKind::kNoSpace;
  if (s.IsIOError()) return ErrorKind::kIo;
  return ErrorKind::kOther;
}

const char* ReasonName(rocksdb::BackgroundErrorReason r) {
  switch (r) {
    case rocksdb::BackgroundErrorReason::kFlush: return "flush";
    case rocksdb::BackgroundErrorReason::kCompaction: return "compaction";
    case rocksdb::BackgroundErrorReason::kWriteCallback: return "write";
    case rocksdb::BackgroundErrorReason::kMemTable: return "memtable";
    case rocksdb::BackgroundErrorReason::kManifestWrite: return "manifest_write";
    case rocksdb::BackgroundErrorReason::kFlushNoWAL: return "flush_no_wal";
    case rocksdb::BackgroundErrorReason::kManifestWriteNoWAL: return "manifest_write_no_wal";
  }
  return "unknown";
}

// Log field values are quoted: keep quotes and line breaks out of them.
std::string Quoted(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '"') out.push_back('\'');
    else if (c == '\n' || c == '\r') out.push_back(' ');
    else out.push_back(c);
  }
  return out;
}

// Counts and logs every storage error and tracks whether writes work. Owned
// jointly by the store and the RocksDB event listener; iterators borrow it (they
// must not outlive the store anyway). Thread-safe.
class HealthTracker {
 public:
  // One failed RocksDB call (op names it for the log). NotFound is not an error.
  void RecordError(const rocksdb::Status& s, std::string_view op, bool is_write) {
    const ErrorKind kind = Classify(s);
    const size_t k = static_cast<size_t>(kind);
    errors_[k].fetch_add(1, std::memory_order_relaxed);
    uint64_t suppressed = 0;
    bool log_it = false;
    {
      std::lock_guard lock(mu_);
      if (kind == ErrorKind::kCorruption && corruption_.empty())
        corruption_ = std::string(op) + ": " + s.ToString();
      if (is_write && kind != ErrorKind::kOther) {
        write_error_ = s.ToString();
        write_failed_.store(true, std::memory_order_relaxed);
      }
      // At most one line per kind and second; the next line says how many were not logged.
      const int64_t now = NowMillis();
      if (now - last_log_ms_[k] >= 1000) {
        log_it = true;
        last_log_ms_[k] = now;
        suppressed = suppressed_[k];
        suppressed_[k] = 0;
      } else {
        ++suppressed_[k];
      }
    }
    if (log_it)
      log::Error(kLog, "event=store_error kind={} op=\"{}\" error=\"{}\" not_logged_since_last={}",
                 ErrorKindName(kind), op, Quoted(s.ToString()), suppressed);
  }

  void WriteSucceeded() {
    if (!write_failed_.load(std::memory_order_relaxed)) return;
    std::lock_guard lock(mu_);
    if (write_failed_.exchange(false)) log::Info(kLog, "event=writes_working_again");
  }

  void BackgroundError(rocksdb::BackgroundErrorReason reason, const rocksdb::Status& s) {
    const ErrorKind kind = Classify(s);
    errors_[static_cast<size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard lock(mu_);
      bg_error_ = std::string(ErrorKindName(kind)) + " during " + ReasonName(reason) + ": " +
                  s.ToString();
      // A soft error (e.g. no space for a compaction) stops background work only.
      bg_stops_writes_ = s.severity() >= rocksdb::Status::Severity::kHardError;
      if (kind == ErrorKind::kCorruption && corruption_.empty()) corruption_ = bg_error_;
    }
    log::Error(kLog,
               "event=store_background_error kind={} reason={} severity={} error=\"{}\" "
               "detail=\"{}\"",
               ErrorKindName(kind), ReasonName(reason), static_cast<int>(s.severity()),
               Quoted(s.ToString()),
               kind == ErrorKind::kNoSpace
                   ? "writes are refused until disk space is freed; RocksDB retries by itself"
                   : "writes are refused; fix the cause and restart orchardd");
  }

  void RecoveryEnded(const rocksdb::Status& old_error, const rocksdb::Status& new_error) {
    if (!new_error.ok()) {
      log::Error(kLog, "event=store_recovery_failed old_error=\"{}\" error=\"{}\"",
                 Quoted(old_error.ToString()), Quoted(new_error.ToString()));
      return;
    }
    {
      std::lock_guard lock(mu_);
      bg_error_.clear();
      write_failed_.store(false);  // the failures were the background error's
    }
    log::Info(kLog, "event=store_recovered old_error=\"{}\"", Quoted(old_error.ToString()));
  }

  Health Snapshot() const {
    Health h;
    for (size_t i = 0; i < kErrorKinds; ++i) h.errors[i] = errors_[i].load(std::memory_order_relaxed);
    std::lock_guard lock(mu_);
    h.corrupt = !corruption_.empty();
    h.background_error = !bg_error_.empty();
    h.writable = !(h.background_error && bg_stops_writes_) && !write_failed_.load();
    if (h.background_error)
      h.reason = std::string(bg_stops_writes_ ? "writes stopped by a background error ("
                                              : "background work stopped by an error (") +
                 bg_error_ + ")";
    else if (write_failed_.load())
      h.reason = "the last write failed (" + write_error_ + ")";
    if (h.corrupt) {
      if (!h.reason.empty()) h.reason += "; ";
      h.reason += "corruption detected (" + corruption_ +
                  "); see the log and docs/operations.md, \"Store faults\"";
    }
    return h;
  }

 private:
  std::array<std::atomic<uint64_t>, kErrorKinds> errors_{};
  std::atomic<bool> write_failed_{false};
  mutable std::mutex mu_;
  std::string write_error_;  // the last failed write's error
  std::string bg_error_;     // the active background error; empty: none
  bool bg_stops_writes_ = false;  // it is a hard (or worse) error
  std::string corruption_;   // the first corruption seen; empty: none
  std::array<int64_t, kErrorKinds> last_log_ms_{};
  std::array<uint64_t, kErrorKinds> suppressed_{};
};

// Background errors and their recovery, from RocksDB's threads.
class HealthListener : public rocksdb::EventListener {
 public:
  explicit HealthListener(std::shared_ptr<HealthTracker> tracker) : tracker_(std::move(tracker)) {}
  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* error) override {
    if (error && !error->ok()) tracker_->BackgroundError(reason, *error);
  }
  void OnErrorRecoveryEnd(const rocksdb::BackgroundErrorRecoveryInfo& info) override {
    tracker_->RecoveryEnded(info.old_bg_error, info.new_bg_error);
  }

 private:
  std::shared_ptr<HealthTracker> tracker_;
};

// RocksDB's info log, forwarded to Orchard's logger: nothing is written to a
// LOG file in the data directory (whose writer is one more thing a full disk
// can break). RocksDB's INFO lines are chatty (option dumps, compaction
// statistics) and become debug lines; warnings and errors stay what they are.
class ForwardingLogger : public rocksdb::Logger {
 public:
  ForwardingLogger()
      : rocksdb::Logger(log::Enabled(log::Level::kDebug) ? rocksdb::InfoLogLevel::INFO_LEVEL
                                                          : rocksdb::InfoLogLevel::WARN_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Forward(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    Forward(level, format, ap);
  }

 private:
  static void Forward(rocksdb::InfoLogLevel level, const char* format, va_list ap) {
    log::Level to = log::Level::kDebug;
    if (level == rocksdb::InfoLogLevel::WARN_LEVEL) to = log::Level::kWarn;
    if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL && level != rocksdb::InfoLogLevel::HEADER_LEVEL)
      to = log::Level::kError;
    if (!log::Enabled(to)) return;
    char buf[1024];
    va_list copy;
    va_copy(copy, ap);
    int n = std::vsnprintf(buf, sizeof(buf), format, copy);
    va_end(copy);
    if (n < 0) return;
    std::string_view text(buf, std::min<size_t>(static_cast<size_t>(n), sizeof(buf) - 1));
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    log::Write("rocksdb", to, "event=rocksdb_log text=\"" + Quoted(text) + "\"");
  }
};

class RocksIterator : public Iterator {
 public:
  RocksIterator(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, std::string lower,
                std::string upper, HealthTracker* tracker)
      : lower_(std::move(lower)), upper_(std::move(upper)), tracker_(tracker) {
    rocksdb::ReadOptions ro;
    if (!upper_.empty()) {
      upper_slice_ = rocksdb::Slice(upper_);
      ro.iterate_upper_bound = &upper_slice_;
    }
    it_.reset(db->NewIterator(ro, cf));
    it_->Seek(lower_);
  }
  bool Valid() const override { return it_->Valid(); }
  void Next() override { it_->Next(); }
  std::string_view key() const override {
    auto k = it_->key();
    return {k.data(), k.size()};
  }
  std::string_view value() const override {
    auto v = it_->value();
    return {v.data(), v.size()};
  }
  Status status() const override {
    auto s = it_->status();
    if (s.ok()) return Status::Ok();
    if (!reported_) {
      reported_ = true;
      tracker_->RecordError(s, "iterate", false);
    }
    return FromRocks(s, "iterate");
  }

 private:
  std::string lower_, upper_;
  rocksdb::Slice upper_slice_;
  std::unique_ptr<rocksdb::Iterator> it_;
  HealthTracker* tracker_;
  mutable bool reported_ = false;
};

class RocksStore : public Store {
 public:
  RocksStore(std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
             const Options& options, std::shared_ptr<HealthTracker> tracker)
      : db_(std::move(db)),
        handles_(std::move(handles)),
        options_(options),
        tracker_(std::move(tracker)) {
    write_options_.sync = options.sync;
  }
  ~RocksStore() override {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close();
  }

  Result<std::optional<std::string>> Get(Cf cf, std::string_view key) override {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), handle(cf), rocksdb::Slice(key.data(), key.size()),
                      &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) {
      const std::string op = std::string("get ") + CfName(cf);
      tracker_->RecordError(s, op, false);
      return FromRocks(s, op);
    }
    return std::optional<std::string>(std::move(value));
  }

  Status Write(Batch& batch) override;

  std::unique_ptr<Iterator> Scan(Cf cf, std::string_view lower, std::string_view upper) override {
    return std::make_unique<RocksIterator>(db_.get(), handle(cf), std::string(lower),
                                           std::string(upper), tracker_.get());
  }

  Result<std::optional<std::string>> LastKey(Cf cf) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handle(cf)));
    it->SeekToLast();
    if (!it->status().ok()) {
      const std::string op = std::string("seek last ") + CfName(cf);
      tracker_->RecordError(it->status(), op, false);
      return FromRocks(it->status(), op);
    }
    if (!it->Valid()) return std::optional<std::string>();
    return std::optional<std::string>(it->key().ToString());
  }

  Result<int64_t> GetCounter(std::string_view name) override {
    auto r = Get(Cf::kCounters, name);
    if (!r.ok()) return r.status();
    if (!r->has_value()) return int64_t{0};
    return DecodeInt64(rocksdb::Slice(**r));
  }


  const std::string& path() const override { return options_.path; }
  Health health() const override { return tracker_->Snapshot(); }

  rocksdb::ColumnFamilyHandle* handle(Cf cf) const { return handles_[static_cast<int>(cf)]; }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  Options options_;
  std::shared_ptr<HealthTracker> tracker_;  // shared with the DB's event listener
  rocksdb::WriteOptions write_options_;
};

}  // namespace

void Batch::AddCounter(std::string_view name, int64_t delta) {
  if (delta == 0) return;
  ops_.push_back({Op::kMerge, Cf::kCounters, std::string(name), EncodeInt64(delta)});
}

Status RocksStore::Write(Batch& batch) {
  if (batch.empty()) return Status::Ok();
  rocksdb::WriteBatch wb;
  // Counter deltas (merges) are summed per counter and written as one merge
  // each: a fan-out adds one per command, and every merge operand costs a
  // memtable insert and is folded again by each read until compaction. A put
  // or delete of a counter first writes the sum so far (order kept).
  std::map<std::string, int64_t> deltas;
  auto flush_delta = [&](std::string key) -> rocksdb::Status {  // a copy: the map's key is erased
    auto d = deltas.find(key);
    if (d == deltas.end()) return rocksdb::Status::OK();
    const int64_t sum = d->second;
    deltas.erase(d);
    return sum == 0 ? rocksdb::Status::OK() : wb.Merge(handle(Cf::kCounters), key, EncodeInt64(sum));
  };
  for (const auto& op : batch.ops()) {
    auto* h = handle(op.cf);
    rocksdb::Status s;
    if (op.cf == Cf::kCounters && op.kind == Batch::Op::kMerge && op.value.size() == sizeof(int64_t)) {
      deltas[op.key] += DecodeInt64(rocksdb::Slice(op.value));
      continue;
    }
    if (op.cf == Cf::kCounters && !deltas.empty()) {
      if (op.kind == Batch::Op::kDeleteRange) {
        for (auto d = deltas.lower_bound(op.key); s.ok() && d != deltas.end() && d->first < op.value;)
          s = flush_delta((d++)->first);
      } else {
        s = flush_delta(op.key);
      }
      if (!s.ok()) return FromRocks(s, "batch");
    }
    switch (op.kind) {
      case Batch::Op::kPut: s = wb.Put(h, op.key, op.value); break;
      case Batch::Op::kDelete: s = wb.Delete(h, op.key); break;
      case Batch::Op::kMerge: s = wb.Merge(h, op.key, op.value); break;
      case Batch::Op::kDeleteRange: s = wb.DeleteRange(h, op.key, op.value); break;
    }
    if (!s.ok()) return FromRocks(s, "batch");
  }
  while (!deltas.empty()) {
    auto s = flush_delta(deltas.begin()->first);
    if (!s.ok()) return FromRocks(s, "batch");
  }
  auto s = db_->Write(write_options_, &wb);
  if (!s.ok()) {
    tracker_->RecordError(s, "write", true);
    return FromRocks(s, "write");
  }
  tracker_->WriteSucceeded();
  batch.Clear();
  return Status::Ok();
}

const char* CfName(Cf cf) { return kCfNames[static_cast<int>(cf)]; }

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    unsigned char c = static_cast<unsigned char>(end.back());
    if (c != 0xFF) {
      end.back() = static_cast<char>(c + 1);
      return end;
    }
    end.pop_back();
  }
  return end;
}

Result<std::unique_ptr<Store>> Store::Open(const Options& options) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.max_total_wal_size = 256 << 20;
  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  db_options.write_buffer_manager =
      // Memtables are budgeted on their own, not charged to the block cache, so
      // that index and data blocks of deep queues stay cached.
      std::make_shared<rocksdb::WriteBufferManager>(options.write_buffer_budget);

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  // Index and filter blocks live outside the cache (table readers hold them):
  // every queue seek needs them, and a million enrollments need only a few MB.
  table.cache_index_and_filter_blocks = false;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10, false));
  auto table_factory = std::shared_ptr<rocksdb::TableFactory>(rocksdb::NewBlockBasedTableFactory(table));

  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (int i = 0; i < static_cast<int>(Cf::kCount); ++i) {
    rocksdb::ColumnFamilyOptions cfo;
    cfo.table_factory = table_factory;
    cfo.write_buffer_size = 16 << 20;
    cfo.max_write_buffer_number = 3;
    cfo.compression = rocksdb::kNoCompression;
    const Cf cf = static_cast<Cf>(i);
    if (cf == Cf::kCounters) cfo.merge_operator = std::make_shared<AddOperator>();
    if (cf == Cf::kQueue || cf == Cf::kQueueIndex || cf == Cf::kEvents || cf == Cf::kResultsByTime ||
        cf == Cf::kResultsByEnrollment) {
      // Queues are delete-heavy: compact files full of tombstones early.
      cfo.table_properties_collector_factories.emplace_back(
          rocksdb::NewCompactOnDeletionCollectorFactory(1024, 512));
    }
    cfs.emplace_back(kCfNames[i], cfo);
  }
  // RocksDB logs an error when the directory does not exist yet; a first start is no error.
  std::error_code ec;
  std::filesystem::create_directories(options.path, ec);  // if it fails, DB::Open says why
  auto tracker = std::make_shared<HealthTracker>();
  db_options.listeners.push_back(std::make_shared<HealthListener>(tracker));
  db_options.info_log = std::make_shared<ForwardingLogger>();
  if (options.env) db_options.env = options.env;

  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  auto open = [&](rocksdb::WALRecoveryMode mode) {
    db_options.wal_recovery_mode = mode;
    handles.clear();
    return rocksdb::DB::Open(db_options, options.path, cfs, &handles, &raw);
  };
  // Every start first demands a WAL without any damage. RocksDB 7.8's
  // kAbsoluteConsistency also refuses an incomplete final record, which a
  // kill -9 during a write of more than a page leaves behind (measured: about
  // one kill in six under load with 20-200 KB writes), so a refusal is looked at
  // again below.
  auto s = open(rocksdb::WALRecoveryMode::kAbsoluteConsistency);
  if (s.IsCorruption()) {
    const std::string first_error = s.ToString();
    if (options.wal_recovery == WalRecovery::kStrict) {
      // kTolerateCorruptedTailRecords still refuses a checksum mismatch or a
      // bad record anywhere, but accepts a log that ends inside its last
      // record: that write never completed, so it was never acknowledged.
      s = open(rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords);
      if (s.ok()) {
        log::Warn(kLog,
                  "event=wal_incomplete_tail_dropped path={} error=\"{}\" detail=\"the write-ahead log "
                  "ended inside its last record, a write cut short by a crash or kill -9 that was "
                  "never acknowledged; it was dropped. If orchardd did not crash, the end of the "
                  "log was damaged: check the disk\"",
                  options.path, Quoted(first_error));
      } else if (s.IsCorruption()) {
        return Status::Io(
            "refusing to open the database at " + options.path + ": " + s.ToString() +
            ". Its write-ahead log (or another database file) is damaged, and opening it anyway "
            "would silently lose acknowledged writes. Copy the data directory aside, then restore "
            "a backup, or start once with --wal-recovery point_in_time (config key "
            "store.wal_recovery), which keeps every write before the damaged record and discards "
            "every write after it; see docs/operations.md, \"Store faults\"");
      }
    } else {
      s = open(rocksdb::WALRecoveryMode::kPointInTimeRecovery);
      if (s.ok()) {
        log::Warn(kLog,
                  "event=wal_point_in_time_recovery path={} error=\"{}\" last_sequence={} "
                  "detail=\"store.wal_recovery=point_in_time: kept every write before the first "
                  "damaged write-ahead log record and discarded every write after it; set "
                  "store.wal_recovery back to strict\"",
                  options.path, Quoted(first_error), raw->GetLatestSequenceNumber());
      } else if (s.IsCorruption()) {
        return Status::Io("cannot open the database at " + options.path +
                          " even with point-in-time recovery: " + s.ToString() +
                          ". Restore a backup; see docs/operations.md, \"Store faults\"");
      }
    }
  }
  if (!s.ok()) {
    return Status::Io("cannot open database at " + options.path + ": " + s.ToString() +
                      (s.IsIOError() && s.ToString().find("lock") != std::string::npos
                           ? " (is another orchardd using this data dir?)"
                           : ""));
  }
  log::Info(kLog, "event=opened path={} sync={} wal_recovery={}", options.path, options.sync,
            WalRecoveryName(options.wal_recovery));
  return std::unique_ptr<Store>(std::make_unique<RocksStore>(
      std::unique_ptr<rocksdb::DB>(raw), std::move(handles), options, std::move(tracker)));
}

std::optional<WalRecovery> ParseWalRecovery(std::string_view name) {
  if (name == "strict") return WalRecovery::kStrict;
  if (name == "point_in_time") return WalRecovery::kPointInTime;
  return std::nullopt;
}

const char* WalRecoveryName(WalRecovery mode) {
  return mode == WalRecovery::kStrict ? "strict" : "point_in_time";
}

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kCorruption: return "corruption";
    case ErrorKind::kNoSpace: return "no_space";
    case ErrorKind::kIo: return "io";
    case ErrorKind::kOther: return "other";
  }
  return "other";
}

}  // namespace orchard::store
