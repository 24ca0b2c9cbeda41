#include "sim/responder.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace orchard::sim {
namespace {

using plist::Value;

std::string RandomUuid(std::mt19937_64& rng) {
  uint64_t hi = rng(), lo = rng();
  hi = (hi & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;  // variant 10
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08X-%04X-%04X-%04X-%012llX", unsigned(hi >> 32),
                unsigned((hi >> 16) & 0xFFFF), unsigned(hi & 0xFFFF), unsigned(lo >> 48),
                static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFULL));
  return buf;
}

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng() & 0xFF);
  return out;
}

std::string RandomFrom(std::mt19937_64& rng, std::string_view alphabet, size_t n) {
  std::string out(n, '0');
  for (auto& c : out) c = alphabet[rng() % alphabet.size()];
  return out;
}

std::string RandomMac(std::mt19937_64& rng) {
  char buf[20];
  uint64_t v = rng();
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", unsigned((v >> 40) & 0xFC),
                unsigned((v >> 32) & 0xFF), unsigned((v >> 24) & 0xFF), unsigned((v >> 16) & 0xFF),
                unsigned((v >> 8) & 0xFF), unsigned(v & 0xFF));
  return buf;
}

std::string Rfc3339Now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void AddIds(Value* v, const DeviceState& s, const UserChannel* user) {
  if (!s.enrollment_id.empty()) {
    v->Set("EnrollmentID", Value::String(s.enrollment_id));
  } else {
    v->Set("UDID", Value::String(s.udid));
  }
  if (user == nullptr) return;
  if (!user->enrollment_user_id.empty()) {
    v->Set("EnrollmentUserID", Value::String(user->enrollment_user_id));
  }
  if (!user->user_id.empty()) v->Set("UserID", Value::String(user->user_id));
  if (!user->short_name.empty()) v->Set("UserShortName", Value::String(user->short_name));
  if (!user->long_name.empty()) v->Set("UserLongName", Value::String(user->long_name));
}

bool IsMac(const DeviceState& s) { return s.platform == Platform::kMacos; }

Value Str(std::string_view s) { return Value::String(std::string(s)); }

Value ErrorChain(const ErrorInfo& e) {
  Value item = Value::MakeDict();
  item.Set("ErrorCode", Value::Integer(e.code));
  item.Set("ErrorDomain", Str(e.domain));
  item.Set("LocalizedDescription", Str(e.description));
  item.Set("USEnglishDescription", Str(e.description));
  return Value::MakeArray({std::move(item)});
}

// Strings listed in an array-of-strings request key; nullopt when the key is absent.
std::optional<std::vector<std::string>> StringList(const Value& cmd, std::string_view key) {
  const Value* v = cmd.Find(key);
  if (v == nullptr || v->AsArray() == nullptr) return std::nullopt;
  std::vector<std::string> out;
  for (const Value& item : *v->AsArray()) {
    if (const std::string* s = item.AsString()) out.push_back(*s);
  }
  return out;
}

bool Contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// Keys answered when DeviceInformation carries no Queries array.
constexpr std::string_view kDefaultQueries[] = {
    "UDID",         "DeviceName",  "OSVersion",    "BuildVersion",   "ModelName",
    "Model",        "ProductName", "SerialNumber", "DeviceCapacity", "AvailableDeviceCapacity",
    "BatteryLevel", "IMEI",        "MEID",         "WiFiMAC",        "BluetoothMAC",
    "IsSupervised"};

Value QueryResponses(const DeviceState& s, const Value& cmd) {
  Value out = Value::MakeDict();
  auto queries = StringList(cmd, "Queries");
  if (queries) {
    for (const std::string& q : *queries) {
      if (out.Find(q) != nullptr) continue;
      if (auto v = QueryValue(s, q)) out.Set(q, std::move(*v));
    }
  } else {
    for (std::string_view q : kDefaultQueries) {
      if (auto v = QueryValue(s, q)) out.Set(std::string(q), std::move(*v));
    }
  }
  return out;
}

