#include "enroll/profile.h"

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstring>

#include "log/log.h"
#include "util/encoding.h"
#include "util/openssl_ptr.h"

namespace orchard::enroll {
namespace {

using plist::Array;
using plist::Value;

constexpr const char kTopicPrefix[] = "com.apple.mgmt.";

void FreeCertStack(STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); }
using CertStackPtr = std::unique_ptr<STACK_OF(X509), OpensslDeleter<FreeCertStack>>;

// The oldest queued OpenSSL error's reason; clears the thread's queue.
std::string TakeOpensslError() {
  unsigned long e = ERR_get_error();
  const char* reason = e ? ERR_reason_error_string(e) : nullptr;
  std::string out = reason ? reason : (e ? "error " + std::to_string(ERR_GET_REASON(e)) : "unknown error");
  ERR_clear_error();
  return out;
}

BioPtr MemBio(std::string_view bytes) {
  return BioPtr(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
}

std::string BioBytes(BIO* bio) {
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(bio, &mem);
  return mem ? std::string(mem->data, mem->length) : std::string();
}

std::string NameLine(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB) < 0) {
    ERR_clear_error();
    return {};
  }
  return BioBytes(bio.get());
}

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool IsHttpUrl(std::string_view url) {
  std::string_view rest;
  if (StartsWith(url, "https://")) rest = url.substr(8);
  else if (StartsWith(url, "http://")) rest = url.substr(7);
  else return false;
  if (rest.empty() || rest.front() == '/') return false;
  return std::none_of(url.begin(), url.end(), [](char c) { return c <= ' ' || c == 0x7f; });
}

// The keys every payload inside PayloadContent carries (CommonPayloadKeys).
Value Payload(const std::string& type, const std::string& identifier, const std::string& uuid,
              const std::string& display_name) {
  Value p = Value::MakeDict();
  p.Set("PayloadType", Value::String(type));
  p.Set("PayloadVersion", Value::Integer(1));
  p.Set("PayloadIdentifier", Value::String(identifier));
  p.Set("PayloadUUID", Value::String(uuid));
  p.Set("PayloadDisplayName", Value::String(display_name));
  return p;
}

std::string Kind(const ProfileSettings& s, std::string_view kind) {
  return s.identifier + "." + std::string(kind);
}

Status CheckSettings(const ProfileSettings& s) {
  auto bad = [](const std::string& m) { return Status::InvalidArgument("enrollment profile: " + m); };
  if (s.identifier.empty()) return bad("identifier is empty");
  if (!IsHttpUrl(s.server_url)) return bad("server_url must be an https:// URL, got '" + s.server_url + "'");
  if (!s.checkin_url.empty() && !IsHttpUrl(s.checkin_url))
    return bad("checkin_url must be an https:// URL, got '" + s.checkin_url + "'");
  if (!StartsWith(s.topic, kTopicPrefix) || s.topic.size() == sizeof(kTopicPrefix) - 1)
    return bad("topic must start with com.apple.mgmt., got '" + s.topic + "'");
  if (s.access_rights <= 0 || s.access_rights > 8191) return bad("access_rights must be 1..8191");
  // Apple: specify 1 if you specify 2, 64 if you specify 128.
  if ((s.access_rights & 2) && !(s.access_rights & 1)) return bad("access_rights with 2 needs 1");
  if ((s.access_rights & 128) && !(s.access_rights & 64)) return bad("access_rights with 128 needs 64");
  if (s.identity == IdentityKind::kScep) {
    if (!IsHttpUrl(s.scep.url)) return bad("scep url must be an http(s):// URL, got '" + s.scep.url + "'");
    if (s.scep.key_size != 1024 && s.scep.key_size != 2048 && s.scep.key_size != 4096)
      return bad("scep key size must be 1024, 2048 or 4096");
    if (s.scep.key_usage < 0 || s.scep.key_usage > 5) return bad("scep key usage must be 0, 1, 4 or 5");
    for (const auto& part : s.scep.subject)
      if (part.name.empty()) return bad("scep subject part with an empty name");
  } else {
    if (s.pkcs12.der.empty()) return bad("the PKCS#12 identity is empty");
  }
  for (const auto& a : s.anchors)
    if (a.der.empty()) return bad("an anchor certificate is empty");
  return Status::Ok();
}

