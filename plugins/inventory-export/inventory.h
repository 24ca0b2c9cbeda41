// inventory-export's logic, free of the plugin ABI so unit tests cover it
// without orchardd: flattening device reports (XML plists, parsed with
// pugixml) into per-device records, the record's stored JSON form, and the
// JSON and CSV renderings the routes answer with.
//
// Everything here is pure (inputs in, values out), bounded (see the k*
// limits) and thread-safe. No function throws on bad input; std::bad_alloc
// may escape (the plugin's ABI glue catches it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inventory_export {

// ---- Limits (documented in docs/plugins/inventory-export.md) ----
inline constexpr size_t kMaxStringBytes = 1024;      // a field's string value (bytes, after sanitising)
inline constexpr size_t kMaxKeyBytes = 256;          // a flattened key
inline constexpr size_t kMaxDepth = 8;               // nesting flattened (deeper values are dropped)
inline constexpr size_t kMaxArrayItems = 32;         // items of one array flattened as Key.0 .. Key.31
inline constexpr size_t kMaxFieldsPerReport = 1024;  // flattened fields taken from one report
inline constexpr size_t kMaxRecordBytes = 60 * 1024; // a stored record (the kv limit is 64 KiB)
inline constexpr size_t kMaxApps = 2000;             // apps kept per device
inline constexpr size_t kMaxAppStringBytes = 256;    // Identifier, Name, Version, ShortVersion
inline constexpr size_t kMaxChunkBytes = 60 * 1024;  // one stored chunk of the app list
inline constexpr size_t kMaxEnrollmentIdBytes = 400; // longer ids are not kept (keys are <= 512 bytes)
inline constexpr size_t kMaxPlistBytes = 32 * 1024 * 1024;

// ---- Text safety ----

// s as valid UTF-8: every byte that does not start a well-formed sequence
// (overlong forms, surrogates and code points above U+10FFFF included)
// becomes U+FFFD.
std::string SanitizeUtf8(std::string_view s);
// Sanitised and cut to at most max_bytes on a character boundary.
std::string Bounded(std::string_view s, size_t max_bytes);
// A JSON string literal (quotes included) of s: sanitised, '"' '\\' and
// every control character (and U+2028/U+2029) escaped. Always valid JSON.
std::string JsonString(std::string_view s);
// Whether s is a number in JSON's grammar (what a record stores as a number).
bool IsJsonNumber(std::string_view s);

// One CSV field per RFC 4180 (quoted when it holds ',', '"', CR or LF;
// quotes doubled), sanitised (invalid UTF-8 and control characters other
// than TAB, CR, LF become U+FFFD). Formula injection: a field starting with
// '=', '+', '-', '@', TAB or CR gets a leading apostrophe, unless numeric is
// true and the field is a plain JSON number (e.g. "-1").
std::string CsvField(std::string_view s, bool numeric = false);
// Percent-encodes everything but unreserved characters (RFC 3986).
std::string PercentEncode(std::string_view s);
// Unix milliseconds as RFC 3339 UTC with milliseconds: "2026-12-02T01:15:11.000Z".
std::string Rfc3339(int64_t unix_ms);

// ---- Values ----

// A flattened scalar: a string, or a number/bool whose text is valid JSON.
struct Scalar {
  enum class Kind { kString, kNumber, kBool };
  Kind kind = Kind::kString;
  std::string text;  // kBool: "true" | "false"; kNumber: a JSON number
  bool operator==(const Scalar& o) const { return kind == o.kind && text == o.text; }
};
using Fields = std::map<std::string, Scalar>;  // flattened key (dotted) -> value

struct App {
  std::string identifier, name, version, short_version;
};

// What one command report contributes.
struct Report {
  enum class Source { kNone, kDeviceInformation, kSecurityInfo, kInstalledApplications };
  Source source = Source::kNone;
  Fields fields;            // DeviceInformation: QueryResponses keys; SecurityInfo: "SecurityInfo." keys
  bool fields_truncated = false;
  std::vector<App> apps;    // InstalledApplicationList, sorted by identifier, at most kMaxApps
  size_t app_count = 0;     // apps the device reported (may exceed apps.size())
};

// The source a RequestType feeds, kNone for others.
Report::Source SourceOf(std::string_view request_type);
// The record's timestamp key of a source: "device_information_at", "security_info_at",
// "installed_applications_at".
const char* SourceTimeKey(Report::Source s);

// Parses a device's report (an XML plist, as the event's raw_plist) of the
// given source. Returns false with *error set when it is not a plist dict or
// lacks the source's key (QueryResponses, SecurityInfo, InstalledApplicationList).
bool ParseReport(std::string_view xml, Report::Source source, Report* out, std::string* error);

// ---- Records ----

// One device's inventory as stored under "dev/<enrollment id>".
struct Record {
  std::string enrollment_id;
  std::map<std::string, std::string> times;  // SourceTimeKey -> RFC 3339
  Fields fields;
  bool fields_truncated = false;  // some report fields were dropped (size bounds)
  int64_t app_count = -1;         // -1: no app list yet
  int64_t apps_kept = 0;          // apps stored (<= kMaxApps)
  int64_t app_chunks = 0;         // "apps/<id>/<n>" chunks 0 .. app_chunks-1
};

// Merges a report received at time_ms into the record: DeviceInformation
// fields overwrite those of the same key (a partial query keeps the rest);
// a SecurityInfo report replaces every "SecurityInfo." field; an app list
// replaces the app count. Returns false (record unchanged) when the record
// already holds a newer report of that source.
bool Merge(Record* record, const Report& report, int64_t time_ms);

// The record as JSON, at most kMaxRecordBytes: fields are added in key order
// until the bound, the rest dropped (fields_truncated becomes true).
std::string EncodeRecord(const Record& r);
// Parses what EncodeRecord wrote; false when it is not such a record.
bool DecodeRecord(std::string_view json, Record* out);

// The app list split into chunks of at most kMaxChunkBytes each (a JSON
// array of {"identifier","name","version","short_version"} objects).
std::vector<std::string> EncodeAppChunks(const std::vector<App>& apps);
bool DecodeAppChunk(std::string_view json, std::vector<App>* out);
std::string AppJson(const App& a);

// ---- CSV ----

// A CSV column: a well-known name (enrollment_id, serial_number, os_version,
// ... see KnownColumns) or a flattened key as stored ("SecurityInfo.ManagementStatus.EnrolledViaDEP").
struct Column {
  std::string name;
};
std::vector<std::string> KnownColumns();
std::vector<std::string> DefaultColumns();
// Parses "a,b,c" (spaces around names ignored). False with *error naming the
// bad entry for an empty list, an unknown-looking name (only letters, digits,
// '.', '_' and '-' are allowed; at most 64 columns), or a duplicate.
bool ParseColumns(std::string_view spec, std::vector<std::string>* out, std::string* error);
// The value of column for r ("" when absent) and whether it is numeric.
std::string ColumnValue(const Record& r, const std::string& column, bool* numeric);
// CRLF-terminated rows.
std::string CsvHeader(const std::vector<std::string>& columns);
std::string CsvRow(const Record& r, const std::vector<std::string>& columns);

// ---- Minimal JSON (config and stored records) ----

// A parsed JSON value (objects keep key order by std::map: duplicate keys,
// last wins). Depth at most 32.
struct Json {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  std::string text;  // kString: the string; kNumber: its text; kBool: "true"/"false"
  std::vector<Json> items;
  std::map<std::string, Json> members;
  const Json* Find(std::string_view key) const;
};
bool ParseJson(std::string_view text, Json* out);

}  // namespace inventory_export
