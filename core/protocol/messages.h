// Decoding of device messages: check-in messages and command reports.
// Pure functions over request bodies; no I/O. Fuzzed by tests/fuzz/checkin_fuzz.
// Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "plist/plist.h"
#include "store/records.h"
#include "util/status.h"

namespace orchard::protocol {

// Which enrollment a message belongs to, resolved as Apple specifies:
//   device channel: UDID (User Enrollment: EnrollmentID)
//   user channel:   UDID:UserID; Shared iPad (UserID all F's): UDID:UserShortName;
//                   User Enrollment: EnrollmentID:EnrollmentUserID
// device_id is always the device channel id (the parent).
struct EnrollmentIds {
  std::string id;
  std::string device_id;
  store::EnrollmentType type = store::EnrollmentType::kDevice;
};

// Longest accepted identifier (UDID, EnrollmentID, UserID, EnrollmentUserID,
// UserShortName), in bytes.
inline constexpr size_t kMaxIdBytes = 256;

inline constexpr std::string_view kSharedIpadUserId = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF";

Result<EnrollmentIds> ResolveIds(const plist::Value& message);

struct CheckinMessage {
  std::string message_type;
  EnrollmentIds ids;
  plist::Value body;
};

// Parses and validates a check-in body: a dict with MessageType and an
// identifier. Device-supplied strings that are stored or logged (ids,
// inventory, Topic, CommandUUID, ...) have length limits: a longer one is
// InvalidArgument naming the key (not quoting the value). Unknown MessageTypes
// are returned as-is (the service answers 400).
Result<CheckinMessage> DecodeCheckin(std::string_view body, const plist::Limits& limits);

struct Report {
  std::string status;  // Idle | Acknowledged | Error | CommandFormatError | NotNow
  std::string command_uuid;  // empty for Idle
  EnrollmentIds ids;
  plist::Value body;
};

// Parses a command report. A missing Status, an unknown Status, a missing
// CommandUUID on a non-Idle report or a too-long value (as for check-ins) is
// InvalidArgument.
Result<Report> DecodeReport(std::string_view body, const plist::Limits& limits);

// A copy of a message without secret keys (tokens, push magic, bootstrap token)
// for events and logs.
plist::Value WithoutSecrets(const plist::Value& message);

}  // namespace orchard::protocol
