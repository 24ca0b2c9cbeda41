// The enrollment profile builder, signer and machine-info reader
// (core/enroll/profile.h), checked against Apple's payload schemas read from
// tests/fixtures/apple-device-management/mdm/profiles/ and against the real
// openssl CLI.
#include "enroll/profile.h"

#include <catch2/catch.hpp>

#include <openssl/pkcs12.h>

#include <cstdio>
#include <set>

#include "profile_schema.h"
#include "support/fixtures.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"
#include "util/encoding.h"
#include "util/openssl_ptr.h"

namespace orchard::enroll {
namespace {

using plist::Type;
using plist::Value;
using testing::SchemaKey;

std::vector<SchemaKey> Schema(const std::string& file) {
  auto keys = testing::ReadPayloadKeys(testing::FixturePath("apple-device-management/mdm/profiles/" + file));
  REQUIRE(!keys.empty());
  return keys;
}

// CommonPayloadKeys plus the payload type's own keys.
std::vector<SchemaKey> PayloadSchema(const std::string& type) {
  auto keys = Schema("CommonPayloadKeys.yaml");
  for (auto& k : Schema(type + ".yaml")) {
    keys.erase(std::remove_if(keys.begin(), keys.end(), [&](const SchemaKey& c) { return c.name == k.name; }),
               keys.end());
    keys.push_back(k);
  }
  return keys;
}

// Every problem found in a profile: top level against TopLevel.yaml, each
// payload against CommonPayloadKeys.yaml + its type's schema.
std::vector<std::string> SchemaProblems(const Value& profile) {
  std::vector<std::string> problems;
  testing::CheckDict(Schema("TopLevel.yaml"), profile, "", &problems);
  const Value* content = profile.Find("PayloadContent");
  if (!content || !content->AsArray()) return problems;
  for (size_t i = 0; i < content->AsArray()->size(); ++i) {
    const Value& p = (*content->AsArray())[i];
    const std::string type(p.GetString("PayloadType"));
    testing::CheckDict(PayloadSchema(type), p, "/PayloadContent[" + std::to_string(i) + "]", &problems);
  }
  return problems;
}

std::string CaDer() { return std::string("\x30\x03\x02\x01\x01", 5); }

ProfileSettings ScepSettings() {
  ProfileSettings s;
  s.identifier = "com.example.mdm.orchard";
  s.organization = "Example Inc.";
  s.server_url = "https://mdm.example.com/mdm/connect";
  s.checkin_url = "https://mdm.example.com/mdm/checkin";
  s.topic = "com.apple.mgmt.External.0f1e2d3c-aaaa-bbbb-cccc-123456789abc";
  s.scep.url = "https://mdm.example.com/scep";
  s.scep.name = "Orchard";
  s.scep.subject = {{"O", "Example Inc."}, {"CN", "Orchard device 0001"}};
  s.scep.challenge = "one-time-secret";
  s.scep.ca_cert_der = CaDer();
  return s;
}

const Value& PayloadOf(const Value& profile, const std::string& type) {
  for (const auto& p : *profile.Find("PayloadContent")->AsArray())
    if (p.GetString("PayloadType") == type) return p;
  FAIL("no payload of type " << type);
  throw;  // unreachable
}

Value RoundTrip(const ProfileSettings& s) {
  auto xml = BuildProfileXml(s);
  REQUIRE(xml.ok());
  auto v = plist::ParseXml(*xml);
  REQUIRE(v.ok());
  return std::move(v).value();
}

TEST_CASE("schema reader finds the keys, types, ranges and formats Apple's files declare", "[enroll][profile]") {
  auto mdm = Schema("com.apple.mdm.yaml");
  const SchemaKey* ident = nullptr;
  const SchemaKey* caps = nullptr;
  for (const auto& k : mdm) {
    if (k.name == "IdentityCertificateUUID") ident = &k;
    if (k.name == "ServerCapabilities") caps = &k;
  }
  REQUIRE(ident);
  CHECK(ident->type == "<string>");
  CHECK(ident->presence == "required");
  CHECK_FALSE(ident->format.empty());
  REQUIRE(caps);
  REQUIRE(caps->subkeys.size() == 1);
  CHECK(caps->subkeys[0].rangelist ==
        std::vector<std::string>{"com.apple.mdm.per-user-connections", "com.apple.mdm.bootstraptoken",
                                 "com.apple.mdm.token"});
  auto scep = Schema("com.apple.security.scep.yaml");
  REQUIRE(scep.size() == 1);
  CHECK(scep[0].name == "PayloadContent");
  std::set<std::string> names;
  for (const auto& k : scep[0].subkeys) names.insert(k.name);
  for (const char* n : {"URL", "Name", "Subject", "Challenge", "Keysize", "Key Type", "Key Usage", "CAFingerprint",
                        "Retries", "RetryDelay"})
    CHECK(names.count(n));
  auto top = Schema("TopLevel.yaml");
  int required = 0;
  for (const auto& k : top) required += k.presence == "required";
  CHECK(required == 5);  // PayloadIdentifier, PayloadUUID, PayloadType, PayloadVersion, PayloadContent
}

TEST_CASE("SCEP profile has every required key with the type Apple's schemas give", "[enroll][profile]") {
  Value profile = RoundTrip(ScepSettings());
  auto problems = SchemaProblems(profile);
  INFO([&] {
    std::string all;
    for (const auto& p : problems) all += p + "\n";
    return all;
  }());
  CHECK(problems.empty());

  CHECK(profile.GetString("PayloadType") == "Configuration");
  CHECK(*profile.Find("PayloadVersion")->AsInteger() == 1);
  CHECK(profile.GetString("PayloadScope") == "System");
  CHECK(profile.GetBool("PayloadRemovalDisallowed", true) == false);
  CHECK(profile.GetString("PayloadOrganization") == "Example Inc.");

  const Value& scep = PayloadOf(profile, "com.apple.security.scep");
  const Value& c = *scep.Find("PayloadContent");
  CHECK(c.GetString("URL") == "https://mdm.example.com/scep");
  CHECK(c.GetString("Challenge") == "one-time-secret");
  CHECK(*c.Find("Keysize")->AsInteger() == 2048);
  CHECK(c.GetString("Key Type") == "RSA");
  CHECK(*c.Find("Key Usage")->AsInteger() == 5);
  REQUIRE(c.GetData("CAFingerprint"));
  CHECK(*c.GetData("CAFingerprint") == Sha256(CaDer()));
  const auto& subject = *c.Find("Subject")->AsArray();
  REQUIRE(subject.size() == 2);
  const auto& cn = (*(*subject[1].AsArray())[0].AsArray());
  CHECK(*cn[0].AsString() == "CN");
  CHECK(*cn[1].AsString() == "Orchard device 0001");

  const Value& mdm = PayloadOf(profile, "com.apple.mdm");
  CHECK(mdm.GetString("IdentityCertificateUUID") == scep.GetString("PayloadUUID"));
  CHECK(mdm.GetString("Topic") == ScepSettings().topic);
  CHECK(mdm.GetString("ServerURL") == "https://mdm.example.com/mdm/connect");
  CHECK(mdm.GetString("CheckInURL") == "https://mdm.example.com/mdm/checkin");
  CHECK(mdm.GetBool("SignMessage", false));
  CHECK(*mdm.Find("AccessRights")->AsInteger() == 8191);
  CHECK(mdm.GetBool("CheckOutWhenRemoved", false));
  const auto& caps = *mdm.Find("ServerCapabilities")->AsArray();
  REQUIRE(caps.size() == 2);
  CHECK(*caps[0].AsString() == "com.apple.mdm.per-user-connections");
  CHECK(*caps[1].AsString() == "com.apple.mdm.bootstraptoken");
}

TEST_CASE("schema check catches a missing required key and a wrong type", "[enroll][profile]") {
  Value profile = RoundTrip(ScepSettings());
  Value broken = profile;
  for (auto& p : *broken.Find("PayloadContent")->AsArray())
    if (p.GetString("PayloadType") == "com.apple.mdm") {
      p.Erase("Topic");
      p.Set("AccessRights", Value::String("8191"));
    }
  auto problems = SchemaProblems(broken);
  REQUIRE(problems.size() == 2);
  CHECK(problems[0].find("Topic: required key missing") != std::string::npos);
  CHECK(problems[1].find("AccessRights: expected <integer>") != std::string::npos);
}

TEST_CASE("PKCS12 profile and anchor certificates follow Apple's schemas", "[enroll][profile]") {
  auto ca = testing::TestCa::Create("Anchor CA");
  auto id = ca->Issue({.common_name = "device", .rsa_key = true});
  ProfileSettings s = ScepSettings();
  s.identity = IdentityKind::kPkcs12;
  s.pkcs12.der = id.Pkcs12("p12-password");
  s.pkcs12.password = "p12-password";
  const std::string& pem = ca->cert_pem();
  const size_t body = pem.find('\n') + 1;
  auto ca_der = Base64Decode(pem.substr(body, pem.find("-----END") - body));
  REQUIRE(ca_der);
  s.anchors = {{*ca_der, "anchor.cer"}};
  Value profile = RoundTrip(s);
  auto problems = SchemaProblems(profile);
  CHECK(problems.empty());
  const Value& p12 = PayloadOf(profile, "com.apple.security.pkcs12");
  CHECK(*p12.GetData("PayloadContent") == s.pkcs12.der);
  CHECK(p12.GetString("Password") == "p12-password");
  const Value& root = PayloadOf(profile, "com.apple.security.root");
  CHECK(*root.GetData("PayloadContent") == *ca_der);
  CHECK(PayloadOf(profile, "com.apple.mdm").GetString("IdentityCertificateUUID") == p12.GetString("PayloadUUID"));
  // Every payload is told apart by identifier and UUID.
  std::set<std::string> ids, uuids;
  ids.insert(std::string(profile.GetString("PayloadIdentifier")));
  uuids.insert(std::string(profile.GetString("PayloadUUID")));
  for (const auto& p : *profile.Find("PayloadContent")->AsArray()) {
    ids.insert(std::string(p.GetString("PayloadIdentifier")));
    uuids.insert(std::string(p.GetString("PayloadUUID")));
  }
  CHECK(ids.size() == 4);
  CHECK(uuids.size() == 4);
}

TEST_CASE("identifiers and UUIDs stay the same across regenerations and follow what the payload points at",
          "[enroll][profile]") {
  ProfileSettings a = ScepSettings();
  ProfileSettings b = ScepSettings();
  b.scep.challenge = "another-one-time-secret";
  b.scep.subject = {{"CN", "Orchard device 0002"}};
  auto ids = [](const Value& profile) {
    std::vector<std::string> out{std::string(profile.GetString("PayloadIdentifier")),
                                 std::string(profile.GetString("PayloadUUID"))};
    for (const auto& p : *profile.Find("PayloadContent")->AsArray()) {
      out.emplace_back(p.GetString("PayloadIdentifier"));
      out.emplace_back(p.GetString("PayloadUUID"));
    }
    return out;
  };
  const auto first = ids(RoundTrip(a));
  CHECK(first == ids(RoundTrip(a)));
  CHECK(first == ids(RoundTrip(b)));  // per-device values and secrets do not move them
  CHECK(first[2] == "com.example.mdm.orchard.scep");
  CHECK(first[4] == "com.example.mdm.orchard.mdm");

  ProfileSettings moved = ScepSettings();
  moved.server_url = "https://mdm2.example.com/mdm/connect";
  const auto other = ids(RoundTrip(moved));
  CHECK(other[0] == first[0]);  // same identifier: the device replaces the profile
  CHECK(other[5] != first[5]);  // MDM payload UUID changes with its server

  CHECK(StableUuid({"a", "bc"}) != StableUuid({"ab", "c"}));
  const std::string u = StableUuid({"x"});
  CHECK(u.size() == 36);
  CHECK(u[14] == '5');
}

TEST_CASE("settings a device would refuse are refused with the setting named", "[enroll][profile]") {
  auto refused = [](void (*edit)(ProfileSettings&), const char* needle) {
    ProfileSettings s = ScepSettings();
    edit(s);
    auto r = BuildProfile(s);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::kInvalidArgument);
    INFO(r.status().message());
    CHECK(r.status().message().find(needle) != std::string::npos);
  };
  refused([](ProfileSettings& s) { s.identifier.clear(); }, "identifier");
  refused([](ProfileSettings& s) { s.server_url = "ftp://x"; }, "server_url");
  refused([](ProfileSettings& s) { s.checkin_url = "mdm.example.com"; }, "checkin_url");
  refused([](ProfileSettings& s) { s.topic = "com.example.topic"; }, "topic");
  refused([](ProfileSettings& s) { s.topic = "com.apple.mgmt."; }, "topic");
  refused([](ProfileSettings& s) { s.scep.url.clear(); }, "scep url");
  refused([](ProfileSettings& s) { s.scep.key_size = 3072; }, "key size");
  refused([](ProfileSettings& s) { s.access_rights = 0; }, "access_rights");
  refused([](ProfileSettings& s) { s.access_rights = 2; }, "access_rights");
  refused([](ProfileSettings& s) { s.identity = IdentityKind::kPkcs12; }, "PKCS#12");
  refused([](ProfileSettings& s) { s.anchors = {{"", ""}}; }, "anchor");

