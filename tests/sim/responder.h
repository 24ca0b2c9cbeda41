// Device-side message builders for the simulator: check-in messages, the Idle
// report and command reports, built from a plain DeviceState with no network.
// Everything here is pure (inputs in, plist out) except Responder, which keeps
// the per-device reply policy and the memory needed for NotNow-once.
// Key names and types follow Apple's schemas in
// Apple's device-management schemas (mdm/checkin and mdm/commands; the command
// schemas the tests check against are in tests/fixtures/apple-device-management).
// Thread-safety: free functions are thread-safe; a Responder is used by one
// thread at a time (each simulated device owns its own).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "plist/plist.h"

namespace orchard::sim {

enum class Platform { kIos, kMacos };
const char* PlatformName(Platform p);

struct AppInfo {
  std::string identifier;  // bundle id
  std::string name;
  std::string version;        // CFBundleVersion
  std::string short_version;  // CFBundleShortVersionString
  int64_t bundle_size = 0;
  int64_t dynamic_size = 0;
  bool managed = false;
};

struct ProfilePayloadInfo {
  std::string type, identifier, uuid, display_name;
  int64_t version = 1;
};

struct ProfileInfo {
  std::string identifier, uuid, display_name, organization;
  int64_t version = 1;
  bool managed = true;
  std::vector<ProfilePayloadInfo> payloads;
};

// Everything a simulated device reports about itself. Plain data; copyable.
struct DeviceState {
  Platform platform = Platform::kIos;
  std::string udid;           // upper-case UUID
  std::string enrollment_id;  // User Enrollment: replaces UDID in every message when set
  std::string serial_number;  // 12 chars
  std::string device_name, model_name, model, model_number, product_name;
  std::string os_version, build_version;
  bool cellular = false;  // iPhone: IMEI/MEID/ICCID/carrier keys are answered
  std::string imei, meid, iccid, phone_number;
  std::string wifi_mac, bluetooth_mac, ethernet_mac;
  double device_capacity_gb = 128.0;
  double available_capacity_gb = 64.0;
  double battery_level = 0.85;  // 0..1
  bool supervised = true;
  bool awaiting_configuration = false;
  bool passcode_present = true;
  std::string time_zone = "Europe/Berlin";
  std::string push_token;    // raw bytes (32)
  std::string push_magic;    // UUID string
  std::string unlock_token;  // raw bytes; empty = not sent
  std::string identity_cert_der;
  std::string identity_common_name;
  std::vector<AppInfo> apps;
  std::vector<ProfileInfo> profiles;
};

// Creates a plausible device: random UDID, serial, MACs, push token, PushMagic,
// UnlockToken; a default app and profile inventory. Deterministic for a seed.
DeviceState RandomDeviceState(Platform platform, uint64_t seed);

// Identifiers of the user channel (macOS user, Shared iPad user, User Enrollment).
struct UserChannel {
  std::string user_id;  // GUID; Shared iPad uses kSharedIpadUserId
  std::string short_name;
  std::string long_name;
  std::string enrollment_user_id;  // User Enrollment only; sent when non-empty
  std::string push_token;          // raw bytes; each channel has its own
  std::string push_magic;
};
inline constexpr std::string_view kSharedIpadUserId = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF";

// ---- Check-in messages (PUT to the check-in URL) ----
plist::Value BuildAuthenticate(const DeviceState& s, std::string_view topic);
// user == nullptr: device channel (with UnlockToken when the state has one).
plist::Value BuildTokenUpdate(const DeviceState& s, std::string_view topic,
                              bool awaiting_configuration, const UserChannel* user);
plist::Value BuildCheckOut(const DeviceState& s, std::string_view topic);
// A bare check-in message {MessageType, UDID|EnrollmentID[, Topic]} to extend.
plist::Value BuildCheckInBase(const DeviceState& s, std::string_view message_type,
                              std::string_view topic, const UserChannel* user);

// ---- Command channel (PUT to the server URL) ----
enum class ReportStatus { kAcknowledged, kNotNow, kError, kCommandFormatError };
const char* ReportStatusName(ReportStatus s);

struct ErrorInfo {
  int64_t code = 12021;
  std::string domain = "MCMDMErrorDomain";
  std::string description = "The simulator was told to fail this command.";
};

// {Status: Idle, UDID|EnrollmentID, user keys}.
plist::Value BuildIdle(const DeviceState& s, const UserChannel* user);

// Report for one command as the server sent it ({CommandUUID, Command: {RequestType, ...}}).
// Always carries Status, CommandUUID (when the command had one), UDID|EnrollmentID,
// user keys on the user channel and RequestType (devices include it; harmless).
// Acknowledged adds the RequestType's response keys (QueryResponses, SecurityInfo,
// ProfileList, InstalledApplicationList, CertificateList, ... ; other types get none
// beyond their required keys). Error / CommandFormatError add an ErrorChain.
// A command without CommandUUID, Command dict or RequestType yields CommandFormatError.
plist::Value BuildReport(const DeviceState& s, const plist::Value& command, ReportStatus status,
                         const UserChannel* user, const ErrorInfo& error = {});

// DeviceInformation: the value for one query key, or nullopt when this device
// does not answer it (unknown key, or not applicable to the platform).
std::optional<plist::Value> QueryValue(const DeviceState& s, std::string_view key);

// Applies the state change an Acknowledged command implies (InstallProfile,
// RemoveProfile, InstallApplication, RemoveApplication, DeviceConfigured,
// Settings DeviceName). Other types leave the state unchanged.
void ApplyCommand(DeviceState* s, const plist::Value& command);

// ---- Reply policy ----
enum class Behavior { kAcknowledge, kNotNow, kNotNowOnce, kError, kCommandFormatError };
// "ack" | "notnow" | "notnow-once" | "error" | "format-error"; nullopt otherwise.
std::optional<Behavior> ParseBehavior(std::string_view name);

// Decides how a device answers each command. Per-RequestType overrides win over
// the random rates, which win over the default. kNotNowOnce answers NotNow the
// first time a CommandUUID is seen and Acknowledged afterwards.
class Responder {
 public:
  explicit Responder(uint64_t seed = 0x5eed) : rng_(seed) {}

  void SetDefault(Behavior b) { default_ = b; }
  void SetBehavior(std::string request_type, Behavior b) { per_type_[std::move(request_type)] = b; }
  void ClearBehaviors() { per_type_.clear(); }
  // Fractions in [0,1] of commands (without an override) answered NotNow / Error.
  void SetRates(double not_now, double error) {
    not_now_rate_ = not_now;
    error_rate_ = error;
  }
  void SetError(ErrorInfo e) { error_ = std::move(e); }
  const ErrorInfo& error() const { return error_; }

  ReportStatus Decide(std::string_view request_type, std::string_view command_uuid);

 private:
  Behavior default_ = Behavior::kAcknowledge;
  std::unordered_map<std::string, Behavior> per_type_;
  std::unordered_set<std::string> seen_not_now_;
  double not_now_rate_ = 0, error_rate_ = 0;
  ErrorInfo error_;
  std::mt19937_64 rng_;
};

}  // namespace orchard::sim
