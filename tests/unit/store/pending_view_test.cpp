// PendingView (read-your-writes over an unwritten Batch) on a real RocksDB in a
// temp directory; the randomised case checks it against writing the batch.
#include "store/pending_view.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "store/store.h"
#include "support/orchardd_process.h"

using namespace orchard;
using store::Batch;
using store::Cf;

namespace {

struct TempDb {
  std::string dir = testing::MakeTempDir("orchard-pending-view");
  std::unique_ptr<store::Store> db;
  TempDb() { db = std::move(store::Store::Open({.path = dir + "/db"}).value()); }
  ~TempDb() {
    db.reset();
    std::filesystem::remove_all(dir);
  }
};

using Rows = std::vector<std::pair<std::string, std::string>>;

// Printable rendering of bytes, for readable failure messages.
std::string Show(std::string_view bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char c : bytes) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\' && c != '"') {
      out += c;
    } else {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  return out + "\"";
}

std::string Show(const Rows& rows) {
  std::string out = "{";
  for (const auto& [k, v] : rows) out += " " + Show(k) + "=" + Show(v);
  return out + " }";
}

std::string ShowGet(const std::optional<std::string>& v) { return v ? Show(*v) : "(absent)"; }

Rows ScanAll(store::Store& s, Cf cf, std::string_view lower, std::string_view upper) {
  Rows rows;
  auto it = s.Scan(cf, lower, upper);
  for (; it->Valid(); it->Next()) rows.emplace_back(it->key(), it->value());
  REQUIRE(it->status().ok());
  return rows;
}

std::optional<std::string> GetOk(store::Store& s, Cf cf, std::string_view key) {
  auto r = s.Get(cf, key);
  REQUIRE(r.ok());
  return r.value();
}

void Append(Batch& batch, const Batch::Op& op) {
  switch (op.kind) {
    case Batch::Op::kPut:
      batch.Put(op.cf, op.key, op.value);
      break;
    case Batch::Op::kDelete:
      batch.Delete(op.cf, op.key);
      break;
    case Batch::Op::kDeleteRange:
      batch.DeleteRange(op.cf, op.key, op.value);
      break;
    case Batch::Op::kMerge:
      FAIL("merge ops are not generated here");
      break;
  }
}

void WriteOk(store::Store& s, Batch batch) { REQUIRE(s.Write(batch).ok()); }

// A base store whose iterator stops with an I/O error after `fail_after` keys.
class FailingStore : public store::Store {
 public:
  std::map<std::string, std::string> data;
  size_t fail_after = 0;

  Result<std::optional<std::string>> Get(Cf, std::string_view key) override {
    auto it = data.find(std::string(key));
    if (it == data.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }
  Status Write(Batch&) override { return Status::Internal("unused"); }
  std::unique_ptr<store::Iterator> Scan(Cf, std::string_view lower,
                                        std::string_view upper) override {
    return std::make_unique<Iter>(this, lower, upper);
  }
  Result<std::optional<std::string>> LastKey(Cf) override { return Status::Internal("unused"); }
  Result<int64_t> GetCounter(std::string_view) override { return int64_t{0}; }
  const std::string& path() const override { return path_; }
  store::Health health() const override { return {}; }

 private:
  class Iter : public store::Iterator {
   public:
    Iter(FailingStore* s, std::string_view lower, std::string_view upper) {
      for (auto it = s->data.lower_bound(std::string(lower)); it != s->data.end(); ++it) {
        if (!upper.empty() && it->first >= upper) break;
        if (rows_.size() == s->fail_after) {
          failed_ = true;
          break;
        }
        rows_.emplace_back(it->first, it->second);
      }
    }
    bool Valid() const override { return pos_ < rows_.size(); }
    void Next() override { ++pos_; }
    std::string_view key() const override { return rows_[pos_].first; }
    std::string_view value() const override { return rows_[pos_].second; }
    Status status() const override {
      return failed_ && pos_ >= rows_.size() ? Status::Io("injected") : Status::Ok();
    }

   private:
    Rows rows_;
    size_t pos_ = 0;
    bool failed_ = false;
  };
  std::string path_ = "/fake";
};

}  // namespace

