// Storage faults on a real RocksDB in a temp directory: damaged write-ahead
// logs, a write cut short by kill -9, a damaged table file, a full disk (a
// fault-injecting file system), and retention that keeps up with big backlogs.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "events/events.h"
#include "queue/queue.h"
#include "store/records.h"
#include "store/store.h"
#include "support/kill9.h"
#include "support/orchardd_process.h"
#include "unit/store/fault_fs.h"
#include "util/encoding.h"

using namespace orchard;
namespace fs = std::filesystem;

namespace {

struct Dir {
  std::string path = testing::MakeTempDir("orchard-store-fault");
  std::string db() const { return path + "/db"; }
  ~Dir() { fs::remove_all(path); }
};

std::string Key(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "k%04d", i);
  return buf;
}

// Writes keys 0..n-1 (one write each) into a new store, closes it. Closing
// does not flush the memtables: the writes stay in the write-ahead log only.
void WriteKeys(const std::string& db, int n, size_t value_size = 100) {
  auto s = store::Store::Open({.path = db});
  REQUIRE(s.ok());
  for (int i = 0; i < n; ++i) {
    store::Batch b;
    b.Put(store::Cf::kEnrollments, Key(i), std::string(value_size, static_cast<char>('a' + i % 26)));
    REQUIRE((*s)->Write(b).ok());
  }
}

std::vector<std::string> FilesWithExtension(const std::string& dir, const std::string& ext) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ext) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string NewestWal(const std::string& db) {
  auto wals = FilesWithExtension(db, ".log");
  REQUIRE_FALSE(wals.empty());
  return wals.back();
}

void FlipByte(const std::string& file, uint64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(f);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
  REQUIRE(f);
}

bool Has(store::Store& s, const std::string& key) {
  auto r = s.Get(store::Cf::kEnrollments, key);
  REQUIRE(r.ok());
  return r->has_value();
}

// Waits (polling, with a deadline) until pred() holds.
template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::seconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

}  // namespace

TEST_CASE("store: a damaged write-ahead log record refuses to open and says what to do", "[store][fault]") {
  Dir d;
  WriteKeys(d.db(), 50);
  const std::string wal = NewestWal(d.db());
  FlipByte(wal, fs::file_size(wal) - 3);  // inside the last record's value: checksum mismatch

  auto s = store::Store::Open({.path = d.db()});
  REQUIRE_FALSE(s.ok());
  const std::string& m = s.status().message();
  INFO(m);
  CHECK(m.find("refusing to open the database at " + d.db()) != std::string::npos);
  CHECK(m.find("point_in_time") != std::string::npos);
  CHECK(m.find("docs/operations.md") != std::string::npos);
  // Refusing changed nothing: the refusal is the same the second time.
  CHECK_FALSE(store::Store::Open({.path = d.db()}).ok());
}

TEST_CASE("store: point-in-time recovery keeps the writes before the damage and drops the rest", "[store][fault]") {
  Dir d;
  WriteKeys(d.db(), 50);
  const std::string wal = NewestWal(d.db());
  FlipByte(wal, fs::file_size(wal) - 3);

  {
    auto s = store::Store::Open({.path = d.db(), .wal_recovery = store::WalRecovery::kPointInTime});
    REQUIRE(s.ok());
    for (int i = 0; i < 49; ++i) CHECK(Has(**s, Key(i)));
    CHECK_FALSE(Has(**s, Key(49)));  // the damaged record and everything after it
    CHECK((*s)->health().healthy());
  }
  // The damaged log is gone: the next strict start opens.
  auto again = store::Store::Open({.path = d.db()});
  REQUIRE(again.ok());
  CHECK(Has(**again, Key(48)));
}

TEST_CASE("store: an incomplete last write-ahead log record (a write cut short) is dropped", "[store][fault]") {
  Dir d;
  {
    auto s = store::Store::Open({.path = d.db()});
    REQUIRE(s.ok());
    for (int i = 0; i < 20; ++i) {
      store::Batch b;
      b.Put(store::Cf::kEnrollments, Key(i), "small");
      REQUIRE((*s)->Write(b).ok());
    }
    store::Batch big;
    big.Put(store::Cf::kEnrollments, "big", std::string(64 << 10, 'b'));
    REQUIRE((*s)->Write(big).ok());
  }
  // What a kill -9 in the middle of the big write() leaves: a prefix of it.
  const std::string wal = NewestWal(d.db());
  fs::resize_file(wal, fs::file_size(wal) - 1000);

  auto s = store::Store::Open({.path = d.db()});
  REQUIRE(s.ok());
  for (int i = 0; i < 20; ++i) CHECK(Has(**s, Key(i)));
  CHECK_FALSE(Has(**s, "big"));
}

