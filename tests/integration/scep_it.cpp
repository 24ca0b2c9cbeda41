// SCEP (RFC 8894) against the real orchardd over real HTTP: the device CA it
// generates, PKCSReq and RenewalReq with the OpenSSL client of tests/support
// (RSA and EC keys, POST and GET, AES and DES3), the refusals (challenge wrong,
// missing, expired, reused; RSA 1024, bad signature, garbage), one-time challenges
// and certificates through the admin API, revocation, a provided CA, the issued
// certificate authenticating a device (Mdm-Signature), and certmonger's scep-submit.
#include <catch2/catch.hpp>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <openssl/cms.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <set>
#include <unistd.h>
#include <thread>

#include "plist/plist.h"
#include "support/orchardd_process.h"
#include "support/scep_client.h"
#include "support/skip.h"
#include "support/test_pki.h"
#include "util/encoding.h"
#include "util/openssl_ptr.h"

using namespace orchard;
using namespace orchard::testing;
using plist::Value;

namespace {

constexpr const char* kKey = "scep-integration-api-key-0001";
constexpr const char* kStatic = "static-scep-challenge-1";

struct Server {
  std::string dir = MakeTempDir("orchard-scep-it");
  std::unique_ptr<OrchardProcess> proc;

  explicit Server(std::vector<std::string> extra = {}, bool static_challenge = true) {
    std::string conf = "api_key = " + std::string(kKey) + "\n";
    if (static_challenge) conf += "enroll.scep_challenge = " + std::string(kStatic) + "\n";
    for (const auto& line : extra) conf += line + "\n";
    REQUIRE(WriteFile(dir + "/orchard.conf", conf));
    proc = std::make_unique<OrchardProcess>(dir + "/data", std::vector<std::string>{"--config", dir + "/orchard.conf"});
    REQUIRE(proc->Start());
  }
  ~Server() {
    proc.reset();
    std::filesystem::remove_all(dir);
    std::filesystem::remove(dir + "/data.log");
  }
  std::string scep() const { return proc->url() + "/scep"; }
  HttpResult Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return HttpCall(method, proc->url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
  // The value of orchard_scep_requests_total{outcome="..."}.
  long Outcome(const std::string& outcome) {
    auto m = HttpCall("GET", proc->url() + "/metrics");
    std::smatch sm;
    std::regex re("orchard_scep_requests_total\\{outcome=\"" + outcome + "\"\\} ([0-9]+)");
    if (!std::regex_search(m.body, sm, re)) return -1;
    return std::stol(sm[1]);
  }
  std::string Challenge(int64_t ttl, const std::string& udid = "") {
    Value b;
    b.Set("ttl_seconds", Value::Integer(ttl));
    if (!udid.empty()) b.Set("udid", Value::String(udid));
    auto r = Api("POST", "/v1/enroll/challenges", plist::ToJson(b));
    REQUIRE(r.status == 200);
    auto v = plist::ParseJson(r.body);
    REQUIRE(v.ok());
    return std::string(v->GetString("challenge"));
  }
  Value Cert(const std::string& serial) {
    auto r = Api("GET", "/v1/certificates/" + serial);
    REQUIRE(r.status == 200);
    auto v = plist::ParseJson(r.body);
    REQUIRE(v.ok());
    return v.value();
  }
};

X509Ptr ParseDer(const std::string& der) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  return X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

std::string SerialOf(const std::string& der) {
  X509Ptr x = ParseDer(der);
  std::unique_ptr<BIGNUM, OpensslDeleter<BN_free>> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(x.get()), nullptr));
  char* hex = BN_bn2hex(bn.get());
  std::string s(hex);
  OPENSSL_free(hex);
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s.substr(s.find_first_not_of('0'));
}

// Verifies leaf against the CA with the clientAuth purpose, as Orchard's authenticator does.
bool ChainsTo(const std::string& leaf_der, const std::string& ca_der) {
  X509Ptr leaf = ParseDer(leaf_der), ca = ParseDer(ca_der);
  X509StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca.get());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  return X509_verify_cert(ctx.get()) == 1;
}

