// DeviceCa: the certificate authority that issues device identity certificates.
//
// Either generated on first start (RSA 2048 — SCEP's enveloped requests need
// RSA key transport —, self-signed, 10 years, basicConstraints CA:TRUE critical,
// keyUsage keyCertSign, cRLSign, digitalSignature, keyEncipherment) and kept in
// <dir>/device-ca.pem and <dir>/device-ca.key (mode 0600; the key sealed with the
// SecretBox when a key-encryption key is configured), or a certificate and RSA key
// the admin provides (PEM files; the key may not be encrypted).
//
// Thread-safety: immutable after Load; Issue may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "util/secret_box.h"
#include "util/status.h"

typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct X509_name_st X509_NAME;
typedef struct X509_pubkey_st X509_PUBKEY;

namespace orchard::enroll {

struct CaOptions {
  // Where a generated CA lives (created 0700 if missing), e.g. <data_dir>/ca.
  std::string dir;
  // Admin-provided CA (both or neither): PEM certificate and PEM (unencrypted) RSA key.
  std::string cert_file, key_file;
  // Seals a generated key at rest; borrowed, may be null (then the key is stored in
  // the clear, mode 0600, and a warning is logged).
  const SecretBox* box = nullptr;
  std::string common_name = "Orchard Device CA";
};

// What the CA puts into an issued certificate besides what the caller gives.
struct IssueRequest {
  EVP_PKEY* public_key = nullptr;       // borrowed: the requester's key (from the CSR)
  const X509_NAME* subject = nullptr;   // borrowed: copied as is (may be empty)
  int64_t validity_days = 365;          // capped at the CA's own notAfter
  int64_t now_ms = 0;
  // Optional, borrowed: the same key as encoded in the CSR; when set it is copied into
  // the certificate as is (OpenSSL 3.0 would otherwise encode and decode the key again,
  // which costs about as much as an RSA signature).
  const X509_PUBKEY* public_key_info = nullptr;
};

struct IssuedDer {
  std::string der, serial_hex, sha256, subject;  // subject: RFC 2253 one-line
  int64_t not_before_ms = 0, not_after_ms = 0;
};

class DeviceCa {
 public:
  // Loads the provided CA, or the generated one from options.dir, creating it on the
  // first start. Errors name the file and what to do (InvalidArgument, Io,
  // Unavailable when the key is sealed and no key-encryption key is configured).
  static Result<std::unique_ptr<DeviceCa>> Load(const CaOptions& options);
  ~DeviceCa();

  const std::string& cert_der() const { return cert_der_; }
  const std::string& cert_pem() const { return cert_pem_; }
  const std::string& sha256() const { return sha256_; }  // of the CA certificate DER
  bool generated() const { return generated_; }          // false: admin-provided
  // Borrowed, valid as long as the DeviceCa (for the SCEP server's CMS operations).
  X509* cert() const;
  EVP_PKEY* key() const;

  // Signs a certificate: random positive 128-bit serial, notBefore now - 5 min,
  // basicConstraints CA:FALSE, keyUsage digitalSignature (+ keyEncipherment for RSA
  // keys), extendedKeyUsage clientAuth, subject and authority key identifiers; SHA-256.
  // Errors: InvalidArgument (no key), Internal (OpenSSL).
  Result<IssuedDer> Issue(const IssueRequest& request) const;

 private:
  DeviceCa();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string cert_der_, cert_pem_, sha256_;
  bool generated_ = false;
};

}  // namespace orchard::enroll
