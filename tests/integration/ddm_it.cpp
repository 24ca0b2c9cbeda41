// Declarative Device Management in the real orchardd: declarations and sets
// through /v1/ddm, the DeclarativeManagement command with its TokensResponse,
// the simulator's DDM client following Apple's rules (tokens, manifest,
// declarations, status), status turned into stored values and ddm.* events,
// and the peers' pitfalls: no second manifest fetch without a change, 404 for
// a declaration that left the manifest, one pending sync command after many
// changes, stored declaration status kept by a report without it, the same
// tokens after a kill -9 restart. Every wait polls with a deadline.
#include <catch2/catch.hpp>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "plist/plist.h"
#include "sim/ddm_client.h"
#include "sim/responder.h"
#include "sim/simulator.h"
#include "support/orchardd_process.h"
#include "support/strict_utf8.h"
#include "support/test_pki.h"

namespace {

using orchard::plist::Value;
using orchard::testing::HttpCall;
using orchard::testing::HttpResult;
using orchard::testing::IsStrictUtf8;
using orchard::testing::MakeTempDir;
using orchard::testing::OrchardProcess;
using orchard::testing::TestCa;
using orchard::testing::WriteFile;
namespace sim = orchard::sim;

constexpr char kKey[] = "ddm-it-api-key-0000000000000001";

Value Json(const std::string& body) {
  INFO(body.substr(0, 600));
  REQUIRE(IsStrictUtf8(body));
  auto v = orchard::plist::ParseJson(body);
  REQUIRE(v.ok());
  return std::move(v.value());
}

int64_t Int(const Value& v, const char* key) {
  const Value* f = v.Find(key);
  REQUIRE(f != nullptr);
  REQUIRE(f->AsInteger() != nullptr);
  return *f->AsInteger();
}

struct Server {
  std::string dir = MakeTempDir("orchard-ddm-it");
  std::unique_ptr<TestCa> ca = TestCa::Create("Device CA (ddm it)");
  std::unique_ptr<OrchardProcess> proc;