  ProfileSettings s = ScepSettings();
  s.organization = std::string("bad\x01", 4);
  auto xml = BuildProfileXml(s);
  REQUIRE_FALSE(xml.ok());
  CHECK(xml.status().message().find("PayloadOrganization") != std::string::npos);
}

std::string Run(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(("(" + cmd + ") 2>&1").c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

TEST_CASE("signed profile verifies with openssl cms against the signing CA and carries the plist",
          "[enroll][profile]") {
  auto ca = testing::TestCa::Create("Profile Signing CA");
  // No extendedKeyUsage: openssl cms -verify checks the S/MIME signing purpose.
  auto id = ca->Issue({.common_name = "Orchard profile signing", .client_auth_eku = false, .rsa_key = true});
  auto signer = ProfileSigner::FromPem(id.cert_pem, id.key_pem, ca->cert_pem());
  REQUIRE(signer.ok());
  CHECK((*signer)->subject().find("Orchard profile signing") != std::string::npos);
  auto xml = BuildProfileXml(ScepSettings());
  REQUIRE(xml.ok());
  auto der = (*signer)->Sign(*xml);
  REQUIRE(der.ok());

  const std::string dir = testing::MakeTempDir("orchard-profile");
  REQUIRE(testing::WriteFile(dir + "/profile.mobileconfig", *der));
  REQUIRE(testing::WriteFile(dir + "/ca.pem", ca->cert_pem()));
  int status = 0;
  std::string out = Run("openssl cms -verify -inform DER -CAfile " + dir + "/ca.pem -in " + dir +
                            "/profile.mobileconfig -out " + dir + "/content.xml",
                        &status);
  INFO(out);
  REQUIRE(status == 0);
  CHECK(out.find("Verification successful") != std::string::npos);
  CHECK(testing::ReadFile(dir + "/content.xml") == *xml);
  auto parsed = plist::ParseXml(testing::ReadFile(dir + "/content.xml"));
  REQUIRE(parsed.ok());
  CHECK(SchemaProblems(*parsed).empty());
  // SHA-256, and the signer certificate travels with the profile.
  out = Run("openssl cms -cmsout -print -inform DER -in " + dir + "/profile.mobileconfig", &status);
  REQUIRE(status == 0);
  CHECK(out.find("sha256") != std::string::npos);
  CHECK(out.find("Orchard profile signing") != std::string::npos);

  // Another CA does not verify it.
  auto other = testing::TestCa::Create("Other CA");
  REQUIRE(testing::WriteFile(dir + "/other.pem", other->cert_pem()));
  Run("openssl cms -verify -inform DER -CAfile " + dir + "/other.pem -in " + dir + "/profile.mobileconfig -out /dev/null",
      &status);
  CHECK(status != 0);
  std::remove((dir + "/profile.mobileconfig").c_str());
}

TEST_CASE("signer refuses a key that does not match and unreadable PEM", "[enroll][profile]") {
  auto ca = testing::TestCa::Create("Signing CA");
  auto a = ca->Issue({.common_name = "a"});
  auto b = ca->Issue({.common_name = "b"});
  auto r = ProfileSigner::FromPem(a.cert_pem, b.key_pem, "");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("does not match") != std::string::npos);
  CHECK_FALSE(ProfileSigner::FromPem("not pem", a.key_pem, "").ok());
  CHECK_FALSE(ProfileSigner::FromPem(a.cert_pem, "not pem", "").ok());
  CHECK_FALSE(ProfileSigner::FromPem(a.cert_pem, a.key_pem, "garbage").ok());
}

TEST_CASE("machine info a device signs is read back, and damaged bodies are refused with a reason",
          "[enroll][profile]") {
  auto ca = testing::TestCa::Create("Device Attestation CA");
  auto id = ca->Issue({.common_name = "iPhone attestation", .rsa_key = true});
  MachineInfo in;
  in.udid = "00008110-000A1B2C3D4E5F60";
  in.serial = "F2LXK0ABCDEF";
  in.product = "iPhone15,2";
  in.version = "22B83";
  in.language = "en";
  auto body = SignMachineInfo(in, id.cert_pem, id.key_pem);
  REQUIRE(body.ok());
  auto info = ParseMachineInfo(*body);
  REQUIRE(info.ok());
  CHECK(info->udid == in.udid);
  CHECK(info->serial == in.serial);
  CHECK(info->product == in.product);
  CHECK(info->version == in.version);
  CHECK(info->language == "en");
  CHECK(info->signer_subject.find("iPhone attestation") != std::string::npos);
  CHECK(ParseMachineInfo(Base64Encode(*body)).ok());

  auto refused = [](std::string_view b, const char* needle) {
    auto r = ParseMachineInfo(b);
    REQUIRE_FALSE(r.ok());
    INFO(r.status().message());
    CHECK(r.status().message().find(needle) != std::string::npos);
  };
  refused("", "empty");
  refused("hello, world", "not a CMS");
  refused(std::string("\x30\x82\x01", 3), "not a CMS");
  // A byte of the signed plist changed: the signature no longer matches.
  std::string tampered = *body;
  size_t at = tampered.find(in.serial);
  REQUIRE(at != std::string::npos);
  tampered[at] = 'X';
  refused(tampered, "signature does not verify");
  // Detached signature (no content).
  std::string detached = id.MdmSignature("<plist/>", false);
  refused(*Base64Decode(detached), "no content");
  // Signed, but not a plist / no UDID / a UDID with odd characters.
  auto signer = ProfileSigner::FromPem(id.cert_pem, id.key_pem, "");
  REQUIRE(signer.ok());
  refused(*(*signer)->Sign("not xml"), "machine info");
  refused(*(*signer)->Sign(plist::ToXml(Value::MakeDict({{"SERIAL", Value::String("X")}}))), "no UDID");
  refused(*(*signer)->Sign(plist::ToXml(Value::MakeDict({{"UDID", Value::String("a/../b")}}))), "UDID");
  refused(*(*signer)->Sign(plist::ToXml(Value::MakeArray())), "not a dictionary");
}

// ---- The /mdm/enroll service

struct ServiceFixture {
  explicit ServiceFixture(std::string static_challenge = "") : challenges(db.get(), std::move(static_challenge)) {}
  std::string dir = testing::MakeTempDir("orchard-enroll");
  std::unique_ptr<store::Store> db = std::move(store::Store::Open({.path = dir + "/db"}).value());
  std::unique_ptr<DeviceCa> ca = std::move(DeviceCa::Load({.dir = dir + "/ca"}).value());
  Challenges challenges;
  IssuedCerts issued{db.get()};
  std::optional<std::string> topic = std::string("com.apple.mgmt.External.test-topic");
  std::unique_ptr<ProfileSigner> signer;
  std::unique_ptr<ProfileService> service;
  int64_t now = 1'800'000'000'000;

  void Start(EnrollOptions o) {
    o.profile.identifier = "com.example.mdm.orchard";
    o.profile.server_url = "https://mdm.example.com/mdm/connect";
    o.profile.checkin_url = "https://mdm.example.com/mdm/checkin";
    o.profile.scep.url = "https://mdm.example.com/scep";
    service = std::make_unique<ProfileService>(
        std::move(o), EnrollDeps{ca.get(), &challenges, &issued, db.get(), signer.get(),
                                 [this]() -> Result<std::optional<std::string>> { return topic; }});
  }
  EnrollReply Get(const std::string& token = "", const std::string& challenge = "") {
    return service->Handle({.method = "GET", .token = token, .challenge = challenge}, now);
  }
  EnrollReply Post(const std::string& body, const std::string& token = "") {
    return service->Handle({.method = "POST", .token = token, .content_type = "application/pkcs7-signature",
                            .body = body},
                           now);
  }
};

Value Profile(const EnrollReply& r) {
  REQUIRE(r.status == 200);
  REQUIRE(r.content_type == "application/x-apple-aspen-config");
  auto v = plist::ParseXml(r.body);
  REQUIRE(v.ok());
  return std::move(v).value();
}

std::string ScepChallenge(const Value& profile) {
  return std::string(PayloadOf(profile, "com.apple.security.scep").Find("PayloadContent")->GetString("Challenge"));
}

TEST_CASE("enroll service answers 503 with the reason while no push certificate is uploaded", "[enroll][service]") {
  ServiceFixture f;
  f.topic.reset();
  f.Start({});
  auto r = f.Get();
  CHECK(r.status == 503);
  CHECK(r.outcome == EnrollOutcome::kUnavailable);
  CHECK(r.body.find("no push certificate") != std::string::npos);
}

TEST_CASE("enroll service fills URLs left unset from the address the device used", "[enroll][service]") {
  ServiceFixture f;
  f.Start({});
  EnrollOptions o;
  o.profile.identifier = "com.example.mdm.orchard";
  ProfileService open(std::move(o), EnrollDeps{f.ca.get(), &f.challenges, &f.issued, f.db.get(), nullptr,
                                               [&]() -> Result<std::optional<std::string>> { return f.topic; }});
  auto unknown = open.Handle({.method = "GET"}, f.now);
  CHECK(unknown.status == 503);
  CHECK(unknown.reason.find("enroll.public_url") != std::string::npos);
  Value p = Profile(open.Handle({.method = "GET", .base_url = "https://mdm.example.net:8443"}, f.now));
  const Value& mdm = PayloadOf(p, "com.apple.mdm");
  CHECK(mdm.GetString("ServerURL") == "https://mdm.example.net:8443/mdm/connect");
  CHECK(mdm.GetString("CheckInURL") == "https://mdm.example.net:8443/mdm/checkin");
  CHECK(PayloadOf(p, "com.apple.security.scep").Find("PayloadContent")->GetString("URL") ==
        "https://mdm.example.net:8443/scep");
}

TEST_CASE("enroll service guards the profile with the token or a challenge", "[enroll][service]") {
  ServiceFixture f;
  f.Start({.token = "enroll-token-0123456789"});
  CHECK(f.Get().status == 403);
  CHECK(f.Get("wrong-token").status == 403);
  CHECK(f.Get("", "not-a-challenge").status == 403);
  // The body is read first (an OTA device's CHALLENGE is inside it): garbage is a 400,
  // well-formed machine info without token or challenge a 403.
  CHECK(f.Post("whatever").status == 400);
  auto dev_ca = testing::TestCa::Create("Device CA");
  auto id = dev_ca->Issue({.common_name = "device", .rsa_key = true});
  CHECK(f.Post(*SignMachineInfo({.udid = "UDID-1"}, id.cert_pem, id.key_pem)).status == 403);
  CHECK(f.service->Handle({.method = "DELETE"}, f.now).status == 405);

  Value p = Profile(f.Get("enroll-token-0123456789"));
  CHECK(SchemaProblems(p).empty());
  CHECK(PayloadOf(p, "com.apple.mdm").GetString("Topic") == "com.apple.mgmt.External.test-topic");
  const Value& scep = *PayloadOf(p, "com.apple.security.scep").Find("PayloadContent");
  CHECK(*scep.GetData("CAFingerprint") == Sha256(f.ca->cert_der()));
  CHECK(scep.GetString("Subject").empty());
  // No static challenge configured: a one-time one any device may use.
  const std::string made = ScepChallenge(p);
  REQUIRE_FALSE(made.empty());
  auto check = f.challenges.Check(made, f.now);
  REQUIRE(check.claim);
  CHECK(check.claim->one_time());
  CHECK(check.claim->udid().empty());

  // An admin-issued one-time challenge opens the door without the token and is embedded as is.
  auto c = f.challenges.Create(600, "", f.now);
  REQUIRE(c.ok());
  CHECK(ScepChallenge(Profile(f.Get("", c->challenge))) == c->challenge);
  // ... until it expires.
  f.now += 601 * 1000;
  auto expired = f.Get("", c->challenge);
  CHECK(expired.status == 403);
  CHECK(expired.reason.find("expired") != std::string::npos);
}

TEST_CASE("enroll service embeds the static challenge for a plain GET", "[enroll][service]") {
  ServiceFixture f("static-scep-challenge");
  f.Start({.static_challenge = "static-scep-challenge"});
  Value p = Profile(f.Get());
  CHECK(ScepChallenge(p) == "static-scep-challenge");
  const auto& subject = *PayloadOf(p, "com.apple.security.scep").Find("PayloadContent")->Find("Subject")->AsArray();
  REQUIRE(subject.size() == 1);
  CHECK((*(*subject[0].AsArray())[0].AsArray())[1].AsString()->rfind("Orchard device ", 0) == 0);
}

TEST_CASE("machine info POST gets a one-time challenge bound to its UDID", "[enroll][service]") {
  ServiceFixture f;
  f.Start({.token = "enroll-token-0123456789", .static_challenge = "static-scep-challenge"});
  auto dev_ca = testing::TestCa::Create("Apple iPhone Device CA (test)");
  auto id = dev_ca->Issue({.common_name = "device attestation", .rsa_key = true});
  MachineInfo info;
  info.udid = "00008110-000A1B2C3D4E5F60";
  info.serial = "F2LXK0ABCDEF";
  auto body = SignMachineInfo(info, id.cert_pem, id.key_pem);
  REQUIRE(body.ok());
  auto r = f.Post(*body, "enroll-token-0123456789");
  CHECK(r.outcome == EnrollOutcome::kServedDevice);
  CHECK(r.udid == info.udid);
  Value p = Profile(r);
  const std::string challenge = ScepChallenge(p);
  CHECK(challenge != "static-scep-challenge");
  auto check = f.challenges.Check(challenge, f.now);
  REQUIRE(check.claim);
  CHECK(check.claim->udid() == info.udid);
  const auto& subject = *PayloadOf(p, "com.apple.security.scep").Find("PayloadContent")->Find("Subject")->AsArray();
  CHECK(*(*(*subject[0].AsArray())[0].AsArray())[1].AsString() == "Orchard device " + info.udid);

  // A challenge made for another device does not admit this one.
  auto other = f.challenges.Create(600, "OTHER-UDID", f.now);
  REQUIRE(other.ok());
  info.challenge = other->challenge;
  auto foreign = f.Post(*SignMachineInfo(info, id.cert_pem, id.key_pem));
  CHECK(foreign.status == 403);
  CHECK(foreign.reason.find("another device") != std::string::npos);
  // ... one made for it does (OTA profile service: CHALLENGE inside the machine info).
  auto own = f.challenges.Create(600, info.udid, f.now);
  REQUIRE(own.ok());
  info.challenge = own->challenge;
  CHECK(ScepChallenge(Profile(f.Post(*SignMachineInfo(info, id.cert_pem, id.key_pem)))) == own->challenge);
}

TEST_CASE("bad machine info bodies get 400 with the reason", "[enroll][service]") {
  ServiceFixture f;
  f.Start({});
  for (const std::string& body : {std::string(), std::string("garbage"), std::string("\x30\x80\x00", 3),
                                  std::string(70 * 1024, '\x30')}) {
    auto r = f.Post(body);
    CHECK(r.status == 400);
    CHECK(r.outcome == EnrollOutcome::kBadRequest);
    CHECK_FALSE(r.reason.empty());
  }
}

TEST_CASE("enroll service signs what it serves when a signer is configured", "[enroll][service]") {
  ServiceFixture f;
  auto sca = testing::TestCa::Create("Signing CA");
  auto sid = sca->Issue({.common_name = "profile signer", .client_auth_eku = false});
  f.signer = std::move(ProfileSigner::FromPem(sid.cert_pem, sid.key_pem, "").value());
  f.Start({});
  auto r = f.Get();
  REQUIRE(r.status == 200);
  CHECK(r.signed_profile);
  REQUIRE_FALSE(r.body.empty());
  CHECK(static_cast<unsigned char>(r.body[0]) == 0x30);
  CHECK(r.body.find("com.apple.mdm") != std::string::npos);  // content embedded
}

TEST_CASE("PKCS12 identity is made by the CA, recorded with the UDID and opens with the embedded password",
          "[enroll][service]") {
  ServiceFixture f;
  EnrollOptions o;
  o.profile.identity = IdentityKind::kPkcs12;
  f.Start(std::move(o));
  Value p = Profile(f.service->Make("", "UDID-P12-0001", f.now));
  CHECK(SchemaProblems(p).empty());
  const Value& payload = PayloadOf(p, "com.apple.security.pkcs12");
  const std::string der = *payload.GetData("PayloadContent");
  const std::string password(payload.GetString("Password"));
  const unsigned char* q = reinterpret_cast<const unsigned char*>(der.data());
  std::unique_ptr<PKCS12, OpensslDeleter<PKCS12_free>> p12(d2i_PKCS12(nullptr, &q, long(der.size())));
  REQUIRE(p12);
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  REQUIRE(PKCS12_parse(p12.get(), password.c_str(), &key, &cert, nullptr) == 1);
  KeyPtr key_owner(key);
  X509Ptr cert_owner(cert);
  int len = i2d_X509(cert, nullptr);
  std::string cert_der(size_t(len), '\0');
  auto* w = reinterpret_cast<unsigned char*>(cert_der.data());
  i2d_X509(cert, &w);
  auto rec = f.issued.BySha256(Sha256Hex(cert_der));
  REQUIRE(rec.ok());
  REQUIRE(rec->has_value());
  CHECK((*rec)->udid == "UDID-P12-0001");
  CHECK((*rec)->subject.find("Orchard device UDID-P12-0001") != std::string::npos);
}

}  // namespace
}  // namespace orchard::enroll
