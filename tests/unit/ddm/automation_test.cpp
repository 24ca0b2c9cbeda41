// DDM writes decided by automation consumers (Lua policies, plugins): the
// committer stages them through DdmService (each write sees the ones before
// it), commits them with the token records, sync commands and the consumer's
// checkpoint in one transaction, records each write's outcome, and pushes
// after the commit. Real RocksDB.
#include <catch2/catch.hpp>

#include "automation/store_host.h"
#include "ddm/service.h"
#include "domain/commands.h"
#include "support/store_world.h"

using namespace orchard;
using automation::DdmOp;
using automation::Decisions;
using automation::RunRecord;

namespace {

struct Host : testing::StoreWorld {
  ddm::DdmService ddm{ddm::DdmOptions{}, ddm::DdmDeps{db.get(), log.get(), &queue, &enrollments, &locks, &commands}};
  automation::AutomationStore automation{db.get(), &enrollments, &queue};
  automation::StoreCommitter committer{{&automation, log.get(), &commands, &enrollments, &locks}};

  Host() : StoreWorld("orchard-ddm-automation") { automation.SetDdm(&ddm); }
  std::vector<store::QueueEntry> Syncs(const std::string& id) {
    std::vector<store::QueueEntry> out;
    for (auto& q : queue.List(id, 100).value())
      if (q.request_type == "DeclarativeManagement") out.push_back(q);
    return out;
  }
  Status Commit(uint64_t seq, Decisions d, bool dry_run = false) {
    RunRecord r;
    r.event.seq = seq;
    r.event.type = "ddm.status.changed";
    r.event.enrollment_id = "E1";
    r.decisions = std::move(d);
    r.dry_run = dry_run;
    std::vector<RunRecord> runs{std::move(r)};
    return committer.Commit({"policy:min-os", 0, 1}, seq, 1, runs);
  }
  plist::Value LastRecord() {
    auto recs = automation.Records("dl", "policy:min-os", "", "", 100).value();
    REQUIRE(!recs.items.empty());
    return recs.items.back();
  }
};

const std::string kConfig =
    R"({"Type":"com.apple.configuration.softwareupdate.enforcement.specific","Identifier":"min-os.cfg",)"
    R"("Payload":{"TargetOSVersion":"26.1","TargetLocalDateTime":"2026-12-15T18:00:00"}})";
const std::string kActivation =
    R"({"Type":"com.apple.activation.simple","Identifier":"min-os.act",)"
    R"("Payload":{"StandardConfigurations":["min-os.cfg"]}})";

DdmOp Op(DdmOp::Kind k, std::string a, std::string b = {}) { return {k, std::move(a), std::move(b)}; }

}  // namespace

TEST_CASE("ddm automation: a run's writes see each other and commit with its checkpoint", "[ddm][automation]") {
  Host h;
  h.Enroll("E1");
  Decisions d;
  // Declarations, set membership and the assignment in one run: each write
  // needs the ones before it (set_add of a declaration put in this run).
  d.ddm = {Op(DdmOp::Kind::kPutDeclaration, kConfig), Op(DdmOp::Kind::kPutDeclaration, kActivation),
           Op(DdmOp::Kind::kSetAdd, "min-os.ios", "min-os.cfg"), Op(DdmOp::Kind::kSetAdd, "min-os.ios", "min-os.act"),
           Op(DdmOp::Kind::kAssign, "E1", "min-os.ios")};
  REQUIRE(h.Commit(7, d).ok());

  auto cfg = h.ddm.declarations().Get("min-os.cfg").value();
  REQUIRE(cfg.has_value());
  CHECK(cfg->owner == "policy:min-os");
  auto m = h.ddm.declarations().ManifestOf("E1").value();
  CHECK(m.activations.size() == 1);
  CHECK(m.configurations.size() == 1);
  // One sync command, carrying the final token (not one per write).
  auto syncs = h.Syncs("E1");
  REQUIRE(syncs.size() == 1);
  CHECK(syncs[0].plist.find(m.declarations_token) == std::string::npos);  // Data is base64 in the plist
  auto parsed = plist::ParseXml(syncs[0].plist).value();
  const plist::Value* data = parsed.Find("Command")->Find("Data");
  REQUIRE(data != nullptr);
  CHECK(data->AsData()->bytes == ddm::TokensResponseJson(m));
  CHECK(h.push.pushed == std::vector<std::string>{"E1"});
  CHECK(h.log->LaneCheckpoints("policy:min-os", 0)->at(1).seq == 7);
  const plist::Value rec = h.LastRecord();
  const auto& ops = *rec.Find("ddm")->AsArray();
  REQUIRE(ops.size() == 5);
  for (const auto& o : ops) CHECK(o.GetString("outcome") == "applied");
  CHECK(ops[4].GetString("op") == "assign");
  CHECK(ops[4].GetString("enrollment_id") == "E1");

  // A replay (a crash before the checkpoint was seen) changes nothing more.
  REQUIRE(h.Commit(7, d).ok());
  CHECK(h.Syncs("E1").size() == 1);
  CHECK(h.ddm.declarations().ManifestOf("E1")->declarations_token == m.declarations_token);

  // Unassigning in a later run: a new token, the undelivered sync command replaced.
  Decisions later;
  later.ddm = {Op(DdmOp::Kind::kUnassign, "E1", "min-os.ios")};
  REQUIRE(h.Commit(8, later).ok());
  auto after = h.ddm.declarations().ManifestOf("E1").value();
  CHECK(after.activations.empty());
  CHECK(after.declarations_token != m.declarations_token);
  REQUIRE(h.Syncs("E1").size() == 1);
  CHECK(plist::ParseXml(h.Syncs("E1")[0].plist)->Find("Command")->Find("Data")->AsData()->bytes ==
        ddm::TokensResponseJson(after));
}

