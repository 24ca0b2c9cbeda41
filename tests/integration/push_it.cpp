// The whole delivery loop with the real orchardd, the mock APNs (HTTP/2 +
// TLS, client certificate) and simulated devices:
//   enqueue -> push -> (mock delivers) -> device wakes -> connects -> command.
#include <catch2/catch.hpp>

#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "apns_mock/mock_apns.h"
#include "plist/plist.h"
#include "sim/simulator.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::testing;
using plist::Value;

namespace {

constexpr const char* kKey = "push-integration-api-key-01";
constexpr const char* kTopic = "com.apple.mgmt.External.orchard-push-it";

// Collects the mock's deliveries and lets the test wait for them.
struct Deliveries {
  std::mutex mu;
  std::condition_variable cv;
  std::multiset<std::string> tokens;  // hex
  bool WaitFor(const std::string& token_hex, size_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return tokens.count(token_hex) >= count; });
  }
};

struct World {
  std::string dir = MakeTempDir("orchard-push-it");
  std::unique_ptr<TestCa> push_ca = TestCa::Create("Apple Push CA (test)");
  std::unique_ptr<TestCa> server_ca = TestCa::Create("APNs server CA (test)");
  std::unique_ptr<MockApns> apns;
  std::unique_ptr<OrchardProcess> orchard;
  std::unique_ptr<sim::Fleet> fleet;
  Deliveries delivered;
  Identity push_cert;

  explicit World(int devices) {
    IssueOptions server;
    server.dns_name = "localhost,127.0.0.1";
    server.server_auth_eku = true;
    server.client_auth_eku = false;
    Identity server_id = server_ca->Issue(server);
    IssueOptions push;
    push.uid = kTopic;
    push.common_name = std::string("APSP:") + kTopic;
    push_cert = push_ca->Issue(push);

    MockApnsOptions mo;
    mo.cert_pem = server_id.cert_pem;
    mo.key_pem = server_id.key_pem;
    mo.client_ca_pem = push_ca->cert_pem();
    apns = MockApns::Start(mo);
    REQUIRE(apns);
    apns->OnDelivered([this](const MockPush& p) {
      std::lock_guard lock(delivered.mu);
      delivered.tokens.insert(p.token_hex);
      delivered.cv.notify_all();
    });

    auto device_ca = TestCa::Create("Device CA (push it)");
    REQUIRE(device_ca->WriteCertPem(dir + "/device-ca.pem"));
    REQUIRE(server_ca->WriteCertPem(dir + "/apns-ca.pem"));
    REQUIRE(WriteFile(dir + "/orchard.conf",
                      "push.endpoint = 127.0.0.1:" + std::to_string(apns->port()) + "\n" +
                          "push.ca_file = " + dir + "/apns-ca.pem\n" +
                          "push.coalesce_ms = 0\n"
                          "push.retry_base_ms = 50\n"
                          "push.repush_interval_seconds = 1\n"
                          "retention.sweep_seconds = 1\n"
                          "log.level = warn\n"));
    orchard = std::make_unique<OrchardProcess>(
        dir + "/data", std::vector<std::string>{"--config", dir + "/orchard.conf", "--device-ca",
                                                dir + "/device-ca.pem", "--api-key", kKey});
    REQUIRE(orchard->Start());

    sim::FleetOptions fo;
    fo.devices = devices;
    fo.config.base_url = orchard->url();
    fo.config.cert_mode = sim::CertMode::kHeader;
    fo.config.topic = kTopic;
    auto f = sim::Fleet::Create(fo, std::move(device_ca));
    REQUIRE(f.ok());
    fleet = std::move(f.value());
    auto st = fleet->Enroll(2);
    REQUIRE(st.failed == 0);
  }
  ~World() {
    fleet.reset();
    orchard.reset();
    apns.reset();
    std::filesystem::remove_all(dir);
    std::filesystem::remove(dir + "/data.log");
  }

  HttpResult Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return HttpCall(method, orchard->url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
  std::string Token(size_t i) { return HexEncode(fleet->device(i).state().push_token); }
  std::string Ids() {
    std::string ids;
    for (size_t i = 0; i < fleet->size(); ++i) ids += (i ? "," : "") + fleet->device(i).udid();
    return ids;
  }
};

std::string Command(const std::string& type) {
  Value cmd;
  cmd.Set("RequestType", Value::String(type));
  Value v;
  v.Set("Command", cmd);
  return plist::ToXml(v);
}

Value Json(const HttpResult& r) {
  auto v = plist::ParseJson(r.body);
  REQUIRE(v.ok());
  return v.value();
}

}  // namespace

