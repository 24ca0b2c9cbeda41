#include "config/config.h"

#include "util/secret_box.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

namespace orchard::config {
namespace {

std::string Trim(std::string s) {
  size_t a = s.find_first_not_of(" \t\r");
  size_t b = s.find_last_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, b - a + 1);
}

Status Bad(const std::string& key, const std::string& why) {
  return Status::InvalidArgument("config key '" + key + "': " + why);
}

Status ParseInt(const std::string& key, const std::string& v, int64_t lo, int64_t hi, int64_t* out) {
  int64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size()) return Bad(key, "not an integer: '" + v + "'");
  if (n < lo || n > hi)
    return Bad(key, v + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  *out = n;
  return Status::Ok();
}

Status ParseBool(const std::string& key, const std::string& v, bool* out) {
  if (v == "true" || v == "yes" || v == "on" || v == "1") *out = true;
  else if (v == "false" || v == "no" || v == "off" || v == "0") *out = false;
  else return Bad(key, "expected true or false, got '" + v + "'");
  return Status::Ok();
}

Status ParseListen(const std::string& key, const std::string& v, Config* c) {
  auto colon = v.rfind(':');
  if (colon == std::string::npos) return Bad(key, "expected HOST:PORT, got '" + v + "'");
  int64_t port;
  ORCHARD_RETURN_IF_ERROR(ParseInt(key, v.substr(colon + 1), 0, 65535, &port));
  std::string host = v.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) return Bad(key, "empty host in '" + v + "'");
  c->listen_host = host;
  c->listen_port = static_cast<uint16_t>(port);
  return Status::Ok();
}