  // config: orchard.conf lines ("" for none).
  explicit Server(const std::string& config = "") {
    REQUIRE(ca->WriteCertPem(dir + "/device-ca.pem"));
    REQUIRE(WriteFile(dir + "/orchard.conf", config));
    Start();
  }
  ~Server() {
    proc.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  void Start() {
    proc = std::make_unique<OrchardProcess>(
        dir + "/data", std::vector<std::string>{"--device-ca", dir + "/device-ca.pem", "--api-key", kKey, "--config",
                                                dir + "/orchard.conf"});
    REQUIRE(proc->Start());
  }
  HttpResult Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return HttpCall(method, proc->url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
  Value Ok(const std::string& method, const std::string& path, const std::string& body = "") {
    HttpResult r = Api(method, path, body);
    INFO(method << " " << path << " -> " << r.status << " " << r.body);
    REQUIRE(r.status == 200);
    return Json(r.body);
  }
  // Authenticated only (no TokenUpdate yet).
  std::unique_ptr<sim::Device> Authenticated(uint64_t seed) {
    sim::SimConfig c;
    c.base_url = proc->url();
    c.cert_mode = sim::CertMode::kHeader;
    sim::DeviceState st = sim::RandomDeviceState(sim::Platform::kIos, seed);
    orchard::testing::IssueOptions io;
    io.common_name = st.udid;
    auto d = sim::Device::Create(c, st, ca->Issue(io));
    REQUIRE(d.ok());
    REQUIRE((*d)->Authenticate().ok());
    return std::move(d.value());
  }
  std::unique_ptr<sim::Device> Enroll(uint64_t seed) {
    auto d = Authenticated(seed);
    REQUIRE(d->TokenUpdate().ok());
    return d;
  }
  // The "ddm" object of GET /v1/enrollments/{id}.
  Value EnrollmentDdm(const std::string& id) {
    Value e = Ok("GET", "/v1/enrollments/" + id);
    REQUIRE(e.Find("ddm") != nullptr);
    return *e.Find("ddm");
  }
  // The DeclarativeManagement commands queued for an enrollment.
  size_t SyncCommands(const std::string& id) {
    Value q = Ok("GET", "/v1/enrollments/" + id + "/queue");
    size_t n = 0;
    for (const Value& c : *q.Find("commands")->AsArray()) n += c.GetString("request_type") == "DeclarativeManagement";
    return n;
  }
  size_t Events(const std::string& type, const std::string& id) {
    Value v = Ok("GET", "/v1/events?limit=10000");
    size_t n = 0;
    for (const Value& e : *v.Find("events")->AsArray())
      n += e.GetString("type") == type && e.GetString("enrollment_id") == id;
    return n;
  }
};

const char* const kActivation =
    R"({"Type":"com.apple.activation.simple","Identifier":"act.base",)"
    R"("Payload":{"StandardConfigurations":["cfg.passcode"]}})";
std::string Passcode(int min_length) {
  return R"({"Type":"com.apple.configuration.passcode.settings","Identifier":"cfg.passcode",)"
         R"("Payload":{"RequirePasscode":true,"MinimumLength":)" +
         std::to_string(min_length) + "}}";
}

// The DeclarativeManagement command of a session (its Data, a TokensResponse).
std::string RunSessionForSync(sim::Device& d) {
  d.ClearReceived();
  auto s = d.RunSession();
  REQUIRE(s.ok());
  std::string data;
  for (const auto& c : d.received()) {
    if (c.request_type != "DeclarativeManagement") continue;
    const Value* cmd = c.command.Find("Command");
    REQUIRE(cmd != nullptr);
    REQUIRE(cmd->Find("Data") != nullptr);
    REQUIRE(cmd->Find("Data")->AsData() != nullptr);
    data = cmd->Find("Data")->AsData()->bytes;
  }
  return data;
}

TEST_CASE("ddm: declarations reach a device through the sync command and its status comes back", "[integration][ddm]") {
  Server s;
  auto dev = s.Enroll(0xdd01);
  auto other = s.Enroll(0xdd02);
  const std::string id = dev->udid();

  // Declarations and a set; nothing is queued until an enrollment has the set.
  Value put = s.Ok("PUT", "/v1/ddm/declarations", kActivation);
  CHECK(put.GetBool("changed", false));
  CHECK(Int(put, "tokens_changed") == 0);
  s.Ok("PUT", "/v1/ddm/declarations", Passcode(6));
  s.Ok("PUT", "/v1/ddm/set-declarations/base?declaration=act.base");
  s.Ok("PUT", "/v1/ddm/set-declarations/base?declaration=cfg.passcode");
  CHECK(s.SyncCommands(id) == 0);
  Value assigned = s.Ok("PUT", "/v1/ddm/enrollment-sets/" + id + "?set=base");
  CHECK(Int(assigned, "tokens_changed") == 1);
  CHECK(Int(assigned, "commands_queued") == 1);
  CHECK(s.SyncCommands(id) == 1);
  CHECK(s.SyncCommands(other->udid()) == 0);

  // The command carries the same token the preview and the device's tokens answer.
  const std::string data = RunSessionForSync(*dev);
  REQUIRE_FALSE(data.empty());
  Value tokens = Json(data);
  const std::string token(tokens.Find("SyncTokens")->GetString("DeclarationsToken"));
  CHECK(token.size() == 64);
  Value preview = s.Ok("GET", "/v1/ddm/preview/" + id + "/tokens");
  CHECK(preview.Find("SyncTokens")->GetString("DeclarationsToken") == token);

  sim::DdmClient ddm(dev.get());
  auto synced = ddm.Sync(data);
  REQUIRE(synced.ok());
  CHECK(synced->manifest_fetched);
  CHECK(synced->fetched == 2);
  CHECK(ddm.token() == token);
  REQUIRE(ddm.held().count("cfg.passcode") == 1);
  Value passcode = Json(ddm.held().at("cfg.passcode").json);
  CHECK(passcode.GetString("Type") == "com.apple.configuration.passcode.settings");
  CHECK(*passcode.Find("Payload")->Find("MinimumLength")->AsInteger() == 6);
  CHECK(s.Events("ddm.synced", id) == 1);
  Value state = s.Ok("GET", "/v1/ddm/enrollments/" + id);
  CHECK(state.GetBool("enabled", false));
  CHECK(state.GetBool("in_sync", false));
  Value statuses = s.Ok("GET", "/v1/ddm/declaration-status/" + id);
  REQUIRE(statuses.Find("declarations")->AsArray()->size() == 2);
  for (const Value& d : *statuses.Find("declarations")->AsArray()) CHECK(d.GetBool("current", false));

  // Pitfall: after a sync without a change, tokens matches and no manifest is fetched.
  auto again = ddm.Sync();
  REQUIRE(again.ok());
  CHECK_FALSE(again->changed);
  CHECK_FALSE(again->manifest_fetched);
  CHECK(again->requests == 1);

  // An edit: a new command, one fetch (the activation is unchanged).
  Value edited = s.Ok("PUT", "/v1/ddm/declarations", Passcode(8));
  CHECK(edited.GetBool("changed", false));
  CHECK(Int(edited, "commands_queued") == 1);
  auto after_edit = ddm.Sync(RunSessionForSync(*dev));
  REQUIRE(after_edit.ok());
  CHECK(after_edit->fetched == 1);
  CHECK(*Json(ddm.held().at("cfg.passcode").json).Find("Payload")->Find("MinimumLength")->AsInteger() == 8);
  // An identical re-upload changes nothing and queues nothing.
  Value same = s.Ok("PUT", "/v1/ddm/declarations", Passcode(8));
  CHECK_FALSE(same.GetBool("changed", true));
  CHECK(Int(same, "commands_queued") == 0);
  CHECK(s.SyncCommands(id) == 0);

  // Status values: an incremental report keeps the declaration status it does not carry.
  auto code = ddm.Report(R"({"device":{"operating-system":{"version":"26.0","build-version":"23A341"}},)"
                         R"("softwareupdate":{"install-state":"downloading"}})");
  REQUIRE(code.ok());
  CHECK(*code == 200);
  Value values = s.Ok("GET", "/v1/ddm/status-values/" + id + "?prefix=device.");
  REQUIRE(values.Find("values")->AsArray()->size() == 2);
  CHECK((*values.Find("values")->AsArray())[1].GetString("item") == "device.operating-system.version");
  CHECK((*values.Find("values")->AsArray())[1].GetString("value") == "26.0");
  CHECK(s.Ok("GET", "/v1/ddm/declaration-status/" + id).Find("declarations")->AsArray()->size() == 2);
  CHECK(s.Events("ddm.status.changed", id) >= 3);

  // The other device cannot fetch this device's declarations: 404, never 401 or 5xx.
  sim::DdmClient intruder(other.get());
  auto stolen = intruder.Call("declaration/configuration/cfg.passcode");
  REQUIRE(stolen.ok());
  CHECK(stolen->status == 404);
  auto wrong_kind = ddm.Call("declaration/asset/cfg.passcode");
  REQUIRE(wrong_kind.ok());
  CHECK(wrong_kind->status == 404);

  // Removed between manifest and fetch: 404, and the device drops it.
  s.Ok("DELETE", "/v1/ddm/set-declarations/base?declaration=cfg.passcode");
  auto gone = ddm.Call("declaration/configuration/cfg.passcode");
  REQUIRE(gone.ok());
  CHECK(gone->status == 404);
  auto dropped = ddm.Sync(RunSessionForSync(*dev));
  REQUIRE(dropped.ok());
  CHECK(dropped->dropped == 1);
  CHECK(ddm.held().count("cfg.passcode") == 0);
}

TEST_CASE("ddm: many changes in a row leave one pending sync command", "[integration][ddm]") {
  Server s;
  auto dev = s.Enroll(0xdd11);
  const std::string id = dev->udid();
  s.Ok("PUT", "/v1/ddm/declarations", Passcode(4));
  s.Ok("PUT", "/v1/ddm/set-declarations/pc?declaration=cfg.passcode");
  s.Ok("PUT", "/v1/ddm/enrollment-sets/" + id + "?set=pc");
  for (int i = 0; i < 100; ++i) {
    Value t = s.Ok("POST", "/v1/ddm/declarations/cfg.passcode/touch?nonotify");
    CHECK(Int(t, "commands_queued") == 1);
  }
  CHECK(s.SyncCommands(id) == 1);
  // The one left carries the latest token.
  const std::string latest(s.Ok("GET", "/v1/ddm/preview/" + id + "/tokens").Find("SyncTokens")->GetString("DeclarationsToken"));
  const std::string data = RunSessionForSync(*dev);
  CHECK(Json(data).Find("SyncTokens")->GetString("DeclarationsToken") == latest);
  CHECK(s.SyncCommands(id) == 0);

  // kill -9: the tokens and the manifest are what they were.
  const std::string items = s.Api("GET", "/v1/ddm/preview/" + id + "/declaration-items").body;
  s.proc->Kill();
  s.Start();
  CHECK(s.Ok("GET", "/v1/ddm/preview/" + id + "/tokens").Find("SyncTokens")->GetString("DeclarationsToken") == latest);
  CHECK(s.Api("GET", "/v1/ddm/preview/" + id + "/declaration-items").body == items);
}

TEST_CASE("ddm: a re-enrolled device gets the sync command again and fetches everything", "[integration][ddm]") {
  Server s;
  auto dev = s.Enroll(0xdd31);
  const std::string id = dev->udid();
  s.Ok("PUT", "/v1/ddm/declarations", Passcode(6));
  s.Ok("PUT", "/v1/ddm/set-declarations/pc?declaration=cfg.passcode");
  s.Ok("PUT", "/v1/ddm/enrollment-sets/" + id + "?set=pc");
  sim::DdmClient first(dev.get());
  auto synced = first.Sync(RunSessionForSync(*dev));
  REQUIRE(synced.ok());
  CHECK(synced->fetched == 1);
  CHECK(s.Ok("GET", "/v1/ddm/enrollments/" + id).GetBool("in_sync", false));

  // Re-enrollment wipes the device's DDM state: nothing changed on the server,
  // yet the command comes again with the enrollment, and the device starts over.
  REQUIRE(dev->Authenticate().ok());
  REQUIRE(dev->TokenUpdate().ok());
  CHECK(s.SyncCommands(id) == 1);
  Value state = s.Ok("GET", "/v1/ddm/enrollments/" + id);
  CHECK_FALSE(state.GetBool("in_sync", true));
  sim::DdmClient wiped(dev.get());
  auto again = wiped.Sync(RunSessionForSync(*dev));
  REQUIRE(again.ok());
  CHECK(again->manifest_fetched);
  CHECK(again->fetched == 1);
  CHECK(wiped.token() == first.token());

  // A device enrolling without sets gets no command (ddm.enable_on_enroll is off).
  auto plain = s.Enroll(0xdd32);
  CHECK(s.SyncCommands(plain->udid()) == 0);
}

TEST_CASE("ddm: bad uploads and bad check-ins get clear errors", "[integration][ddm]") {
  Server s;
  auto dev = s.Enroll(0xdd21);
  sim::DdmClient ddm(dev.get());
  struct Bad {
    std::string body;
    std::string says;
  };
  const std::vector<Bad> uploads = {
      {"not json", "json"},
      {R"({"Type":"com.apple.configuration.passcode.settings","Identifier":"a/b","Payload":{}})", "Identifier"},
      {R"({"Type":"com.apple.configuration.passcode.settings","Identifier":")" + std::string(65, 'x') +
           R"(","Payload":{}})",
       "Identifier"},
      {R"({"Type":"com.example.thing","Identifier":"x","Payload":{}})", "Type"},
      {R"({"Type":"com.apple.configuration.passcode.settings","Identifier":"x","Payload":[]})", "Payload"},
      {"{\"Type\":\"com.apple.configuration.passcode.settings\",\"Identifier\":\"x\xff\",\"Payload\":{}}", ""},
  };
  for (const auto& b : uploads) {
    HttpResult r = s.Api("PUT", "/v1/ddm/declarations", b.body);
    INFO(b.body << " -> " << r.body);
    CHECK(r.status == 400);
    CHECK(r.body.find(b.says) != std::string::npos);
    CHECK(IsStrictUtf8(r.body));
  }
  CHECK(s.Api("PUT", "/v1/ddm/set-declarations/base?declaration=missing").status == 404);
  CHECK(s.Api("GET", "/v1/ddm/declarations/missing").status == 404);
  CHECK(s.Api("GET", "/v1/ddm/declarations?limit=0").status == 400);