Value SecurityInfo(const DeviceState& s) {
  Value info = Value::MakeDict();
  info.Set("HardwareEncryptionCaps", Value::Integer(3));
  info.Set("PasscodePresent", Value::Bool(s.passcode_present));
  info.Set("PasscodeCompliant", Value::Bool(s.passcode_present));
  info.Set("PasscodeCompliantWithProfiles", Value::Bool(s.passcode_present));
  info.Set("PasscodeLockGracePeriodEnforced", Value::Integer(0));
  Value mgmt = Value::MakeDict();
  mgmt.Set("EnrolledViaDEP", Value::Bool(s.supervised));
  mgmt.Set("UserApprovedEnrollment", Value::Bool(true));
  mgmt.Set("IsUserEnrollment", Value::Bool(!s.enrollment_id.empty()));
  mgmt.Set("IsActivationLockManageable", Value::Bool(s.supervised));
  if (IsMac(s)) {
    info.Set("PasscodeLockGracePeriod", Value::Integer(0));
    info.Set("AutoLockTime", Value::Integer(300));
    info.Set("FDE_Enabled", Value::Bool(true));
    info.Set("FDE_HasPersonalRecoveryKey", Value::Bool(true));
    info.Set("FDE_HasInstitutionalRecoveryKey", Value::Bool(false));
    info.Set("SystemIntegrityProtectionEnabled", Value::Bool(true));
    Value fw = Value::MakeDict();
    fw.Set("FirewallEnabled", Value::Bool(true));
    fw.Set("BlockAllIncoming", Value::Bool(false));
    fw.Set("StealthMode", Value::Bool(false));
    fw.Set("Applications", Value::MakeArray());
    fw.Set("LoggingEnabled", Value::Bool(false));
    fw.Set("LoggingOption", Str("throttled"));
    info.Set("FirewallSettings", std::move(fw));
    Value fwpw = Value::MakeDict();
    fwpw.Set("PasswordExists", Value::Bool(false));
    fwpw.Set("ChangePending", Value::Bool(false));
    fwpw.Set("AllowOroms", Value::Bool(true));
    info.Set("FirmwarePasswordStatus", std::move(fwpw));
    Value boot = Value::MakeDict();
    boot.Set("SecureBootLevel", Str("full"));
    boot.Set("ExternalBootLevel", Str("disallowed"));
    boot.Set("ReducedSecurity", Value::MakeArray());
    info.Set("SecureBoot", std::move(boot));
    info.Set("RemoteDesktopEnabled", Value::Bool(false));
    info.Set("AuthenticatedRootVolumeEnabled", Value::Bool(true));
    info.Set("BootstrapTokenAllowedForAuthentication", Str("allowed"));
    info.Set("BootstrapTokenRequiredForSoftwareUpdate", Value::Bool(false));
    info.Set("BootstrapTokenRequiredForKernelExtensionApproval", Value::Bool(false));
    info.Set("IsRecoveryLockEnabled", Value::Bool(false));
  }
  info.Set("ManagementStatus", std::move(mgmt));
  return info;
}

Value ProfileList(const DeviceState& s, const Value& cmd) {
  bool managed_only = cmd.GetBool("ManagedOnly", false);
  Value list = Value::MakeArray();
  for (const ProfileInfo& p : s.profiles) {
    if (managed_only && !p.managed) continue;
    Value d = Value::MakeDict();
    d.Set("PayloadIdentifier", Str(p.identifier));
    d.Set("PayloadUUID", Str(p.uuid));
    d.Set("PayloadDisplayName", Str(p.display_name));
    if (!p.organization.empty()) d.Set("PayloadOrganization", Str(p.organization));
    d.Set("PayloadVersion", Value::Integer(p.version));
    d.Set("PayloadRemovalDisallowed", Value::Bool(false));
    d.Set("HasRemovalPasscode", Value::Bool(false));
    d.Set("IsEncrypted", Value::Bool(false));
    d.Set("IsManaged", Value::Bool(p.managed));
    Value content = Value::MakeArray();
    for (const ProfilePayloadInfo& pl : p.payloads) {
      Value c = Value::MakeDict();
      c.Set("PayloadType", Str(pl.type));
      c.Set("PayloadIdentifier", Str(pl.identifier));
      c.Set("PayloadUUID", Str(pl.uuid));
      c.Set("PayloadVersion", Value::Integer(pl.version));
      if (!pl.display_name.empty()) c.Set("PayloadDisplayName", Str(pl.display_name));
      content.AsArray()->push_back(std::move(c));
    }
    d.Set("PayloadContent", std::move(content));
    list.AsArray()->push_back(std::move(d));
  }
  return list;
}

