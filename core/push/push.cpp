#include "push/push.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include "util/encoding.h"
#include "util/openssl_ptr.h"
#include "util/record.h"

namespace orchard::push {
namespace {
constexpr char kPrefix[] = "pushcert/";
constexpr char kCurrentTopicKey[] = "pushtopic";  // outside kPrefix: listings never see it


}  // namespace

namespace {
Result<PushCert> FromCertAndKey(X509* cert, EVP_PKEY* key);
}  // namespace

Result<PushCert> ParsePushCert(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return Status::InvalidArgument("push certificate: no PEM certificate found");
  BioPtr kbio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  KeyPtr key(
      PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, const_cast<char*>("")));
  if (!key) return Status::InvalidArgument("push certificate: no unencrypted PEM private key found");
  return FromCertAndKey(cert.get(), key.get());
}

Result<PushCert> ParsePushCertPkcs12(std::string_view der, const std::string& password) {
  BioPtr bio(BIO_new_mem_buf(der.data(), static_cast<int>(der.size())));
  PKCS12* p12 = d2i_PKCS12_bio(bio.get(), nullptr);
  if (!p12) return Status::InvalidArgument("push certificate: not a PKCS#12 file");
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  int ok = PKCS12_parse(p12, password.c_str(), &key, &cert, nullptr);
  PKCS12_free(p12);
  X509Ptr c(cert);
  KeyPtr k(key);
  if (ok != 1) return Status::InvalidArgument("push certificate: PKCS#12 wrong password or damaged");
  if (!c) return Status::InvalidArgument("push certificate: PKCS#12 holds no certificate");
  if (!k) return Status::InvalidArgument("push certificate: PKCS#12 holds no private key");
  return FromCertAndKey(c.get(), k.get());
}

namespace {
// Validates a certificate and key (both borrowed) and builds the stored form.
Result<PushCert> FromCertAndKey(X509* cert, EVP_PKEY* key) {
  if (X509_check_private_key(cert, key) != 1)
    return Status::InvalidArgument("push certificate: private key does not match the certificate");
  PushCert out;
  X509_NAME* subject = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(subject, NID_userId, -1);
  if (idx < 0) return Status::InvalidArgument("push certificate: subject has no UID (topic)");
  ASN1_STRING* uid = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, uid);
  if (n < 0) return Status::InvalidArgument("push certificate: unreadable UID");
  out.topic.assign(reinterpret_cast<char*>(utf8), n);
  OPENSSL_free(utf8);
  if (out.topic.rfind("com.apple.mgmt.", 0) != 0)
    return Status::InvalidArgument("push certificate: topic '" + out.topic +
                                   "' is not an MDM topic (must start with com.apple.mgmt.)");
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1)
    return Status::InvalidArgument("push certificate: unreadable notAfter");
  out.not_after_unix = timegm(&tm);
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
    return Status::InvalidArgument("push certificate: expired on " +
                                   FormatRfc3339(out.not_after_unix * 1000));
  // Re-emit canonical PEM for storage (drops any other text in the upload).
  BioPtr cout(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(cout.get(), cert);
  char* p = nullptr;
  long len = BIO_get_mem_data(cout.get(), &p);
  out.cert_pem.assign(p, len);
  BioPtr kout(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(kout.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  len = BIO_get_mem_data(kout.get(), &p);
  out.key_pem.assign(p, len);
  return out;
}
}  // namespace

Result<std::optional<std::string>> PushCertStore::CurrentTopic() {
  auto topic = store_->Get(store::Cf::kMeta, kCurrentTopicKey);
  if (!topic.ok() || topic->has_value()) return topic;
  // Stored before the enrollment topic was recorded: the one certificate's topic, if only one.
  auto two = ListPage("", 2);
  if (!two.ok()) return two.status();
  if (two->size() == 1) return std::optional<std::string>((*two)[0].topic);
  return std::optional<std::string>();
}

Status PushCertStore::Put(const PushCert& c, bool force) {
  std::lock_guard lock(put_mu_);
  auto current = CurrentTopic();
  if (!current.ok()) return current.status();
  if (current->has_value() && **current != c.topic && !force)
    return Status::FailedPrecondition(
        "this certificate is for topic " + c.topic + " but devices enroll with topic " + **current +
        ": they accept pushes only on the topic they enrolled with, so switching would strand every "
        "enrolled device (renew the certificate for " + **current +
        " at Apple instead, with the same Apple ID); add force=true to switch anyway");
  RecordWriter w;
  w.PutVarint(1);
  w.PutString(c.topic);
  w.PutSigned(c.not_after_unix);
  w.PutString(c.cert_pem);
  w.PutString(box_ ? box_->Seal(c.key_pem) : c.key_pem);
  store::Batch b;
  b.Put(store::Cf::kMeta, kPrefix + c.topic, w.Take());
  if (!current->has_value() || **current != c.topic) b.Put(store::Cf::kMeta, kCurrentTopicKey, c.topic);
  return store_->Write(b);
}

Result<PushCert> PushCertStore::Decode(std::string_view bytes) const {
  RecordReader r(bytes);
  if (r.GetVarint() != 1) return Status::Internal("corrupt push certificate record");
  PushCert c;
  c.topic = r.GetString();
  c.not_after_unix = r.GetSigned();
  c.cert_pem = r.GetString();
  c.key_pem = r.GetString();
  if (r.corrupt()) return Status::Internal("corrupt push certificate record");
  if (SecretBox::IsSealed(c.key_pem)) {
    if (!box_) {
      c.key_error = "push certificate key for " + c.topic +
                    " is encrypted; configure push.key_encryption_key";
      c.key_pem.clear();
    } else if (auto opened = box_->Open(c.key_pem); opened.ok()) {
      c.key_pem = std::move(opened.value());
    } else {
      c.key_error = "push certificate key for " + c.topic + ": " + opened.status().message();
      c.key_pem.clear();
    }
  }
  return c;
}

Result<std::optional<PushCert>> PushCertStore::Get(const std::string& topic) {
  auto v = store_->Get(store::Cf::kMeta, kPrefix + topic);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<PushCert>();
  auto c = Decode(**v);
  if (!c.ok()) return c.status();
  if (!c->key_error.empty()) return Status::Unavailable(c->key_error);
  return std::optional<PushCert>(std::move(c.value()));
}

Result<std::vector<PushCert>> PushCertStore::List() {
  std::vector<PushCert> out;
  std::string lower = kPrefix;
  auto it = store_->Scan(store::Cf::kMeta, lower, store::PrefixEnd(lower));
  for (; it->Valid(); it->Next()) {
    auto c = Decode(it->value());
    if (c.ok()) out.push_back(std::move(c.value()));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

Result<std::vector<PushCert>> PushCertStore::ListPage(const std::string& after_topic, size_t limit) {
  std::vector<PushCert> out;
  std::string lower = kPrefix;
  if (!after_topic.empty()) {
    lower += after_topic;
    lower.push_back('\0');  // strictly after
  }
  const std::string prefix = kPrefix;
  auto it = store_->Scan(store::Cf::kMeta, lower, store::PrefixEnd(prefix));
  for (; it->Valid() && out.size() < limit; it->Next()) {
    auto c = Decode(it->value());
    if (c.ok()) out.push_back(std::move(c.value()));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

}  // namespace orchard::push
