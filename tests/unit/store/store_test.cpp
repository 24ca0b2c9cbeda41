// Store, queue and event log on a real RocksDB in a temp directory.
#include <catch2/catch.hpp>

#include <filesystem>
#include <thread>

#include "events/events.h"
#include "domain/enrollments.h"
#include "queue/queue.h"
#include "store/records.h"
#include "store/store.h"
#include "support/orchardd_process.h"
#include "util/encoding.h"

using namespace orchard;

namespace {
struct TempDb {
  std::string dir = testing::MakeTempDir("orchard-store");
  std::unique_ptr<store::Store> db;
  TempDb() { Open(); }
  void Open() { db = std::move(store::Store::Open({.path = dir + "/db"}).value()); }
  void Reopen() {
    db.reset();
    Open();
  }
  ~TempDb() {
    db.reset();
    std::filesystem::remove_all(dir);
  }
};

queue::NewCommand Cmd(const std::string& uuid, int priority = 0) {
  return {uuid, "DeviceInformation", "<plist>" + uuid + "</plist>", priority, "test"};
}
}  // namespace

TEST_CASE("records round-trip and reject corruption", "[store]") {
  store::Enrollment e;
  e.id = "U:1";
  e.type = store::EnrollmentType::kUser;
  e.serial = "S";
  e.push_token = std::string("\0\1\2", 3);
  e.state = store::EnrollmentState::kEnrolled;
  e.last_seen_ms = 123456789;
  e.blocked = true;
  auto d = store::Enrollment::Decode(e.Encode());
  REQUIRE(d.ok());
  CHECK(d->id == "U:1");
  CHECK(d->type == store::EnrollmentType::kUser);
  CHECK(d->push_token == e.push_token);
  CHECK(d->last_seen_ms == 123456789);
  CHECK(d->blocked);
  std::string bytes = e.Encode();
  CHECK_FALSE(store::Enrollment::Decode(bytes.substr(0, 3)).ok());  // cut inside a field
  CHECK(store::Enrollment::Decode(bytes.substr(0, 5)).ok());  // an older, shorter record
  CHECK_FALSE(store::Enrollment::Decode("").ok());
}

TEST_CASE("records: command sessions round-trip and older records read session 0", "[store]") {
  store::Enrollment e;
  e.id = "U";
  e.blocked = true;
  e.session = 41;
  auto d = store::Enrollment::Decode(e.Encode());
  REQUIRE(d.ok());
  CHECK(d->session == 41);
  CHECK(d->blocked);
  // The session is the last field: without it, the record an older build wrote.
  e.session = 0;
  std::string current = e.Encode();
  REQUIRE(current.back() == '\0');
  auto old = store::Enrollment::Decode(current.substr(0, current.size() - 1));
  REQUIRE(old.ok());
  CHECK(old->session == 0);
  CHECK(old->blocked);

  store::QueueEntry q;
  q.command_uuid = "C";
  q.status = store::QueueStatus::kNotNow;
  q.not_now_for_sent_ms = 5;
  q.not_now_session = 9;
  q.deliveries = 4;  // not part of the record (it lives in the queue index)
  auto qd = store::QueueEntry::Decode(q.Encode());
  REQUIRE(qd.ok());
  CHECK(qd->not_now_session == 9);
  CHECK(qd->not_now_for_sent_ms == 5);
  CHECK(qd->deliveries == 0);
  q.not_now_session = 0;
  std::string q_current = q.Encode();
  REQUIRE(q_current.back() == '\0');
  auto q_old = store::QueueEntry::Decode(q_current.substr(0, q_current.size() - 1));
  REQUIRE(q_old.ok());
  CHECK(q_old->not_now_session == 0);
  CHECK(q_old->not_now_for_sent_ms == 5);
  CHECK(q_old->status == store::QueueStatus::kNotNow);
}

TEST_CASE("a locked database is a clear error", "[store]") {
  TempDb t;
  auto second = store::Store::Open({.path = t.dir + "/db"});
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().message().find(t.dir) != std::string::npos);
}

TEST_CASE("counters add atomically across batches and survive reopen", "[store]") {
  TempDb t;
  for (int i = 0; i < 10; ++i) {
    store::Batch b;
    b.AddCounter("c", 3);
    b.AddCounter("c", -1);
    REQUIRE(t.db->Write(b).ok());
  }
  CHECK(t.db->GetCounter("c").value() == 20);
  t.Reopen();
  CHECK(t.db->GetCounter("c").value() == 20);
  CHECK(t.db->GetCounter("missing").value() == 0);
}