std::string AuthenticateBody(const std::string& udid) {
  Value v;
  v.Set("MessageType", Value::String("Authenticate"));
  v.Set("UDID", Value::String(udid));
  v.Set("SerialNumber", Value::String("SN-" + udid));
  v.Set("Model", Value::String("iPhone15,2"));
  v.Set("OSVersion", Value::String("17.4"));
  v.Set("Topic", Value::String("com.apple.mgmt.test"));
  return plist::ToXml(v);
}

// Authenticate signed the way devices sign (Mdm-Signature, SHA-1), no proxy header.
long Authenticate(Server& s, const Identity& id, const std::string& udid) {
  const std::string body = AuthenticateBody(udid);
  return HttpCall("PUT", s.proc->url() + "/mdm", body,
                  {"Content-Type: application/x-apple-aspen-mdm-checkin", "Mdm-Signature: " + id.MdmSignature(body)})
      .status;
}

ScepResult Enroll(ScepClient& c, const ScepRequest& r) {
  auto res = c.Enroll(r);
  INFO(res.status().ToString());
  REQUIRE(res.ok());
  return res.value();
}

}  // namespace

TEST_CASE("SCEP GetCACaps and GetCACert serve the generated device CA, kept across restarts", "[scep][integration]") {
  Server s;
  ScepClient c(s.scep());
  auto caps = c.GetCaCaps();
  REQUIRE(caps.ok());
  CHECK(*caps == "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nSCEPStandard\nRenewal\n");
  auto raw = HttpCall("GET", s.scep() + "?operation=GetCACert");
  CHECK(raw.status == 200);
  CHECK(raw.content_type == "application/x-x509-ca-cert");
  X509Ptr ca = ParseDer(raw.body);
  REQUIRE(ca);
  CHECK(X509_check_ca(ca.get()) >= 1);
  KeyPtr key(X509_get_pubkey(ca.get()));
  CHECK(EVP_PKEY_get_base_id(key.get()) == EVP_PKEY_RSA);
  CHECK(EVP_PKEY_get_bits(key.get()) == 2048);
  CHECK((X509_get_key_usage(ca.get()) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN | KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT)) ==
        (KU_KEY_CERT_SIGN | KU_CRL_SIGN | KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT));
  // About ten years.
  int days = 0, secs = 0;
  ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(ca.get()), X509_get0_notAfter(ca.get()));
  CHECK(days >= 3649);
  CHECK(days <= 3651);
  // The key file is private.
  struct stat st {};
  REQUIRE(::stat((s.proc->data_dir() + "/ca/device-ca.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // Same CA after a restart.
  REQUIRE(s.proc->Stop() == 0);
  REQUIRE(s.proc->Start());
  CHECK(HttpCall("GET", s.scep() + "?operation=GetCACert").body == raw.body);
  // Also under the path some clients use; unknown operations and methods are refused.
  CHECK(HttpCall("GET", s.proc->url() + "/scep/pkiclient.exe?operation=GetCACaps").status == 200);
  CHECK(HttpCall("GET", s.scep() + "?operation=GetNextCACert").status == 400);
  CHECK(HttpCall("GET", s.scep()).status == 400);
  CHECK(HttpCall("DELETE", s.scep() + "?operation=GetCACaps").status == 405);
}

TEST_CASE("SCEP PKCSReq with the static challenge issues a certificate that authenticates a device", "[scep][integration]") {
  Server s;
  ScepClient c(s.scep());
  ScepRequest r;
  r.challenge = kStatic;
  r.subject = "CN=scep-device-1,O=Orchard Test";
  ScepResult res = Enroll(c, r);
  REQUIRE(res.http_status == 200);
  REQUIRE(res.pki_status == 0);
  const std::string ca_der = *c.GetCaCert();
  CHECK(ChainsTo(res.identity.cert_der, ca_der));
  X509Ptr cert = ParseDer(res.identity.cert_der);
  CHECK(X509_check_ca(cert.get()) == 0);
  CHECK((X509_get_extended_key_usage(cert.get()) & XKU_SSL_CLIENT) != 0);
  CHECK((X509_get_key_usage(cert.get()) & (KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT)) ==
        (KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT));
  int days = 0, secs = 0;
  ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert.get()), X509_get0_notAfter(cert.get()));
  CHECK(days == 365);  // 365 days + the 5 minutes of back-dating
  char cn[128] = "";
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof cn);
  CHECK(std::string(cn) == "scep-device-1");
  // 128-bit random serial, positive.
  const std::string serial = SerialOf(res.identity.cert_der);
  CHECK(serial.size() > 24);
  CHECK(serial.size() <= 32);
  // Recorded.
  Value rec = s.Cert(serial);
  CHECK(rec.GetString("sha256") == res.identity.Sha256Hex());
  CHECK(rec.GetString("subject") == "O=Orchard Test,CN=scep-device-1");
  CHECK(rec.Find("revoked")->AsBool() != nullptr);
  CHECK_FALSE(*rec.Find("revoked")->AsBool());
  CHECK(s.Outcome("issued") == 1);
  // Orchard trusts its own CA without configuration: the device enrolls with the
  // certificate (Mdm-Signature, SHA-1 as devices sign).
  CHECK(Authenticate(s, res.identity, "SCEP-UDID-1") == 200);
}

