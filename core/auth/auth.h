// Device identity: which certificate is talking to us, and is it one we trust.
//
// A device proves its identity by its MDM identity certificate, which reaches
// orchardd in one of three ways:
//   1. a TLS-terminating proxy forwards it in a header (RFC 9440 ":base64DER:"
//      or nginx's URL-escaped PEM, $ssl_client_escaped_cert);
//   2. the Mdm-Signature header: base64 CMS detached SignedData over the exact
//      request body, signer certificate inside (devices sign with SHA-1; SHA-2
//      is accepted too, weaker digests such as MD5 are refused);
//   3. native TLS client authentication (the caller passes the peer X509).
// When more than one is present they must name the same certificate.
// The certificate chain is verified against the configured device CA(s) with
// validity dates and the clientAuth purpose. Verified chains are cached by
// certificate hash until the certificate's notAfter (bounded cache).
//
// Binding a certificate to an enrollment is the protocol layer's job (it owns
// the store); this module only says who the caller is.
// Thread-safety: Authenticator::Identify may be called from many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

typedef struct x509_st X509;

namespace orchard::auth {

struct Config {
  // PEM files, each holding one or more CA certificates that issue device identities.
  std::vector<std::string> device_ca_files;
  // DER CA certificates trusted in addition to the files (Orchard's own device CA).
  std::vector<std::string> device_ca_ders;
  // Development only: accept requests without any certificate (Identity.anonymous).
  // Certificates that *are* presented are still parsed and must verify.
  bool insecure_allow_anonymous = false;
  // Development only: skip chain verification (signatures are still checked).
  bool insecure_skip_chain = false;
  size_t cache_entries = 100000;
};

struct Identity {
  bool anonymous = false;     // no certificate presented (insecure mode only)
  std::string cert_sha256;    // lower-case hex SHA-256 of the leaf DER
  std::string subject;        // one-line subject, may be empty
  int64_t not_after_unix = 0; // seconds
};

struct Presented {
  std::string_view cert_header;    // raw value of the configured proxy header, or empty
  std::string_view mdm_signature;  // raw Mdm-Signature header value, or empty
  std::string_view body;           // exact request body (for Mdm-Signature)
  X509* tls_peer = nullptr;        // borrowed; native TLS client cert, or null
};

class Authenticator {
 public:
  // Loads the CA files; a missing/unreadable/empty file is an error naming it.
  // With no CA files, only insecure modes can succeed.
  static Result<std::unique_ptr<Authenticator>> Create(const Config& config);
  virtual ~Authenticator() = default;

  // Errors: Unauthenticated (nothing presented, bad encoding, bad signature,
  // untrusted/expired chain, wrong purpose) or PermissionDenied (presented
  // certificates disagree). The message says precisely what failed.
  virtual Result<Identity> Identify(const Presented& presented) = 0;
};

// Parses a proxy header value: RFC 9440 ":base64DER:", URL-escaped PEM, or plain
// PEM / bare base64 DER. Returns the DER bytes.
Result<std::string> ParseCertHeader(std::string_view value);

// Verifies a detached CMS signature (base64 DER of SignedData) over body and
// returns the signer certificate's DER. Accepts SHA-1 (what devices use) and
// SHA-224/256/384/512 digests; any other (MD5, MD4, MD2, unknown) is refused.
// Does not verify the chain.
Result<std::string> VerifyMdmSignature(std::string_view signature_b64, std::string_view body);

// What Orchard needs to know of a certificate a device reports (CertificateList).
struct CertSummary {
  int64_t not_after_unix = 0;
  std::string common_name;  // may be empty
  std::string sha256;       // lower-case hex of the DER
};
// InvalidArgument for bytes that are not one DER certificate.
Result<CertSummary> SummarizeCertificate(std::string_view der);

}  // namespace orchard::auth
