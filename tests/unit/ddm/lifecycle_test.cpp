// DDM across an enrollment's life: a check-out drops the channel's
// assignments, token record, DDM state and stored status (or keeps the
// assignments and status with keep_assignments), an acknowledged sync command
// turns DDM on, and writes racing a check-out leave a consistent store. The
// protocol's part (which hook is called when) is in tests/unit/protocol.
// Real RocksDB; the check-out is the transaction the protocol layer makes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "automation/host.h"
#include "ddm/service.h"
#include "domain/commands.h"
#include "domain/tx.h"
#include "support/orchardd_process.h"
#include "support/recording_push.h"
#include "util/encoding.h"

using namespace orchard;

namespace {

struct Host {
  std::string dir = testing::MakeTempDir("orchard-ddm-lifecycle");
  std::unique_ptr<store::Store> db = std::move(store::Store::Open({.path = dir + "/db"}).value());
  std::unique_ptr<events::EventLog> log = std::move(events::EventLog::Open(db.get()).value());
  queue::CommandQueue queue{db.get()};
  domain::Enrollments enrollments{db.get()};
  domain::EnrollmentLocks locks;
  testing::RecordingPush push;
  domain::CommandService commands{{log.get(), &queue, &enrollments, &locks, &push}};
  std::unique_ptr<ddm::DdmService> ddm;

  explicit Host(bool keep_assignments = false) {
    ddm::DdmOptions o;
    o.keep_assignments = keep_assignments;
    ddm = std::make_unique<ddm::DdmService>(
        o, ddm::DdmDeps{db.get(), log.get(), &queue, &enrollments, &locks, &commands});
  }
  ~Host() {
    ddm.reset();
    log.reset();
    db.reset();
    std::filesystem::remove_all(dir);
  }
  store::Enrollment Get(const std::string& id) {
    auto e = enrollments.Get(id).value();
    REQUIRE(e.has_value());
    return *e;
  }
  // Authenticate + first TokenUpdate, with the DDM hook, as the protocol layer does it.
  void Enroll(const std::string& id) {
    domain::Tx tx(&locks, log.get());
    tx.Lock(id);
    auto prev = enrollments.Get(id).value();
    store::Enrollment e = prev.value_or(store::Enrollment{});
    e.id = id;
    e.udid = id;
    e.state = store::EnrollmentState::kEnrolled;
    e.push_token = "tok";
    e.push_magic = "magic";
    e.last_seen_ms = e.enrolled_ms = NowMillis();
    enrollments.Put(tx.batch(), prev, e);
    REQUIRE(ddm->OnEnrolled(tx, e, e.enrolled_ms).ok());
    REQUIRE(tx.Commit().ok());
  }
  // The CheckOut transaction: the record written as checked out, the hook, not yet committed.
  store::Enrollment BeginCheckOut(domain::Tx& tx, const std::string& id) {
    tx.Lock(id);
    auto prev = enrollments.Get(id).value();
    REQUIRE(prev.has_value());
    store::Enrollment e = *prev;
    e.state = store::EnrollmentState::kCheckedOut;
    e.checked_out_ms = e.last_seen_ms = NowMillis();
    enrollments.Put(tx.batch(), prev, e);
    REQUIRE(ddm->OnCheckedOut(tx, e, e.checked_out_ms).ok());
    return e;
  }
  void CheckOut(const std::string& id) {
    domain::Tx tx(&locks, log.get());
    BeginCheckOut(tx, id);
    REQUIRE(tx.Commit().ok());
  }
  protocol::DeviceResponse Checkin(const std::string& id, const std::string& endpoint, const std::string& data = "") {
    protocol::DeclarativeRequest r;
    r.enrollment_id = id;
    r.device_id = id;
    r.endpoint = endpoint;
    r.data = data;
    r.has_data = !data.empty();
    return ddm->Checkin(r);
  }
  std::vector<std::string> Sets(const std::string& id) { return ddm->declarations().EnrollmentSets(id, "", 1000)->items; }
  std::vector<store::QueueEntry> Syncs(const std::string& id) {
    std::vector<store::QueueEntry> out;
    for (auto& q : queue.List(id, 100).value())
      if (q.request_type == "DeclarativeManagement") out.push_back(q);
    return out;
  }
  std::string Token(const std::string& id) { return ddm->declarations().ManifestOf(id)->declarations_token; }
  // The stored token record agrees with the assignments: every write reports a
  // token change exactly when the computed token changes (a stale record would
  // hide one). Unassigns every set, then assigns them again.
  void CheckTokenRecord(const std::string& id) {
    const std::vector<std::string> sets = Sets(id);
    auto step = [&](bool assign, const std::string& set) {
      const std::string before = Token(id);
      auto out = assign ? ddm->Assign(id, set, false) : ddm->Unassign(id, set, false);
      REQUIRE(out.ok());
      INFO((assign ? "assign " : "unassign ") << set);
      CHECK((out->tokens_changed == 1) == (Token(id) != before));
      CHECK(ddm->declarations().TokenOf(id)->declarations_token == Token(id));  // what `tokens` answers
    };
    for (const auto& s : sets) step(false, s);
    for (const auto& s : sets) step(true, s);
  }
};

std::string Passcode(const std::string& identifier, int min_length) {
  return R"({"Type":"com.apple.configuration.passcode.settings","Identifier":")" + identifier +
         R"(","Payload":{"RequirePasscode":true,"MinimumLength":)" + std::to_string(min_length) + "}}";
}