std::string ScepUuid(const ProfileSettings& s) {
  return StableUuid({s.identifier, "scep", s.scep.url, Sha256(s.scep.ca_cert_der)});
}

}  // namespace

const char* IdentityKindName(IdentityKind kind) {
  return kind == IdentityKind::kScep ? "scep" : "pkcs12";
}

std::string StableUuid(const std::vector<std::string_view>& parts) {
  std::string material = "orchard.enroll.uuid";
  for (auto p : parts) {
    material += '\0';
    material += std::to_string(p.size());
    material += ':';
    material.append(p.data(), p.size());
  }
  std::string h = Sha256(material);
  h[6] = static_cast<char>((h[6] & 0x0f) | 0x50);  // version 5 layout (name-based)
  h[8] = static_cast<char>((h[8] & 0x3f) | 0x80);  // RFC 4122 variant
  std::string hex = HexEncode(std::string_view(h).substr(0, 16));
  std::transform(hex.begin(), hex.end(), hex.begin(), [](char c) { return char(std::toupper(c)); });
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" +
         hex.substr(20);
}

std::string IdentityPayloadUuid(const ProfileSettings& s) {
  if (s.identity == IdentityKind::kScep) return ScepUuid(s);
  return StableUuid({s.identifier, "pkcs12", s.pkcs12.file_name});
}

Result<plist::Value> BuildProfile(const ProfileSettings& s) {
  ORCHARD_RETURN_IF_ERROR(CheckSettings(s));
  Array content;
  const std::string identity_uuid = IdentityPayloadUuid(s);

  if (s.identity == IdentityKind::kScep) {
    Value scep = Payload("com.apple.security.scep", Kind(s, "scep"), identity_uuid, "Device identity (SCEP)");
    scep.Set("PayloadDescription", Value::String("Requests this device's identity certificate from the MDM server."));
    Value c = Value::MakeDict();
    c.Set("URL", Value::String(s.scep.url));
    if (!s.scep.name.empty()) c.Set("Name", Value::String(s.scep.name));
    if (!s.scep.subject.empty()) {
      Array subject;
      for (const auto& part : s.scep.subject) {
        Array pair{Value::String(part.name), Value::String(part.value)};
        subject.push_back(Value::MakeArray({Value::MakeArray(std::move(pair))}));
      }
      c.Set("Subject", Value::MakeArray(std::move(subject)));
    }
    if (!s.scep.challenge.empty()) c.Set("Challenge", Value::String(s.scep.challenge));
    c.Set("Keysize", Value::Integer(s.scep.key_size));
    c.Set("Key Type", Value::String("RSA"));
    c.Set("Key Usage", Value::Integer(s.scep.key_usage));
    c.Set("Retries", Value::Integer(s.scep.retries));
    c.Set("RetryDelay", Value::Integer(s.scep.retry_delay_seconds));
    if (!s.scep.ca_cert_der.empty()) c.Set("CAFingerprint", Value::DataValue(Sha256(s.scep.ca_cert_der)));
    scep.Set("PayloadContent", std::move(c));
    content.push_back(std::move(scep));
  } else {
    Value p12 = Payload("com.apple.security.pkcs12", Kind(s, "pkcs12"), identity_uuid, "Device identity");
    if (!s.pkcs12.file_name.empty())
      p12.Set("PayloadCertificateFileName", Value::String(s.pkcs12.file_name));
    p12.Set("PayloadContent", Value::DataValue(s.pkcs12.der));
    if (!s.pkcs12.password.empty()) p12.Set("Password", Value::String(s.pkcs12.password));
    content.push_back(std::move(p12));
  }

  for (const auto& a : s.anchors) {
    const std::string fp = Sha256Hex(a.der);
    Value root = Payload("com.apple.security.root", Kind(s, "anchor." + fp.substr(0, 16)),
                         StableUuid({s.identifier, "anchor", fp}), "Trusted certificate");
    if (!a.file_name.empty()) root.Set("PayloadCertificateFileName", Value::String(a.file_name));
    root.Set("PayloadContent", Value::DataValue(a.der));
    content.push_back(std::move(root));
  }

  Value mdm = Payload("com.apple.mdm", Kind(s, "mdm"),
                      StableUuid({s.identifier, "mdm", s.server_url, s.checkin_url, s.topic}), "Device management");
  mdm.Set("IdentityCertificateUUID", Value::String(identity_uuid));
  mdm.Set("Topic", Value::String(s.topic));
  mdm.Set("ServerURL", Value::String(s.server_url));
  if (!s.checkin_url.empty()) mdm.Set("CheckInURL", Value::String(s.checkin_url));
  mdm.Set("SignMessage", Value::Bool(s.sign_message));
  mdm.Set("AccessRights", Value::Integer(s.access_rights));
  mdm.Set("CheckOutWhenRemoved", Value::Bool(s.check_out_when_removed));
  if (!s.server_capabilities.empty()) {
    Array caps;
    for (const auto& cap : s.server_capabilities) caps.push_back(Value::String(cap));
    mdm.Set("ServerCapabilities", Value::MakeArray(std::move(caps)));
  }
  content.push_back(std::move(mdm));

  Value top = Value::MakeDict();
  top.Set("PayloadType", Value::String("Configuration"));
  top.Set("PayloadVersion", Value::Integer(1));
  top.Set("PayloadIdentifier", Value::String(s.identifier));
  top.Set("PayloadUUID", Value::String(StableUuid({s.identifier, "profile", s.server_url, s.topic})));
  top.Set("PayloadDisplayName", Value::String(s.display_name));
  if (!s.organization.empty()) top.Set("PayloadOrganization", Value::String(s.organization));
  if (!s.description.empty()) top.Set("PayloadDescription", Value::String(s.description));
  top.Set("PayloadScope", Value::String("System"));
  top.Set("PayloadRemovalDisallowed", Value::Bool(false));
  top.Set("PayloadContent", Value::MakeArray(std::move(content)));
  return top;
}

