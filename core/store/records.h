// Durable record types and their encodings. Records only grow at the end:
// new fields are appended to Encode and read with defaults by Decode.
// Value types; thread-safe as values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/status.h"

namespace orchard::store {

enum class EnrollmentType : int {
  kDevice = 0,          // device channel, id = UDID
  kUser = 1,            // user channel, id = UDID:UserID
  kSharedIpadUser = 2,  // id = UDID:UserShortName
  kUserEnrollmentDevice = 3,  // id = EnrollmentID
  kUserEnrollmentUser = 4,    // id = EnrollmentID:EnrollmentUserID
};
const char* EnrollmentTypeName(EnrollmentType t);

enum class EnrollmentState : int {
  kAuthenticated = 0,  // Authenticate seen, no TokenUpdate yet
  kEnrolled = 1,       // TokenUpdate seen: pushable
  kCheckedOut = 2,     // CheckOut received (or unenrolled by block)
};
const char* EnrollmentStateName(EnrollmentState s);
bool ParseEnrollmentState(std::string_view name, EnrollmentState* out);

struct Enrollment {
  std::string id;
  EnrollmentType type = EnrollmentType::kDevice;
  std::string parent_id;  // device channel id for user channels, else empty
  std::string udid, enrollment_id, user_id, user_short_name, user_long_name, enrollment_user_id;
  std::string topic;
  // Inventory from Authenticate.
  std::string serial, model, model_name, os_version, build_version, product_name, device_name,
      imei, meid;
  EnrollmentState state = EnrollmentState::kAuthenticated;
  int64_t generation = 0;  // bumps on every Authenticate (fresh enrollment)
  int64_t authenticated_ms = 0, enrolled_ms = 0, last_seen_ms = 0, checked_out_ms = 0;
  int64_t token_updates = 0;
  std::string push_token;    // raw bytes (secret-ish: never logged)
  std::string push_magic;    // secret: never logged or returned by the API
  std::string unlock_token;  // secret
  std::string bootstrap_token;  // secret
  bool awaiting_configuration = false;
  std::string cert_sha256;  // bound identity certificate
  bool blocked = false;
  // Command sessions: bumped by every Idle report (a session starts with Idle).
  // A NotNow is skipped only in the session it was answered in.
  int64_t session = 0;
  int64_t cert_not_after_ms = 0;  // expiry of the bound identity certificate (0: unknown)

  std::string Encode() const;
  static Result<Enrollment> Decode(std::string_view bytes);
};

// Push bookkeeping per enrollment (Cf::kPushState), written by the push
// service without reading the enrollment, and deleted by every TokenUpdate.
struct PushState {
  int64_t last_push_ms = 0;      // last attempt
  std::string last_apns_id;
  int last_status = 0;           // HTTP status of the last answer (0: transport error)
  std::string last_reason;       // APNs reason or transport error
  int64_t last_success_ms = 0;
  int64_t token_invalid_ms = 0;  // APNs said 410/400 for this token: no pushes until TokenUpdate
  std::string token_invalid_reason;
  int64_t failures = 0;          // consecutive failed attempts
  std::string token_fingerprint; // which token token_invalid_ms is about (hex of its first 8 bytes)

  std::string Encode() const;
  static Result<PushState> Decode(std::string_view bytes);
};

enum class QueueStatus : int { kPending = 0, kNotNow = 1 };

struct QueueEntry {
  std::string command_uuid;
  std::string request_type;
  std::string plist;  // full command plist as sent to the device
  QueueStatus status = QueueStatus::kPending;
  int64_t enqueued_ms = 0;
  int64_t last_sent_ms = 0;
  int64_t not_now_count = 0;
  int priority = 0;
  std::string origin;  // who queued it: "api", "policy:<name>", "plugin:<name>"
  int64_t not_now_for_sent_ms = 0;  // the delivery (last_sent_ms) the last NotNow answered
  int64_t not_now_session = 0;      // the enrollment's session (Enrollment::session) of the last NotNow
  std::string trigger;  // for automation: the event cursor (or schedule run) that decided it

  // Not encoded: read from the queue index (see queue::CommandQueue::MarkSent)
  // together with last_sent_ms. Deliveries since the device last reported on it.
  int64_t deliveries = 0;

  std::string Encode() const;
  static Result<QueueEntry> Decode(std::string_view bytes);
};

struct CommandResult {
  std::string command_uuid;
  std::string request_type;
  std::string status;       // Acknowledged | Error | CommandFormatError | NotNow
  std::string raw;          // the device's report plist, exactly as received
  std::string error_chain;  // JSON array, empty when none
  int64_t enqueued_ms = 0;
  int64_t received_ms = 0;
  int64_t not_now_count = 0;
  std::string origin;
  std::string trigger;  // copied from the queue entry

  std::string Encode() const;
  // with_raw=false leaves raw empty (listings need only the summary).
  static Result<CommandResult> Decode(std::string_view bytes, bool with_raw = true);
};

}  // namespace orchard::store
