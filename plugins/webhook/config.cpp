#include "config.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "json.h"

namespace orchard_webhook {
namespace {

constexpr size_t kMaxEndpoints = 16;
constexpr size_t kMaxTopics = 64;
constexpr size_t kMaxSecretBytes = 4096;

orchard_status Bad(std::string* error, std::string_view key, std::string_view why) {
  *error = "key=" + std::string(key) + " reason=\"" + std::string(why) + "\"";
  return ORCHARD_ERR_INVALID_ARGUMENT;
}

bool ParseInt(std::string_view s, int64_t lo, int64_t hi, int64_t* out) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty() || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool ValidName(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool ValidUrl(std::string_view u) {
  if (u.size() > 2048) return false;
  const bool http = u.rfind("http://", 0) == 0, https = u.rfind("https://", 0) == 0;
  if (!http && !https) return false;
  const size_t host = u.find("://") + 3;
  if (host >= u.size() || u[host] == '/') return false;
  return std::none_of(u.begin(), u.end(), [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7F; });
}

std::string Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
    s.remove_suffix(1);
  return std::string(s);
}

bool ValidTopic(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  return std::all_of(t.begin(), t.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.' || c == '*';
  });
}

}  // namespace

bool EndpointConfig::Wants(std::string_view topic) const {
  if (topics.empty()) return true;
  for (const auto& t : topics) {
    if (t == topic) return true;
    if (t.size() >= 2 && t.compare(t.size() - 2, 2, ".*") == 0 && topic.size() > t.size() - 1 &&
        topic.compare(0, t.size() - 1, t, 0, t.size() - 1) == 0)
      return true;
    if (t == "*") return true;
  }
  return false;
}

std::string EndpointConfig::RedactedUrl() const {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  const size_t host = scheme + 3;
  const size_t end = url.find_first_of("/?#", host);
  const size_t at = url.rfind('@', end == std::string::npos ? url.size() : end);
  if (at == std::string::npos || at < host) return url;
  return url.substr(0, host) + "***@" + url.substr(at + 1);
}