Result<std::string> BuildProfileXml(const ProfileSettings& settings) {
  auto v = BuildProfile(settings);
  if (!v.ok()) return v.status();
  Status st = plist::CheckXmlStrings(*v);
  if (!st.ok()) return Status::InvalidArgument("enrollment profile: " + st.message());
  return plist::ToXml(*v);
}

// ---- Signing

struct ProfileSigner::Impl {
  X509Ptr cert;
  KeyPtr key;
  CertStackPtr chain;
  std::string subject;
};

ProfileSigner::ProfileSigner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProfileSigner::~ProfileSigner() = default;
const std::string& ProfileSigner::subject() const { return impl_->subject; }

Result<std::unique_ptr<ProfileSigner>> ProfileSigner::FromPem(std::string_view cert_pem, std::string_view key_pem,
                                                              std::string_view chain_pem) {
  auto impl = std::make_unique<Impl>();
  auto cert_bio = MemBio(cert_pem);
  impl->cert.reset(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  if (!impl->cert) return Status::InvalidArgument("signing certificate: " + TakeOpensslError());
  auto key_bio = MemBio(key_pem);
  impl->key.reset(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (!impl->key) return Status::InvalidArgument("signing key: " + TakeOpensslError());
  if (X509_check_private_key(impl->cert.get(), impl->key.get()) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument("signing key does not match the signing certificate");
  }
  impl->chain.reset(sk_X509_new_null());
  if (!impl->chain) return Status::Internal("out of memory");
  if (!chain_pem.empty()) {
    auto chain_bio = MemBio(chain_pem);
    while (X509* c = PEM_read_bio_X509(chain_bio.get(), nullptr, nullptr, nullptr)) {
      if (!sk_X509_push(impl->chain.get(), c)) {
        X509_free(c);
        return Status::Internal("out of memory");
      }
    }
    ERR_clear_error();  // the end of the PEM stream reads as an error
    if (sk_X509_num(impl->chain.get()) == 0)
      return Status::InvalidArgument("signing chain: no certificate in it");
  }
  impl->subject = NameLine(X509_get_subject_name(impl->cert.get()));
  return std::unique_ptr<ProfileSigner>(new ProfileSigner(std::move(impl)));
}

Result<std::string> ProfileSigner::Sign(std::string_view content) const {
  auto in = MemBio(content);
  constexpr unsigned kFlags = CMS_BINARY | CMS_PARTIAL | CMS_NOSMIMECAP;
  CmsPtr cms(CMS_sign(nullptr, nullptr, impl_->chain.get(), nullptr, kFlags));
  if (!cms) return Status::Internal("CMS_sign: " + TakeOpensslError());
  if (!CMS_add1_signer(cms.get(), impl_->cert.get(), impl_->key.get(), EVP_sha256(), CMS_BINARY | CMS_NOSMIMECAP))
    return Status::Internal("CMS_add1_signer: " + TakeOpensslError());
  if (CMS_final(cms.get(), in.get(), nullptr, CMS_BINARY) != 1)
    return Status::Internal("CMS_final: " + TakeOpensslError());
  BioPtr out(BIO_new(BIO_s_mem()));
  if (!out || i2d_CMS_bio(out.get(), cms.get()) != 1) return Status::Internal("i2d_CMS_bio: " + TakeOpensslError());
  return BioBytes(out.get());
}

// ---- Machine info

namespace {

bool IsUdid(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
  });
}

}  // namespace

