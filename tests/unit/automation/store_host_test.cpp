// The automation host on real RocksDB: the committer (decisions through the
// command path, records, counters, checkpoint, replay, dry run, parking,
// fencing), the scheduler and the device watch.
#include <catch2/catch.hpp>

#include <filesystem>
#include <mutex>
#include <set>

#include "automation/device_watch.h"
#include "automation/scheduler.h"
#include "automation/store_host.h"
#include "domain/commands.h"
#include "support/store_world.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::automation;

namespace {

using testing::RecordingPush;

struct Host : testing::StoreWorld {
  AutomationStore automation{db.get(), &enrollments, &queue};
  StoreCommitter committer{{&automation, log.get(), &commands, &enrollments, &locks}};

  Host() : StoreWorld("orchard-automation") {}
  void Enroll(const std::string& id, int64_t last_seen_ms = 0, int64_t cert_not_after_ms = 0, bool blocked = false) {
    store::Enrollment e = Enrolled(id);
    e.serial.clear();
    if (last_seen_ms) e.last_seen_ms = last_seen_ms;
    e.cert_not_after_ms = cert_not_after_ms;
    e.cert_sha256 = "abc";
    e.blocked = blocked;
    Put(e);
  }
  std::vector<events::Event> Events(const std::string& type = "") {
    std::vector<events::Event> out;
    for (auto& e : log->Read(0, 100000).value())
      if (type.empty() || e.type == type) out.push_back(e);
    return out;
  }
};

RunRecord Run(uint64_t seq, const std::string& device, Decisions d) {
  RunRecord r;
  r.event.seq = seq;
  r.event.type = "x";
  r.event.enrollment_id = device;
  r.decisions = std::move(d);
  return r;
}

CommandDecision Cmd(const std::string& device, const std::string& uuid) {
  return {device, uuid, "SecurityInfo", "<plist/>", 0, true};
}

}  // namespace

TEST_CASE("committer: decisions, records, counters and the checkpoint land together", "[automation][store]") {
  Host h;
  h.Enroll("D1");
  h.Enroll("D2");
  Decisions d;
  d.commands = {Cmd("D1", "U-1"), Cmd("D2", "U-2"), Cmd("NOPE", "U-3")};
  d.kv = {{"k", std::string("\"v\"")}};
  ComplianceState s;
  s.status = ComplianceStatus::kNonCompliant;
  s.reason = "bad";
  d.compliance = {{"D1", s}};
  d.logs = {{LogLevel::kInfo, "hello"}};
  std::vector<RunRecord> runs{Run(10, "D1", d)};
  REQUIRE(h.committer.Commit({"policy:t", 0, 1}, 10, 1, runs).ok());

  auto q1 = h.queue.List("D1", 10).value();
  REQUIRE(q1.size() == 1);
  CHECK(q1[0].origin == "policy:t");
  CHECK(q1[0].trigger == "0.10");
  CHECK(h.queue.List("D2", 10).value().size() == 1);
  CHECK(**h.automation.KvGet("policy:t", "k") == "\"v\"");
  CHECK(h.automation.Compliance("policy:t", "D1")->value().status == ComplianceStatus::kNonCompliant);
  CHECK(h.automation.ComplianceCounts("policy:t")->at("non_compliant") == 1);
  CHECK(h.log->LaneCheckpoints("policy:t", 0)->at(1).seq == 10);
  CHECK(h.Events("command.enqueued").size() == 2);
  CHECK(h.push.pushed == std::vector<std::string>{"D1", "D2"});
  auto recs = h.automation.Records("dl", "policy:t", "", "", 10).value();
  REQUIRE(recs.items.size() == 1);
  const auto& cmds = *recs.items[0].Find("commands")->AsArray();
  CHECK(cmds[0].GetString("outcome") == "queued");
  CHECK(cmds[2].GetString("outcome") == "unknown_enrollment");
  CHECK(recs.items[0].GetString("cursor") == "0.10");
  // Filter by device.
  CHECK(h.automation.Records("dl", "policy:t", "D2", "", 10)->items.size() == 1);
  CHECK(h.automation.Records("dl", "policy:t", "D9", "", 10)->items.empty());

  // A replay of the same run (a crash before the checkpoint): nothing is queued twice.
  std::vector<RunRecord> again{Run(10, "D1", d)};
  REQUIRE(h.committer.Commit({"policy:t", 0, 1}, 10, 1, again).ok());
  CHECK(h.queue.List("D1", 10).value().size() == 1);
  CHECK(h.Events("command.enqueued").size() == 2);
  auto replayed = h.automation.Records("dl", "policy:t", "", "", 10).value();
  CHECK(replayed.items[0].Find("commands")->AsArray()->at(0).GetString("outcome") == "duplicate");
  // The status did not change: the counter is not counted twice.
  CHECK(h.automation.ComplianceCounts("policy:t")->at("non_compliant") == 1);
  s.status = ComplianceStatus::kCompliant;
  Decisions fix;
  fix.compliance = {{"D1", s}};
  std::vector<RunRecord> runs2{Run(11, "D1", fix)};
  REQUIRE(h.committer.Commit({"policy:t", 0, 1}, 11, 1, runs2).ok());
  CHECK(h.automation.ComplianceCounts("policy:t")->at("non_compliant") == 0);
  CHECK(h.automation.ComplianceCounts("policy:t")->at("compliant") == 1);
}

