#include "support/scep_client.h"

#include <curl/curl.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdlib>
#include <ctime>
#include <optional>
#include <mutex>
#include <sstream>

#include "util/encoding.h"
#include "util/openssl_ptr.h"

namespace orchard::testing {
namespace {

using ReqPtr = std::unique_ptr<X509_REQ, OpensslDeleter<X509_REQ_free>>;
using ObjPtr = std::unique_ptr<ASN1_OBJECT, OpensslDeleter<ASN1_OBJECT_free>>;
void FreeStack(STACK_OF(X509) * s) { sk_X509_free(s); }
using StackPtr = std::unique_ptr<STACK_OF(X509), OpensslDeleter<FreeStack>>;
void FreeStackAll(STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); }
using OwnedStackPtr = std::unique_ptr<STACK_OF(X509), OpensslDeleter<FreeStackAll>>;

// SCEP attribute OIDs as objects (no NIDs registered: independent of the server).
constexpr const char* kMessageType = "2.16.840.1.113733.1.9.2";
constexpr const char* kPkiStatus = "2.16.840.1.113733.1.9.3";
constexpr const char* kFailInfo = "2.16.840.1.113733.1.9.4";
constexpr const char* kSenderNonce = "2.16.840.1.113733.1.9.5";
constexpr const char* kRecipientNonce = "2.16.840.1.113733.1.9.6";
constexpr const char* kTransactionId = "2.16.840.1.113733.1.9.7";

Status Ossl(const std::string& what) {
  char buf[256] = "";
  ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
  ERR_clear_error();
  return Status::Internal("scep client: " + what + ": " + buf);
}

ObjPtr Obj(const char* oid) { return ObjPtr(OBJ_txt2obj(oid, 1)); }

std::string Bio(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return n > 0 ? std::string(p, static_cast<size_t>(n)) : std::string();
}

template <typename T, typename F>
std::string Der(T* x, F i2d) {
  unsigned char* p = nullptr;
  int n = i2d(x, &p);
  if (n <= 0) return {};
  std::string s(reinterpret_cast<char*>(p), static_cast<size_t>(n));
  OPENSSL_free(p);
  return s;
}

std::string Pem(X509* x) {
  BioPtr b(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(b.get(), x);
  return Bio(b.get());
}

std::string KeyPem(EVP_PKEY* k) {
  BioPtr b(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr);
  return Bio(b.get());
}

Result<KeyPtr> MakeKey(const ScepRequest& r) {
  if (!r.key_pem.empty()) {
    BioPtr b(BIO_new_mem_buf(r.key_pem.data(), static_cast<int>(r.key_pem.size())));
    KeyPtr k(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
    if (!k) return Ossl("key_pem");
    return k;
  }
  KeyPtr k;
  switch (r.key.type) {
    case ScepKeyType::kRsa: k.reset(EVP_RSA_gen(static_cast<unsigned>(r.key.rsa_bits))); break;
    case ScepKeyType::kEcP256: k.reset(EVP_EC_gen("P-256")); break;
    case ScepKeyType::kEcP384: k.reset(EVP_EC_gen("P-384")); break;
  }
  if (!k) return Ossl("key generation");
  return k;
}

Status FillName(X509_NAME* name, const std::string& subject) {
  std::stringstream ss(subject);
  std::string part;
  while (std::getline(ss, part, ',')) {
    auto eq = part.find('=');
    if (eq == std::string::npos) return Status::InvalidArgument("subject part without '=': " + part);
    std::string k = part.substr(0, eq), v = part.substr(eq + 1);
    if (X509_NAME_add_entry_by_txt(name, k.c_str(), MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(v.data()),
                                   static_cast<int>(v.size()), -1, 0) != 1)
      return Ossl("subject " + k);
  }
  return Status::Ok();
}

std::optional<std::string> Attr(CMS_SignerInfo* si, const char* oid, int type) {
  ObjPtr o = Obj(oid);
  auto* s = static_cast<ASN1_STRING*>(CMS_signed_get0_data_by_OBJ(si, o.get(), -3, type));
  if (s == nullptr) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
}

size_t Collect(char* p, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(p, size * n);
  return size * n;
}

}  // namespace

struct ScepClient::Impl {
  std::string url;
  CURL* curl = nullptr;
  std::string ca_der;
  X509Ptr ca;                  // ca_der parsed once
  std::string key_pem;         // the last ScepRequest::key_pem, parsed once (OpenSSL 3.0 decoding is slow)
  KeyPtr key;

  // The request's key: parsed once per distinct key_pem, or null to generate one.
  Result<KeyPtr> GivenKey(const std::string& pem) {
    if (pem.empty()) return KeyPtr();
    if (!key || pem != key_pem) {
      BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
      KeyPtr k(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
      if (!k) return Ossl("key_pem");
      key = std::move(k);
      key_pem = pem;
    }
    EVP_PKEY_up_ref(key.get());
    return KeyPtr(key.get());
  }

  Result<std::pair<long, std::string>> Call(const std::string& query, const std::string* post) {
    if (!curl) curl = curl_easy_init();
    if (!curl) return Status::Internal("curl_easy_init");
    std::string body;
    curl_easy_reset(curl);
    const std::string full = url + "?" + query;
    curl_easy_setopt(curl, CURLOPT_URL, full.c_str());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    struct curl_slist* headers = nullptr;
    if (post) {
      headers = curl_slist_append(headers, "Content-Type: application/x-pki-message");
      curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, post->data());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(post->size()));
    }
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) return Status::Io(std::string("scep client: HTTP: ") + curl_easy_strerror(rc));
    return std::make_pair(status, std::move(body));
  }
};