TEST_CASE("PendingView Get follows the last pending op on a key", "[store][pending_view]") {
  TempDb t;
  Batch base;
  base.Put(Cf::kMeta, "a", "base-a");
  base.Put(Cf::kMeta, "b", "base-b");
  WriteOk(*t.db, base);

  Batch pending;
  store::PendingView view(t.db.get(), &pending);
  CHECK(GetOk(view, Cf::kMeta, "a") == "base-a");

  pending.Put(Cf::kMeta, "a", "one");
  CHECK(GetOk(view, Cf::kMeta, "a") == "one");
  pending.Delete(Cf::kMeta, "a");
  CHECK_FALSE(GetOk(view, Cf::kMeta, "a").has_value());
  pending.Put(Cf::kMeta, "a", "two");
  CHECK(GetOk(view, Cf::kMeta, "a") == "two");
  pending.Put(Cf::kMeta, "a", "");  // an empty value is a value, not a deletion
  auto empty = GetOk(view, Cf::kMeta, "a");
  REQUIRE(empty.has_value());
  CHECK(empty->empty());

  // A key only in the batch, a key only in the base, a key in neither.
  pending.Put(Cf::kMeta, "new", "fresh");
  CHECK(GetOk(view, Cf::kMeta, "new") == "fresh");
  CHECK(GetOk(view, Cf::kMeta, "b") == "base-b");
  CHECK_FALSE(GetOk(view, Cf::kMeta, "zzz").has_value());
  pending.Delete(Cf::kMeta, "b");
  CHECK_FALSE(GetOk(view, Cf::kMeta, "b").has_value());

  // Nothing reached the base store.
  CHECK(GetOk(*t.db, Cf::kMeta, "a") == "base-a");
  CHECK(GetOk(*t.db, Cf::kMeta, "b") == "base-b");
  CHECK_FALSE(GetOk(*t.db, Cf::kMeta, "new").has_value());
}

TEST_CASE("PendingView re-indexes a batch that was cleared and filled again", "[store][pending_view]") {
  TempDb t;
  Batch base;
  base.Put(Cf::kMeta, "a", "base-a");
  WriteOk(*t.db, base);
  Batch pending;
  store::PendingView view(t.db.get(), &pending);
  pending.Put(Cf::kMeta, "a", "one");
  pending.Put(Cf::kMeta, "b", "one");
  CHECK(GetOk(view, Cf::kMeta, "a") == "one");
  // Cleared and refilled with more ops than before, between two reads.
  pending.Clear();
  pending.Put(Cf::kMeta, "c", "two");
  pending.Put(Cf::kMeta, "d", "two");
  pending.Put(Cf::kMeta, "e", "two");
  CHECK(GetOk(view, Cf::kMeta, "a") == "base-a");
  CHECK_FALSE(GetOk(view, Cf::kMeta, "b").has_value());
  CHECK(GetOk(view, Cf::kMeta, "c") == "two");
  std::vector<std::string> keys;
  for (auto it = view.Scan(Cf::kMeta, "", ""); it->Valid(); it->Next()) keys.emplace_back(it->key());
  CHECK(keys == std::vector<std::string>{"a", "c", "d", "e"});
}