// Declarations cfg.a in set "a" and cfg.b in set "b".
void TwoSets(Host& h) {
  REQUIRE(h.ddm->Put(Passcode("cfg.a", 4), "admin", false).ok());
  REQUIRE(h.ddm->Put(Passcode("cfg.b", 6), "admin", false).ok());
  REQUIRE(h.ddm->SetAdd("a", "cfg.a", false).ok());
  REQUIRE(h.ddm->SetAdd("b", "cfg.b", false).ok());
}

const std::string kReport =
    R"({"StatusItems":{"device":{"operating-system":{"version":"26.0"}},)"
    R"("management":{"declarations":{"configurations":[)"
    R"({"identifier":"cfg.a","server-token":"x","active":true,"valid":"valid"}]}}},)"
    R"("Errors":[{"StatusItem":"device.model","Reasons":[{"Code":"E","Description":"d"}]}]})";

std::string EmptyToken() { return ddm::DeclarationsTokenOf(ddm::Manifest{}); }

}  // namespace

TEST_CASE("ddm lifecycle: a check-out drops the channel's assignments, token record, state and status",
          "[ddm][lifecycle]") {
  Host h;
  TwoSets(h);
  h.Enroll("E1");
  h.Enroll("E2");
  REQUIRE(h.ddm->Assign("E1", "a", false).ok());
  REQUIRE(h.ddm->Assign("E1", "b", false).ok());
  REQUIRE(h.ddm->Assign("E2", "a", false).ok());
  for (const std::string id : {"E1", "E2"}) {
    REQUIRE(h.Checkin(id, "tokens").status == 200);
    REQUIRE(h.Checkin(id, "status", kReport).status == 200);
  }
  REQUIRE(h.ddm->State("E1")->enabled);
  const std::string sync = h.ddm->State("E1")->pending_command;
  REQUIRE_FALSE(sync.empty());
  const std::string e2_token = h.Token("E2");

  h.CheckOut("E1");

  CHECK(h.Sets("E1").empty());
  CHECK(h.ddm->declarations().SetEnrollments("a", "", 100)->items == std::vector<std::string>{"E2"});
  CHECK(h.ddm->declarations().SetEnrollments("b", "", 100)->items.empty());
  auto m = h.ddm->declarations().ManifestOf("E1").value();
  CHECK(m.declarations_token == EmptyToken());
  CHECK(m.changed_ms == 0);  // no token record
  auto state = h.ddm->State("E1").value();
  CHECK_FALSE(state.enabled);
  CHECK(state.served_token.empty());
  CHECK(state.served_ms == 0);
  CHECK(state.status_ms == 0);
  CHECK(state.synced_token.empty());
  CHECK(state.pending_command == sync);  // for OnEnrolled to replace it if never delivered
  auto& st = h.ddm->status();
  CHECK(st.Items("E1", "", "", 100)->items.empty());
  CHECK(st.Declarations("E1", "", 100)->items.empty());
  CHECK(st.Errors("E1")->empty());
  CHECK(st.RawReports("E1", 10)->empty());
  // The other channel keeps everything.
  CHECK(h.Sets("E2") == std::vector<std::string>{"a"});
  CHECK(h.Token("E2") == e2_token);
  CHECK(st.Items("E2", "", "", 100)->items.size() == 1);
  CHECK(st.Declarations("E2", "", 100)->items.size() == 1);
  CHECK(st.RawReports("E2", 10)->size() == 1);
  CHECK(h.ddm->State("E2")->enabled);

  // Enrolling again starts clean: no sets, so no sync command for it (the old
  // undelivered one is replaced only when a new one is queued).
  h.Enroll("E1");
  CHECK(h.Sets("E1").empty());
  CHECK_FALSE(h.ddm->State("E1")->enabled);
  // A new assignment is a token change from the empty manifest's.
  auto assigned = h.ddm->Assign("E1", "b", false);
  REQUIRE(assigned.ok());
  CHECK(assigned->tokens_changed == 1);
  CHECK(assigned->commands_queued == 1);
  REQUIRE(h.Syncs("E1").size() == 1);
  CHECK(h.Syncs("E1")[0].command_uuid != sync);
  h.CheckTokenRecord("E1");
}