TEST_CASE("committer: dry runs and parked events are recorded, not applied", "[automation][store]") {
  Host h;
  h.Enroll("D1");
  Decisions d;
  d.commands = {Cmd("D1", "U-1")};
  d.kv = {{"k", std::string("1")}};
  RunRecord dry = Run(5, "D1", d);
  dry.dry_run = true;
  RunRecord parked = Run(6, "D1", Decisions{});
  parked.parked = true;
  parked.attempts = 3;
  parked.outcome = {RunError::kScript, "boom"};
  std::vector<RunRecord> runs{dry, parked};
  REQUIRE(h.committer.Commit({"policy:t", 0, 0}, 6, 1, runs).ok());
  CHECK(h.queue.List("D1", 10)->empty());
  CHECK_FALSE(h.automation.KvGet("policy:t", "k")->has_value());
  CHECK(h.push.pushed.empty());
  auto dl = h.automation.Records("dl", "policy:t", "", "", 10).value();
  REQUIRE(dl.items.size() == 1);
  CHECK(dl.items[0].GetBool("dry_run", false));
  CHECK(dl.items[0].Find("commands")->AsArray()->at(0).GetString("plist") == "<plist/>");
  auto pk = h.automation.Records("pk", "policy:t", "", "", 10).value();
  REQUIRE(pk.items.size() == 1);
  CHECK(pk.items[0].Find("error")->GetString("message") == "boom");
  CHECK(*pk.items[0].Find("attempts")->AsInteger() == 3);
}

TEST_CASE("committer: a lane saved under a newer lease epoch refuses older writers", "[automation][store]") {
  Host h;
  std::vector<RunRecord> none;
  REQUIRE(h.committer.Commit({"c", 0, 0}, 5, 2, none).ok());
  CHECK(h.committer.Commit({"c", 0, 0}, 6, 1, none).code() == Code::kPermissionDenied);
  CHECK(h.committer.Commit({"c", 0, 0}, 6, 2, none).ok());
  auto cps = h.committer.LoadCheckpoints("c", 0).value();
  CHECK(cps.at(0).seq == 6);
  REQUIRE(h.committer.DropCheckpoints("c").ok());
  CHECK(h.committer.LoadCheckpoints("c", 0)->empty());
}