  // A channel that never enrolled (a made-up user of this device) is refused, and nothing is kept for it.
  Value ghost = Value::MakeDict();
  ghost.Set("MessageType", Value::String("DeclarativeManagement"));
  ghost.Set("UDID", Value::String(dev->udid()));
  ghost.Set("UserID", Value::String("0000-NOT-A-USER"));
  ghost.Set("Endpoint", Value::String("tokens"));
  auto ghost_answer = dev->CheckIn(ghost);
  REQUIRE(ghost_answer.ok());
  CHECK(ghost_answer->status == 400);
  CHECK_FALSE(s.Ok("GET", "/v1/ddm/enrollments/" + dev->udid() + ":0000-NOT-A-USER").GetBool("enabled", true));

  auto unknown = ddm.Call("bogus");
  REQUIRE(unknown.ok());
  CHECK(unknown->status == 400);
  const std::string not_json = "{\"StatusItems\":";
  auto bad_data = ddm.Call("status", &not_json);
  REQUIRE(bad_data.ok());
  CHECK(bad_data->status == 400);
  const std::string deep = std::string(100000, '[');
  auto deep_data = ddm.Call("status", &deep);
  REQUIRE(deep_data.ok());
  CHECK(deep_data->status == 400);
  auto dotdot = ddm.Call("declaration/configuration/..");
  REQUIRE(dotdot.ok());
  CHECK(dotdot->status == 404);
  auto bad_kind = ddm.Call("declaration/things/x");
  REQUIRE(bad_kind.ok());
  CHECK(bad_kind->status == 400);
  // The empty manifest still has a token, and all four arrays.
  auto tokens = ddm.Call("tokens");
  REQUIRE(tokens.ok());
  REQUIRE(tokens->status == 200);
  CHECK(Json(tokens->body).Find("SyncTokens")->GetString("DeclarationsToken").size() == 64);
  auto items = ddm.Call("declaration-items");
  REQUIRE(items.ok());
  Value v = Json(items->body);
  for (const char* k : {"Activations", "Configurations", "Assets", "Management"})
    CHECK(v.Find("Declarations")->Find(k)->AsArray()->empty());
}

}  // namespace