Value InstalledApps(const DeviceState& s, const Value& cmd) {
  auto ids = StringList(cmd, "Identifiers");
  auto items = StringList(cmd, "Items");
  bool managed_only = cmd.GetBool("ManagedAppsOnly", false);
  auto want = [&](std::string_view key) { return !items || Contains(*items, key); };
  Value list = Value::MakeArray();
  for (const AppInfo& a : s.apps) {
    if (managed_only && !a.managed) continue;
    if (ids && !ids->empty() && !Contains(*ids, a.identifier)) continue;
    Value d = Value::MakeDict();
    if (want("Identifier")) d.Set("Identifier", Str(a.identifier));
    if (want("Name")) d.Set("Name", Str(a.name));
    if (want("Version")) d.Set("Version", Str(a.version));
    if (want("ShortVersion")) d.Set("ShortVersion", Str(a.short_version));
    if (want("BundleSize")) d.Set("BundleSize", Value::Integer(a.bundle_size));
    if (want("DynamicSize")) d.Set("DynamicSize", Value::Integer(a.dynamic_size));
    if (want("IsValidated")) d.Set("IsValidated", Value::Bool(true));
    if (want("Installing")) d.Set("Installing", Value::Bool(false));
    if (want("HasUpdateAvailable")) d.Set("HasUpdateAvailable", Value::Bool(false));
    if (want("Source") && a.managed) d.Set("Source", Str("MDM"));
    list.AsArray()->push_back(std::move(d));
  }
  return list;
}

Value CertificateList(const DeviceState& s) {
  Value list = Value::MakeArray();
  if (!s.identity_cert_der.empty()) {
    Value d = Value::MakeDict();
    d.Set("CommonName", Str(s.identity_common_name));
    d.Set("Data", Value::DataValue(s.identity_cert_der));
    d.Set("IsIdentity", Value::Bool(true));
    list.AsArray()->push_back(std::move(d));
  }
  return list;
}

Value ManagedAppList(const DeviceState& s) {
  Value out = Value::MakeDict();
  for (const AppInfo& a : s.apps) {
    if (!a.managed) continue;
    Value d = Value::MakeDict();
    d.Set("Status", Str("Managed"));
    d.Set("ManagementFlags", Value::Integer(1));
    d.Set("UnusedRedemptionCode", Str(""));
    d.Set("HasConfiguration", Value::Bool(false));
    d.Set("HasFeedback", Value::Bool(false));
    d.Set("IsValidated", Value::Bool(true));
    d.Set("ExternalVersionIdentifier", Value::Integer(0));
    out.Set(a.identifier, std::move(d));
  }
  return out;
}

Value UserList(const DeviceState& s, const UserChannel* user) {
  Value users = Value::MakeArray();
  if (IsMac(s)) {
    Value u = Value::MakeDict();
    u.Set("UserName", Str(user ? user->short_name : "admin"));
    u.Set("FullName", Str(user ? user->long_name : "Administrator"));
    u.Set("UID", Value::Integer(501));
    u.Set("UserGUID", Str(user ? user->user_id : s.udid));
    u.Set("IsLoggedIn", Value::Bool(true));
    u.Set("HasDataToSync", Value::Bool(false));
    u.Set("DataQuota", Value::Integer(0));
    u.Set("DataUsed", Value::Integer(0));
    u.Set("MobileAccount", Value::Bool(false));
    u.Set("HasSecureToken", Value::Bool(true));
    users.AsArray()->push_back(std::move(u));
  }
  return users;
}

Value BoolDict(std::string_view key, bool v) {
  Value d = Value::MakeDict();
  d.Set(std::string(key), Value::Bool(v));
  return d;
}