std::vector<std::string> SplitList(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = Trim(item);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

using Setter = std::function<Status(const std::string& key, const std::string& value, Config*)>;

// An http(s) URL without a trailing slash, path or query ("" clears it).
Setter UrlSetter(std::string Config::*field) {
  return [=](const std::string& k, const std::string& v, Config* c) {
    std::string u = v;
    while (!u.empty() && u.back() == '/') u.pop_back();
    const bool scheme = u.rfind("https://", 0) == 0 || u.rfind("http://", 0) == 0;
    const bool clean = std::none_of(u.begin(), u.end(), [](char ch) { return ch <= ' ' || ch == '?' || ch == '#'; });
    if (!u.empty() && (!scheme || !clean || u.find("://") + 3 == u.size()))
      return Bad(k, "expected an https:// URL without query, got '" + v + "'");
    c->*field = u;
    return Status::Ok();
  };
}

Setter IntSetter(int64_t lo, int64_t hi, std::function<void(Config*, int64_t)> set) {
  return [=](const std::string& k, const std::string& v, Config* c) {
    int64_t n;
    ORCHARD_RETURN_IF_ERROR(ParseInt(k, v, lo, hi, &n));
    set(c, n);
    return Status::Ok();
  };
}
Setter BoolSetter(bool Config::*field) {
  return [=](const std::string& k, const std::string& v, Config* c) {
    return ParseBool(k, v, &(c->*field));
  };
}
Setter StringSetter(std::string Config::*field) {
  return [=](const std::string&, const std::string& v, Config* c) {
    c->*field = v;
    return Status::Ok();
  };
}

// A list of day counts ("7, 30"); empty turns the feature off.
Setter DaysSetter(std::vector<int> Config::*field) {
  return [=](const std::string& k, const std::string& v, Config* c) {
    std::vector<int> days;
    for (const auto& item : SplitList(v)) {
      int64_t n;
      ORCHARD_RETURN_IF_ERROR(ParseInt(k, item, 1, 3650, &n));
      days.push_back(int(n));
    }
    std::sort(days.begin(), days.end());
    days.erase(std::unique(days.begin(), days.end()), days.end());
    c->*field = days;
    return Status::Ok();
  };
}

const std::map<std::string, Setter>& Keys() {
  static const std::map<std::string, Setter> keys = {
      {"listen", ParseListen},
      {"data_dir", StringSetter(&Config::data_dir)},
      {"threads", IntSetter(1, 64, [](Config* c, int64_t n) { c->threads = int(n); })},
      {"api_key", StringSetter(&Config::api_key)},
      {"max_body_bytes",
       IntSetter(4096, 256 << 20, [](Config* c, int64_t n) { c->max_body_bytes = size_t(n); })},
      {"max_connections",
       IntSetter(0, 10'000'000, [](Config* c, int64_t n) { c->max_connections = size_t(n); })},
      {"max_plist_depth", IntSetter(4, 512, [](Config* c, int64_t n) { c->max_plist_depth = int(n); })},
      {"api.max_response_bytes",
       IntSetter(65536, 1 << 30, [](Config* c, int64_t n) { c->api_max_response_bytes = size_t(n); })},
      {"auth.cert_header", StringSetter(&Config::cert_header)},
      {"auth.device_ca",
       [](const std::string&, const std::string& v, Config* c) {
         c->device_ca_files = SplitList(v);
         return Status::Ok();
       }},
      {"auth.insecure_dev", BoolSetter(&Config::insecure_dev)},
      {"enroll.ca_cert_file", StringSetter(&Config::enroll_ca_cert_file)},
      {"enroll.ca_key_file", StringSetter(&Config::enroll_ca_key_file)},
      {"enroll.scep_challenge", StringSetter(&Config::enroll_scep_challenge)},
      {"enroll.cert_validity_days",
       IntSetter(1, 3650, [](Config* c, int64_t n) { c->enroll_cert_validity_days = n; })},
      {"enroll.public_url", UrlSetter(&Config::enroll_public_url)},
      {"enroll.server_url", UrlSetter(&Config::enroll_server_url)},
      {"enroll.checkin_url", UrlSetter(&Config::enroll_checkin_url)},
      {"enroll.scep_url", UrlSetter(&Config::enroll_scep_url)},
      {"enroll.profile_identifier", StringSetter(&Config::enroll_profile_identifier)},
      {"enroll.profile_organization", StringSetter(&Config::enroll_profile_organization)},
      {"enroll.profile_display_name", StringSetter(&Config::enroll_profile_display_name)},
      {"enroll.token", StringSetter(&Config::enroll_token)},
      {"enroll.identity",
       [](const std::string& k, const std::string& v, Config* c) {
         if (v != "scep" && v != "pkcs12") return Bad(k, "expected scep or pkcs12, got '" + v + "'");
         c->enroll_identity = v;
         return Status::Ok();
       }},
      {"enroll.profile_signing_cert", StringSetter(&Config::enroll_profile_signing_cert)},
      {"enroll.profile_signing_key", StringSetter(&Config::enroll_profile_signing_key)},
      {"enroll.profile_signing_chain", StringSetter(&Config::enroll_profile_signing_chain)},
      {"enroll.anchor_certs",
       [](const std::string&, const std::string& v, Config* c) {
         c->enroll_anchor_certs = SplitList(v);
         return Status::Ok();
       }},
      {"enroll.challenge_ttl_seconds",
       IntSetter(60, 30 * 86400, [](Config* c, int64_t n) { c->enroll_challenge_ttl_seconds = n; })},
      {"auth.trusted_proxies",
       [](const std::string&, const std::string& v, Config* c) {
         c->trusted_proxies = SplitList(v);
         return Status::Ok();
       }},
      {"checkin.user_authenticate",
       [](const std::string& k, const std::string& v, Config* c) {
         if (v == "decline") c->user_authenticate_digest = false;
         else if (v == "digest") c->user_authenticate_digest = true;
         else return Bad(k, "expected 'decline' or 'digest', got '" + v + "'");
         return Status::Ok();
       }},
      {"checkin.max_user_channels",
       IntSetter(1, 100000, [](Config* c, int64_t n) { c->max_user_channels = int(n); })},
      {"queue.max_deliveries",
       IntSetter(0, 1000, [](Config* c, int64_t n) { c->queue_max_deliveries = int(n); })},
      {"ddm.keep_status_reports",
       IntSetter(0, 1000, [](Config* c, int64_t n) { c->ddm_keep_status_reports = int(n); })},
      {"ddm.manifest_cache_items",
       IntSetter(0, 100000000, [](Config* c, int64_t n) { c->ddm_manifest_cache_items = static_cast<size_t>(n); })},
      {"ddm.enable_on_enroll", BoolSetter(&Config::ddm_enable_on_enroll)},
      {"ddm.keep_assignments", BoolSetter(&Config::ddm_keep_assignments)},
      {"ddm.references",
       [](const std::string& k, const std::string& v, Config* c) {
         if (v != "off" && v != "warn" && v != "refuse") return Bad(k, "expected off, warn or refuse, got '" + v + "'");
         c->ddm_references = v;
         return Status::Ok();
       }},
      {"retention.results_hours",
       IntSetter(1, 24 * 3650, [](Config* c, int64_t n) { c->result_retention_hours = n; })},
      {"retention.events_hours",
       IntSetter(1, 24 * 3650, [](Config* c, int64_t n) { c->event_retention_hours = n; })},
      {"retention.sweep_seconds",
       IntSetter(1, 86400, [](Config* c, int64_t n) { c->sweep_interval_seconds = n; })},
      {"store.sync", BoolSetter(&Config::store_sync)},
      {"store.wal_recovery",
       [](const std::string& k, const std::string& v, Config* c) {
         if (v != "strict" && v != "point_in_time")
           return Bad(k, "expected strict or point_in_time, got '" + v + "'");
         c->store_wal_recovery = v;
         return Status::Ok();
       }},
      {"push.endpoint",
       [](const std::string& k, const std::string& v, Config* c) {
         if (v != "production" && v != "sandbox") {
           Config probe;
           if (!ParseListen(k, v, &probe).ok() || probe.listen_port == 0)
             return Bad(k, "expected production, sandbox or HOST:PORT (port 1-65535), got '" + v + "'");
         }
         c->push_endpoint = v;
         return Status::Ok();
       }},
      {"push.ca_file", StringSetter(&Config::push_ca_file)},
      {"push.connections", IntSetter(1, 16, [](Config* c, int64_t n) { c->push_connections = int(n); })},
      {"push.expiration_seconds",
       IntSetter(0, 30 * 86400, [](Config* c, int64_t n) { c->push_expiration_seconds = n; })},
      {"push.coalesce_ms", IntSetter(0, 3600 * 1000, [](Config* c, int64_t n) { c->push_coalesce_ms = n; })},
      {"push.repush_interval_seconds",
       IntSetter(0, 30 * 86400, [](Config* c, int64_t n) { c->push_repush_interval_seconds = n; })},
      {"push.retry_max", IntSetter(0, 10, [](Config* c, int64_t n) { c->push_retry_max = int(n); })},
      {"push.retry_base_ms",
       IntSetter(10, 600 * 1000, [](Config* c, int64_t n) { c->push_retry_base_ms = n; })},
      {"push.expiry_warn_days",
       [](const std::string& k, const std::string& v, Config* c) {
         std::vector<int> days;
         for (const auto& item : SplitList(v)) {
           int64_t n;
           ORCHARD_RETURN_IF_ERROR(ParseInt(k, item, 0, 3650, &n));
           days.push_back(int(n));
         }
         c->push_expiry_warn_days = days;
         return Status::Ok();
       }},
      {"push.key_encryption_key", StringSetter(&Config::push_key_encryption_key)},
      {"log.level",
       [](const std::string& k, const std::string& v, Config* c) {
         if (v != "debug" && v != "info" && v != "warn" && v != "error")
           return Bad(k, "expected debug, info, warn or error, got '" + v + "'");
         c->log_level = v;
         return Status::Ok();
       }},
      {"metrics.enabled", BoolSetter(&Config::metrics_enabled)},
      {"policy.dir", StringSetter(&Config::policy_dir)},
      {"plugin.dir", StringSetter(&Config::plugin_dir)},
      {"plugin.lanes", IntSetter(1, 16, [](Config* c, int64_t n) { c->plugin_lanes = int(n); })},
      {"policy.lanes", IntSetter(1, 16, [](Config* c, int64_t n) { c->policy_lanes = int(n); })},
      {"policy.instruction_budget",
       IntSetter(10'000, 1'000'000'000, [](Config* c, int64_t n) { c->policy_instruction_budget = n; })},
      {"policy.memory_mb", IntSetter(1, 4096, [](Config* c, int64_t n) { c->policy_memory_mb = n; })},
      {"policy.deadline_ms", IntSetter(10, 600'000, [](Config* c, int64_t n) { c->policy_deadline_ms = n; })},
      {"policy.watch_seconds", IntSetter(0, 3600, [](Config* c, int64_t n) { c->policy_watch_seconds = n; })},
      {"automation.max_attempts",
       IntSetter(1, 100, [](Config* c, int64_t n) { c->automation_max_attempts = int(n); })},
      {"automation.record_retention_hours",
       IntSetter(1, 24 * 3650, [](Config* c, int64_t n) { c->automation_record_retention_hours = n; })},
      {"device.silent_days", DaysSetter(&Config::device_silent_days)},
      {"certificates.expiry_warn_days", DaysSetter(&Config::certificate_expiry_warn_days)},
      {"events.device_idle",
       [](const std::string& k, const std::string& v, Config* c) {
         if (v != "auto" && v != "always") return Bad(k, "expected auto or always, got '" + v + "'");
         c->events_device_idle = v;
         return Status::Ok();
       }},
      {"enroll.reenroll",
       [](const std::string& k, const std::string& v, Config* c) {
         if (v != "allow" && v != "approve" && v != "deny")
           return Bad(k, "expected allow, approve or deny, got '" + v + "'");
         c->enroll_reenroll = v;
         return Status::Ok();
       }},
  };
  return keys;
}

// `plugin.<name>.<key> = value`: a line of plugin <name>'s config section.
Status SetPluginKey(const std::string& key, const std::string& value, Config* c) {
  const size_t start = std::string("plugin.").size();
  const size_t dot = key.find('.', start);
  const std::string name = key.substr(start, dot - start);
  const std::string sub = key.substr(dot + 1);
  const bool name_ok = !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
  });
  if (!name_ok) return Bad(key, "plugin name '" + name + "' must be 1 to 64 letters, digits, '_' or '-'");
  if (sub.empty()) return Bad(key, "expected plugin.<name>.<key>");
  c->plugin_configs[name][sub] = value;
  return Status::Ok();
}

Status Set(const std::string& key, const std::string& value, Config* c) {
  auto it = Keys().find(key);
  if (it == Keys().end() && key.rfind("plugin.", 0) == 0 && key.find('.', 7) != std::string::npos)
    return SetPluginKey(key, value, c);
  if (it == Keys().end()) return Status::InvalidArgument("unknown config key '" + key + "'");
  return it->second(key, value, c);
}

}  // namespace