Result<MachineInfo> ParseMachineInfo(std::string_view body, const plist::Limits& limits) {
  auto bad = [](const std::string& m) { return Status::InvalidArgument("machine info: " + m); };
  if (body.empty()) return bad("empty body");
  if (body.size() > limits.max_bytes) return Status::TooLarge("machine info: body over the limit");
  std::string decoded;
  std::string_view der = body;
  // DER starts with a SEQUENCE tag; anything else may be base64 of it.
  if (static_cast<unsigned char>(body.front()) != 0x30) {
    auto b = Base64Decode(body);
    if (!b || b->empty()) return bad("not a CMS SignedData (neither DER nor base64 of DER)");
    decoded = std::move(*b);
    der = decoded;
  }
  auto in = MemBio(der);
  CmsPtr cms(d2i_CMS_bio(in.get(), nullptr));
  if (!cms) {
    ERR_clear_error();
    return bad("not a CMS SignedData");
  }
  if (OBJ_obj2nid(CMS_get0_type(cms.get())) != NID_pkcs7_signed) return bad("CMS type is not SignedData");
  ASN1_OCTET_STRING** pos = CMS_get0_content(cms.get());
  if (!pos || !*pos) return bad("the signed data carries no content (detached signature)");
  STACK_OF(X509)* signers = nullptr;
  {
    // Who signed it (the certificate must be inside the message).
    STACK_OF(CMS_SignerInfo)* infos = CMS_get0_SignerInfos(cms.get());
    if (!infos || sk_CMS_SignerInfo_num(infos) == 0) return bad("no signer");
  }
  BioPtr out(BIO_new(BIO_s_mem()));
  constexpr unsigned kFlags = CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY;
  if (CMS_verify(cms.get(), nullptr, nullptr, nullptr, out.get(), kFlags) != 1)
    return bad("signature does not verify: " + TakeOpensslError());
  signers = CMS_get0_signers(cms.get());
  MachineInfo info;
  if (signers && sk_X509_num(signers) > 0) {
    X509* s = sk_X509_value(signers, 0);
    info.signer_subject = NameLine(X509_get_subject_name(s));
    info.signer_issuer = NameLine(X509_get_issuer_name(s));
  }
  sk_X509_free(signers);
  const std::string xml = BioBytes(out.get());
  auto v = plist::ParseXml(xml, limits);
  if (!v.ok()) return bad(v.status().message());
  if (!v->is(plist::Type::kDict)) return bad("the plist is not a dictionary");
  auto str = [&](const char* key) { return std::string(v->GetString(key)); };
  info.udid = str("UDID");
  if (!IsUdid(info.udid)) return bad(info.udid.empty() ? "no UDID" : "UDID is not 1-64 characters of [A-Za-z0-9-]");
  info.serial = str("SERIAL");
  info.product = str("PRODUCT");
  info.version = str("VERSION");
  info.imei = str("IMEI");
  info.meid = str("MEID");
  info.language = str("LANGUAGE");
  info.challenge = str("CHALLENGE");
  return info;
}

