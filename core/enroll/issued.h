// IssuedCerts: the record of every certificate the device CA issued.
//
// Each record says what was issued (serial, subject, SHA-256 of the DER),
// for whom when known (the UDID a per-device one-time challenge carried, the
// enrollment id), its validity, and whether it was revoked (when, why).
// Revocation is final. The device protocol refuses a revoked certificate
// (IsRevoked, cheap: one point read).
//
// Storage (Cf::kEnroll), keys by prefix:
//   "c\0" <sha256 hex>                 -> IssuedCert record (versioned, grows at the end)
//   "s\0" <serial hex>                 -> sha256 hex (index by serial)
//   "u\0" <udid> "\0" <serial hex>     -> ""         (index by udid)
//   "r\0" <sha256 hex>                 -> ""         (revoked certificates, loaded into memory)
//   "h\0" <sha256 hex of a challenge>  -> one-time challenge (challenges.h)
// Serial numbers are lower-case hex without leading zeros (NormalizeSerial);
// the SHA-256 is lower-case hex, as auth::Identity.cert_sha256.
//
// Thread-safety: all methods may be called concurrently. Borrows the store.
#pragma once

#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <unordered_set>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/store.h"
#include "util/status.h"

namespace orchard::enroll {

struct IssuedCert {
  std::string serial_hex, subject, sha256, udid, enrollment_id;
  int64_t not_before_ms = 0, not_after_ms = 0;
  bool revoked = false;
  int64_t revoked_ms = 0;
  std::string revoked_reason;
  int64_t issued_ms = 0;         // when it was issued
  std::string renewed_from;         // serial of the certificate a RenewalReq was signed with
  std::string renewed_from_sha256;  // and its DER SHA-256
};

// "0x00AB:cd" style input to the canonical form ("abcd"); nullopt if not hex
// or longer than 40 hex digits (RFC 5280 limits serials to 20 octets).
std::optional<std::string> NormalizeSerial(std::string_view serial);

class IssuedCerts {
 public:
  explicit IssuedCerts(store::Store* store);

  // The record of the certificate with this DER SHA-256 (lower-case hex); nullopt if
  // Orchard did not issue it. Errors: Io from the store.
  Result<std::optional<IssuedCert>> BySha256(const std::string& sha256_hex);
  // By serial (any case, leading zeros and ':' accepted). nullopt if unknown.
  Result<std::optional<IssuedCert>> BySerial(const std::string& serial_hex);
  // Up to limit records with serial > after_serial ("" = from the start), in serial
  // order; with udid_filter, only that device's certificates.
  Result<std::vector<IssuedCert>> List(const std::string& after_serial, size_t limit,
                                       const std::string& udid_filter);
  // Adds the record and its indexes to batch (the caller writes it, together with
  // whatever else the issuance changes, e.g. a consumed challenge).
  void Put(store::Batch& batch, const IssuedCert& cert);
  // Marks a certificate revoked. NotFound for an unknown serial; revoking a revoked
  // certificate again is Ok and keeps the first time and reason.
  Status Revoke(const std::string& serial_hex, const std::string& reason);
  // Reads the revoked certificates into memory (call once at start, before serving);
  // from then on IsRevoked answers from memory. Errors: Io.
  Status LoadRevoked();
  // True when Orchard issued this certificate (DER SHA-256, lower-case hex) and revoked
  // it. From memory after LoadRevoked (a shared lock and a hash lookup); before it, one
  // point read, where a storage error counts as revoked (fail closed) and is logged.
  bool IsRevoked(const std::string& sha256_hex);

  // Record encoding (exposed for tests and the fuzz target).
  static std::string Encode(const IssuedCert& cert);
  static Result<IssuedCert> Decode(std::string_view bytes);

 private:
  store::Store* store_;
  std::mutex revoke_mu_;  // serializes Revoke's read-modify-write
  mutable std::shared_mutex revoked_mu_;
  bool revoked_loaded_ = false;                 // guarded by revoked_mu_
  std::unordered_set<std::string> revoked_;     // guarded by revoked_mu_
};

}  // namespace orchard::enroll
