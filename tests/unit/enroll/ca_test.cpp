// The device CA (generate, reload, sealed key, provided CA, issuing), the records of
// issued certificates and the SCEP challenges, on a real RocksDB in a temp directory.
#include <catch2/catch.hpp>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "enroll/ca.h"
#include "enroll/challenges.h"
#include "enroll/issued.h"
#include "store/store.h"
#include "support/orchardd_process.h"
#include "util/encoding.h"
#include "util/openssl_ptr.h"
#include "util/secret_box.h"

using namespace orchard;
using namespace orchard::enroll;

namespace {

constexpr const char* kKek = "0001020304050607080910111213141516171819202122232425262728293031";

struct Dir {
  std::string path = testing::MakeTempDir("orchard-enroll");
  ~Dir() { std::filesystem::remove_all(path); }
};

X509Ptr Parse(const std::string& der) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  return X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

std::unique_ptr<store::Store> OpenStore(const std::string& dir) {
  auto s = store::Store::Open({.path = dir + "/db"});
  REQUIRE(s.ok());
  return std::move(s.value());
}

IssuedCert Record(const std::string& serial, const std::string& udid = "") {
  IssuedCert c;
  c.serial_hex = serial;
  c.sha256 = Sha256Hex(serial);
  c.subject = "CN=" + serial;
  c.udid = udid;
  c.not_before_ms = 1000;
  c.not_after_ms = 2000;
  return c;
}

}  // namespace