Result<std::string> SignMachineInfo(const MachineInfo& info, std::string_view cert_pem, std::string_view key_pem) {
  Value v = Value::MakeDict();
  auto put = [&](const char* key, const std::string& value) {
    if (!value.empty()) v.Set(key, Value::String(value));
  };
  put("UDID", info.udid);
  put("SERIAL", info.serial);
  put("PRODUCT", info.product);
  put("VERSION", info.version);
  put("IMEI", info.imei);
  put("MEID", info.meid);
  put("LANGUAGE", info.language);
  put("CHALLENGE", info.challenge);
  auto signer = ProfileSigner::FromPem(cert_pem, key_pem, {});
  if (!signer.ok()) return signer.status();
  return (*signer)->Sign(plist::ToXml(v));
}

// ---- The enrollment endpoint

namespace {

constexpr const char kLog[] = "enroll";
constexpr const char kProfileType[] = "application/x-apple-aspen-config";

EnrollReply Refuse(int status, EnrollOutcome outcome, std::string reason) {
  EnrollReply r;
  r.status = status;
  r.outcome = outcome;
  r.content_type = "text/plain";
  r.body = reason + "\n";
  r.reason = std::move(reason);
  return r;
}

std::string RandomId() {
  unsigned char b[6];
  if (RAND_bytes(b, sizeof b) != 1) {
    ERR_clear_error();
    return NewUuid().substr(0, 12);
  }
  return HexEncode(std::string_view(reinterpret_cast<const char*>(b), sizeof b));
}

using NamePtr = std::unique_ptr<X509_NAME, OpensslDeleter<X509_NAME_free>>;
using P12Ptr = std::unique_ptr<PKCS12, OpensslDeleter<PKCS12_free>>;

// A key and certificate made here for the PKCS#12 identity payload, recorded
// like a SCEP issuance (with the UDID when known).
struct MadeIdentity {
  std::string p12, password;
};

Result<MadeIdentity> MakeIdentity(const EnrollDeps& d, const std::string& cn, const std::string& udid,
                                  int64_t validity_days, int64_t now_ms, const std::string& renews_sha256) {
  KeyPtr key(EVP_RSA_gen(2048));
  if (!key) return Status::Internal("RSA key generation: " + TakeOpensslError());
  NamePtr name(X509_NAME_new());
  if (!name || X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                          reinterpret_cast<const unsigned char*>(cn.data()),
                                          static_cast<int>(cn.size()), -1, 0) != 1)
    return Status::Internal("subject: " + TakeOpensslError());
  auto issued = d.ca->Issue({.public_key = key.get(), .subject = name.get(), .validity_days = validity_days,
                             .now_ms = now_ms});
  if (!issued.ok()) return issued.status();
  const unsigned char* p = reinterpret_cast<const unsigned char*>(issued->der.data());
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(issued->der.size())));
  if (!cert) return Status::Internal("issued certificate: " + TakeOpensslError());
  MadeIdentity out;
  out.password = RandomId() + RandomId();
  // 3DES and a SHA-1 MAC: what every Apple OS version imports.
  P12Ptr p12(PKCS12_create(out.password.c_str(), cn.c_str(), key.get(), cert.get(), nullptr,
                           NID_pbe_WithSHA1And3_Key_TripleDES_CBC, NID_pbe_WithSHA1And3_Key_TripleDES_CBC,
                           PKCS12_DEFAULT_ITER, -1, 0));
  if (!p12 || PKCS12_set_mac(p12.get(), out.password.c_str(), -1, nullptr, 0, PKCS12_DEFAULT_ITER, EVP_sha1()) != 1)
    return Status::Internal("PKCS#12: " + TakeOpensslError());
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || i2d_PKCS12_bio(bio.get(), p12.get()) != 1) return Status::Internal("PKCS#12: " + TakeOpensslError());
  out.p12 = BioBytes(bio.get());
  IssuedCert rec;
  rec.serial_hex = issued->serial_hex;
  rec.subject = issued->subject;
  rec.sha256 = issued->sha256;
  rec.udid = udid;
  rec.renewed_from_sha256 = renews_sha256;
  rec.not_before_ms = issued->not_before_ms;
  rec.not_after_ms = issued->not_after_ms;
  rec.issued_ms = now_ms;
  store::Batch batch;
  d.issued->Put(batch, rec);
  ORCHARD_RETURN_IF_ERROR(d.store->Write(batch));
  log::Info(kLog, "event=pkcs12_identity_issued serial={} udid={}", rec.serial_hex, log::Quote(udid));
  return out;
}

}  // namespace