TEST_CASE("records listing pages by cursor and old records are pruned", "[automation][store]") {
  Host h;
  for (uint64_t seq = 1; seq <= 7; ++seq) {
    RunRecord r = Run(seq, "D", Decisions{});
    r.parked = true;
    std::vector<RunRecord> runs{r};
    REQUIRE(h.committer.Commit({"c", 0, 0}, seq, 1, runs).ok());
  }
  auto page = h.automation.Records("pk", "c", "", "", 3).value();
  REQUIRE(page.items.size() == 3);
  CHECK(page.next_after == "0.3");
  page = h.automation.Records("pk", "c", "", page.next_after, 10).value();
  CHECK(page.items.size() == 4);
  CHECK(page.next_after.empty());
  CHECK_FALSE(h.automation.Records("pk", "c", "", "garbage", 10).ok());
  CHECK(h.automation.PruneRecords(NowMillis() - 60000).value() == 0);  // all young
  CHECK(h.automation.PruneRecords(NowMillis() + 60000).value() == 7);
  CHECK(h.automation.Records("pk", "c", "", "", 10)->items.empty());
}

TEST_CASE("scheduler: per-device ticks spread over the splay, durable and once per period", "[automation][scheduler]") {
  Host h;
  for (int i = 0; i < 10; ++i) h.Enroll("D" + std::to_string(i));
  SchedulerOptions so;
  so.batch = 3;
  const int64_t hour = 3600 * 1000;
  const int64_t start = 1'000'000 * hour;  // a period boundary for a 1 h interval
  {
    Scheduler s(so, h.db.get(), h.log.get(), &h.enrollments);
    s.SetSchedules("policy:p", {{"inv", hour, hour / 2, true}});
    CHECK(s.RunRound(start).value() == 0);                  // the splay has just begun
    CHECK(s.RunRound(start + 1).value() == 0);              // no device right at its start
    CHECK(s.RunRound(start + hour / 20 - 1).value() == 0);  // the first after 1/10 of it
    CHECK(s.RunRound(start + hour / 20).value() == 1);
    CHECK(s.RunRound(start + hour / 4).value() == 4);       // half the window: half the devices
  }
  {
    Scheduler s(so, h.db.get(), h.log.get(), &h.enrollments);  // a restart
    s.SetSchedules("policy:p", {{"inv", hour, hour / 2, true}});
    CHECK(s.RunRound(start + hour / 4).value() == 0);       // nothing repeated
    CHECK(s.RunRound(start + hour / 2).value() == 5);       // the rest
    CHECK(s.RunRound(start + hour - 1).value() == 0);       // once per period
    CHECK(s.RunRound(start + hour).value() == 0);           // next period: its splay starts again
    CHECK(s.RunRound(start + hour + hour / 2).value() == 10);
  }
  auto ticks = h.Events("schedule.tick");
  REQUIRE(ticks.size() == 20);
  std::set<std::string> first_period;
  for (size_t i = 0; i < 10; ++i) {
    first_period.insert(ticks[i].enrollment_id);
    CHECK(ticks[i].request_type == "policy:p/inv");
    CHECK(ticks[i].payload_json == R"({"schedule":"inv","period":)" + std::to_string(start) + "}");
  }
  CHECK(ticks[10].payload_json == R"({"schedule":"inv","period":)" + std::to_string(start + hour) + "}");
  CHECK(first_period.size() == 10);
}

TEST_CASE("scheduler: a schedule loaded mid-period spreads its first runs over the splay from then", "[automation][scheduler]") {
  Host h;
  for (int i = 0; i < 10; ++i) h.Enroll("D" + std::to_string(i));
  const int64_t hour = 3600 * 1000;
  const int64_t start = 1'000'000 * hour;
  const int64_t loaded = start + hour / 2;  // past this period's splay window
  {
    Scheduler s({}, h.db.get(), h.log.get(), &h.enrollments);
    s.SetSchedules("policy:p", {{"inv", hour, hour / 4, true}});
    CHECK(s.RunRound(loaded).value() == 0);              // not the whole fleet at once
    CHECK(s.RunRound(loaded + hour / 8).value() == 5);   // half the splay: half the devices
  }
  {
    Scheduler s({}, h.db.get(), h.log.get(), &h.enrollments);  // a restart keeps the window
    s.SetSchedules("policy:p", {{"inv", hour, hour / 4, true}});
    CHECK(s.RunRound(loaded + hour / 8).value() == 0);
    CHECK(s.RunRound(loaded + hour / 4).value() == 5);
    CHECK(s.RunRound(start + hour).value() == 0);        // later periods open at their start
    CHECK(s.RunRound(start + hour + hour / 4).value() == 10);
    // A changed interval is a new schedule: its window opens when it is seen.
    s.SetSchedules("policy:p", {{"inv", 2 * hour, hour / 4, true}});
    CHECK(s.RunRound(start + hour + hour / 2).value() == 0);
    CHECK(s.RunRound(start + hour + hour / 2 + hour / 4).value() == 10);
  }
  CHECK(h.Events("schedule.tick").size() == 30);
}

