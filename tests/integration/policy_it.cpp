// Lua policies in the real orchardd, with simulated devices: a remediation
// loop end to end, reload keeping the old version on a syntax error, dry run
// queueing nothing, a runaway policy stopped while another keeps working, and
// kill -9 in the middle of a stream losing no event and queueing nothing twice.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "plist/plist.h"
#include "sim/simulator.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"

using namespace orchard;
using namespace orchard::testing;
using plist::Value;

namespace {

constexpr const char* kKey = "policy-integration-api-key-01";

// Polls cond (a cheap HTTP read) until it holds or the deadline passes.
template <typename F>
bool WaitUntil(F cond, std::chrono::seconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

Value Json(const HttpResult& r) {
  auto v = plist::ParseJson(r.body);
  INFO(r.status << " " << r.body);
  REQUIRE(v.ok());
  return std::move(v.value());
}

struct World {
  std::string dir = MakeTempDir("orchard-policy-it");
  std::string policies = dir + "/policies";
  std::unique_ptr<TestCa> device_ca = TestCa::Create("Device CA (policy it)");
  std::string device_ca_pem;
  std::unique_ptr<OrchardProcess> orchard;
  std::unique_ptr<sim::Fleet> fleet;

  using Files = std::map<std::string, std::string>;
  explicit World(const Files& files, const std::string& extra_config = "") {
    std::filesystem::create_directories(policies);
    for (const auto& [name, src] : files) REQUIRE(WriteFile(policies + "/" + name, src));
    REQUIRE(device_ca->WriteCertPem(dir + "/device-ca.pem"));
    REQUIRE(WriteFile(dir + "/orchard.conf", "policy.dir = " + policies +
                                                 "\npolicy.watch_seconds = 0\nlog.level = info\n" +
                                                 extra_config));
    orchard = std::make_unique<OrchardProcess>(
        dir + "/data", std::vector<std::string>{"--config", dir + "/orchard.conf", "--device-ca",
                                                dir + "/device-ca.pem", "--api-key", kKey});
    REQUIRE(orchard->Start());
  }
  ~World() {
    fleet.reset();
    orchard.reset();
    std::filesystem::remove_all(dir);
    std::filesystem::remove(dir + "/data.log");
  }
  void Enroll(int devices, const std::function<void(int, sim::Device&)>& customize = nullptr) {
    sim::FleetOptions fo;
    fo.devices = devices;
    fo.config.base_url = orchard->url();
    fo.config.cert_mode = sim::CertMode::kHeader;
    fo.customize = customize;
    auto f = sim::Fleet::Create(fo, std::move(device_ca));
    REQUIRE(f.ok());
    fleet = std::move(f.value());
    auto st = fleet->Enroll(2);
    REQUIRE(st.failed == 0);
  }
  HttpResult Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return HttpCall(method, orchard->url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
  std::vector<Value> Queue(const std::string& id) {
    Value q = Json(Api("GET", "/v1/enrollments/" + id + "/queue"));
    return *q.Find("commands")->AsArray();
  }
  std::string Compliance(const std::string& policy, const std::string& id) {
    Value list = Json(Api("GET", "/v1/compliance/" + policy));
    for (const auto& d : *list.Find("devices")->AsArray())
      if (d.GetString("enrollment_id") == id) return std::string(d.GetString("status"));
    return "";
  }
  std::vector<Value> Records(const std::string& policy, const char* kind) {
    Value v = Json(Api("GET", "/v1/policies/" + policy + "/" + kind + "?limit=1000"));
    return *v.Find(kind)->AsArray();
  }
  Value Policy(const std::string& name) { return Json(Api("GET", "/v1/policies/" + name)); }
};

const char* kPasscodePolicy = R"(
policy { name = "passcode", version = "1" }
local PROFILE = plist.xml { PayloadType = "Configuration", PayloadVersion = 1,
  PayloadIdentifier = "test.passcode", PayloadUUID = "11111111-2222-3333-4444-555555555555",
  PayloadContent = { { PayloadType = "com.apple.mobiledevice.passwordpolicy", PayloadVersion = 1,
    PayloadIdentifier = "test.passcode.p", PayloadUUID = "11111111-2222-3333-4444-666666666666",
    minLength = 6 } } }
policy:on_result("SecurityInfo", function(ctx, result)
  local s = result.response.SecurityInfo
  if s.PasscodePresent then ctx:compliant() return end
  ctx:noncompliant("no passcode")
  if ctx:attempt(3) then ctx:remediating(ctx:enqueue(mdm.InstallProfile { Payload = PROFILE })) end
end)
policy:on_result("InstallProfile", function(ctx, result)
  if result.status == "Acknowledged" then ctx:enqueue(mdm.SecurityInfo {}) end
end)
)";

}  // namespace

TEST_CASE("a policy completes a remediation loop with a device", "[integration][policy]") {
  World w(World::Files{{"passcode.lua", kPasscodePolicy}});
  w.Enroll(1, [](int, sim::Device& d) { d.state().passcode_present = false; });
  sim::Device& dev = w.fleet->device(0);
  const std::string id = dev.udid();

  // The admin asks; the device reports no passcode.
  REQUIRE(w.Api("POST", "/v1/commands",
                R"({"enrollment_ids": [")" + id + R"("], "command": {"RequestType": "SecurityInfo"}, "nopush": true})")
              .status == 200);
  REQUIRE(dev.RunSession().ok());
  // The policy reacts: InstallProfile queued, device non-compliant (remediation pending).
  REQUIRE(WaitUntil([&] { return w.Queue(id).size() == 1; }));
  auto q = w.Queue(id);
  CHECK(q[0].GetString("request_type") == "InstallProfile");
  CHECK(q[0].GetString("origin") == "policy:passcode");
  CHECK_FALSE(q[0].GetString("trigger").empty());
  CHECK(w.Compliance("passcode", id) == "remediation_pending");

  // The user sets a passcode; the device installs the profile and reports again.
  dev.state().passcode_present = true;
  REQUIRE(dev.RunSession().ok());  // InstallProfile acknowledged
  REQUIRE(WaitUntil([&] { return w.Queue(id).size() == 1; }));
  CHECK(w.Queue(id)[0].GetString("request_type") == "SecurityInfo");
  REQUIRE(dev.RunSession().ok());  // SecurityInfo: passcode present
  REQUIRE(WaitUntil([&] { return w.Compliance("passcode", id) == "compliant"; }));
  CHECK(w.Queue(id).empty());

  // Every decision is recorded (audit), with the event that caused it.
  auto records = w.Records("passcode", "decisions");
  REQUIRE(records.size() >= 3);
  CHECK(records[0].Find("event")->GetString("type") == "command.acknowledged");
  CHECK(records[0].Find("commands")->AsArray()->at(0).GetString("outcome") == "queued");
  // Consumers show in /metrics and in /v1/consumers.
  const std::string metrics = HttpCall("GET", w.orchard->url() + "/metrics").body;
  CHECK(metrics.find("orchard_consumer_lag_seconds{consumer=\"policy:passcode\"}") != std::string::npos);
  CHECK(metrics.find("orchard_consumer_handled_total{consumer=\"policy:passcode\"}") != std::string::npos);
  Value consumers = Json(w.Api("GET", "/v1/consumers"));
  bool listed = false;
  for (const auto& c : *consumers.Find("consumers")->AsArray())
    listed = listed || (c.GetString("name") == "policy:passcode" && c.GetBool("running", false));
  CHECK(listed);
  Value summary = Json(w.Api("GET", "/v1/compliance"));
  CHECK(*summary.Find("compliance")->AsArray()->at(0).Find("devices")->Find("compliant")->AsInteger() == 1);
}

TEST_CASE("a reload with a syntax error keeps the running version", "[integration][policy]") {
  const std::string v1 = R"(
policy { name = "p", version = "1" }
policy:on("policy.run", function(ctx) ctx:put("version", 1) end))";
  World w(World::Files{{"p.lua", v1}});
  REQUIRE(WriteFile(w.policies + "/p.lua", "policy { name = 'p', version = '2' }\npolicy:on('policy.run', function(ctx)\n  if then\nend)"));
  auto reload = w.Api("POST", "/v1/policies/p/reload");
  CHECK(reload.status == 422);
  CHECK(reload.body.find("p.lua:3") != std::string::npos);
  Value p = w.Policy("p");
  CHECK(p.GetBool("loaded", false));
  CHECK(p.GetString("version") == "1");
  CHECK(p.GetString("load_error").find("p.lua:3") != std::string::npos);
  // The old version still handles events.
  REQUIRE(w.Api("POST", "/v1/policies/p/run", "{}").status == 202);
  REQUIRE(WaitUntil([&] { return w.Records("p", "decisions").size() == 1; }));
  CHECK(w.Records("p", "decisions")[0].Find("store")->AsArray()->at(0).GetString("value") == "1");
  // A good version replaces it.
  REQUIRE(WriteFile(w.policies + "/p.lua", "policy { name = 'p', version = '2' }\n"
                                           "policy:on('policy.run', function(ctx) ctx:put('version', 2) end)"));
  CHECK(w.Api("POST", "/v1/policies/p/reload").status == 200);
  CHECK(w.Policy("p").GetString("version") == "2");
  CHECK(w.Policy("p").Find("load_error") == nullptr);
  REQUIRE(w.Api("POST", "/v1/policies/p/run", "{}").status == 202);
  REQUIRE(WaitUntil([&] { return w.Records("p", "decisions").size() == 2; }));
  CHECK(w.Records("p", "decisions")[1].Find("store")->AsArray()->at(0).GetString("value") == "2");
}

