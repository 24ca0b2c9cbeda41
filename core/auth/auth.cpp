#include "auth/auth.h"

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "log/log.h"
#include "util/encoding.h"
#include "util/openssl_ptr.h"

namespace orchard::auth {
namespace {

constexpr const char kLog[] = "auth";

using StorePtr = X509StorePtr;
using StoreCtxPtr = X509StoreCtxPtr;
void FreeCertStack(STACK_OF(X509) * s) { sk_X509_free(s); }  // the stack only, not its certificates
using CertStackPtr = std::unique_ptr<STACK_OF(X509), OpensslDeleter<FreeCertStack>>;

using CertHash = std::array<unsigned char, SHA256_DIGEST_LENGTH>;

struct CertHashHasher {
  size_t operator()(const CertHash& h) const {
    size_t v;
    std::memcpy(&v, h.data(), sizeof v);  // already uniformly distributed
    return v;
  }
};

// The reason of the oldest queued OpenSSL error (the root cause), then clears the
// thread's error queue so nothing leaks into unrelated OpenSSL calls.
std::string TakeOpensslError() {
  unsigned long e = ERR_get_error();
  const char* reason = e ? ERR_reason_error_string(e) : nullptr;
  std::string out = reason ? reason : (e ? "error " + std::to_string(ERR_GET_REASON(e)) : "unknown error");
  ERR_clear_error();
  return out;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

std::string ToDer(X509* x) {
  int len = i2d_X509(x, nullptr);
  if (len <= 0) {
    ERR_clear_error();
    return {};
  }
  std::string der(static_cast<size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  i2d_X509(x, &p);
  return der;
}

// Parses exactly one certificate. Trailing bytes, and encodings that OpenSSL
// would re-encode differently (BER, non-minimal lengths in the outer layers),
// are refused: the bytes are the identity (their SHA-256 is the binding key),
// so one certificate must have exactly one byte string on every path.
X509Ptr ParseDer(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509Ptr x(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (x && p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) x.reset();
  if (x && ToDer(x.get()) != der) x.reset();
  if (!x) ERR_clear_error();
  return x;
}

// Failure path only: why header bytes are not an acceptable certificate.
Status HeaderCertError(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509Ptr lenient(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  ERR_clear_error();
  if (!lenient) return Status::Unauthenticated("client certificate header: not an X.509 certificate");
  if (p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) {
    return Status::Unauthenticated("client certificate header: trailing bytes after the certificate");
  }
  return Status::Unauthenticated("client certificate header: certificate is not DER-encoded");
}

int64_t ToUnix(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

// RFC 2253 with UTF-8 left readable; empty for an empty subject.
std::string SubjectOf(X509* x) {
  X509_NAME* name = X509_get_subject_name(x);
  if (name == nullptr || X509_NAME_entry_count(name) == 0) return {};
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
    ERR_clear_error();
    return {};
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
}

// Header value -> DER bytes, without parsing the certificate (Identify parses
// only on a cache miss). See ParseCertHeader for the accepted forms.
Result<std::string> DecodeCertHeader(std::string_view value) {
  std::string_view v = Trim(value);
  if (v.empty()) return Status::Unauthenticated("client certificate header: empty");

  // RFC 9440: ":<base64 DER>:" (a structured-field byte sequence).
  if (v.size() >= 2 && v.front() == ':' && v.back() == ':') {
    auto der = Base64Decode(v.substr(1, v.size() - 2));
    if (!der || der->empty()) return Status::Unauthenticated("client certificate header: not base64");
    return std::move(*der);
  }

  // nginx $ssl_client_escaped_cert (and other proxies): percent-encoded PEM or base64.
  std::string unescaped;
  if (v.find('%') != std::string_view::npos) {
    auto d = PercentDecode(v);
    if (!d) return Status::Unauthenticated("client certificate header: bad percent-encoding");
    unescaped = std::move(*d);
    v = Trim(unescaped);
  }

  std::string_view b64 = v;
  constexpr std::string_view kBegin = "-----BEGIN";
  constexpr std::string_view kDashes = "-----";
  size_t begin = v.find(kBegin);
  if (begin != std::string_view::npos) {
    size_t label_end = v.find(kDashes, begin + kBegin.size());
    if (label_end == std::string_view::npos) {
      return Status::Unauthenticated("client certificate header: malformed PEM BEGIN line");
    }
    // Label separators may arrive as ' ' or, from form-style escapers, '+'.
    std::string_view label = v.substr(begin + kBegin.size(), label_end - begin - kBegin.size());
    while (!label.empty() && (label.front() == ' ' || label.front() == '+')) label.remove_prefix(1);
    if (label != "CERTIFICATE") {
      return Status::Unauthenticated("client certificate header: PEM block is not a CERTIFICATE");
    }
    size_t body = label_end + kDashes.size();
    size_t end = v.find("-----END", body);
    if (end == std::string_view::npos) {
      return Status::Unauthenticated("client certificate header: PEM without END line");
    }
    b64 = v.substr(body, end - body);  // the first certificate: the leaf
  }
  auto der = Base64Decode(b64);
  if (!der || der->empty()) return Status::Unauthenticated("client certificate header: not base64");
  return std::move(*der);
}

struct Signer {
  X509Ptr cert;
  std::string der;
};

// Digests a device may sign with: SHA-1 (what devices use) and SHA-2.
bool AllowedDigest(int nid) {
  return nid == NID_sha1 || nid == NID_sha224 || nid == NID_sha256 || nid == NID_sha384 ||
         nid == NID_sha512;
}

std::string AlgorithmName(const ASN1_OBJECT* obj) {
  int nid = OBJ_obj2nid(obj);
  if (nid != NID_undef) return OBJ_nid2sn(nid);
  char buf[80] = "";
  if (OBJ_obj2txt(buf, sizeof buf, obj, 1) <= 0) return "unknown";
  return buf;
}

// Refuses a signer whose digest (or signature algorithm's digest) is weak or
// unknown: MD5, MD4, MD2, ... are not accepted whatever the signature says.
Status CheckSignerAlgorithms(CMS_SignerInfo* si) {
  X509_ALGOR* digest = nullptr;
  X509_ALGOR* signature = nullptr;
  CMS_SignerInfo_get0_algs(si, nullptr, nullptr, &digest, &signature);
  if (digest == nullptr || signature == nullptr)
    return Status::Unauthenticated("Mdm-Signature: signer has no digest algorithm");
  const ASN1_OBJECT* digest_obj = nullptr;
  X509_ALGOR_get0(&digest_obj, nullptr, nullptr, digest);
  if (!AllowedDigest(OBJ_obj2nid(digest_obj)))
    return Status::Unauthenticated("Mdm-Signature: digest algorithm " + AlgorithmName(digest_obj) +
                                   " is not accepted (SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512 required)");
  // A combined algorithm (e.g. md5WithRSAEncryption) names its digest too.
  const ASN1_OBJECT* signature_obj = nullptr;
  X509_ALGOR_get0(&signature_obj, nullptr, nullptr, signature);
  int md_nid = NID_undef;
  if (OBJ_find_sigid_algs(OBJ_obj2nid(signature_obj), &md_nid, nullptr) == 1 && md_nid != NID_undef &&
      !AllowedDigest(md_nid))
    return Status::Unauthenticated("Mdm-Signature: signature algorithm " + AlgorithmName(signature_obj) +
                                   " is not accepted (SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512 required)");
  return Status::Ok();
}

// BIO_free_all as a deleter: frees a filter and the source below it.
void FreeBioChain(BIO* b) { BIO_free_all(b); }
using BioChainPtr = std::unique_ptr<BIO, OpensslDeleter<FreeBioChain>>;

// Checks the shape of a parsed Mdm-Signature and verifies it over body. certs
// are extra candidate signer certificates (may be null).
Status VerifyCms(CMS_ContentInfo* cms, STACK_OF(X509)* certs, std::string_view body) {
  if (OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed) {
    return Status::Unauthenticated("Mdm-Signature: CMS is not SignedData");
  }
  if (CMS_is_detached(cms) != 1) {
    ERR_clear_error();
    return Status::Unauthenticated("Mdm-Signature: signature is not detached");
  }
  STACK_OF(CMS_SignerInfo)* infos = CMS_get0_SignerInfos(cms);
  int signers = infos ? sk_CMS_SignerInfo_num(infos) : 0;
  if (signers != 1) {
    return Status::Unauthenticated("Mdm-Signature: expected exactly one signer, found " + std::to_string(signers));
  }
  ORCHARD_RETURN_IF_ERROR(CheckSignerAlgorithms(sk_CMS_SignerInfo_value(infos, 0)));
  // A read-only memory BIO over the caller's bytes (no copy of the body), under
  // a null filter: OpenSSL 3.0's CMS_verify makes its own copy of a memory BIO
  // and leaks it when it fails before hashing (an unknown or missing digest
  // algorithm: any client could make the server lose memory). A filter on
  // top is not a memory BIO, so that copy is never made.
  static constexpr char kEmpty[] = "";
  BioChainPtr content(BIO_new(BIO_f_null()));
  BIO* source = BIO_new_mem_buf(body.empty() ? kEmpty : body.data(), static_cast<int>(body.size()));
  if (!content || !source) {
    BIO_free(source);
    ERR_clear_error();
    return Status::Internal("Mdm-Signature: out of memory");
  }
  BIO_push(content.get(), source);  // content now owns source
  // The chain is verified separately (and cached); here only the signature.
  constexpr unsigned kFlags = CMS_DETACHED | CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY;
  if (CMS_verify(cms, certs, nullptr, content.get(), nullptr, kFlags) != 1) {
    unsigned long e = ERR_peek_error();
    if (ERR_GET_LIB(e) == ERR_LIB_CMS && ERR_GET_REASON(e) == CMS_R_SIGNER_CERTIFICATE_NOT_FOUND) {
      ERR_clear_error();
      return Status::Unauthenticated("Mdm-Signature: signer certificate not included");
    }
    return Status::Unauthenticated("Mdm-Signature: signature does not verify over the body (" + TakeOpensslError() +
                                   ")");
  }
  return Status::Ok();
}

// The (single) signer of a verified CMS, with a reference of its own.
X509Ptr SignerOf(CMS_ContentInfo* cms) {
  STACK_OF(X509)* certs = CMS_get0_signers(cms);
  X509* signer = (certs && sk_X509_num(certs) == 1) ? sk_X509_value(certs, 0) : nullptr;
  if (signer) X509_up_ref(signer);
  sk_X509_free(certs);  // the certificates themselves belong to the CMS
  ERR_clear_error();
  return X509Ptr(signer);
}

// The straightforward path: OpenSSL parses everything, including the embedded certificates.
Result<Signer> VerifySignatureDer(std::string_view der, std::string_view body) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(der.size())));
  if (!cms) {
    ERR_clear_error();
    return Status::Unauthenticated("Mdm-Signature: not a CMS structure");
  }
  ORCHARD_RETURN_IF_ERROR(VerifyCms(cms.get(), nullptr, body));
  X509Ptr signer = SignerOf(cms.get());
  if (!signer) return Status::Unauthenticated("Mdm-Signature: signer certificate not included");
  std::string signer_der = ToDer(signer.get());
  // As in ParseDer: the certificate must have been sent in exactly this encoding.
  if (signer_der.empty() || der.find(signer_der) == std::string_view::npos) {
    return Status::Unauthenticated("Mdm-Signature: signer certificate is not DER-encoded");
  }
  return Signer{std::move(signer), std::move(signer_der)};
}

// ---- Minimal DER walking, used only to lift the certificate set out of a
// SignedData so that already-parsed certificates can be reused: OpenSSL 3.0 spends
// most of a signature check decoding the embedded certificate's public key.
// Anything unexpected (BER, high tag numbers, odd layout) makes the caller fall
// back to the plain path, so this never decides whether a signature is valid.

struct Tlv {
  unsigned char tag = 0;
  size_t start = 0;   // offset of the tag byte
  size_t header = 0;  // tag + length bytes
  size_t length = 0;  // content bytes
  size_t content() const { return start + header; }
  size_t end() const { return start + header + length; }
};

bool ReadTlv(std::string_view in, size_t pos, size_t limit, Tlv* out) {
  if (limit > in.size() || pos >= limit || limit - pos < 2) return false;
  auto byte = [&](size_t i) { return static_cast<unsigned char>(in[i]); };
  Tlv t;
  t.tag = byte(pos);
  t.start = pos;
  if ((t.tag & 0x1F) == 0x1F) return false;  // high tag number form: not in SignedData's top level
  unsigned char l0 = byte(pos + 1);
  t.header = 2;
  if (l0 < 0x80) {
    t.length = l0;
  } else {
    size_t n = l0 & 0x7F;
    if (n == 0 || n > 4 || limit - pos - 2 < n) return false;  // indefinite (BER) or absurd
    for (size_t i = 0; i < n; ++i) t.length = (t.length << 8) | byte(pos + 2 + i);
    t.header += n;
  }
  if (t.length > limit - pos - t.header) return false;
  *out = t;
  return true;
}

size_t DerLengthSize(size_t len) {
  size_t n = 1;
  if (len >= 0x80) {
    for (size_t v = len; v != 0; v >>= 8) ++n;
  }
  return n;
}

void AppendDerLength(std::string* out, size_t len) {
  if (len < 0x80) {
    out->push_back(static_cast<char>(len));
    return;
  }
  unsigned char buf[sizeof(size_t)];
  int n = 0;
  for (size_t v = len; v != 0; v >>= 8) buf[n++] = static_cast<unsigned char>(v & 0xFF);
  out->push_back(static_cast<char>(0x80 | n));
  while (n > 0) out->push_back(static_cast<char>(buf[--n]));
}

// Splits a ContentInfo{SignedData} into the same structure without its
// certificate set (stripped) and the DER of each certificate in that set.
bool SplitCertificates(std::string_view der, std::string* stripped, std::vector<std::string_view>* certs) {
  static constexpr unsigned char kSignedDataOid[] = {0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02};
  Tlv ci, oid, wrap, sd, version, digests, encap, set;
  if (!ReadTlv(der, 0, der.size(), &ci) || ci.tag != 0x30) return false;
  if (!ReadTlv(der, ci.content(), ci.end(), &oid) || oid.tag != 0x06 || oid.end() - oid.start != sizeof kSignedDataOid ||
      std::memcmp(der.data() + oid.start, kSignedDataOid, sizeof kSignedDataOid) != 0) {
    return false;
  }
  if (!ReadTlv(der, oid.end(), ci.end(), &wrap) || wrap.tag != 0xA0 || wrap.end() != ci.end()) return false;
  if (!ReadTlv(der, wrap.content(), wrap.end(), &sd) || sd.tag != 0x30 || sd.end() != wrap.end()) return false;
  if (!ReadTlv(der, sd.content(), sd.end(), &version) || version.tag != 0x02) return false;
  if (!ReadTlv(der, version.end(), sd.end(), &digests) || digests.tag != 0x31) return false;
  if (!ReadTlv(der, digests.end(), sd.end(), &encap) || encap.tag != 0x30) return false;
  if (!ReadTlv(der, encap.end(), sd.end(), &set) || set.tag != 0xA0) return false;  // [0] IMPLICIT certificates

  certs->clear();
  for (size_t p = set.content(); p < set.end();) {
    Tlv cert;
    if (!ReadTlv(der, p, set.end(), &cert) || cert.tag != 0x30) return false;  // only plain Certificates
    certs->push_back(der.substr(cert.start, cert.end() - cert.start));
    p = cert.end();
  }
  if (certs->empty()) return false;

  // Re-encode the three enclosing headers around the remaining bytes, in one buffer.
  const size_t sd_len = (set.start - sd.content()) + (sd.end() - set.end());
  const size_t sd_total = 1 + DerLengthSize(sd_len) + sd_len;
  const size_t wrap_total = 1 + DerLengthSize(sd_total) + sd_total;
  const size_t ci_len = sizeof kSignedDataOid + wrap_total;
  stripped->clear();
  stripped->reserve(1 + DerLengthSize(ci_len) + ci_len);
  stripped->push_back(0x30);
  AppendDerLength(stripped, ci_len);
  stripped->append(reinterpret_cast<const char*>(kSignedDataOid), sizeof kSignedDataOid);
  stripped->push_back(static_cast<char>(0xA0));
  AppendDerLength(stripped, sd_total);
  stripped->push_back(0x30);
  AppendDerLength(stripped, sd_len);
  stripped->append(der.substr(sd.content(), set.start - sd.content()));
  stripped->append(der.substr(set.end(), sd.end() - set.end()));
  return true;
}

// Reads a whole file; errors name the file.
Result<std::string> ReadFile(const std::string& path) {
  std::unique_ptr<FILE, OpensslDeleter<fclose>> f(std::fopen(path.c_str(), "rb"));
  if (!f) return Status::InvalidArgument("device CA file " + path + ": cannot open: " + std::strerror(errno));
  std::string data;
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) data.append(buf, n);
  if (std::ferror(f.get())) {
    return Status::InvalidArgument("device CA file " + path + ": cannot read: " + std::strerror(errno));
  }
  return data;
}

class AuthenticatorImpl final : public Authenticator {
 public:
  AuthenticatorImpl(const Config& config, StorePtr store, size_t ca_count)
      : config_(config),
        store_(std::move(store)),
        ca_count_(ca_count),
        parsed_limit_(std::min(config.cache_entries, kParsedCertLimit)) {
    if (config_.cache_entries > 0) cache_.reserve(std::min<size_t>(config_.cache_entries, 1 << 16));
  }

  Result<Identity> Identify(const Presented& presented) override;

 private:
  // The full path: decode, compare sources, cached chain verification.
  Result<Identity> IdentifySlow(const Presented& presented);
  struct CacheEntry {
    std::string cert_sha256;
    std::string subject;
    int64_t not_after_unix;
    int64_t expires_unix;  // earliest notAfter in the verified chain
  };

  // Parsed certificates kept for reuse by the signature path. A parsed X509 costs
  // ~5 KB, so this is bounded much tighter than the identity cache; it only has
  // to span a device's burst of requests in one MDM session.
  static constexpr size_t kParsedCertLimit = 4096;

  // Same contract as VerifySignatureDer, faster for certificates seen recently.
  Result<Signer> VerifySignature(std::string_view signature_b64, std::string_view body);
  // The parsed certificate for exactly these DER bytes (shared reference), or null.
  X509Ptr ParsedCert(std::string_view der);
  // Verifies leaf against the CA store; on success sets *chain_not_after.
  Status VerifyChain(X509* leaf, int64_t* chain_not_after) const;
  bool Lookup(const CertHash& key, int64_t now, Identity* out);
  void Insert(const CertHash& key, CacheEntry entry);

  const Config config_;
  const StorePtr store_;  // X509_STORE locks internally; shared by all calls
  const size_t ca_count_;
  const size_t parsed_limit_;

  std::mutex mu_;
  std::unordered_map<CertHash, CacheEntry, CertHashHasher> cache_;  // guarded by mu_

  // Header-only requests (the proxy deployment) skip decoding: the raw header
  // value maps straight to its certificate hash. Bounded; a miss costs a decode.
  static constexpr size_t kHeaderIndexLimit = 32768;
  std::mutex header_mu_;
  std::unordered_map<std::string, CertHash> header_index_;  // guarded by header_mu_

  // X509 objects are only read after parsing, so sharing them across threads is safe.
  std::mutex parsed_mu_;
  std::unordered_map<CertHash, X509Ptr, CertHashHasher> parsed_;  // guarded by parsed_mu_
};

X509Ptr AuthenticatorImpl::ParsedCert(std::string_view der) {
  CertHash key;
  SHA256(reinterpret_cast<const unsigned char*>(der.data()), der.size(), key.data());
  {
    std::lock_guard<std::mutex> lock(parsed_mu_);
    auto it = parsed_.find(key);
    if (it != parsed_.end()) {
      X509_up_ref(it->second.get());
      return X509Ptr(it->second.get());
    }
  }
  X509Ptr x = ParseDer(der);  // slow under OpenSSL 3.0: outside the lock
  if (!x || parsed_limit_ == 0) return x;
  std::lock_guard<std::mutex> lock(parsed_mu_);
  if (parsed_.size() >= parsed_limit_ && parsed_.find(key) == parsed_.end()) parsed_.erase(parsed_.begin());
  auto [it, inserted] = parsed_.try_emplace(key);
  if (inserted) {
    X509_up_ref(x.get());
    it->second.reset(x.get());
  }
  return x;
}

Result<Signer> AuthenticatorImpl::VerifySignature(std::string_view signature_b64, std::string_view body) {
  auto der = Base64Decode(Trim(signature_b64));
  if (!der || der->empty()) return Status::Unauthenticated("Mdm-Signature: not base64");
  if (parsed_limit_ == 0) return VerifySignatureDer(*der, body);

  std::string stripped;
  std::vector<std::string_view> slices;
  if (!SplitCertificates(*der, &stripped, &slices)) return VerifySignatureDer(*der, body);
  std::vector<X509Ptr> held;
  held.reserve(slices.size());
  CertStackPtr stack(sk_X509_new_reserve(nullptr, static_cast<int>(slices.size())));
  if (!stack) return VerifySignatureDer(*der, body);
  for (std::string_view slice : slices) {
    X509Ptr x = ParsedCert(slice);
    if (!x) return VerifySignatureDer(*der, body);  // let the plain path report it
    sk_X509_push(stack.get(), x.get());
    held.push_back(std::move(x));
  }
  const auto* p = reinterpret_cast<const unsigned char*>(stripped.data());
  CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(stripped.size())));
  if (!cms) {
    ERR_clear_error();
    return VerifySignatureDer(*der, body);
  }
  // Same verification as the plain path, with the message's own certificates
  // handed over already parsed instead of embedded.
  ORCHARD_RETURN_IF_ERROR(VerifyCms(cms.get(), stack.get(), body));
  X509Ptr signer = SignerOf(cms.get());
  if (!signer) return Status::Unauthenticated("Mdm-Signature: signer certificate not included");
  for (size_t i = 0; i < held.size(); ++i) {
    if (held[i].get() == signer.get()) return Signer{std::move(signer), std::string(slices[i])};
  }
  return VerifySignatureDer(*der, body);  // not reached: the signer is one of ours
}

Status AuthenticatorImpl::VerifyChain(X509* leaf, int64_t* chain_not_after) const {
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store_.get(), leaf, nullptr) != 1) {
    ERR_clear_error();
    return Status::Internal("device certificate: cannot initialise verification");
  }
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    int depth = X509_STORE_CTX_get_error_depth(ctx.get());
    ERR_clear_error();
    std::string msg = std::string("device certificate not trusted: ") + X509_verify_cert_error_string(err);
    if (depth > 0) msg += " (at chain depth " + std::to_string(depth) + ")";
    return Status::Unauthenticated(std::move(msg));
  }
  int64_t earliest = ToUnix(X509_get0_notAfter(leaf));
  if (STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx.get())) {
    for (int i = 0; i < sk_X509_num(chain); ++i) {
      earliest = std::min(earliest, ToUnix(X509_get0_notAfter(sk_X509_value(chain, i))));
    }
  }
  *chain_not_after = earliest;
  return Status::Ok();
}