TEST_CASE("counter deltas in one batch are summed per counter, in order with puts and deletes of it", "[store]") {
  TempDb t;
  store::Batch b;
  for (int i = 0; i < 100000; ++i) b.AddCounter("many", 1);
  b.AddCounter("cancel", 5);
  b.AddCounter("cancel", -5);
  b.AddCounter("reset", 7);
  b.Put(store::Cf::kCounters, "reset", std::string("\x02\0\0\0\0\0\0\0", 8));  // the put wins over the 7 before it
  b.AddCounter("reset", 1);                                                            // and this adds to it
  b.AddCounter("gone", 4);
  b.Delete(store::Cf::kCounters, "gone");
  b.AddCounter("r1", 2);
  b.AddCounter("r2", 2);
  b.DeleteRange(store::Cf::kCounters, "r1", "r2");  // takes r1's delta, not r2's
  b.AddCounter("many", -1);
  REQUIRE(t.db->Write(b).ok());
  CHECK(t.db->GetCounter("many").value() == 99999);
  CHECK(t.db->GetCounter("cancel").value() == 0);
  CHECK(t.db->GetCounter("reset").value() == 3);
  CHECK(t.db->GetCounter("gone").value() == 0);
  CHECK(t.db->GetCounter("r1").value() == 0);
  CHECK(t.db->GetCounter("r2").value() == 2);
  store::Batch more;
  more.AddCounter("many", 1);
  REQUIRE(t.db->Write(more).ok());
  t.Reopen();
  CHECK(t.db->GetCounter("many").value() == 100000);
}

TEST_CASE("queue: FIFO within priority, find, remove, clear, depth", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  store::Batch b;
  REQUIRE(q.Enqueue(b, "D", Cmd("A"), 1).ok());
  REQUIRE(q.Enqueue(b, "D", Cmd("B"), 1).ok());
  REQUIRE(q.Enqueue(b, "D", Cmd("HI", 200), 1).ok());
  REQUIRE(q.Enqueue(b, "DX", Cmd("OTHER"), 1).ok());  // a neighbour whose id extends "D"
  REQUIRE(t.db->Write(b).ok());
  store::Batch dup;
  CHECK(q.Enqueue(dup, "D", Cmd("A"), 1).code() == Code::kAlreadyExists);

  auto list = q.List("D", 10).value();
  REQUIRE(list.size() == 3);
  CHECK(list[0].command_uuid == "HI");
  CHECK(list[1].command_uuid == "A");
  CHECK(list[2].command_uuid == "B");
  CHECK(q.Depth().value() == 4);

  auto next = q.Next("D", 0).value();
  REQUIRE(next);
  CHECK(next->entry.command_uuid == "HI");
  store::Batch rm;
  q.Remove(rm, "D", *next);
  REQUIRE(t.db->Write(rm).ok());
  CHECK(q.Next("D", 0).value()->entry.command_uuid == "A");
  CHECK_FALSE(q.Find("D", "HI").value());

  // NotNow entries are skipped within the session they were answered in only.
  auto a = *q.Find("D", "A").value();
  a.entry.status = store::QueueStatus::kNotNow;
  a.entry.not_now_session = 7;
  store::Batch up;
  q.Update(up, "D", a);
  REQUIRE(t.db->Write(up).ok());
  CHECK(q.Next("D", 7).value()->entry.command_uuid == "B");
  CHECK(q.Next("D", 8).value()->entry.command_uuid == "A");

  // A delivery is recorded in the index, visible through Find and List.
  auto b_entry = *q.Find("D", "B").value();
  store::Batch sent;
  q.MarkSent(sent, "D", b_entry, 424242);
  REQUIRE(t.db->Write(sent).ok());
  CHECK(q.Find("D", "B").value()->entry.last_sent_ms == 424242);
  CHECK(q.List("D", 10).value()[1].last_sent_ms == 424242);
  CHECK(q.Next("D", 7).value()->entry.command_uuid == "B");  // still queued

  store::Batch clr;
  CHECK(q.Clear(clr, "D").value() == 2);
  REQUIRE(t.db->Write(clr).ok());
  CHECK(q.List("D", 10).value().empty());
  CHECK(q.List("DX", 10).value().size() == 1);
  CHECK(q.Depth().value() == 1);
}