TEST_CASE("device CA is generated once, private, and the same after a reload", "[enroll][ca]") {
  Dir d;
  auto ca = DeviceCa::Load({.dir = d.path + "/ca"});
  REQUIRE(ca.ok());
  CHECK((*ca)->generated());
  X509Ptr cert = Parse((*ca)->cert_der());
  REQUIRE(cert);
  CHECK(X509_check_ca(cert.get()) >= 1);
  BASIC_CONSTRAINTS* bc = static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(cert.get(), NID_basic_constraints, nullptr, nullptr));
  REQUIRE(bc != nullptr);
  CHECK(bc->ca);
  BASIC_CONSTRAINTS_free(bc);
  X509_EXTENSION* bc_ext = X509_get_ext(cert.get(), X509_get_ext_by_NID(cert.get(), NID_basic_constraints, -1));
  REQUIRE(bc_ext != nullptr);
  CHECK(X509_EXTENSION_get_critical(bc_ext) == 1);
  const uint32_t ku = X509_get_key_usage(cert.get());
  CHECK((ku & KU_KEY_CERT_SIGN) != 0);
  CHECK((ku & KU_CRL_SIGN) != 0);
  CHECK((ku & KU_DIGITAL_SIGNATURE) != 0);
  CHECK((ku & KU_KEY_ENCIPHERMENT) != 0);
  CHECK(EVP_PKEY_get_base_id((*ca)->key()) == EVP_PKEY_RSA);
  CHECK(EVP_PKEY_get_bits((*ca)->key()) == 2048);
  struct stat st {};
  REQUIRE(::stat((d.path + "/ca/device-ca.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat((d.path + "/ca").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  const std::string first = (*ca)->cert_der();
  auto again = DeviceCa::Load({.dir = d.path + "/ca"});
  REQUIRE(again.ok());
  CHECK((*again)->cert_der() == first);
  CHECK(EVP_PKEY_eq((*again)->key(), (*ca)->key()) == 1);
  // A certificate whose key was removed is not silently replaced.
  std::filesystem::remove(d.path + "/ca/device-ca.key");
  auto orphan = DeviceCa::Load({.dir = d.path + "/ca"});
  REQUIRE_FALSE(orphan.ok());
  CHECK(orphan.status().message().find("device-ca.key") != std::string::npos);
}

TEST_CASE("device CA key sealed at rest with the key-encryption key", "[enroll][ca]") {
  Dir d;
  auto box = SecretBox::FromKeyText(kKek);
  REQUIRE(box.ok());
  auto ca = DeviceCa::Load({.dir = d.path + "/ca", .box = &box.value()});
  REQUIRE(ca.ok());
  const std::string on_disk = testing::ReadFile(d.path + "/ca/device-ca.key");
  CHECK(SecretBox::IsSealed(on_disk));
  CHECK(on_disk.find("PRIVATE KEY") == std::string::npos);
  // Reload with the key: the same CA.
  auto again = DeviceCa::Load({.dir = d.path + "/ca", .box = &box.value()});
  REQUIRE(again.ok());
  CHECK((*again)->cert_der() == (*ca)->cert_der());
  // Without it: refused, naming the setting.
  auto none = DeviceCa::Load({.dir = d.path + "/ca"});
  REQUIRE_FALSE(none.ok());
  CHECK(none.status().code() == Code::kUnavailable);
  CHECK(none.status().message().find("push.key_encryption_key") != std::string::npos);
  // With another key: refused.
  auto other = SecretBox::FromKeyText(std::string(64, 'a'));
  REQUIRE(other.ok());
  CHECK_FALSE(DeviceCa::Load({.dir = d.path + "/ca", .box = &other.value()}).ok());
}

TEST_CASE("a device CA key stored in the clear is sealed once a key-encryption key is set", "[enroll][ca]") {
  Dir d;
  REQUIRE(DeviceCa::Load({.dir = d.path + "/ca"}).ok());
  CHECK_FALSE(SecretBox::IsSealed(testing::ReadFile(d.path + "/ca/device-ca.key")));
  auto box = SecretBox::FromKeyText(kKek);
  REQUIRE(box.ok());
  REQUIRE(DeviceCa::Load({.dir = d.path + "/ca", .box = &box.value()}).ok());
  CHECK(SecretBox::IsSealed(testing::ReadFile(d.path + "/ca/device-ca.key")));
}

TEST_CASE("a provided device CA is used as is and checked", "[enroll][ca]") {
  Dir d;
  auto gen = [&](const std::string& name, const std::string& key_args) {
    const std::string cmd = "openssl req -x509 -newkey " + key_args + " -nodes -subj /CN=" + name +
                            " -days 30 -addext basicConstraints=critical,CA:TRUE -keyout " + d.path + "/" + name +
                            ".key -out " + d.path + "/" + name + ".pem 2>/dev/null";
    REQUIRE(std::system(cmd.c_str()) == 0);
  };
  gen("rsa", "rsa:2048");
  gen("ec", "ec -pkeyopt ec_paramgen_curve:P-256");
  gen("other", "rsa:2048");
  auto ok = DeviceCa::Load({.dir = d.path + "/unused", .cert_file = d.path + "/rsa.pem", .key_file = d.path + "/rsa.key"});
  REQUIRE(ok.ok());
  CHECK_FALSE((*ok)->generated());
  CHECK_FALSE(std::filesystem::exists(d.path + "/unused/device-ca.key"));
  // An EC CA cannot open SCEP envelopes.
  auto ec = DeviceCa::Load({.cert_file = d.path + "/ec.pem", .key_file = d.path + "/ec.key"});
  REQUIRE_FALSE(ec.ok());
  CHECK(ec.status().message().find("RSA") != std::string::npos);
  // A key that does not match.
  auto mismatch = DeviceCa::Load({.cert_file = d.path + "/rsa.pem", .key_file = d.path + "/other.key"});
  REQUIRE_FALSE(mismatch.ok());
  CHECK(mismatch.status().message().find("does not match") != std::string::npos);
  // Half a configuration, a missing file.
  CHECK_FALSE(DeviceCa::Load({.cert_file = d.path + "/rsa.pem"}).ok());
  CHECK_FALSE(DeviceCa::Load({.cert_file = d.path + "/missing.pem", .key_file = d.path + "/rsa.key"}).ok());
}

TEST_CASE("the device CA issues client certificates with random serials", "[enroll][ca]") {
  Dir d;
  auto ca = DeviceCa::Load({.dir = d.path + "/ca"});
  REQUIRE(ca.ok());
  KeyPtr key(EVP_EC_gen("P-256"));
  X509_NAME* name = X509_NAME_new();
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("dev"), -1, -1, 0);
  const int64_t now = NowMillis();
  auto a = (*ca)->Issue({key.get(), name, 30, now});
  auto b = (*ca)->Issue({key.get(), name, 30, now});
  X509_NAME_free(name);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->serial_hex != b->serial_hex);
  CHECK(a->sha256 == Sha256Hex(a->der));
  CHECK(a->subject == "CN=dev");
  CHECK(a->not_after_ms - now <= 30LL * 86400 * 1000);
  CHECK(a->not_after_ms - now > 30LL * 86400 * 1000 - 2000);
  CHECK(now - a->not_before_ms >= 299 * 1000);
  X509Ptr x = Parse(a->der);
  REQUIRE(x);
  BIGNUM* serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x.get()), nullptr);
  REQUIRE(serial);
  CHECK(BN_is_negative(serial) == 0);
  BN_free(serial);
  CHECK((X509_get_extended_key_usage(x.get()) & XKU_SSL_CLIENT) != 0);
  CHECK(X509_check_ca(x.get()) == 0);
  KeyPtr ca_pub(X509_get_pubkey(Parse((*ca)->cert_der()).get()));
  CHECK(X509_verify(x.get(), ca_pub.get()) == 1);
  // Validity never beyond the CA's own.
  auto long_lived = (*ca)->Issue({key.get(), nullptr, 36500, now});
  REQUIRE(long_lived.ok());
  CHECK(long_lived->not_after_ms <= now + 3651LL * 86400 * 1000);
}