namespace {

// Puts cfg.passcode into set "pc" and assigns it to id.
void AssignPasscode(Server& s, const std::string& id) {
  s.Ok("PUT", "/v1/ddm/declarations", Passcode(6));
  s.Ok("PUT", "/v1/ddm/set-declarations/pc?declaration=cfg.passcode");
  s.Ok("PUT", "/v1/ddm/enrollment-sets/" + id + "?set=pc");
}

std::string PreviewToken(Server& s, const std::string& id) {
  return std::string(
      s.Ok("GET", "/v1/ddm/preview/" + id + "/tokens").Find("SyncTokens")->GetString("DeclarationsToken"));
}

std::vector<std::string> SetsOf(Server& s, const std::string& id) {
  const Value page = s.Ok("GET", "/v1/ddm/enrollment-sets/" + id);
  std::vector<std::string> out;
  for (const Value& v : *page.Find("sets")->AsArray()) out.emplace_back(*v.AsString());
  return out;
}

}  // namespace

TEST_CASE("ddm: CheckOut drops the assignments and status, and enrolling again starts clean", "[integration][ddm]") {
  Server s;
  auto dev = s.Enroll(0xdd41);
  auto never = s.Enroll(0xdd42);  // never assigned anything: the empty manifest
  const std::string id = dev->udid();
  const std::string user = id + ":A1B2C3D4-0000-4000-8000-000000000001";
  REQUIRE(dev->UserTokenUpdate("A1B2C3D4-0000-4000-8000-000000000001", "alice", "Alice A").ok());
  AssignPasscode(s, id);
  s.Ok("PUT", "/v1/ddm/enrollment-sets/" + user + "?set=pc");
  sim::DdmClient ddm(dev.get());
  REQUIRE(ddm.Sync(RunSessionForSync(*dev)).ok());
  REQUIRE(ddm.Report(R"({"device":{"operating-system":{"version":"26.0"}}})").ok());
  const std::string empty = PreviewToken(s, never->udid());
  CHECK(PreviewToken(s, id) != empty);
  Value before = s.EnrollmentDdm(id);
  CHECK(before.GetBool("enabled", false));
  CHECK(Int(before, "sets") == 1);

  REQUIRE(dev->CheckOut().ok());

  // The device channel and its user channel: checked out, nothing assigned, the empty manifest.
  for (const std::string& ch : {id, user}) {
    INFO(ch);
    CHECK(s.Ok("GET", "/v1/enrollments/" + ch).GetString("state") == "checked_out");
    CHECK(SetsOf(s, ch).empty());
    CHECK(PreviewToken(s, ch) == empty);
    CHECK(s.Events("enrollment.checked_out", ch) == 1);
    Value state = s.EnrollmentDdm(ch);
    CHECK_FALSE(state.GetBool("enabled", true));
    CHECK(Int(state, "sets") == 0);
    CHECK(Int(state, "declarations") == 0);
    CHECK(state.GetString("served_token").empty());
  }
  CHECK(s.Ok("GET", "/v1/ddm/set-enrollments/pc").Find("enrollment_ids")->AsArray()->empty());
  CHECK(s.Ok("GET", "/v1/ddm/status-values/" + id).Find("values")->AsArray()->empty());
  CHECK(s.Ok("GET", "/v1/ddm/declaration-status/" + id).Find("declarations")->AsArray()->empty());
  CHECK(s.Ok("GET", "/v1/ddm/status-report/" + id).Find("reports")->AsArray()->empty());
  // The declarations and the set stay (other enrollments may get them).
  CHECK(s.Api("GET", "/v1/ddm/declarations/cfg.passcode").status == 200);

  // Enrolling again: no sets, so no sync command, and DDM is off until it is turned on again.
  REQUIRE(dev->Authenticate().ok());
  REQUIRE(dev->TokenUpdate().ok());
  CHECK(s.SyncCommands(id) == 0);
  CHECK_FALSE(s.EnrollmentDdm(id).GetBool("enabled", true));
  sim::DdmClient fresh(dev.get());
  auto synced = fresh.Sync();
  REQUIRE(synced.ok());
  CHECK(synced->fetched == 0);
  CHECK(fresh.token() == empty);
}