TEST_CASE("PendingView DeleteRange hides base keys until a later Put", "[store][pending_view]") {
  TempDb t;
  Batch base;
  for (const char* k : {"a", "b", "c", "d", "e"}) base.Put(Cf::kMeta, k, std::string("v") + k);
  WriteOk(*t.db, base);

  Batch pending;
  store::PendingView view(t.db.get(), &pending);
  pending.Put(Cf::kMeta, "bb", "pending-bb");
  pending.DeleteRange(Cf::kMeta, "b", "d");  // hides b, bb (an earlier pending put) and c
  CHECK(GetOk(view, Cf::kMeta, "a") == "va");
  CHECK_FALSE(GetOk(view, Cf::kMeta, "b").has_value());
  CHECK_FALSE(GetOk(view, Cf::kMeta, "bb").has_value());
  CHECK_FALSE(GetOk(view, Cf::kMeta, "c").has_value());
  CHECK(GetOk(view, Cf::kMeta, "d") == "vd");  // the upper key is exclusive
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "")) ==
        Show(Rows{{"a", "va"}, {"d", "vd"}, {"e", "ve"}}));

  pending.Put(Cf::kMeta, "c", "back");
  CHECK(GetOk(view, Cf::kMeta, "c") == "back");
  CHECK_FALSE(GetOk(view, Cf::kMeta, "b").has_value());
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "")) ==
        Show(Rows{{"a", "va"}, {"c", "back"}, {"d", "vd"}, {"e", "ve"}}));

  // A later range deletion hides the re-exposed key again.
  pending.DeleteRange(Cf::kMeta, "c", "cc");
  CHECK_FALSE(GetOk(view, Cf::kMeta, "c").has_value());
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "")) ==
        Show(Rows{{"a", "va"}, {"d", "vd"}, {"e", "ve"}}));

  // The upper key of a DeleteRange is literal: empty or not above lower covers nothing.
  Batch literal;
  store::PendingView literal_view(t.db.get(), &literal);
  literal.DeleteRange(Cf::kMeta, "e", "");
  literal.DeleteRange(Cf::kMeta, "a", "a");
  CHECK(GetOk(literal_view, Cf::kMeta, "e") == "ve");
  CHECK(GetOk(literal_view, Cf::kMeta, "a") == "va");
  CHECK(ScanAll(literal_view, Cf::kMeta, "", "").size() == 5);
}

TEST_CASE("PendingView Scan merges base and pending keys in order", "[store][pending_view]") {
  TempDb t;
  Batch base;
  base.Put(Cf::kMeta, "b", "base-b");
  base.Put(Cf::kMeta, "d", "base-d");
  base.Put(Cf::kMeta, "f", "base-f");
  base.Put(Cf::kMeta, "h", "base-h");
  WriteOk(*t.db, base);

  Batch pending;
  store::PendingView view(t.db.get(), &pending);
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "")) ==
        Show(Rows{{"b", "base-b"}, {"d", "base-d"}, {"f", "base-f"}, {"h", "base-h"}}));

  pending.Put(Cf::kMeta, "g", "pending-g");  // between, after a later write below
  pending.Put(Cf::kMeta, "a", "pending-a");  // before every base key
  pending.Put(Cf::kMeta, "c", "pending-c");  // between base keys
  pending.Put(Cf::kMeta, "z", "pending-z");  // after every base key
  pending.Put(Cf::kMeta, "d", "pending-d");  // overrides a base value
  pending.Delete(Cf::kMeta, "f");            // hides a base key
  pending.Delete(Cf::kMeta, "x");            // deleting a missing key shows nothing
  pending.Put(Cf::kMeta, "y", "gone");
  pending.Delete(Cf::kMeta, "y");  // a pending put deleted later in the batch

  const Rows all{{"a", "pending-a"}, {"b", "base-b"}, {"c", "pending-c"}, {"d", "pending-d"},
                 {"g", "pending-g"}, {"h", "base-h"}, {"z", "pending-z"}};
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "")) == Show(all));

  // Bounds: [lower, upper), empty upper runs to the end.
  CHECK(Show(ScanAll(view, Cf::kMeta, "b", "f")) ==
        Show(Rows{{"b", "base-b"}, {"c", "pending-c"}, {"d", "pending-d"}}));
  CHECK(Show(ScanAll(view, Cf::kMeta, "c", "")) == Show(Rows{{"c", "pending-c"},
                                                             {"d", "pending-d"},
                                                             {"g", "pending-g"},
                                                             {"h", "base-h"},
                                                             {"z", "pending-z"}}));
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "c")) == Show(Rows{{"a", "pending-a"}, {"b", "base-b"}}));
  CHECK(Show(ScanAll(view, Cf::kMeta, "bb", "cc")) == Show(Rows{{"c", "pending-c"}}));
  CHECK(Show(ScanAll(view, Cf::kMeta, "e", "g")) == Show(Rows{}));  // only a deleted key
  CHECK(Show(ScanAll(view, Cf::kMeta, "h", "h")) == Show(Rows{}));
  CHECK(Show(ScanAll(view, Cf::kMeta, "za", "")) == Show(Rows{}));
  CHECK(Show(ScanAll(view, Cf::kMeta, "y", "")) == Show(Rows{{"z", "pending-z"}}));

  // A range deletion clipped by the scan bounds.
  pending.DeleteRange(Cf::kMeta, "a", "c");
  CHECK(Show(ScanAll(view, Cf::kMeta, "b", "e")) ==
        Show(Rows{{"c", "pending-c"}, {"d", "pending-d"}}));
  pending.DeleteRange(Cf::kMeta, "g", "zz");
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "")) ==
        Show(Rows{{"c", "pending-c"}, {"d", "pending-d"}}));
}

