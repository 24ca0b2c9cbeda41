#include "protocol/messages.h"

namespace orchard::protocol {
namespace {

bool ValidId(std::string_view s) {
  if (s.empty() || s.size() > 256) return false;
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7F || c == ':' || c == '/') return false;
  return true;
}

}  // namespace

Result<EnrollmentIds> ResolveIds(const plist::Value& m) {
  EnrollmentIds ids;
  std::string_view udid = m.GetString("UDID");
  std::string_view enrollment_id = m.GetString("EnrollmentID");
  bool user_enrollment = false;
  if (!udid.empty()) {
    ids.device_id = std::string(udid);
  } else if (!enrollment_id.empty()) {
    ids.device_id = std::string(enrollment_id);
    user_enrollment = true;
  } else {
    return Status::InvalidArgument("message has neither UDID nor EnrollmentID");
  }
  if (!ValidId(ids.device_id))
    return Status::InvalidArgument("invalid device identifier '" + ids.device_id + "'");
  ids.type = user_enrollment ? store::EnrollmentType::kUserEnrollmentDevice
                             : store::EnrollmentType::kDevice;
  ids.id = ids.device_id;

  std::string_view user_id = m.GetString("UserID");
  std::string_view enrollment_user_id = m.GetString("EnrollmentUserID");
  std::string suffix;
  if (user_enrollment && !enrollment_user_id.empty()) {
    suffix = std::string(enrollment_user_id);
    ids.type = store::EnrollmentType::kUserEnrollmentUser;
  } else if (!user_id.empty()) {
    if (user_id == kSharedIpadUserId) {
      std::string_view short_name = m.GetString("UserShortName");
      if (short_name.empty())
        return Status::InvalidArgument("Shared iPad user message without UserShortName");
      suffix = std::string(short_name);
      ids.type = store::EnrollmentType::kSharedIpadUser;
    } else {
      suffix = std::string(user_id);
      ids.type = store::EnrollmentType::kUser;
    }
  } else if (!enrollment_user_id.empty()) {
    suffix = std::string(enrollment_user_id);
    ids.type = store::EnrollmentType::kUser;
  }
  if (!suffix.empty()) {
    if (!ValidId(suffix)) return Status::InvalidArgument("invalid user identifier '" + suffix + "'");
    ids.id = ids.device_id + ":" + suffix;
  }
  return ids;
}

Result<CheckinMessage> DecodeCheckin(std::string_view body, const plist::Limits& limits) {
  auto v = plist::ParseXml(body, limits);
  if (!v.ok()) return v.status();
  if (!v->is(plist::Type::kDict)) return Status::InvalidArgument("check-in body is not a dict");
  CheckinMessage msg;
  const plist::Value* mt = v->Find("MessageType");
  if (!mt) return Status::InvalidArgument("check-in message has no MessageType");
  if (!mt->AsString() || mt->AsString()->empty())
    return Status::InvalidArgument("check-in MessageType is not a non-empty string");
  msg.message_type = *mt->AsString();
  auto ids = ResolveIds(*v);
  if (!ids.ok()) return ids.status();
  msg.ids = std::move(ids.value());
  msg.body = std::move(v.value());
  return msg;
}

Result<Report> DecodeReport(std::string_view body, const plist::Limits& limits) {
  auto v = plist::ParseXml(body, limits);
  if (!v.ok()) return v.status();
  if (!v->is(plist::Type::kDict)) return Status::InvalidArgument("command report is not a dict");
  Report r;
  const plist::Value* st = v->Find("Status");
  if (!st) return Status::InvalidArgument("command report has no Status");
  if (!st->AsString()) return Status::InvalidArgument("command report Status is not a string");
  r.status = *st->AsString();
  if (r.status != "Idle" && r.status != "Acknowledged" && r.status != "Error" &&
      r.status != "CommandFormatError" && r.status != "NotNow")
    return Status::InvalidArgument("unknown command report Status '" + r.status + "'");
  r.command_uuid = std::string(v->GetString("CommandUUID"));
  if (r.status != "Idle" && r.command_uuid.empty())
    return Status::InvalidArgument("command report with Status " + r.status + " has no CommandUUID");
  auto ids = ResolveIds(*v);
  if (!ids.ok()) return ids.status();
  r.ids = std::move(ids.value());
  r.body = std::move(v.value());
  return r;
}

plist::Value WithoutSecrets(const plist::Value& message) {
  plist::Value copy = message;
  for (const char* k : {"Token", "PushMagic", "UnlockToken", "BootstrapToken", "DigestResponse",
                        "TokenParameters"})
    copy.Erase(k);
  return copy;
}

}  // namespace orchard::protocol