// The writer of the kill -9 test below, run as a separate process (the test
// binary re-executed with this hidden test) so that nothing RocksDB started in
// the parent is inherited across fork. Writes 4 bytes (the key number) to the
// file descriptor ORCHARD_KILL9_FD after each acknowledged write, until killed.
TEST_CASE("kill -9 writer child", "[.kill9child]") {
  const char* dir = testing::Kill9Dir();
  if (!dir) return;  // only meaningful when started by the test below
  auto s = store::Store::Open({.path = dir});
  REQUIRE(s.ok());
  // 50 KB - 1 MB: large command results. Far more than a page, so that the
  // kill often lands inside the write() that appends one to the log.
  std::vector<std::string> values;
  for (size_t size : {50000, 200000, 500000, 1000000}) values.emplace_back(size, 'v');
  for (uint32_t i = 0;; ++i) {
    store::Batch b;
    b.Put(store::Cf::kEnrollments, Key(static_cast<int>(i)), values[i % values.size()]);
    REQUIRE((*s)->Write(b).ok());
    testing::Kill9Ack(i);
  }
}

TEST_CASE("store: every kill -9 during large writes restarts with all acknowledged writes", "[store][fault]") {
  // RocksDB 7.8 with kAbsoluteConsistency alone refuses a good share of such
  // restarts (an incomplete final record); strict mode must open every time.
  Dir d;
  std::mt19937 rng(12345);
#ifdef __SANITIZE_ADDRESS__
  constexpr int kTrials = 5;  // each one starts an instrumented child: memory errors show in the first few
#else
  constexpr int kTrials = 20;
#endif
  for (int trial = 0; trial < kTrials; ++trial) {
    const std::string db = d.path + "/db" + std::to_string(trial);
    // Once the child has acknowledged a few writes, kill it at a random moment.
    const int64_t acked =
        testing::Kill9Child("kill -9 writer child", db, 2, std::chrono::microseconds(rng() % 20000));
    REQUIRE(acked >= 0);

    auto s = store::Store::Open({.path = db});
    INFO("trial " << trial << ": " << s.status().message());
    REQUIRE(s.ok());
    for (int i = 0; i <= acked; ++i) REQUIRE(Has(**s, Key(i)));
  }
}

TEST_CASE("store: a damaged table file is logged, counted and marks the store unhealthy", "[store][fault]") {
  Dir d;
  WriteKeys(d.db(), 200, 200);
  { REQUIRE(store::Store::Open({.path = d.db()}).ok()); }  // recovery writes the log to a table file
  auto tables = FilesWithExtension(d.db(), ".sst");
  REQUIRE(tables.size() == 1);
  FlipByte(tables[0], 100);  // inside the first data block

  auto s = store::Store::Open({.path = d.db()});
  REQUIRE(s.ok());
  CHECK((*s)->health().healthy());
  auto r = (*s)->Get(store::Cf::kEnrollments, Key(0));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kIo);
  CHECK(r.status().message().find("Corruption") != std::string::npos);
  auto it = (*s)->Scan(store::Cf::kEnrollments, "", "");
  while (it->Valid()) it->Next();
  CHECK_FALSE(it->status().ok());

  const store::Health h = (*s)->health();
  CHECK(h.corrupt);
  CHECK_FALSE(h.healthy());
  CHECK(h.errors[static_cast<size_t>(store::ErrorKind::kCorruption)] == 2);
  CHECK(h.reason.find("corruption") != std::string::npos);
  CHECK(h.writable);  // writes still work; the damage is in what is read
}

TEST_CASE("store: a full disk refuses writes as ResourceExhausted and the store recovers by itself", "[store][fault]") {
  Dir d;
  testing::FullDiskEnv disk;
  auto opened = store::Store::Open({.path = d.db(), .env = disk.env.get()});
  REQUIRE(opened.ok());
  std::unique_ptr<store::Store> s = std::move(opened.value());
  for (int i = 0; i < 10; ++i) {
    store::Batch b;
    b.Put(store::Cf::kEnrollments, Key(i), "acknowledged");
    REQUIRE(s->Write(b).ok());
  }

  disk.fs->set_full(true);
  store::Batch b;
  b.Put(store::Cf::kEnrollments, "while-full", "x");
  Status st = s->Write(b);
  REQUIRE_FALSE(st.ok());
  CHECK(st.code() == Code::kResourceExhausted);
  CHECK(disk.fs->refused() > 0);
  store::Health h = s->health();
  CHECK_FALSE(h.writable);
  CHECK(h.errors[static_cast<size_t>(store::ErrorKind::kNoSpace)] >= 1);
  CHECK(h.reason.find("No space") != std::string::npos);
  CHECK(Has(*s, Key(3)));  // reads still work
  // RocksDB tries to recover at once (flushing the memtables), which the full
  // disk refuses too: recovery has to come from a later attempt.
  const uint64_t refused = disk.fs->refused();
  REQUIRE(WaitUntil([&] { return disk.fs->refused() > refused; }, std::chrono::seconds(10)));
  CHECK_FALSE(s->health().writable);

  disk.fs->set_full(false);
  // RocksDB 7.8 checks for space again every 5 s and resumes writes by itself.
  REQUIRE(WaitUntil([&] { return s->health().writable; }, std::chrono::seconds(30)));
  store::Batch after;
  after.Put(store::Cf::kEnrollments, "after", "x");
  REQUIRE(s->Write(after).ok());
  CHECK(s->health().healthy());
  s.reset();

  auto reopened = store::Store::Open({.path = d.db()});
  REQUIRE(reopened.ok());
  for (int i = 0; i < 10; ++i) CHECK(Has(**reopened, Key(i)));
  CHECK(Has(**reopened, "after"));
  CHECK_FALSE(Has(**reopened, "while-full"));
}

