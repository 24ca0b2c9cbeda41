// orchardd configuration: one immutable struct, validated at start-up.
//
// Sources, later ones winning: built-in defaults, the config file (--config),
// the environment (ORCHARD_API_KEY, ORCHARD_PUSH_KEY), then command-line flags. Any bad value
// stops the server with a message naming the key (and file line).
//
// File format: one `key = value` per line, `#` starts a comment, values may be
// quoted with "..."; list values are comma-separated. See examples/orchard.conf.
// Thread-safety: immutable after Load.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "util/status.h"

namespace orchard::config {

struct Config {
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 9000;
  std::string data_dir = "./data";
  int threads = 2;                          // HTTP worker threads
  std::string api_key;                      // admin API key (required for the admin API)
  size_t max_body_bytes = 8 * 1024 * 1024;  // device and admin request bodies
  // Open HTTP connections; more are answered 503 and closed. 0: derived from
  // the file descriptor limit (see http::ServerOptions::max_connections).
  size_t max_connections = 0;
  int max_plist_depth = 64;
  size_t api_max_response_bytes = 16 * 1024 * 1024;  // largest admin API answer body

  // Device identity.
  std::string cert_header = "Client-Cert";  // proxy header carrying the device cert ("" = off)
  // Peers whose certificate header is believed (the TLS proxy); from anyone else
  // the header is ignored, so a client cannot pose as a device by sending it.
  std::vector<std::string> trusted_proxies = {"127.0.0.1", "::1"};
  std::vector<std::string> device_ca_files;
  bool insecure_dev = false;  // development: trust devices without certificates

  // Device CA and SCEP (docs/scep.md). The CA is generated in <data_dir>/ca on the
  // first start unless both files are given; it is always trusted for device identities.
  std::string enroll_ca_cert_file, enroll_ca_key_file;
  std::string enroll_scep_challenge;          // static SCEP challenge ("" = one-time ones only; or env ORCHARD_SCEP_CHALLENGE)
  int64_t enroll_cert_validity_days = 365;    // issued device certificates
  // The enrollment profile at /mdm/enroll (docs/enrollment.md).
  std::string enroll_public_url;        // https://host[:port] devices reach; "" = from each request's Host
  std::string enroll_server_url;        // ServerURL ("" = <public_url>/mdm/connect)
  std::string enroll_checkin_url;       // CheckInURL ("" = <public_url>/mdm/checkin)
  std::string enroll_scep_url;          // SCEP URL ("" = <public_url>/scep)
  std::string enroll_profile_identifier;  // "" = the public URL's host reversed + ".orchard"
  std::string enroll_profile_organization;
  std::string enroll_profile_display_name = "Orchard MDM enrollment";
  std::string enroll_token;             // guards /mdm/enroll ("" = open; or env ORCHARD_ENROLL_TOKEN)
  std::string enroll_identity = "scep";  // scep | pkcs12
  std::string enroll_profile_signing_cert, enroll_profile_signing_key, enroll_profile_signing_chain;  // PEM files
  std::vector<std::string> enroll_anchor_certs;  // PEM files of CAs the profile installs as trusted
  int64_t enroll_challenge_ttl_seconds = 3600;   // one-time challenges made for a profile

  // Protocol choices.
  // false: 410 (decline the user channel); true: answer the zero-length digest
  // challenge and then accept any DigestResponse (no user directory to check
  // it against yet: every macOS user channel is accepted).
  bool user_authenticate_digest = false;
  // User channels one device may create; a new one beyond it is declined (410).
  int max_user_channels = 32;
  // Deliveries of a command without any report for it before it is failed (0 = never).
  int queue_max_deliveries = 5;
  // Declarative Device Management: raw status reports kept per enrollment.
  int ddm_keep_status_reports = 10;
  // Queue the DeclarativeManagement command at enrollment for channels without sets too.
  bool ddm_enable_on_enroll = false;
  // Manifest cache budget in manifest items (ddm/declarations.h); 0: none.
  size_t ddm_manifest_cache_items = 200000;
  // Keep a channel's DDM assignments and stored status when it checks out.
  bool ddm_keep_assignments = false;
  // ddm.references: off | warn | refuse: a write leaving a set with an
  // unsatisfied reference between declarations.
  std::string ddm_references = "warn";

