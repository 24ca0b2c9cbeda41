#include "event_body.h"

#include <openssl/evp.h>

#include "json.h"

namespace orchard_webhook {
namespace {

struct CheckinTopic {
  std::string_view type, topic, orchard_key;  // orchard_key: a member Orchard added to the message
};
constexpr CheckinTopic kCheckins[] = {
    {"enrollment.authenticated", "mdm.Authenticate", "ReEnrollment"},
    {"enrollment.token_updated", "mdm.TokenUpdate", "FirstTokenUpdate"},
    {"enrollment.checked_out", "mdm.CheckOut", ""},
    {"enrollment.bootstrap_token_set", "mdm.SetBootstrapToken", ""},
};

struct ReportTopic {
  std::string_view type, status;
};
constexpr ReportTopic kReports[] = {
    {"command.acknowledged", "Acknowledged"},
    {"command.error", "Error"},
    {"command.format_error", "CommandFormatError"},
    {"command.not_now", "NotNow"},
};

const CheckinTopic* Checkin(std::string_view type) {
  for (const auto& c : kCheckins)
    if (c.type == type) return &c;
  return nullptr;
}
const ReportTopic* Report(std::string_view type) {
  for (const auto& r : kReports)
    if (r.type == type) return &r;
  return nullptr;
}

std::string StringMember(const JsonValue& v, std::string_view key) {
  const JsonValue* m = v.Find(key);
  return m && m->kind == JsonValue::Kind::kString ? m->text : std::string();
}

void Member(std::string* out, std::string_view name, std::string_view value, bool* first) {
  if (!*first) out->push_back(',');
  *first = false;
  AppendJsonString(out, name);
  out->push_back(':');
  AppendJsonString(out, value);
}

// udid and enrollment_id as NanoMDM sets them: UDID of a device channel,
// EnrollmentID of a User Enrollment; Orchard's channel id if the message has neither.
void Ids(std::string* out, const JsonValue& payload, std::string_view channel, bool* first) {
  std::string udid = StringMember(payload, "UDID");
  const std::string enrollment = StringMember(payload, "EnrollmentID");
  if (udid.empty() && enrollment.empty()) udid = std::string(channel);
  if (!udid.empty()) Member(out, "udid", udid, first);
  if (!enrollment.empty()) Member(out, "enrollment_id", enrollment, first);
}

}  // namespace

std::string TopicFor(std::string_view type, bool orchard_events) {
  if (const CheckinTopic* c = Checkin(type)) return std::string(c->topic);
  if (Report(type)) return "mdm.Connect";
  if (orchard_events && !type.empty()) return "orchard." + std::string(type);
  return {};
}

std::string EventId(std::string_view instance, std::string_view cursor) {
  const std::string input = "orchard-webhook\n" + std::string(instance) + "\n" + std::string(cursor);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), md, &len, EVP_sha256(), nullptr) != 1 || len < 16) return std::string(cursor);
  md[6] = static_cast<unsigned char>((md[6] & 0x0F) | 0x80);  // version 8 (name-based, custom)
  md[8] = static_cast<unsigned char>((md[8] & 0x3F) | 0x80);  // RFC 4122 variant
  const std::string h = Hex(std::string_view(reinterpret_cast<const char*>(md), 16));
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" + h.substr(20);
}

bool BuildBody(const EventView& ev, const std::string& topic, const std::string& event_id, MappedEvent* out,
               std::string* error) {
  out->topic = topic;
  out->event_id = event_id;
  out->device = std::string(ev.enrollment_id);
  JsonValue payload;
  std::string perr;
  const bool has_payload = !ev.payload_json.empty();
  if (has_payload && !ParseJson(ev.payload_json, &payload, &perr)) {
    *error = "payload is not JSON: " + perr;
    return false;
  }
  std::string& b = out->body;
  b.clear();
  b.reserve(256 + ev.payload_json.size() * 2 + ev.raw_plist.size() * 4 / 3);
  b.append("{\"topic\":");
  AppendJsonString(&b, topic);
  b.append(",\"event_id\":");
  AppendJsonString(&b, event_id);
  b.append(",\"created_at\":");
  AppendJsonString(&b, Rfc3339Millis(ev.time_ms));

  if (const CheckinTopic* c = Checkin(ev.type)) {
    if (!c->orchard_key.empty() && payload.kind == JsonValue::Kind::kObject) {
      auto& members = payload.object;
      for (auto it = members.begin(); it != members.end(); ++it) {
        if (it->first == c->orchard_key) {
          members.erase(it);
          break;
        }
      }
    }
    b.append(",\"checkin_event\":{");
    bool first = true;
    Ids(&b, payload, ev.enrollment_id, &first);
    Member(&b, "raw_payload", has_payload ? Base64(PlistXmlFromJson(payload)) : std::string(), &first);
    if (topic == "mdm.TokenUpdate" && ev.token_update_tally > 0)
      b.append(",\"token_update_tally\":").append(std::to_string(ev.token_update_tally));
    b.append("}}");
    return true;
  }
  if (const ReportTopic* r = Report(ev.type)) {
    b.append(",\"acknowledge_event\":{");
    bool first = true;
    Ids(&b, payload, ev.enrollment_id, &first);
    std::string status = StringMember(payload, "Status");
    if (status.empty()) status = std::string(r->status);
    Member(&b, "status", status, &first);
    if (!ev.command_uuid.empty()) Member(&b, "command_uuid", ev.command_uuid, &first);
    std::string raw;
    if (!ev.raw_plist.empty()) raw = Base64(ev.raw_plist);
    else if (has_payload) raw = Base64(PlistXmlFromJson(payload));
    Member(&b, "raw_payload", raw, &first);
    b.append("}}");
    return true;
  }
  b.append(",\"orchard_event\":{");
  bool first = true;
  Member(&b, "type", ev.type, &first);
  Member(&b, "cursor", ev.cursor, &first);
  if (!ev.enrollment_id.empty()) Member(&b, "enrollment_id", ev.enrollment_id, &first);
  if (!ev.command_uuid.empty()) Member(&b, "command_uuid", ev.command_uuid, &first);
  if (!ev.request_type.empty()) Member(&b, "request_type", ev.request_type, &first);
  if (has_payload) {
    b.append(",\"payload\":");
    AppendJson(&b, payload);
  }
  b.append("}}");
  return true;
}

}  // namespace orchard_webhook
