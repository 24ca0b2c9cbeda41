#include "inventory.h"

#include <pugixml.hpp>

#include <algorithm>
#include <cstring>
#include <cstdio>
#include <ctime>

namespace inventory_export {

namespace {

constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr const char* kSecurityPrefix = "SecurityInfo.";

// Length of the well-formed UTF-8 sequence at s[i], 0 if none starts there.
size_t Utf8SeqLen(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  const size_t left = s.size() - i;
  const auto cont = [&](size_t k) { return k < s.size() && (b(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return left >= 2 && cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xE0 && b(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(i + 1) >= 0xA0) return 0;  // surrogates
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xF0 && b(i + 1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(i + 1) >= 0x90) return 0;  // > U+10FFFF
    return 4;
  }
  return 0;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp <= 0x10FFFF) {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->append(kReplacement);
  }
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// ---- plist (pugixml) ----

std::string_view NodeText(const pugi::xml_node& n) { return n.text().get(); }

pugi::xml_node FirstElement(const pugi::xml_node& n) {
  for (pugi::xml_node c = n.first_child(); c; c = c.next_sibling())
    if (c.type() == pugi::node_element) return c;
  return pugi::xml_node();
}

// The value element following <key>name</key> in a plist dict, or an empty node.
pugi::xml_node DictGet(const pugi::xml_node& dict, std::string_view name) {
  for (pugi::xml_node k = dict.first_child(); k; k = k.next_sibling()) {
    if (k.type() != pugi::node_element || std::strcmp(k.name(), "key") != 0) continue;
    if (NodeText(k) != name) continue;
    pugi::xml_node v = k.next_sibling();
    while (v && v.type() != pugi::node_element) v = v.next_sibling();
    return v;
  }
  return pugi::xml_node();
}

struct Flattener {
  Fields* fields;
  bool truncated = false;

  void Add(const std::string& key, Scalar v) {
    if (fields->size() >= kMaxFieldsPerReport) {
      truncated = true;
      return;
    }
    (*fields)[key] = std::move(v);
  }

  void Node(const pugi::xml_node& n, const std::string& key, size_t depth) {
    if (key.size() > kMaxKeyBytes || depth > kMaxDepth) {
      truncated = true;
      return;
    }
    const char* name = n.name();
    if (std::strcmp(name, "dict") == 0) {
      for (pugi::xml_node k = n.first_child(); k; k = k.next_sibling()) {
        if (k.type() != pugi::node_element || std::strcmp(k.name(), "key") != 0) continue;
        pugi::xml_node v = k.next_sibling();
        while (v && v.type() != pugi::node_element) v = v.next_sibling();
        if (!v || std::strcmp(v.name(), "key") == 0) continue;
        const std::string part = Bounded(NodeText(k), kMaxKeyBytes + 1);
        if (part.empty()) continue;
        Node(v, key.empty() ? part : key + "." + part, depth + 1);
      }
    } else if (std::strcmp(name, "array") == 0) {
      size_t i = 0;
      for (pugi::xml_node v = n.first_child(); v; v = v.next_sibling()) {
        if (v.type() != pugi::node_element) continue;
        if (i >= kMaxArrayItems) {
          truncated = true;
          break;
        }
        Node(v, key + "." + std::to_string(i), depth + 1);
        ++i;
      }
    } else if (key.empty()) {
      return;  // a scalar needs a name
    } else if (std::strcmp(name, "string") == 0 || std::strcmp(name, "date") == 0) {
      Add(key, Scalar{Scalar::Kind::kString, Bounded(NodeText(n), kMaxStringBytes)});
    } else if (std::strcmp(name, "integer") == 0 || std::strcmp(name, "real") == 0) {
      const std::string_view t = Trim(NodeText(n));
      if (t.size() <= 40 && IsJsonNumber(t)) {
        Add(key, Scalar{Scalar::Kind::kNumber, std::string(t)});
      } else {
        Add(key, Scalar{Scalar::Kind::kString, Bounded(t, kMaxStringBytes)});
      }
    } else if (std::strcmp(name, "true") == 0 || std::strcmp(name, "false") == 0) {
      Add(key, Scalar{Scalar::Kind::kBool, name});
    } else if (std::strcmp(name, "data") == 0) {
      std::string b64;
      for (char c : NodeText(n)) {
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') b64.push_back(c);
        if (b64.size() > kMaxStringBytes) break;
      }
      Add(key, Scalar{Scalar::Kind::kString, Bounded(b64, kMaxStringBytes)});
    }
  }
};

std::string AppString(const pugi::xml_node& dict, const char* key) {
  pugi::xml_node v = DictGet(dict, key);
  if (!v || std::strcmp(v.name(), "dict") == 0 || std::strcmp(v.name(), "array") == 0) return {};
  return Bounded(Trim(NodeText(v)), kMaxAppStringBytes);
}

// ---- JSON parsing ----

struct JsonParser {
  std::string_view s;
  size_t i = 0;

  void Ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  static int Hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  bool Hex4(uint32_t* out) {
    if (i + 4 > s.size()) return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      int h = Hex(s[i + k]);
      if (h < 0) return false;
      v = v * 16 + static_cast<uint32_t>(h);
    }
    i += 4;
    *out = v;
    return true;
  }
  bool String(std::string* out) {
    if (i >= s.size() || s[i] != '"') return false;
    ++i;
    std::string raw;
    while (i < s.size()) {
      char c = s[i];
      if (c == '"') {
        ++i;
        *out = SanitizeUtf8(raw);
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        raw.push_back(c);
        ++i;
        continue;
      }
      if (++i >= s.size()) return false;
      c = s[i++];
      switch (c) {
        case '"': raw.push_back('"'); break;
        case '\\': raw.push_back('\\'); break;
        case '/': raw.push_back('/'); break;
        case 'b': raw.push_back('\b'); break;
        case 'f': raw.push_back('\f'); break;
        case 'n': raw.push_back('\n'); break;
        case 'r': raw.push_back('\r'); break;
        case 't': raw.push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!Hex4(&cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < s.size() && s[i] == '\\' && s[i + 1] == 'u') {
            size_t save = i;
            i += 2;
            uint32_t lo = 0;
            if (Hex4(&lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else {
              i = save;
            }
          }
          AppendUtf8(cp, &raw);
          break;
        }
        default: return false;
      }
    }
    return false;
  }
  bool Value(Json* out, int depth) {
    if (depth > 32) return false;
    Ws();
    if (i >= s.size()) return false;
    const char c = s[i];
    if (c == '{') {
      ++i;
      out->type = Json::Type::kObject;
      Ws();
      if (i < s.size() && s[i] == '}') {
        ++i;
        return true;
      }
      for (;;) {
        Ws();
        std::string key;
        if (!String(&key)) return false;
        Ws();
        if (i >= s.size() || s[i] != ':') return false;
        ++i;
        Json v;
        if (!Value(&v, depth + 1)) return false;
        out->members[key] = std::move(v);
        Ws();
        if (i < s.size() && s[i] == ',') {
          ++i;
          continue;
        }
        if (i < s.size() && s[i] == '}') {
          ++i;
          return true;
        }
        return false;
      }
    }
    if (c == '[') {
      ++i;
      out->type = Json::Type::kArray;
      Ws();
      if (i < s.size() && s[i] == ']') {
        ++i;
        return true;
      }
      for (;;) {
        Json v;
        if (!Value(&v, depth + 1)) return false;
        out->items.push_back(std::move(v));
        Ws();
        if (i < s.size() && s[i] == ',') {
          ++i;
          continue;
        }
        if (i < s.size() && s[i] == ']') {
          ++i;
          return true;
        }
        return false;
      }
    }
    if (c == '"') {
      out->type = Json::Type::kString;
      return String(&out->text);
    }
    for (const char* lit : {"true", "false", "null"}) {
      const size_t n = std::strlen(lit);
      if (s.substr(i, n) == lit) {
        i += n;
        out->type = lit[0] == 'n' ? Json::Type::kNull : Json::Type::kBool;
        if (lit[0] != 'n') out->text = lit;
        return true;
      }
    }
    size_t start = i;
    while (i < s.size() && (std::strchr("+-.eE", s[i]) != nullptr || (s[i] >= '0' && s[i] <= '9'))) ++i;
    std::string_view num = s.substr(start, i - start);
    if (!IsJsonNumber(num)) return false;
    out->type = Json::Type::kNumber;
    out->text = std::string(num);
    return true;
  }
};

std::string ScalarJson(const Scalar& v) {
  return v.kind == Scalar::Kind::kString ? JsonString(v.text) : v.text;
}

bool ScalarFromJson(const Json& j, Scalar* out) {
  switch (j.type) {
    case Json::Type::kString: *out = Scalar{Scalar::Kind::kString, j.text}; return true;
    case Json::Type::kNumber: *out = Scalar{Scalar::Kind::kNumber, j.text}; return true;
    case Json::Type::kBool: *out = Scalar{Scalar::Kind::kBool, j.text}; return true;
    default: return false;
  }
}

int64_t JsonInt(const Json* j, int64_t fallback) {
  if (j == nullptr || j->type != Json::Type::kNumber) return fallback;
  if (j->text.find_first_of(".eE") != std::string::npos || j->text.size() > 18) return fallback;
  return std::stoll(j->text);
}

// Well-known CSV columns: name -> where the value lives ("" = record metadata).
struct KnownColumn {
  const char* name;
  const char* key;
};
constexpr KnownColumn kKnown[] = {
    {"enrollment_id", ""},
    {"serial_number", "SerialNumber"},
    {"udid", "UDID"},
    {"device_name", "DeviceName"},
    {"model", "Model"},
    {"model_name", "ModelName"},
    {"model_number", "ModelNumber"},
    {"product_name", "ProductName"},
    {"os_version", "OSVersion"},
    {"build_version", "BuildVersion"},
    {"supervised", "IsSupervised"},
    {"battery_level", "BatteryLevel"},
    {"device_capacity", "DeviceCapacity"},
    {"available_device_capacity", "AvailableDeviceCapacity"},
    {"wifi_mac", "WiFiMAC"},
    {"bluetooth_mac", "BluetoothMAC"},
    {"imei", "IMEI"},
    {"meid", "MEID"},
    {"phone_number", "PhoneNumber"},
    {"activation_lock_enabled", "IsActivationLockEnabled"},
    {"passcode_present", "SecurityInfo.PasscodePresent"},
    {"passcode_compliant", "SecurityInfo.PasscodeCompliant"},
    {"fde_enabled", "SecurityInfo.FDE_Enabled"},
    {"sip_enabled", "SecurityInfo.SystemIntegrityProtectionEnabled"},
    {"firewall_enabled", "SecurityInfo.FirewallSettings.FirewallEnabled"},
    {"enrolled_via_dep", "SecurityInfo.ManagementStatus.EnrolledViaDEP"},
    {"app_count", ""},
    {"device_information_at", ""},
    {"security_info_at", ""},
    {"installed_applications_at", ""},
};

const KnownColumn* FindKnown(std::string_view name) {
  for (const auto& k : kKnown)
    if (name == k.name) return &k;
  return nullptr;
}

}  // namespace

// ---- Text safety ----

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SeqLen(s, i);
    if (n == 0) {
      out.append(kReplacement);
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string Bounded(std::string_view s, size_t max_bytes) {
  std::string out = SanitizeUtf8(s.substr(0, std::min(s.size(), max_bytes + 4)));
  if (out.size() <= max_bytes) return out;
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
  out.resize(cut);
  return out;
}

std::string JsonString(std::string_view raw) {
  const std::string s = SanitizeUtf8(raw);
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xF]);
        } else if (c == 0xE2 && i + 2 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
                   (static_cast<unsigned char>(s[i + 2]) == 0xA8 || static_cast<unsigned char>(s[i + 2]) == 0xA9)) {
          out += static_cast<unsigned char>(s[i + 2]) == 0xA8 ? "\\u2028" : "\\u2029";
          i += 2;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
  return out;
}

bool IsJsonNumber(std::string_view s) {
  size_t i = 0;
  const auto digit = [&](size_t k) { return k < s.size() && s[k] >= '0' && s[k] <= '9'; };
  if (i < s.size() && s[i] == '-') ++i;
  if (!digit(i)) return false;
  if (s[i] == '0') {
    ++i;
  } else {
    while (digit(i)) ++i;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  return i == s.size();
}

std::string CsvField(std::string_view raw, bool numeric) {
  const std::string clean = SanitizeUtf8(raw);
  std::string t;
  t.reserve(clean.size() + 3);
  for (char ch : clean) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7F) {
      t.append(kReplacement);
    } else {
      t.push_back(ch);
    }
  }
  if (!t.empty() && std::strchr("=+-@\t\r", t[0]) != nullptr && !(numeric && IsJsonNumber(t))) {
    t.insert(t.begin(), '\'');
  }
  if (t.find_first_of(",\"\r\n") == std::string::npos) return t;
  std::string out = "\"";
  for (char c : t) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

std::string Rfc3339(int64_t unix_ms) {
  if (unix_ms < 0) unix_ms = 0;
  const std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(unix_ms % 1000));
  return buf;
}

// ---- Reports ----

Report::Source SourceOf(std::string_view request_type) {
  if (request_type == "DeviceInformation") return Report::Source::kDeviceInformation;
  if (request_type == "SecurityInfo") return Report::Source::kSecurityInfo;
  if (request_type == "InstalledApplicationList") return Report::Source::kInstalledApplications;
  return Report::Source::kNone;
}

const char* SourceTimeKey(Report::Source s) {
  switch (s) {
    case Report::Source::kDeviceInformation: return "device_information_at";
    case Report::Source::kSecurityInfo: return "security_info_at";
    case Report::Source::kInstalledApplications: return "installed_applications_at";
    case Report::Source::kNone: break;
  }
  return "";
}

bool ParseReport(std::string_view xml, Report::Source source, Report* out, std::string* error) {
  *out = Report{};
  out->source = source;
  if (xml.size() > kMaxPlistBytes) {
    *error = "report larger than " + std::to_string(kMaxPlistBytes) + " bytes";
    return false;
  }
  pugi::xml_document doc;
  // No DOCTYPE processing: pugixml never resolves external entities.
  const pugi::xml_parse_result parsed = doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_utf8);
  if (!parsed) {
    *error = std::string("not an XML plist: ") + parsed.description();
    return false;
  }
  pugi::xml_node root = doc.child("plist");
  root = root ? FirstElement(root) : FirstElement(doc);
  if (!root || std::strcmp(root.name(), "dict") != 0) {
    *error = "the report is not a plist dict";
    return false;
  }
  Flattener f{&out->fields};
  switch (source) {
    case Report::Source::kDeviceInformation: {
      pugi::xml_node q = DictGet(root, "QueryResponses");
      if (!q || std::strcmp(q.name(), "dict") != 0) {
        *error = "no QueryResponses dict";
        return false;
      }
      f.Node(q, "", 0);
      // Those keys belong to SecurityInfo reports.
      for (auto it = out->fields.begin(); it != out->fields.end();)
        it = StartsWith(it->first, kSecurityPrefix) ? out->fields.erase(it) : std::next(it);
      break;
    }
    case Report::Source::kSecurityInfo: {
      pugi::xml_node q = DictGet(root, "SecurityInfo");
      if (!q || std::strcmp(q.name(), "dict") != 0) {
        *error = "no SecurityInfo dict";
        return false;
      }
      f.Node(q, "SecurityInfo", 0);
      break;
    }
    case Report::Source::kInstalledApplications: {
      pugi::xml_node list = DictGet(root, "InstalledApplicationList");
      if (!list || std::strcmp(list.name(), "array") != 0) {
        *error = "no InstalledApplicationList array";
        return false;
      }
      std::vector<App> apps;
      for (pugi::xml_node item = list.first_child(); item; item = item.next_sibling()) {
        if (item.type() != pugi::node_element) continue;
        ++out->app_count;
        if (std::strcmp(item.name(), "dict") != 0) continue;
        apps.push_back(App{AppString(item, "Identifier"), AppString(item, "Name"), AppString(item, "Version"),
                           AppString(item, "ShortVersion")});
      }
      std::sort(apps.begin(), apps.end(), [](const App& a, const App& b) {
        if (a.identifier != b.identifier) return a.identifier < b.identifier;
        if (a.name != b.name) return a.name < b.name;
        return a.version < b.version;
      });
      if (apps.size() > kMaxApps) apps.resize(kMaxApps);
      out->apps = std::move(apps);
      break;
    }
    case Report::Source::kNone:
      *error = "not an inventory RequestType";
      return false;
  }
  out->fields_truncated = f.truncated;
  return true;
}