orchard_status ParseConfig(std::string_view config_json, Config* out, std::string* error) {
  *out = Config();
  JsonValue root;
  std::string perr;
  if (!ParseJson(config_json, &root, &perr)) return Bad(error, "(section)", "config section is not JSON: " + perr);
  if (root.kind != JsonValue::Kind::kObject) return Bad(error, "(section)", "config section is not a JSON object");

  struct Pending {
    std::map<std::string, std::string> keys;  // url, secret, ... -> value
  };
  std::map<std::string, Pending> endpoints;
  std::map<std::string, std::string> seen;
  for (const auto& [key, v] : root.object) {
    if (v.kind != JsonValue::Kind::kString) return Bad(error, key, "value is not a string");
    seen[key] = v.text;
  }

  auto int_key = [&](const std::string& key, const std::string& value, int64_t lo, int64_t hi,
                     int64_t* dst) -> orchard_status {
    if (!ParseInt(value, lo, hi, dst))
      return Bad(error, key, "expected an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
    return ORCHARD_OK;
  };

  for (const auto& [key, value] : seen) {
    orchard_status st = ORCHARD_OK;
    int64_t n = 0;
    if (key.rfind("endpoint.", 0) == 0) {
      const std::string rest = key.substr(9);
      const size_t dot = rest.find('.');
      if (dot == std::string::npos) return Bad(error, key, "expected endpoint.<name>.<setting>");
      const std::string name = rest.substr(0, dot), setting = rest.substr(dot + 1);
      if (!ValidName(name))
        return Bad(error, key, "endpoint name must be 1..64 letters, digits, '_' or '-'");
      static const char* const kSettings[] = {"url",        "secret",          "secret_file", "topics",
                                              "timeout_ms", "connect_timeout_ms", "concurrency"};
      if (std::find(std::begin(kSettings), std::end(kSettings), setting) == std::end(kSettings))
        return Bad(error, key,
                   "unknown endpoint setting (url, secret, secret_file, topics, timeout_ms, connect_timeout_ms, "
                   "concurrency)");
      endpoints[name].keys[setting] = value;
      continue;
    }
    if (key == "orchard_events") {
      const std::string t = Trim(value);
      if (t == "true" || t == "on" || t == "yes" || t == "1") out->orchard_events = true;
      else if (t == "false" || t == "off" || t == "no" || t == "0") out->orchard_events = false;
      else return Bad(error, key, "expected true or false");
    } else if (key == "timeout_ms") {
      if ((st = int_key(key, value, 100, 600000, &out->timeout_ms)) != ORCHARD_OK) return st;
    } else if (key == "connect_timeout_ms") {
      if ((st = int_key(key, value, 100, 600000, &out->connect_timeout_ms)) != ORCHARD_OK) return st;
    } else if (key == "concurrency") {
      if ((st = int_key(key, value, 1, 256, &n)) != ORCHARD_OK) return st;
      out->concurrency = static_cast<int>(n);
    } else if (key == "max_attempts") {
      if ((st = int_key(key, value, 1, 1000000, &n)) != ORCHARD_OK) return st;
      out->max_attempts = static_cast<int>(n);
    } else if (key == "max_age_s") {
      if ((st = int_key(key, value, 1, 90LL * 86400, &n)) != ORCHARD_OK) return st;
      out->max_age_ms = n * 1000;
    } else if (key == "backoff_min_ms") {
      if ((st = int_key(key, value, 1, 3600000, &out->backoff_min_ms)) != ORCHARD_OK) return st;
    } else if (key == "backoff_max_ms") {
      if ((st = int_key(key, value, 1, 86400000, &out->backoff_max_ms)) != ORCHARD_OK) return st;
    } else if (key == "poll_ms") {
      if ((st = int_key(key, value, 10, 60000, &out->poll_ms)) != ORCHARD_OK) return st;
    } else if (key == "max_body_bytes") {
      if ((st = int_key(key, value, 1024, 64LL << 20, &out->max_body_bytes)) != ORCHARD_OK) return st;
    } else if (key == "dead_max") {
      if ((st = int_key(key, value, 0, 1000000, &n)) != ORCHARD_OK) return st;
      out->dead_max = static_cast<int>(n);
    } else if (key == "shutdown_grace_ms") {
      if ((st = int_key(key, value, 0, 60000, &out->shutdown_grace_ms)) != ORCHARD_OK) return st;
    } else {
      return Bad(error, key, "unknown key");
    }
  }
  if (out->backoff_max_ms < out->backoff_min_ms) return Bad(error, "backoff_max_ms", "less than backoff_min_ms");
  if (endpoints.empty()) return Bad(error, "endpoint.<name>.url", "no endpoint configured");
  if (endpoints.size() > kMaxEndpoints) return Bad(error, "endpoint.*", "more than 16 endpoints");

  for (auto& [name, p] : endpoints) {
    EndpointConfig ep;
    ep.name = name;
    const std::string prefix = "endpoint." + name + ".";
    auto& k = p.keys;
    if (!k.count("url")) return Bad(error, prefix + "url", "missing");
    ep.url = Trim(k["url"]);
    if (!ValidUrl(ep.url)) return Bad(error, prefix + "url", "expected an http:// or https:// URL");
    if (k.count("secret") && k.count("secret_file"))
      return Bad(error, prefix + "secret_file", "both secret and secret_file are set");
    if (k.count("secret")) {
      ep.secret = k["secret"];
      if (ep.secret.empty()) return Bad(error, prefix + "secret", "empty");
    }
    if (k.count("secret_file")) {
      const std::string path = Trim(k["secret_file"]);
      std::ifstream f(path, std::ios::binary);
      if (!f) return Bad(error, prefix + "secret_file", "cannot read " + path + ": " + std::strerror(errno));
      std::ostringstream ss;
      ss << f.rdbuf();
      ep.secret = ss.str();
      while (!ep.secret.empty() && (ep.secret.back() == '\n' || ep.secret.back() == '\r')) ep.secret.pop_back();
      if (ep.secret.empty()) return Bad(error, prefix + "secret_file", "file is empty");
    }
    if (ep.secret.size() > kMaxSecretBytes) return Bad(error, prefix + "secret", "longer than 4096 bytes");
    if (k.count("topics")) {
      std::string_view list = k["topics"];
      while (!list.empty()) {
        const size_t comma = list.find(',');
        const std::string t = Trim(list.substr(0, comma));
        list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
        if (t.empty()) continue;
        if (!ValidTopic(t)) return Bad(error, prefix + "topics", "bad topic '" + t + "'");
        if (t.find('*') != std::string::npos && t != "*" && !(t.size() >= 2 && t.compare(t.size() - 2, 2, ".*") == 0 &&
                                                             t.find('*') == t.size() - 1))
          return Bad(error, prefix + "topics", "'*' only as a whole topic or a final '.*' ('" + t + "')");
        ep.topics.push_back(t);
        if (ep.topics.size() > kMaxTopics) return Bad(error, prefix + "topics", "more than 64 topics");
      }
    }
    ep.timeout_ms = out->timeout_ms;
    ep.connect_timeout_ms = out->connect_timeout_ms;
    ep.concurrency = out->concurrency;
    int64_t n = 0;
    orchard_status st = ORCHARD_OK;
    if (k.count("timeout_ms") &&
        (st = int_key(prefix + "timeout_ms", k["timeout_ms"], 100, 600000, &ep.timeout_ms)) != ORCHARD_OK)
      return st;
    if (k.count("connect_timeout_ms") &&
        (st = int_key(prefix + "connect_timeout_ms", k["connect_timeout_ms"], 100, 600000,
                      &ep.connect_timeout_ms)) != ORCHARD_OK)
      return st;
    if (k.count("concurrency")) {
      if ((st = int_key(prefix + "concurrency", k["concurrency"], 1, 256, &n)) != ORCHARD_OK) return st;
      ep.concurrency = static_cast<int>(n);
    }
    out->endpoints.push_back(std::move(ep));
  }
  return ORCHARD_OK;
}

}  // namespace orchard_webhook