TEST_CASE("ddm lifecycle: with keep_assignments a check-out keeps the sets and status, and the next enrollment syncs",
          "[ddm][lifecycle]") {
  Host h(/*keep_assignments=*/true);
  TwoSets(h);
  h.Enroll("E1");
  REQUIRE(h.ddm->Assign("E1", "a", false).ok());
  const std::string token = h.Token("E1");
  const int64_t changed = h.ddm->declarations().ManifestOf("E1")->changed_ms;
  REQUIRE(h.Checkin("E1", "tokens").status == 200);
  REQUIRE(h.Checkin("E1", "status", kReport).status == 200);

  h.CheckOut("E1");

  CHECK(h.Sets("E1") == std::vector<std::string>{"a"});
  CHECK(h.Token("E1") == token);
  CHECK(h.ddm->declarations().ManifestOf("E1")->changed_ms == changed);
  CHECK(h.ddm->status().Items("E1", "", "", 100)->items.size() == 1);
  CHECK(h.ddm->status().Declarations("E1", "", 100)->items.size() == 1);
  // What the device held is gone all the same.
  auto state = h.ddm->State("E1").value();
  CHECK_FALSE(state.enabled);
  CHECK(state.served_token.empty());
  CHECK(state.synced_token.empty());

  // The next enrollment queues the sync command with the kept manifest's token
  // (replacing the undelivered one of the assignment).
  const std::string old = h.ddm->State("E1")->pending_command;
  h.Enroll("E1");
  auto syncs = h.Syncs("E1");
  REQUIRE(syncs.size() == 1);
  auto cmd = plist::ParseXml(syncs[0].plist).value();
  CHECK(cmd.Find("Command")->Find("Data")->AsData()->bytes ==
        ddm::TokensResponseJson(h.ddm->declarations().ManifestOf("E1").value()));
  CHECK(syncs[0].command_uuid != old);
  CHECK(h.ddm->State("E1")->pending_command == syncs[0].command_uuid);
}

TEST_CASE("ddm lifecycle: an acknowledged sync command turns DDM on", "[ddm][lifecycle]") {
  Host h;
  TwoSets(h);
  h.Enroll("E1");
  REQUIRE(h.ddm->Assign("E1", "a", false).ok());
  REQUIRE_FALSE(h.ddm->State("E1")->enabled);
  const std::string uuid = h.ddm->State("E1")->pending_command;
  {
    domain::Tx tx(&h.locks, h.log.get());
    tx.Lock("E1");
    REQUIRE(h.ddm->OnSyncAcknowledged(tx, "E1", uuid, NowMillis()).ok());
    REQUIRE(tx.Commit().ok());
  }
  auto state = h.ddm->State("E1").value();
  CHECK(state.enabled);
  CHECK(state.pending_command == uuid);
  CHECK(state.served_token.empty());  // it has not asked for the tokens yet
  // A second acknowledgement writes nothing.
  domain::Tx tx(&h.locks, h.log.get());
  tx.Lock("E1");
  REQUIRE(h.ddm->OnSyncAcknowledged(tx, "E1", uuid, NowMillis()).ok());
  CHECK(tx.batch().empty());
}