TEST_CASE("queue: deliveries without a report are counted in the index", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  store::Batch b;
  REQUIRE(q.Enqueue(b, "D", Cmd("A"), 1).ok());
  REQUIRE(t.db->Write(b).ok());
  for (int i = 1; i <= 3; ++i) {
    auto next = q.Next("D", 0).value();
    REQUIRE(next);
    CHECK(next->entry.deliveries == i - 1);
    store::Batch sent;
    q.MarkSent(sent, "D", *next, 1000 * i);
    REQUIRE(t.db->Write(sent).ok());
  }
  auto a = *q.Find("D", "A").value();
  CHECK(a.entry.deliveries == 3);
  CHECK(a.entry.last_sent_ms == 3000);
  CHECK(q.List("D", 10).value()[0].deliveries == 3);
  // A report (NotNow) starts the count again; the delivery time stays.
  store::Batch answered;
  q.MarkAnswered(answered, "D", a);
  REQUIRE(t.db->Write(answered).ok());
  a = *q.Find("D", "A").value();
  CHECK(a.entry.deliveries == 0);
  CHECK(a.entry.last_sent_ms == 3000);
  CHECK(q.Next("D", 0).value()->entry.deliveries == 0);

  // An index value written before the count existed (suffix + time) reads as one delivery.
  std::string old_value = std::string(a.key).substr(2);
  PutBigEndian64(&old_value, 5000);
  store::Batch legacy;
  legacy.Put(store::Cf::kQueueIndex, std::string("D") + '\0' + "A", old_value);
  REQUIRE(t.db->Write(legacy).ok());
  a = *q.Find("D", "A").value();
  CHECK(a.entry.deliveries == 1);
  CHECK(a.entry.last_sent_ms == 5000);
}

TEST_CASE("queue: too-long CommandUUID or RequestType is refused at enqueue", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  store::Batch b;
  auto st = q.Enqueue(b, "D", Cmd(std::string(129, 'U')), 1);
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(st.message().find("CommandUUID") != std::string::npos);
  queue::NewCommand long_type = Cmd("OK");
  long_type.request_type = std::string(129, 'T');
  st = q.Enqueue(b, "D", long_type, 1);
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(st.message().find("RequestType") != std::string::npos);
  CHECK(b.empty());
  CHECK(q.Enqueue(b, "D", Cmd(std::string(128, 'U')), 1).ok());
}

TEST_CASE("queue: a higher-priority enqueue after delivery is not hidden by the head hint", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  store::Batch b;
  REQUIRE(q.Enqueue(b, "D", Cmd("LOW1"), 1).ok());
  REQUIRE(q.Enqueue(b, "D", Cmd("LOW2"), 1).ok());
  REQUIRE(t.db->Write(b).ok());
  CHECK(q.Next("D", 0).value()->entry.command_uuid == "LOW1");  // sets the hint
  store::Batch hi;
  REQUIRE(q.Enqueue(hi, "D", Cmd("HIGH", 50), 2).ok());
  REQUIRE(t.db->Write(hi).ok());
  CHECK(q.Next("D", 0).value()->entry.command_uuid == "HIGH");
}

TEST_CASE("queue: the head stays O(1) after many deliveries (tombstones skipped)", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  const int n = 20000;
  store::Batch b;
  for (int i = 0; i < n; ++i) REQUIRE(q.Enqueue(b, "D", Cmd("C" + std::to_string(i)), 1).ok());
  REQUIRE(t.db->Write(b).ok());
  for (int i = 0; i < n - 1; ++i) {
    auto next = q.Next("D", 0).value();
    REQUIRE(next);
    REQUIRE(next->entry.command_uuid == "C" + std::to_string(i));
    store::Batch rm;
    q.Remove(rm, "D", *next);
    REQUIRE(t.db->Write(rm).ok());
  }
  CHECK(q.Next("D", 0).value()->entry.command_uuid == "C" + std::to_string(n - 1));
  CHECK(q.Depth().value() == 1);
}