// ---- Records ----

bool Merge(Record* r, const Report& report, int64_t time_ms) {
  const std::string key = SourceTimeKey(report.source);
  if (key.empty()) return false;
  const std::string at = Rfc3339(time_ms);
  auto existing = r->times.find(key);
  if (existing != r->times.end() && existing->second > at) return false;
  r->times[key] = at;
  switch (report.source) {
    case Report::Source::kDeviceInformation:
      for (const auto& [k, v] : report.fields) r->fields[k] = v;
      break;
    case Report::Source::kSecurityInfo: {
      auto it = r->fields.lower_bound(kSecurityPrefix);
      while (it != r->fields.end() && StartsWith(it->first, kSecurityPrefix)) it = r->fields.erase(it);
      for (const auto& [k, v] : report.fields) r->fields[k] = v;
      break;
    }
    case Report::Source::kInstalledApplications:
      r->app_count = static_cast<int64_t>(report.app_count);
      r->apps_kept = static_cast<int64_t>(report.apps.size());
      break;
    case Report::Source::kNone: break;
  }
  r->fields_truncated = r->fields_truncated || report.fields_truncated;
  return true;
}

std::string EncodeRecord(const Record& r) {
  std::string fields;
  bool truncated = r.fields_truncated;
  const size_t budget = kMaxRecordBytes - 4096;  // the rest is room for the metadata
  for (const auto& [k, v] : r.fields) {
    std::string member = JsonString(k) + ":" + ScalarJson(v);
    if (fields.size() + member.size() + 1 > budget) {
      truncated = true;
      continue;
    }
    if (!fields.empty()) fields.push_back(',');
    fields += member;
  }
  std::string out = "{\"enrollment_id\":" + JsonString(Bounded(r.enrollment_id, kMaxEnrollmentIdBytes));
  for (const auto& [k, v] : r.times) out += "," + JsonString(k) + ":" + JsonString(v);
  if (r.app_count >= 0) {
    out += ",\"app_count\":" + std::to_string(r.app_count) + ",\"apps_kept\":" + std::to_string(r.apps_kept) +
           ",\"app_chunks\":" + std::to_string(r.app_chunks);
  }
  out += std::string(",\"fields_truncated\":") + (truncated ? "true" : "false");
  out += ",\"fields\":{" + fields + "}}";
  return out;
}