bool AuthenticatorImpl::Lookup(const CertHash& key, int64_t now, Identity* out) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cache_.find(key);
  if (it == cache_.end()) return false;
  if (now > it->second.expires_unix) {
    cache_.erase(it);  // re-verify: the chain check reports the expiry precisely
    return false;
  }
  out->anonymous = false;
  out->cert_sha256 = it->second.cert_sha256;
  out->subject = it->second.subject;
  out->not_after_unix = it->second.not_after_unix;
  return true;
}

void AuthenticatorImpl::Insert(const CertHash& key, CacheEntry entry) {
  if (config_.cache_entries == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_.size() >= config_.cache_entries && cache_.find(key) == cache_.end()) {
    cache_.erase(cache_.begin());  // arbitrary victim: cheap, and a miss only costs a re-verify
  }
  cache_.insert_or_assign(key, std::move(entry));
}

Result<Identity> AuthenticatorImpl::Identify(const Presented& presented) {
  const bool header_only = !presented.cert_header.empty() && presented.mdm_signature.empty() &&
                           presented.tls_peer == nullptr;
  if (header_only && config_.cache_entries > 0) {
    CertHash key;
    bool indexed = false;
    {
      std::lock_guard<std::mutex> lock(header_mu_);
      auto it = header_index_.find(std::string(presented.cert_header));
      if (it != header_index_.end()) {
        key = it->second;
        indexed = true;
      }
    }
    Identity identity;
    if (indexed && Lookup(key, static_cast<int64_t>(std::time(nullptr)), &identity)) return identity;
  }
  auto result = IdentifySlow(presented);
  if (header_only && result.ok() && config_.cache_entries > 0) {
    CertHash key;
    auto raw = HexDecode(result->cert_sha256);
    if (raw && raw->size() == key.size()) {
      std::memcpy(key.data(), raw->data(), key.size());
      std::lock_guard<std::mutex> lock(header_mu_);
      if (header_index_.size() >= kHeaderIndexLimit) header_index_.clear();
      header_index_.emplace(std::string(presented.cert_header), key);
    }
  }
  return result;
}

