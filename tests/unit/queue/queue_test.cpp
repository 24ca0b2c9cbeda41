// The queue's paged listings on a real RocksDB: the newest-first results index
// (results_by_enrollment) and queue pages after a position.
#include <catch2/catch.hpp>

#include <filesystem>
#include <set>

#include "queue/queue.h"
#include "store/records.h"
#include "store/store.h"
#include "support/orchardd_process.h"
#include "unit/store/fault_fs.h"
#include "util/encoding.h"

using namespace orchard;

namespace {
struct TempDb {
  std::string dir = testing::MakeTempDir("orchard-queue");
  std::unique_ptr<store::Store> db = std::move(store::Store::Open({.path = dir + "/db"}).value());
  ~TempDb() {
    db.reset();
    std::filesystem::remove_all(dir);
  }
};

store::CommandResult MakeResult(const std::string& uuid, int64_t received_ms, std::string raw = "<plist/>") {
  store::CommandResult r;
  r.command_uuid = uuid;
  r.request_type = "ProfileList";
  r.status = "Acknowledged";
  r.raw = std::move(raw);
  r.received_ms = received_ms;
  return r;
}

std::vector<std::string> Uuids(const std::vector<store::CommandResult>& rs) {
  std::vector<std::string> out;
  for (const auto& r : rs) out.push_back(r.command_uuid);
  return out;
}
}  // namespace

TEST_CASE("results list newest first in pages without reading the reports", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  store::Batch b;
  for (int i = 0; i < 10; ++i) q.PutResult(b, "D", MakeResult("R" + std::to_string(i), 1000 + i, std::string(100000, 'x')));
  q.PutResult(b, "DX", MakeResult("OTHER", 5000));  // another enrollment whose id extends "D"
  REQUIRE(t.db->Write(b).ok());
  std::vector<std::string> all;
  std::string after;
  for (int page = 0; page < 10; ++page) {
    auto rs = q.ListResults("D", 3, after).value();
    for (const auto& r : rs) CHECK(r.raw.empty());  // summaries only
    auto ids = Uuids(rs);
    all.insert(all.end(), ids.begin(), ids.end());
    if (rs.size() < 3) break;
    after = queue::CommandQueue::ResultPosition(rs.back());
  }
  CHECK(all == std::vector<std::string>{"R9", "R8", "R7", "R6", "R5", "R4", "R3", "R2", "R1", "R0"});
}

TEST_CASE("a result replacing another under the same key replaces its index entry", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  store::Batch b;
  q.PutResult(b, "D", MakeResult("A", 100));
  q.PutResult(b, "D", MakeResult("B", 200));
  REQUIRE(t.db->Write(b).ok());
  store::Batch again;
  auto newer = MakeResult("A", 300);
  newer.status = "Error";
  q.PutResult(again, "D", newer);
  REQUIRE(t.db->Write(again).ok());
  auto rs = q.ListResults("D", 10).value();
  CHECK(Uuids(rs) == std::vector<std::string>{"A", "B"});
  CHECK(rs[0].status == "Error");
}

TEST_CASE("the retention sweep removes index entries with their results", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  store::Batch b;
  q.PutResult(b, "D", MakeResult("OLD", 100));
  q.PutResult(b, "D", MakeResult("NEW", 10000));
  REQUIRE(t.db->Write(b).ok());
  CHECK(q.SweepResults(5000).value() == 1);
  CHECK(Uuids(q.ListResults("D", 10).value()) == std::vector<std::string>{"NEW"});
  auto it = t.db->Scan(store::Cf::kResultsByEnrollment, "", "");
  size_t n = 0;
  for (; it->Valid(); it->Next()) ++n;
  CHECK(n == 1);
}

