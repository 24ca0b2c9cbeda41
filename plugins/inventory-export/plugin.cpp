// inventory-export: a flattened inventory per device (DeviceInformation,
// SecurityInfo, InstalledApplicationList results) kept in the plugin's
// key-value namespace, served as JSON and CSV on the admin API
// (/plugins/inventory-export/...), refreshed by a per-device timer.
// docs/plugins/inventory-export.md is the admin's guide.
//
// Built against <orchard/plugin.hpp> only (ABI 1.1). State:
//   dev/<enrollment id>            the device's record (inventory.h EncodeRecord)
//   apps/<enrollment id>/<NNNNNN>  its app list in chunks 0 .. app_chunks-1
//   req/<enrollment id>            when this plugin last queued the three commands (RFC 3339)
// Threading: the configuration is fixed at Init; OnEvent (lanes) and OnHttp
// (an HTTP worker) share nothing else, so no locks.
#include <orchard/plugin.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "inventory.h"

namespace inventory_export {
namespace {

using orchard::plugin::Event;
using orchard::plugin::HttpRequest;
using orchard::plugin::HttpResponse;
using orchard::plugin::Run;

constexpr const char* kName = "inventory-export";
constexpr const char* kConsumer = "plugin:inventory-export";
constexpr const char* kRefreshSchedule = "refresh";
constexpr size_t kDefaultLimit = 100;
constexpr size_t kMaxLimit = 1000;
constexpr size_t kDefaultMaxResponseBytes = 8 * 1024 * 1024;
constexpr size_t kResponseReserve = 4096;
// A refresh tick skips a device whose three reports are all younger than this.
constexpr int64_t kFreshMs = 12LL * 60 * 60 * 1000;
// A refresh tick also skips a device that has not yet answered all three of
// the commands this plugin queued, for this long after queueing them (an
// offline device does not pile up a day's three commands per day).
constexpr int64_t kOutstandingMs = 7LL * 24 * 60 * 60 * 1000;

// What DeviceInformation asks for (all in Apple's schema; a device leaves out
// what does not apply to it).
constexpr const char* kQueries =
    R"({"Queries":["DeviceName","OSVersion","BuildVersion","SupplementalBuildVersion","SupplementalOSVersionExtra",)"
    R"("ProductName","Model","ModelName","ModelNumber","SerialNumber","UDID","IMEI","MEID","ICCID","PhoneNumber",)"
    R"("WiFiMAC","BluetoothMAC","EthernetMAC","BatteryLevel","IsSupervised","AvailableDeviceCapacity",)"
    R"("DeviceCapacity","IsActivationLockEnabled","IsDeviceLocatorServiceEnabled","IsCloudBackupEnabled",)"
    R"("LastCloudBackupDate","IsMDMLostModeEnabled","TimeZone","HostName","LocalHostName","IsAppleSilicon",)"
    R"("SystemIntegrityProtectionEnabled","CellularTechnology","ModemFirmwareVersion","CurrentCarrierNetwork",)"
    R"("ServiceSubscriptions","AwaitingConfiguration","IsMultiUser","OSUpdateSettings","EASDeviceIdentifier"]})";

std::string DevKey(std::string_view id) { return "dev/" + std::string(id); }
std::string ReqKey(std::string_view id) { return "req/" + std::string(id); }
std::string ChunkKey(std::string_view id, int64_t n) {
  char num[16];
  std::snprintf(num, sizeof num, "%06lld", static_cast<long long>(n));
  return "apps/" + std::string(id) + "/" + num;
}

bool OnOff(const std::string& v, bool* out) {
  if (v == "on" || v == "true" || v == "yes" || v == "1") {
    *out = true;
    return true;
  }
  if (v == "off" || v == "false" || v == "no" || v == "0") {
    *out = false;
    return true;
  }
  return false;
}

// A decimal 1..max (digits only), or false.
bool ParseCount(const std::string& s, size_t max, size_t* out) {
  if (s.empty() || s.size() > 10) return false;
  size_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<size_t>(c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

std::string ErrorJson(std::string_view code, std::string_view message) {
  return "{\"error\":" + JsonString(code) + ",\"message\":" + JsonString(message) + "}";
}

class InventoryExport : public orchard::plugin::Plugin {
 public:
  orchard_status Init(std::string_view config_json) override {
    columns_ = DefaultColumns();
    Json cfg;
    if (!ParseJson(config_json.empty() ? "{}" : config_json, &cfg) || cfg.type != Json::Type::kObject) {
      return ConfigError("(section)", "the config section is not a JSON object");
    }
    for (const auto& [key, value] : cfg.members) {
      const std::string& v = value.text;
      std::string error;
      if (key == "columns") {
        if (!ParseColumns(v, &columns_, &error)) return ConfigError(key, error);
      } else if (key == "refresh") {
        if (!OnOff(v, &refresh_)) return ConfigError(key, "must be on or off");
      } else if (key == "query_on_enroll") {
        if (!OnOff(v, &query_on_enroll_)) return ConfigError(key, "must be on or off");
      } else if (key == "max_response_bytes") {
        if (!ParseCount(v, size_t(1) << 30, &max_response_bytes_) || max_response_bytes_ < 256 * 1024)
          return ConfigError(key, "must be a number of bytes, 262144 .. 1073741824");
      } else {
        return ConfigError(key, "unknown key (known: columns, refresh, query_on_enroll, max_response_bytes)");
      }
    }
    Log(ORCHARD_LOG_INFO, "started refresh=" + std::string(refresh_ ? "on" : "off") +
                              " query_on_enroll=" + (query_on_enroll_ ? "on" : "off") +
                              " columns=" + std::to_string(columns_.size()));
    return ORCHARD_OK;
  }

  orchard_status OnEvent(Run& run, const Event& ev) override {
    const std::string_view type = ev.type();
    if (type == ORCHARD_EVENT_COMMAND_ACKNOWLEDGED) return OnReport(run, ev);
    if (type == ORCHARD_EVENT_ENROLLMENT_ENROLLED) {
      return query_on_enroll_ ? QueueInventory(run, ev) : ORCHARD_OK;
    }
    if (type == ORCHARD_EVENT_SCHEDULE_TICK) {
      if (ev.request_type() != std::string(kConsumer) + "/" + kRefreshSchedule) return ORCHARD_OK;
      if (!refresh_) return ORCHARD_OK;  // refresh = off: a no-op tick
      bool due = false;
      orchard_status st = RefreshDue(run, ev, &due);
      if (st != ORCHARD_OK) return st;
      return due ? QueueInventory(run, ev) : ORCHARD_OK;
    }
    return ORCHARD_OK;
  }

  orchard_status OnHttp(const HttpRequest& req, HttpResponse& resp) override {
    const std::string_view path = req.path();
    const bool get = req.method() == "GET";
    if (path == "/devices" || path == "/devices.csv") {
      if (!get) return NotAllowed(resp);
      return ListDevices(req, resp, path == "/devices.csv");
    }
    constexpr std::string_view kDevices = "/devices/";
    if (path.substr(0, kDevices.size()) == kDevices) {
      std::string_view rest = path.substr(kDevices.size());
      bool apps = false;
      constexpr std::string_view kApps = "/apps";
      if (rest.size() > kApps.size() && rest.substr(rest.size() - kApps.size()) == kApps) {
        apps = true;
        rest.remove_suffix(kApps.size());
      }
      if (!rest.empty() && rest.size() <= kMaxEnrollmentIdBytes && rest.find('/') == std::string_view::npos) {
        if (!get) return NotAllowed(resp);
        return apps ? DeviceApps(req, resp, rest) : DeviceRecord(resp, rest);
      }
    }
    return resp.Respond(404, "application/json", ErrorJson("not_found", "no such route"));
  }

 private:
  orchard_status ConfigError(const std::string& key, const std::string& message) {
    Log(ORCHARD_LOG_ERROR, "config plugin." + std::string(kName) + "." + key + ": " + message);
    return ORCHARD_ERR_INVALID_ARGUMENT;
  }

  // ---- events ----

  orchard_status OnReport(Run& run, const Event& ev) {
    const Report::Source source = SourceOf(ev.request_type());
    if (source == Report::Source::kNone) return ORCHARD_OK;
    const std::string id(ev.enrollment_id());
    if (id.empty() || id.size() > kMaxEnrollmentIdBytes) return ORCHARD_OK;
    std::string xml(ev.raw_plist());
    if (xml.empty()) {
      orchard_status st = run.LastResult(id, ev.request_type(), nullptr, &xml);
      if (st == ORCHARD_ERR_NOT_FOUND) return ORCHARD_OK;
      if (st != ORCHARD_OK) return st;
    }
    Report report;
    std::string error;
    if (!ParseReport(xml, source, &report, &error)) {
      // A malformed report will not get better on a retry: note it and go on.
      run.Log(ORCHARD_LOG_WARN, "event=report_ignored enrollment_id=" + JsonString(id) +
                                    " command_uuid=" + JsonString(ev.command_uuid()) + " reason=" + JsonString(error));
      return ORCHARD_OK;
    }
    Record rec;
    std::string stored;
    orchard_status st = run.KvGet(DevKey(id), &stored);
    if (st == ORCHARD_OK) {
      if (!DecodeRecord(stored, &rec)) {
        run.Log(ORCHARD_LOG_WARN, "event=record_unreadable enrollment_id=" + JsonString(id) + " (starting over)");
        rec = Record{};
      }
    } else if (st != ORCHARD_ERR_NOT_FOUND) {
      run.SetError("kv_get " + DevKey(id) + " failed");
      return st;
    }
    rec.enrollment_id = id;
    const int64_t old_chunks = rec.app_chunks;
    if (!Merge(&rec, report, ev.time_ms())) {
      run.Log(ORCHARD_LOG_DEBUG, "event=report_stale enrollment_id=" + JsonString(id) +
                                     " command_uuid=" + JsonString(ev.command_uuid()));
      return ORCHARD_OK;
    }
    if (source == Report::Source::kInstalledApplications) {
      const std::vector<std::string> chunks = EncodeAppChunks(report.apps);
      for (size_t i = 0; i < chunks.size(); ++i) {
        st = run.KvPut(ChunkKey(id, static_cast<int64_t>(i)), chunks[i]);
        if (st != ORCHARD_OK) return Failed(run, st, "kv_put app chunk");
      }
      for (int64_t i = static_cast<int64_t>(chunks.size()); i < old_chunks; ++i) {
        st = run.KvDelete(ChunkKey(id, i));
        if (st != ORCHARD_OK && st != ORCHARD_ERR_NOT_FOUND) return Failed(run, st, "kv_delete app chunk");
      }
      rec.app_chunks = static_cast<int64_t>(chunks.size());
    }
    st = run.KvPut(DevKey(id), EncodeRecord(rec));
    if (st != ORCHARD_OK) return Failed(run, st, "kv_put record");
    return ORCHARD_OK;
  }

  static orchard_status Failed(Run& run, orchard_status st, const std::string& what) {
    run.SetError(what + " failed (status " + std::to_string(static_cast<int>(st)) + ")");
    return st;
  }

  // Whether a refresh tick should ask the event's device again: not when its
  // three reports are all younger than kFreshMs at the event's time (that
  // would only repeat them), nor while the three commands this plugin queued
  // last are unanswered and younger than kOutstandingMs.
  static orchard_status RefreshDue(Run& run, const Event& ev, bool* due) {
    *due = false;
    const std::string_view id = ev.enrollment_id();
    if (id.empty() || id.size() > kMaxEnrollmentIdBytes) return ORCHARD_OK;
    Record rec;
    std::string stored;
    orchard_status st = run.KvGet(DevKey(id), &stored);
    if (st == ORCHARD_OK) {
      if (!DecodeRecord(stored, &rec)) rec = Record{};
    } else if (st != ORCHARD_ERR_NOT_FOUND) {
      return Failed(run, st, "kv_get record");
    }
    std::string requested;
    st = run.KvGet(ReqKey(id), &requested);
    if (st == ORCHARD_ERR_NOT_FOUND) requested.clear();
    else if (st != ORCHARD_OK) return Failed(run, st, "kv_get request");
    const std::string fresh_since = Rfc3339(ev.time_ms() - kFreshMs);
    bool fresh = true, answered = true;
    for (Report::Source s : {Report::Source::kDeviceInformation, Report::Source::kSecurityInfo,
                             Report::Source::kInstalledApplications}) {
      auto t = rec.times.find(SourceTimeKey(s));
      const std::string at = t == rec.times.end() ? std::string() : t->second;
      fresh = fresh && !at.empty() && at >= fresh_since;
      answered = answered && !at.empty() && at >= requested;
    }
    const bool outstanding = !requested.empty() && !answered && requested > Rfc3339(ev.time_ms() - kOutstandingMs);
    *due = !fresh && !outstanding;
    return ORCHARD_OK;
  }

  // DeviceInformation + SecurityInfo + InstalledApplicationList for the
  // event's device channel (user channels are skipped). The host derives the
  // CommandUUIDs from this event, so a redelivery queues nothing twice.
  orchard_status QueueInventory(Run& run, const Event& ev) {
    if (ev.enrollment_id().empty() || ev.enrollment_id().size() > kMaxEnrollmentIdBytes) return ORCHARD_OK;
    std::string device;
    orchard_status st = run.Device("", &device);
    if (st == ORCHARD_ERR_NOT_FOUND) return ORCHARD_OK;
    if (st != ORCHARD_OK) return Failed(run, st, "device");
    Json d;
    const Json* type = ParseJson(device, &d) ? d.Find("type") : nullptr;
    if (type == nullptr || (type->text != "device" && type->text != "user_enrollment_device")) return ORCHARD_OK;
    struct Cmd {
      const char* request_type;
      const char* fields;
    };
    const Cmd cmds[] = {{"DeviceInformation", kQueries},
                        {"SecurityInfo", ""},
                        {"InstalledApplicationList", R"({"ManagedAppsOnly":false})"}};
    for (const Cmd& c : cmds) {
      st = run.Enqueue("", c.request_type, c.fields, 0, 0);
      if (st != ORCHARD_OK) return Failed(run, st, std::string("enqueue ") + c.request_type);
    }
    // In the same transaction as the commands: a tick before the answers skips this device.
    st = run.KvPut(ReqKey(ev.enrollment_id()), Rfc3339(ev.time_ms()));
    if (st != ORCHARD_OK) return Failed(run, st, "kv_put request");
    return ORCHARD_OK;
  }

  // ---- routes ----

  static orchard_status NotAllowed(HttpResponse& resp) {
    resp.Header("Allow", "GET");
    return resp.Respond(405, "application/json", ErrorJson("method_not_allowed", "only GET is allowed here"));
  }
  static orchard_status BadRequest(HttpResponse& resp, std::string_view message) {
    return resp.Respond(400, "application/json", ErrorJson("bad_request", message));
  }
  static orchard_status HostFailed(HttpResponse& resp, orchard_status st) {
    return resp.Respond(st == ORCHARD_ERR_UNSUPPORTED ? 501 : 500, "application/json",
                        ErrorJson("host_error", "reading the plugin's state failed (status " +
                                                    std::to_string(static_cast<int>(st)) + ")"));
  }

  bool Limit(const HttpRequest& req, size_t* limit) const {
    const std::string l = req.Param("limit");
    *limit = kDefaultLimit;
    return l.empty() || (ParseCount(l, kMaxLimit, limit) && *limit > 0);
  }

  orchard_status ListDevices(const HttpRequest& req, HttpResponse& resp, bool csv_path) {
    const std::string format = req.Param("format");
    if (!format.empty() && format != "json" && format != "csv") return BadRequest(resp, "format must be json or csv");
    const bool csv = csv_path || format == "csv";
    size_t limit = 0;
    if (!Limit(req, &limit)) return BadRequest(resp, "limit must be 1..1000");
    const std::string after = req.Param("after");
    if (after.size() > kMaxEnrollmentIdBytes) return BadRequest(resp, "after is too long");

    std::string body = csv ? CsvHeader(columns_) : "{\"devices\":[";
    const size_t budget = max_response_bytes_ - kResponseReserve;
    size_t rows = 0, entries = 0;
    bool more = false;
    std::string last;  // enrollment id of the last entry consumed
    orchard_status st = KvScan("dev/", after.empty() ? "" : DevKey(after), limit + 1,
                               [&](std::string_view key, std::string_view value) {
                                 ++entries;
                                 if (rows >= limit) {
                                   more = true;
                                   return false;
                                 }
                                 Record r;
                                 if (!DecodeRecord(value, &r)) {  // not ours: skip it, but move past it
                                   last = std::string(key.substr(4));
                                   return true;
                                 }
                                 std::string row = csv ? CsvRow(r, columns_) : EncodeRecord(r);
                                 if (body.size() + row.size() + 1 > budget) {
                                   more = true;
                                   return false;
                                 }
                                 if (!csv && rows > 0) body.push_back(',');
                                 body += row;
                                 ++rows;
                                 last = std::string(key.substr(4));
                                 return true;
                               });
    if (st != ORCHARD_OK) return HostFailed(resp, st);
    // The scan ended at its own limit (unreadable entries skipped on the way): there may be more.
    if (!more && entries == limit + 1 && !last.empty()) more = true;
    const std::string next = more ? last : std::string();
    if (!next.empty()) {
      const std::string route = csv_path ? "/plugins/inventory-export/devices.csv?"
                                         : std::string("/plugins/inventory-export/devices?") +
                                               (csv ? "format=csv&" : "");
      resp.Header("X-Next-Cursor", PercentEncode(next));
      resp.Header("Link", "<" + route + "limit=" + std::to_string(limit) + "&after=" + PercentEncode(next) +
                              ">; rel=\"next\"");
    }
    if (csv) return resp.Respond(200, "text/csv; charset=utf-8; header=present", body);
    body += "],\"count\":" + std::to_string(rows) + ",\"next\":" + JsonString(next) + "}";
    return resp.Respond(200, "application/json", body);
  }

  orchard_status ReadRecord(HttpResponse& resp, std::string_view id, Record* rec, bool* found) {
    *found = false;
    std::string stored;
    orchard_status st = KvRead(DevKey(id), &stored);
    if (st == ORCHARD_ERR_NOT_FOUND) {
      resp.Respond(404, "application/json", ErrorJson("not_found", "no inventory for this enrollment id"));
      return ORCHARD_OK;
    }
    if (st != ORCHARD_OK) return HostFailed(resp, st);
    if (!DecodeRecord(stored, rec)) {
      return resp.Respond(500, "application/json", ErrorJson("unreadable", "the stored record is unreadable"));
    }
    *found = true;
    return ORCHARD_OK;
  }

  orchard_status DeviceRecord(HttpResponse& resp, std::string_view id) {
    Record rec;
    bool found = false;
    orchard_status st = ReadRecord(resp, id, &rec, &found);
    if (!found) return st;
    return resp.Respond(200, "application/json", EncodeRecord(rec));
  }

  orchard_status DeviceApps(const HttpRequest& req, HttpResponse& resp, std::string_view id) {
    size_t limit = 0;
    if (!Limit(req, &limit)) return BadRequest(resp, "limit must be 1..1000");
    size_t offset = 0;
    const std::string after = req.Param("after");
    if (!after.empty() && !ParseCount(after, kMaxApps, &offset)) return BadRequest(resp, "after must be a cursor");
    Record rec;
    bool found = false;
    orchard_status st = ReadRecord(resp, id, &rec, &found);
    if (!found) return st;

    // app_count and installed_applications_at are left out until an app list arrived.
    std::string body = "{\"enrollment_id\":" + JsonString(rec.enrollment_id);
    if (rec.app_count >= 0) body += ",\"app_count\":" + std::to_string(rec.app_count);
    body += ",\"apps_kept\":" + std::to_string(rec.apps_kept);
    auto at = rec.times.find("installed_applications_at");
    if (at != rec.times.end()) body += ",\"installed_applications_at\":" + JsonString(at->second);
    body += ",\"apps\":[";
    const size_t budget = max_response_bytes_ - kResponseReserve;
    size_t index = 0, rows = 0;
    bool more = false;
    for (int64_t c = 0; c < rec.app_chunks && !more; ++c) {
      std::string chunk;
      st = KvRead(ChunkKey(id, c), &chunk);
      if (st == ORCHARD_ERR_NOT_FOUND) break;
      if (st != ORCHARD_OK) return HostFailed(resp, st);
      std::vector<App> apps;
      if (!DecodeAppChunk(chunk, &apps)) break;
      for (const App& a : apps) {
        if (index++ < offset) continue;
        const std::string item = AppJson(a);
        if (rows >= limit || body.size() + item.size() + 1 > budget) {
          more = true;
          break;
        }
        if (rows > 0) body.push_back(',');
        body += item;
        ++rows;
      }
    }
    const size_t next = offset + rows;
    body += "],\"count\":" + std::to_string(rows) + ",\"next\":" + JsonString(more ? std::to_string(next) : "") + "}";
    if (more) resp.Header("X-Next-Cursor", std::to_string(next));
    return resp.Respond(200, "application/json", body);
  }

  std::vector<std::string> columns_;
  bool refresh_ = true;
  bool query_on_enroll_ = true;
  size_t max_response_bytes_ = kDefaultMaxResponseBytes;
};

// One tick per device channel a day, spread over an hour.
const orchard_schedule kSchedules[] = {
    {kRefreshSchedule, 24LL * 60 * 60 * 1000, 60LL * 60 * 1000, 1, 0},
};

}  // namespace
}  // namespace inventory_export

ORCHARD_PLUGIN_DEFINE_1_1(inventory_export::InventoryExport, "inventory-export", "1.0.0", 0,
                          inventory_export::kSchedules, 1, ORCHARD_EVENT_COMMAND_ACKNOWLEDGED,
                          ORCHARD_EVENT_ENROLLMENT_ENROLLED)