TEST_CASE("SCEP PKCSReq with EC keys, GET, DES3, SHA-1 and SHA-512", "[scep][integration]") {
  Server s;
  ScepClient c(s.scep());
  struct Case {
    ScepKeyType key;
    std::string cipher, digest;
    bool get;
  } cases[] = {{ScepKeyType::kEcP256, "aes-128-cbc", "sha256", false},
               {ScepKeyType::kEcP384, "aes-256-cbc", "sha512", true},
               {ScepKeyType::kRsa, "des-ede3-cbc", "sha1", false},
               {ScepKeyType::kRsa, "aes-256-cbc", "sha256", true}};
  int n = 0;
  for (const auto& k : cases) {
    ScepRequest r;
    r.challenge = kStatic;
    r.key.type = k.key;
    r.cipher = k.cipher;
    r.digest = k.digest;
    r.use_get = k.get;
    r.subject = "CN=dev-" + std::to_string(++n);
    ScepResult res = Enroll(c, r);
    INFO("case " << n << " http " << res.http_status << " " << res.body);
    CHECK(res.pki_status == 0);
    CHECK(ChainsTo(res.identity.cert_der, *c.GetCaCert()));
    if (res.pki_status == 0) CHECK(Authenticate(s, res.identity, "EC-UDID-" + std::to_string(n)) == 200);
  }
  CHECK(s.Outcome("issued") == 4);
}

