// The whole delivery loop with the real orchardd, the mock APNs (HTTP/2 +
// TLS, client certificate) and simulated devices:
//   enqueue -> push -> (mock delivers) -> device wakes -> connects -> command.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

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

  // log_level: orchardd's (tests that watch its log use info).
  explicit World(int devices, const std::string& log_level = "warn") {
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
                          "log.level = " + log_level + "\n"));
    orchard = std::make_unique<OrchardProcess>(
        dir + "/data", std::vector<std::string>{"--config", dir + "/orchard.conf", "--device-ca",
                                                dir + "/device-ca.pem", "--api-key", kKey});
    REQUIRE(orchard->Start());

    sim::FleetOptions fo;
    fo.devices = devices;
    fo.config.base_url = orchard->url();
    fo.config.cert_mode = sim::CertMode::kHeader;
    fo.config.topic = kTopic;
    fo.config.record_latencies = true;
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
  size_t DeliveredTo(const std::string& token_hex) {
    std::lock_guard lock(delivered.mu);
    return delivered.tokens.count(token_hex);
  }
  // The value of an unlabelled or topic-labelled metric line ("name" or
  // "name{topic=...}"); -1 when absent.
  double Metric(const std::string& name) {
    auto body = HttpCall("GET", orchard->url() + "/metrics").body;
    for (const std::string& prefix : {name + " ", name + "{topic=\"" + kTopic + "\"} "}) {
      size_t at = body.find("\n" + prefix);
      if (at != std::string::npos) return std::atof(body.c_str() + at + 1 + prefix.size());
    }
    return -1;
  }
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

// Polls pred until true or the deadline (for state that has no event to wait on).
template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
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
  // The outcome is visible per enrollment (recorded once APNs has answered).
  Value e;
  REQUIRE(WaitUntil([&] {
    e = Json(w.Api("GET", "/v1/enrollments/" + w.fleet->device(0).udid()));
    return e.Find("push") != nullptr;
  }, std::chrono::seconds(10)));
  CHECK(e.Find("push")->Find("last_status")->AsInteger()[0] == 200);
  CHECK(e.Find("push")->GetString("last_apns_id") ==
        result.Find("status")->Find(w.fleet->device(0).udid())->GetString("push_result"));
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
  // The push is accepted at once; APNs' 410 is recorded when it comes.
  auto first = w.Api("GET", "/v1/push/" + udid);
  INFO("first push answer: " << first.body);
  REQUIRE(first.status == 200);
  const std::string apns_id(Json(first).Find("status")->Find(udid)->GetString("push_result"));
  CHECK(apns_id.size() == 36);
  Value e;
  REQUIRE(WaitUntil([&] {
    e = Json(w.Api("GET", "/v1/enrollments/" + udid));
    return e.Find("push") && e.Find("push")->GetBool("token_invalid", false);
  }, std::chrono::seconds(10)));
  CHECK(e.Find("push")->GetString("last_apns_id") == apns_id);
  CHECK(e.Find("push")->GetString("last_reason") == "Unregistered");
  size_t seen = w.apns->Received().size();
  auto second = w.Api("GET", "/v1/push/" + udid);
  INFO("second push answer: " << second.body);
  CHECK(second.status == 500);  // refused at once: the token is known to be invalid
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
  REQUIRE(w.delivered.WaitFor(HexEncode(std::string(32, '\x5a')), 1, std::chrono::seconds(10)));
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