TEST_CASE("queue: order survives a restart even if the clock went back", "[queue]") {
  TempDb t;
  // A previous process ran with a clock far ahead (its lease is stored).
  std::string far;
  PutBigEndian64(&far, static_cast<uint64_t>(NowMillis()) * 1000 + 1000000000000ULL);
  store::Batch lease;
  lease.Put(store::Cf::kMeta, "queue/seq_lease_end", far);
  REQUIRE(t.db->Write(lease).ok());
  {
    queue::CommandQueue q(t.db.get());
    store::Batch b;
    REQUIRE(q.Enqueue(b, "D", Cmd("FIRST"), 1).ok());
    REQUIRE(t.db->Write(b).ok());
  }
  t.Reopen();
  queue::CommandQueue q(t.db.get());
  store::Batch b;
  REQUIRE(q.Enqueue(b, "D", Cmd("SECOND"), 1).ok());
  REQUIRE(t.db->Write(b).ok());
  auto list = q.List("D", 10).value();
  REQUIRE(list.size() == 2);
  CHECK(list[0].command_uuid == "FIRST");
  CHECK(list[1].command_uuid == "SECOND");
}

TEST_CASE("results: stored, listed newest first, swept after retention", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  const int64_t now = NowMillis();
  store::Batch b;
  for (int i = 0; i < 5; ++i) {
    store::CommandResult r;
    r.command_uuid = "R" + std::to_string(i);
    r.status = "Acknowledged";
    r.received_ms = now - (5 - i) * 3600 * 1000;  // 5h .. 1h ago
    q.PutResult(b, "D", r);
  }
  REQUIRE(t.db->Write(b).ok());
  auto list = q.ListResults("D", 10).value();
  REQUIRE(list.size() == 5);
  CHECK(list.front().command_uuid == "R4");
  CHECK(q.SweepResults(now - 150 * 60 * 1000).value() == 3);  // older than 2.5h
  CHECK_FALSE(q.GetResult("D", "R0").value());
  CHECK_FALSE(q.GetResult("D", "R2").value());
  CHECK(q.GetResult("D", "R3").value());
  CHECK(q.ListResults("D", 10).value().size() == 2);
}

TEST_CASE("events: ordered, checkpointed, durable, pruned below checkpoints", "[events]") {
  TempDb t;
  auto log = std::move(events::EventLog::Open(t.db.get()).value());
  for (int i = 0; i < 10; ++i) {
    events::Transaction txn(log.get());
    txn.batch().Put(store::Cf::kMeta, "k" + std::to_string(i), "v");
    txn.Emit({.type = "test.event", .time_ms = 1, .enrollment_id = "E" + std::to_string(i)});
    REQUIRE(log->Commit(txn).ok());
  }
  auto all = log->Read(0, 100).value();
  REQUIRE(all.size() == 10);
  for (size_t i = 1; i < all.size(); ++i) CHECK(all[i].seq > all[i - 1].seq);
  CHECK(all[3].enrollment_id == "E3");
  // State and event land together.
  CHECK(t.db->Get(store::Cf::kMeta, "k3").value().has_value());

  REQUIRE(log->SetCheckpoint("policy", all[4].seq).ok());
  CHECK(log->GetCheckpoint("policy").value() == all[4].seq);
  CHECK(log->Read(log->GetCheckpoint("policy").value(), 100).value().size() == 5);
  CHECK(log->Prune(0).value() == 5);  // only what every consumer has seen
  CHECK(log->Read(0, 100).value().size() == 5);

  const uint64_t last = all.back().seq;
  log.reset();
  t.Reopen();
  log = std::move(events::EventLog::Open(t.db.get()).value());
  CHECK(log->GetCheckpoint("policy").value() == all[4].seq);
  events::Transaction txn(log.get());
  txn.Emit({.type = "after.restart"});
  REQUIRE(log->Commit(txn).ok());
  auto after = log->Read(last, 10).value();
  REQUIRE(after.size() == 1);
  CHECK(after[0].seq > last);  // sequence numbers never go back
}

TEST_CASE("events: sequences are taken at commit, so a slow transaction holds no reader back", "[events]") {
  TempDb t;
  auto log = std::move(events::EventLog::Open(t.db.get()).value());
  const uint64_t base = log->Watermark();
  events::Transaction slow(log.get());
  slow.Emit({.type = "slow"});
  events::Transaction fast(log.get());
  fast.Emit({.type = "fast"});
  REQUIRE(log->Commit(fast).ok());
  CHECK(log->WaitFor(base, std::chrono::milliseconds(0)));  // not held back by "slow"
  REQUIRE(log->Read(0, 10).value().size() == 1);
  REQUIRE(log->Commit(slow).ok());
  auto evs = log->Read(0, 10).value();
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].type == "fast");  // commit order
  CHECK(evs[1].type == "slow");
  CHECK(slow.sequences() == std::vector<uint64_t>{evs[1].seq});
  // An abandoned transaction leaves no hole behind.
  { events::Transaction dropped(log.get()); dropped.Emit({.type = "never"}); }
  events::Transaction later(log.get());
  later.Emit({.type = "later"});
  REQUIRE(log->Commit(later).ok());
  CHECK(log->Read(evs[1].seq, 10).value().size() == 1);
}

