#include "enroll/challenges.h"

#include <openssl/rand.h>

#include "log/log.h"
#include "util/encoding.h"
#include "util/record.h"

namespace orchard::enroll {
namespace {

constexpr const char* kLog = "enroll";
constexpr uint64_t kVersion = 2;  // 2 added renews_sha256; 1 is still read
constexpr int64_t kMaxTtlSeconds = 30 * 86400;
constexpr size_t kMaxUdid = 256;
constexpr size_t kMaxPresented = 1024;

std::string HashKey(std::string_view hash_hex) { return std::string("h\0", 2) + std::string(hash_hex); }

struct Record {
  int64_t created_ms = 0, expires_ms = 0, consumed_ms = 0;
  std::string udid;
  std::string renews_sha256;
};

std::string EncodeRecord(const Record& r) {
  RecordWriter w;
  w.PutVarint(kVersion);
  w.PutSigned(r.created_ms);
  w.PutSigned(r.expires_ms);
  w.PutString(r.udid);
  w.PutSigned(r.consumed_ms);
  w.PutString(r.renews_sha256);
  return w.Take();
}

std::optional<Record> DecodeRecord(std::string_view bytes) {
  RecordReader rd(bytes);
  const uint64_t version = rd.GetVarint();
  if (version != 1 && version != kVersion) return std::nullopt;
  Record r;
  r.created_ms = rd.GetSigned();
  r.expires_ms = rd.GetSigned();
  r.udid = rd.GetString();
  r.consumed_ms = rd.GetSigned();
  if (version >= 2) r.renews_sha256 = rd.GetString();
  if (rd.corrupt()) return std::nullopt;
  return r;
}

}  // namespace

const char* ChallengeRefusalName(ChallengeRefusal r) {
  switch (r) {
    case ChallengeRefusal::kMissing: return "challenge_missing";
    case ChallengeRefusal::kWrong: return "challenge_wrong";
    case ChallengeRefusal::kExpired: return "challenge_expired";
    case ChallengeRefusal::kReused: return "challenge_reused";
    case ChallengeRefusal::kStorage: return "storage";
  }
  return "unknown";
}

ChallengeClaim::ChallengeClaim(ChallengeClaim&& o) noexcept
    : owner_(o.owner_), hash_(std::move(o.hash_)), udid_(std::move(o.udid_)),
      renews_sha256_(std::move(o.renews_sha256_)), record_(std::move(o.record_)) {
  o.owner_ = nullptr;
  o.hash_.clear();
}

ChallengeClaim::~ChallengeClaim() {
  if (owner_ && !hash_.empty()) owner_->Release(hash_);
}

void ChallengeClaim::Consume(store::Batch& batch, int64_t now_ms) const {
  if (hash_.empty()) return;
  auto r = DecodeRecord(record_);
  if (!r) return;  // Check only hands out claims on records it decoded
  r->consumed_ms = now_ms;
  batch.Put(store::Cf::kEnroll, HashKey(hash_), EncodeRecord(*r));
}

Challenges::Challenges(store::Store* store, std::string static_challenge)
    : store_(store), static_(std::move(static_challenge)) {}

Result<OneTimeChallenge> Challenges::Create(int64_t ttl_seconds, const std::string& udid, int64_t now_ms,
                                            const std::string& renews_sha256) {
  if (ttl_seconds < 1 || ttl_seconds > kMaxTtlSeconds)
    return Status::InvalidArgument("ttl_seconds must be between 1 and " + std::to_string(kMaxTtlSeconds));
  if (udid.size() > kMaxUdid) return Status::InvalidArgument("udid is longer than 256 characters");
  for (unsigned char c : udid)
    if (c < 0x21 || c > 0x7e) return Status::InvalidArgument("udid must be printable ASCII without spaces");
  if (!renews_sha256.empty() && (udid.empty() || renews_sha256.size() != 64))
    return Status::InvalidArgument("a renewal challenge needs a udid and the renewed certificate's SHA-256 (64 hex)");
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1) return Status::Internal("RAND_bytes failed");
  OneTimeChallenge out;
  out.challenge = HexEncode(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
  out.expires_ms = now_ms + ttl_seconds * 1000;
  out.udid = udid;
  out.renews_sha256 = renews_sha256;
  Record r{now_ms, out.expires_ms, 0, udid, renews_sha256};
  store::Batch b;
  b.Put(store::Cf::kEnroll, HashKey(Sha256Hex(out.challenge)), EncodeRecord(r));
  ORCHARD_RETURN_IF_ERROR(store_->Write(b));
  log::Info(kLog, "event=challenge_created expires_ms={} udid={}", out.expires_ms, log::Quote(udid));
  return out;
}

ChallengeCheck Challenges::Check(std::string_view presented, int64_t now_ms) {
  ChallengeCheck out;
  if (presented.empty()) {
    out.refusal = ChallengeRefusal::kMissing;
    return out;
  }
  if (!static_.empty() && SecretEquals(presented, static_)) {
    out.claim.emplace(ChallengeClaim(nullptr, "", "", ""));
    return out;
  }
  if (presented.size() > kMaxPresented) {
    out.refusal = ChallengeRefusal::kWrong;
    return out;
  }
  const std::string hash = Sha256Hex(presented);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!claimed_.insert(hash).second) {
      out.refusal = ChallengeRefusal::kReused;
      return out;
    }
  }
  // From here the claim is ours: release it on every refusal.
  ChallengeClaim claim(this, hash, "", "");
  auto v = store_->Get(store::Cf::kEnroll, HashKey(hash));
  if (!v.ok()) {
    out.refusal = ChallengeRefusal::kStorage;
    return out;
  }
  if (!v->has_value()) {
    out.refusal = ChallengeRefusal::kWrong;
    return out;
  }
  auto r = DecodeRecord(**v);
  if (!r) {
    log::Error(kLog, "event=challenge_record_corrupt");
    out.refusal = ChallengeRefusal::kWrong;
    return out;
  }
  if (r->consumed_ms != 0) {
    out.refusal = ChallengeRefusal::kReused;
    return out;
  }
  if (now_ms >= r->expires_ms) {
    out.refusal = ChallengeRefusal::kExpired;
    return out;
  }
  claim.udid_ = r->udid;
  claim.renews_sha256_ = r->renews_sha256;
  claim.record_ = std::move(**v);
  out.claim.emplace(std::move(claim));
  return out;
}

void Challenges::Release(const std::string& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  claimed_.erase(hash);
}

Result<size_t> Challenges::Sweep(int64_t now_ms, size_t max_records) {
  const std::string prefix = HashKey("");
  auto it = store_->Scan(store::Cf::kEnroll, prefix, store::PrefixEnd(prefix));
  store::Batch b;
  size_t scanned = 0;
  for (; it->Valid() && b.Count() < max_records && scanned < max_records * 100; it->Next(), ++scanned) {
    auto r = DecodeRecord(it->value());
    if (!r || r->expires_ms <= now_ms) b.Delete(store::Cf::kEnroll, it->key());
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  const size_t deleted = b.Count();
  if (deleted == 0) return size_t{0};
  ORCHARD_RETURN_IF_ERROR(store_->Write(b));  // Write may consume the batch
  return deleted;
}

}  // namespace orchard::enroll
