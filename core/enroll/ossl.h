// OpenSSL helpers shared by the enroll module's sources (internal header).
#pragma once

#include <openssl/err.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "util/openssl_ptr.h"

namespace orchard::enroll {

using ReqPtr = std::unique_ptr<X509_REQ, OpensslDeleter<X509_REQ_free>>;
using Pkcs7Ptr = std::unique_ptr<PKCS7, OpensslDeleter<PKCS7_free>>;
using NamePtr = std::unique_ptr<X509_NAME, OpensslDeleter<X509_NAME_free>>;
using BnPtr = std::unique_ptr<BIGNUM, OpensslDeleter<BN_free>>;
inline void FreeCertStack(STACK_OF(X509) * s) { sk_X509_free(s); }  // the stack only
using CertStackPtr = std::unique_ptr<STACK_OF(X509), OpensslDeleter<FreeCertStack>>;
inline void FreeCertStackAll(STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); }
using OwnedCertStackPtr = std::unique_ptr<STACK_OF(X509), OpensslDeleter<FreeCertStackAll>>;

// The reason of the oldest queued OpenSSL error, then clears the thread's queue.
inline std::string TakeOpensslError() {
  unsigned long e = ERR_get_error();
  const char* reason = e ? ERR_reason_error_string(e) : nullptr;
  std::string out = reason ? reason : (e ? "error " + std::to_string(ERR_GET_REASON(e)) : "unknown error");
  ERR_clear_error();
  return out;
}

inline int64_t AsnTimeToMs(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

inline std::string CertDer(X509* cert) {
  unsigned char* p = nullptr;
  int n = i2d_X509(cert, &p);
  if (n <= 0) return {};
  std::string out(reinterpret_cast<char*>(p), static_cast<size_t>(n));
  OPENSSL_free(p);
  return out;
}

inline std::string BioText(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return n > 0 ? std::string(p, static_cast<size_t>(n)) : std::string();
}

// RFC 2253 one-line form, at most max_bytes (longer subjects are cut).
inline std::string NameText(const X509_NAME* name, size_t max_bytes = 1024) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || X509_NAME_print_ex(b.get(), name, 0, XN_FLAG_RFC2253) < 0) return {};
  std::string s = BioText(b.get());
  if (s.size() > max_bytes) s.resize(max_bytes);
  return s;
}

// Canonical serial: lower-case hex without leading zeros ("0" for zero).
inline std::string SerialHex(const ASN1_INTEGER* serial) {
  BnPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn) return {};
  char* hex = BN_bn2hex(bn.get());
  if (!hex) return {};
  std::string s(hex);
  OPENSSL_free(hex);
  for (char& c : s)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  size_t i = 0;
  while (i + 1 < s.size() && s[i] == '0') ++i;
  return s.substr(i);
}

}  // namespace orchard::enroll
