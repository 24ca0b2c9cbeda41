#include "enroll/scep.h"

#include <openssl/cms.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>

#include "enroll/ossl.h"
#include "log/log.h"
#include "util/encoding.h"

namespace orchard::enroll {

const char kCaCaps[] = "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nSCEPStandard\nRenewal\n";

namespace {

constexpr const char* kLog = "scep";
constexpr size_t kMaxTransactionId = 256;
constexpr size_t kMaxChallenge = 1024;
constexpr int kMaxSubjectEntries = 16;
constexpr int kMaxSubjectDer = 1024;
constexpr int kMaxRsaBits = 8192;
// RFC 8894 messageType values.
constexpr std::string_view kCertRep = "3", kRenewalReq = "17", kPkcsReq = "19";

using CmsPtr = std::unique_ptr<CMS_ContentInfo, OpensslDeleter<CMS_ContentInfo_free>>;

// A string-valued attribute (PrintableString per RFC 8894; other string types tolerated).
std::optional<std::string> StringAttr(PKCS7_SIGNER_INFO* si, int nid) {
  ASN1_TYPE* t = PKCS7_get_signed_attribute(si, nid);
  if (t == nullptr) return std::nullopt;
  switch (t->type) {
    case V_ASN1_PRINTABLESTRING: case V_ASN1_UTF8STRING: case V_ASN1_IA5STRING:
    case V_ASN1_T61STRING: case V_ASN1_OCTET_STRING: {
      const ASN1_STRING* s = t->value.asn1_string;
      if (s == nullptr) return std::nullopt;
      return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
    }
    default: return std::nullopt;
  }
}

std::optional<std::string> OctetAttr(PKCS7_SIGNER_INFO* si, int nid) {
  ASN1_TYPE* t = PKCS7_get_signed_attribute(si, nid);
  if (t == nullptr || t->type != V_ASN1_OCTET_STRING || t->value.octet_string == nullptr) return std::nullopt;
  const ASN1_OCTET_STRING* s = t->value.octet_string;
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
}

bool Printable(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

// The challengePassword attribute of a CSR ("" if absent or not a string).
std::string ChallengePassword(X509_REQ* req) {
  int i = X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword, -1);
  if (i < 0) return {};
  X509_ATTRIBUTE* attr = X509_REQ_get_attr(req, i);
  ASN1_TYPE* t = attr ? X509_ATTRIBUTE_get0_type(attr, 0) : nullptr;
  if (t == nullptr) return {};
  switch (t->type) {
    case V_ASN1_PRINTABLESTRING: case V_ASN1_UTF8STRING: case V_ASN1_IA5STRING:
    case V_ASN1_T61STRING: case V_ASN1_BMPSTRING: case V_ASN1_UNIVERSALSTRING: {
      const ASN1_STRING* s = t->value.asn1_string;
      if (s == nullptr || ASN1_STRING_length(s) > static_cast<int>(kMaxChallenge)) return {};
      return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
    }
    default: return {};
  }
}

bool AllowedDigest(int nid) {
  return nid == NID_sha1 || nid == NID_sha224 || nid == NID_sha256 || nid == NID_sha384 || nid == NID_sha512;
}

bool AllowedCipher(int nid) {
  return nid == NID_aes_128_cbc || nid == NID_aes_192_cbc || nid == NID_aes_256_cbc || nid == NID_des_ede3_cbc;
}

// Why a requester's key is not acceptable ("" if it is).
std::string KeyProblem(EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA: {
      int bits = EVP_PKEY_get_bits(key);
      if (bits < 2048) return "RSA key of " + std::to_string(bits) + " bits (at least 2048 required)";
      if (bits > kMaxRsaBits) return "RSA key of " + std::to_string(bits) + " bits (at most 8192)";
      return {};
    }
    case EVP_PKEY_EC: {
      char group[64] = {0};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(key, group, sizeof group, &len) != 1) return "EC key without a named curve";
      std::string_view g(group, len);
      if (g == "prime256v1" || g == "P-256" || g == "secp384r1" || g == "P-384") return {};
      return "EC key on curve " + std::string(g) + " (P-256 or P-384 required)";
    }
    default: return std::string("key type ") + OBJ_nid2sn(EVP_PKEY_get_base_id(key)) + " (RSA or EC required)";
  }
}