ScepClient::ScepClient(std::string url) : impl_(std::make_unique<Impl>()) { impl_->url = std::move(url); }
ScepClient::~ScepClient() {
  if (impl_->curl) curl_easy_cleanup(impl_->curl);
}

Result<std::string> ScepClient::GetCaCaps() {
  auto r = impl_->Call("operation=GetCACaps", nullptr);
  if (!r.ok()) return r.status();
  if (r->first != 200) return Status::Unavailable("GetCACaps: HTTP " + std::to_string(r->first));
  return r->second;
}

Result<std::string> ScepClient::GetCaCert() {
  if (!impl_->ca_der.empty()) return impl_->ca_der;
  auto r = impl_->Call("operation=GetCACert", nullptr);
  if (!r.ok()) return r.status();
  if (r->first != 200) return Status::Unavailable("GetCACert: HTTP " + std::to_string(r->first));
  impl_->ca_der = r->second;
  return impl_->ca_der;
}

Result<std::pair<long, std::string>> ScepClient::PostRaw(const std::string& body) {
  return impl_->Call("operation=PKIOperation", &body);
}

namespace {

struct Built {
  std::string der, txid, nonce;
  KeyPtr key;
  X509Ptr signer;  // the certificate the request was signed with (the answer is enveloped to it)
};

Result<Built> Build(const ScepRequest& r, X509* ca, KeyPtr given_key) {
  Built out;
  if (given_key) {
    out.key = std::move(given_key);
  } else {
    auto key = MakeKey(r);
    if (!key.ok()) return key.status();
    out.key = std::move(key.value());
  }
  const EVP_MD* md = EVP_get_digestbyname(r.digest.c_str());
  if (!md) return Status::InvalidArgument("unknown digest " + r.digest);
  // PKCS#10 with the challenge.
  ReqPtr req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  ORCHARD_RETURN_IF_ERROR(FillName(X509_REQ_get_subject_name(req.get()), r.subject));
  X509_REQ_set_pubkey(req.get(), out.key.get());
  if (!r.challenge.empty() &&
      X509_REQ_add1_attr_by_NID(req.get(), NID_pkcs9_challengePassword, MBSTRING_UTF8,
                                reinterpret_cast<const unsigned char*>(r.challenge.data()),
                                static_cast<int>(r.challenge.size())) != 1)
    return Ossl("challengePassword");
  if (X509_REQ_sign(req.get(), out.key.get(), EVP_sha256()) <= 0) return Ossl("CSR signature");
  const std::string csr = Der(req.get(), i2d_X509_REQ);
  // The signer: the existing certificate (RenewalReq) or a self-signed one for the new key.
  EVP_PKEY* sign_key = out.key.get();
  KeyPtr renew_key;
  if (r.renew_with) {
    BioPtr cb(BIO_new_mem_buf(r.renew_with->cert_pem.data(), static_cast<int>(r.renew_with->cert_pem.size())));
    out.signer.reset(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
    BioPtr kb(BIO_new_mem_buf(r.renew_with->key_pem.data(), static_cast<int>(r.renew_with->key_pem.size())));
    renew_key.reset(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
    if (!out.signer || !renew_key) return Ossl("renew_with");
    sign_key = renew_key.get();
  } else {
    out.signer.reset(X509_new());
    X509* s = out.signer.get();
    X509_set_version(s, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(s), static_cast<long>(std::time(nullptr)));
    X509_set_subject_name(s, X509_REQ_get_subject_name(req.get()));
    X509_set_issuer_name(s, X509_REQ_get_subject_name(req.get()));
    X509_gmtime_adj(X509_getm_notBefore(s), -3600);
    X509_gmtime_adj(X509_getm_notAfter(s), 3600);
    X509_set_pubkey(s, out.key.get());
    if (X509_sign(s, out.key.get(), EVP_sha256()) <= 0) return Ossl("self-signed signer");
  }
  // pkcsPKIEnvelope: the CSR enveloped to the CA.
  const EVP_CIPHER* cipher = EVP_get_cipherbyname(r.cipher.c_str());
  if (!cipher) return Status::InvalidArgument("unknown cipher " + r.cipher);
  StackPtr recips(sk_X509_new_null());
  sk_X509_push(recips.get(), ca);
  BioPtr csr_bio(BIO_new_mem_buf(csr.data(), static_cast<int>(csr.size())));
  CmsPtr env(CMS_encrypt(recips.get(), csr_bio.get(), cipher, CMS_BINARY));
  if (!env) return Ossl("envelope");
  const std::string env_der = Der(env.get(), i2d_CMS_ContentInfo);
  // transactionID: hex SHA-256 of the public key (RFC 8894 3.2.1.1); senderNonce: 16 random bytes.
  unsigned char* spki = nullptr;
  int spki_len = i2d_PUBKEY(out.key.get(), &spki);
  out.txid = Sha256Hex(std::string_view(reinterpret_cast<char*>(spki), static_cast<size_t>(spki_len)));
  OPENSSL_free(spki);
  unsigned char nonce[16];
  RAND_bytes(nonce, sizeof nonce);
  out.nonce.assign(reinterpret_cast<char*>(nonce), sizeof nonce);
  const std::string type = !r.message_type.empty() ? r.message_type : (r.renew_with ? "17" : "19");
  CmsPtr cms(CMS_sign(nullptr, nullptr, nullptr, nullptr, CMS_PARTIAL | CMS_BINARY));
  CMS_SignerInfo* si = CMS_add1_signer(cms.get(), out.signer.get(), sign_key, md, CMS_BINARY | CMS_NOSMIMECAP);
  if (!si) return Ossl("signer");
  ObjPtr o_type = Obj(kMessageType), o_tx = Obj(kTransactionId), o_nonce = Obj(kSenderNonce);
  if (CMS_signed_add1_attr_by_OBJ(si, o_type.get(), V_ASN1_PRINTABLESTRING, type.data(), static_cast<int>(type.size())) != 1 ||
      CMS_signed_add1_attr_by_OBJ(si, o_tx.get(), V_ASN1_PRINTABLESTRING, out.txid.data(), static_cast<int>(out.txid.size())) != 1 ||
      CMS_signed_add1_attr_by_OBJ(si, o_nonce.get(), V_ASN1_OCTET_STRING, nonce, sizeof nonce) != 1)
    return Ossl("attributes");
  BioPtr content(BIO_new_mem_buf(env_der.data(), static_cast<int>(env_der.size())));
  if (CMS_final(cms.get(), content.get(), nullptr, CMS_BINARY) != 1) return Ossl("CMS_final");
  out.der = Der(cms.get(), i2d_CMS_ContentInfo);
  if (r.corrupt_signature && !out.der.empty()) out.der.back() = static_cast<char>(out.der.back() ^ 0x5a);
  return out;
}

}  // namespace

Result<X509*> ScepClient::CaCertificate() {
  auto der = GetCaCert();
  if (!der.ok()) return der.status();
  if (!impl_->ca) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(der->data());
    impl_->ca.reset(d2i_X509(nullptr, &p, static_cast<long>(der->size())));
    if (!impl_->ca) return Ossl("CA certificate");
  }
  return impl_->ca.get();
}

Result<std::string> ScepClient::BuildMessage(const ScepRequest& request, std::string* key_pem) {
  auto ca = CaCertificate();
  if (!ca.ok()) return ca.status();
  auto given = impl_->GivenKey(request.key_pem);
  if (!given.ok()) return given.status();
  auto b = Build(request, *ca, std::move(given.value()));
  if (!b.ok()) return b.status();
  if (key_pem) *key_pem = KeyPem(b->key.get());
  return std::move(b->der);
}

Result<ScepResult> ScepClient::Enroll(const ScepRequest& request) {
  auto ca_der = GetCaCert();
  if (!ca_der.ok()) return ca_der.status();
  auto ca = CaCertificate();
  if (!ca.ok()) return ca.status();
  auto given = impl_->GivenKey(request.key_pem);
  if (!given.ok()) return given.status();
  auto built = Build(request, *ca, std::move(given.value()));
  if (!built.ok()) return built.status();
  Result<std::pair<long, std::string>> answer = Status::Internal("unsent");
  if (request.use_get)
    answer = impl_->Call("operation=PKIOperation&message=" + PercentEncode(Base64Encode(built->der)), nullptr);
  else
    answer = impl_->Call("operation=PKIOperation", &built->der);
  if (!answer.ok()) return answer.status();
  ScepResult out;
  out.http_status = answer->first;
  out.transaction_id = built->txid;
  if (answer->first != 200) {
    out.body = answer->second;
    return out;
  }
  // The CertRep: signed by the CA (exactly its certificate), echoing our transaction and nonce.
  const std::string& rep = answer->second;
  const unsigned char* p = reinterpret_cast<const unsigned char*>(rep.data());
  CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(rep.size())));
  if (!cms) return Ossl("CertRep is not CMS");
  BioPtr content(BIO_new(BIO_s_mem()));
  if (CMS_verify(cms.get(), nullptr, nullptr, nullptr, content.get(), CMS_NO_SIGNER_CERT_VERIFY | CMS_BINARY) != 1)
    return Ossl("CertRep signature");
  StackPtr signers(CMS_get0_signers(cms.get()));
  if (!signers || sk_X509_num(signers.get()) != 1) return Status::Internal("CertRep: not one signer");
  const std::string signer_der = Der(sk_X509_value(signers.get(), 0), i2d_X509);
  if (signer_der != *ca_der) return Status::Internal("CertRep not signed by the CA certificate");
  CMS_SignerInfo* si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms.get()), 0);
  auto type = Attr(si, kMessageType, V_ASN1_PRINTABLESTRING);
  auto tx = Attr(si, kTransactionId, V_ASN1_PRINTABLESTRING);
  auto status = Attr(si, kPkiStatus, V_ASN1_PRINTABLESTRING);
  auto rnonce = Attr(si, kRecipientNonce, V_ASN1_OCTET_STRING);
  auto snonce = Attr(si, kSenderNonce, V_ASN1_OCTET_STRING);
  if (!type || *type != "3") return Status::Internal("CertRep messageType is not 3");
  if (!tx || *tx != built->txid) return Status::Internal("CertRep transactionID does not match");
  if (!rnonce || *rnonce != built->nonce) return Status::Internal("CertRep recipientNonce is not our senderNonce");
  if (!snonce || snonce->size() < 8) return Status::Internal("CertRep without senderNonce");
  if (!status) return Status::Internal("CertRep without pkiStatus");
  out.pki_status = std::atoi(status->c_str());
  if (out.pki_status == 2) {
    auto fi = Attr(si, kFailInfo, V_ASN1_PRINTABLESTRING);
    if (!fi) return Status::Internal("FAILURE without failInfo");
    out.fail_info = std::atoi(fi->c_str());
    return out;
  }
  if (out.pki_status != 0) return out;
  // SUCCESS: the envelope (to our signer certificate) holds a certs-only SignedData.
  const std::string env_der = Bio(content.get());
  p = reinterpret_cast<const unsigned char*>(env_der.data());
  CmsPtr env(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(env_der.size())));
  if (!env) return Ossl("CertRep content is not CMS");
  EVP_PKEY* dec_key = built->key.get();
  KeyPtr renew_key;
  if (request.renew_with) {  // the answer is enveloped to the certificate that signed the request
    BioPtr kb(BIO_new_mem_buf(request.renew_with->key_pem.data(), static_cast<int>(request.renew_with->key_pem.size())));
    renew_key.reset(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
    dec_key = renew_key.get();
  }
  BioPtr plain(BIO_new(BIO_s_mem()));
  if (CMS_decrypt(env.get(), dec_key, built->signer.get(), nullptr, plain.get(), CMS_BINARY) != 1)
    return Ossl("CertRep envelope");
  const std::string deg = Bio(plain.get());
  p = reinterpret_cast<const unsigned char*>(deg.data());
  CmsPtr certs_only(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(deg.size())));
  if (!certs_only) return Ossl("certs-only");
  OwnedStackPtr certs(CMS_get1_certs(certs_only.get()));
  if (!certs || sk_X509_num(certs.get()) != 1) return Status::Internal("certs-only must hold one certificate");
  X509* issued = sk_X509_value(certs.get(), 0);
  out.identity.cert_pem = Pem(issued);
  out.identity.cert_der = Der(issued, i2d_X509);
  out.identity.key_pem = KeyPem(built->key.get());
  return out;
}

Result<ScepResult> Enroll(const std::string& url, const std::string& challenge, ScepKeySpec key,
                          const std::string& subject, const Identity* renew_with) {
  ScepClient client(url);
  ScepRequest r;
  r.challenge = challenge;
  r.key = key;
  r.subject = subject;
  r.renew_with = renew_with;
  return client.Enroll(r);
}

}  // namespace orchard::testing