const char* EnrollOutcomeName(EnrollOutcome o) {
  switch (o) {
    case EnrollOutcome::kServed: return "served";
    case EnrollOutcome::kServedDevice: return "served_device";
    case EnrollOutcome::kForbidden: return "forbidden";
    case EnrollOutcome::kBadRequest: return "bad_request";
    case EnrollOutcome::kMethod: return "method";
    case EnrollOutcome::kUnavailable: return "unavailable";
    case EnrollOutcome::kInternal: return "internal";
    case EnrollOutcome::kCount: break;
  }
  return "unknown";
}

ProfileService::ProfileService(EnrollOptions options, const EnrollDeps& deps)
    : options_(std::move(options)), deps_(deps) {
  if (!deps_.signer)
    log::Warn(kLog, "event=profiles_unsigned detail=\"set enroll.profile_signing_cert and "
                    "enroll.profile_signing_key so devices show the enrollment profile as verified\"");
  if (options_.token.empty())
    log::Warn(kLog, "event=enroll_open detail=\"no enroll.token: anyone who reaches /mdm/enroll gets the "
                    "profile (SCEP still needs a challenge)\"");
}

EnrollReply ProfileService::Handle(const EnrollRequest& req, int64_t now_ms) {
  if (req.method != "GET" && req.method != "POST" && req.method != "HEAD")
    return Refuse(405, EnrollOutcome::kMethod, "use GET, or POST the signed machine info");
  const bool token_ok = !options_.token.empty() && !req.token.empty() && SecretEquals(req.token, options_.token);
  if (!options_.token.empty() && !req.token.empty() && !token_ok)
    return Refuse(403, EnrollOutcome::kForbidden, "wrong enrollment token");

  std::string udid;
  std::string challenge = req.challenge;
  if (req.method == "POST") {
    if (req.body.size() > options_.max_body_bytes)
      return Refuse(400, EnrollOutcome::kBadRequest, "machine info larger than " +
                                                         std::to_string(options_.max_body_bytes) + " bytes");
    auto info = ParseMachineInfo(req.body, {.max_bytes = options_.max_body_bytes, .max_depth = 8});
    if (!info.ok()) return Refuse(400, EnrollOutcome::kBadRequest, info.status().message());
    udid = info->udid;
    if (challenge.empty()) challenge = info->challenge;
    log::Info(kLog, "event=machine_info udid={} serial={} product={} version={} signer={} issuer={}",
              log::Quote(udid), log::Quote(info->serial), log::Quote(info->product), log::Quote(info->version),
              log::Quote(info->signer_subject), log::Quote(info->signer_issuer));
  }
  if (!challenge.empty()) {
    // Checked, not consumed: the SCEP request that carries it consumes it.
    ChallengeCheck check = deps_.challenges->Check(challenge, now_ms);
    if (!check.claim) {
      if (check.refusal == ChallengeRefusal::kStorage)
        return Refuse(500, EnrollOutcome::kInternal, "storage error while checking the challenge");
      if (!token_ok)
        return Refuse(403, EnrollOutcome::kForbidden,
                      std::string("challenge refused: ") + ChallengeRefusalName(check.refusal));
      challenge.clear();  // the token is enough; do not embed a challenge that will not work
    } else if (!udid.empty() && !check.claim->udid().empty() && check.claim->udid() != udid) {
      return Refuse(403, EnrollOutcome::kForbidden, "the challenge was issued for another device");
    } else if (!udid.empty() && check.claim->udid().empty()) {
      challenge.clear();  // a device said who it is: bind a fresh challenge to it
    }
  } else if (!options_.token.empty() && !token_ok) {
    return Refuse(403, EnrollOutcome::kForbidden, "an enrollment token (?token= or Authorization: Bearer) or a "
                                                  "challenge (?challenge=) is required");
  }
  EnrollReply r = Serve(req.base_url, udid, challenge, now_ms, "");
  if (r.status == 200 && req.method == "HEAD") r.body.clear();
  return r;
}