TEST_CASE("issued certificates are recorded, found by sha256, serial and udid, listed in pages", "[enroll][issued]") {
  Dir d;
  auto db = OpenStore(d.path);
  IssuedCerts issued(db.get());
  store::Batch b;
  for (const char* s : {"a1", "b2", "c3", "d4"}) issued.Put(b, Record(s, std::string(s) == "b2" || std::string(s) == "d4" ? "UDID-X" : ""));
  REQUIRE(db->Write(b).ok());
  auto by_sha = issued.BySha256(Sha256Hex("b2"));
  REQUIRE(by_sha.ok());
  REQUIRE(by_sha->has_value());
  CHECK((*by_sha)->serial_hex == "b2");
  CHECK((*by_sha)->udid == "UDID-X");
  CHECK((*by_sha)->not_after_ms == 2000);
  // Serial lookups accept other spellings.
  for (const char* spelling : {"c3", "C3", "00c3", "0xC3", "c:3"}) {
    auto r = issued.BySerial(spelling);
    REQUIRE(r.ok());
    INFO(spelling);
    CHECK(r->has_value());
  }
  CHECK_FALSE(issued.BySerial("ff")->has_value());
  CHECK_FALSE(issued.BySerial("zz")->has_value());
  CHECK_FALSE(issued.BySha256("not-a-hash")->has_value());
  // Paging by serial.
  auto p1 = issued.List("", 3, "");
  REQUIRE(p1.ok());
  REQUIRE(p1->size() == 3);
  CHECK((*p1)[0].serial_hex == "a1");
  auto p2 = issued.List((*p1)[2].serial_hex, 3, "");
  REQUIRE(p2.ok());
  REQUIRE(p2->size() == 1);
  CHECK((*p2)[0].serial_hex == "d4");
  auto dev = issued.List("", 10, "UDID-X");
  REQUIRE(dev.ok());
  REQUIRE(dev->size() == 2);
  CHECK((*dev)[0].serial_hex == "b2");
  CHECK((*dev)[1].serial_hex == "d4");
  CHECK(issued.List("", 10, "UDID-Y")->empty());
  CHECK_FALSE(issued.List("xyz", 10, "").ok());
}