TEST_CASE("enqueue pushes through APNs, the device wakes and gets its command", "[integration][push]") {
  World w(5);
  auto cert = w.Api("PUT", "/v1/pushcert", w.push_cert.cert_pem + w.push_cert.key_pem);
  REQUIRE(cert.status == 200);
  CHECK(Json(cert).GetString("topic") == kTopic);
  CHECK_FALSE(Json(cert).GetString("not_after").empty());

  auto enq = w.Api("PUT", "/v1/enqueue/" + w.Ids(), Command("DeviceInformation"));
  REQUIRE(enq.status == 200);
  const Value result = Json(enq);
  for (size_t i = 0; i < w.fleet->size(); ++i) {
    const Value* s = result.Find("status")->Find(w.fleet->device(i).udid());
    REQUIRE(s);
    CHECK_FALSE(s->GetString("push_result").empty());
  }
  // Each device wakes on its push and fetches the command.
  for (size_t i = 0; i < w.fleet->size(); ++i) {
    REQUIRE(w.delivered.WaitFor(w.Token(i), 1, std::chrono::seconds(10)));
    auto session = w.fleet->device(i).RunSession();
    REQUIRE(session.ok());
    CHECK(session->acknowledged == 1);
  }
  // What APNs saw: the right topic, the device's own PushMagic, priority 10, an expiration.
  auto received = w.apns->Received();
  REQUIRE(received.size() >= w.fleet->size());
  for (const auto& p : received) {
    CHECK(p.status == 200);
    CHECK(p.topic == kTopic);
    CHECK(p.priority == 10);
    CHECK(p.expiration > NowMillis() / 1000);
  }
  std::map<std::string, std::string> magic_by_token;
  for (const auto& p : received) magic_by_token[p.token_hex] = p.push_magic;
  CHECK(magic_by_token[w.Token(0)] == w.fleet->device(0).state().push_magic);
  // The outcome is visible per enrollment.
  auto e = Json(w.Api("GET", "/v1/enrollments/" + w.fleet->device(0).udid()));
  REQUIRE(e.Find("push"));
  CHECK(e.Find("push")->Find("last_status")->AsInteger()[0] == 200);
  auto metrics = HttpCall("GET", w.orchard->url() + "/metrics");
  CHECK(metrics.body.find("orchard_push_total{outcome=\"ok\"}") != std::string::npos);
  CHECK(metrics.body.find(std::string("orchard_push_certificate_days_left{topic=\"") + kTopic) !=
        std::string::npos);
}

TEST_CASE("410 Unregistered stops pushes until the next TokenUpdate", "[integration][push]") {
  World w(2);
  REQUIRE(w.Api("PUT", "/v1/pushcert", w.push_cert.key_pem + w.push_cert.cert_pem).status == 200);
  const std::string gone = w.Token(0);
  w.apns->SetUnregistered(gone, 1700000000000);
  const std::string udid = w.fleet->device(0).udid();
  auto first = w.Api("GET", "/v1/push/" + udid);
  INFO("first push answer: " << first.body);
  REQUIRE(first.status == 500);
  CHECK(Json(first).Find("status")->Find(udid)->GetString("push_error").find("Unregistered") !=
        std::string_view::npos);
  auto e = Json(w.Api("GET", "/v1/enrollments/" + udid));
  REQUIRE(e.Find("push"));
  CHECK(e.Find("push")->GetBool("token_invalid", false));
  size_t seen = w.apns->Received().size();
  auto second = w.Api("GET", "/v1/push/" + udid);
  INFO("second push answer: " << second.body);
  REQUIRE(Json(second).Find("status"));
  CHECK(Json(second).Find("status")->Find(udid)->GetString("push_error").find("invalid") !=
        std::string_view::npos);
  CHECK(w.apns->Received().size() == seen);  // not sent again
  auto events = Json(w.Api("GET", "/v1/events?limit=10000"));
  bool unregistered = false;
  for (auto& ev : *events.Find("events")->AsArray())
    unregistered |= ev.GetString("type") == "push.unregistered" && ev.GetString("enrollment_id") == udid;
  CHECK(unregistered);
  // A TokenUpdate (here with a fresh token, as after a restore) makes it pushable again.
  w.fleet->device(0).state().push_token = std::string(32, '\x5a');
  REQUIRE(w.fleet->device(0).TokenUpdate().ok());
  auto third = w.Api("GET", "/v1/push/" + udid);
  CHECK(third.status == 200);
  REQUIRE(w.apns->Received().size() == seen + 1);
  CHECK(w.apns->Received().back().token_hex == HexEncode(std::string(32, '\x5a')));
}

TEST_CASE("devices with pending commands that stay silent are pushed again", "[integration][push]") {
  World w(1);
  REQUIRE(w.Api("PUT", "/v1/pushcert", w.push_cert.cert_pem + w.push_cert.key_pem).status == 200);
  REQUIRE(w.Api("PUT", "/v1/enqueue/" + w.Ids(), Command("ProfileList")).status == 200);
  REQUIRE(w.delivered.WaitFor(w.Token(0), 1, std::chrono::seconds(10)));
  // The device does not come: the re-push (interval 1 s here) wakes it again.
  REQUIRE(w.delivered.WaitFor(w.Token(0), 2, std::chrono::seconds(15)));
  auto session = w.fleet->device(0).RunSession();
  REQUIRE(session.ok());
  CHECK(session->acknowledged == 1);
}
