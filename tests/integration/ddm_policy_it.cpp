// The shipped policy policies/min-os-ddm.lua in the real orchardd, end to
// end with the mock APNs: a device enrolls, the policy gives it the status
// subscription, the DeclarativeManagement command is queued and pushed, the
// simulator's DDM client syncs; the device reports OS 26.0, the policy
// declares the update and assigns it (sync command, push, sync); the device
// reports progress and then 26.1, the policy marks it compliant and unassigns
// the update, which the device drops at the next sync. Every wait polls with
// a deadline.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "apns_mock/mock_apns.h"
#include "plist/plist.h"
#include "sim/ddm_client.h"
#include "sim/simulator.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"
#include "util/encoding.h"

namespace {

using orchard::plist::Value;
using orchard::testing::HttpCall;
using orchard::testing::HttpResult;
using orchard::testing::Identity;
using orchard::testing::IssueOptions;
using orchard::testing::MakeTempDir;
using orchard::testing::MockApns;
using orchard::testing::MockApnsOptions;
using orchard::testing::OrchardProcess;
using orchard::testing::TestCa;
using orchard::testing::WriteFile;
namespace sim = orchard::sim;

constexpr char kKey[] = "ddm-policy-it-api-key-000000001";
constexpr char kTopic[] = "com.apple.mgmt.External.ddm-policy-it";

Value Json(const std::string& body) {
  INFO(body.substr(0, 600));
  auto v = orchard::plist::ParseJson(body);
  REQUIRE(v.ok());
  return std::move(v.value());
}

template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

struct World {
  std::string dir = MakeTempDir("orchard-ddm-policy-it");
  std::unique_ptr<TestCa> push_ca = TestCa::Create("Apple Push CA (ddm policy it)");
  std::unique_ptr<TestCa> server_ca = TestCa::Create("APNs server CA (ddm policy it)");
  std::unique_ptr<TestCa> device_ca = TestCa::Create("Device CA (ddm policy it)");
  std::unique_ptr<MockApns> apns;
  std::unique_ptr<OrchardProcess> orchard;