TEST_CASE("ddm: with ddm.keep_assignments a device keeps its sets through CheckOut and syncs when it enrolls again",
          "[integration][ddm]") {
  Server s("ddm.keep_assignments = on\n");
  auto dev = s.Enroll(0xdd51);
  const std::string id = dev->udid();
  AssignPasscode(s, id);
  sim::DdmClient ddm(dev.get());
  REQUIRE(ddm.Sync(RunSessionForSync(*dev)).ok());
  const std::string token = PreviewToken(s, id);
  REQUIRE(ddm.token() == token);

  REQUIRE(dev->CheckOut().ok());
  CHECK(SetsOf(s, id) == std::vector<std::string>{"pc"});
  CHECK(PreviewToken(s, id) == token);
  CHECK_FALSE(s.EnrollmentDdm(id).GetBool("enabled", true));  // the device dropped its DDM state

  REQUIRE(dev->Authenticate().ok());
  REQUIRE(dev->TokenUpdate().ok());
  CHECK(s.SyncCommands(id) == 1);
  sim::DdmClient wiped(dev.get());
  auto again = wiped.Sync(RunSessionForSync(*dev));
  REQUIRE(again.ok());
  CHECK(again->fetched == 1);
  CHECK(wiped.token() == token);
  CHECK(s.EnrollmentDdm(id).GetBool("in_sync", false));
}

