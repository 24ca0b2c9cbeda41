// Identity renewal end to end against the real orchardd: a device enrolls the
// real way (signed profile, SCEP), a Lua policy sends it a renewal profile
// (ctx:renewal_profile() in an InstallProfile), the device obtains a new
// certificate by SCEP with that profile's challenge, and its next request with
// the new certificate is accepted in place: the command queued meanwhile is
// delivered, the enrollment keeps its generation (no second
// enrollment.enrolled), the old certificate is refused, and an
// enrollment.reenroll event says "renewed". Also a takeover attempt with
// another valid certificate, pending until approved through the admin API.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <thread>

#include "plist/plist.h"
#include "sim/enroll_profile.h"
#include "sim/simulator.h"
#include "support/orchardd_process.h"
#include "support/scep_client.h"
#include "support/test_pki.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::testing;
using plist::Value;

namespace {

constexpr const char* kKey = "renewal-integration-api-key-01";
constexpr const char* kToken = "renewal-token-0123456789abcdef";
constexpr const char* kTopic = "com.apple.mgmt.External.orchard-renewal-it";

constexpr const char* kPolicy = R"lua(policy { name = "renew-now", description = "renews at once (test)", version = "1" }
policy:on("enrollment.enrolled", function(ctx)
  local profile, why = ctx:renewal_profile()
  if not profile then
    ctx:log("no renewal profile: " .. why)
    return
  end
  ctx:enqueue(mdm.InstallProfile { Payload = profile })
end)
)lua";

// A loopback port nobody listens on right now (the server's public URL must be known before it starts).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  close(fd);
  return ntohs(a.sin_port);
}

std::string Command(const std::string& type) {
  Value cmd = Value::MakeDict();
  cmd.Set("RequestType", Value::String(type));
  Value v = Value::MakeDict();
  v.Set("Command", cmd);
  return plist::ToXml(v);
}

template <class F>
bool WaitFor(F f, std::chrono::seconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return f();
}

// The admin API of the server at url.
HttpResult Api(const std::string& url, const std::string& method, const std::string& path,
               const std::string& body = "") {
  return HttpCall(method, url + path, body, {std::string("X-API-Key: ") + kKey});
}

// Uploads a push certificate for kTopic (profiles need the topic).
void UploadPushCert(const std::string& url) {
  auto push_ca = TestCa::Create("Apple Push CA (renewal test)");
  Identity push = push_ca->Issue({.common_name = std::string("APSP:") + kTopic, .uid = kTopic});
  REQUIRE(Api(url, "PUT", "/v1/pushcert", push.cert_pem + push.key_pem).status == 200);
}

// One simulated device enrolling through url's profile by POSTing machine info
// (so the certificate is issued for its UDID), identified by header and signature.
sim::FleetOptions ProfileFleet(const std::string& url) {
  sim::FleetOptions fo;
  fo.devices = 1;
  fo.config.cert_mode = sim::CertMode::kHeaderAndSignature;
  fo.profile.url = url + "/mdm/enroll";
  fo.profile.token = kToken;
  fo.profile.machine_info = true;
  return fo;
}

}  // namespace

