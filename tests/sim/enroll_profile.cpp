#include "sim/enroll_profile.h"

#include <curl/curl.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include <memory>
#include <vector>

#include "support/scep_client.h"
#include "util/encoding.h"
#include "util/openssl_ptr.h"

namespace orchard::sim {
namespace {

using plist::Value;

std::string OpensslError() {
  unsigned long e = ERR_get_error();
  std::string out = e ? ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "error" : "unknown error";
  ERR_clear_error();
  return out;
}

BioPtr MemBio(std::string_view bytes) { return BioPtr(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()))); }

std::string BioBytes(BIO* bio) {
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(bio, &mem);
  return mem ? std::string(mem->data, mem->length) : std::string();
}

std::string ToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  return BioBytes(bio.get());
}

std::string ToDer(X509* cert) {
  int len = i2d_X509(cert, nullptr);
  if (len <= 0) return {};
  std::string der(static_cast<size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  i2d_X509(cert, &p);
  return der;
}

struct HttpAnswer {
  long status = 0;
  std::string body;
};

size_t Collect(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

Result<HttpAnswer> Http(const ProfileFetch& f, const std::string& url, const std::string* post_body,
                        const std::vector<std::string>& headers) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> c(curl_easy_init(), &curl_easy_cleanup);
  if (!c) return Status::Internal("curl_easy_init failed");
  HttpAnswer a;
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> list_owner(list, &curl_slist_free_all);
  curl_easy_setopt(c.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(c.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c.get(), CURLOPT_TIMEOUT_MS, f.timeout_ms);
  curl_easy_setopt(c.get(), CURLOPT_USERAGENT, "MDM/1.0");
  curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, &Collect);
  curl_easy_setopt(c.get(), CURLOPT_WRITEDATA, &a.body);
  if (list) curl_easy_setopt(c.get(), CURLOPT_HTTPHEADER, list);
  if (post_body) {
    curl_easy_setopt(c.get(), CURLOPT_POST, 1L);
    curl_easy_setopt(c.get(), CURLOPT_POSTFIELDS, post_body->data());
    curl_easy_setopt(c.get(), CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(post_body->size()));
  }
  if (!f.tls_ca_file.empty()) curl_easy_setopt(c.get(), CURLOPT_CAINFO, f.tls_ca_file.c_str());
  curl_easy_setopt(c.get(), CURLOPT_SSL_VERIFYPEER, f.tls_verify ? 1L : 0L);
  curl_easy_setopt(c.get(), CURLOPT_SSL_VERIFYHOST, f.tls_verify ? 2L : 0L);
  CURLcode rc = curl_easy_perform(c.get());
  if (rc != CURLE_OK) return Status::Io(url + ": " + curl_easy_strerror(rc));
  curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &a.status);
  return a;
}

// The machine-info plist, CMS-signed with content embedded (as devices send it).
Result<std::string> SignedMachineInfo(const DeviceState& d, const testing::Identity& id) {
  Value v = Value::MakeDict();
  v.Set("UDID", Value::String(d.udid));
  v.Set("SERIAL", Value::String(d.serial_number));
  v.Set("PRODUCT", Value::String(d.product_name));
  v.Set("VERSION", Value::String(d.build_version));
  if (!d.imei.empty()) v.Set("IMEI", Value::String(d.imei));
  if (!d.meid.empty()) v.Set("MEID", Value::String(d.meid));
  v.Set("LANGUAGE", Value::String("en"));
  const std::string xml = plist::ToXml(v);
  auto cb = MemBio(id.cert_pem);
  X509Ptr cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  auto kb = MemBio(id.key_pem);
  KeyPtr key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!cert || !key) return Status::Internal("attestation identity: " + OpensslError());
  auto in = MemBio(xml);
  CmsPtr cms(CMS_sign(cert.get(), key.get(), nullptr, in.get(), CMS_BINARY | CMS_NOSMIMECAP));
  if (!cms) return Status::Internal("CMS_sign: " + OpensslError());
  BioPtr out(BIO_new(BIO_s_mem()));
  if (i2d_CMS_bio(out.get(), cms.get()) != 1) return Status::Internal("i2d_CMS_bio: " + OpensslError());
  return BioBytes(out.get());
}

// "CN=x,O=y" from SCEP's [[["CN","x"]],[["O","y"]]].
std::string SubjectText(const Value* subject) {
  std::string out;
  if (!subject || !subject->AsArray()) return out;
  for (const auto& rdn : *subject->AsArray()) {
    if (!rdn.AsArray()) continue;
    for (const auto& pair : *rdn.AsArray()) {
      const auto* a = pair.AsArray();
      if (!a || a->size() != 2 || !(*a)[0].AsString() || !(*a)[1].AsString()) continue;
      if (!out.empty()) out += ',';
      out += *(*a)[0].AsString() + "=" + *(*a)[1].AsString();
    }
  }
  return out;
}

