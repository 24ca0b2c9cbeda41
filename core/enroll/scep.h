// The SCEP server (RFC 8894) behind /scep on the device listener.
//
//   GET  ?operation=GetCACaps       capabilities, text/plain
//   GET  ?operation=GetCACert       the device CA certificate, DER (application/x-x509-ca-cert)
//   POST ?operation=PKIOperation    body: DER CMS SignedData (application/x-pki-message)
//   GET  ?operation=PKIOperation&message=<base64 of the same>
//
// PKIOperation handles PKCSReq (challenge required: static or one-time) and
// RenewalReq (signed with an unrevoked, unexpired certificate Orchard issued; no
// challenge). The answer is a CertRep signed by the CA: SUCCESS with the issued
// certificate in a degenerate certs-only SignedData enveloped to the requester, or
// FAILURE with a failInfo. Bad client input always gets a SCEP FAILURE, or HTTP 400
// when the message is too broken to answer in SCEP (no transactionID or
// senderNonce); never a 500 unless storage fails.
//
// Thread-safety: Handle may be called concurrently (one HTTP worker each). Borrows
// its dependencies, which must outlive it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "enroll/ca.h"
#include "enroll/challenges.h"
#include "enroll/issued.h"
#include "util/status.h"

namespace orchard::enroll {

// The capabilities GetCACaps announces (one per line).
extern const char kCaCaps[];

// SCEP failInfo values (RFC 8894 3.2.1.4.5).
enum class FailInfo : int { kBadAlg = 0, kBadMessageCheck = 1, kBadRequest = 2, kBadTime = 3, kBadCertId = 4 };

// The outcome of one SCEP request, for metrics (orchard_scep_requests_total{outcome}).
enum class ScepOutcome : int {
  kCaCaps = 0,
  kCaCert,
  kIssued,          // PKCSReq answered SUCCESS
  kRenewed,         // RenewalReq answered SUCCESS
  kUnparseable,     // HTTP 400: not a SCEP message at all
  kBadSignature,    // FAILURE badMessageCheck
  kBadAlg,          // FAILURE badAlg (cipher, digest or key type/size)
  kBadRequest,      // FAILURE badRequest (CSR, message type, ...)
  kChallengeMissing,
  kChallengeWrong,
  kChallengeExpired,
  kChallengeReused,
  kRenewalRefused,  // FAILURE badCertId/badTime: signer not ours, revoked or expired
  kStorage,         // HTTP 500/503: storage failed
  kBadHttp,         // HTTP 400/405: unknown operation, bad method, too large
  kCount
};
const char* ScepOutcomeName(ScepOutcome o);

struct ScepOptions {
  int64_t cert_validity_days = 365;
  size_t max_message_bytes = 64 * 1024;  // a PKIOperation message (DER)
};

struct ScepDeps {
  const DeviceCa* ca;
  IssuedCerts* issued;
  Challenges* challenges;
  store::Store* store;
};

struct ScepReply {
  int status = 200;
  std::string content_type;
  std::string body;
  ScepOutcome outcome = ScepOutcome::kBadHttp;
  std::string reason;  // why a request was refused (for logs; never a secret)
  std::string serial;  // the issued certificate's serial on success
};

// Object identifiers of SCEP's attributes (2.16.840.1.113733.1.9.x), registered
// with OpenSSL once per process (thread-safe; later calls return the same NIDs).
struct ScepNids {
  int message_type, pki_status, fail_info, sender_nonce, recipient_nonce, transaction_id;
};
const ScepNids& RegisterScepOids();

class ScepServer {
 public:
  ScepServer(const ScepOptions& options, const ScepDeps& deps);

  // method: "GET" | "POST"; operation and message: the decoded query parameters.
  ScepReply Handle(std::string_view method, std::string_view operation, std::string_view message,
                   std::string_view body);
  // PKIOperation on a DER message (what Handle does for POST and GET alike).
  ScepReply PkiOperation(std::string_view der);

  // Requests since start by outcome.
  uint64_t count(ScepOutcome o) const { return counts_[static_cast<int>(o)].load(); }
  // Appends the orchard_scep_requests_total series (Prometheus text format).
  void RenderMetrics(std::string* out) const;

 private:
  ScepReply Count(ScepReply reply);
  // A CertRep signed by the CA: SUCCESS (cert_der enveloped to recipient with the cipher
  // cipher_nid, AES-256-CBC if unknown) or FAILURE with failInfo.
  ScepReply CertRep(const std::string& txid, const std::string& recipient_nonce, std::optional<FailInfo> failure,
                    const std::string& cert_der, X509* recipient, int cipher_nid);

  ScepOptions options_;
  ScepDeps d_;
  const ScepNids& nids_;
  std::array<std::atomic<uint64_t>, static_cast<size_t>(ScepOutcome::kCount)> counts_{};
};

}  // namespace orchard::enroll
