#include "store/records.h"

#include "util/record.h"

namespace orchard::store {
namespace {
constexpr uint64_t kVersion = 1;

Status Corrupt(const char* what) { return Status::Internal(std::string("corrupt ") + what + " record"); }
}  // namespace

const char* EnrollmentTypeName(EnrollmentType t) {
  switch (t) {
    case EnrollmentType::kDevice: return "device";
    case EnrollmentType::kUser: return "user";
    case EnrollmentType::kSharedIpadUser: return "shared_ipad_user";
    case EnrollmentType::kUserEnrollmentDevice: return "user_enrollment_device";
    case EnrollmentType::kUserEnrollmentUser: return "user_enrollment_user";
  }
  return "unknown";
}

const char* EnrollmentStateName(EnrollmentState s) {
  switch (s) {
    case EnrollmentState::kAuthenticated: return "authenticated";
    case EnrollmentState::kEnrolled: return "enrolled";
    case EnrollmentState::kCheckedOut: return "checked_out";
  }
  return "unknown";
}

bool ParseEnrollmentState(std::string_view name, EnrollmentState* out) {
  for (auto s : {EnrollmentState::kAuthenticated, EnrollmentState::kEnrolled,
                 EnrollmentState::kCheckedOut}) {
    if (name == EnrollmentStateName(s)) {
      *out = s;
      return true;
    }
  }
  return false;
}

std::string Enrollment::Encode() const {
  RecordWriter w;
  w.PutVarint(kVersion);
  w.PutString(id);
  w.PutVarint(static_cast<uint64_t>(type));
  w.PutString(parent_id);
  for (const auto* s : {&udid, &enrollment_id, &user_id, &user_short_name, &user_long_name,
                        &enrollment_user_id, &topic, &serial, &model, &model_name, &os_version,
                        &build_version, &product_name, &device_name, &imei, &meid})
    w.PutString(*s);
  w.PutVarint(static_cast<uint64_t>(state));
  for (int64_t v : {generation, authenticated_ms, enrolled_ms, last_seen_ms, checked_out_ms,
                    token_updates})
    w.PutSigned(v);
  for (const auto* s : {&push_token, &push_magic, &unlock_token, &bootstrap_token}) w.PutString(*s);
  w.PutBool(awaiting_configuration);
  w.PutString(cert_sha256);
  w.PutBool(blocked);
  w.PutSigned(session);
  w.PutSigned(cert_not_after_ms);
  return w.Take();
}

Result<Enrollment> Enrollment::Decode(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return Corrupt("enrollment");
  Enrollment e;
  e.id = r.GetString();
  e.type = static_cast<EnrollmentType>(r.GetVarint());
  e.parent_id = r.GetString();
  for (auto* s : {&e.udid, &e.enrollment_id, &e.user_id, &e.user_short_name, &e.user_long_name,
                  &e.enrollment_user_id, &e.topic, &e.serial, &e.model, &e.model_name,
                  &e.os_version, &e.build_version, &e.product_name, &e.device_name, &e.imei,
                  &e.meid})
    *s = r.GetString();
  e.state = static_cast<EnrollmentState>(r.GetVarint());
  for (auto* v : {&e.generation, &e.authenticated_ms, &e.enrolled_ms, &e.last_seen_ms,
                  &e.checked_out_ms, &e.token_updates})
    *v = r.GetSigned();
  for (auto* s : {&e.push_token, &e.push_magic, &e.unlock_token, &e.bootstrap_token})
    *s = r.GetString();
  e.awaiting_configuration = r.GetBool();
  e.cert_sha256 = r.GetString();
  e.blocked = r.GetBool();
  e.session = r.GetSigned();
  e.cert_not_after_ms = r.GetSigned();
  if (r.corrupt()) return Corrupt("enrollment");
  return e;
}

std::string PushState::Encode() const {
  RecordWriter w;
  w.PutVarint(kVersion);
  w.PutSigned(last_push_ms);
  w.PutString(last_apns_id);
  w.PutSigned(last_status);
  w.PutString(last_reason);
  w.PutSigned(last_success_ms);
  w.PutSigned(token_invalid_ms);
  w.PutString(token_invalid_reason);
  w.PutSigned(failures);
  w.PutString(token_fingerprint);
  return w.Take();
}

Result<PushState> PushState::Decode(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return Corrupt("push state");
  PushState p;
  p.last_push_ms = r.GetSigned();
  p.last_apns_id = r.GetString();
  p.last_status = static_cast<int>(r.GetSigned());
  p.last_reason = r.GetString();
  p.last_success_ms = r.GetSigned();
  p.token_invalid_ms = r.GetSigned();
  p.token_invalid_reason = r.GetString();
  p.failures = r.GetSigned();
  p.token_fingerprint = r.GetString();
  if (r.corrupt()) return Corrupt("push state");
  return p;
}

std::string QueueEntry::Encode() const {
  RecordWriter w;
  w.PutVarint(kVersion);
  w.PutString(command_uuid);
  w.PutString(request_type);
  w.PutString(plist);
  w.PutVarint(static_cast<uint64_t>(status));
  w.PutSigned(enqueued_ms);
  w.PutSigned(last_sent_ms);
  w.PutSigned(not_now_count);
  w.PutSigned(priority);
  w.PutString(origin);
  w.PutSigned(not_now_for_sent_ms);
  w.PutSigned(not_now_session);
  w.PutString(trigger);
  return w.Take();
}

Result<QueueEntry> QueueEntry::Decode(std::string_view bytes) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return Corrupt("queue");
  QueueEntry q;
  q.command_uuid = r.GetString();
  q.request_type = r.GetString();
  q.plist = r.GetString();
  q.status = static_cast<QueueStatus>(r.GetVarint());
  q.enqueued_ms = r.GetSigned();
  q.last_sent_ms = r.GetSigned();
  q.not_now_count = r.GetSigned();
  q.priority = static_cast<int>(r.GetSigned());
  q.origin = r.GetString();
  q.not_now_for_sent_ms = r.GetSigned();
  q.not_now_session = r.GetSigned();
  q.trigger = r.GetString();
  if (r.corrupt()) return Corrupt("queue");
  return q;
}

std::string CommandResult::Encode() const {
  RecordWriter w;
  w.PutVarint(kVersion);
  for (const auto* s : {&command_uuid, &request_type, &status, &raw, &error_chain}) w.PutString(*s);
  w.PutSigned(enqueued_ms);
  w.PutSigned(received_ms);
  w.PutSigned(not_now_count);
  w.PutString(origin);
  w.PutString(trigger);
  return w.Take();
}

Result<CommandResult> CommandResult::Decode(std::string_view bytes, bool with_raw) {
  RecordReader r(bytes);
  if (r.GetVarint() != kVersion) return Corrupt("result");
  CommandResult c;
  c.command_uuid = r.GetString();
  c.request_type = r.GetString();
  c.status = r.GetString();
  if (with_raw) c.raw = r.GetString();
  else r.SkipString();
  c.error_chain = r.GetString();
  c.enqueued_ms = r.GetSigned();
  c.received_ms = r.GetSigned();
  c.not_now_count = r.GetSigned();
  c.origin = r.GetString();
  c.trigger = r.GetString();
  if (r.corrupt()) return Corrupt("result");
  return c;
}

}  // namespace orchard::store