// "https://h:1/p/q" -> ("https://h:1", "/p/q").
bool SplitUrl(const std::string& url, std::string* base, std::string* path) {
  size_t scheme = url.find("://");
  if (scheme == std::string::npos) return false;
  size_t slash = url.find('/', scheme + 3);
  *base = url.substr(0, slash);
  *path = slash == std::string::npos ? "/" : url.substr(slash);
  return !base->empty();
}

}  // namespace

Result<EnrollmentProfile> ReadProfile(std::string_view body, const ProfileFetch& fetch) {
  auto bad = [](const std::string& m) { return Status::InvalidArgument("enrollment profile: " + m); };
  EnrollmentProfile p;
  std::string xml;
  if (!body.empty() && static_cast<unsigned char>(body.front()) == 0x30) {
    auto in = MemBio(body);
    CmsPtr cms(d2i_CMS_bio(in.get(), nullptr));
    if (!cms) return bad("neither a plist nor CMS: " + OpensslError());
    BioPtr out(BIO_new(BIO_s_mem()));
    X509StorePtr store(X509_STORE_new());
    unsigned flags = CMS_BINARY;
    if (!fetch.trust_ca_pem.empty()) {
      auto ca = MemBio(fetch.trust_ca_pem);
      int n = 0;
      while (X509* c = PEM_read_bio_X509(ca.get(), nullptr, nullptr, nullptr)) {
        X509_STORE_add_cert(store.get(), c);
        X509_free(c);
        ++n;
      }
      ERR_clear_error();
      if (n == 0) return bad("trust_ca_pem holds no certificate");
    } else {
      flags |= CMS_NO_SIGNER_CERT_VERIFY;
    }
    if (CMS_verify(cms.get(), nullptr, store.get(), nullptr, out.get(), flags) != 1)
      return bad("signature does not verify: " + OpensslError());
    p.signed_profile = true;
    STACK_OF(X509)* signers = CMS_get0_signers(cms.get());
    if (signers && sk_X509_num(signers) > 0) {
      char line[512];
      X509_NAME_oneline(X509_get_subject_name(sk_X509_value(signers, 0)), line, sizeof line);
      p.signer_subject = line;
    }
    sk_X509_free(signers);
    xml = BioBytes(out.get());
  } else {
    if (fetch.require_signed || !fetch.trust_ca_pem.empty()) return bad("the profile is not signed");
    xml = std::string(body);
  }
  auto v = plist::ParseXml(xml);
  if (!v.ok()) return bad(v.status().message());
  p.plist = std::move(v).value();
  if (p.plist.GetString("PayloadType") != "Configuration") return bad("PayloadType is not Configuration");
  const Value* content = p.plist.Find("PayloadContent");
  if (!content || !content->AsArray()) return bad("no PayloadContent array");
  const Value* mdm = nullptr;
  for (const auto& payload : *content->AsArray())
    if (payload.GetString("PayloadType") == "com.apple.mdm") mdm = &payload;
  if (!mdm) return bad("no com.apple.mdm payload");
  p.server_url = std::string(mdm->GetString("ServerURL"));
  p.checkin_url = std::string(mdm->GetString("CheckInURL"));
  if (p.checkin_url.empty()) p.checkin_url = p.server_url;
  p.topic = std::string(mdm->GetString("Topic"));
  p.identity_uuid = std::string(mdm->GetString("IdentityCertificateUUID"));
  p.sign_message = mdm->GetBool("SignMessage", false);
  if (p.server_url.empty() || p.topic.empty() || p.identity_uuid.empty())
    return bad("the MDM payload lacks ServerURL, Topic or IdentityCertificateUUID");
  const Value* identity = nullptr;
  for (const auto& payload : *content->AsArray())
    if (payload.GetString("PayloadUUID") == p.identity_uuid) identity = &payload;
  if (!identity) return bad("IdentityCertificateUUID " + p.identity_uuid + " names no payload");
  p.identity_type = std::string(identity->GetString("PayloadType"));
  if (p.identity_type == "com.apple.security.scep") {
    const Value* c = identity->Find("PayloadContent");
    if (!c || !c->AsDict()) return bad("the SCEP payload has no PayloadContent dictionary");
    p.scep_url = std::string(c->GetString("URL"));
    p.scep_challenge = std::string(c->GetString("Challenge"));
    p.scep_subject = SubjectText(c->Find("Subject"));
    if (const Value* ks = c->Find("Keysize"); ks && ks->AsInteger()) p.key_size = static_cast<int>(*ks->AsInteger());
    if (const std::string* fp = c->GetData("CAFingerprint")) p.ca_fingerprint = *fp;
    if (p.scep_url.empty()) return bad("the SCEP payload has no URL");
  } else if (p.identity_type == "com.apple.security.pkcs12") {
    const std::string* der = identity->GetData("PayloadContent");
    if (!der) return bad("the PKCS#12 payload has no data");
    p.pkcs12_der = *der;
    p.pkcs12_password = std::string(identity->GetString("Password"));
  } else {
    return bad("identity payload of unsupported type " + p.identity_type);
  }
  return p;
}