Status ParseFile(const std::string& text, const std::string& filename, Config* config) {
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    auto hash = line.find('#');
    if (hash != std::string::npos) line = line.substr(0, hash);
    line = Trim(line);
    if (line.empty()) continue;
    auto eq = line.find('=');
    const std::string where = filename + ":" + std::to_string(lineno) + ": ";
    if (eq == std::string::npos)
      return Status::InvalidArgument(where + "expected 'key = value', got '" + line + "'");
    std::string key = Trim(line.substr(0, eq));
    std::string value = Trim(line.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    Status st = Set(key, value, config);
    if (!st.ok()) return Status::InvalidArgument(where + st.message());
  }
  return Status::Ok();
}

Status Validate(const Config& c) {
  if (c.data_dir.empty()) return Bad("data_dir", "must not be empty");
  // Orchard's own device CA (enroll.*) is always trusted: auth.device_ca is optional.
  if (c.enroll_ca_cert_file.empty() != c.enroll_ca_key_file.empty())
    return Bad(c.enroll_ca_cert_file.empty() ? "enroll.ca_cert_file" : "enroll.ca_key_file",
               "enroll.ca_cert_file and enroll.ca_key_file must be set together");
  if (!c.enroll_scep_challenge.empty() && c.enroll_scep_challenge.size() < 8)
    return Bad("enroll.scep_challenge", "must be at least 8 characters");
  if (!c.enroll_token.empty() && c.enroll_token.size() < 16)
    return Bad("enroll.token", "must be at least 16 characters");
  if (c.enroll_profile_signing_cert.empty() != c.enroll_profile_signing_key.empty())
    return Bad(c.enroll_profile_signing_cert.empty() ? "enroll.profile_signing_cert" : "enroll.profile_signing_key",
               "enroll.profile_signing_cert and enroll.profile_signing_key must be set together");
  for (const auto& [key, file] : std::vector<std::pair<const char*, std::string>>{
           {"enroll.profile_signing_cert", c.enroll_profile_signing_cert},
           {"enroll.profile_signing_key", c.enroll_profile_signing_key},
           {"enroll.profile_signing_chain", c.enroll_profile_signing_chain}}) {
    if (file.empty()) continue;
    std::ifstream f(file);
    if (!f) return Bad(key, "cannot read " + file);
  }
  for (const auto& file : c.enroll_anchor_certs) {
    std::ifstream f(file);
    if (!f) return Bad("enroll.anchor_certs", "cannot read " + file);
  }
  if (!c.api_key.empty() && c.api_key.size() < 16)
    return Bad("api_key", "must be at least 16 characters");
  if (!c.push_ca_file.empty()) {
    std::ifstream f(c.push_ca_file);
    if (!f) return Bad("push.ca_file", "cannot read " + c.push_ca_file);
  }
  if (!c.push_key_encryption_key.empty()) {
    auto box = SecretBox::FromKeyText(c.push_key_encryption_key);
    if (!box.ok()) return Bad("push.key_encryption_key", box.status().message());
  }
  return Status::Ok();
}