EnrollReply ProfileService::Make(const std::string& base_url, const std::string& udid, int64_t now_ms) {
  return Serve(base_url, udid, "", now_ms, "");
}

EnrollReply ProfileService::MakeRenewal(const std::string& base_url, const std::string& udid,
                                        const std::string& renews_sha256, int64_t now_ms) {
  if (udid.empty() || renews_sha256.empty())
    return Refuse(500, EnrollOutcome::kInternal, "a renewal profile needs the device and its certificate");
  return Serve(base_url, udid, "", now_ms, renews_sha256);
}

EnrollReply ProfileService::Serve(const std::string& base_url, const std::string& udid,
                                  const std::string& presented_challenge, int64_t now_ms,
                                  const std::string& renews_sha256) {
  auto topic = deps_.topic();
  if (!topic.ok()) return Refuse(503, EnrollOutcome::kUnavailable, "push topic: " + topic.status().message());
  if (!topic->has_value())
    return Refuse(503, EnrollOutcome::kUnavailable,
                  "no push certificate uploaded: the profile needs its topic (orchardctl pushcert)");
  ProfileSettings s = options_.profile;
  s.topic = **topic;
  if (s.server_url.empty() || s.checkin_url.empty() || (s.identity == IdentityKind::kScep && s.scep.url.empty())) {
    if (base_url.empty())
      return Refuse(503, EnrollOutcome::kUnavailable, "set enroll.public_url: the server's address is unknown");
    if (s.server_url.empty()) s.server_url = base_url + "/mdm/connect";
    if (s.checkin_url.empty()) s.checkin_url = base_url + "/mdm/checkin";
    if (s.scep.url.empty()) s.scep.url = base_url + "/scep";
  }
  const std::string cn = options_.subject_cn_prefix + " " + (udid.empty() ? RandomId() : udid);
  if (s.identity == IdentityKind::kScep) {
    s.scep.ca_cert_der = deps_.ca->cert_der();
    s.scep.subject.push_back({"CN", cn});
    if (!presented_challenge.empty()) {
      s.scep.challenge = presented_challenge;
    } else if (udid.empty() && !options_.static_challenge.empty()) {
      s.scep.challenge = options_.static_challenge;
    } else {
      auto c = deps_.challenges->Create(options_.challenge_ttl_seconds, udid, now_ms, renews_sha256);
      if (!c.ok()) return Refuse(500, EnrollOutcome::kInternal, "one-time challenge: " + c.status().message());
      s.scep.challenge = c->challenge;
    }
  } else {
    auto made = MakeIdentity(deps_, cn, udid, options_.pkcs12_validity_days, now_ms, renews_sha256);
    if (!made.ok()) return Refuse(500, EnrollOutcome::kInternal, "identity: " + made.status().message());
    s.pkcs12.der = std::move(made->p12);
    s.pkcs12.password = std::move(made->password);
  }
  auto xml = BuildProfileXml(s);
  if (!xml.ok()) return Refuse(503, EnrollOutcome::kUnavailable, xml.status().message());
  EnrollReply r;
  r.status = 200;
  r.content_type = kProfileType;
  r.outcome = udid.empty() ? EnrollOutcome::kServed : EnrollOutcome::kServedDevice;
  r.udid = udid;
  if (deps_.signer) {
    auto der = deps_.signer->Sign(*xml);
    if (!der.ok()) return Refuse(500, EnrollOutcome::kInternal, "signing: " + der.status().message());
    r.body = std::move(der).value();
    r.signed_profile = true;
  } else {
    r.body = std::move(xml).value();
  }
  return r;
}

}  // namespace orchard::enroll