// Response keys for an Acknowledged command of type rt.
void AddResponseKeys(Value* r, const DeviceState& s, std::string_view rt, const Value& cmd,
                     const UserChannel* user) {
  if (rt == "DeviceInformation") {
    r->Set("QueryResponses", QueryResponses(s, cmd));
  } else if (rt == "SecurityInfo") {
    r->Set("SecurityInfo", SecurityInfo(s));
  } else if (rt == "ProfileList") {
    r->Set("ProfileList", ProfileList(s, cmd));
  } else if (rt == "InstalledApplicationList") {
    r->Set("InstalledApplicationList", InstalledApps(s, cmd));
  } else if (rt == "CertificateList") {
    r->Set("CertificateList", CertificateList(s));
  } else if (rt == "ManagedApplicationList") {
    r->Set("ManagedApplicationList", ManagedAppList(s));
  } else if (rt == "ActiveNSExtensions" || rt == "NSExtensionMappings") {
    r->Set("Extensions", Value::MakeArray());
  } else if (rt == "InviteToProgram") {
    r->Set("InvitationResult", Str("Acknowledged"));
  } else if (rt == "ActivationLockBypassCode") {
    r->Set("ActivationLockBypassCode", Str("ABCDE-FGHJK-LMNPQ-RSTUV-WXYZ0-12"));
  } else if (rt == "DeviceLocation") {
    r->Set("Latitude", Value::Real(52.5200));
    r->Set("Longitude", Value::Real(13.4050));
    r->Set("HorizontalAccuracy", Value::Real(12.0));
    r->Set("VerticalAccuracy", Value::Real(8.0));
    r->Set("Altitude", Value::Real(34.0));
    r->Set("Speed", Value::Real(0.0));
    r->Set("Course", Value::Real(-1.0));
    r->Set("Timestamp", Str(Rfc3339Now()));
  } else if (rt == "Restrictions") {
    r->Set("GlobalRestrictions", Value::MakeDict());
    r->Set("ProfileRestrictions", Value::MakeDict());
  } else if (rt == "ContentCachingInformation") {
    Value st = Value::MakeDict();
    st.Set("Activated", Value::Bool(false));
    st.Set("Active", Value::Bool(false));
    st.Set("StartupStatus", Str("OK"));
    r->Set("StatusResponse", std::move(st));
  } else if (rt == "LOMDeviceRequest") {
    r->Set("ResponseList", Value::MakeArray());
  } else if (rt == "LOMSetupRequest") {
    r->Set("PrimaryIPv6AddressList", Value::MakeArray());
    r->Set("SecondaryIPv6AddressList", Value::MakeArray());
    r->Set("LOMProtocolVersion", Value::Integer(1));
  } else if (rt == "ManagedApplicationAttributes") {
    r->Set("ApplicationAttributes", Value::MakeArray());
  } else if (rt == "ManagedApplicationConfiguration") {
    r->Set("ApplicationConfigurations", Value::MakeArray());
  } else if (rt == "ManagedApplicationFeedback") {
    r->Set("ManagedApplicationFeedback", Value::MakeArray());
  } else if (rt == "ManagedMediaList") {
    r->Set("Books", Value::MakeArray());
  } else if (rt == "SetFirmwarePassword") {
    r->Set("SetFirmwarePassword", BoolDict("PasswordChanged", true));
  } else if (rt == "VerifyFirmwarePassword") {
    r->Set("VerifyFirmwarePassword", BoolDict("PasswordVerified", true));
  } else if (rt == "VerifyRecoveryLock") {
    r->Set("PasswordVerified", Value::Bool(true));
  } else if (rt == "RequestUnlockToken") {
    r->Set("UnlockToken",
           Value::DataValue(s.unlock_token.empty() ? std::string(32, '\x5a') : s.unlock_token));
  } else if (rt == "ProvisioningProfileList") {
    r->Set("ProvisioningProfileList", Value::MakeArray());
  } else if (rt == "AvailableOSUpdates") {
    r->Set("AvailableOSUpdates", Value::MakeArray());
  } else if (rt == "ScheduleOSUpdateScan") {
    r->Set("ScanInitiated", Value::Bool(true));
  } else if (rt == "ScheduleOSUpdate") {
    r->Set("UpdateResults", Value::MakeArray());
  } else if (rt == "OSUpdateStatus") {
    r->Set("OSUpdateStatus", Value::MakeArray());
  } else if (rt == "UserList") {
    r->Set("Users", UserList(s, user));
  } else if (rt == "InstallApplication") {
    if (const std::string* id =
            cmd.Find("Identifier") ? cmd.Find("Identifier")->AsString() : nullptr) {
      r->Set("Identifier", Str(*id));
      r->Set("State", Str("Managed"));
    }
  }
}

// Finds the XML plist inside a (possibly CMS-signed) profile: signed profiles
// carry the plist verbatim as the encapsulated content.
std::optional<Value> ProfileDocument(const std::string& bytes) {
  size_t start = bytes.find("<?xml");
  if (start == std::string::npos) start = bytes.find("<plist");
  if (start == std::string::npos) return std::nullopt;
  size_t end = bytes.find("</plist>", start);
  if (end == std::string::npos) return std::nullopt;
  auto parsed = plist::ParseXml(std::string_view(bytes).substr(start, end + 8 - start));
  if (!parsed.ok()) return std::nullopt;
  return std::move(parsed).value();
}

}  // namespace

const char* PlatformName(Platform p) { return p == Platform::kMacos ? "macOS" : "iOS"; }

const char* ReportStatusName(ReportStatus s) {
  switch (s) {
    case ReportStatus::kAcknowledged:
      return "Acknowledged";
    case ReportStatus::kNotNow:
      return "NotNow";
    case ReportStatus::kError:
      return "Error";
    case ReportStatus::kCommandFormatError:
      return "CommandFormatError";
  }
  return "Error";
}