TEST_CASE("results: one sweep removes every expired result, batch after batch", "[queue][retention]") {
  Dir d;
  auto s = std::move(store::Store::Open({.path = d.db()}).value());
  queue::CommandQueue q(s.get());
  const int64_t now = NowMillis();
  store::Batch b;
  for (int i = 0; i < 25; ++i) {
    store::CommandResult r;
    r.command_uuid = "OLD" + std::to_string(i);
    r.status = "Acknowledged";
    r.received_ms = now - 10 * 3600 * 1000 + i;
    q.PutResult(b, "D" + std::to_string(i % 3), r);
  }
  store::CommandResult fresh;
  fresh.command_uuid = "FRESH";
  fresh.received_ms = now;
  q.PutResult(b, "D0", fresh);
  REQUIRE(s->Write(b).ok());

  CHECK(q.SweepResults(now - 3600 * 1000, /*batch_size=*/4).value() == 25);
  for (int i = 0; i < 25; ++i) CHECK_FALSE(q.GetResult("D" + std::to_string(i % 3), "OLD" + std::to_string(i)).value());
  CHECK(q.GetResult("D0", "FRESH").value());
  CHECK(q.SweepResults(now - 3600 * 1000, 4).value() == 0);
  // The time index holds only the fresh result now.
  auto it = s->Scan(store::Cf::kResultsByTime, "", "");
  int left = 0;
  for (; it->Valid(); it->Next()) ++left;
  CHECK(left == 1);

  // A stop request between batches ends the sweep early.
  store::Batch more;
  for (int i = 0; i < 10; ++i) {
    store::CommandResult r;
    r.command_uuid = "AGAIN" + std::to_string(i);
    r.received_ms = now - 10 * 3600 * 1000 + i;
    q.PutResult(more, "D", r);
  }
  REQUIRE(s->Write(more).ok());
  CHECK(q.SweepResults(now - 3600 * 1000, 4, [] { return false; }).value() == 4);
  CHECK(q.SweepResults(now - 3600 * 1000, 4).value() == 6);
}

TEST_CASE("events: one prune removes every expired event, batch after batch", "[events][retention]") {
  Dir d;
  auto s = std::move(store::Store::Open({.path = d.db()}).value());
  auto log = std::move(events::EventLog::Open(s.get()).value());
  const int64_t now = NowMillis();
  for (int i = 0; i < 23; ++i) {
    events::Transaction txn(log.get());
    txn.Emit({.type = "old", .time_ms = now - 10 * 3600 * 1000});
    REQUIRE(log->Commit(txn).ok());
  }
  for (int i = 0; i < 3; ++i) {
    events::Transaction txn(log.get());
    txn.Emit({.type = "young", .time_ms = now});
    REQUIRE(log->Commit(txn).ok());
  }
  CHECK(log->Prune(3600 * 1000, /*batch_size=*/5).value() == 23);
  auto left = log->Read(0, 100).value();
  REQUIRE(left.size() == 3);
  for (const auto& e : left) CHECK(e.type == "young");
  CHECK(log->Prune(3600 * 1000, 5).value() == 0);
}

TEST_CASE("events: an unregistered consumer no longer holds back pruning", "[events][retention]") {
  Dir d;
  auto s = std::move(store::Store::Open({.path = d.db()}).value());
  auto log = std::move(events::EventLog::Open(s.get()).value());
  for (int i = 0; i < 10; ++i) {
    events::Transaction txn(log.get());
    txn.Emit({.type = "e", .time_ms = 1});
    REQUIRE(log->Commit(txn).ok());
  }
  auto all = log->Read(0, 100).value();
  REQUIRE(all.size() == 10);
  REQUIRE(log->SetCheckpoint("live", all.back().seq).ok());
  REQUIRE(log->SetCheckpoint("abandoned", all[1].seq).ok());  // stopped reading long ago
  auto consumers = log->ListConsumers(10).value();
  REQUIRE(consumers.size() == 2);
  CHECK(consumers[0].name == "abandoned");
  CHECK(consumers[0].checkpoint == all[1].seq);
  CHECK(log->ListConsumers(1).value().size() == 1);

  CHECK(log->Prune(0).value() == 2);  // pinned at the abandoned checkpoint
  CHECK(log->UnregisterConsumer("abandoned").value());
  CHECK_FALSE(log->UnregisterConsumer("abandoned").value());  // already gone
  CHECK(log->Prune(0).value() == 8);
  CHECK(log->Read(0, 100).value().empty());
  CHECK(log->ListConsumers(10).value().size() == 1);
}