TEST_CASE("admin pushes answer at once while APNs is slow, and device requests stay fast", "[integration][push]") {
  World w(4);
  REQUIRE(w.Api("PUT", "/v1/pushcert", w.push_cert.cert_pem + w.push_cert.key_pem).status == 200);
  const std::string udid0 = w.fleet->device(0).udid();
  // Every APNs answer comes 4 s late (longer than the 3 s an admin call used to wait).
  w.apns->SetDelayMs(4000);
  for (size_t i = 0; i < w.fleet->size(); ++i) w.fleet->device(i).latencies_us().clear();

  // Two admin clients (as many as orchardd has HTTP workers) push and enqueue
  // to every device, while the devices check in.
  std::atomic<int64_t> admin_max_ms{0};
  std::atomic<int> admin_failed{0};
  std::mutex ids_mu;
  std::set<std::string> ids0;  // apns-ids answered for device 0
  std::string last_error;
  auto admin = [&](bool enqueue) {
    for (int k = 0; k < 6; ++k) {
      auto t0 = std::chrono::steady_clock::now();
      HttpResult r = enqueue ? w.Api("PUT", "/v1/enqueue/" + w.Ids(), Command("ProfileList"))
                             : w.Api("POST", "/v1/push/" + w.Ids());
      int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
      int64_t seen_max = admin_max_ms.load();
      while (ms > seen_max && !admin_max_ms.compare_exchange_weak(seen_max, ms)) {
      }
      auto v = plist::ParseJson(r.body);
      std::lock_guard lock(ids_mu);
      if (r.status != 200 || !v.ok()) {
        ++admin_failed;
        last_error = r.body;
        continue;
      }
      ids0.insert(std::string(v->Find("status")->Find(udid0)->GetString("push_result")));
    }
  };
  std::thread pusher(admin, false), enqueuer(admin, true);
  int sessions = 0;
  while (sessions < 12) {
    auto s = w.fleet->device(1 + sessions % 3).RunSession();
    REQUIRE(s.ok());
    ++sessions;
  }
  pusher.join();
  enqueuer.join();
  INFO("last admin error: " << last_error);
  CHECK(admin_failed.load() == 0);
  // The admin calls did not wait for APNs.
  CHECK(admin_max_ms.load() < 1000);
  // No device request waited behind them.
  uint32_t device_max_us = 0;
  for (size_t i = 1; i < w.fleet->size(); ++i)
    for (uint32_t us : w.fleet->device(i).latencies_us()) device_max_us = std::max(device_max_us, us);
  CHECK(device_max_us > 0);
  CHECK(device_max_us < 1000 * 1000);

  // APNs' answer, when it comes, is recorded in the enrollment's push state with
  // the apns-id the admin call returned.
  REQUIRE_FALSE(ids0.empty());
  Value e;
  CHECK(WaitUntil([&] {
    e = Json(w.Api("GET", "/v1/enrollments/" + udid0));
    return e.Find("push") && e.Find("push")->Find("last_status")->AsInteger()[0] == 200;
  }, std::chrono::seconds(20)));
  CHECK(ids0.count(std::string(e.Find("push")->GetString("last_apns_id"))) == 1);
}

TEST_CASE("after an APNs outage a device gets one push, not one per enqueue and re-push round", "[integration][push]") {
  World w(1, "info");  // re-push rounds are counted in the log
  REQUIRE(w.Api("PUT", "/v1/pushcert", w.push_cert.cert_pem + w.push_cert.key_pem).status == 200);
  const std::string udid = w.fleet->device(0).udid();
  const std::string token = w.Token(0);
  REQUIRE(w.Api("POST", "/v1/push/" + udid).status == 200);  // connects to APNs
  REQUIRE(w.delivered.WaitFor(token, 1, std::chrono::seconds(10)));
  REQUIRE(WaitUntil([&] { return w.Metric("orchard_push_pending") == 0; }, std::chrono::seconds(10)));

  // APNs goes away: connections are dropped and refused.
  REQUIRE(w.apns->SetListening(false));
  const size_t before = w.DeliveredTo(token);
  const size_t rounds_before = Count(ReadFile(w.orchard->log_path()), "event=repush ");
  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto r = w.Api("PUT", "/v1/enqueue/" + udid, Command("ProfileList"));
    REQUIRE(r.status == 200);  // accepted at once, APNs or not
    ids.insert(std::string(Json(r).Find("status")->Find(udid)->GetString("push_result")));
  }
  CHECK(ids.size() == 1);  // one push, joined by the later enqueues
  // Re-push rounds (every second here) find the device with commands and unseen.
  REQUIRE(WaitUntil([&] { return Count(ReadFile(w.orchard->log_path()), "event=repush ") >= rounds_before + 3; },
                    std::chrono::seconds(20)));

  // APNs is back: the device's token gets exactly one push, within seconds.
  REQUIRE(w.apns->SetListening(true));
  REQUIRE(w.delivered.WaitFor(token, before + 1, std::chrono::seconds(10)));
  auto session = w.fleet->device(0).RunSession();  // it wakes and takes all three commands
  REQUIRE(session.ok());
  CHECK(session->acknowledged == 3);
  // Everything handed to APNs has been answered...
  REQUIRE(WaitUntil([&] {
    return w.Metric("orchard_apns_in_flight") == 0 && w.Metric("orchard_apns_queued") == 0 &&
           w.Metric("orchard_push_pending") == 0;
  }, std::chrono::seconds(20)));
  // ... and it was one push.
  CHECK(w.DeliveredTo(token) == before + 1);
  auto e = Json(w.Api("GET", "/v1/enrollments/" + udid));
  REQUIRE(e.Find("push"));
  CHECK(ids.count(std::string(e.Find("push")->GetString("last_apns_id"))) == 1);
}
