#include "support/test_pki.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <vector>

#include <openssl/pkcs12.h>

#include "util/encoding.h"
#include "util/openssl_ptr.h"

namespace orchard::testing {
namespace {

using ExtPtr = X509ExtensionPtr;

// Test code: a broken PKI is a broken test, so fail loudly.
[[noreturn]] void Fail(const char* what) {
  char buf[256] = "";
  ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
  ERR_clear_error();
  throw std::runtime_error(std::string("test_pki: ") + what + ": " + buf);
}

void Check(int ok, const char* what) {
  if (ok != 1) Fail(what);
}

KeyPtr NewEcKey() {
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) Fail("EC key generation");
  return key;
}

KeyPtr NewRsaKey() {
  KeyPtr key(EVP_RSA_gen(2048));
  if (!key) Fail("RSA key generation");
  return key;
}

std::string BioString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string CertPem(X509* x) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  Check(PEM_write_bio_X509(bio.get(), x), "PEM_write_bio_X509");
  return BioString(bio.get());
}

std::string KeyPem(EVP_PKEY* k) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  Check(PEM_write_bio_PrivateKey(bio.get(), k, nullptr, nullptr, 0, nullptr, nullptr), "PEM_write_bio_PrivateKey");
  return BioString(bio.get());
}

std::string CertDer(X509* x) {
  int len = i2d_X509(x, nullptr);
  if (len <= 0) Fail("i2d_X509");
  std::string der(static_cast<size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  i2d_X509(x, &p);
  return der;
}

X509Ptr ReadCert(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr x(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!x) ERR_clear_error();
  return x;
}

KeyPtr ReadKey(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  KeyPtr k(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!k) ERR_clear_error();
  return k;
}

void AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext) Fail("X509V3_EXT_conf_nid");
  Check(X509_add_ext(cert, ext.get(), -1), "X509_add_ext");
}

void RandomSerial(X509* cert) {
  unsigned char bytes[16];
  Check(RAND_bytes(bytes, sizeof bytes), "RAND_bytes");
  bytes[0] &= 0x7F;  // positive
  bytes[0] |= 0x01;  // and never zero / never shortened
  std::unique_ptr<BIGNUM, OpensslDeleter<BN_free>> bn(BN_bin2bn(bytes, sizeof bytes, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert))) Fail("serial");
}

// "a.example,127.0.0.1" -> "DNS:a.example,IP:127.0.0.1"
std::string SubjectAltNames(const std::string& names) {
  std::string out;
  size_t start = 0;
  while (start <= names.size()) {
    size_t comma = names.find(',', start);
    std::string name = names.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!name.empty()) {
      unsigned char buf[16];
      bool ip = inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
      if (!out.empty()) out += ',';
      out += (ip ? "IP:" : "DNS:") + name;
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

struct TestCa::Impl {
  X509Ptr cert;
  KeyPtr key;
};

std::unique_ptr<TestCa> TestCa::Create(const std::string& name) {
  KeyPtr key = NewEcKey();
  X509Ptr cert(X509_new());
  if (!cert) Fail("X509_new");
  Check(X509_set_version(cert.get(), 2), "X509_set_version");
  RandomSerial(cert.get());
  X509_NAME* subject = X509_get_subject_name(cert.get());
  Check(X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("Orchard Test"),
                                   -1, -1, 0),
        "subject O");
  Check(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(name.c_str()),
                                   -1, -1, 0),
        "subject CN");
  Check(X509_set_issuer_name(cert.get(), subject), "X509_set_issuer_name");
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) ||
      !X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 86400)) {
    Fail("CA validity");
  }
  Check(X509_set_pubkey(cert.get(), key.get()), "X509_set_pubkey");
  AddExt(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE");
  AddExt(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
  AddExt(cert.get(), cert.get(), NID_subject_key_identifier, "hash");
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) Fail("X509_sign (CA)");

  std::unique_ptr<TestCa> ca(new TestCa());
  ca->cert_pem_ = CertPem(cert.get());
  ca->key_pem_ = KeyPem(key.get());
  ca->impl_ = std::make_unique<Impl>();
  ca->impl_->cert = std::move(cert);
  ca->impl_->key = std::move(key);
  return ca;
}

std::unique_ptr<TestCa> TestCa::Load(const std::string& cert_pem, const std::string& key_pem) {
  X509Ptr cert = ReadCert(cert_pem);
  KeyPtr key = ReadKey(key_pem);
  if (!cert || !key) return nullptr;
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  std::unique_ptr<TestCa> ca(new TestCa());
  ca->cert_pem_ = cert_pem;
  ca->key_pem_ = key_pem;
  ca->impl_ = std::make_unique<Impl>();
  ca->impl_->cert = std::move(cert);
  ca->impl_->key = std::move(key);
  return ca;
}

TestCa::~TestCa() = default;