TEST_CASE("revocation is recorded once, answered from memory and survives a reopen", "[enroll][issued]") {
  Dir d;
  {
    auto db = OpenStore(d.path);
    IssuedCerts issued(db.get());
    store::Batch b;
    issued.Put(b, Record("abc"));
    issued.Put(b, Record("def"));
    REQUIRE(db->Write(b).ok());
    REQUIRE(issued.LoadRevoked().ok());
    CHECK_FALSE(issued.IsRevoked(Sha256Hex("abc")));
    REQUIRE(issued.Revoke("ABC", "lost").ok());
    CHECK(issued.IsRevoked(Sha256Hex("abc")));
    CHECK_FALSE(issued.IsRevoked(Sha256Hex("def")));
    auto r = issued.BySerial("abc");
    REQUIRE(r->has_value());
    CHECK((*r)->revoked);
    CHECK((*r)->revoked_reason == "lost");
    const int64_t when = (*r)->revoked_ms;
    CHECK(when > 0);
    // Again: Ok, the first time and reason stay.
    REQUIRE(issued.Revoke("abc", "other").ok());
    CHECK((*issued.BySerial("abc"))->revoked_reason == "lost");
    CHECK((*issued.BySerial("abc"))->revoked_ms == when);
    auto missing = issued.Revoke("999", "x");
    CHECK(missing.code() == Code::kNotFound);
  }
  auto db = OpenStore(d.path);
  IssuedCerts reopened(db.get());
  CHECK(reopened.IsRevoked(Sha256Hex("abc")));  // before loading: from the store
  REQUIRE(reopened.LoadRevoked().ok());
  CHECK(reopened.IsRevoked(Sha256Hex("abc")));
  CHECK_FALSE(reopened.IsRevoked(Sha256Hex("def")));
  CHECK_FALSE(reopened.IsRevoked(Sha256Hex("unknown")));
}

TEST_CASE("issued certificate records decode what they encode and refuse damage", "[enroll][issued]") {
  IssuedCert c = Record("0badcafe", "UDID");
  c.enrollment_id = "UDID";
  c.revoked = true;
  c.revoked_ms = 5;
  c.revoked_reason = "r";
  c.issued_ms = 7;
  c.renewed_from = "aa";
  c.renewed_from_sha256 = Sha256Hex("aa");
  const std::string bytes = IssuedCerts::Encode(c);
  auto back = IssuedCerts::Decode(bytes);
  REQUIRE(back.ok());
  CHECK(back->serial_hex == c.serial_hex);
  CHECK(back->renewed_from_sha256 == c.renewed_from_sha256);
  CHECK(back->revoked_reason == "r");
  CHECK_FALSE(IssuedCerts::Decode(std::string("\x01\x50", 2)).ok());  // a string longer than the record
  CHECK_FALSE(IssuedCerts::Decode(std::string("\x02", 1)).ok());      // an unknown version
  CHECK_FALSE(IssuedCerts::Decode("").ok());
  CHECK(NormalizeSerial("0000") == std::optional<std::string>("0"));
  CHECK_FALSE(NormalizeSerial("").has_value());
  CHECK_FALSE(NormalizeSerial(std::string(41, 'f')).has_value());
}