// DER tag-length-value.
std::string Tlv(unsigned char tag, std::string_view content) {
  std::string out(1, static_cast<char>(tag));
  const size_t n = content.size();
  if (n < 0x80) {
    out.push_back(static_cast<char>(n));
  } else {
    std::string len;
    for (size_t v = n; v; v >>= 8) len.insert(len.begin(), static_cast<char>(v & 0xff));
    out.push_back(static_cast<char>(0x80 | len.size()));
    out += len;
  }
  out.append(content);
  return out;
}

// ContentInfo { signedData, [0] SignedData { 1, {}, { data }, [0] { cert }, {} } }: the
// degenerate certs-only SignedData of RFC 8894 3.3.2 around one certificate.
std::string CertsOnly(std::string_view cert_der) {
  static const std::string kSignedDataOid("\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02", 11);
  static const std::string kDataOid("\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01", 11);
  const std::string signed_data = Tlv(0x30, std::string("\x02\x01\x01", 3) + Tlv(0x31, "") + Tlv(0x30, kDataOid) +
                                             Tlv(0xa0, cert_der) + Tlv(0x31, ""));
  return Tlv(0x30, kSignedDataOid + Tlv(0xa0, signed_data));
}

ScepReply Http(int status, ScepOutcome outcome, std::string reason) {
  ScepReply r;
  r.status = status;
  r.content_type = "text/plain";
  r.body = reason + "\n";
  r.outcome = outcome;
  r.reason = std::move(reason);
  return r;
}

}  // namespace

const char* ScepOutcomeName(ScepOutcome o) {
  switch (o) {
    case ScepOutcome::kCaCaps: return "ca_caps";
    case ScepOutcome::kCaCert: return "ca_cert";
    case ScepOutcome::kIssued: return "issued";
    case ScepOutcome::kRenewed: return "renewed";
    case ScepOutcome::kUnparseable: return "unparseable";
    case ScepOutcome::kBadSignature: return "bad_signature";
    case ScepOutcome::kBadAlg: return "bad_alg";
    case ScepOutcome::kBadRequest: return "bad_request";
    case ScepOutcome::kChallengeMissing: return "challenge_missing";
    case ScepOutcome::kChallengeWrong: return "challenge_wrong";
    case ScepOutcome::kChallengeExpired: return "challenge_expired";
    case ScepOutcome::kChallengeReused: return "challenge_reused";
    case ScepOutcome::kRenewalRefused: return "renewal_refused";
    case ScepOutcome::kStorage: return "storage";
    case ScepOutcome::kBadHttp: return "bad_http";
    case ScepOutcome::kCount: break;
  }
  return "unknown";
}

const ScepNids& RegisterScepOids() {
  // Initialised once per process (thread-safe static); immutable afterwards.
  static const ScepNids kNids = [] {
    auto reg = [](const char* oid, const char* name) {
      int nid = OBJ_txt2nid(oid);
      if (nid == NID_undef) nid = OBJ_create(oid, name, name);
      if (nid == NID_undef) {  // someone registered the name for another OID: use the OID alone
        ERR_clear_error();
        nid = OBJ_create(oid, nullptr, nullptr);
      }
      ERR_clear_error();
      return nid;
    };
    ScepNids n{};
    n.message_type = reg("2.16.840.1.113733.1.9.2", "scepMessageType");
    n.pki_status = reg("2.16.840.1.113733.1.9.3", "scepPkiStatus");
    n.fail_info = reg("2.16.840.1.113733.1.9.4", "scepFailInfo");
    n.sender_nonce = reg("2.16.840.1.113733.1.9.5", "scepSenderNonce");
    n.recipient_nonce = reg("2.16.840.1.113733.1.9.6", "scepRecipientNonce");
    n.transaction_id = reg("2.16.840.1.113733.1.9.7", "scepTransactionID");
    return n;
  }();
  return kNids;
}

