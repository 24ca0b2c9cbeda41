// A SCEP client (RFC 8894) written on OpenSSL, independent of Orchard's server code:
// builds PKCSReq / RenewalReq messages (CSR with challengePassword, enveloped to the
// CA, signed by a self-signed or an existing certificate), sends them over HTTP
// (libcurl, keep-alive) and checks the CertRep (signed by the CA, transactionID and
// nonces, pkiStatus, failInfo), decrypting the issued certificate on success.
// Used by the SCEP tests, the benchmark and the device simulator.
//
// Thread-safety: a ScepClient is used by one thread at a time (it owns one
// connection); the free function Enroll creates its own.
#pragma once

#include <memory>
#include <string>

#include "support/test_pki.h"
#include "util/status.h"

typedef struct x509_st X509;

namespace orchard::testing {

enum class ScepKeyType { kRsa, kEcP256, kEcP384 };

struct ScepKeySpec {
  ScepKeyType type = ScepKeyType::kRsa;
  int rsa_bits = 2048;
};

struct ScepRequest {
  std::string challenge;            // challengePassword ("" = none)
  ScepKeySpec key;                  // the key to generate ...
  std::string key_pem;              // ... unless a key is given (PEM)
  std::string subject = "CN=device";  // "CN=x,O=y" (comma-separated attribute=value)
  // RenewalReq: signed with this existing certificate and key (not a self-signed one).
  const Identity* renew_with = nullptr;
  // Test knobs.
  std::string cipher = "aes-256-cbc";  // envelope cipher (e.g. "aes-128-cbc", "des-ede3-cbc")
  std::string digest = "sha256";       // signature digest (e.g. "sha1", "sha512")
  bool use_get = false;                // PKIOperation via GET ?message= instead of POST
  bool corrupt_signature = false;      // flip the last byte of the signature
  std::string message_type;            // override the messageType ("" = 19 or 17)
};

struct ScepResult {
  long http_status = 0;
  int pki_status = -1;        // 0 SUCCESS, 2 FAILURE, 3 PENDING; -1 when not a CertRep
  int fail_info = -1;         // failInfo on FAILURE
  Identity identity;          // the issued certificate and its key, on SUCCESS
  std::string transaction_id;
  std::string body;           // the raw answer when it was not a CertRep (e.g. HTTP 400)
};

class ScepClient {
 public:
  // url: the SCEP endpoint, e.g. http://127.0.0.1:9000/scep
  explicit ScepClient(std::string url);
  ~ScepClient();

  Result<std::string> GetCaCaps();
  // The CA certificate (DER); fetched once, then cached.
  Result<std::string> GetCaCert();
  // One PKCSReq (or RenewalReq with request.renew_with). A SCEP FAILURE is a
  // successful Result with pki_status 2; errors are transport or protocol faults
  // (an answer not signed by the CA, wrong nonces, ...).
  Result<ScepResult> Enroll(const ScepRequest& request);
  // Sends raw bytes as a PKIOperation (POST) and returns the HTTP status and body.
  Result<std::pair<long, std::string>> PostRaw(const std::string& body);
  // The DER message Enroll would send (for fuzz seeds); *key_pem gets the key used.
  Result<std::string> BuildMessage(const ScepRequest& request, std::string* key_pem);

 private:
  Result<X509*> CaCertificate();  // parsed once; owned by the client

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One-shot convenience: GetCACert then PKCSReq (or RenewalReq with renew_with).
Result<ScepResult> Enroll(const std::string& url, const std::string& challenge, ScepKeySpec key = {},
                          const std::string& subject = "CN=device", const Identity* renew_with = nullptr);

}  // namespace orchard::testing