bool DecodeRecord(std::string_view json, Record* out) {
  Json j;
  if (!ParseJson(json, &j) || j.type != Json::Type::kObject) return false;
  const Json* id = j.Find("enrollment_id");
  const Json* fields = j.Find("fields");
  if (id == nullptr || id->type != Json::Type::kString || fields == nullptr || fields->type != Json::Type::kObject)
    return false;
  Record r;
  r.enrollment_id = id->text;
  for (const char* k : {"device_information_at", "security_info_at", "installed_applications_at"}) {
    const Json* t = j.Find(k);
    if (t != nullptr && t->type == Json::Type::kString) r.times[k] = t->text;
  }
  r.app_count = JsonInt(j.Find("app_count"), -1);
  r.apps_kept = JsonInt(j.Find("apps_kept"), 0);
  r.app_chunks = JsonInt(j.Find("app_chunks"), 0);
  const Json* tr = j.Find("fields_truncated");
  r.fields_truncated = tr != nullptr && tr->type == Json::Type::kBool && tr->text == "true";
  for (const auto& [k, v] : fields->members) {
    Scalar s;
    if (ScalarFromJson(v, &s)) r.fields[k] = std::move(s);
  }
  *out = std::move(r);
  return true;
}

std::string AppJson(const App& a) {
  return "{\"identifier\":" + JsonString(a.identifier) + ",\"name\":" + JsonString(a.name) +
         ",\"version\":" + JsonString(a.version) + ",\"short_version\":" + JsonString(a.short_version) + "}";
}