TEST_CASE("a dry-run policy records what it would do and queues nothing", "[integration][policy]") {
  World w(World::Files{{"lock.lua", R"(
policy { name = "lock" }
policy:on("policy.run", function(ctx)
  ctx:enqueue(mdm.DeviceLock { Message = "dry" })
  ctx:noncompliant("testing")
end))"}});
  w.Enroll(1);
  const std::string id = w.fleet->device(0).udid();
  Value flags = Json(w.Api("PUT", "/v1/policies/lock/flags", R"({"dry_run": true})"));
  CHECK(flags.GetBool("dry_run", false));
  auto run = w.Api("POST", "/v1/policies/lock/run", R"({"enrollment_id": ")" + id + R"("})");
  REQUIRE(run.status == 202);
  REQUIRE(WaitUntil([&] { return w.Records("lock", "decisions").size() == 1; }));
  Value rec = w.Records("lock", "decisions")[0];
  CHECK(rec.GetBool("dry_run", false));
  const Value& cmd = rec.Find("commands")->AsArray()->at(0);
  CHECK(cmd.GetString("outcome") == "dry_run");
  CHECK(cmd.GetString("plist").find("<string>DeviceLock</string>") != std::string::npos);
  CHECK(rec.Find("cursor")->AsString() != nullptr);
  CHECK(w.Queue(id).empty());
  CHECK(w.Compliance("lock", id).empty());  // state is not written in a dry run
  // Switched back, the same run queues for real.
  REQUIRE(w.Api("PUT", "/v1/policies/lock/flags", R"({"dry_run": false})").status == 200);
  REQUIRE(w.Api("POST", "/v1/policies/lock/run", R"({"enrollment_id": ")" + id + R"("})").status == 202);
  REQUIRE(WaitUntil([&] { return w.Queue(id).size() == 1; }));
  CHECK(w.Compliance("lock", id) == "non_compliant");
}

TEST_CASE("a runaway policy is stopped and parked while another keeps working", "[integration][policy]") {
  World w(World::Files{{"runaway.lua", "policy:on('device.idle', function(ctx) while true do end end)"},
           {"good.lua", "policy:on('device.idle', function(ctx) ctx:enqueue(mdm.DeviceInformation { Queries = { 'OSVersion' } }) end)"}},
          "policy.instruction_budget = 200000\nautomation.max_attempts = 2\n");
  w.Enroll(1);
  sim::Device& dev = w.fleet->device(0);
  auto idle = dev.Put("/mdm/connect", "application/x-apple-aspen-mdm",
                      plist::ToXml([&] {
                        Value v;
                        v.Set("UDID", Value::String(dev.udid()));
                        v.Set("Status", Value::String("Idle"));
                        return v;
                      }()));
  REQUIRE(idle.ok());
  CHECK(idle->status == 200);
  // The good policy queued its command; the runaway one's event is parked.
  REQUIRE(WaitUntil([&] { return w.Queue(dev.udid()).size() == 1; }));
  REQUIRE(WaitUntil([&] { return w.Records("runaway", "parked").size() == 1; }));
  Value parked = w.Records("runaway", "parked")[0];
  CHECK(parked.Find("error")->GetString("error") == "instruction_budget");
  CHECK(*parked.Find("attempts")->AsInteger() == 2);
  Value p = w.Policy("runaway");
  CHECK(*p.Find("consumer")->Find("parked")->AsInteger() == 1);
  // The server still answers devices.
  auto again = dev.RunSession();
  CHECK(again.ok());
}

TEST_CASE("kill -9 in the middle of a stream loses no event and queues no command twice",
          "[integration][policy]") {
  // Slow on purpose (a busy loop of ~15 ms per event, slower than enrolling
  // even in a sanitizer build) so that the kill lands mid-stream.
  const char* policy = R"(
policy:on("enrollment.enrolled", function(ctx)
  local x = 0
  for i = 1, 3000000 do x = x + i end
  ctx:enqueue(mdm.DeviceInformation { Queries = { "OSVersion" } })
end))";
  World w(World::Files{{"baseline.lua", policy}},
          "policy.lanes = 2\npolicy.instruction_budget = 100000000\npolicy.deadline_ms = 20000\n");
  constexpr int kDevices = 120;
  w.Enroll(kDevices);
  // Some handled, some not: kill it.
  int64_t handled = 0;
  REQUIRE(WaitUntil([&] {
    Value p = w.Policy("baseline");
    const Value* c = p.Find("consumer");
    handled = c ? *c->Find("handled")->AsInteger() : 0;
    return handled >= 10;
  }));
  w.orchard->Kill();
  INFO("handled before the kill: " << handled);
  REQUIRE(handled < kDevices);  // the kill really landed mid-stream
  REQUIRE(w.orchard->Start());
  // Every device gets exactly one DeviceInformation, none twice.
  int with_one = 0, duplicates = 0;
  REQUIRE(WaitUntil(
      [&] {
        with_one = duplicates = 0;
        for (int i = 0; i < kDevices; ++i) {
          auto q = w.Queue(w.fleet->device(static_cast<size_t>(i)).udid());
          if (q.size() == 1) ++with_one;
          if (q.size() > 1) ++duplicates;
        }
        return with_one == kDevices || duplicates > 0;
      },
      std::chrono::seconds(60)));
  CHECK(duplicates == 0);
  CHECK(with_one == kDevices);
}

TEST_CASE("a policy named reload is readable and a policy that never loaded is not run", "[integration][policy]") {
  World w(World::Files{{"reload.lua", "policy:on('policy.run', function(ctx) ctx:put('x', 1) end)"},
                       {"broken.lua", "policy:on('policy.run', function(ctx)\n  if then\nend)"}});
  // GET names the policy "reload"; POST on the same path reloads every policy.
  auto got = w.Api("GET", "/v1/policies/reload");
  CHECK(got.status == 200);
  CHECK(Json(got).GetString("name") == "reload");
  CHECK(Json(got).GetBool("loaded", false));
  CHECK(w.Api("DELETE", "/v1/policies/reload").status == 405);
  auto all = w.Api("POST", "/v1/policies/reload");
  CHECK(all.status == 422);  // broken.lua still fails
  CHECK(Json(all).Find("policies")->AsArray()->size() == 2);
  // A run of a policy that never loaded would be handled by nothing: refused, not accepted.
  auto run = w.Api("POST", "/v1/policies/broken/run", "{}");
  CHECK(run.status == 409);
  CHECK(Json(run).GetString("error").find("not loaded") != std::string::npos);
  CHECK(Json(run).GetString("error").find("broken.lua:2") != std::string::npos);
  REQUIRE(w.Api("POST", "/v1/policies/reload/run", "{}").status == 202);
  REQUIRE(WaitUntil([&] { return w.Records("reload", "decisions").size() == 1; }));
}