TEST_CASE("PendingView sees ops appended to the batch after it was created",
          "[store][pending_view]") {
  TempDb t;
  Batch base;
  base.Put(Cf::kMeta, "k1", "base");
  WriteOk(*t.db, base);

  Batch pending;
  store::PendingView view(t.db.get(), &pending);
  CHECK_FALSE(GetOk(view, Cf::kMeta, "k2").has_value());
  auto before = view.Scan(Cf::kMeta, "", "");  // the batch as it is now: empty

  pending.Put(Cf::kMeta, "k2", "later");
  pending.Delete(Cf::kMeta, "k1");
  CHECK(GetOk(view, Cf::kMeta, "k2") == "later");
  CHECK_FALSE(GetOk(view, Cf::kMeta, "k1").has_value());
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "")) == Show(Rows{{"k2", "later"}}));

  // An iterator keeps the pending ops it started with.
  REQUIRE(before->Valid());
  CHECK(before->key() == "k1");
  before->Next();
  CHECK_FALSE(before->Valid());
  CHECK(before->status().ok());

  // Writing the batch (which clears it) leaves the view reading the base.
  WriteOk(*t.db, pending);
  pending.Clear();
  CHECK(GetOk(view, Cf::kMeta, "k2") == "later");
  CHECK_FALSE(GetOk(view, Cf::kMeta, "k1").has_value());
  pending.Put(Cf::kMeta, "k3", "again");
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "")) == Show(Rows{{"k2", "later"}, {"k3", "again"}}));
}

TEST_CASE("PendingView leaves other column families alone", "[store][pending_view]") {
  TempDb t;
  Batch base;
  base.Put(Cf::kMeta, "a", "meta-a");
  base.Put(Cf::kSerials, "a", "serial-a");
  base.Put(Cf::kSerials, "b", "serial-b");
  WriteOk(*t.db, base);

  Batch pending;
  store::PendingView view(t.db.get(), &pending);
  pending.Put(Cf::kMeta, "a", "pending");
  pending.Put(Cf::kMeta, "c", "pending-c");
  pending.DeleteRange(Cf::kMeta, "b", "z");
  pending.Delete(Cf::kEnrollments, "a");
  pending.DeleteRange(Cf::kEnrollments, "", "zz");

  CHECK(GetOk(view, Cf::kMeta, "a") == "pending");
  CHECK(GetOk(view, Cf::kSerials, "a") == "serial-a");
  CHECK(GetOk(view, Cf::kSerials, "b") == "serial-b");
  CHECK_FALSE(GetOk(view, Cf::kSerials, "c").has_value());
  CHECK(Show(ScanAll(view, Cf::kSerials, "", "")) ==
        Show(Rows{{"a", "serial-a"}, {"b", "serial-b"}}));
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "")) == Show(Rows{{"a", "pending"}}));
}