std::vector<std::string> EncodeAppChunks(const std::vector<App>& apps) {
  std::vector<std::string> chunks;
  std::string cur;
  for (const App& a : apps) {
    const std::string item = AppJson(a);
    if (!cur.empty() && cur.size() + item.size() + 2 > kMaxChunkBytes) {
      chunks.push_back(cur + "]");
      cur.clear();
    }
    cur += cur.empty() ? "[" : ",";
    cur += item;
  }
  if (!cur.empty()) chunks.push_back(cur + "]");
  return chunks;
}

bool DecodeAppChunk(std::string_view json, std::vector<App>* out) {
  Json j;
  if (!ParseJson(json, &j) || j.type != Json::Type::kArray) return false;
  for (const Json& item : j.items) {
    if (item.type != Json::Type::kObject) continue;
    App a;
    auto str = [&](const char* k) {
      const Json* v = item.Find(k);
      return v != nullptr && v->type == Json::Type::kString ? v->text : std::string();
    };
    a.identifier = str("identifier");
    a.name = str("name");
    a.version = str("version");
    a.short_version = str("short_version");
    out->push_back(std::move(a));
  }
  return true;
}

// ---- CSV ----

std::vector<std::string> KnownColumns() {
  std::vector<std::string> out;
  for (const auto& k : kKnown) out.emplace_back(k.name);
  return out;
}