TEST_CASE("scheduler: a fleet schedule loaded mid-period waits for its offset from then", "[automation][scheduler]") {
  Host h;
  Scheduler s({}, h.db.get(), h.log.get(), &h.enrollments);
  const int64_t day = 86400 * 1000LL;
  s.SetSchedules("policy:p", {{"fleet", day, day / 4, false}});
  const int64_t loaded = 100 * day + day / 2;  // this period's splay window has passed
  CHECK(s.RunRound(loaded).value() == 0);          // its offset counts from now
  CHECK(s.RunRound(loaded + day / 4).value() == 1);
  CHECK(s.RunRound(loaded + day / 4 + 1).value() == 0);
  CHECK(h.Events("schedule.tick").size() == 1);
}

TEST_CASE("scheduler: a per-period schedule ticks once per period, and a removed one stops", "[automation][scheduler]") {
  Host h;
  Scheduler s({}, h.db.get(), h.log.get(), &h.enrollments);
  const int64_t day = 86400 * 1000LL;
  s.SetSchedules("policy:p", {{"fleet", day, 0, false}});
  CHECK(s.RunRound(100 * day + 5).value() == 1);
  CHECK(s.RunRound(100 * day + 10).value() == 0);
  CHECK(s.RunRound(101 * day).value() == 1);
  auto ticks = h.Events("schedule.tick");
  REQUIRE(ticks.size() == 2);
  CHECK(ticks[0].enrollment_id.empty());
  s.SetSchedules("policy:p", {});
  CHECK(s.RunRound(102 * day).value() == 0);
}

TEST_CASE("device watch: silence and identity expiry, once per threshold", "[automation][watch]") {
  Host h;
  const int64_t day = 86400 * 1000LL;
  const int64_t now = NowMillis();
  h.Enroll("SILENT", now - 8 * day);
  h.Enroll("FRESH", now - day / 2, now + 200 * day);
  h.Enroll("EXPIRING", now, now + 10 * day);
  h.Enroll("BLOCKED", now - 40 * day, 0, /*blocked=*/true);
  DeviceWatch w({{7, 30}, {1, 7, 14, 30}, 2}, h.db.get(), h.log.get(), &h.enrollments);
  size_t total = 0;
  for (int i = 0; i < 3; ++i) total += w.Round(now).value();  // pages of 2: every device seen
  auto silent = h.Events("device.silent");
  REQUIRE(silent.size() == 1);
  CHECK(silent[0].enrollment_id == "SILENT");
  CHECK(silent[0].payload_json.find("\"threshold_days\":7") != std::string::npos);
  auto expiring = h.Events("certificate.expiring");
  REQUIRE(expiring.size() == 1);
  CHECK(expiring[0].enrollment_id == "EXPIRING");
  CHECK(expiring[0].payload_json.find("\"kind\":\"identity\"") != std::string::npos);
  CHECK(expiring[0].payload_json.find("\"threshold_days\":14") != std::string::npos);
  CHECK(total == 2);
  // Again: nothing new. Later: the next thresholds, once.
  for (int i = 0; i < 3; ++i) REQUIRE(w.Round(now).ok());
  CHECK(h.Events("device.silent").size() == 1);
  for (int i = 0; i < 3; ++i) REQUIRE(w.Round(now + 23 * day).ok());
  // SILENT reaches 30 days; FRESH and EXPIRING (not seen for 23 days) reach 7.
  CHECK(h.Events("device.silent").size() == 4);
  // EXPIRING's certificate has expired: the 1-day threshold; FRESH's is far off.
  CHECK(h.Events("certificate.expiring").size() == 2);
}