ScepServer::ScepServer(const ScepOptions& options, const ScepDeps& deps)
    : options_(options), d_(deps), nids_(RegisterScepOids()) {}

ScepReply ScepServer::Count(ScepReply reply) {
  counts_[static_cast<int>(reply.outcome)].fetch_add(1, std::memory_order_relaxed);
  if (reply.outcome == ScepOutcome::kIssued || reply.outcome == ScepOutcome::kRenewed ||
      reply.outcome == ScepOutcome::kCaCaps || reply.outcome == ScepOutcome::kCaCert)
    return reply;
  log::Warn(kLog, "event=scep_refused outcome={} http_status={} reason={}", ScepOutcomeName(reply.outcome),
            reply.status, log::Quote(reply.reason));
  return reply;
}

void ScepServer::RenderMetrics(std::string* out) const {
  *out += "# HELP orchard_scep_requests_total SCEP requests by outcome since start.\n";
  *out += "# TYPE orchard_scep_requests_total counter\n";
  for (int i = 0; i < static_cast<int>(ScepOutcome::kCount); ++i)
    *out += std::string("orchard_scep_requests_total{outcome=\"") + ScepOutcomeName(static_cast<ScepOutcome>(i)) +
            "\"} " + std::to_string(counts_[i].load(std::memory_order_relaxed)) + "\n";
}

ScepReply ScepServer::Handle(std::string_view method, std::string_view operation, std::string_view message,
                             std::string_view body) {
  if (method != "GET" && method != "POST" && method != "HEAD")
    return Count(Http(405, ScepOutcome::kBadHttp, "SCEP uses GET and POST"));
  if (operation == "GetCACaps") {
    ScepReply r;
    r.content_type = "text/plain";
    r.body = kCaCaps;
    r.outcome = ScepOutcome::kCaCaps;
    return Count(std::move(r));
  }
  if (operation == "GetCACert") {
    ScepReply r;
    r.content_type = "application/x-x509-ca-cert";
    r.body = d_.ca->cert_der();
    r.outcome = ScepOutcome::kCaCert;
    return Count(std::move(r));
  }
  if (operation == "PKIOperation") {
    if (method == "POST") {
      if (body.size() > options_.max_message_bytes)
        return Count(Http(413, ScepOutcome::kBadHttp, "PKIOperation message of " + std::to_string(body.size()) +
                                                          " bytes exceeds the limit"));
      return PkiOperation(body);
    }
    if (message.empty()) return Count(Http(400, ScepOutcome::kBadHttp, "PKIOperation via GET needs message="));
    if (message.size() > options_.max_message_bytes * 4 / 3 + 8)
      return Count(Http(413, ScepOutcome::kBadHttp, "PKIOperation message exceeds the limit"));
    auto der = Base64Decode(message);
    if (!der) return Count(Http(400, ScepOutcome::kBadHttp, "message= is not base64"));
    return PkiOperation(*der);
  }
  if (operation.empty()) return Count(Http(400, ScepOutcome::kBadHttp, "missing operation="));
  return Count(Http(400, ScepOutcome::kBadHttp, "unsupported SCEP operation"));
}