std::vector<std::string> DefaultColumns() {
  return {"enrollment_id",   "serial_number",        "udid",           "device_name",
          "model",           "product_name",         "os_version",     "build_version",
          "supervised",      "battery_level",        "device_capacity", "available_device_capacity",
          "wifi_mac",        "imei",                 "passcode_present", "passcode_compliant",
          "fde_enabled",     "firewall_enabled",     "app_count",      "device_information_at",
          "security_info_at", "installed_applications_at"};
}

bool ParseColumns(std::string_view spec, std::vector<std::string>* out, std::string* error) {
  std::vector<std::string> cols;
  while (true) {
    const size_t comma = spec.find(',');
    const std::string_view part = Trim(spec.substr(0, comma));
    if (part.empty()) {
      *error = "empty column name";
      return false;
    }
    if (part.size() > kMaxKeyBytes) {
      *error = "column name longer than " + std::to_string(kMaxKeyBytes) + " bytes";
      return false;
    }
    for (char c : part) {
      if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
            c == '-')) {
        *error = "column \"" + std::string(part) + "\": only letters, digits, '.', '_' and '-' are allowed";
        return false;
      }
    }
    if (std::find(cols.begin(), cols.end(), part) != cols.end()) {
      *error = "column \"" + std::string(part) + "\" listed twice";
      return false;
    }
    cols.emplace_back(part);
    if (cols.size() > 64) {
      *error = "more than 64 columns";
      return false;
    }
    if (comma == std::string_view::npos) break;
    spec.remove_prefix(comma + 1);
  }
  *out = std::move(cols);
  return true;
}