TEST_CASE("results stored before the index existed are indexed once at start", "[queue]") {
  TempDb t;
  {
    // What an older orchardd left: results and the time index, no per-enrollment index.
    store::Batch b;
    for (int i = 0; i < 2500; ++i) {
      auto r = MakeResult("U" + std::to_string(i), 1000 + i);
      b.Put(store::Cf::kResults, std::string("E") + '\0' + r.command_uuid, r.Encode());
    }
    REQUIRE(t.db->Write(b).ok());
  }
  queue::CommandQueue q(t.db.get());
  auto rs = q.ListResults("E", 3).value();
  CHECK(Uuids(rs) == std::vector<std::string>{"U2499", "U2498", "U2497"});
  // Done once: the marker is set; results written later are indexed as they come.
  auto marker = t.db->Get(store::Cf::kMeta, "queue/results_by_enrollment_v1").value();
  CHECK(marker.has_value());
  store::Batch b;
  b.Put(store::Cf::kResults, std::string("E") + '\0' + "LATE", MakeResult("LATE", 9999999).Encode());
  REQUIRE(t.db->Write(b).ok());
  queue::CommandQueue again(t.db.get());
  CHECK(Uuids(again.ListResults("E", 1).value()) == std::vector<std::string>{"U2499"});
}

TEST_CASE("queue pages continue after a position, also after entries leave", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  store::Batch b;
  for (int i = 0; i < 7; ++i)
    REQUIRE(q.Enqueue(b, "D", {"C" + std::to_string(i), "Settings", "<plist/>", i % 2, "test"}, 1).ok());
  REQUIRE(q.Enqueue(b, "DX", {"X", "Settings", "<plist/>", 0, "test"}, 1).ok());
  REQUIRE(t.db->Write(b).ok());
  auto first = q.ListPage("D", "", 3).value();
  REQUIRE(first.size() == 3);
  std::vector<std::string> seen;
  for (const auto& l : first) seen.push_back(l.entry.command_uuid);
  // The last listed entry leaves the queue: the next page still starts right after it.
  store::Batch rm;
  q.Remove(rm, "D", first.back());
  REQUIRE(t.db->Write(rm).ok());
  const std::string pos = queue::CommandQueue::QueuePosition("D", first.back().key);
  auto rest = q.ListPage("D", pos, 100).value();
  for (const auto& l : rest) seen.push_back(l.entry.command_uuid);
  CHECK(seen == std::vector<std::string>{"C1", "C3", "C5", "C0", "C2", "C4", "C6"});
}

TEST_CASE("queue: no sequence number is used unless its lease is durable", "[queue]") {
  std::string dir = testing::MakeTempDir("orchard-queue-lease");
  testing::FullDiskEnv disk;
  {
    auto db = std::move(store::Store::Open({.path = dir + "/db", .env = disk.env.get()}).value());
    queue::CommandQueue q(db.get());
    // The first enqueue needs a lease; the disk is full: the enqueue fails
    // (it used to go on with a number no durable lease covered).
    disk.fs->set_full(true);
    store::Batch b;
    Status st = q.Enqueue(b, "D", {"U-1", "ProfileList", "<plist/>", 0, "test"}, 1);
    CHECK(st.code() == Code::kResourceExhausted);
    CHECK(b.empty());
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("queue: the newest result of each RequestType is found directly", "[queue]") {
  TempDb t;
  queue::CommandQueue q(t.db.get());
  store::Batch b;
  auto a = MakeResult("A", 100);
  auto c = MakeResult("C", 300);
  auto other = MakeResult("B", 200);
  other.request_type = "SecurityInfo";
  q.PutResult(b, "D", a);
  q.PutResult(b, "D", other);
  q.PutResult(b, "D", c);
  REQUIRE(t.db->Write(b).ok());
  CHECK(q.LatestResult("D", "ProfileList").value()->command_uuid == "C");
  CHECK(q.LatestResult("D", "SecurityInfo").value()->command_uuid == "B");
  CHECK_FALSE(q.LatestResult("D", "DeviceInformation").value().has_value());
  CHECK_FALSE(q.LatestResult("E", "ProfileList").value().has_value());
}