ScepReply ScepServer::PkiOperation(std::string_view der) {
  if (der.size() > options_.max_message_bytes)
    return Count(Http(413, ScepOutcome::kBadHttp, "PKIOperation message exceeds the limit"));
  ERR_clear_error();
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  Pkcs7Ptr p7(d2i_PKCS7(nullptr, &p, static_cast<long>(der.size())));
  if (!p7) return Count(Http(400, ScepOutcome::kUnparseable, "not a DER PKCS#7 message: " + TakeOpensslError()));
  if (!PKCS7_type_is_signed(p7.get()) || p7->d.sign == nullptr)
    return Count(Http(400, ScepOutcome::kUnparseable, "not a PKCS#7 SignedData"));
  STACK_OF(PKCS7_SIGNER_INFO)* sis = PKCS7_get_signer_info(p7.get());
  if (sis == nullptr || sk_PKCS7_SIGNER_INFO_num(sis) != 1)
    return Count(Http(400, ScepOutcome::kUnparseable, "SignedData must have exactly one signer"));
  PKCS7_SIGNER_INFO* si = sk_PKCS7_SIGNER_INFO_value(sis, 0);
  auto txid = StringAttr(si, nids_.transaction_id);
  auto nonce = OctetAttr(si, nids_.sender_nonce);
  if (!txid || txid->empty() || txid->size() > kMaxTransactionId || !Printable(*txid))
    return Count(Http(400, ScepOutcome::kUnparseable, "no usable transactionID attribute"));
  if (!nonce || nonce->size() < 8 || nonce->size() > 64)
    return Count(Http(400, ScepOutcome::kUnparseable, "no usable senderNonce attribute"));

  // From here every refusal is a SCEP CertRep with pkiStatus FAILURE.
  auto fail = [&](FailInfo info, ScepOutcome outcome, std::string reason) {
    ScepReply r = CertRep(*txid, *nonce, info, "", nullptr, 0);
    r.outcome = outcome;
    r.reason = "transaction_id=" + *txid + ": " + reason;
    return Count(std::move(r));
  };
  const auto message_type = StringAttr(si, nids_.message_type);
  if (!message_type) return fail(FailInfo::kBadRequest, ScepOutcome::kBadRequest, "no messageType attribute");
  const bool renewal = *message_type == kRenewalReq;
  if (!renewal && *message_type != kPkcsReq)
    return fail(FailInfo::kBadRequest, ScepOutcome::kBadRequest,
                "unsupported messageType " + (Printable(*message_type) ? *message_type : std::string("?")));
  const int digest_nid = si->digest_alg ? OBJ_obj2nid(si->digest_alg->algorithm) : NID_undef;
  if (!AllowedDigest(digest_nid))
    return fail(FailInfo::kBadAlg, ScepOutcome::kBadAlg,
                std::string("digest ") + (digest_nid == NID_undef ? "unknown" : OBJ_nid2sn(digest_nid)) + " refused");
  if (p7->d.sign->contents == nullptr || !PKCS7_type_is_data(p7->d.sign->contents))
    return fail(FailInfo::kBadRequest, ScepOutcome::kBadRequest, "SignedData does not carry data");

  BioPtr content(BIO_new(BIO_s_mem()));
  if (!content || PKCS7_verify(p7.get(), nullptr, nullptr, nullptr, content.get(), PKCS7_NOVERIFY | PKCS7_BINARY) != 1)
    return fail(FailInfo::kBadMessageCheck, ScepOutcome::kBadSignature, "signature does not verify: " + TakeOpensslError());
  CertStackPtr signers(PKCS7_get0_signers(p7.get(), nullptr, 0));
  X509* signer = signers && sk_X509_num(signers.get()) == 1 ? sk_X509_value(signers.get(), 0) : nullptr;
  if (signer == nullptr)
    return fail(FailInfo::kBadMessageCheck, ScepOutcome::kBadSignature, "no signer certificate: " + TakeOpensslError());
  if (KeyPtr k(X509_get_pubkey(signer)); !k || (EVP_PKEY_get_base_id(k.get()) != EVP_PKEY_RSA &&
                                                 EVP_PKEY_get_base_id(k.get()) != EVP_PKEY_EC))
    return fail(FailInfo::kBadAlg, ScepOutcome::kBadAlg, "the signer's key is neither RSA nor EC");

  // The pkcsPKIEnvelope: EnvelopedData addressed to the CA.
  const std::string inner = BioText(content.get());
  p = reinterpret_cast<const unsigned char*>(inner.data());
  Pkcs7Ptr env(d2i_PKCS7(nullptr, &p, static_cast<long>(inner.size())));
  if (!env || !PKCS7_type_is_enveloped(env.get()) || env->d.enveloped == nullptr ||
      env->d.enveloped->enc_data == nullptr || env->d.enveloped->enc_data->algorithm == nullptr)
    return fail(FailInfo::kBadRequest, ScepOutcome::kBadRequest, "content is not a PKCS#7 EnvelopedData");
  const int cipher_nid = OBJ_obj2nid(env->d.enveloped->enc_data->algorithm->algorithm);
  if (!AllowedCipher(cipher_nid))
    return fail(FailInfo::kBadAlg, ScepOutcome::kBadAlg,
                std::string("content cipher ") + (cipher_nid == NID_undef ? "unknown" : OBJ_nid2sn(cipher_nid)) +
                    " refused (AES-CBC or DES-EDE3-CBC)");
  BioPtr plain(BIO_new(BIO_s_mem()));
  if (!plain || PKCS7_decrypt(env.get(), d_.ca->key(), d_.ca->cert(), plain.get(), PKCS7_BINARY) != 1)
    return fail(FailInfo::kBadMessageCheck, ScepOutcome::kBadSignature,
                "cannot decrypt the envelope with the CA key: " + TakeOpensslError());
  const std::string csr_der = BioText(plain.get());
  p = reinterpret_cast<const unsigned char*>(csr_der.data());
  ReqPtr req(d2i_X509_REQ(nullptr, &p, static_cast<long>(csr_der.size())));
  if (!req || p != reinterpret_cast<const unsigned char*>(csr_der.data()) + csr_der.size())
    return fail(FailInfo::kBadRequest, ScepOutcome::kBadRequest, "the envelope does not hold one DER PKCS#10 request");
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (pub == nullptr) return fail(FailInfo::kBadRequest, ScepOutcome::kBadRequest, "the request has no usable public key");
  if (std::string why = KeyProblem(pub); !why.empty()) return fail(FailInfo::kBadAlg, ScepOutcome::kBadAlg, why);
  if (X509_REQ_verify(req.get(), pub) != 1)
    return fail(FailInfo::kBadMessageCheck, ScepOutcome::kBadSignature, "the request's self-signature does not verify");
  const X509_NAME* subject = X509_REQ_get_subject_name(req.get());
  if (subject == nullptr || X509_NAME_entry_count(subject) > kMaxSubjectEntries ||
      i2d_X509_NAME(subject, nullptr) > kMaxSubjectDer)
    return fail(FailInfo::kBadRequest, ScepOutcome::kBadRequest, "subject too large");

  const int64_t now = NowMillis();
  IssuedCert rec;
  std::optional<ChallengeClaim> claim;
  if (renewal) {
    const std::string signer_sha = Sha256Hex(CertDer(signer));
    auto old = d_.issued->BySha256(signer_sha);
    if (!old.ok()) return Count(Http(503, ScepOutcome::kStorage, "storage: " + old.status().message()));
    if (!old->has_value())
      return fail(FailInfo::kBadCertId, ScepOutcome::kRenewalRefused, "RenewalReq signed by a certificate Orchard did not issue");
    if ((*old)->revoked)
      return fail(FailInfo::kBadCertId, ScepOutcome::kRenewalRefused, "RenewalReq signed by revoked serial " + (*old)->serial_hex);
    if ((*old)->not_after_ms <= now)
      return fail(FailInfo::kBadTime, ScepOutcome::kRenewalRefused, "RenewalReq signed by expired serial " + (*old)->serial_hex);
    rec.udid = (*old)->udid;
    rec.enrollment_id = (*old)->enrollment_id;
    rec.renewed_from = (*old)->serial_hex;
    rec.renewed_from_sha256 = (*old)->sha256;
  } else {
    ChallengeCheck check = d_.challenges->Check(ChallengePassword(req.get()), now);
    if (!check.claim) {
      switch (check.refusal) {
        case ChallengeRefusal::kMissing:
          return fail(FailInfo::kBadRequest, ScepOutcome::kChallengeMissing, "no challengePassword");
        case ChallengeRefusal::kExpired:
          return fail(FailInfo::kBadRequest, ScepOutcome::kChallengeExpired, "challenge expired");
        case ChallengeRefusal::kReused:
          return fail(FailInfo::kBadRequest, ScepOutcome::kChallengeReused, "challenge already used");
        case ChallengeRefusal::kStorage:
          return Count(Http(503, ScepOutcome::kStorage, "storage failed while checking the challenge"));
        case ChallengeRefusal::kWrong:
          return fail(FailInfo::kBadRequest, ScepOutcome::kChallengeWrong, "wrong challenge");
      }
    }
    claim.emplace(std::move(*check.claim));
    rec.udid = claim->udid();
    if (!claim->renews_sha256().empty()) {  // a renewal profile's challenge (ctx:renewal_profile)
      rec.renewed_from_sha256 = claim->renews_sha256();
      auto old = d_.issued->BySha256(rec.renewed_from_sha256);
      if (old.ok() && old->has_value()) {
        rec.renewed_from = (*old)->serial_hex;
        rec.enrollment_id = (*old)->enrollment_id;
      }
    }
  }

  IssueRequest ir;
  ir.public_key = pub;
  ir.public_key_info = X509_REQ_get_X509_PUBKEY(req.get());
  ir.subject = subject;
  ir.validity_days = options_.cert_validity_days;
  ir.now_ms = now;
  auto issued = d_.ca->Issue(ir);
  if (!issued.ok()) return fail(FailInfo::kBadRequest, ScepOutcome::kBadRequest, "issuing: " + issued.status().message());
  rec.serial_hex = issued->serial_hex;
  rec.subject = issued->subject;
  rec.sha256 = issued->sha256;
  rec.not_before_ms = issued->not_before_ms;
  rec.not_after_ms = issued->not_after_ms;
  rec.issued_ms = now;
  store::Batch batch;
  d_.issued->Put(batch, rec);
  if (claim) claim->Consume(batch, now);
  if (Status st = d_.store->Write(batch); !st.ok())
    return Count(Http(st.code() == Code::kResourceExhausted ? 503 : 500, ScepOutcome::kStorage,
                      "storage: " + st.message()));
  claim.reset();  // consumed and committed: later uses read it as used

  ScepReply r = CertRep(*txid, *nonce, std::nullopt, issued->der, signer, cipher_nid);
  if (r.status != 200) {
    r.outcome = ScepOutcome::kStorage;
    return Count(std::move(r));
  }
  r.outcome = renewal ? ScepOutcome::kRenewed : ScepOutcome::kIssued;
  r.serial = rec.serial_hex;
  log::Info(kLog, "event=certificate_issued kind={} serial={} sha256={} subject={} udid={} renewed_from={} "
            "not_after_ms={} transaction_id={}", renewal ? "renewal" : "pkcsreq", rec.serial_hex, rec.sha256,
            log::Quote(rec.subject), log::Quote(rec.udid), rec.renewed_from, rec.not_after_ms, log::Quote(*txid));
  return Count(std::move(r));
}