std::string ColumnValue(const Record& r, const std::string& column, bool* numeric) {
  *numeric = false;
  const KnownColumn* known = FindKnown(column);
  if (known != nullptr && known->key[0] == '\0') {
    if (column == "enrollment_id") return r.enrollment_id;
    if (column == "app_count") {
      if (r.app_count < 0) return "";
      *numeric = true;
      return std::to_string(r.app_count);
    }
    auto t = r.times.find(column);
    return t == r.times.end() ? "" : t->second;
  }
  auto it = r.fields.find(known != nullptr ? std::string(known->key) : column);
  if (it == r.fields.end()) return "";
  *numeric = it->second.kind == Scalar::Kind::kNumber;
  return it->second.text;
}

std::string CsvHeader(const std::vector<std::string>& columns) {
  std::string out;
  for (size_t i = 0; i < columns.size(); ++i) {
    if (i) out.push_back(',');
    out += CsvField(columns[i]);
  }
  return out + "\r\n";
}

std::string CsvRow(const Record& r, const std::vector<std::string>& columns) {
  std::string out;
  for (size_t i = 0; i < columns.size(); ++i) {
    if (i) out.push_back(',');
    bool numeric = false;
    const std::string v = ColumnValue(r, columns[i], &numeric);
    out += CsvField(v, numeric);
  }
  return out + "\r\n";
}

// ---- JSON ----

const Json* Json::Find(std::string_view key) const {
  auto it = members.find(std::string(key));
  return it == members.end() ? nullptr : &it->second;
}

bool ParseJson(std::string_view text, Json* out) {
  JsonParser p{text};
  Json v;
  if (!p.Value(&v, 0)) return false;
  p.Ws();
  if (p.i != text.size()) return false;
  *out = std::move(v);
  return true;
}

}  // namespace inventory_export