Identity TestCa::Issue(const IssueOptions& options) {
  KeyPtr key = options.rsa_key ? NewRsaKey() : NewEcKey();  // outside the lock: the slow part
  std::lock_guard<std::mutex> lock(mu_);
  X509* issuer = impl_->cert.get();

  X509Ptr cert(X509_new());
  if (!cert) Fail("X509_new");
  Check(X509_set_version(cert.get(), 2), "X509_set_version");
  RandomSerial(cert.get());
  if (!options.empty_subject) {
    Check(X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_UTF8,
                                     reinterpret_cast<const unsigned char*>(options.common_name.c_str()), -1, -1, 0),
          "subject CN");
    if (!options.uid.empty()) {
      Check(X509_NAME_add_entry_by_NID(X509_get_subject_name(cert.get()), NID_userId, MBSTRING_UTF8,
                                       reinterpret_cast<const unsigned char*>(options.uid.c_str()), -1, -1, 0),
            "subject UID");
    }
  }
  Check(X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer)), "X509_set_issuer_name");
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), static_cast<long>(options.not_before_offset_s)) ||
      !X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(options.not_after_offset_s))) {
    Fail("leaf validity");
  }
  Check(X509_set_pubkey(cert.get(), key.get()), "X509_set_pubkey");
  AddExt(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE");
  AddExt(cert.get(), issuer, NID_key_usage,
         options.rsa_key ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature,keyAgreement");
  std::string eku;
  if (options.client_auth_eku) eku = "clientAuth";
  if (options.server_auth_eku) eku += eku.empty() ? "serverAuth" : ",serverAuth";
  if (!eku.empty()) AddExt(cert.get(), issuer, NID_ext_key_usage, eku);
  std::string san = SubjectAltNames(options.dns_name);
  // RFC 5280: an empty subject requires a critical subjectAltName.
  if (!san.empty()) AddExt(cert.get(), issuer, NID_subject_alt_name, (options.empty_subject ? "critical," : "") + san);
  AddExt(cert.get(), issuer, NID_subject_key_identifier, "hash");
  AddExt(cert.get(), issuer, NID_authority_key_identifier, "keyid");  // issuer may lack an SKI
  if (X509_sign(cert.get(), impl_->key.get(), EVP_sha256()) <= 0) Fail("X509_sign (leaf)");

  Identity id;
  id.cert_pem = CertPem(cert.get());
  id.key_pem = KeyPem(key.get());
  id.cert_der = CertDer(cert.get());
  return id;
}

bool TestCa::WriteCertPem(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return false;
  out << cert_pem_;
  out.close();
  return static_cast<bool>(out);
}

std::string Identity::Rfc9440Header() const { return ":" + Base64Encode(cert_der) + ":"; }

std::string Identity::EscapedPemHeader() const { return PercentEncode(cert_pem); }

std::string Identity::MdmSignature(std::string_view body, bool sha1) const {
  return MdmSignatureWith(body, sha1 ? "SHA1" : "SHA256");
}

std::string Identity::MdmSignatureWith(std::string_view body, const char* digest_name) const {
  const EVP_MD* digest = EVP_get_digestbyname(digest_name);
  if (!digest) Fail("MdmSignatureWith: unknown digest");
  X509Ptr cert = ReadCert(cert_pem);
  KeyPtr key = ReadKey(key_pem);
  if (!cert || !key) Fail("MdmSignature: bad identity PEM");

  constexpr unsigned kFlags = CMS_DETACHED | CMS_BINARY | CMS_PARTIAL;
  CmsPtr cms(CMS_sign(nullptr, nullptr, nullptr, nullptr, kFlags));
  if (!cms) Fail("CMS_sign");
  // Add the signer explicitly so the digest really is the one asked for.
  if (!CMS_add1_signer(cms.get(), cert.get(), key.get(), digest,
                       CMS_BINARY | CMS_NOSMIMECAP)) {
    Fail("CMS_add1_signer");
  }
  static constexpr char kEmpty[] = "";
  BioPtr data(BIO_new_mem_buf(body.empty() ? kEmpty : body.data(), static_cast<int>(body.size())));
  Check(CMS_final(cms.get(), data.get(), nullptr, CMS_DETACHED | CMS_BINARY), "CMS_final");

  int len = i2d_CMS_ContentInfo(cms.get(), nullptr);
  if (len <= 0) Fail("i2d_CMS_ContentInfo");
  std::string der(static_cast<size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  i2d_CMS_ContentInfo(cms.get(), &p);
  return Base64Encode(der);
}

std::string Identity::Sha256Hex() const { return orchard::Sha256Hex(cert_der); }

std::string Identity::Pkcs12(const std::string& password) const {
  BioPtr cb(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  X509Ptr cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  BioPtr kb(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  KeyPtr key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!cert || !key) Fail("Pkcs12: unreadable certificate or key");
  PKCS12* p12 = PKCS12_create(password.c_str(), "push", key.get(), cert.get(), nullptr, 0, 0, 0, 0, 0);
  if (!p12) Fail("PKCS12_create");
  unsigned char* der = nullptr;
  const int len = i2d_PKCS12(p12, &der);
  std::string out(reinterpret_cast<char*>(der), len > 0 ? static_cast<size_t>(len) : 0);
  OPENSSL_free(der);
  PKCS12_free(p12);
  return out;
}

}  // namespace orchard::testing