DeviceState RandomDeviceState(Platform platform, uint64_t seed) {
  std::mt19937_64 rng(seed);
  DeviceState s;
  s.platform = platform;
  s.udid = RandomUuid(rng);
  s.serial_number = RandomFrom(rng, "0123456789CDFGHJKLMNPQRTVWXY", 12);
  s.wifi_mac = RandomMac(rng);
  s.bluetooth_mac = RandomMac(rng);
  if (platform == Platform::kIos) {
    s.device_name = "iPhone";
    s.model_name = "iPhone";
    s.model = "MQ8N2LL/A";
    s.model_number = "MQ8N2";
    s.product_name = "iPhone15,2";
    s.os_version = "17.5.1";
    s.build_version = "21F90";
    s.cellular = true;
    std::string imei = "35" + RandomFrom(rng, "0123456789", 13);
    s.imei = imei.substr(0, 2) + " " + imei.substr(2, 6) + " " + imei.substr(8, 6) + " " +
             imei.substr(14, 1);
    s.meid = imei.substr(0, 14);
    s.iccid = "8949" + RandomFrom(rng, "0123456789", 15);
    s.phone_number = "+49 151 " + RandomFrom(rng, "0123456789", 8);
    s.device_capacity_gb = 128.0;
    s.available_capacity_gb = 20.0 + double(rng() % 9000) / 100.0;
  } else {
    s.device_name = "Mac";
    s.model_name = "MacBook Pro";
    s.model = "Mac14,7";
    s.model_number = "MNEH3LL/A";
    s.product_name = "Mac14,7";
    s.os_version = "14.5";
    s.build_version = "23F79";
    s.cellular = false;
    s.ethernet_mac = RandomMac(rng);
    s.device_capacity_gb = 512.0;
    s.available_capacity_gb = 100.0 + double(rng() % 30000) / 100.0;
  }
  s.battery_level = double(20 + rng() % 80) / 100.0;
  s.push_token = RandomBytes(rng, 32);
  s.push_magic = RandomUuid(rng);
  s.unlock_token = platform == Platform::kIos ? RandomBytes(rng, 256) : std::string();
  s.apps = {
      {"com.example.orchard.agent", "Orchard Agent", "42", "1.4.2", 18'350'080, 61'440, true},
      {"com.apple.Keynote", "Keynote", "7053.0.140", "13.1", 712'998'912, 3'276'800, false},
      {"com.example.notes", "Field Notes", "311", "3.1.1", 45'219'840, 1'204'224, true},
  };
  ProfileInfo mdm{"com.example.orchard.enrollment",
                  RandomUuid(rng),
                  "Orchard MDM",
                  "Example Org",
                  1,
                  false,
                  {}};
  mdm.payloads.push_back(
      {"com.apple.mdm", "com.example.orchard.enrollment.mdm", RandomUuid(rng), "MDM", 1});
  mdm.payloads.push_back({"com.apple.security.scep", "com.example.orchard.enrollment.scep",
                          RandomUuid(rng), "Device Identity", 1});
  ProfileInfo wifi{
      "com.example.orchard.wifi", RandomUuid(rng), "Office Wi-Fi", "Example Org", 1, true, {}};
  wifi.payloads.push_back(
      {"com.apple.wifi.managed", "com.example.orchard.wifi.payload", RandomUuid(rng), "Wi-Fi", 1});
  s.profiles = {std::move(mdm), std::move(wifi)};
  return s;
}

plist::Value BuildCheckInBase(const DeviceState& s, std::string_view message_type,
                              std::string_view topic, const UserChannel* user) {
  Value m = Value::MakeDict();
  m.Set("MessageType", Str(message_type));
  if (!topic.empty()) m.Set("Topic", Str(topic));
  AddIds(&m, s, user);
  return m;
}

plist::Value BuildAuthenticate(const DeviceState& s, std::string_view topic) {
  Value m = BuildCheckInBase(s, "Authenticate", topic, nullptr);
  m.Set("BuildVersion", Str(s.build_version));
  m.Set("DeviceName", Str(s.device_name));
  m.Set("Model", Str(s.model));
  m.Set("ModelName", Str(s.model_name));
  m.Set("OSVersion", Str(s.os_version));
  m.Set("ProductName", Str(s.product_name));
  if (s.enrollment_id.empty()) m.Set("SerialNumber", Str(s.serial_number));
  if (s.cellular && s.enrollment_id.empty()) {
    m.Set("IMEI", Str(s.imei));
    m.Set("MEID", Str(s.meid));
  }
  return m;
}

plist::Value BuildTokenUpdate(const DeviceState& s, std::string_view topic,
                              bool awaiting_configuration, const UserChannel* user) {
  Value m = BuildCheckInBase(s, "TokenUpdate", topic, user);
  if (user != nullptr) {
    m.Set("Token", Value::DataValue(user->push_token));
    m.Set("PushMagic", Str(user->push_magic));
    if (IsMac(s)) m.Set("NotOnConsole", Value::Bool(false));
  } else {
    m.Set("Token", Value::DataValue(s.push_token));
    m.Set("PushMagic", Str(s.push_magic));
    if (!s.unlock_token.empty()) m.Set("UnlockToken", Value::DataValue(s.unlock_token));
    m.Set("AwaitingConfiguration", Value::Bool(awaiting_configuration));
  }
  return m;
}

plist::Value BuildCheckOut(const DeviceState& s, std::string_view topic) {
  return BuildCheckInBase(s, "CheckOut", topic, nullptr);
}

plist::Value BuildIdle(const DeviceState& s, const UserChannel* user) {
  Value m = Value::MakeDict();
  m.Set("Status", Str("Idle"));
  AddIds(&m, s, user);
  return m;
}

plist::Value BuildReport(const DeviceState& s, const plist::Value& command, ReportStatus status,
                         const UserChannel* user, const ErrorInfo& error) {
  std::string_view uuid = command.GetString("CommandUUID");
  const Value* cmd = command.Find("Command");
  std::string_view rt = cmd != nullptr ? cmd->GetString("RequestType") : std::string_view();
  if (uuid.empty() || cmd == nullptr || cmd->AsDict() == nullptr || rt.empty()) {
    status = ReportStatus::kCommandFormatError;
  }
  Value r = Value::MakeDict();
  if (!uuid.empty()) r.Set("CommandUUID", Str(uuid));
  if (!rt.empty()) r.Set("RequestType", Str(rt));
  r.Set("Status", Str(ReportStatusName(status)));
  AddIds(&r, s, user);
  switch (status) {
    case ReportStatus::kAcknowledged:
      AddResponseKeys(&r, s, rt, *cmd, user);
      break;
    case ReportStatus::kNotNow:
      break;
    case ReportStatus::kError:
      r.Set("ErrorChain", ErrorChain(error));
      break;
    case ReportStatus::kCommandFormatError:
      r.Set("ErrorChain",
            ErrorChain({12001, "MCMDMErrorDomain", "The command is not in a valid format."}));
      break;
  }
  return r;
}

std::optional<plist::Value> QueryValue(const DeviceState& s, std::string_view k) {
  const bool mac = IsMac(s);
  const bool cell = s.cellular;
  auto str = [](std::string_view v) -> std::optional<Value> {
    if (v.empty()) return std::nullopt;
    return Value::String(std::string(v));
  };
  auto b = [](bool v) -> std::optional<Value> { return Value::Bool(v); };
  auto when = [](bool cond, std::optional<Value> v) { return cond ? v : std::nullopt; };
  if (k == "UDID") return when(s.enrollment_id.empty(), str(s.udid));
  if (k == "ProvisioningUDID") return when(mac, str(s.udid));
  if (k == "AwaitingConfiguration") return b(s.awaiting_configuration);
  if (k == "iTunesStoreAccountIsActive") return b(false);
  if (k == "DeviceName") return str(s.device_name);
  if (k == "OSVersion") return str(s.os_version);
  if (k == "BuildVersion") return str(s.build_version);
  if (k == "ModelName") return str(s.model_name);
  if (k == "Model") return str(s.model);
  if (k == "ModelNumber") return str(s.model_number);
  if (k == "IsAppleSilicon") return when(mac, b(true));
  if (k == "ProductName") return str(s.product_name);
  if (k == "SerialNumber") return when(s.enrollment_id.empty(), str(s.serial_number));
  if (k == "DeviceCapacity") return Value::Real(s.device_capacity_gb);
  if (k == "AvailableDeviceCapacity") return Value::Real(s.available_capacity_gb);
  if (k == "IMEI") return when(cell, str(s.imei));
  if (k == "MEID") return when(cell, str(s.meid));
  if (k == "ModemFirmwareVersion") return when(cell, str("2.60.01"));
  if (k == "CellularTechnology") return Value::Integer(cell ? 3 : 0);
  if (k == "BatteryLevel") return Value::Real(s.battery_level);
  if (k == "HasBattery") return b(true);
  if (k == "IsSupervised") return b(s.supervised);
  if (k == "IsMultiUser") return b(false);
  if (k == "IsDeviceLocatorServiceEnabled") return b(false);
  if (k == "IsActivationLockEnabled") return b(false);
  if (k == "IsActivationLockSupported") return b(true);
  if (k == "IsDoNotDisturbInEffect") return b(false);
  if (k == "SupportsLOMDevice") return when(mac, b(false));
  if (k == "EASDeviceIdentifier") return when(!mac, str(s.serial_number));
  if (k == "IsCloudBackupEnabled") return when(!mac, b(false));
  if (k == "LastCloudBackupDate") return when(!mac, Value::DateValue(1717200000));
  if (k == "ActiveManagedUsers") return when(mac, Value::MakeArray());
  if (k == "LocalHostName") return when(mac, str(s.device_name + ".local"));
  if (k == "HostName") return when(mac, str(s.device_name + ".local"));
  if (k == "SystemIntegrityProtectionEnabled") return when(mac, b(true));
  if (k == "IsMDMLostModeEnabled") return when(!mac, b(false));
  if (k == "PushToken") return Value::DataValue(s.push_token);
  if (k == "DiagnosticSubmissionEnabled") return b(false);
  if (k == "AppAnalyticsEnabled") return b(false);
  if (k == "TimeZone") return str(s.time_zone);
  if (k == "BluetoothMAC") return str(s.bluetooth_mac);
  if (k == "WiFiMAC") return str(s.wifi_mac);
  if (k == "EthernetMAC") return when(mac, str(s.ethernet_mac));
  if (k == "ICCID") return when(cell, str(s.iccid));
  if (k == "PhoneNumber") return when(cell, str(s.phone_number));
  if (k == "CurrentCarrierNetwork" || k == "SIMCarrierNetwork" || k == "SubscriberCarrierNetwork") {
    return when(cell, str("Telekom.de"));
  }
  if (k == "CarrierSettingsVersion") return when(cell, str("56.0"));
  if (k == "DataRoamingEnabled" || k == "VoiceRoamingEnabled" || k == "PersonalHotspotEnabled" ||
      k == "IsNetworkTethered" || k == "IsRoaming") {
    return when(cell, b(false));
  }
  if (k == "SIMMCC" || k == "SubscriberMCC" || k == "CurrentMCC") return when(cell, str("262"));
  if (k == "SIMMNC" || k == "SubscriberMNC" || k == "CurrentMNC") return when(cell, str("01"));
  if (k == "PINRequiredForEraseDevice" || k == "PINRequiredForDeviceLock") {
    return when(mac, b(false));
  }
  if (k == "SupportsiOSAppInstalls") return when(mac, b(true));
  if (k == "SoftwareUpdateDeviceID") return str(mac ? "J416cAP" : "iPhone15,2");
  if (k == "MDMOptions") return Value::MakeDict();
  if (k == "OSUpdateSettings" && mac) {
    Value d = Value::MakeDict();
    d.Set("CatalogURL", Str("https://swscan.apple.com/content/catalogs/others/index.sucatalog"));
    d.Set("IsDefaultCatalog", Value::Bool(true));
    d.Set("PreviousScanDate", Value::DateValue(1717200000));
    d.Set("PreviousScanResult", Str("0"));
    d.Set("PerformPeriodicCheck", Value::Bool(true));
    d.Set("AutoCheckEnabled", Value::Bool(true));
    d.Set("BackgroundDownloadEnabled", Value::Bool(true));
    d.Set("AutomaticAppInstallationEnabled", Value::Bool(true));
    d.Set("AutomaticOSInstallationEnabled", Value::Bool(false));
    d.Set("AutomaticSecurityUpdatesEnabled", Value::Bool(true));
    return d;
  }
  if (k == "AccessibilitySettings" && !mac) {
    Value d = Value::MakeDict();
    for (const char* key : {"BoldTextEnabled", "IncreaseContrastEnabled", "ReduceMotionEnabled",
                            "ReduceTransparencyEnabled", "TouchAccommodationsEnabled",
                            "VoiceOverEnabled", "ZoomEnabled", "GrayscaleEnabled"}) {
      d.Set(key, Value::Bool(false));
    }
    d.Set("TextSize", Value::Integer(3));
    return d;
  }
  return std::nullopt;
}

void ApplyCommand(DeviceState* s, const plist::Value& command) {
  const Value* cmd = command.Find("Command");
  if (cmd == nullptr) return;
  std::string_view rt = cmd->GetString("RequestType");
  if (rt == "InstallProfile") {
    const std::string* payload = cmd->GetData("Payload");
    if (payload == nullptr) return;
    auto doc = ProfileDocument(*payload);
    if (!doc || doc->GetString("PayloadIdentifier").empty()) return;
    ProfileInfo p;
    p.identifier = std::string(doc->GetString("PayloadIdentifier"));
    p.uuid = std::string(doc->GetString("PayloadUUID"));
    p.display_name = std::string(doc->GetString("PayloadDisplayName"));
    p.organization = std::string(doc->GetString("PayloadOrganization"));
    if (const Value* v = doc->Find("PayloadVersion"); v && v->AsInteger())
      p.version = *v->AsInteger();
    p.managed = true;
    if (const Value* content = doc->Find("PayloadContent"); content && content->AsArray()) {
      for (const Value& item : *content->AsArray()) {
        ProfilePayloadInfo pl;
        pl.type = std::string(item.GetString("PayloadType"));
        pl.identifier = std::string(item.GetString("PayloadIdentifier"));
        pl.uuid = std::string(item.GetString("PayloadUUID"));
        pl.display_name = std::string(item.GetString("PayloadDisplayName"));
        if (const Value* v = item.Find("PayloadVersion"); v && v->AsInteger())
          pl.version = *v->AsInteger();
        p.payloads.push_back(std::move(pl));
      }
    }
    auto it = std::find_if(s->profiles.begin(), s->profiles.end(),
                           [&](const ProfileInfo& x) { return x.identifier == p.identifier; });
    if (it != s->profiles.end()) {
      *it = std::move(p);
    } else {
      s->profiles.push_back(std::move(p));
    }
  } else if (rt == "RemoveProfile") {
    std::string_view id = cmd->GetString("Identifier");
    std::erase_if(s->profiles, [&](const ProfileInfo& p) { return p.identifier == id; });
  } else if (rt == "InstallApplication") {
    std::string_view id = cmd->GetString("Identifier");
    if (id.empty()) return;
    for (AppInfo& a : s->apps) {
      if (a.identifier == id) {
        a.managed = true;
        return;
      }
    }
    s->apps.push_back({std::string(id), std::string(id), "1", "1.0", 10'485'760, 0, true});
  } else if (rt == "RemoveApplication") {
    std::string_view id = cmd->GetString("Identifier");
    std::erase_if(s->apps, [&](const AppInfo& a) { return a.identifier == id && a.managed; });
  } else if (rt == "DeviceConfigured") {
    s->awaiting_configuration = false;
  } else if (rt == "Settings") {
    const Value* items = cmd->Find("Settings");
    if (items == nullptr || items->AsArray() == nullptr) return;
    for (const Value& item : *items->AsArray()) {
      if (item.GetString("Item") == "DeviceName" && !item.GetString("DeviceName").empty()) {
        s->device_name = std::string(item.GetString("DeviceName"));
      }
    }
  }
}

std::optional<Behavior> ParseBehavior(std::string_view name) {
  if (name == "ack" || name == "acknowledge") return Behavior::kAcknowledge;
  if (name == "notnow") return Behavior::kNotNow;
  if (name == "notnow-once") return Behavior::kNotNowOnce;
  if (name == "error") return Behavior::kError;
  if (name == "format-error") return Behavior::kCommandFormatError;
  return std::nullopt;
}

ReportStatus Responder::Decide(std::string_view request_type, std::string_view command_uuid) {
  Behavior b = default_;
  auto it = per_type_.find(std::string(request_type));
  if (it != per_type_.end()) {
    b = it->second;
  } else if (not_now_rate_ > 0 || error_rate_ > 0) {
    double x = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    if (x < not_now_rate_) {
      b = Behavior::kNotNow;
    } else if (x < not_now_rate_ + error_rate_) {
      b = Behavior::kError;
    }
  }
  switch (b) {
    case Behavior::kAcknowledge:
      return ReportStatus::kAcknowledged;
    case Behavior::kNotNow:
      return ReportStatus::kNotNow;
    case Behavior::kError:
      return ReportStatus::kError;
    case Behavior::kCommandFormatError:
      return ReportStatus::kCommandFormatError;
    case Behavior::kNotNowOnce:
      if (seen_not_now_.insert(std::string(command_uuid)).second) return ReportStatus::kNotNow;
      return ReportStatus::kAcknowledged;
  }
  return ReportStatus::kAcknowledged;
}

}  // namespace orchard::sim
