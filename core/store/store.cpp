#include "store/store.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/write_buffer_manager.h>

#include <cstring>
#include <vector>

#include "log/log.h"

namespace orchard::store {
namespace {

constexpr const char* kLog = "store";
constexpr const char* kCfNames[] = {"default",  "enrollments", "cert_bindings", "serials",
                                    "queue",    "queue_index", "results",       "results_by_time",
                                    "events",   "counters",    "push_state",  "results_by_enrollment"};
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
  return Status::Io(std::string(what) + ": " + s.ToString());
}

class RocksIterator : public Iterator {
 public:
  RocksIterator(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, std::string lower,
                std::string upper)
      : lower_(std::move(lower)), upper_(std::move(upper)) {
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
  Status status() const override { return FromRocks(it_->status(), "iterate"); }

 private:
  std::string lower_, upper_;
  rocksdb::Slice upper_slice_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

class RocksStore : public Store {
 public:
  RocksStore(std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
             const Options& options)
      : db_(std::move(db)), handles_(std::move(handles)), options_(options) {
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
    if (!s.ok()) return FromRocks(s, std::string("get ") + CfName(cf));
    return std::optional<std::string>(std::move(value));
  }

  Status Write(Batch& batch) override;

  std::unique_ptr<Iterator> Scan(Cf cf, std::string_view lower, std::string_view upper) override {
    return std::make_unique<RocksIterator>(db_.get(), handle(cf), std::string(lower),
                                           std::string(upper));
  }

  Result<std::optional<std::string>> LastKey(Cf cf) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handle(cf)));
    it->SeekToLast();
    if (!it->status().ok()) return FromRocks(it->status(), "seek last");
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

  rocksdb::ColumnFamilyHandle* handle(Cf cf) const { return handles_[static_cast<int>(cf)]; }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  Options options_;
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
  for (const auto& op : batch.ops()) {
    auto* h = handle(op.cf);
    rocksdb::Status s;
    switch (op.kind) {
      case Batch::Op::kPut: s = wb.Put(h, op.key, op.value); break;
      case Batch::Op::kDelete: s = wb.Delete(h, op.key); break;
      case Batch::Op::kMerge: s = wb.Merge(h, op.key, op.value); break;
      case Batch::Op::kDeleteRange: s = wb.DeleteRange(h, op.key, op.value); break;
    }
    if (!s.ok()) return FromRocks(s, "batch");
  }
  auto s = db_->Write(write_options_, &wb);
  if (!s.ok()) {
    log::Error(kLog, "event=write_failed error=\"{}\"", s.ToString());
    return FromRocks(s, "write");
  }
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
  db_options.keep_log_file_num = 5;
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
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(db_options, options.path, cfs, &handles, &raw);
  if (!s.ok()) {
    return Status::Io("cannot open database at " + options.path + ": " + s.ToString() +
                      (s.IsIOError() && s.ToString().find("lock") != std::string::npos
                           ? " (is another orchardd using this data dir?)"
                           : ""));
  }
  log::Info(kLog, "event=opened path={} sync={}", options.path, options.sync);
  return std::unique_ptr<Store>(
      std::make_unique<RocksStore>(std::unique_ptr<rocksdb::DB>(raw), std::move(handles), options));
}

}  // namespace orchard::store
