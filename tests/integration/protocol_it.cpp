// End-to-end over HTTP against the real orchardd: devices identified by a
// certificate header (as nginx forwards it), admin calls over the admin API.
#include <catch2/catch.hpp>

#include <dirent.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include "plist/plist.h"
#include "support/fixtures.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::testing;
using plist::Value;

namespace {

constexpr const char* kKey = "integration-test-api-key-0001";

struct Server {
  std::string dir = MakeTempDir("orchard-it");
  std::unique_ptr<TestCa> ca = TestCa::Create("IT Device CA");
  std::unique_ptr<OrchardProcess> proc;

  explicit Server(std::vector<std::string> extra = {}) {
    REQUIRE(ca->WriteCertPem(dir + "/ca.pem"));
    std::vector<std::string> args = {"--device-ca", dir + "/ca.pem", "--api-key", kKey};
    args.insert(args.end(), extra.begin(), extra.end());
    proc = std::make_unique<OrchardProcess>(dir + "/data", args);
    REQUIRE(proc->Start());
  }
  ~Server() {
    proc.reset();
    std::filesystem::remove_all(dir);
    std::filesystem::remove(dir + "/data.log");
  }

  HttpResult Device(const Identity& id, const std::string& body, bool checkin) {
    std::vector<std::string> h = {"Client-Cert: " + id.Rfc9440Header()};
    if (checkin) h.push_back("Content-Type: application/x-apple-aspen-mdm-checkin");
    else h.push_back("Content-Type: application/x-apple-aspen-mdm");
    return HttpCall("PUT", proc->url() + "/mdm", body, h);
  }
  HttpResult Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return HttpCall(method, proc->url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
};

Value S(const std::string& s) { return Value::String(s); }

std::string AuthenticateBody(const std::string& udid) {
  Value v;
  v.Set("MessageType", S("Authenticate"));
  v.Set("UDID", S(udid));
  v.Set("SerialNumber", S("SN-" + udid));
  v.Set("Model", S("iPhone15,2"));
  v.Set("OSVersion", S("17.4"));
  v.Set("Topic", S("com.apple.mgmt.test"));
  return plist::ToXml(v);
}

std::string TokenUpdateBody(const std::string& udid) {
  Value v;
  v.Set("MessageType", S("TokenUpdate"));
  v.Set("UDID", S(udid));
  v.Set("Token", Value::DataValue(std::string(32, '\x07')));
  v.Set("PushMagic", S("magic"));
  v.Set("Topic", S("com.apple.mgmt.test"));
  return plist::ToXml(v);
}

std::string ReportBody(const std::string& udid, const std::string& status, const std::string& uuid = "") {
  Value v;
  v.Set("UDID", S(udid));
  v.Set("Status", S(status));
  if (!uuid.empty()) v.Set("CommandUUID", S(uuid));
  return plist::ToXml(v);
}

std::string CommandPlist(const std::string& uuid, const std::string& type) {
  Value cmd;
  cmd.Set("RequestType", S(type));
  Value v;
  v.Set("CommandUUID", S(uuid));
  v.Set("Command", cmd);
  return plist::ToXml(v);
}

void Enroll(Server& s, const Identity& id, const std::string& udid) {
  REQUIRE(s.Device(id, AuthenticateBody(udid), true).status == 200);
  REQUIRE(s.Device(id, TokenUpdateBody(udid), true).status == 200);
}

Value Json(const HttpResult& r) {
  auto v = plist::ParseJson(r.body);
  REQUIRE(v.ok());
  return v.value();
}

// A sample value of an Apple schema type, for building every command.
Value Sample(const std::string& type, int n) {
  if (type == "<string>") return S("value-" + std::to_string(n));
  if (type == "<integer>") return Value::Integer(-1000000000000LL - n);
  if (type == "<real>") return Value::Real(1.5 + n);
  if (type == "<boolean>") return Value::Bool(n % 2 == 0);
  if (type == "<data>") return Value::DataValue(std::string("\x00\x01\xfe\xff", 4) + std::to_string(n));
  if (type == "<date>") return Value::DateValue(1700000000 + n);
  if (type == "<array>") {
    Value a = Value::MakeArray();
    a.AsArray()->push_back(S("item"));
    return a;
  }
  Value d;
  d.Set("Key", S("v"));
  return d;
}

}  // namespace

TEST_CASE("enroll, enqueue, deliver, acknowledge, read the result through the API", "[integration]") {
  Server s;
  auto dev = s.ca->Issue();
  Enroll(s, dev, "DEV-1");

  auto enq = s.Api("PUT", "/v1/enqueue/DEV-1?nopush=1", CommandPlist("CMD-1", "DeviceInformation"));
  REQUIRE(enq.status == 200);
  Value ev = Json(enq);
  CHECK(ev.GetString("command_uuid") == "CMD-1");
  CHECK(ev.GetString("request_type") == "DeviceInformation");
  CHECK(ev.GetBool("no_push", false));

  auto q = Json(s.Api("GET", "/v1/enrollments/DEV-1/queue"));
  REQUIRE(q.Find("commands")->AsArray()->size() == 1);

  auto cmd = s.Device(dev, ReportBody("DEV-1", "Idle"), false);
  REQUIRE(cmd.status == 200);
  CHECK(cmd.content_type.find("application/xml") == 0);
  CHECK(cmd.body == CommandPlist("CMD-1", "DeviceInformation"));

  Value ack;
  ack.Set("UDID", S("DEV-1"));
  ack.Set("Status", S("Acknowledged"));
  ack.Set("CommandUUID", S("CMD-1"));
  Value qr;
  qr.Set("OSVersion", S("17.4"));
  ack.Set("QueryResponses", qr);
  auto done = s.Device(dev, plist::ToXml(ack), false);
  CHECK(done.status == 200);
  CHECK(done.body.empty());

  auto res = s.Api("GET", "/v1/enrollments/DEV-1/results/CMD-1");
  REQUIRE(res.status == 200);
  Value rv = Json(res);
  CHECK(rv.GetString("status") == "Acknowledged");
  CHECK(rv.Find("response")->Find("QueryResponses")->GetString("OSVersion") == "17.4");
  auto raw = s.Api("GET", "/v1/enrollments/DEV-1/results/CMD-1?format=plist");
  CHECK(raw.body == plist::ToXml(ack));
  CHECK(Json(s.Api("GET", "/v1/enrollments/DEV-1/results")).Find("results")->AsArray()->size() == 1);

  auto dev_json = Json(s.Api("GET", "/v1/enrollments/DEV-1"));
  CHECK(dev_json.GetString("state") == "enrolled");
  CHECK(dev_json.GetString("serial_number") == "SN-DEV-1");
  CHECK(dev_json.Find("push_magic") == nullptr);  // secrets are never returned

  auto events = Json(s.Api("GET", "/v1/events?limit=1000"));
  std::vector<std::string> types;
  for (auto& e : *events.Find("events")->AsArray()) types.emplace_back(e.GetString("type"));
  CHECK(std::find(types.begin(), types.end(), "command.acknowledged") != types.end());
  CHECK(std::find(types.begin(), types.end(), "enrollment.token_updated") != types.end());

  auto metrics = HttpCall("GET", s.proc->url() + "/metrics");
  CHECK(metrics.body.find("orchard_enrollments{state=\"enrolled\"} 1") != std::string::npos);
  CHECK(metrics.body.find("orchard_queue_depth 0") != std::string::npos);
  CHECK(metrics.body.find("orchard_http_requests_total{route=\"mdm\",status=\"200\"}") != std::string::npos);
  CHECK(metrics.body.find("orchard_http_request_duration_seconds_bucket") != std::string::npos);
}

TEST_CASE("the real device plists enroll and report", "[integration]") {
  const std::string fx = FixturePath("devices/");
  INFO("device fixtures under " << fx);
  REQUIRE(std::filesystem::exists(fx + "Authenticate.1.plist"));
  Server s;
  auto dev = s.ca->Issue();
  REQUIRE(s.Device(dev, ReadFile(fx + "Authenticate.1.plist"), true).status == 200);
  REQUIRE(s.Device(dev, ReadFile(fx + "TokenUpdate.1.plist"), true).status == 200);
  const std::string udid = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69";
  Value e = Json(s.Api("GET", "/v1/enrollments/" + udid));
  CHECK(e.GetString("serial_number") == "F5JM992LF193");
  CHECK(e.GetString("os_version") == "9.3.5");
  CHECK(e.GetString("product_name") == "iPad2,5");
  CHECK(e.GetString("state") == "enrolled");
  CHECK(e.GetBool("has_unlock_token", false));
  // Search by serial uses the index.
  Value list = Json(s.Api("GET", "/v1/enrollments?serial=F5JM992LF193"));
  REQUIRE(list.Find("enrollments")->AsArray()->size() == 1);

  // The captured DeviceInformation report, re-addressed to this device.
  std::string report = ReadFile(fx + "DeviceInformation.1.plist");
  report = std::regex_replace(report, std::regex("<string>66ADE930-5FDF-5EC4-8429-15640684C489</string>\\s*</dict>\\s*</plist>"),
                              "<string>" + udid + "</string></dict></plist>");
  REQUIRE(s.Api("PUT", "/v1/enqueue/" + udid + "?nopush=1",
                CommandPlist("76eda240-5488-4989-8339-f2ae160113c4", "DeviceInformation")).status == 200);
  REQUIRE(s.Device(dev, ReportBody(udid, "Idle"), false).status == 200);
  auto r = s.Device(dev, report, false);
  CHECK(r.status == 200);
  Value res = Json(s.Api("GET", "/v1/enrollments/" + udid + "/results/76eda240-5488-4989-8339-f2ae160113c4"));
  CHECK(res.Find("response")->Find("QueryResponses")->GetString("HostName") == "fruit.example.com");
}

TEST_CASE("bad device input gets a clear 4xx and stores nothing", "[integration]") {
  Server s({"--log-level", "error"});
  auto dev = s.ca->Issue();
  Enroll(s, dev, "DEV-1");
  auto truncated = s.Device(dev, "<?xml version=\"1.0\"?><plist><dict><key>Status</key>", false);
  CHECK(truncated.status == 400);
  CHECK(truncated.body.find("plist") != std::string::npos);
  CHECK(s.Device(dev, "not xml at all", true).status == 400);
  CHECK(s.Device(dev, "", false).status == 400);
  std::string deep;
  for (int i = 0; i < 5000; ++i) deep += "<array>";
  CHECK(s.Device(dev, "<plist>" + deep, false).status == 400);
  CHECK(s.Device(dev, ReportBody("DEV-1", "Bogus"), false).status == 400);
  auto no_status = s.Device(dev, "<plist><dict><key>UDID</key><string>DEV-1</string></dict></plist>", false);
  CHECK(no_status.status == 400);
  CHECK(no_status.body.find("Status") != std::string::npos);
  // Over the 8 MiB default body limit.
  std::string big = "<plist><string>" + std::string(9 * 1024 * 1024, 'a') + "</string></plist>";
  auto too_big = s.Device(dev, big, false);
  CHECK((too_big.status == 413 || too_big.status == 400));
  // Identity problems: 403, never 401.
  auto stranger = s.ca->Issue();
  CHECK(s.Device(stranger, ReportBody("DEV-1", "Idle"), false).status == 403);
  CHECK(HttpCall("PUT", s.proc->url() + "/mdm", ReportBody("DEV-1", "Idle")).status == 403);
  CHECK(HttpCall("PUT", s.proc->url() + "/mdm", ReportBody("DEV-1", "Idle"),
                 {"Client-Cert: :bm90IGEgY2VydA==:"}).status == 403);
  CHECK(HttpCall("GET", s.proc->url() + "/mdm").status == 405);
  // The server is still healthy and nothing was queued or stored.
  CHECK(Json(s.Api("GET", "/v1/enrollments/DEV-1/results")).Find("results")->AsArray()->empty());
  CHECK(s.Device(dev, ReportBody("DEV-1", "Idle"), false).status == 200);
}

TEST_CASE("Mdm-Signature identifies the device without a proxy header", "[integration]") {
  Server s({"--cert-header", ""});
  auto dev = s.ca->Issue();
  auto send = [&](const std::string& body, bool checkin, const std::string& sig) {
    std::vector<std::string> h = {"Mdm-Signature: " + sig};
    if (checkin) h.push_back("Content-Type: application/x-apple-aspen-mdm-checkin");
    return HttpCall("PUT", s.proc->url() + "/mdm", body, h);
  };
  std::string auth = AuthenticateBody("SIG-1");
  REQUIRE(send(auth, true, dev.MdmSignature(auth)).status == 200);
  std::string tu = TokenUpdateBody("SIG-1");
  REQUIRE(send(tu, true, dev.MdmSignature(tu)).status == 200);
  std::string idle = ReportBody("SIG-1", "Idle");
  CHECK(send(idle, false, dev.MdmSignature(idle)).status == 200);
  // A signature over another body is refused.
  CHECK(send(idle, false, dev.MdmSignature(tu)).status == 403);
}

TEST_CASE("the certificate header is only believed from a trusted proxy", "[integration][auth]") {
  std::string conf = MakeTempDir("orchard-proxy") + "/orchard.conf";
  REQUIRE(WriteFile(conf, "auth.trusted_proxies = 192.0.2.1\n"));
  Server s({"--config", conf});
  auto dev = s.ca->Issue();
  auto r = s.Device(dev, AuthenticateBody("SPOOF"), true);
  CHECK(r.status == 403);
  CHECK(r.body.find("no device certificate") != std::string::npos);
  // The signature path still works for a direct client.
  std::string body = AuthenticateBody("SIGNED");
  CHECK(HttpCall("PUT", s.proc->url() + "/mdm", body,
                 {"Content-Type: application/x-apple-aspen-mdm-checkin",
                  "Mdm-Signature: " + dev.MdmSignature(body)}).status == 200);
  std::filesystem::remove_all(std::filesystem::path(conf).parent_path());
}

TEST_CASE("a command the device never reports on is failed after queue.max_deliveries", "[integration]") {
  const std::string conf_dir = MakeTempDir("orchard-poison");
  const std::string conf = conf_dir + "/orchard.conf";
  REQUIRE(WriteFile(conf, "queue.max_deliveries = 2\ncheckin.max_user_channels = 1\n"));
  Server s({"--config", conf});
  auto dev = s.ca->Issue();
  Enroll(s, dev, "DEV-P");
  REQUIRE(s.Api("PUT", "/v1/enqueue/DEV-P?nopush=1", CommandPlist("POISON", "InstallProfile")).status == 200);
  REQUIRE(s.Api("PUT", "/v1/enqueue/DEV-P?nopush=1", CommandPlist("NEXT", "DeviceInformation")).status == 200);
  // Each new session hands out POISON again; the device never answers it.
  for (int i = 0; i < 2; ++i) {
    auto r = s.Device(dev, ReportBody("DEV-P", "Idle"), false);
    REQUIRE(r.status == 200);
    REQUIRE(r.body == CommandPlist("POISON", "InstallProfile"));
  }
  auto r = s.Device(dev, ReportBody("DEV-P", "Idle"), false);
  REQUIRE(r.status == 200);
  CHECK(r.body == CommandPlist("NEXT", "DeviceInformation"));

  auto res = s.Api("GET", "/v1/enrollments/DEV-P/results/POISON");
  REQUIRE(res.status == 200);
  Value rv = Json(res);
  CHECK(rv.GetString("status") == "Failed");
  REQUIRE(rv.Find("error_chain"));
  CHECK(rv.Find("error_chain")->AsArray()->at(0).GetString("LocalizedDescription").find("after 2 deliveries") !=
        std::string_view::npos);
  auto q = Json(s.Api("GET", "/v1/enrollments/DEV-P/queue"));
  REQUIRE(q.Find("commands")->AsArray()->size() == 1);
  CHECK(q.Find("commands")->AsArray()->at(0).GetString("command_uuid") == "NEXT");
  auto events = Json(s.Api("GET", "/v1/events?limit=1000"));
  bool failed_event = false;
  for (auto& e : *events.Find("events")->AsArray())
    failed_event |= e.GetString("type") == "command.failed" && e.GetString("command_uuid") == "POISON";
  CHECK(failed_event);

  // checkin.max_user_channels = 1: a second user channel is declined with 410, the first works.
  auto user = [&](const std::string& user_id) {
    Value v = plist::ParseXml(TokenUpdateBody("DEV-P")).value();
    v.Set("UserID", S(user_id));
    return s.Device(dev, plist::ToXml(v), true);
  };
  CHECK(user("USER-1").status == 200);
  auto second = user("USER-2");
  CHECK(second.status == 410);
  CHECK(second.body.find("checkin.max_user_channels") != std::string::npos);
  CHECK(user("USER-1").status == 200);
  std::filesystem::remove_all(conf_dir);
}

TEST_CASE("admin API errors are clear JSON", "[integration]") {
  Server s;
  CHECK(HttpCall("GET", s.proc->url() + "/v1/enrollments").status == 401);
  CHECK(HttpCall("GET", s.proc->url() + "/v1/enrollments", "", {"X-API-Key: wrong-key-wrong-key"}).status == 401);
  // NanoMDM tools use Basic auth with the key as password.
  CHECK(HttpCall("GET", s.proc->url() + "/version", "",
                 {"Authorization: Basic " + Base64Encode(std::string("nanomdm:") + kKey)}).status == 200);
  auto nf = s.Api("GET", "/v1/enrollments/NOPE");
  CHECK(nf.status == 404);
  CHECK(Json(nf).GetString("error").find("NOPE") != std::string::npos);
  CHECK(s.Api("GET", "/v1/nothing-here").status == 404);
  // Metric labels come from a fixed set, whatever path a client invents.
  auto m = HttpCall("GET", s.proc->url() + "/metrics");
  CHECK(m.body.find("nothing-here") == std::string::npos);
  CHECK(m.body.find("route=\"api_other\"") != std::string::npos);
  CHECK(s.Api("PUT", "/v1/enqueue/X", "<plist><dict>").status == 400);
  CHECK(s.Api("PUT", "/v1/enqueue/X", "<plist><dict/></plist>").status == 400);  // no Command
  // Unknown enrollment: NanoMDM-style per-id error and 500 when all failed.
  auto unknown = s.Api("PUT", "/v1/enqueue/X?nopush=1", CommandPlist("U1", "DeviceInformation"));
  CHECK(unknown.status == 500);
  CHECK(Json(unknown).Find("status")->Find("X")->GetString("command_error") == "unknown enrollment");
  auto big = s.Api("PUT", "/v1/enqueue/X", std::string(8 * 1024 * 1024 + 10, 'x'));
  CHECK((big.status == 413));
  CHECK(s.Api("POST", "/v1/commands", "{\"enrollment_ids\": []}").status == 400);
  CHECK(s.Api("GET", "/v1/enrollments?limit=0").status == 400);
  CHECK(s.Api("GET", "/v1/enrollments?state=sleeping").status == 400);
  auto push = s.Api("POST", "/v1/push/X");
  CHECK(push.status == 500);
  auto bad_cert = s.Api("PUT", "/v1/pushcert", "not a pem");
  CHECK(bad_cert.status == 400);
}

TEST_CASE("enqueue to several ids: 207 when some fail, push fails without a push certificate", "[integration]") {
  Server s;
  auto a = s.ca->Issue();
  auto b = s.ca->Issue();
  Enroll(s, a, "A");
  Enroll(s, b, "B");
  auto r = s.Api("PUT", "/v1/enqueue/A,B,MISSING?nopush=1", CommandPlist("C-1", "ProfileList"));
  CHECK(r.status == 207);
  auto push = s.Api("PUT", "/v1/enqueue/A,B", CommandPlist("C-2", "ProfileList"));
  CHECK(push.status == 500);
  CHECK(Json(push).Find("status")->Find("A")->GetString("push_error").find("no push certificate") != std::string_view::npos);
  CHECK(Json(s.Api("GET", "/v1/enrollments/B/queue")).Find("commands")->AsArray()->size() == 2);
  // JSON enqueue: the server assigns the UUID, priority jumps the queue.
  auto j = s.Api("POST", "/v1/commands",
                 R"({"enrollment_ids":["A"],"command":{"RequestType":"SecurityInfo"},"priority":9,"nopush":true})");
  REQUIRE(j.status == 200);
  std::string uuid(Json(j).GetString("command_uuid"));
  CHECK(uuid.size() == 36);
  auto first = s.Device(a, ReportBody("A", "Idle"), false);
  CHECK(plist::ParseXml(first.body).value().GetString("CommandUUID") == uuid);
  // Queue management: delete one, clear.
  CHECK(s.Api("DELETE", "/v1/enrollments/A/queue/C-1").status == 200);
  CHECK(s.Api("DELETE", "/v1/enrollments/A/queue/C-1").status == 404);
  CHECK(Json(s.Api("DELETE", "/v1/enrollments/B/queue")).Find("removed")->AsInteger()[0] == 2);
  // Block: the device is unenrolled on its next contact.
  CHECK(s.Api("PUT", "/v1/enrollments/B/block").status == 200);
  CHECK(s.Device(b, ReportBody("B", "Idle"), false).status == 401);
  CHECK(s.Api("DELETE", "/v1/enrollments/B/block").status == 200);
  CHECK(s.Device(b, ReportBody("B", "Idle"), false).status == 200);
}

TEST_CASE("every RequestType in Apple's schema is enqueued and delivered intact", "[integration]") {
  const std::string dir = FixturePath("apple-device-management/mdm/commands");
  INFO("command schemas under " << dir);
  REQUIRE(std::filesystem::is_directory(dir));
  Server s({"--log-level", "warn"});
  auto dev = s.ca->Issue();
  Enroll(s, dev, "ALL");
  std::vector<std::pair<std::string, std::string>> sent;  // uuid, plist
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream f(entry.path());
    std::string line, request_type;
    Value command;
    bool in_keys = false;
    std::string pending_key;
    while (std::getline(f, line)) {
      if (line.rfind("  requesttype: ", 0) == 0) request_type = line.substr(15);
      if (line.rfind("payloadkeys:", 0) == 0) in_keys = true;
      else if (!line.empty() && line[0] != ' ' && line[0] != '-') in_keys = false;
      if (in_keys && line.rfind("- key: ", 0) == 0) pending_key = line.substr(7);
      if (in_keys && !pending_key.empty() && line.rfind("  type: ", 0) == 0) {
        command.Set(pending_key, Sample(line.substr(8), ++n));
        pending_key.clear();
      }
    }
    if (request_type.empty()) continue;
    command.Set("RequestType", S(request_type));
    Value full;
    std::string uuid = NewUuid();
    full.Set("CommandUUID", S(uuid));
    full.Set("Command", command);
    std::string body = plist::ToXml(full);
    auto r = s.Api("PUT", "/v1/enqueue/ALL?nopush=1", body);
    REQUIRE(r.status == 200);
    CHECK(Json(r).GetString("request_type") == request_type);
    sent.emplace_back(uuid, body);
  }
  REQUIRE(sent.size() >= 60);
  auto reply = s.Device(dev, ReportBody("ALL", "Idle"), false);
  for (const auto& [uuid, body] : sent) {
    REQUIRE(reply.status == 200);
    CHECK(reply.body == body);  // byte for byte
    auto parsed = plist::ParseXml(reply.body);
    REQUIRE(parsed.ok());
    CHECK(parsed->GetString("CommandUUID") == uuid);
    reply = s.Device(dev, ReportBody("ALL", "Acknowledged", uuid), false);
  }
  CHECK(reply.body.empty());
}