TEST_CASE("ddm automation: a refused write is recorded and skipped, the others stand", "[ddm][automation]") {
  Host h;
  h.Enroll("E1");
  Decisions d;
  d.ddm = {Op(DdmOp::Kind::kSetAdd, "s1", "no-such-declaration"), Op(DdmOp::Kind::kPutDeclaration, kConfig),
           Op(DdmOp::Kind::kPutDeclaration, R"({"Type":"com.apple.configuration.x","Identifier":"a/b","Payload":{}})"),
           Op(DdmOp::Kind::kTouch, "missing"), Op(DdmOp::Kind::kSetAdd, "s1", "min-os.cfg"),
           Op(DdmOp::Kind::kAssign, "E1", "s1")};
  REQUIRE(h.Commit(3, d).ok());
  const plist::Value rec = h.LastRecord();
  const auto& ops = *rec.Find("ddm")->AsArray();
  REQUIRE(ops.size() == 6);
  CHECK(ops[0].GetString("outcome") == "refused");
  CHECK(ops[0].GetString("error").find("no declaration") != std::string_view::npos);
  CHECK(ops[1].GetString("outcome") == "applied");
  CHECK(ops[2].GetString("outcome") == "refused");
  CHECK(ops[2].GetString("error").find("Identifier") != std::string_view::npos);
  CHECK(ops[3].GetString("outcome") == "refused");
  CHECK(ops[4].GetString("outcome") == "applied");
  CHECK(ops[5].GetString("outcome") == "applied");
  CHECK(h.ddm.declarations().ManifestOf("E1")->configurations.size() == 1);
  CHECK(h.Syncs("E1").size() == 1);
}

TEST_CASE("ddm automation: a dry run records its writes and changes nothing", "[ddm][automation]") {
  Host h;
  h.Enroll("E1");
  Decisions d;
  d.ddm = {Op(DdmOp::Kind::kPutDeclaration, kConfig), Op(DdmOp::Kind::kSetAdd, "s1", "min-os.cfg"),
           Op(DdmOp::Kind::kAssign, "E1", "s1")};
  REQUIRE(h.Commit(4, d, /*dry_run=*/true).ok());
  CHECK(!h.ddm.declarations().Get("min-os.cfg")->has_value());
  CHECK(h.Syncs("E1").empty());
  CHECK(h.push.pushed.empty());
  const plist::Value rec = h.LastRecord();
  const auto& ops = *rec.Find("ddm")->AsArray();
  REQUIRE(ops.size() == 3);
  for (const auto& o : ops) CHECK(o.GetString("outcome") == "dry_run");
  CHECK(ops[0].GetString("declaration").find("min-os.cfg") != std::string_view::npos);
}

TEST_CASE("ddm automation: without DDM configured every write is refused and the run still commits",
          "[ddm][automation]") {
  Host h;
  h.automation.SetDdm(nullptr);
  Decisions d;
  d.ddm = {Op(DdmOp::Kind::kPutDeclaration, kConfig)};
  REQUIRE(h.Commit(5, d).ok());
  CHECK(h.LastRecord().Find("ddm")->AsArray()->at(0).GetString("outcome") == "refused");
  CHECK(h.log->LaneCheckpoints("policy:min-os", 0)->at(1).seq == 5);
}

TEST_CASE("ddm automation: status reads for handlers", "[ddm][automation]") {
  Host h;
  h.Enroll("E1");
  const std::string report =
      R"({"StatusItems":{"device":{"operating-system":{"version":"26.0"}},)"
      R"("softwareupdate":{"failure-reason":{"count":2}}},"Errors":[]})";
  auto parsed = ddm::ParseStatusReport(report, ddm::StatusLimits{});
  REQUIRE(parsed.ok());
  store::Batch b;
  REQUIRE(h.ddm.status().Apply(b, "E1", *parsed, report, NowMillis()).ok());
  REQUIRE(h.db->Write(b).ok());
  auto v = h.automation.DdmStatus("E1", "device.operating-system.version").value();
  REQUIRE(v.has_value());
  CHECK(*v->AsString() == "26.0");
  auto count = h.automation.DdmStatus("E1", "softwareupdate.failure-reason.count").value();
  REQUIRE(count.has_value());
  CHECK(*count->AsInteger() == 2);
  CHECK(!h.automation.DdmStatus("E1", "passcode.is-compliant")->has_value());
  CHECK(!h.automation.DdmStatus("E2", "device.operating-system.version")->has_value());
  CHECK(!h.automation.DdmDeclarationStatus("E1", "min-os.cfg")->has_value());
}

TEST_CASE("ddm service: an admin put answers the schema's warnings and stores the declaration", "[ddm]") {
  Host h;
  auto out = h.ddm.Put(R"({"Type":"com.apple.configuration.passcode.settings","Identifier":"pc",)"
                       R"("Payload":{"RequirePasscode":true,"Shiny":1}})",
                       "admin", false);
  REQUIRE(out.ok());
  CHECK(out->changed);
  REQUIRE(out->warnings.size() == 1);
  CHECK(out->warnings[0].find("Payload.Shiny") == 0);
  CHECK(h.ddm.declarations().Get("pc")->has_value());
  // A refused payload (out of range) writes nothing and names the key.
  auto bad = h.ddm.Put(R"({"Type":"com.apple.configuration.passcode.settings","Identifier":"pc2",)"
                       R"("Payload":{"MinimumLength":99}})",
                       "admin", false);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("Payload.MinimumLength") != std::string::npos);
  CHECK_FALSE(h.ddm.declarations().Get("pc2")->has_value());
}