TEST_CASE("ddm: the enrollment API shows the channel's DDM state before and after a sync", "[integration][ddm]") {
  Server s;
  auto dev = s.Enroll(0xdd61);
  const std::string id = dev->udid();
  Value none = s.EnrollmentDdm(id);
  CHECK_FALSE(none.GetBool("enabled", true));
  CHECK_FALSE(none.GetBool("in_sync", true));
  CHECK(Int(none, "sets") == 0);
  CHECK(Int(none, "declarations") == 0);
  CHECK(none.GetString("sync_command").empty());
  CHECK(none.GetString("served_at").empty());
  CHECK(none.GetString("declarations_token") == PreviewToken(s, id));

  s.Ok("PUT", "/v1/ddm/declarations", kActivation);
  AssignPasscode(s, id);
  s.Ok("PUT", "/v1/ddm/set-declarations/pc?declaration=act.base");
  Value queued = s.EnrollmentDdm(id);
  CHECK(Int(queued, "sets") == 1);
  CHECK(Int(queued, "declarations") == 2);
  CHECK_FALSE(queued.GetString("sync_command").empty());
  CHECK_FALSE(queued.GetString("sync_queued_at").empty());
  CHECK_FALSE(queued.GetBool("enabled", true));
  CHECK(queued.GetString("declarations_token") == PreviewToken(s, id));
  // The same object as /v1/ddm/enrollments/{id} (which adds the id).
  Value direct = s.Ok("GET", "/v1/ddm/enrollments/" + id);
  CHECK(direct.GetString("enrollment_id") == id);
  for (const char* k : {"declarations_token", "sync_command", "sync_queued_at", "token_changed_at"})
    CHECK(direct.GetString(k) == queued.GetString(k));

  // The device acknowledges the command: DDM is on before it asks for anything.
  const std::string data = RunSessionForSync(*dev);
  REQUIRE_FALSE(data.empty());
  Value acked = s.EnrollmentDdm(id);
  CHECK(acked.GetBool("enabled", false));
  CHECK_FALSE(acked.GetBool("in_sync", true));
  CHECK(acked.GetString("served_at").empty());

  sim::DdmClient ddm(dev.get());
  REQUIRE(ddm.Sync(data).ok());
  Value synced = s.EnrollmentDdm(id);
  CHECK(synced.GetBool("in_sync", false));
  CHECK(synced.GetString("served_token") == PreviewToken(s, id));
  CHECK(synced.GetString("synced_token") == PreviewToken(s, id));
  CHECK_FALSE(synced.GetString("served_at").empty());
  CHECK_FALSE(synced.GetString("synced_at").empty());
  CHECK_FALSE(synced.GetString("last_status_at").empty());
}