TEST_CASE("PendingView refuses writes, LastKey and reads through a pending merge",
          "[store][pending_view]") {
  TempDb t;
  Batch base;
  base.AddCounter("written", 5);
  base.Put(Cf::kCounters, "a-plain", "x");
  WriteOk(*t.db, base);

  Batch pending;
  store::PendingView view(t.db.get(), &pending);
  CHECK(view.path() == t.db->path());
  CHECK(view.health().healthy());

  pending.Put(Cf::kMeta, "k", "v");
  Batch other;
  other.Put(Cf::kMeta, "w", "v");
  Status w = view.Write(other);
  CHECK(w.code() == Code::kFailedPrecondition);
  CHECK(other.Count() == 1);
  CHECK_FALSE(GetOk(*t.db, Cf::kMeta, "w").has_value());

  auto last = view.LastKey(Cf::kMeta);
  REQUIRE_FALSE(last.ok());
  CHECK(last.status().code() == Code::kFailedPrecondition);

  // Counters without pending changes read through; pending deltas are refused.
  auto c = view.GetCounter("written");
  REQUIRE(c.ok());
  CHECK(*c == 5);
  pending.AddCounter("written", 2);
  pending.AddCounter("other", 1);
  auto refused = view.GetCounter("written");
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == Code::kFailedPrecondition);
  auto get = view.Get(Cf::kCounters, "written");
  REQUIRE_FALSE(get.ok());
  CHECK(get.status().code() == Code::kFailedPrecondition);

  // A scan yields the keys before the merged one, then stops with the error.
  auto it = view.Scan(Cf::kCounters, "", "");
  REQUIRE(it->Valid());
  CHECK(it->key() == "a-plain");
  it->Next();
  CHECK_FALSE(it->Valid());
  CHECK(it->status().code() == Code::kFailedPrecondition);
  // A scan whose bounds exclude the merged keys works.
  CHECK(Show(ScanAll(view, Cf::kCounters, "a", "b")) == Show(Rows{{"a-plain", "x"}}));

  // A later Put or Delete settles the key again.
  pending.Put(Cf::kCounters, "other", "raw");
  CHECK(GetOk(view, Cf::kCounters, "other") == "raw");
  pending.Delete(Cf::kCounters, "written");
  CHECK_FALSE(GetOk(view, Cf::kCounters, "written").has_value());
  CHECK(Show(ScanAll(view, Cf::kCounters, "", "")) ==
        Show(Rows{{"a-plain", "x"}, {"other", "raw"}}));
}

TEST_CASE("PendingView Scan stops with the base iterator's error", "[store][pending_view]") {
  FailingStore base;
  base.data = {{"a", "1"}, {"c", "3"}, {"e", "5"}};
  base.fail_after = 2;  // yields a and c, then fails
  Batch pending;
  pending.Put(Cf::kMeta, "b", "2");
  pending.Put(Cf::kMeta, "z", "26");  // after the failure: never shown
  store::PendingView view(&base, &pending);

  auto it = view.Scan(Cf::kMeta, "", "");
  std::vector<std::string> keys;
  for (; it->Valid(); it->Next()) keys.emplace_back(it->key());
  CHECK(keys == std::vector<std::string>{"a", "b", "c"});
  CHECK(it->status().code() == Code::kIo);

  base.fail_after = 100;
  CHECK(Show(ScanAll(view, Cf::kMeta, "", "")) ==
        Show(Rows{{"a", "1"}, {"b", "2"}, {"c", "3"}, {"e", "5"}, {"z", "26"}}));
}