TEST_CASE("ddm lifecycle: a write staged before a check-out and committed after it is dropped again",
          "[ddm][lifecycle]") {
  Host h;
  TwoSets(h);
  h.Enroll("E1");
  REQUIRE(h.ddm->Assign("E1", "a", false).ok());
  // A policy's write reads E1's assignments (set a) and holds the DDM write lock ...
  automation::DdmOp op{automation::DdmOp::Kind::kAssign, "E1", "b"};
  std::vector<std::string> outcomes;
  auto staged = h.ddm->Stage({&op}, "policy:p", NowMillis(), &outcomes);
  REQUIRE(staged.ok());
  REQUIRE((*staged)->enrollments() == std::vector<std::string>{"E1"});
  // ... the device checks out meanwhile (no DDM write lock needed) ...
  h.CheckOut("E1");
  // ... and the write commits after it, holding E1's lock.
  {
    domain::Tx tx(&h.locks, h.log.get());
    tx.LockAll((*staged)->enrollments());
    REQUIRE((*staged)->Write(tx, NowMillis()).ok());
    REQUIRE(tx.Commit().ok());
    (*staged)->Wake();
    staged->reset();
  }
  // The write is ordered before the check-out: nothing of E1's is left, and
  // its token record is gone with its sets (not the write's stale one).
  CHECK(h.Sets("E1").empty());
  CHECK(h.ddm->declarations().SetEnrollments("b", "", 100)->items.empty());
  CHECK(h.Token("E1") == EmptyToken());
  CHECK(h.ddm->declarations().ManifestOf("E1")->changed_ms == 0);
  auto again = h.ddm->Assign("E1", "a", false);
  REQUIRE(again.ok());
  CHECK(again->tokens_changed == 1);
  REQUIRE(h.ddm->Assign("E1", "b", false).ok());
  h.CheckTokenRecord("E1");
}

TEST_CASE("ddm lifecycle: an assignment that changes no token, staged before a check-out, is dropped again",
          "[ddm][lifecycle]") {
  Host h;
  TwoSets(h);
  h.Enroll("E1");
  REQUIRE(h.ddm->Assign("E1", "a", false).ok());
  // An empty set: assigning it changes nothing of E1's manifest or token.
  automation::DdmOp op{automation::DdmOp::Kind::kAssign, "E1", "empty"};
  std::vector<std::string> outcomes;
  auto staged = h.ddm->Stage({&op}, "policy:p", NowMillis(), &outcomes);
  REQUIRE(staged.ok());
  REQUIRE(outcomes[0].empty());
  // Locked with the write all the same (a check-out must not slip in between).
  REQUIRE((*staged)->enrollments() == std::vector<std::string>{"E1"});
  h.CheckOut("E1");
  {
    domain::Tx tx(&h.locks, h.log.get());
    tx.LockAll((*staged)->enrollments());
    REQUIRE((*staged)->Write(tx, NowMillis()).ok());
    REQUIRE(tx.Commit().ok());
    staged->reset();
  }
  CHECK(h.Sets("E1").empty());
  CHECK(h.ddm->declarations().SetEnrollments("empty", "", 100)->items.empty());
  // The admin path: the same with an assignment through the API's write.
  h.Enroll("E2");
  REQUIRE(h.ddm->Assign("E2", "a", false).ok());
  auto direct = h.ddm->Assign("E2", "empty", false);
  REQUIRE(direct.ok());
  CHECK(direct->tokens_changed == 0);
  CHECK(h.Sets("E2") == std::vector<std::string>{"a", "empty"});
}

