#include "domain/reenroll.h"

#include "util/record.h"

namespace orchard::domain {
namespace {
std::string PendingKey(const std::string& id) { return "reenroll/pending/" + id; }
std::string ApprovedKey(const std::string& id) { return "reenroll/approved/" + id; }

std::string Encode(const ReenrollRequest& r) {
  RecordWriter w;
  w.PutVarint(1);
  w.PutString(r.new_cert_sha256);
  w.PutString(r.old_cert_sha256);
  w.PutString(r.serial);
  w.PutSigned(r.requested_ms);
  return w.Take();
}
}  // namespace

Result<std::optional<ReenrollRequest>> Reenrollments::Read(const std::string& key, const std::string& id) {
  auto v = store_->Get(store::Cf::kMeta, key);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<ReenrollRequest>();
  RecordReader rd(**v);
  if (rd.GetVarint() != 1) return Status::Internal("corrupt re-enrollment record for " + id);
  ReenrollRequest r;
  r.enrollment_id = id;
  r.new_cert_sha256 = rd.GetString();
  r.old_cert_sha256 = rd.GetString();
  r.serial = rd.GetString();
  r.requested_ms = rd.GetSigned();
  if (rd.corrupt()) return Status::Internal("corrupt re-enrollment record for " + id);
  return std::optional<ReenrollRequest>(std::move(r));
}

Result<std::optional<ReenrollRequest>> Reenrollments::Pending(const std::string& id) { return Read(PendingKey(id), id); }
Result<std::optional<ReenrollRequest>> Reenrollments::Approved(const std::string& id) {
  return Read(ApprovedKey(id), id);
}
void Reenrollments::PutPending(store::Batch& b, const ReenrollRequest& r) {
  b.Put(store::Cf::kMeta, PendingKey(r.enrollment_id), Encode(r));
}
void Reenrollments::PutApproved(store::Batch& b, const ReenrollRequest& r) {
  b.Put(store::Cf::kMeta, ApprovedKey(r.enrollment_id), Encode(r));
}
void Reenrollments::ClearPending(store::Batch& b, const std::string& id) { b.Delete(store::Cf::kMeta, PendingKey(id)); }
void Reenrollments::ClearApproved(store::Batch& b, const std::string& id) {
  b.Delete(store::Cf::kMeta, ApprovedKey(id));
}

}  // namespace orchard::domain
