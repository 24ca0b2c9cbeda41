#include "enroll/issued.h"

#include "log/log.h"
#include "util/encoding.h"
#include "util/record.h"

namespace orchard::enroll {
namespace {

constexpr const char* kLog = "enroll";
constexpr uint64_t kVersion = 1;

std::string CertKey(std::string_view sha) { return std::string("c\0", 2) + std::string(sha); }
std::string RevokedKey(std::string_view sha) { return std::string("r\0", 2) + std::string(sha); }
std::string SerialKey(std::string_view serial) { return std::string("s\0", 2) + std::string(serial); }
std::string UdidPrefix(std::string_view udid) {
  return std::string("u\0", 2) + std::string(udid) + std::string(1, '\0');
}

bool IsLowerHex(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

std::optional<std::string> NormalizeSerial(std::string_view serial) {
  if (serial.size() >= 2 && serial[0] == '0' && (serial[1] == 'x' || serial[1] == 'X')) serial.remove_prefix(2);
  std::string out;
  for (char c : serial) {
    if (c == ':') continue;
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
    if (out.empty() && c == '0') continue;
    out.push_back(c);
    if (out.size() > 40) return std::nullopt;
  }
  if (out.empty()) {
    // All zeros (or nothing): "0" only if there was a digit.
    for (char c : serial)
      if (c == '0') return std::string("0");
    return std::nullopt;
  }
  return out;
}

std::string IssuedCerts::Encode(const IssuedCert& c) {
  RecordWriter w;
  w.PutVarint(kVersion);
  w.PutString(c.serial_hex);
  w.PutString(c.subject);
  w.PutString(c.sha256);
  w.PutString(c.udid);
  w.PutString(c.enrollment_id);
  w.PutSigned(c.not_before_ms);
  w.PutSigned(c.not_after_ms);
  w.PutBool(c.revoked);
  w.PutSigned(c.revoked_ms);
  w.PutString(c.revoked_reason);
  w.PutSigned(c.issued_ms);
  w.PutString(c.renewed_from);
  w.PutString(c.renewed_from_sha256);
  return w.Take();
}

Result<IssuedCert> IssuedCerts::Decode(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return Status::Internal("corrupt issued certificate record (version)");
  IssuedCert c;
  c.serial_hex = r.GetString();
  c.subject = r.GetString();
  c.sha256 = r.GetString();
  c.udid = r.GetString();
  c.enrollment_id = r.GetString();
  c.not_before_ms = r.GetSigned();
  c.not_after_ms = r.GetSigned();
  c.revoked = r.GetBool();
  c.revoked_ms = r.GetSigned();
  c.revoked_reason = r.GetString();
  c.issued_ms = r.GetSigned();
  c.renewed_from = r.GetString();
  c.renewed_from_sha256 = r.GetString();
  if (r.corrupt()) return Status::Internal("corrupt issued certificate record");
  return c;
}

IssuedCerts::IssuedCerts(store::Store* store) : store_(store) {}

Result<std::optional<IssuedCert>> IssuedCerts::BySha256(const std::string& sha256_hex) {
  if (sha256_hex.size() != 64 || !IsLowerHex(sha256_hex)) return std::optional<IssuedCert>();
  auto v = store_->Get(store::Cf::kEnroll, CertKey(sha256_hex));
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<IssuedCert>();
  auto c = Decode(**v);
  if (!c.ok()) return c.status();
  return std::optional<IssuedCert>(std::move(c.value()));
}

Result<std::optional<IssuedCert>> IssuedCerts::BySerial(const std::string& serial_hex) {
  auto serial = NormalizeSerial(serial_hex);
  if (!serial) return std::optional<IssuedCert>();
  auto sha = store_->Get(store::Cf::kEnroll, SerialKey(*serial));
  if (!sha.ok()) return sha.status();
  if (!sha->has_value()) return std::optional<IssuedCert>();
  return BySha256(**sha);
}

Result<std::vector<IssuedCert>> IssuedCerts::List(const std::string& after_serial, size_t limit,
                                                  const std::string& udid_filter) {
  std::vector<IssuedCert> out;
  if (limit == 0) return out;
  const std::string prefix = udid_filter.empty() ? SerialKey("") : UdidPrefix(udid_filter);
  std::string lower = prefix;
  if (!after_serial.empty()) {
    auto s = NormalizeSerial(after_serial);
    if (!s) return Status::InvalidArgument("not a serial number: " + after_serial);
    lower = prefix + *s + std::string(1, '\0');  // strictly after
  }
  auto it = store_->Scan(store::Cf::kEnroll, lower, store::PrefixEnd(prefix));
  for (; it->Valid() && out.size() < limit; it->Next()) {
    const std::string serial(it->key().substr(prefix.size()));
    Result<std::optional<IssuedCert>> c = Status::Internal("unset");
    if (udid_filter.empty()) c = BySha256(std::string(it->value()));
    else c = BySerial(serial);
    if (!c.ok()) return c.status();
    if (!c->has_value()) {
      log::Warn(kLog, "event=issued_index_dangling serial={}", serial);
      continue;
    }
    out.push_back(std::move(**c));
  }
  ORCHARD_RETURN_IF_ERROR(it->status());
  return out;
}

void IssuedCerts::Put(store::Batch& batch, const IssuedCert& cert) {
  batch.Put(store::Cf::kEnroll, CertKey(cert.sha256), Encode(cert));
  batch.Put(store::Cf::kEnroll, SerialKey(cert.serial_hex), cert.sha256);
  if (!cert.udid.empty()) batch.Put(store::Cf::kEnroll, UdidPrefix(cert.udid) + cert.serial_hex, "");
}

Status IssuedCerts::Revoke(const std::string& serial_hex, const std::string& reason) {
  std::lock_guard<std::mutex> lock(revoke_mu_);
  auto c = BySerial(serial_hex);
  if (!c.ok()) return c.status();
  if (!c->has_value()) return Status::NotFound("no certificate with serial " + serial_hex + " was issued");
  IssuedCert cert = std::move(**c);
  if (cert.revoked) return Status::Ok();
  cert.revoked = true;
  cert.revoked_ms = NowMillis();
  cert.revoked_reason = reason.substr(0, 512);
  store::Batch b;
  b.Put(store::Cf::kEnroll, CertKey(cert.sha256), Encode(cert));
  b.Put(store::Cf::kEnroll, RevokedKey(cert.sha256), "");
  ORCHARD_RETURN_IF_ERROR(store_->Write(b));
  {
    std::unique_lock<std::shared_mutex> lock(revoked_mu_);
    revoked_.insert(cert.sha256);
  }
  log::Info(kLog, "event=certificate_revoked serial={} sha256={} udid={} reason={}", cert.serial_hex,
            cert.sha256, log::Quote(cert.udid), log::Quote(cert.revoked_reason));
  return Status::Ok();
}

Status IssuedCerts::LoadRevoked() {
  const std::string prefix = RevokedKey("");
  std::unordered_set<std::string> found;
  auto it = store_->Scan(store::Cf::kEnroll, prefix, store::PrefixEnd(prefix));
  for (; it->Valid(); it->Next()) found.insert(std::string(it->key().substr(prefix.size())));
  ORCHARD_RETURN_IF_ERROR(it->status());
  std::unique_lock<std::shared_mutex> lock(revoked_mu_);
  revoked_.insert(found.begin(), found.end());
  revoked_loaded_ = true;
  return Status::Ok();
}

bool IssuedCerts::IsRevoked(const std::string& sha256_hex) {
  {
    std::shared_lock<std::shared_mutex> lock(revoked_mu_);
    if (revoked_loaded_) return revoked_.count(sha256_hex) != 0;
  }
  auto c = BySha256(sha256_hex);
  if (!c.ok()) {
    log::Error(kLog, "event=revocation_check_failed sha256={} error={}", log::Quote(sha256_hex),
               log::Quote(c.status().ToString()));
    return true;
  }
  return c->has_value() && (*c)->revoked;
}

}  // namespace orchard::enroll