TEST_CASE("kill -9 during a burst of enqueues loses nothing that got a 200", "[integration][durability]") {
  Server s({"--log-level", "error"});
  auto dev = s.ca->Issue();
  Enroll(s, dev, "DUR");
  std::mutex mu;
  std::vector<std::string> acknowledged;
  std::atomic<bool> stop{false};
  std::atomic<int> ok_count{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; !stop; ++i) {
        std::string uuid = "T" + std::to_string(t) + "-" + std::to_string(i);
        auto r = s.Api("PUT", "/v1/enqueue/DUR?nopush=1", CommandPlist(uuid, "DeviceInformation"));
        if (r.status != 200) break;  // the server is gone
        std::lock_guard lock(mu);
        acknowledged.push_back(uuid);
        ++ok_count;
      }
    });
  }
  while (ok_count < 300) std::this_thread::yield();
  s.proc->Kill();  // SIGKILL mid-burst
  stop = true;
  for (auto& w : writers) w.join();

  OrchardProcess again(s.proc->data_dir(), {"--device-ca", s.dir + "/ca.pem", "--api-key", kKey});
  REQUIRE(again.Start());
  auto q = HttpCall("GET", again.url() + "/v1/enrollments/DUR/queue?limit=100000", "",
                    {std::string("X-API-Key: ") + kKey});
  REQUIRE(q.status == 200);
  std::set<std::string> queued;
  const Value listed = Json(q);
  for (auto& c : *listed.Find("commands")->AsArray()) queued.emplace(c.GetString("command_uuid"));
  for (const auto& uuid : acknowledged) CHECK(queued.count(uuid) == 1);
  INFO("acknowledged=" << acknowledged.size() << " queued=" << queued.size());
  CHECK(queued.size() >= acknowledged.size());
}