TEST_CASE("events: a reader following concurrent writers sees every event once, in order", "[events]") {
  TempDb t;
  auto log = std::move(events::EventLog::Open(t.db.get()).value());
  constexpr int kWriters = 4, kTxns = 400;
  std::atomic<bool> done{false};
  std::vector<uint64_t> seen;
  std::thread reader([&] {
    uint64_t after = 0;
    while (true) {
      const bool finished = done.load();
      auto batch = log->Read(after, 64);
      REQUIRE(batch.ok());
      for (const auto& e : *batch) {
        seen.push_back(e.seq);
        after = e.seq;
      }
      if (batch->empty()) {
        if (finished) break;
        log->WaitFor(after, std::chrono::milliseconds(5));
      }
    }
  });
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < kTxns; ++i) {
        events::Transaction txn(log.get());
        for (int k = 0; k <= (i + w) % 3; ++k) txn.Emit({.type = "x"});
        REQUIRE(log->Commit(txn).ok());
      }
    });
  }
  for (auto& th : writers) th.join();
  done = true;
  reader.join();
  size_t expected = 0;
  for (int w = 0; w < kWriters; ++w)
    for (int i = 0; i < kTxns; ++i) expected += 1 + (i + w) % 3;
  CHECK(seen.size() == expected);  // nothing skipped by a reader racing a commit
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end());
}

TEST_CASE("enrollments: counters by state, serial index, paging and filters", "[store]") {
  TempDb t;
  domain::Enrollments en(t.db.get());
  for (int i = 0; i < 25; ++i) {
    store::Enrollment e;
    e.id = "ID" + std::string(i < 10 ? "0" : "") + std::to_string(i);
    e.serial = "SER" + std::to_string(i % 5);
    e.model = i % 2 ? "iPhone15,2" : "Mac14,2";
    e.os_version = i % 3 ? "17.4" : "16.7";
    e.state = i % 4 ? store::EnrollmentState::kEnrolled : store::EnrollmentState::kAuthenticated;
    e.last_seen_ms = 1000 * i;
    store::Batch b;
    en.Put(b, std::nullopt, e);
    REQUIRE(t.db->Write(b).ok());
  }
  CHECK(en.CountInState(store::EnrollmentState::kEnrolled).value() == 18);
  CHECK(en.CountInState(store::EnrollmentState::kAuthenticated).value() == 7);

  // Changing serial and state keeps index and counters right.
  auto prev = en.Get("ID00").value();
  store::Enrollment e = *prev;
  e.serial = "NEW";
  e.state = store::EnrollmentState::kEnrolled;
  store::Batch b;
  en.Put(b, prev, e);
  REQUIRE(t.db->Write(b).ok());
  CHECK(en.CountInState(store::EnrollmentState::kEnrolled).value() == 19);
  CHECK(en.List({.serial = "NEW"}, "", 10).value().items.size() == 1);
  CHECK(en.List({.serial = "SER0"}, "", 10).value().items.size() == 4);

  // Paging visits every enrollment exactly once.
  std::set<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    auto page = en.List({}, cursor, 7).value();
    for (auto& x : page.items) CHECK(seen.insert(x.id).second);
    cursor = page.next_cursor;
    ++pages;
  } while (!cursor.empty() && pages < 10);
  CHECK(seen.size() == 25);
  CHECK(pages == 4);
  // A tiny scan budget still pages correctly.
  seen.clear();
  cursor.clear();
  pages = 0;
  do {
    auto page = en.List({.model = "Mac14,2"}, cursor, 100, 3).value();
    for (auto& x : page.items) CHECK(seen.insert(x.id).second);
    cursor = page.next_cursor;
  } while (!cursor.empty() && ++pages < 100);
  CHECK(seen.size() == 13);

  CHECK(en.List({.os_version = "16."}, "", 100).value().items.size() == 9);
  CHECK(en.List({.state = "authenticated"}, "", 100).value().items.size() == 6);
  CHECK(en.List({.seen_after_ms = 20000}, "", 100).value().items.size() == 5);
}