std::string HelpText() {
  return R"(orchardd - Orchard Apple MDM server

Usage: orchardd [options]

  --config FILE        read settings from FILE (key = value lines; see examples/orchard.conf)
  --listen HOST:PORT   address for device and admin HTTP (default 127.0.0.1:9000;
                       put nginx in front for TLS, see examples/nginx/)
  --data-dir DIR       RocksDB data directory (default ./data)
  --api-key KEY        admin API key, >= 16 chars (or env ORCHARD_API_KEY)
  --push-endpoint E    APNs: production | sandbox | HOST:PORT (default production)
  --device-ca FILE     PEM CA(s) that issue device identity certificates (repeatable)
  --cert-header NAME   proxy header carrying the device certificate (default Client-Cert)
  --threads N          HTTP worker threads (default 2)
  --insecure-dev       DEVELOPMENT ONLY: trust devices that present no certificate
  --log-level LEVEL    debug | info | warn | error (default info)
  --policy-dir DIR     Lua compliance policies (*.lua) to load and watch (default: none)
  --plugin-dir DIR     plugins (*.so, docs/plugin-abi.md) to load at start (default: none)
  --wal-recovery MODE  strict | point_in_time (default strict): with a damaged write-ahead
                       log, strict refuses to start; point_in_time keeps every write before
                       the damage and DISCARDS every write after it (docs/operations.md)
  --help               show this text
  --version            print the version

Settings without a flag are read from the config file, among them the device
protocol limits checkin.max_user_channels (default 32) and queue.max_deliveries
(default 5), the automation settings policy.*, plugin.* (plugin.<name>.<key>
lines are that plugin's config section), automation.*, device.silent_days
certificates.expiry_warn_days and ddm.*; see docs/operations.md. The enrollment
profile at /mdm/enroll reads enroll.public_url, enroll.token (or env
ORCHARD_ENROLL_TOKEN), enroll.identity (scep | pkcs12),
enroll.profile_signing_cert/_key/_chain, enroll.anchor_certs and the other
enroll.* keys; see docs/enrollment.md.

Exit status is 2 for a bad configuration (the message names the key).
)";
}