TEST_CASE("identity renewal by InstallProfile keeps the enrollment: queue, generation, and the old certificate refused",
          "[integration][enroll][renewal]") {
  const std::string dir = MakeTempDir("orchard-renewal-it");
  auto signing_ca = TestCa::Create("Profile Signing CA (renewal test)");
  Identity signer = signing_ca->Issue({.common_name = "Orchard profile signing (renewal test)",
                                       .client_auth_eku = false, .rsa_key = true});
  REQUIRE(WriteFile(dir + "/signing.pem", signer.cert_pem));
  REQUIRE(WriteFile(dir + "/signing.key", signer.key_pem));
  std::filesystem::create_directories(dir + "/policies");
  REQUIRE(WriteFile(dir + "/policies/renew_now.lua", kPolicy));
  const int port = FreePort();
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  REQUIRE(WriteFile(dir + "/orchard.conf", std::string("enroll.token = ") + kToken + "\n" +
                                               "enroll.public_url = " + url + "\n" +
                                               "enroll.profile_signing_cert = " + dir + "/signing.pem\n" +
                                               "enroll.profile_signing_key = " + dir + "/signing.key\n" +
                                               "policy.dir = " + dir + "/policies\n"));
  OrchardProcess orchard(dir + "/data", {"--config", dir + "/orchard.conf", "--api-key", kKey, "--listen",
                                         "127.0.0.1:" + std::to_string(port)});
  REQUIRE(orchard.Start());
  REQUIRE(orchard.url() == url);
  auto api = [&](const std::string& method, const std::string& path, const std::string& body = "") {
    return Api(url, method, path, body);
  };
  UploadPushCert(url);

  // Enroll the real way: signed profile, SCEP, Authenticate, TokenUpdate.
  sim::FleetOptions fo = ProfileFleet(url);
  fo.profile.trust_ca_pem = signing_ca->cert_pem();
  fo.profile.require_signed = true;
  auto fleet = sim::Fleet::Create(fo, TestCa::Create("Apple Device CA (renewal stand-in)"));
  INFO(fleet.status().ToString());
  REQUIRE(fleet.ok());
  sim::Fleet& f = **fleet;
  auto st = f.Enroll(1);
  INFO((st.first_errors.empty() ? std::string() : st.first_errors[0]));
  REQUIRE(st.ok == 1);
  sim::Device& d = f.device(0);
  const Identity first = d.identity();
  auto enrollment = [&] {
    auto r = api("GET", "/v1/enrollments/" + d.udid());
    REQUIRE(r.status == 200);
    auto v = plist::ParseJson(r.body);
    REQUIRE(v.ok());
    return *v;
  };
  const Value before = enrollment();
  const std::string first_sha = std::string(before.GetString("cert_sha256"));
  REQUIRE(!first_sha.empty());

  // The policy answers enrollment.enrolled with the renewal profile.
  REQUIRE(WaitFor([&] {
    auto q = api("GET", "/v1/enrollments/" + d.udid() + "/queue");
    return q.status == 200 && q.body.find("InstallProfile") != std::string::npos;
  }));
  auto session = d.RunSession();
  INFO(session.status().ToString());
  REQUIRE(session.ok());
  REQUIRE(d.received().size() == 1);
  REQUIRE(d.received()[0].request_type == "InstallProfile");
  const std::string* payload = d.received()[0].command.Find("Command")->GetData("Payload");
  REQUIRE(payload);
  sim::ProfileFetch trust;
  trust.trust_ca_pem = signing_ca->cert_pem();
  trust.require_signed = true;
  auto profile = sim::ReadProfile(*payload, trust);
  INFO(profile.status().ToString());
  REQUIRE(profile.ok());
  CHECK(profile->topic == kTopic);
  REQUIRE(!profile->scep_challenge.empty());

  // Queued while the device renews: it must survive the renewal.
  REQUIRE(api("PUT", "/v1/enqueue/" + d.udid() + "?nopush=1", Command("SecurityInfo")).status == 200);

  // The device renews by SCEP with the renewal profile's one-time challenge.
  auto renewed = Enroll(profile->scep_url, profile->scep_challenge, {}, profile->scep_subject);
  INFO(renewed.status().ToString());
  REQUIRE(renewed.ok());
  REQUIRE(renewed->pki_status == 0);
  // The challenge was one-time.
  auto again = Enroll(profile->scep_url, profile->scep_challenge, {}, profile->scep_subject);
  REQUIRE(again.ok());
  CHECK(again->pki_status == 2);

  // Its next request, with the new certificate, is accepted in place.
  d.ClearReceived();
  REQUIRE(d.SetIdentity(renewed->identity).ok());
  session = d.RunSession();
  INFO(session.status().ToString());
  REQUIRE(session.ok());
  REQUIRE(d.received().size() == 1);
  CHECK(d.received()[0].request_type == "SecurityInfo");
  const Value after = enrollment();
  CHECK(after.GetString("cert_sha256") != first_sha);
  CHECK(after.GetString("state") == "enrolled");
  // The renewed certificate's expiry, as the admin API and orchardctl show it.
  CHECK(!after.GetString("cert_not_after").empty());
  REQUIRE(after.Find("cert_days_left"));
  CHECK(*after.Find("cert_days_left")->AsInteger() >= 364);
  REQUIRE(after.Find("generation")->AsInteger());
  CHECK(*after.Find("generation")->AsInteger() == *before.Find("generation")->AsInteger());

  // The old certificate no longer speaks for the device.
  REQUIRE(d.SetIdentity(first).ok());
  CHECK_FALSE(d.RunSession().ok());

  auto events = api("GET", "/v1/events?limit=1000");
  REQUIRE(events.status == 200);
  CHECK(events.body.find("\"reason\":\"renewed\"") != std::string::npos);
  size_t enrolled = 0;
  for (size_t at = 0; (at = events.body.find("\"type\":\"enrollment.enrolled\"", at)) != std::string::npos; ++at)
    ++enrolled;
  CHECK(enrolled == 1);

  // The CA's record says what it renewed.
  auto certs = api("GET", "/v1/certificates?udid=" + d.udid());
  REQUIRE(certs.status == 200);
  CHECK(certs.body.find(first_sha) != std::string::npos);

  orchard.Stop();
  std::filesystem::remove_all(dir);
}