// The important one: reads through the view equal reads of a store the batch
// was actually written to, over random batches (puts, deletes, range deletes,
// including ones undoing each other) on random base contents.
TEST_CASE("PendingView reads match writing the batch, randomised", "[store][pending_view]") {
  TempDb base_db, ref_db;  // base: the view's base; ref: base + the pending ops written
  store::Store& base = *base_db.db;
  store::Store& ref = *ref_db.db;
  std::mt19937 rng(20240611);
  auto below = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };

  // A small key space with bytes that sort unsigned (0x00, 0x7f, 0x80, 0xff)
  // and prefixes of one another, so ops collide and ranges overlap.
  const std::string alphabet(
      "\x00"
      "ab\x7f\x80\xff",
      6);
  std::vector<std::string> keys{""};
  while (keys.size() < 48) {
    std::string k;
    size_t len = 1 + below(3);
    for (size_t i = 0; i < len; ++i) k += alphabet[below(alphabet.size())];
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  }
  const Cf cfs[] = {Cf::kMeta, Cf::kSerials};
  auto random_key = [&] { return keys[below(keys.size())]; };
  auto random_value = [&] {
    std::string v;
    size_t len = below(4);  // empty values too
    for (size_t i = 0; i < len; ++i) v += static_cast<char>('A' + below(26));
    return v;
  };
  auto random_op = [&](Batch& batch) {
    Cf cf = cfs[below(2)];
    size_t kind = below(10);
    if (kind < 5) {
      batch.Put(cf, random_key(), random_value());
    } else if (kind < 7) {
      batch.Delete(cf, random_key());
    } else {
      std::string a = random_key(), b = random_key();
      if (b < a) std::swap(a, b);  // a == b: an empty range
      batch.DeleteRange(cf, a, b);
    }
  };

  auto compare = [&](store::Store& view, const std::string& where) {
    INFO(where);
    for (Cf cf : cfs) {
      INFO("cf " << store::CfName(cf));
      for (const auto& k : keys) {
        INFO("get " << Show(k));
        REQUIRE(ShowGet(GetOk(view, cf, k)) == ShowGet(GetOk(ref, cf, k)));
      }
      for (int i = 0; i < 12; ++i) {
        std::string lower = below(5) == 0 ? "" : random_key();
        std::string upper = below(4) == 0 ? "" : random_key();  // upper < lower too
        INFO("scan " << Show(lower) << " " << Show(upper));
        REQUIRE(Show(ScanAll(view, cf, lower, upper)) == Show(ScanAll(ref, cf, lower, upper)));
      }
      REQUIRE(Show(ScanAll(view, cf, "", "")) == Show(ScanAll(ref, cf, "", "")));
    }
  };

  // Random base contents, identical in both stores.
  for (int i = 0; i < 4; ++i) {
    Batch b;
    for (int j = 0; j < 40; ++j) random_op(b);
    WriteOk(base, b);
    WriteOk(ref, b);
  }

  Batch pending;
  store::PendingView view(&base, &pending);
  size_t checkpoints = 0;
  for (int round = 0; round < 150; ++round) {
    std::string where = "round " + std::to_string(round);
    compare(view, where + " empty batch");
    size_t n = below(50);
    size_t written = 0;  // pending ops already written to ref
    for (size_t i = 0; i < n; ++i) {
      random_op(pending);
      if (i + 1 == n || below(8) == 0) {
        // ref = base + pending so far: write only the ops it has not seen.
        Batch delta;
        for (size_t j = written; j < pending.Count(); ++j) Append(delta, pending.ops()[j]);
        written = pending.Count();
        WriteOk(ref, delta);
        compare(view, where + " after " + std::to_string(written) + " pending ops");
        ++checkpoints;
      }
    }
    REQUIRE(base.Write(pending).ok());  // base catches up; the batch is cleared
    REQUIRE(pending.empty());
  }
  CHECK(checkpoints > 300);
}
