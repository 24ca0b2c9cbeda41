// Re-enrollment of an enrolled device with another identity certificate
// (protects against enrollment takeover).
//
// When an enrolled device channel Authenticates with a certificate other than
// the one bound to it, the protocol service decides (see protocol/service.h,
// ReenrollPolicy): a certificate Orchard's CA issued for this very device is
// accepted; one issued for another device is refused; anything else follows
// enroll.reenroll (allow / approve / deny). Under "approve" the attempt is
// recorded here as pending and refused until an admin approves that exact
// certificate; the approval is consumed by the Authenticate it lets through.
//
// Keys (Cf::kMeta): "reenroll/pending/<id>", "reenroll/approved/<id>" ->
// a versioned record. One of each per enrollment (a newer attempt replaces
// the pending one).
//
// Thread-safety: safe for concurrent use; callers serialise per enrollment
// (the enrollment lock) around read-modify-write.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "store/store.h"
#include "util/status.h"

namespace orchard::domain {

struct ReenrollRequest {
  std::string enrollment_id;
  std::string new_cert_sha256;
  std::string old_cert_sha256;
  std::string serial;
  int64_t requested_ms = 0;  // pending: when the device tried; approved: when approved
};

class Reenrollments {
 public:
  explicit Reenrollments(store::Store* store) : store_(store) {}
  Result<std::optional<ReenrollRequest>> Pending(const std::string& enrollment_id);
  Result<std::optional<ReenrollRequest>> Approved(const std::string& enrollment_id);
  void PutPending(store::Batch& batch, const ReenrollRequest& r);
  void PutApproved(store::Batch& batch, const ReenrollRequest& r);
  void ClearPending(store::Batch& batch, const std::string& enrollment_id);
  void ClearApproved(store::Batch& batch, const std::string& enrollment_id);

 private:
  Result<std::optional<ReenrollRequest>> Read(const std::string& key, const std::string& id);
  store::Store* store_;
};

}  // namespace orchard::domain