TEST_CASE("a takeover attempt with another valid certificate waits for an admin's approval through the API",
          "[integration][enroll][renewal]") {
  const std::string dir = MakeTempDir("orchard-takeover-it");
  REQUIRE(WriteFile(dir + "/orchard.conf", std::string("enroll.token = ") + kToken + "\n"));
  OrchardProcess orchard(dir + "/data", {"--config", dir + "/orchard.conf", "--api-key", kKey});
  REQUIRE(orchard.Start());
  const std::string url = orchard.url();
  auto api = [&](const std::string& method, const std::string& path, const std::string& body = "") {
    return Api(url, method, path, body);
  };
  UploadPushCert(url);

  auto fleet = sim::Fleet::Create(ProfileFleet(url), TestCa::Create("Apple Device CA (takeover stand-in)"));
  REQUIRE(fleet.ok());
  sim::Device& d = (*fleet)->device(0);
  REQUIRE((*fleet)->Enroll(1).ok == 1);
  const Identity owner = d.identity();
  REQUIRE(api("PUT", "/v1/enqueue/" + d.udid() + "?nopush=1", Command("DeviceInformation")).status == 200);

  // Another valid certificate of Orchard's CA, from a challenge for any device.
  auto challenge = api("POST", "/v1/enroll/challenges", R"({"ttl_seconds": 600})");
  REQUIRE(challenge.status == 200);
  auto c = plist::ParseJson(challenge.body);
  REQUIRE(c.ok());
  auto other = Enroll(url + "/scep", std::string(c->GetString("challenge")), {}, "CN=intruder");
  REQUIRE(other.ok());
  REQUIRE(other->pki_status == 0);

  // Its Authenticate as the enrolled UDID is refused and recorded, the owner is untouched.
  REQUIRE(d.SetIdentity(other->identity).ok());
  CHECK_FALSE(d.Authenticate().ok());
  auto pending = api("GET", "/v1/enrollments/" + d.udid() + "/reenroll");
  INFO(pending.body);
  REQUIRE(pending.status == 200);
  auto pv = plist::ParseJson(pending.body);
  REQUIRE(pv.ok());
  REQUIRE(pv->Find("pending"));
  const std::string intruder_sha = std::string(pv->Find("pending")->GetString("new_cert_sha256"));
  CHECK(intruder_sha.size() == 64);
  REQUIRE(d.SetIdentity(owner).ok());
  auto session = d.RunSession();
  REQUIRE(session.ok());
  REQUIRE(d.received().size() == 1);  // the owner still gets its command
  CHECK(api("GET", "/v1/events?limit=1000").body.find("\"decision\":\"pending_approval\"") != std::string::npos);

  // Deny drops the request; approve (ahead, by fingerprint) lets that certificate in once.
  CHECK(api("POST", "/v1/enrollments/" + d.udid() + "/reenroll/deny").status == 200);
  CHECK(api("POST", "/v1/enrollments/" + d.udid() + "/reenroll/deny").status == 404);
  CHECK(api("POST", "/v1/enrollments/" + d.udid() + "/reenroll/approve", R"({"cert_sha256": "nothex"})").status ==
        400);
  CHECK(api("POST", "/v1/enrollments/" + d.udid() + "/reenroll/approve", R"({"cert_sha256": ")" + intruder_sha + "\"}")
            .status == 200);
  REQUIRE(d.SetIdentity(other->identity).ok());
  CHECK(d.Authenticate().ok());
  CHECK(api("GET", "/v1/enrollments/" + d.udid() + "/reenroll").status == 404);  // used
  REQUIRE(d.SetIdentity(owner).ok());
  CHECK_FALSE(d.RunSession().ok());  // the approved certificate took the enrollment over
  orchard.Stop();
  std::filesystem::remove_all(dir);
}