TEST_CASE("SCEP refusals: challenge wrong or missing, RSA 1024, bad signature, unsupported type, garbage", "[scep][integration]") {
  Server s;
  ScepClient c(s.scep());
  ScepRequest base;
  base.challenge = kStatic;
  SECTION("wrong challenge") {
    ScepRequest r = base;
    r.challenge = "not-the-challenge";
    ScepResult res = Enroll(c, r);
    CHECK(res.pki_status == 2);
    CHECK(res.fail_info == 2);  // badRequest
    CHECK(s.Outcome("challenge_wrong") == 1);
  }
  SECTION("no challenge") {
    ScepRequest r = base;
    r.challenge.clear();
    ScepResult res = Enroll(c, r);
    CHECK(res.pki_status == 2);
    CHECK(res.fail_info == 2);
    CHECK(s.Outcome("challenge_missing") == 1);
  }
  SECTION("RSA 1024") {
    ScepRequest r = base;
    r.key.rsa_bits = 1024;
    ScepResult res = Enroll(c, r);
    CHECK(res.pki_status == 2);
    CHECK(res.fail_info == 0);  // badAlg
    CHECK(s.Outcome("bad_alg") == 1);
  }
  SECTION("bad signature") {
    ScepRequest r = base;
    r.corrupt_signature = true;
    ScepResult res = Enroll(c, r);
    CHECK(res.pki_status == 2);
    CHECK(res.fail_info == 1);  // badMessageCheck
    CHECK(s.Outcome("bad_signature") == 1);
  }
  SECTION("GetCertInitial is not supported") {
    ScepRequest r = base;
    r.message_type = "20";
    ScepResult res = Enroll(c, r);
    CHECK(res.pki_status == 2);
    CHECK(res.fail_info == 2);
  }
  SECTION("garbage, empty and oversized bodies") {
    auto g = c.PostRaw("this is not DER");
    REQUIRE(g.ok());
    CHECK(g->first == 400);
    auto e = c.PostRaw("");
    REQUIRE(e.ok());
    CHECK(e->first == 400);
    auto big = c.PostRaw(std::string(70000, '\x30'));
    REQUIRE(big.ok());
    CHECK(big->first == 413);
    CHECK(HttpCall("GET", s.scep() + "?operation=PKIOperation&message=%%%").status == 400);
    CHECK(HttpCall("GET", s.scep() + "?operation=PKIOperation").status == 400);
    // A valid message cut short.
    std::string key;
    auto msg = c.BuildMessage(base, &key);
    REQUIRE(msg.ok());
    auto cut = c.PostRaw(msg->substr(0, msg->size() / 2));
    REQUIRE(cut.ok());
    CHECK(cut->first == 400);
    CHECK(s.Outcome("unparseable") == 3);  // garbage, empty, cut short
  }
  // Whatever was refused, nothing was issued and the server still answers.
  CHECK(s.Outcome("issued") == 0);
  CHECK(HttpCall("GET", s.scep() + "?operation=GetCACaps").status == 200);
}

