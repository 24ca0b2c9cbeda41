#include "protocol/messages.h"

#include <array>

namespace orchard::protocol {
namespace {

// Longest accepted value (bytes) of each device-supplied key that is stored,
// logged or part of an id. Generous for real devices (a UDID is 25 or 40
// characters, a serial 10 to 12) while keeping records and log lines small.
struct KeyLimit {
  std::string_view key;
  size_t max_bytes;
};
constexpr std::array<KeyLimit, 22> kKeyLimits{{
    {"UDID", kMaxIdBytes},
    {"EnrollmentID", kMaxIdBytes},
    {"UserID", kMaxIdBytes},
    {"EnrollmentUserID", kMaxIdBytes},
    {"UserShortName", kMaxIdBytes},
    {"UserLongName", 1024},
    {"CommandUUID", 128},
    {"Topic", 256},
    {"MessageType", 64},
    {"Status", 64},
    {"SerialNumber", 128},
    {"Model", 128},
    {"ModelName", 128},
    {"ProductName", 128},
    {"OSVersion", 64},
    {"BuildVersion", 64},
    {"IMEI", 64},
    {"MEID", 64},
    {"DeviceName", 1024},
    {"PushMagic", 256},
    {"Token", 1024},
    {"TokenServiceType", 256},
}};

// InvalidArgument naming the first top-level key whose string or data value is
// longer than its limit. One pass over the message's keys.
Status CheckLengths(const plist::Value& message) {
  const plist::Dict* dict = message.AsDict();
  if (!dict) return Status::Ok();
  for (const auto& [key, value] : *dict) {
    size_t size;
    if (const std::string* s = value.AsString()) size = s->size();
    else if (const plist::Data* d = value.AsData()) size = d->bytes.size();
    else continue;
    for (const KeyLimit& limit : kKeyLimits) {
      if (key != limit.key) continue;
      if (size > limit.max_bytes)
        return Status::InvalidArgument(key + " is too long: " + std::to_string(size) +
                                       " bytes (at most " + std::to_string(limit.max_bytes) + ")");
      break;
    }
  }
  return Status::Ok();
}

bool ValidId(std::string_view s) {
  if (s.empty() || s.size() > kMaxIdBytes) return false;
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
  ORCHARD_RETURN_IF_ERROR(CheckLengths(*v));
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
  ORCHARD_RETURN_IF_ERROR(CheckLengths(*v));
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