ScepReply ScepServer::CertRep(const std::string& txid, const std::string& recipient_nonce,
                              std::optional<FailInfo> failure, const std::string& cert_der, X509* recipient,
                              int cipher_nid) {
  auto internal = [](std::string why) {
    ScepReply r;
    r.status = 500;
    r.content_type = "text/plain";
    r.body = "cannot build the SCEP answer\n";
    r.reason = std::move(why);
    return r;
  };
  std::string content;
  if (!failure) {
    // Degenerate certs-only SignedData holding the issued certificate (written directly:
    // parsing the certificate back would decode its key again)...
    const std::string deg_der = CertsOnly(cert_der);
    // ...enveloped to the requester with the cipher it used.
    const EVP_CIPHER* cipher = EVP_get_cipherbynid(cipher_nid);
    if (cipher == nullptr) cipher = EVP_aes_256_cbc();
    CertStackPtr recips(sk_X509_new_null());
    if (!recips || !sk_X509_push(recips.get(), recipient)) return internal("recipient stack");
    BioPtr in(BIO_new_mem_buf(deg_der.data(), static_cast<int>(deg_der.size())));
    CmsPtr env(CMS_encrypt(recips.get(), in.get(), cipher, CMS_BINARY));
    if (!env) return internal("envelope: " + TakeOpensslError());
    unsigned char* out = nullptr;
    int n = i2d_CMS_ContentInfo(env.get(), &out);
    if (n <= 0) return internal("envelope encoding: " + TakeOpensslError());
    content.assign(reinterpret_cast<char*>(out), static_cast<size_t>(n));
    OPENSSL_free(out);
  }
  unsigned char sender_nonce[16];
  if (RAND_bytes(sender_nonce, sizeof sender_nonce) != 1) return internal("RAND_bytes");
  CmsPtr cms(CMS_sign(nullptr, nullptr, nullptr, nullptr, CMS_PARTIAL | CMS_BINARY));
  if (!cms) return internal("CMS_sign: " + TakeOpensslError());
  CMS_SignerInfo* si = CMS_add1_signer(cms.get(), d_.ca->cert(), d_.ca->key(), EVP_sha256(), CMS_BINARY | CMS_NOSMIMECAP);
  if (si == nullptr) return internal("CMS_add1_signer: " + TakeOpensslError());
  const std::string status = failure ? "2" : "0";
  const std::string fail_info = failure ? std::to_string(static_cast<int>(*failure)) : "";
  bool ok = CMS_signed_add1_attr_by_NID(si, nids_.transaction_id, V_ASN1_PRINTABLESTRING, txid.data(),
                                        static_cast<int>(txid.size())) == 1 &&
            CMS_signed_add1_attr_by_NID(si, nids_.message_type, V_ASN1_PRINTABLESTRING, kCertRep.data(),
                                        static_cast<int>(kCertRep.size())) == 1 &&
            CMS_signed_add1_attr_by_NID(si, nids_.pki_status, V_ASN1_PRINTABLESTRING, status.data(),
                                        static_cast<int>(status.size())) == 1 &&
            CMS_signed_add1_attr_by_NID(si, nids_.sender_nonce, V_ASN1_OCTET_STRING, sender_nonce,
                                        sizeof sender_nonce) == 1 &&
            CMS_signed_add1_attr_by_NID(si, nids_.recipient_nonce, V_ASN1_OCTET_STRING, recipient_nonce.data(),
                                        static_cast<int>(recipient_nonce.size())) == 1;
  if (ok && failure)
    ok = CMS_signed_add1_attr_by_NID(si, nids_.fail_info, V_ASN1_PRINTABLESTRING, fail_info.data(),
                                     static_cast<int>(fail_info.size())) == 1;
  if (!ok) return internal("CertRep attributes: " + TakeOpensslError());
  BioPtr data(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
  if (!data || CMS_final(cms.get(), data.get(), nullptr, CMS_BINARY) != 1)
    return internal("CMS_final: " + TakeOpensslError());
  unsigned char* out = nullptr;
  int n = i2d_CMS_ContentInfo(cms.get(), &out);
  if (n <= 0) return internal("CertRep encoding: " + TakeOpensslError());
  ScepReply r;
  r.status = 200;
  r.content_type = "application/x-pki-message";
  r.body.assign(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  OPENSSL_free(out);
  return r;
}

}  // namespace orchard::enroll