Result<LoadResult> Load(int argc, const char* const* argv) {
  LoadResult out;
  Config& c = out.config;
  // First pass: the config file, so flags override it.
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config") {
      if (i + 1 >= argc) return Status::InvalidArgument("--config needs a FILE");
      std::ifstream f(argv[i + 1]);
      if (!f) return Status::InvalidArgument(std::string("cannot read config file ") + argv[i + 1]);
      std::stringstream ss;
      ss << f.rdbuf();
      ORCHARD_RETURN_IF_ERROR(ParseFile(ss.str(), argv[i + 1], &c));
    }
  }
  if (const char* env = std::getenv("ORCHARD_API_KEY"); env && *env) c.api_key = env;
  if (const char* env = std::getenv("ORCHARD_PUSH_KEY"); env && *env) c.push_key_encryption_key = env;
  if (const char* env = std::getenv("ORCHARD_SCEP_CHALLENGE"); env && *env) c.enroll_scep_challenge = env;
  if (const char* env = std::getenv("ORCHARD_ENROLL_TOKEN"); env && *env) c.enroll_token = env;
  static const std::map<std::string, std::string> kFlagKeys = {
      {"--listen", "listen"},       {"--data-dir", "data_dir"},       {"--api-key", "api_key"},
      {"--threads", "threads"},     {"--cert-header", "auth.cert_header"},
      {"--log-level", "log.level"},  {"--push-endpoint", "push.endpoint"},
      {"--wal-recovery", "store.wal_recovery"}, {"--policy-dir", "policy.dir"},
      {"--plugin-dir", "plugin.dir"},
  };
  bool cleared_ca = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      out.show_help = true;
      return out;
    }
    if (a == "--version") {
      out.show_version = true;
      return out;
    }
    if (a == "--insecure-dev") {
      c.insecure_dev = true;
      continue;
    }
    if (a == "--config") {
      ++i;
      continue;
    }
    if (a == "--device-ca") {
      if (i + 1 >= argc) return Status::InvalidArgument("--device-ca needs a FILE");
      if (!cleared_ca) c.device_ca_files.clear();
      cleared_ca = true;
      c.device_ca_files.push_back(argv[++i]);
      continue;
    }
    auto it = kFlagKeys.find(a);
    if (it == kFlagKeys.end()) return Status::InvalidArgument("unknown option " + a + " (see --help)");
    if (i + 1 >= argc) return Status::InvalidArgument(a + " needs a value");
    Status st = Set(it->second, argv[++i], &c);
    if (!st.ok()) return Status::InvalidArgument(a + ": " + st.message());
  }
  ORCHARD_RETURN_IF_ERROR(Validate(c));
  return out;
}

}  // namespace orchard::config
