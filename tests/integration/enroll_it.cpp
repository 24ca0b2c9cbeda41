// Enrollment the real way against the real orchardd: the served enrollment
// profile (/mdm/enroll, CMS-signed), SCEP with the profile's challenge, then
// Authenticate/TokenUpdate at the profile's URLs with the issued certificate,
// then a queued command. Also the guard (403), bad machine info (400), no push
// certificate (503), and the signature checked by the openssl CLI.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>

#include "plist/plist.h"
#include "sim/enroll_profile.h"
#include "sim/simulator.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::testing;
using plist::Value;

namespace {

constexpr const char* kKey = "enroll-integration-api-key-01";
constexpr const char* kToken = "enroll-token-0123456789abcdef";
constexpr const char* kTopic = "com.apple.mgmt.External.orchard-enroll-it";

struct Server {
  std::string dir = MakeTempDir("orchard-enroll-it");
  std::unique_ptr<TestCa> signing_ca = TestCa::Create("Profile Signing CA (test)");
  std::unique_ptr<TestCa> push_ca = TestCa::Create("Apple Push CA (test)");
  std::unique_ptr<OrchardProcess> orchard;
  Identity push_cert;

  explicit Server(const std::string& extra_config = "") {
    // No extendedKeyUsage: openssl cms -verify checks the S/MIME signing purpose.
    Identity signer = signing_ca->Issue({.common_name = "Orchard profile signing (test)", .client_auth_eku = false,
                                         .rsa_key = true});
    REQUIRE(WriteFile(dir + "/signing.pem", signer.cert_pem));
    REQUIRE(WriteFile(dir + "/signing.key", signer.key_pem));
    REQUIRE(WriteFile(dir + "/signing-ca.pem", signing_ca->cert_pem()));
    push_cert = push_ca->Issue({.common_name = std::string("APSP:") + kTopic, .uid = kTopic});
    REQUIRE(WriteFile(dir + "/orchard.conf", std::string("enroll.token = ") + kToken + "\n" +
                                                 "enroll.profile_signing_cert = " + dir + "/signing.pem\n" +
                                                 "enroll.profile_signing_key = " + dir + "/signing.key\n" +
                                                 "enroll.profile_signing_chain = " + dir + "/signing-ca.pem\n" +
                                                 "enroll.profile_organization = Orchard Tests\n" +
                                                 "log.level = info\n" + extra_config));
    orchard = std::make_unique<OrchardProcess>(
        dir + "/data", std::vector<std::string>{"--config", dir + "/orchard.conf", "--api-key", kKey});
    REQUIRE(orchard->Start());
  }
  ~Server() {
    orchard.reset();
    std::filesystem::remove_all(dir);
    std::filesystem::remove(dir + "/data.log");
  }
  HttpResult Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return HttpCall(method, orchard->url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
  void UploadPushCert() {
    auto r = Api("PUT", "/v1/pushcert", push_cert.cert_pem + push_cert.key_pem);
    INFO(r.body);
    REQUIRE(r.status == 200);
  }
  std::string EnrollUrl() const { return orchard->url() + "/mdm/enroll"; }
  sim::ProfileFetch Fetch() const {
    sim::ProfileFetch f;
    f.url = EnrollUrl();
    f.token = kToken;
    f.trust_ca_pem = signing_ca->cert_pem();
    f.require_signed = true;
    return f;
  }
};

std::string Run(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(("(" + cmd + ") 2>&1 </dev/null").c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

std::string Command(const std::string& type) {
  Value cmd = Value::MakeDict();
  cmd.Set("RequestType", Value::String(type));
  Value v = Value::MakeDict();
  v.Set("Command", cmd);
  return plist::ToXml(v);
}

}  // namespace

TEST_CASE("simulated devices enroll through the signed profile and SCEP, then receive a queued command",
          "[integration][enroll]") {
  Server s;
  s.UploadPushCert();
  // Two devices by GET with the token, two by POSTing signed machine info (ADE / OTA style).
  for (bool machine_info : {false, true}) {
    sim::FleetOptions fo;
    fo.devices = 2;
    fo.config.cert_mode = sim::CertMode::kHeaderAndSignature;
    fo.profile = s.Fetch();
    fo.profile.machine_info = machine_info;
    auto fleet = sim::Fleet::Create(fo, TestCa::Create("Apple Device CA (test stand-in)"));
    INFO(fleet.status().ToString());
    REQUIRE(fleet.ok());
    sim::Fleet& f = **fleet;
    for (size_t i = 0; i < f.size(); ++i) {
      sim::Device& d = f.device(i);
      // Configured from the profile, not from the options.
      CHECK(d.config().base_url == s.orchard->url());
      CHECK(d.config().connect_path == "/mdm/connect");
      CHECK(d.config().checkin_path == "/mdm/checkin");
      CHECK(d.config().topic == kTopic);
      CHECK(d.identity().cert_pem.find("BEGIN CERTIFICATE") != std::string::npos);
    }
    auto st = f.Enroll(2);
    INFO((st.first_errors.empty() ? std::string() : st.first_errors[0]));
    REQUIRE(st.failed == 0);
    REQUIRE(st.ok == 2);

    for (size_t i = 0; i < f.size(); ++i) {
      sim::Device& d = f.device(i);
      // The certificate Orchard issued is on record, for this device when it said who it is.
      auto cert = s.Api("GET", "/v1/certificates?udid=" + d.udid());
      INFO(cert.body);
      if (machine_info) CHECK(cert.body.find(d.udid()) != std::string::npos);
      auto enq = s.Api("PUT", "/v1/enqueue/" + d.udid() + "?nopush=1", Command("DeviceInformation"));
      INFO(enq.body);
      REQUIRE(enq.status == 200);
      auto session = d.RunSession();
      INFO(session.status().ToString());
      REQUIRE(session.ok());
      REQUIRE(d.received().size() == 1);
      CHECK(d.received()[0].request_type == "DeviceInformation");
    }
  }
}

TEST_CASE("the served profile verifies with openssl cms and carries the push topic and server URLs",
          "[integration][enroll]") {
  Server s;
  s.UploadPushCert();
  auto r = HttpCall("GET", s.EnrollUrl() + "?token=" + kToken);
  REQUIRE(r.status == 200);
  CHECK(r.content_type == "application/x-apple-aspen-config");
  REQUIRE(WriteFile(s.dir + "/enroll.mobileconfig", r.body));
  int status = 0;
  std::string out = Run("openssl cms -verify -inform DER -CAfile " + s.dir + "/signing-ca.pem -in " + s.dir +
                            "/enroll.mobileconfig -out " + s.dir + "/enroll.xml",
                        &status);
  INFO(out);
  REQUIRE(status == 0);
  auto v = plist::ParseXml(ReadFile(s.dir + "/enroll.xml"));
  REQUIRE(v.ok());
  CHECK(v->GetString("PayloadOrganization") == "Orchard Tests");
  const Value* mdm = nullptr;
  const Value* scep = nullptr;
  for (const auto& p : *v->Find("PayloadContent")->AsArray()) {
    if (p.GetString("PayloadType") == "com.apple.mdm") mdm = &p;
    if (p.GetString("PayloadType") == "com.apple.security.scep") scep = &p;
  }
  REQUIRE(mdm);
  REQUIRE(scep);
  CHECK(mdm->GetString("Topic") == kTopic);
  CHECK(mdm->GetString("ServerURL") == s.orchard->url() + "/mdm/connect");
  CHECK(mdm->GetString("CheckInURL") == s.orchard->url() + "/mdm/checkin");
  CHECK(mdm->GetString("IdentityCertificateUUID") == scep->GetString("PayloadUUID"));
  const Value& c = *scep->Find("PayloadContent");
  CHECK(c.GetString("URL") == s.orchard->url() + "/scep");
  CHECK_FALSE(c.GetString("Challenge").empty());
  // The fingerprint is the CA that /scep serves.
  auto ca = HttpCall("GET", s.orchard->url() + "/scep?operation=GetCACert");
  REQUIRE(ca.status == 200);
  REQUIRE(c.GetData("CAFingerprint"));
  CHECK(*c.GetData("CAFingerprint") == Sha256(ca.body));

  // Regenerated: same identifiers and UUIDs (devices replace, never duplicate).
  auto again = sim::FetchProfile(s.Fetch(), sim::DeviceState{}, nullptr);
  REQUIRE(again.ok());
  CHECK(again->plist.GetString("PayloadUUID") == v->GetString("PayloadUUID"));
  CHECK(again->signer_subject.find("Orchard profile signing (test)") != std::string::npos);
  // The challenges are secrets: never in the log.
  CHECK(ReadFile(s.orchard->log_path()).find(std::string(c.GetString("Challenge"))) == std::string::npos);
  CHECK(ReadFile(s.orchard->log_path()).find(kToken) == std::string::npos);
}

TEST_CASE("enrollment answers 503 without a push certificate, 403 without the token, 400 for bad machine info",
          "[integration][enroll]") {
  Server s;
  auto none = HttpCall("GET", s.EnrollUrl() + "?token=" + kToken);
  CHECK(none.status == 503);
  CHECK(none.body.find("no push certificate") != std::string::npos);
  s.UploadPushCert();

  CHECK(HttpCall("GET", s.EnrollUrl()).status == 403);
  CHECK(HttpCall("GET", s.EnrollUrl() + "?token=wrong-token-0123456789").status == 403);
  CHECK(HttpCall("GET", s.EnrollUrl(), "", {"Authorization: Bearer wrong"}).status == 403);
  CHECK(HttpCall("GET", s.EnrollUrl() + "?challenge=made-up").status == 403);
  CHECK(HttpCall("GET", s.EnrollUrl(), "", {std::string("Authorization: Bearer ") + kToken}).status == 200);
  CHECK(HttpCall("DELETE", s.EnrollUrl() + "?token=" + kToken).status == 405);
  // The simulator reports the refusal with the server's reason.
  sim::ProfileFetch f = s.Fetch();
  f.token.clear();
  auto refused = sim::FetchProfile(f, sim::DeviceState{}, nullptr);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().message().find("HTTP 403") != std::string::npos);

  auto device_ca = TestCa::Create("Device CA");
  Identity device = device_ca->Issue({.common_name = "device"});
  const std::vector<std::string> ct = {"Content-Type: application/pkcs7-signature"};
  for (const std::string& body :
       {std::string("not cms at all"), std::string("\x30\x82\xff\xff", 4),
        *Base64Decode(device.MdmSignature("<plist/>")),  // detached: no content
        std::string(2 * 1024 * 1024, 'A')}) {
    auto r = HttpCall("POST", s.EnrollUrl() + "?token=" + kToken, body, ct);
    INFO(r.body);
    CHECK(r.status == 400);
    CHECK_FALSE(r.body.empty());
  }
  // The server still works.
  CHECK(HttpCall("GET", s.EnrollUrl() + "?token=" + kToken).status == 200);
}

TEST_CASE("a one-time challenge from the admin API opens the enrollment URL and is used once by SCEP",
          "[integration][enroll]") {
  Server s;
  s.UploadPushCert();
  auto c = s.Api("POST", "/v1/enroll/challenges", "{\"ttl_seconds\": 600}");
  INFO(c.body);
  REQUIRE(c.status == 200);
  auto json = plist::ParseJson(c.body);
  REQUIRE(json.ok());
  const std::string challenge(json->GetString("challenge"));
  REQUIRE_FALSE(challenge.empty());
  sim::FleetOptions fo;
  fo.devices = 1;
  fo.profile = s.Fetch();
  fo.profile.token.clear();
  fo.profile.challenge = challenge;
  auto fleet = sim::Fleet::Create(fo, TestCa::Create("Apple Device CA (test stand-in)"));
  INFO(fleet.status().ToString());
  REQUIRE(fleet.ok());
  REQUIRE((*fleet)->Enroll(1).failed == 0);
  // Consumed by the SCEP request: the URL no longer opens with it.
  CHECK(HttpCall("GET", s.EnrollUrl() + "?challenge=" + challenge).status == 403);
}

TEST_CASE("with enroll.identity pkcs12 the profile carries an identity the CA made for the device, and it enrolls",
          "[integration][enroll]") {
  Server s("enroll.identity = pkcs12\n");
  s.UploadPushCert();
  sim::FleetOptions fo;
  fo.devices = 1;
  fo.profile = s.Fetch();
  fo.profile.machine_info = true;
  auto fleet = sim::Fleet::Create(fo, TestCa::Create("Apple Device CA (test stand-in)"));
  INFO(fleet.status().ToString());
  REQUIRE(fleet.ok());
  sim::Device& d = (*fleet)->device(0);
  auto st = (*fleet)->Enroll(1);
  INFO((st.first_errors.empty() ? std::string() : st.first_errors[0]));
  REQUIRE(st.failed == 0);
  auto cert = s.Api("GET", "/v1/certificates?udid=" + d.udid());
  INFO(cert.body);
  CHECK(cert.body.find("Orchard device " + d.udid()) != std::string::npos);
  CHECK(cert.body.find(d.identity().Sha256Hex()) != std::string::npos);
}

TEST_CASE("orchardctl enroll profile writes the signed profile, and reports a refusal", "[integration][enroll]") {
  Server s;
  s.UploadPushCert();
  const std::string ctl = OrchardBinary("orchardctl") + " --url " + s.orchard->url();
  int status = 0;
  std::string out = Run("ORCHARD_ENROLL_TOKEN=" + std::string(kToken) + " " + ctl + " enroll profile --out " + s.dir +
                            "/ctl.mobileconfig",
                        &status);
  INFO(out);
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(out.find("CMS-signed enrollment profile") != std::string::npos);
  CHECK(out.find(kToken) == std::string::npos);
  out = Run("openssl cms -verify -inform DER -CAfile " + s.dir + "/signing-ca.pem -in " + s.dir +
                "/ctl.mobileconfig -out /dev/null",
            &status);
  CHECK(status == 0);
  REQUIRE(WriteFile(s.dir + "/token", std::string(kToken) + "\n"));
  out = Run("env -u ORCHARD_ENROLL_TOKEN " + ctl + " enroll profile --token-file " + s.dir + "/token --out -", &status);
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(out.find("com.apple.mdm") != std::string::npos);  // the signed content is embedded

  out = Run("env -u ORCHARD_ENROLL_TOKEN " + ctl + " enroll profile --out " + s.dir + "/none.mobileconfig", &status);
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(out.find("HTTP 403") != std::string::npos);
  Run(ctl + " enroll profile --ttl 5 --out -", &status);
  CHECK(WEXITSTATUS(status) == 2);
  Run(ctl + " enroll profile", &status);
  CHECK(WEXITSTATUS(status) == 2);
}