  World() {
    IssueOptions server;
    server.dns_name = "localhost,127.0.0.1";
    server.server_auth_eku = true;
    server.client_auth_eku = false;
    Identity server_id = server_ca->Issue(server);
    IssueOptions push;
    push.uid = kTopic;
    push.common_name = std::string("APSP:") + kTopic;
    Identity push_cert = push_ca->Issue(push);
    MockApnsOptions mo;
    mo.cert_pem = server_id.cert_pem;
    mo.key_pem = server_id.key_pem;
    mo.client_ca_pem = push_ca->cert_pem();
    apns = MockApns::Start(mo);
    REQUIRE(apns);

    std::filesystem::create_directories(dir + "/policies");
    std::filesystem::copy_file(std::string(ORCHARD_SOURCE_DIR) + "/policies/min-os-ddm.lua",
                               dir + "/policies/min-os-ddm.lua");
    REQUIRE(device_ca->WriteCertPem(dir + "/device-ca.pem"));
    REQUIRE(server_ca->WriteCertPem(dir + "/apns-ca.pem"));
    REQUIRE(WriteFile(dir + "/orchard.conf", "push.endpoint = 127.0.0.1:" + std::to_string(apns->port()) + "\n" +
                                                 "push.ca_file = " + dir + "/apns-ca.pem\n" +
                                                 "push.coalesce_ms = 0\n" + "policy.dir = " + dir +
                                                 "/policies\n" + "log.level = warn\n"));
    orchard = std::make_unique<OrchardProcess>(
        dir + "/data", std::vector<std::string>{"--config", dir + "/orchard.conf", "--device-ca",
                                                dir + "/device-ca.pem", "--api-key", kKey});
    REQUIRE(orchard->Start());
    REQUIRE(Api("PUT", "/v1/pushcert", push_cert.cert_pem + push_cert.key_pem).status == 200);
  }
  ~World() {
    orchard.reset();
    apns.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  HttpResult Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return HttpCall(method, orchard->url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
  std::unique_ptr<sim::Device> Enroll(uint64_t seed) {
    sim::SimConfig c;
    c.base_url = orchard->url();
    c.cert_mode = sim::CertMode::kHeader;
    c.topic = kTopic;
    sim::DeviceState st = sim::RandomDeviceState(sim::Platform::kIos, seed);
    IssueOptions io;
    io.common_name = st.udid;
    auto d = sim::Device::Create(c, st, device_ca->Issue(io));
    REQUIRE(d.ok());
    REQUIRE((*d)->Authenticate().ok());
    REQUIRE((*d)->TokenUpdate().ok());
    return std::move(d.value());
  }
  size_t PushesTo(const sim::Device& d) {
    const std::string token = orchard::HexEncode(d.state().push_token);
    size_t n = 0;
    for (const auto& p : apns->Received()) n += p.token_hex == token;
    return n;
  }
  bool SyncQueued(const std::string& id) {
    HttpResult r = Api("GET", "/v1/enrollments/" + id + "/queue");
    if (r.status != 200) return false;
    const Value q = Json(r.body);
    for (const Value& c : *q.Find("commands")->AsArray())
      if (c.GetString("request_type") == "DeclarativeManagement") return true;
    return false;
  }
  std::string Compliance(const std::string& id) {
    HttpResult r = Api("GET", "/v1/compliance/min-os-ddm");
    if (r.status != 200) return "";
    const Value list = Json(r.body);
    for (const Value& d : *list.Find("devices")->AsArray())
      if (d.GetString("enrollment_id") == id) return std::string(d.GetString("status"));
    return "";
  }
};

// Runs a session and syncs with the DeclarativeManagement command it brought.
void SessionAndSync(sim::Device& d, sim::DdmClient& ddm) {
  d.ClearReceived();
  REQUIRE(d.RunSession().ok());
  std::string data;
  for (const auto& c : d.received())
    if (c.request_type == "DeclarativeManagement") data = c.command.Find("Command")->Find("Data")->AsData()->bytes;
  REQUIRE_FALSE(data.empty());
  auto synced = ddm.Sync(data);
  REQUIRE(synced.ok());
}

}  // namespace

TEST_CASE("ddm policy: min-os-ddm declares the update, follows the device to the floor and unassigns",
          "[integration][ddm][policy]") {
  World w;
  auto dev = w.Enroll(0xd0d1);
  const std::string id = dev->udid();
  sim::DdmClient ddm(dev.get());

  // Enrolled: the policy assigns its status subscription; the sync command is queued and pushed.
  const bool queued = WaitUntil([&] { return w.SyncQueued(id); });
  INFO("decisions: " << w.Api("GET", "/v1/policies/min-os-ddm/decisions").body);
  INFO("parked: " << w.Api("GET", "/v1/policies/min-os-ddm/parked").body);
  INFO("queue: " << w.Api("GET", "/v1/enrollments/" + id + "/queue").body);
  INFO("ddm: " << w.Api("GET", "/v1/ddm/enrollments/" + id).body);
  REQUIRE(queued);
  REQUIRE(WaitUntil([&] { return w.PushesTo(*dev) >= 1; }));
  SessionAndSync(*dev, ddm);
  REQUIRE(ddm.held().count("min-os-ddm.status") == 1);
  CHECK(ddm.held().at("min-os-ddm.status").kind == "configuration");
  CHECK(ddm.held().count("min-os-ddm.status.activation") == 1);
  CHECK(ddm.held().count("min-os-ddm.ios.update") == 0);

  // The device reports OS 26.0 (below the floor 26.1): the update is declared and assigned.
  const size_t pushes = w.PushesTo(*dev);
  auto code = ddm.Report(R"({"device":{"operating-system":{"family":"iOS","version":"26.0"}}})");
  REQUIRE(code.ok());
  REQUIRE(*code == 200);
  REQUIRE(WaitUntil([&] { return w.Compliance(id) == "remediation_pending"; }));
  REQUIRE(WaitUntil([&] { return w.SyncQueued(id) && w.PushesTo(*dev) > pushes; }));
  SessionAndSync(*dev, ddm);
  REQUIRE(ddm.held().count("min-os-ddm.ios.update") == 1);
  Value update = Json(ddm.held().at("min-os-ddm.ios.update").json);
  CHECK(update.GetString("Type") == "com.apple.configuration.softwareupdate.enforcement.specific");
  CHECK(update.Find("Payload")->GetString("TargetOSVersion") == "26.1");
  CHECK(update.Find("Payload")->GetString("TargetLocalDateTime") == "2026-12-15T18:00:00");
  Value owner = Json(w.Api("GET", "/v1/ddm/declarations/min-os-ddm.ios.update?format=summary").body);
  CHECK(owner.GetString("owner") == "policy:min-os-ddm");

  // Progress, then the floor: compliant, the update set unassigned, the device drops it.
  REQUIRE(*ddm.Report(R"({"softwareupdate":{"install-state":"downloading"}})") == 200);
  REQUIRE(*ddm.Report(R"({"softwareupdate":{"install-state":"installing"}})") == 200);
  CHECK(w.Compliance(id) == "remediation_pending");
  REQUIRE(*ddm.Report(R"({"device":{"operating-system":{"version":"26.1"}},)"
                      R"("softwareupdate":{"install-state":"none"}})") == 200);
  REQUIRE(WaitUntil([&] { return w.Compliance(id) == "compliant"; }));
  REQUIRE(WaitUntil([&] { return w.SyncQueued(id); }));
  SessionAndSync(*dev, ddm);
  CHECK(ddm.held().count("min-os-ddm.ios.update") == 0);
  CHECK(ddm.held().count("min-os-ddm.status") == 1);  // the subscription stays
  Value sets = Json(w.Api("GET", "/v1/ddm/enrollment-sets/" + id).body);
  std::vector<std::string> names;
  for (const Value& n : *sets.Find("sets")->AsArray()) names.emplace_back(*n.AsString());
  CHECK(names == std::vector<std::string>{"min-os-ddm.status"});
}
