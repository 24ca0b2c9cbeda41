// Maps one Orchard event to a webhook topic and its JSON body in the
// MicroMDM/NanoMDM webhook shape:
//   {"topic", "event_id", "created_at",
//    "checkin_event": {"udid", "enrollment_id", "raw_payload", "token_update_tally"}  (check-ins)
//    "acknowledge_event": {"udid", "enrollment_id", "status", "command_uuid", "raw_payload"}  (reports)
//    "orchard_event": {"type", "cursor", "enrollment_id", "command_uuid", "request_type", "payload"}}
// Pure functions (no host calls): thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace orchard_webhook {

// What the plugin knows of an event (views into host-owned buffers).
struct EventView {
  uint64_t seq = 0;
  int64_t time_ms = 0;
  std::string_view type, cursor, enrollment_id, command_uuid, request_type, payload_json, raw_plist;
  // mdm.TokenUpdate only: the enrollment's TokenUpdate count if known (0 = unknown).
  int64_t token_update_tally = 0;
};

struct MappedEvent {
  std::string topic;     // "" = not sent
  std::string event_id;  // stable for the event (derived from instance and cursor)
  std::string device;    // ordering group: the enrollment id ("" for events without one)
  std::string body;      // the JSON document
};

// The webhook topic of an Orchard event type: "mdm.Authenticate",
// "mdm.TokenUpdate", "mdm.CheckOut", "mdm.SetBootstrapToken", "mdm.Connect"
// (command reports), else "orchard.<type>" when orchard_events is set, else "".
std::string TopicFor(std::string_view type, bool orchard_events);

// A UUID-formatted id derived from (instance, cursor): the same on redelivery.
std::string EventId(std::string_view instance, std::string_view cursor);

// Builds the body for topic. False with *error if the payload is not JSON
// (the event is then sent without a payload-derived raw_payload only if it has
// a raw plist; otherwise it is refused).
bool BuildBody(const EventView& ev, const std::string& topic, const std::string& event_id, MappedEvent* out,
               std::string* error);

}  // namespace orchard_webhook
