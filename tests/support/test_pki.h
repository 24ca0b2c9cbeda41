// Test PKI: an in-memory certificate authority that issues device identity
// certificates, plus helpers to present them the way devices and proxies do.
// Used by unit tests, integration tests, the device simulator and benchmarks.
// Not for production. Thread-safety: a TestCa may issue from several threads
// (issuing takes an internal lock); Identity values are immutable after creation.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace orchard::testing {

struct Identity {
  std::string cert_pem;  // leaf certificate, PEM
  std::string key_pem;   // private key, PEM (unencrypted)
  std::string cert_der;  // leaf certificate, DER

  // RFC 9440 header value: ":<base64 DER>:"
  std::string Rfc9440Header() const;
  // nginx $ssl_client_escaped_cert style: URL-escaped PEM.
  std::string EscapedPemHeader() const;
  // Base64 of a detached CMS SignedData over body, signer cert included,
  // as devices send in Mdm-Signature. sha1=true signs with SHA-1 like devices do.
  std::string MdmSignature(std::string_view body, bool sha1 = true) const;
  // The same with any digest OpenSSL knows by name ("MD5", "SHA1", "SHA384", ...).
  // Digests without an ECDSA signature OID (MD5) need an RSA identity (IssueOptions::rsa_key).
  std::string MdmSignatureWith(std::string_view body, const char* digest_name) const;
  // A PKCS#12 (DER) bundle of the certificate and key, protected by password.
  std::string Pkcs12(const std::string& password) const;
  // SHA-256 of the DER, lower-case hex (the binding key Orchard stores).
  std::string Sha256Hex() const;
};

struct IssueOptions {
  std::string common_name = "device";
  int64_t not_before_offset_s = -3600;       // relative to now
  int64_t not_after_offset_s = 365 * 86400;  // relative to now
  bool client_auth_eku = true;               // extendedKeyUsage clientAuth
  bool server_auth_eku = false;              // also add serverAuth (for TLS servers)
  std::string dns_name;                      // subjectAltName DNS (for server certs)
  bool empty_subject = false;                // some device certs have an empty subject
  std::string uid;                           // subject UID (NID_userId), e.g. an APNs push topic
  bool rsa_key = false;                      // RSA 2048 instead of EC P-256 (as real devices have)
};

class TestCa {
 public:
  // Creates a self-signed CA (EC P-256) named `name`.
  static std::unique_ptr<TestCa> Create(const std::string& name);
  // Loads an existing CA from PEM cert + key (e.g. files from scripts/gen-dev-certs).
  static std::unique_ptr<TestCa> Load(const std::string& cert_pem, const std::string& key_pem);
  ~TestCa();

  Identity Issue(const IssueOptions& options = {});
  const std::string& cert_pem() const { return cert_pem_; }
  const std::string& key_pem() const { return key_pem_; }
  // Writes cert_pem() to path; returns false on I/O error.
  bool WriteCertPem(const std::string& path) const;

 private:
  TestCa() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string cert_pem_, key_pem_;
  std::mutex mu_;
};

}  // namespace orchard::testing