TEST_CASE("ddm lifecycle: a write that starts while a check-out is uncommitted waits for it", "[ddm][lifecycle]") {
  Host h;
  TwoSets(h);
  h.Enroll("E1");
  REQUIRE(h.ddm->Assign("E1", "a", false).ok());
  Result<ddm::WriteOutcome> assigned = Status::Internal("not run");
  {
    domain::Tx tx(&h.locks, h.log.get());
    h.BeginCheckOut(tx, "E1");
    // The admin's write starts before the check-out commits: it must read what
    // the check-out leaves (whenever the thread gets to run).
    std::thread writer([&] { assigned = h.ddm->Assign("E1", "b", false); });
    REQUIRE(tx.Commit().ok());
    writer.join();
  }
  REQUIRE(assigned.ok());
  CHECK(assigned->tokens_changed == 1);
  CHECK(assigned->commands_queued == 0);  // checked out: told when it enrolls
  CHECK(h.Sets("E1") == std::vector<std::string>{"b"});
  CHECK(h.ddm->declarations().ManifestOf("E1")->configurations.size() == 1);
  h.CheckTokenRecord("E1");
}

TEST_CASE("ddm lifecycle: a check-out that does not commit drops nothing", "[ddm][lifecycle]") {
  Host h;
  TwoSets(h);
  h.Enroll("E1");
  REQUIRE(h.ddm->Assign("E1", "a", false).ok());
  automation::DdmOp op{automation::DdmOp::Kind::kAssign, "E1", "b"};
  std::vector<std::string> outcomes;
  auto staged = h.ddm->Stage({&op}, "policy:p", NowMillis(), &outcomes);
  REQUIRE(staged.ok());
  {
    domain::Tx abandoned(&h.locks, h.log.get());
    h.BeginCheckOut(abandoned, "E1");
  }  // never committed
  domain::Tx tx(&h.locks, h.log.get());
  tx.LockAll((*staged)->enrollments());
  REQUIRE((*staged)->Write(tx, NowMillis()).ok());
  REQUIRE(tx.Commit().ok());
  staged->reset();
  CHECK(h.Sets("E1") == std::vector<std::string>{"a", "b"});
  CHECK(h.Syncs("E1").size() == 1);  // still enrolled: told
  h.CheckTokenRecord("E1");
}

TEST_CASE("ddm lifecycle: check-outs without any write leave a bounded record, and a write settles it",
          "[ddm][lifecycle]") {
  Host h;
  // 3,000 check-outs 100 ms apart (5 minutes) and no DDM write: only the
  // last minute's are kept once more than 1,024 are recorded.
  constexpr int kCheckouts = 3000;
  size_t most = 0;
  for (int i = 0; i < kCheckouts; ++i) {
    store::Enrollment e;
    e.id = "C" + std::to_string(i);
    e.udid = e.id;
    e.state = store::EnrollmentState::kCheckedOut;
    e.checked_out_ms = 1'000'000 + int64_t{i} * 100;
    domain::Tx tx(&h.locks, h.log.get());
    tx.Lock(e.id);
    REQUIRE(h.ddm->OnCheckedOut(tx, e, e.checked_out_ms).ok());
    REQUIRE(tx.Commit().ok());
    most = std::max(most, h.ddm->unsettled_checkouts());
  }
  CHECK(most <= 1025);
  CHECK(h.ddm->unsettled_checkouts() >= 600);  // the last minute's at least
  REQUIRE(h.ddm->Assign("E1", "a", false).ok());  // a write settles them all
  CHECK(h.ddm->unsettled_checkouts() == 0);
}

TEST_CASE("ddm lifecycle: a status report reads the manifest only when it reports declarations", "[ddm][lifecycle]") {
  Host h;
  TwoSets(h);
  h.Enroll("E1");
  REQUIRE(h.ddm->Assign("E1", "a", false).ok());
  auto reads = [&] {
    const auto s = h.ddm->declarations().cache_stats();
    return s.hits + s.misses;
  };
  const uint64_t before = reads();
  REQUIRE(h.Checkin("E1", "status", R"({"StatusItems":{"device":{"operating-system":{"version":"26.1"}}}})").status ==
          200);
  CHECK(reads() == before);
  REQUIRE(h.Checkin("E1", "status", kReport).status == 200);
  CHECK(reads() == before + 1);
}