Result<EnrollmentProfile> FetchProfile(const ProfileFetch& fetch, const DeviceState& device,
                                       const testing::Identity* attestation) {
  std::string url = fetch.url;
  if (!fetch.challenge.empty())
    url += (url.find('?') == std::string::npos ? "?" : "&") + std::string("challenge=") + PercentEncode(fetch.challenge);
  std::vector<std::string> headers;
  if (!fetch.token.empty()) headers.push_back("Authorization: Bearer " + fetch.token);
  Result<HttpAnswer> a = Status::Internal("unset");
  if (fetch.machine_info) {
    if (!attestation) return Status::InvalidArgument("machine_info needs an attestation identity");
    auto body = SignedMachineInfo(device, *attestation);
    if (!body.ok()) return body.status();
    headers.push_back("Content-Type: application/pkcs7-signature");
    a = Http(fetch, url, &*body, headers);
  } else {
    a = Http(fetch, url, nullptr, headers);
  }
  if (!a.ok()) return a.status();
  if (a->status != 200) {
    std::string reason = a->body;
    while (!reason.empty() && (reason.back() == '\n' || reason.back() == '\r')) reason.pop_back();
    return Status::Unavailable("HTTP " + std::to_string(a->status) + ": " + reason.substr(0, 300));
  }
  return ReadProfile(a->body, fetch);
}

Result<std::unique_ptr<Device>> EnrollViaProfile(const SimConfig& base, DeviceState state, const ProfileFetch& fetch,
                                                 const testing::Identity* attestation, EnrollmentProfile* out) {
  auto p = FetchProfile(fetch, state, attestation);
  if (!p.ok()) return p.status();
  testing::Identity identity;
  if (p->identity_type == "com.apple.security.scep") {
    testing::ScepClient scep(p->scep_url);
    auto ca = scep.GetCaCert();
    if (!ca.ok()) return Status(ca.status().code(), "SCEP GetCACert: " + ca.status().message());
    if (!p->ca_fingerprint.empty() && Sha256(*ca) != p->ca_fingerprint)
      return Status::PermissionDenied("SCEP CA certificate does not match the profile's CAFingerprint");
    testing::ScepRequest req;
    req.challenge = p->scep_challenge;
    req.key = {testing::ScepKeyType::kRsa, p->key_size};
    if (!p->scep_subject.empty()) req.subject = p->scep_subject;
    auto r = scep.Enroll(req);
    if (!r.ok()) return Status(r.status().code(), "SCEP: " + r.status().message());
    if (r->pki_status != 0)
      return Status::PermissionDenied("SCEP refused: pkiStatus " + std::to_string(r->pki_status) + " failInfo " +
                                      std::to_string(r->fail_info) + " (HTTP " + std::to_string(r->http_status) + ")");
    identity = std::move(r->identity);
  } else {
    auto in = MemBio(p->pkcs12_der);
    std::unique_ptr<PKCS12, OpensslDeleter<PKCS12_free>> p12(d2i_PKCS12_bio(in.get(), nullptr));
    EVP_PKEY* key = nullptr;
    X509* cert = nullptr;
    if (!p12 || PKCS12_parse(p12.get(), p->pkcs12_password.c_str(), &key, &cert, nullptr) != 1)
      return Status::InvalidArgument("PKCS#12 identity does not open: " + OpensslError());
    KeyPtr key_owner(key);
    X509Ptr cert_owner(cert);
    BioPtr kb(BIO_new(BIO_s_mem()));
    PEM_write_bio_PrivateKey(kb.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
    identity.key_pem = BioBytes(kb.get());
    identity.cert_pem = ToPem(cert);
    identity.cert_der = ToDer(cert);
  }
  SimConfig config = base;
  std::string connect_base, checkin_base;
  if (!SplitUrl(p->server_url, &connect_base, &config.connect_path) ||
      !SplitUrl(p->checkin_url, &checkin_base, &config.checkin_path))
    return Status::InvalidArgument("enrollment profile: bad ServerURL or CheckInURL");
  if (connect_base != checkin_base)
    return Status::InvalidArgument("the simulator needs ServerURL and CheckInURL on one host");
  config.base_url = connect_base;
  config.topic = p->topic;
  auto d = Device::Create(config, std::move(state), std::move(identity));
  if (!d.ok()) return d.status();
  if (out) *out = std::move(p).value();
  return d;
}

}  // namespace orchard::sim
