// The webhook plugin's configuration: parsed once in init from the plugin's
// config section (a flat JSON object of strings: the orchard.conf lines
// `plugin.webhook.<key> = value`), validated, then immutable.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "orchard/plugin.h"

namespace orchard_webhook {

struct EndpointConfig {
  std::string name;    // letters, digits, '_', '-'; 1..64 bytes
  std::string url;     // http:// or https://
  std::string secret;  // HMAC-SHA256 key; empty = no X-Hmac-Signature (never logged)
  std::vector<std::string> topics;  // empty = every topic; "mdm.*" / "orchard.*" match a prefix
  int64_t timeout_ms = 0;           // whole request
  int64_t connect_timeout_ms = 0;
  int concurrency = 0;  // transfers in flight to this endpoint

  bool Wants(std::string_view topic) const;
  // The URL without user:password@ (for logs and the status route).
  std::string RedactedUrl() const;
};

struct Config {
  std::vector<EndpointConfig> endpoints;  // sorted by name; 1..16
  bool orchard_events = false;            // send Orchard-specific events as orchard.<type>
  int64_t timeout_ms = 10000;
  int64_t connect_timeout_ms = 5000;
  int concurrency = 16;                // default per endpoint
  int max_attempts = 20;               // then dead
  int64_t max_age_ms = 24LL * 3600 * 1000;  // then dead
  int64_t backoff_min_ms = 1000;
  int64_t backoff_max_ms = 300000;
  int64_t poll_ms = 250;               // outbox scan interval when idle
  int64_t max_body_bytes = 4 << 20;    // larger events are dead-lettered (too_large)
  int dead_max = 1000;                 // dead letters kept per endpoint (oldest removed)
  int64_t shutdown_grace_ms = 2000;    // in-flight transfers may finish at shutdown
};

// Parses and validates config_json. ORCHARD_OK, or ORCHARD_ERR_INVALID_ARGUMENT
// with *error naming the key and the reason (secrets are never quoted).
orchard_status ParseConfig(std::string_view config_json, Config* out, std::string* error);

}  // namespace orchard_webhook
