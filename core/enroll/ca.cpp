#include "enroll/ca.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "enroll/ossl.h"
#include "log/log.h"
#include "util/encoding.h"

namespace orchard::enroll {
namespace {

constexpr const char* kLog = "enroll";
constexpr int64_t kCaValidityDays = 3650;
constexpr int64_t kBackdateSeconds = 300;
constexpr const char* kCertName = "device-ca.pem";
constexpr const char* kKeyName = "device-ca.key";

Result<std::string> ReadWhole(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::Io("cannot read " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Writes data to path atomically (temp file + fsync + rename) with the given mode.
Status WriteAtomic(const std::string& path, std::string_view data, mode_t mode) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Status::Io("cannot write " + tmp + ": " + std::strerror(errno));
  ::fchmod(fd, mode);  // umask may have narrowed or (never) widened it
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      return Status::Io("cannot write " + tmp + ": " + std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) return Status::Io("cannot write " + tmp + ": " + std::strerror(errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return Status::Io("cannot rename " + tmp + ": " + std::strerror(errno));
  return Status::Ok();
}

Status AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
    return Status::Internal(std::string("certificate extension ") + OBJ_nid2sn(nid) + ": " + TakeOpensslError());
  return Status::Ok();
}

// A random positive serial of at most 128 bits (top bit clear, never zero).
Status RandomSerial(X509* cert) {
  unsigned char raw[16];
  do {
    if (RAND_bytes(raw, sizeof raw) != 1) return Status::Internal("RAND_bytes failed");
    raw[0] &= 0x7f;
  } while (raw[0] == 0 && raw[1] == 0);  // keep 113+ bits of entropy, never zero
  BnPtr bn(BN_bin2bn(raw, sizeof raw, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)))
    return Status::Internal("serial: " + TakeOpensslError());
  return Status::Ok();
}

// Copies an encoded public key (algorithm, parameters, key bits) without decoding it.
Status CopyPublicKey(const X509_PUBKEY* from, X509_PUBKEY* to) {
  ASN1_OBJECT* alg = nullptr;
  const unsigned char* bits = nullptr;
  int len = 0;
  X509_ALGOR* algor = nullptr;
  if (X509_PUBKEY_get0_param(&alg, &bits, &len, &algor, from) != 1 || algor == nullptr || len <= 0)
    return Status::InvalidArgument("public key: " + TakeOpensslError());
  const ASN1_OBJECT* aobj = nullptr;
  int ptype = V_ASN1_UNDEF;
  const void* pval = nullptr;
  X509_ALGOR_get0(&aobj, &ptype, &pval, algor);
  void* pcopy = nullptr;
  if (ptype == V_ASN1_OBJECT) pcopy = OBJ_dup(static_cast<const ASN1_OBJECT*>(pval));
  else if (ptype == V_ASN1_SEQUENCE || ptype == V_ASN1_OCTET_STRING) pcopy = ASN1_STRING_dup(static_cast<const ASN1_STRING*>(pval));
  else if (ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF) return Status::InvalidArgument("public key: unusual parameters");
  auto* enc = static_cast<unsigned char*>(OPENSSL_memdup(bits, static_cast<size_t>(len)));
  ASN1_OBJECT* acopy = OBJ_dup(aobj);
  if (!enc || !acopy || ((ptype == V_ASN1_OBJECT || ptype == V_ASN1_SEQUENCE || ptype == V_ASN1_OCTET_STRING) && !pcopy) ||
      X509_PUBKEY_set0_param(to, acopy, ptype, pcopy, enc, len) != 1) {
    OPENSSL_free(enc);
    ASN1_OBJECT_free(acopy);
    return Status::Internal("public key copy: " + TakeOpensslError());
  }
  return Status::Ok();
}

std::string ToPem(X509* cert) {
  BioPtr b(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(b.get(), cert);
  return BioText(b.get());
}

std::string KeyToPem(EVP_PKEY* key) {
  BioPtr b(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(b.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  return BioText(b.get());
}

Result<X509Ptr> ParseCertPem(const std::string& pem, const std::string& what) {
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
  if (!cert) return Status::InvalidArgument(what + " holds no PEM certificate: " + TakeOpensslError());
  return cert;
}

Result<KeyPtr> ParseKeyPem(const std::string& pem, const std::string& what) {
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  // An empty passphrase callback: an encrypted key fails instead of prompting.
  KeyPtr key(PEM_read_bio_PrivateKey(b.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  if (!key)
    return Status::InvalidArgument(what + " holds no unencrypted PEM private key: " + TakeOpensslError());
  return key;
}

// Self-signed CA certificate for key.
Result<X509Ptr> MakeCaCert(EVP_PKEY* key, const std::string& cn, int64_t now_s) {
  X509Ptr cert(X509_new());
  if (!cert) return Status::Internal("X509_new failed");
  X509_set_version(cert.get(), 2);
  ORCHARD_RETURN_IF_ERROR(RandomSerial(cert.get()));
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("Orchard"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  ASN1_TIME_set(X509_getm_notBefore(cert.get()), now_s - kBackdateSeconds);
  ASN1_TIME_set(X509_getm_notAfter(cert.get()), now_s + kCaValidityDays * 86400);
  X509_set_pubkey(cert.get(), key);
  ORCHARD_RETURN_IF_ERROR(AddExt(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE"));
  ORCHARD_RETURN_IF_ERROR(AddExt(cert.get(), cert.get(), NID_key_usage,
                                 "critical,keyCertSign,cRLSign,digitalSignature,keyEncipherment"));
  ORCHARD_RETURN_IF_ERROR(AddExt(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), key, EVP_sha256()) <= 0) return Status::Internal("CA self-signature: " + TakeOpensslError());
  return cert;
}

}  // namespace

struct DeviceCa::Impl {
  X509Ptr cert;
  KeyPtr key;
};

DeviceCa::DeviceCa() : impl_(std::make_unique<Impl>()) {}
DeviceCa::~DeviceCa() = default;
X509* DeviceCa::cert() const { return impl_->cert.get(); }
EVP_PKEY* DeviceCa::key() const { return impl_->key.get(); }

Result<std::unique_ptr<DeviceCa>> DeviceCa::Load(const CaOptions& o) {
  std::unique_ptr<DeviceCa> ca(new DeviceCa());
  if (o.cert_file.empty() != o.key_file.empty())
    return Status::InvalidArgument("enroll.ca_cert_file and enroll.ca_key_file must be set together");
  if (!o.cert_file.empty()) {
    auto cert_pem = ReadWhole(o.cert_file);
    if (!cert_pem.ok()) return cert_pem.status();
    auto key_pem = ReadWhole(o.key_file);
    if (!key_pem.ok()) return key_pem.status();
    auto cert = ParseCertPem(*cert_pem, "enroll.ca_cert_file " + o.cert_file);
    if (!cert.ok()) return cert.status();
    auto key = ParseKeyPem(*key_pem, "enroll.ca_key_file " + o.key_file);
    if (!key.ok()) return key.status();
    if (EVP_PKEY_get_base_id(key->get()) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key->get()) < 2048)
      return Status::InvalidArgument("enroll.ca_key_file " + o.key_file +
                                     ": the device CA key must be RSA of at least 2048 bits (SCEP "
                                     "requests are encrypted to it)");
    if (X509_check_private_key(cert->get(), key->get()) != 1)
      return Status::InvalidArgument("enroll.ca_key_file " + o.key_file + " does not match " + o.cert_file);
    if (X509_check_ca(cert->get()) == 0)
      return Status::InvalidArgument("enroll.ca_cert_file " + o.cert_file + " is not a CA certificate");
    ca->impl_->cert = std::move(cert.value());
    ca->impl_->key = std::move(key.value());
    ca->generated_ = false;
  } else {
    if (o.dir.empty()) return Status::InvalidArgument("no directory for the device CA");
    std::error_code ec;
    std::filesystem::create_directories(o.dir, ec);
    if (ec) return Status::Io("cannot create " + o.dir + ": " + ec.message());
    ::chmod(o.dir.c_str(), 0700);
    const std::string cert_path = o.dir + "/" + kCertName, key_path = o.dir + "/" + kKeyName;
    const bool have_cert = std::filesystem::exists(cert_path, ec);
    const bool have_key = std::filesystem::exists(key_path, ec);
    if (have_cert && have_key) {
      auto cert_pem = ReadWhole(cert_path);
      if (!cert_pem.ok()) return cert_pem.status();
      auto key_text = ReadWhole(key_path);
      if (!key_text.ok()) return key_text.status();
      std::string key_pem;
      if (SecretBox::IsSealed(*key_text)) {
        if (!o.box)
          return Status::Unavailable(key_path + " is sealed: configure push.key_encryption_key (or ORCHARD_PUSH_KEY)"
                                     " with the key it was sealed with");
        auto opened = o.box->Open(*key_text);
        if (!opened.ok()) return Status::Unavailable(key_path + ": " + opened.status().message());
        key_pem = std::move(opened.value());
      } else {
        key_pem = std::move(key_text.value());
        if (o.box) {  // a key-encryption key was configured since: seal the key now
          ORCHARD_RETURN_IF_ERROR(WriteAtomic(key_path, o.box->Seal(key_pem), 0600));
          log::Info(kLog, "event=device_ca_key_sealed path={}", log::Quote(key_path));
        }
      }
      auto cert = ParseCertPem(*cert_pem, cert_path);
      if (!cert.ok()) return cert.status();
      auto key = ParseKeyPem(key_pem, key_path);
      if (!key.ok()) return key.status();
      if (X509_check_private_key(cert->get(), key->get()) != 1)
        return Status::InvalidArgument(key_path + " does not match " + cert_path);
      ::chmod(key_path.c_str(), 0600);
      ca->impl_->cert = std::move(cert.value());
      ca->impl_->key = std::move(key.value());
    } else {
      if (have_cert)  // a certificate without its key is useless: someone removed the key
        return Status::InvalidArgument(cert_path + " exists but " + key_path +
                                       " does not; restore the key or remove both to generate a new CA");
      KeyPtr key(EVP_RSA_gen(2048));
      if (!key) return Status::Internal("RSA key generation: " + TakeOpensslError());
      auto cert = MakeCaCert(key.get(), o.common_name, NowMillis() / 1000);
      if (!cert.ok()) return cert.status();
      const std::string key_pem = KeyToPem(key.get());
      ORCHARD_RETURN_IF_ERROR(WriteAtomic(key_path, o.box ? o.box->Seal(key_pem) : key_pem, 0600));
      ORCHARD_RETURN_IF_ERROR(WriteAtomic(cert_path, ToPem(cert->get()), 0644));
      if (!o.box)
        log::Warn(kLog, "event=device_ca_key_unencrypted path={} detail=\"set push.key_encryption_key or "
                        "ORCHARD_PUSH_KEY to seal it at rest\"", log::Quote(key_path));
      ca->impl_->cert = std::move(cert.value());
      ca->impl_->key = std::move(key);
      log::Info(kLog, "event=device_ca_generated path={}", log::Quote(cert_path));
    }
    ca->generated_ = true;
  }
  ca->cert_der_ = CertDer(ca->impl_->cert.get());
  ca->cert_pem_ = ToPem(ca->impl_->cert.get());
  ca->sha256_ = Sha256Hex(ca->cert_der_);
  log::Info(kLog, "event=device_ca_ready generated={} sha256={} subject={} sealed={}", ca->generated_, ca->sha256_,
            log::Quote(NameText(X509_get_subject_name(ca->impl_->cert.get()))), o.box != nullptr);
  return ca;
}

Result<IssuedDer> DeviceCa::Issue(const IssueRequest& r) const {
  if (!r.public_key) return Status::InvalidArgument("no public key");
  X509* ca = impl_->cert.get();
  X509Ptr cert(X509_new());
  if (!cert) return Status::Internal("X509_new failed");
  X509_set_version(cert.get(), 2);
  ORCHARD_RETURN_IF_ERROR(RandomSerial(cert.get()));
  if (r.subject && X509_set_subject_name(cert.get(), r.subject) != 1)
    return Status::InvalidArgument("subject: " + TakeOpensslError());
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca));
  const int64_t now_s = r.now_ms / 1000;
  int64_t not_after = now_s + r.validity_days * 86400;
  const int64_t ca_not_after = AsnTimeToMs(X509_get0_notAfter(ca)) / 1000;
  if (ca_not_after > 0 && not_after > ca_not_after) not_after = ca_not_after;
  ASN1_TIME_set(X509_getm_notBefore(cert.get()), now_s - kBackdateSeconds);
  ASN1_TIME_set(X509_getm_notAfter(cert.get()), not_after);
  if (r.public_key_info) {
    ORCHARD_RETURN_IF_ERROR(CopyPublicKey(r.public_key_info, X509_get_X509_PUBKEY(cert.get())));
  } else if (X509_set_pubkey(cert.get(), r.public_key) != 1) {
    return Status::InvalidArgument("public key: " + TakeOpensslError());
  }
  ORCHARD_RETURN_IF_ERROR(AddExt(cert.get(), ca, NID_basic_constraints, "critical,CA:FALSE"));
  const bool rsa = EVP_PKEY_get_base_id(r.public_key) == EVP_PKEY_RSA;
  ORCHARD_RETURN_IF_ERROR(
      AddExt(cert.get(), ca, NID_key_usage, rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature"));
  ORCHARD_RETURN_IF_ERROR(AddExt(cert.get(), ca, NID_ext_key_usage, "clientAuth"));
  ORCHARD_RETURN_IF_ERROR(AddExt(cert.get(), ca, NID_subject_key_identifier, "hash"));
  ORCHARD_RETURN_IF_ERROR(AddExt(cert.get(), ca, NID_authority_key_identifier, "keyid"));
  if (X509_sign(cert.get(), impl_->key.get(), EVP_sha256()) <= 0)
    return Status::Internal("certificate signature: " + TakeOpensslError());
  IssuedDer out;
  out.der = CertDer(cert.get());
  if (out.der.empty()) return Status::Internal("certificate encoding failed");
  out.serial_hex = SerialHex(X509_get0_serialNumber(cert.get()));
  out.sha256 = Sha256Hex(out.der);
  out.subject = NameText(X509_get_subject_name(cert.get()));
  out.not_before_ms = AsnTimeToMs(X509_get0_notBefore(cert.get()));
  out.not_after_ms = AsnTimeToMs(X509_get0_notAfter(cert.get()));
  return out;
}

}  // namespace orchard::enroll