Result<Identity> AuthenticatorImpl::IdentifySlow(const Presented& presented) {
  // 1. Collect every presented certificate as DER.
  std::string header_der, signer_der, tls_der;
  X509Ptr signer_cert;
  bool have_header = false, have_signer = false, have_tls = false;

  if (!presented.cert_header.empty()) {
    auto der = DecodeCertHeader(presented.cert_header);
    if (!der.ok()) {
      log::Warn(kLog, "event=auth_failed source=header reason=\"{}\"", der.status().message());
      return der.status();
    }
    header_der = std::move(der).value();
    have_header = true;
  }
  if (!presented.mdm_signature.empty()) {
    auto signer = VerifySignature(presented.mdm_signature, presented.body);
    if (!signer.ok()) {
      log::Warn(kLog, "event=auth_failed source=mdm_signature reason=\"{}\" body_bytes={}", signer.status().message(),
                presented.body.size());
      return signer.status();
    }
    signer_cert = std::move(signer->cert);
    signer_der = std::move(signer->der);
    have_signer = true;
  }
  if (presented.tls_peer != nullptr) {
    tls_der = ToDer(presented.tls_peer);
    if (tls_der.empty()) return Status::Unauthenticated("TLS client certificate: cannot be encoded");
    have_tls = true;
  }

  if (!have_header && !have_signer && !have_tls) {
    if (config_.insecure_allow_anonymous) {
      Identity anonymous;
      anonymous.anonymous = true;
      return anonymous;
    }
    return Status::Unauthenticated("no device certificate presented");
  }

  // 2. Everything presented must be the same certificate.
  struct Source {
    const char* name;
    const std::string* der;
  };
  std::array<Source, 3> sources{};
  size_t n = 0;
  if (have_header) sources[n++] = {"client certificate header", &header_der};
  if (have_signer) sources[n++] = {"Mdm-Signature signer", &signer_der};
  if (have_tls) sources[n++] = {"TLS client certificate", &tls_der};
  for (size_t i = 1; i < n; ++i) {
    if (*sources[i].der == *sources[0].der) continue;
    // A header that is not a certificate at all deserves the precise error.
    if (have_header && !ParseDer(header_der)) return HeaderCertError(header_der);
    std::string msg = std::string("certificates disagree: ") + sources[0].name + " and " + sources[i].name +
                      " are different certificates";
    log::Warn(kLog, "event=auth_failed reason=certificates_disagree first={} first_sha256={} second={} second_sha256={}",
              sources[0].name, Sha256Hex(*sources[0].der), sources[i].name, Sha256Hex(*sources[i].der));
    return Status::PermissionDenied(std::move(msg));
  }
  const std::string& der = *sources[0].der;

  // 3. Cached chain verification.
  CertHash key;
  SHA256(reinterpret_cast<const unsigned char*>(der.data()), der.size(), key.data());
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  Identity identity;
  if (Lookup(key, now, &identity)) return identity;

  // 4. Miss: parse (if nobody has yet) and verify the chain.
  X509* leaf = signer_cert ? signer_cert.get() : presented.tls_peer;
  X509Ptr parsed;
  if (leaf == nullptr) {
    parsed = ParseDer(der);
    if (!parsed) return HeaderCertError(der);
    leaf = parsed.get();
  }
  const std::string cert_hex = HexEncode(std::string_view(reinterpret_cast<const char*>(key.data()), key.size()));

  int64_t expires = ToUnix(X509_get0_notAfter(leaf));
  if (!config_.insecure_skip_chain) {
    if (ca_count_ == 0) return Status::Unauthenticated("no device CA configured");
    Status st = VerifyChain(leaf, &expires);
    if (!st.ok()) {
      log::Warn(kLog, "event=auth_failed reason=\"{}\" cert_sha256={}", st.message(), cert_hex);
      return st;
    }
  }

  identity.anonymous = false;
  identity.cert_sha256 = cert_hex;
  identity.subject = SubjectOf(leaf);
  identity.not_after_unix = ToUnix(X509_get0_notAfter(leaf));
  Insert(key, CacheEntry{identity.cert_sha256, identity.subject, identity.not_after_unix, expires});
  return identity;
}

}  // namespace