  // Retention and housekeeping.
  int64_t result_retention_hours = 30 * 24;
  int64_t event_retention_hours = 7 * 24;
  int64_t sweep_interval_seconds = 300;

  // APNs push.
  std::string push_endpoint = "production";  // production | sandbox | HOST:PORT
  std::string push_ca_file;                  // server trust for a custom endpoint (tests: the mock's CA)
  int push_connections = 2;                  // HTTP/2 connections per topic
  int64_t push_expiration_seconds = 86400;   // apns-expiration: APNs stores and retries this long
  int64_t push_coalesce_ms = 1000;           // duplicate pushes to one device within this window coalesce
  int64_t push_repush_interval_seconds = 4 * 3600;  // re-push devices with pending commands (0 = off)
  int push_retry_max = 3;                    // retries after 429/500/503
  int64_t push_retry_base_ms = 1000;         // first retry delay; doubles, with jitter
  std::vector<int> push_expiry_warn_days = {30, 14, 7, 1};
  std::string push_key_encryption_key;       // seals push private keys at rest (or env ORCHARD_PUSH_KEY)

  // Automation: Lua policies and the host every consumer runs on.
  std::string policy_dir;                      // "" = no policies
  int policy_lanes = 2;                        // per policy: parallel lanes (one Lua state each)
  int64_t policy_instruction_budget = 5'000'000;  // per handler run (and per file load)
  int64_t policy_memory_mb = 32;               // per Lua state
  int64_t policy_deadline_ms = 2000;           // per handler run
  int64_t policy_watch_seconds = 2;            // reload changed files (0 = on request only)
  int automation_max_attempts = 3;             // failed runs of one event before it is parked
  int64_t automation_record_retention_hours = 7 * 24;  // decision records and parked events
  std::vector<int> device_silent_days = {7, 30};       // device.silent after each (empty = off)
  std::vector<int> certificate_expiry_warn_days = {30, 14, 7, 1};  // identity and reported certificates
  std::string events_device_idle = "auto";
  // An enrolled device Authenticating with another certificate, not issued by
  // Orchard's CA for it: allow | approve (refused until an admin approves) | deny.
  std::string enroll_reenroll = "approve";

  // Plugins (docs/plugin-abi.md): shared objects in plugin_dir, each loaded at
  // start as consumer "plugin:<name>". Config file lines
  // `plugin.<name>.<key> = value` (name: letters, digits, '_', '-') are
  // gathered per plugin into its config section, a JSON object of strings.
  std::string plugin_dir;  // "" = no plugins
  int plugin_lanes = 2;    // lanes of plugins whose descriptor says 0
  std::map<std::string, std::map<std::string, std::string>> plugin_configs;  // name -> key -> value  // auto: written while a consumer wants them; always

  bool store_sync = false;  // fsync each write
  // A damaged write-ahead log at start: "strict" refuses to open;
  // "point_in_time" keeps what precedes the damage and discards the rest.
  std::string store_wal_recovery = "strict";
  std::string log_level = "info";
  bool metrics_enabled = true;
};

struct LoadResult {
  Config config;
  bool show_help = false;
  bool show_version = false;
};

// Parses argv (and the file it names with --config). Errors name the key.
Result<LoadResult> Load(int argc, const char* const* argv);
// Parses config file text into config (used by Load and tests).
Status ParseFile(const std::string& text, const std::string& filename, Config* config);
// Checks cross-field rules (e.g. a device CA or insecure_dev must be set).
Status Validate(const Config& config);
std::string HelpText();

}  // namespace orchard::config