TEST_CASE("SCEP one-time challenges: used once, reuse and expiry refused, the UDID recorded", "[scep][integration]") {
  Server s({}, /*static_challenge=*/false);
  ScepClient c(s.scep());
  const std::string udid = "00008110-000A11223344556E";
  ScepRequest r;
  r.challenge = s.Challenge(3600, udid);
  ScepResult first = Enroll(c, r);
  REQUIRE(first.pki_status == 0);
  const std::string serial = SerialOf(first.identity.cert_der);
  CHECK(s.Cert(serial).GetString("udid") == udid);
  // Listed under the device.
  auto listed = s.Api("GET", "/v1/certificates?udid=" + udid);
  REQUIRE(listed.status == 200);
  CHECK(listed.body.find(serial) != std::string::npos);
  // Reuse of the same challenge.
  ScepResult again = Enroll(c, r);
  CHECK(again.pki_status == 2);
  CHECK(again.fail_info == 2);
  CHECK(s.Outcome("challenge_reused") == 1);
  // The certificate authenticates its device, and no other.
  CHECK(Authenticate(s, first.identity, "ANOTHER-UDID") == 403);
  CHECK(Authenticate(s, first.identity, udid) == 200);
  // Expiry: a one-second challenge, used after its expiry time has passed.
  ScepRequest late;
  late.challenge = s.Challenge(1);
  const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(1100);
  while (std::chrono::system_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ScepResult expired = Enroll(c, late);
  CHECK(expired.pki_status == 2);
  CHECK(expired.fail_info == 2);
  CHECK(s.Outcome("challenge_expired") == 1);
  // A random string is no challenge (there is no static one).
  ScepRequest wrong;
  wrong.challenge = "0123456789abcdef0123456789abcdef";
  CHECK(Enroll(c, wrong).pki_status == 2);
  // Bad admin requests.
  CHECK(s.Api("POST", "/v1/enroll/challenges", "{\"ttl_seconds\": 0}").status == 400);
  CHECK(s.Api("POST", "/v1/enroll/challenges", "{\"ttl\": 5}").status == 400);
  CHECK(s.Api("POST", "/v1/enroll/challenges", "[]").status == 400);
  CHECK(s.Api("GET", "/v1/enroll/challenges").status == 405);
  CHECK(HttpCall("POST", s.proc->url() + "/v1/enroll/challenges", "{}").status == 401);
}

TEST_CASE("SCEP RenewalReq with an issued certificate, refused when revoked or foreign", "[scep][integration]") {
  Server s;
  ScepClient c(s.scep());
  ScepRequest r;
  r.challenge = kStatic;
  ScepResult first = Enroll(c, r);
  REQUIRE(first.pki_status == 0);
  const std::string old_serial = SerialOf(first.identity.cert_der);
  // Renewal: signed with the current certificate, no challenge, new key.
  ScepRequest renew;
  renew.renew_with = &first.identity;
  ScepResult second = Enroll(c, renew);
  REQUIRE(second.pki_status == 0);
  const std::string new_serial = SerialOf(second.identity.cert_der);
  CHECK(new_serial != old_serial);
  CHECK(s.Cert(new_serial).GetString("renewed_from") == old_serial);
  CHECK(s.Outcome("renewed") == 1);
  CHECK(Authenticate(s, second.identity, "RENEW-UDID") == 200);
  // A certificate Orchard did not issue cannot renew.
  auto foreign_ca = TestCa::Create("Foreign CA");
  IssueOptions o;
  o.rsa_key = true;
  Identity foreign = foreign_ca->Issue(o);
  ScepRequest f;
  f.renew_with = &foreign;
  ScepResult refused = Enroll(c, f);
  CHECK(refused.pki_status == 2);
  CHECK(refused.fail_info == 4);  // badCertId
  // Revoked: via the admin API; it can neither renew nor authenticate.
  auto rv = s.Api("POST", "/v1/certificates/" + new_serial + "/revoke", "{\"reason\": \"lost device\"}");
  REQUIRE(rv.status == 200);
  Value rec = s.Cert(new_serial);
  CHECK(*rec.Find("revoked")->AsBool());
  CHECK(rec.GetString("revoked_reason") == "lost device");
  ScepRequest renew2;
  renew2.renew_with = &second.identity;
  ScepResult after = Enroll(c, renew2);
  CHECK(after.pki_status == 2);
  CHECK(after.fail_info == 4);
  CHECK(Authenticate(s, second.identity, "RENEW-UDID") == 403);
  // After a restart the revocation holds (loaded from the store).
  REQUIRE(s.proc->Stop() == 0);
  REQUIRE(s.proc->Start());
  CHECK(Authenticate(s, second.identity, "RENEW-UDID") == 403);
  CHECK(s.Api("POST", "/v1/certificates/abc/revoke").status == 404);
  CHECK(s.Api("POST", "/v1/certificates/xyz/revoke").status == 400);
  CHECK(s.Api("GET", "/v1/certificates/" + old_serial).status == 200);
}

TEST_CASE("SCEP certificate listing pages by cursor", "[scep][integration]") {
  Server s;
  ScepClient c(s.scep());
  std::set<std::string> serials;
  for (int i = 0; i < 5; ++i) {
    ScepRequest r;
    r.challenge = kStatic;
    r.key.type = ScepKeyType::kEcP256;
    ScepResult res = Enroll(c, r);
    REQUIRE(res.pki_status == 0);
    serials.insert(SerialOf(res.identity.cert_der));
  }
  std::set<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    auto r = s.Api("GET", "/v1/certificates?limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    REQUIRE(r.status == 200);
    auto v = plist::ParseJson(r.body);
    REQUIRE(v.ok());
    for (const auto& item : *v->Find("certificates")->AsArray()) seen.insert(std::string(item.GetString("serial")));
    cursor = std::string(v->GetString("next_cursor"));
    ++pages;
  } while (!cursor.empty() && pages < 10);
  CHECK(pages == 3);
  CHECK(seen == serials);
  CHECK(s.Api("GET", "/v1/certificates?cursor=bogus").status == 400);
}

TEST_CASE("SCEP with a CA the admin provides, its key sealed nowhere but trusted", "[scep][integration]") {
  // An RSA CA made outside Orchard.
  std::string dir = MakeTempDir("orchard-scep-ca");
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=Provided-CA -days 30 "
                          "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature,keyEncipherment "
                          "-keyout " + dir + "/ca.key -out " + dir + "/ca.pem 2>/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  Server s({"enroll.ca_cert_file = " + dir + "/ca.pem", "enroll.ca_key_file = " + dir + "/ca.key"});
  ScepClient c(s.scep());
  auto ca = c.GetCaCert();
  REQUIRE(ca.ok());
  X509Ptr x = ParseDer(*ca);
  char cn[64] = "";
  X509_NAME_get_text_by_NID(X509_get_subject_name(x.get()), NID_commonName, cn, sizeof cn);
  CHECK(std::string(cn) == "Provided-CA");
  ScepRequest r;
  r.challenge = kStatic;
  ScepResult res = Enroll(c, r);
  REQUIRE(res.pki_status == 0);
  CHECK(ChainsTo(res.identity.cert_der, *ca));
  // The issued certificate never outlives the CA.
  X509Ptr leaf = ParseDer(res.identity.cert_der);
  CHECK(ASN1_TIME_compare(X509_get0_notAfter(leaf.get()), X509_get0_notAfter(x.get())) <= 0);
  CHECK(Authenticate(s, res.identity, "PROVIDED-UDID") == 200);
  CHECK_FALSE(std::filesystem::exists(s.proc->data_dir() + "/ca/device-ca.key"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("SCEP device CA key sealed with the key-encryption key", "[scep][integration]") {
  Server s({"push.key_encryption_key = 0001020304050607080910111213141516171819202122232425262728293031"});
  const std::string key = ReadFile(s.proc->data_dir() + "/ca/device-ca.key");
  CHECK(key.rfind("OSB1", 0) == 0);
  CHECK(key.find("PRIVATE KEY") == std::string::npos);
  ScepClient c(s.scep());
  ScepRequest r;
  r.challenge = kStatic;
  CHECK(Enroll(c, r).pki_status == 0);
}

namespace {

struct Run {
  int status = -1;
  std::string out;
};

// Runs a shell command, capturing stdout (and stderr unless the command redirects it).
Run Shell(const std::string& cmd) {
  Run r;
  FILE* p = ::popen((cmd.find("2>") == std::string::npos ? cmd + " 2>&1" : cmd).c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string PemOf(const std::string& label, const std::string& der) {
  std::string b64 = Base64Encode(der), out = "-----BEGIN " + label + "-----\n";
  for (size_t i = 0; i < b64.size(); i += 64) out += b64.substr(i, 64) + "\n";
  return out + "-----END " + label + "-----\n";
}

// The certificate inside a pkcsPKIEnvelope (PEM, as scep-submit prints it), decrypted with key_pem.
std::string CertFromEnvelope(const std::string& pem, const std::string& key_pem) {
  BioPtr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  CmsPtr env(PEM_read_bio_CMS(in.get(), nullptr, nullptr, nullptr));
  if (!env) return {};
  BioPtr kb(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  KeyPtr key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  BioPtr plain(BIO_new(BIO_s_mem()));
  if (!key || CMS_decrypt(env.get(), key.get(), nullptr, nullptr, plain.get(), CMS_BINARY) != 1) return {};
  char* p = nullptr;
  long n = BIO_get_mem_data(plain.get(), &p);
  const unsigned char* q = reinterpret_cast<const unsigned char*>(p);
  CmsPtr certs_only(d2i_CMS_ContentInfo(nullptr, &q, n));
  if (!certs_only) return {};
  STACK_OF(X509)* certs = CMS_get1_certs(certs_only.get());
  std::string der;
  if (certs && sk_X509_num(certs) == 1) {
    unsigned char* d = nullptr;
    int len = i2d_X509(sk_X509_value(certs, 0), &d);
    if (len > 0) der.assign(reinterpret_cast<char*>(d), static_cast<size_t>(len));
    OPENSSL_free(d);
  }
  sk_X509_pop_free(certs, X509_free);
  return der;
}

}  // namespace

TEST_CASE("certmonger scep-submit talks to orchardd: caps, CA certificate, PKCSReq and a refusal", "[scep][integration]") {
  const std::string tool = "/usr/lib/certmonger/scep-submit";
  if (::access(tool.c_str(), X_OK) != 0)
    ORCHARD_SKIP("certmonger's scep-submit is not installed (scripts/install-deps --test)");
  Server s;
  const std::string dir = s.dir;
  const std::string url = s.scep();
  // GetCACaps, as certmonger asks before choosing POST and its algorithms.
  Run caps = Shell(tool + " -u " + url + " -c");
  INFO(caps.out);
  CHECK(caps.status == 0);
  CHECK(caps.out.find("POSTPKIOperation") != std::string::npos);
  CHECK(caps.out.find("SHA-256") != std::string::npos);
  // GetCACert: certmonger parses the DER answer and prints the CA certificate.
  ScepClient c(url);
  const std::string ca_der = *c.GetCaCert();
  Run cert = Shell(tool + " -u " + url + " -C");
  INFO(cert.out);
  CHECK(cert.status == 0);
  CHECK(cert.out.find(PemOf("CERTIFICATE", ca_der)) != std::string::npos);
  REQUIRE(WriteFile(dir + "/ca.pem", PemOf("CERTIFICATE", ca_der)));
  // PKIOperation: certmonger sends the pkiMessage (built as certmonger's daemon would: a
  // PKCSReq with the challenge), checks the CertRep's signature by the CA and prints the
  // pkcsPKIEnvelope, which our key opens to the issued certificate.
  ScepRequest r;
  r.challenge = kStatic;
  r.subject = "CN=certmonger-host";
  std::string key_pem;
  auto msg = c.BuildMessage(r, &key_pem);
  REQUIRE(msg.ok());
  REQUIRE(WriteFile(dir + "/req.pem", PemOf("PKCS7", *msg)));
  Run issued = Shell(tool + " -u " + url + " -r " + dir + "/ca.pem -N " + dir + "/ca.pem -p " + dir + "/req.pem");
  INFO(issued.out);
  CHECK(issued.status == 0);
  const std::string leaf = CertFromEnvelope(issued.out, key_pem);
  REQUIRE_FALSE(leaf.empty());
  CHECK(ChainsTo(leaf, ca_der));
  CHECK(s.Outcome("issued") == 1);
  // A wrong challenge: scep-submit reports the CA's rejection (exit status 2).
  ScepRequest bad = r;
  bad.challenge = "wrong-challenge-for-certmonger";
  auto bad_msg = c.BuildMessage(bad, nullptr);
  REQUIRE(bad_msg.ok());
  REQUIRE(WriteFile(dir + "/bad.pem", PemOf("PKCS7", *bad_msg)));
  Run rejected = Shell(tool + " -u " + url + " -r " + dir + "/ca.pem -N " + dir + "/ca.pem -p " + dir + "/bad.pem");
  INFO(rejected.out);
  CHECK(rejected.status == 2);
  CHECK(s.Outcome("challenge_wrong") == 1);
}

TEST_CASE("orchardctl enroll challenge and certs list, show and revoke", "[scep][integration][ctl]") {
  Server s;
  const std::string ctl = OrchardBinary("orchardctl") + " --url " + s.proc->url() + " --api-key " + kKey;
  // A one-time challenge for a device, printed alone on stdout.
  Run made = Shell(ctl + " enroll challenge --ttl 600 --udid CTL-UDID-1 2>/dev/null");
  REQUIRE(made.status == 0);
  std::string challenge = made.out;
  while (!challenge.empty() && challenge.back() == '\n') challenge.pop_back();
  CHECK(challenge.size() == 32);
  ScepClient c(s.scep());
  ScepRequest r;
  r.challenge = challenge;
  r.subject = "CN=ctl-device";
  ScepResult res = Enroll(c, r);
  REQUIRE(res.pki_status == 0);
  const std::string serial = SerialOf(res.identity.cert_der);
  Run list = Shell(ctl + " certs");
  CHECK(list.status == 0);
  CHECK(list.out.find(serial) != std::string::npos);
  CHECK(list.out.find("CTL-UDID-1") != std::string::npos);
  Run filtered = Shell(ctl + " certs list --udid OTHER");
  CHECK(filtered.status == 0);
  CHECK(filtered.out.find(serial) == std::string::npos);
  Run show = Shell(ctl + " certs show " + serial);
  CHECK(show.status == 0);
  CHECK(show.out.find(res.identity.Sha256Hex()) != std::string::npos);
  Run revoke = Shell(ctl + " certs revoke " + serial + " --reason 'stolen'");
  CHECK(revoke.status == 0);
  CHECK(*s.Cert(serial).Find("revoked")->AsBool());
  CHECK(s.Cert(serial).GetString("revoked_reason") == "stolen");
  CHECK(Shell(ctl + " certs show ffff").status == 1);
  CHECK(Shell(ctl + " certs frob").status == 2);
  CHECK(Shell(ctl + " enroll challenge --ttl 0").status == 2);
  // The challenge never reaches orchardd's log.
  CHECK(ReadFile(s.proc->log_path()).find(challenge) == std::string::npos);
}

// Not a test: regenerates tests/fuzz/seeds/scep_fuzz/ (messages encrypted to the fuzz
// target's fixed CA). Run: ORCHARD_SCEP_SEEDS=tests/fuzz/seeds/scep_fuzz scep_it "[.seeds]"
TEST_CASE("write SCEP fuzz seeds", "[.seeds]") {
  const char* out = std::getenv("ORCHARD_SCEP_SEEDS");
  REQUIRE(out != nullptr);
  const std::string ca = std::string(ORCHARD_SOURCE_DIR) + "/tests/fuzz/scep_ca/";
  Server s({"enroll.ca_cert_file = " + ca + "ca.pem", "enroll.ca_key_file = " + ca + "ca.key"});
  ScepClient c(s.scep());
  struct Seed {
    const char* name;
    ScepRequest r;
  };
  std::vector<Seed> seeds(5);
  seeds[0] = {"pkcsreq-rsa", {}};
  seeds[0].r.challenge = "fuzz-challenge";
  seeds[1] = {"pkcsreq-ec-des3", {}};
  seeds[1].r.challenge = "fuzz-challenge";
  seeds[1].r.key.type = ScepKeyType::kEcP256;
  seeds[1].r.cipher = "des-ede3-cbc";
  seeds[2] = {"wrong-challenge", {}};
  seeds[2].r.challenge = "nope";
  seeds[3] = {"renewal-sha1", {}};
  seeds[3].r.message_type = "17";
  seeds[3].r.digest = "sha1";
  seeds[4] = {"bad-signature", {}};
  seeds[4].r.challenge = "fuzz-challenge";
  seeds[4].r.corrupt_signature = true;
  for (const auto& seed : seeds) {
    auto msg = c.BuildMessage(seed.r, nullptr);
    REQUIRE(msg.ok());
    REQUIRE(WriteFile(std::string(out) + "/" + seed.name + ".der", *msg));
  }
}