Result<std::string> ParseCertHeader(std::string_view value) {
  auto der = DecodeCertHeader(value);
  if (!der.ok()) return der.status();
  if (!ParseDer(*der)) return HeaderCertError(*der);
  return der;
}

Result<std::string> VerifyMdmSignature(std::string_view signature_b64, std::string_view body) {
  auto der = Base64Decode(Trim(signature_b64));
  if (!der || der->empty()) return Status::Unauthenticated("Mdm-Signature: not base64");
  auto signer = VerifySignatureDer(*der, body);
  if (!signer.ok()) return signer.status();
  return std::move(signer->der);
}

Result<std::unique_ptr<Authenticator>> Authenticator::Create(const Config& config) {
  StorePtr store(X509_STORE_new());
  if (!store) {
    ERR_clear_error();
    return Status::Internal("auth: cannot allocate certificate store");
  }
  // The configured CAs are the trust anchors even when they are intermediates
  // (a SCEP CA under an organisation root): the operator named them explicitly.
  X509_STORE_set_flags(store.get(), X509_V_FLAG_PARTIAL_CHAIN);

  size_t total = 0;
  for (const std::string& path : config.device_ca_files) {
    auto data = ReadFile(path);
    if (!data.ok()) return data.status();
    BioPtr bio(BIO_new_mem_buf(data->data(), static_cast<int>(data->size())));
    if (!bio) return Status::Internal("auth: out of memory reading " + path);
    size_t in_file = 0;
    for (;;) {
      X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
      if (!cert) {
        unsigned long e = ERR_peek_last_error();
        ERR_clear_error();
        if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) break;  // end of file
        return Status::InvalidArgument("device CA file " + path + ": certificate #" + std::to_string(in_file + 1) +
                                       " is malformed");
      }
      if (X509_check_ca(cert.get()) == 0) {
        log::Warn(kLog, "event=ca_not_a_ca file={} subject=\"{}\"", path, SubjectOf(cert.get()));
      }
      if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) < 0) {
        log::Warn(kLog, "event=ca_expired file={} subject=\"{}\"", path, SubjectOf(cert.get()));
      }
      if (X509_STORE_add_cert(store.get(), cert.get()) != 1) {
        std::string why = TakeOpensslError();
        return Status::InvalidArgument("device CA file " + path + ": cannot add certificate #" +
                                       std::to_string(in_file + 1) + ": " + why);
      }
      ++in_file;
    }
    if (in_file == 0) return Status::InvalidArgument("device CA file " + path + ": no certificate found");
    total += in_file;
  }
  for (const std::string& der : config.device_ca_ders) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    if (!cert || X509_STORE_add_cert(store.get(), cert.get()) != 1) {
      std::string why = TakeOpensslError();
      return Status::InvalidArgument("device CA certificate #" + std::to_string(total + 1) + ": " + why);
    }
    ++total;
  }

  if (config.insecure_allow_anonymous) log::Warn(kLog, "event=insecure_mode setting=insecure_allow_anonymous");
  if (config.insecure_skip_chain) log::Warn(kLog, "event=insecure_mode setting=insecure_skip_chain");
  if (total == 0 && !config.insecure_skip_chain) {
    log::Warn(kLog, "event=no_device_ca detail=\"every presented certificate will be refused\"");
  }
  log::Info(kLog, "event=auth_ready ca_files={} ca_builtin={} ca_certs={} cache_entries={}",
            config.device_ca_files.size(), config.device_ca_ders.size(), total, config.cache_entries);
  return std::unique_ptr<Authenticator>(std::make_unique<AuthenticatorImpl>(config, std::move(store), total));
}


Result<CertSummary> SummarizeCertificate(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509Ptr x(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!x || p != reinterpret_cast<const unsigned char*>(der.data()) + der.size())
    return Status::InvalidArgument("not a DER certificate");
  CertSummary out;
  out.not_after_unix = ToUnix(X509_get0_notAfter(x.get()));
  char cn[256] = {0};
  if (X509_NAME* name = X509_get_subject_name(x.get()))
    if (X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof cn) < 0) cn[0] = '\0';
  out.common_name = cn;
  out.sha256 = Sha256Hex(der);
  return out;
}

}  // namespace orchard::auth