TEST_CASE("ddm: NotNow to the sync command during Setup Assistant never holds back DeviceConfigured",
          "[integration][ddm]") {
  Server s;
  auto dev = s.Authenticated(0xdd71);
  const std::string id = dev->udid();
  AssignPasscode(s, id);  // assigned before the enrollment completes: no command yet
  CHECK(s.SyncCommands(id) == 0);
  REQUIRE(dev->TokenUpdate(/*awaiting_configuration=*/true).ok());
  CHECK(s.Ok("GET", "/v1/enrollments/" + id).GetBool("awaiting_configuration", false));
  CHECK(s.SyncCommands(id) == 1);
  const std::string configured =
      R"(<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>CommandUUID</key>)"
      R"(<string>dc-0001</string><key>Command</key><dict><key>RequestType</key><string>DeviceConfigured</string>)"
      R"(</dict></dict></plist>)";
  REQUIRE(s.Api("PUT", "/v1/enqueue/" + id + "?nopush=1", configured).status == 200);

  // Setup Assistant: the device answers NotNow to DDM; DeviceConfigured still comes in this session.
  dev->responder().SetBehavior("DeclarativeManagement", sim::Behavior::kNotNow);
  dev->ClearReceived();
  REQUIRE(dev->RunSession().ok());
  REQUIRE(dev->received().size() == 2);
  CHECK(dev->received()[0].request_type == "DeclarativeManagement");
  CHECK(dev->received()[0].answered == sim::ReportStatus::kNotNow);
  CHECK(dev->received()[1].request_type == "DeviceConfigured");
  CHECK(dev->received()[1].answered == sim::ReportStatus::kAcknowledged);
  CHECK(s.Ok("GET", "/v1/enrollments/" + id + "/results/dc-0001").GetString("status") == "Acknowledged");
  CHECK(s.SyncCommands(id) == 1);
  CHECK_FALSE(s.EnrollmentDdm(id).GetBool("enabled", true));

  // The next session offers the sync command again.
  dev->responder().ClearBehaviors();
  const std::string data = RunSessionForSync(*dev);
  REQUIRE_FALSE(data.empty());
  CHECK(s.SyncCommands(id) == 0);
  CHECK(s.EnrollmentDdm(id).GetBool("enabled", false));
  sim::DdmClient ddm(dev.get());
  auto synced = ddm.Sync(data);
  REQUIRE(synced.ok());
  CHECK(synced->fetched == 1);
}