TEST_CASE("one-time challenges: accepted once, reuse and expiry refused, udid carried", "[enroll][challenges]") {
  Dir d;
  auto db = OpenStore(d.path);
  Challenges ch(db.get(), "");
  const int64_t now = 1'000'000'000'000;
  auto c = ch.Create(60, "UDID-1", now);
  REQUIRE(c.ok());
  CHECK(c->challenge.size() == 32);
  CHECK(c->expires_ms == now + 60'000);
  // The secret is not stored, only its hash.
  bool found_plain = false;
  for (auto it = db->Scan(store::Cf::kEnroll, "", ""); it->Valid(); it->Next())
    found_plain = found_plain || it->key().find(c->challenge) != std::string_view::npos ||
                  it->value().find(c->challenge) != std::string_view::npos;
  CHECK_FALSE(found_plain);
  {
    ChallengeCheck ok = ch.Check(c->challenge, now + 1000);
    REQUIRE(ok.claim.has_value());
    CHECK(ok.claim->one_time());
    CHECK(ok.claim->udid() == "UDID-1");
    // While held, the same challenge is refused as reused.
    CHECK(ch.Check(c->challenge, now + 1000).refusal == ChallengeRefusal::kReused);
    store::Batch b;
    ok.claim->Consume(b, now + 1000);
    REQUIRE(db->Write(b).ok());
  }
  // Used.
  ChallengeCheck reused = ch.Check(c->challenge, now + 2000);
  CHECK_FALSE(reused.claim.has_value());
  CHECK(reused.refusal == ChallengeRefusal::kReused);
  // A claim given up without a write frees the challenge.
  auto c2 = ch.Create(60, "", now);
  REQUIRE(c2.ok());
  { CHECK(ch.Check(c2->challenge, now).claim.has_value()); }
  ChallengeCheck free_again = ch.Check(c2->challenge, now);
  REQUIRE(free_again.claim.has_value());
  CHECK(free_again.claim->udid().empty());
  // Expired: at and after its expiry time.
  auto c3 = ch.Create(1, "", now);
  REQUIRE(c3.ok());
  CHECK(ch.Check(c3->challenge, now + 999).claim.has_value());
  CHECK(ch.Check(c3->challenge, now + 1000).refusal == ChallengeRefusal::kExpired);
  // Wrong and missing.
  CHECK(ch.Check("no-such-challenge", now).refusal == ChallengeRefusal::kWrong);
  CHECK(ch.Check("", now).refusal == ChallengeRefusal::kMissing);
  // Bad arguments.
  CHECK_FALSE(ch.Create(0, "", now).ok());
  CHECK_FALSE(ch.Create(31 * 86400, "", now).ok());
  CHECK_FALSE(ch.Create(60, "has space", now).ok());
  CHECK_FALSE(ch.Create(60, std::string(300, 'u'), now).ok());
}

TEST_CASE("a one-time challenge is consumed by exactly one of many concurrent requests", "[enroll][challenges]") {
  Dir d;
  auto db = OpenStore(d.path);
  Challenges ch(db.get(), "");
  const int64_t now = NowMillis();
  auto c = ch.Create(60, "", now);
  REQUIRE(c.ok());
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      ChallengeCheck r = ch.Check(c->challenge, now);
      if (!r.claim) return;
      store::Batch b;
      r.claim->Consume(b, now);
      if (db->Write(b).ok()) accepted.fetch_add(1);
    });
  for (auto& t : threads) t.join();
  CHECK(accepted.load() == 1);
  CHECK(ch.Check(c->challenge, now).refusal == ChallengeRefusal::kReused);
}

TEST_CASE("the static challenge is compared exactly and never consumed", "[enroll][challenges]") {
  Dir d;
  auto db = OpenStore(d.path);
  Challenges ch(db.get(), "static-secret");
  for (int i = 0; i < 3; ++i) {
    ChallengeCheck r = ch.Check("static-secret", 0);
    REQUIRE(r.claim.has_value());
    CHECK_FALSE(r.claim->one_time());
  }
  CHECK(ch.Check("static-secreT", 0).refusal == ChallengeRefusal::kWrong);
  CHECK(ch.Check("static-secret ", 0).refusal == ChallengeRefusal::kWrong);
  CHECK(ch.Check("static", 0).refusal == ChallengeRefusal::kWrong);
}

TEST_CASE("expired challenges are swept, live ones kept", "[enroll][challenges]") {
  Dir d;
  auto db = OpenStore(d.path);
  Challenges ch(db.get(), "");
  auto old1 = ch.Create(10, "", 0);
  auto old2 = ch.Create(10, "", 0);
  auto live = ch.Create(3600, "", 0);
  REQUIRE((old1.ok() && old2.ok() && live.ok()));
  int keys = 0;
  for (auto it = db->Scan(store::Cf::kEnroll, std::string("h\0", 2), std::string("h\1", 2)); it->Valid(); it->Next()) ++keys;
  CHECK(keys == 3);
  auto n = ch.Sweep(20'000, 100);
  REQUIRE(n.ok());
  CHECK(*n == 2);
  CHECK(ch.Check(old1->challenge, 0).refusal == ChallengeRefusal::kWrong);
  CHECK(ch.Check(live->challenge, 20'000).claim.has_value());
  CHECK(*ch.Sweep(20'000, 100) == 0);
}
