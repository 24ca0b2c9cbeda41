// SCEP challenges: the challengePassword a PKCSReq must carry.
//
// Two kinds, both accepted when configured:
//   - a static challenge (enroll.scep_challenge), compared in constant time;
//   - one-time challenges issued through the admin API: random, with an expiry and
//     optionally the UDID of the device they are for. Only a SHA-256 of the
//     challenge is stored (Cf::kEnroll, "h\0" <sha256 hex>), never the text.
//     A one-time challenge is consumed in the same WriteBatch that records the
//     certificate it paid for (Claim::Consume); while a request holds a claim,
//     a second request with the same challenge is refused as reused.
// Challenges are secrets: they are never logged.
//
// Thread-safety: all methods may be called concurrently. Borrows the store.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "store/store.h"
#include "util/status.h"

namespace orchard::enroll {

struct OneTimeChallenge {
  std::string challenge;  // the secret itself (only ever returned by Create)
  int64_t expires_ms = 0;
  std::string udid;       // "" = any device
  std::string renews_sha256;  // renewal challenges: the certificate (bound to udid) the issued one replaces
};

// Why a presented challenge was refused (never matched by message text).
enum class ChallengeRefusal { kMissing, kWrong, kExpired, kReused, kStorage };
const char* ChallengeRefusalName(ChallengeRefusal r);

class Challenges;

// A presented challenge that matched. For a one-time challenge it holds the claim
// until destroyed: Consume adds the consumption to the batch that issues the
// certificate; a claim dropped without a committed batch frees the challenge again.
class ChallengeClaim {
 public:
  ChallengeClaim(ChallengeClaim&& other) noexcept;
  ChallengeClaim& operator=(ChallengeClaim&&) = delete;
  ~ChallengeClaim();
  bool one_time() const { return !hash_.empty(); }
  const std::string& udid() const { return udid_; }  // the device a one-time challenge was for
  // A renewal challenge's certificate to replace (the issued one records it as renewed_from).
  const std::string& renews_sha256() const { return renews_sha256_; }
  // Marks the one-time challenge used (no-op for the static one).
  void Consume(store::Batch& batch, int64_t now_ms) const;

 private:
  friend class Challenges;
  ChallengeClaim(Challenges* owner, std::string hash, std::string udid, std::string record)
      : owner_(owner), hash_(std::move(hash)), udid_(std::move(udid)), record_(std::move(record)) {}
  Challenges* owner_ = nullptr;
  std::string hash_, udid_, renews_sha256_, record_;
};

struct ChallengeCheck {
  std::optional<ChallengeClaim> claim;  // set when accepted
  ChallengeRefusal refusal = ChallengeRefusal::kWrong;
};

class Challenges {
 public:
  // static_challenge: "" = none.
  Challenges(store::Store* store, std::string static_challenge);

  // A new one-time challenge valid for ttl_seconds (1 .. 30 days), for udid ("" = any
  // device; at most 256 printable characters). Errors: InvalidArgument, Io.
  // renews_sha256 (with a udid): a renewal challenge, see OneTimeChallenge.
  Result<OneTimeChallenge> Create(int64_t ttl_seconds, const std::string& udid, int64_t now_ms,
                                  const std::string& renews_sha256 = "");
  // Checks a presented challenge (constant time against the static one).
  ChallengeCheck Check(std::string_view presented, int64_t now_ms);
  // Deletes one-time challenges that expired before now_ms (used or not), at most
  // max_records per call. Returns how many were deleted.
  Result<size_t> Sweep(int64_t now_ms, size_t max_records);

 private:
  friend class ChallengeClaim;
  void Release(const std::string& hash);

  store::Store* store_;
  const std::string static_;
  std::mutex mu_;
  std::set<std::string> claimed_;  // hashes held by requests in flight
};

}  // namespace orchard::enroll
