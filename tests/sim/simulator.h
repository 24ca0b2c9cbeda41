// Apple MDM device simulator: a Device speaks the check-in and command
// protocols over HTTP/1.1 (libcurl) the way an enrolled iPhone or Mac does; a
// Fleet drives many devices from worker threads for integration tests and
// benchmarks. Message contents come from sim/responder.h.
//
// Ownership and threading: a Device owns one libcurl easy handle (its
// keep-alive connection is reused across requests) and must be used by one
// thread at a time. Different Devices may run concurrently. A Fleet owns its
// Devices and its TestCa; RunSessions/Enroll give each worker thread a fixed
// subset of devices, so no handle is ever shared.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "plist/plist.h"
#include "sim/responder.h"
#include "support/test_pki.h"
#include "util/status.h"

namespace orchard::sim {

enum class CertMode {
  kHeader,              // identity in cert_header (proxy style)
  kSignature,           // Mdm-Signature only (SignMessage=true)
  kHeaderAndSignature,  // both
  kTls,                 // TLS client certificate (base_url must be https://)
  kNone,                // no identity at all (for refusal tests)
};
// "header" | "signature" | "both" | "tls" | "none".
bool ParseCertMode(std::string_view name, CertMode* out);

enum class CertHeaderFormat {
  kRfc9440,     // ":<base64 DER>:"
  kEscapedPem,  // nginx $ssl_client_escaped_cert
};

struct SimConfig {
  std::string base_url = "http://127.0.0.1:8080";  // scheme://host:port, no trailing slash
  std::string checkin_path = "/mdm/checkin";
  std::string connect_path = "/mdm/connect";
  CertMode cert_mode = CertMode::kHeaderAndSignature;
  std::string cert_header = "Client-Cert";
  CertHeaderFormat cert_header_format = CertHeaderFormat::kRfc9440;
  std::string tls_ca_file;  // PEM bundle to verify an https server; empty = system store
  bool tls_verify = true;   // false skips server verification (never for real servers)
  std::string topic = "com.apple.mgmt.External.orchard-sim";
  std::string user_agent;   // empty: "MDM/1.0" (iOS) or "MDM-OSX/1.0 mdmclient" (macOS)
  long timeout_ms = 30000;  // whole request
  long connect_timeout_ms = 5000;
  bool keep_alive = true;                // false: a new connection per request
  bool record_commands = true;           // keep every received command in Device::received()
  bool record_latencies = false;         // keep each request's latency in Device::latencies_us()
  int max_commands_per_session = 10000;  // guards against a server that never ends a session
};

struct HttpResponse {
  long status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // in arrival order
  // First header with this name (case-insensitive), or "" when absent.
  std::string Header(std::string_view name) const;
};

struct ReceivedCommand {
  std::string command_uuid;
  std::string request_type;
  ReportStatus answered = ReportStatus::kAcknowledged;
  plist::Value command;  // the full plist the server sent
};

struct SessionStats {
  int requests = 0;  // HTTP requests, Idle included
  int commands = 0;  // commands received
  int acknowledged = 0, not_now = 0, errors = 0, format_errors = 0;
  // A command the device answered NotNow that the server sent again in the
  // same session (the protocol says it must not).
  int not_now_redelivered = 0;
  std::vector<std::pair<std::string, std::string>> handled;  // (CommandUUID, RequestType)
  void Add(const SessionStats& o);
};

class Device {
 public:
  // state: what the device reports (RandomDeviceState() for a plausible one).
  // identity: the device identity certificate (from TestCa::Issue). The state's
  // identity_cert_der/common_name are filled from it.
  static Result<std::unique_ptr<Device>> Create(const SimConfig& config, DeviceState state,
                                                testing::Identity identity);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // ---- Check-in (PUT checkin_path); each returns an error Status naming the
  // HTTP code unless the server answered 200.
  Status Authenticate();
  Status TokenUpdate(bool awaiting_configuration = false);
  // TokenUpdate on the user channel; creates the channel (own push token and
  // PushMagic) on first use. Later RunSession(true) reports on this channel.
  Status UserTokenUpdate(std::string user_id, std::string short_name, std::string long_name);
  Status CheckOut();
  // Any check-in message (e.g. from BuildCheckInBase); returns the raw response
  // whatever its status, or an Io error when the request could not be made.
  Result<HttpResponse> CheckIn(const plist::Value& message);

  // ---- Command channel: PUT Idle, then answer each command the server returns
  // until a 200 with an empty body. A non-200 or an unparseable command ends
  // the session with an error Status (the HTTP code is in the message).
  Result<SessionStats> RunSession(bool user_channel = false);

  // ---- Raw request to base_url + path with this device's certificate headers
  // (per cert_mode) and that Content-Type ("" or "-": no Content-Type at all).
  // extra_headers are "Name: value" lines and replace defaults of the same name
  // ("Name:" alone removes one, e.g. "Mdm-Signature:").
  Result<HttpResponse> Put(std::string_view path, std::string_view content_type,
                           std::string_view body,
                           const std::vector<std::string>& extra_headers = {});

  // Replaces the identity (e.g. a renewed or foreign certificate). Closes the
  // current connection so that kTls presents the new certificate.
  Status SetIdentity(testing::Identity identity);
  // Drops the keep-alive connection; the next request reconnects.
  void Disconnect();

  Responder& responder() { return responder_; }
  DeviceState& state() { return state_; }
  const DeviceState& state() const { return state_; }
  const std::string& udid() const { return state_.udid; }
  const testing::Identity& identity() const { return identity_; }
  const UserChannel* user_channel() const { return user_.get(); }
  const SimConfig& config() const { return config_; }
  long last_http_status() const { return last_status_; }  // 0 after a transport error
  // True once the server answered 401, or 403 with com.apple.unrecognized.device:
  // a real device would remove its MDM profile. Requests are still sent.
  bool unenrolled() const { return unenrolled_; }
  const HttpResponse& last_response() const { return last_; }
  // Commands received so far (empty when config.record_commands is false).
  const std::vector<ReceivedCommand>& received() const { return received_; }
  void ClearReceived() { received_.clear(); }
  // Wall time of every request made, microseconds (for benchmarks); cleared by caller.
  std::vector<uint32_t>& latencies_us() { return latencies_; }

 private:
  Device(const SimConfig& config, DeviceState state, testing::Identity identity);
  Status InitHandle();
  Status ExpectOk(const char* what, const Result<HttpResponse>& r);
  Status PutPlist(const char* what, const std::string& path, const char* content_type,
                  const plist::Value& v);
  Result<HttpResponse> Perform(std::string_view path, std::string_view content_type,
                               std::string_view body, const std::vector<std::string>& extra);
  Result<std::string> Sign(std::string_view body);

  // Parsed identity for Mdm-Signature: parsing the PEM key costs ~10x the
  // signature itself, so it is done once per identity, lazily.
  struct Signer;

  SimConfig config_;
  DeviceState state_;
  testing::Identity identity_;
  std::string cert_header_line_;  // "Name: value", cached per identity
  std::unique_ptr<Signer> signer_;
  std::unique_ptr<UserChannel> user_;
  Responder responder_;
  void* curl_ = nullptr;  // CURL*
  std::string url_;       // scratch buffer
  HttpResponse last_;
  long last_status_ = 0;
  bool unenrolled_ = false;
  std::vector<ReceivedCommand> received_;
  std::vector<uint32_t> latencies_;
};

// How a device fetches its enrollment profile (sim/enroll_profile.h).
struct ProfileFetch {
  std::string url;            // the enrollment URL, e.g. https://mdm.example.com/mdm/enroll (may carry a query)
  std::string token;          // sent as "Authorization: Bearer <token>" ("" = none)
  std::string challenge;      // appended as ?challenge= ("" = none)
  bool machine_info = false;  // POST CMS-signed machine info (UDID, SERIAL, ...) instead of GET
  // When set, the profile must be CMS-signed by a certificate chaining to one of
  // these PEM certificates; when empty a signed profile's signature is still
  // checked (signer certificate inside), and require_signed refuses an unsigned one.
  std::string trust_ca_pem;
  bool require_signed = false;
  std::string tls_ca_file;  // to verify an https server; empty = system store
  bool tls_verify = true;
  long timeout_ms = 30000;
};

struct FleetOptions {
  int devices = 1;
  SimConfig config;
  // Devices are RandomDeviceState(platform, f(seed, index)): the same seed gives
  // the same UDIDs/serials. 0 = a random seed (distinct fleets never collide).
  // macos_fraction of the devices (spread by index) are Macs.
  uint64_t seed = 0;
  double macos_fraction = 0.0;
  double not_now_rate = 0.0;
  double error_rate = 0.0;
  // When profile.url is set, each device enrolls the real way
  // (sim/enroll_profile.h: fetch the profile, SCEP, then the profile's URLs and
  // topic) instead of being issued an identity by the TestCa; the TestCa then
  // stands in for Apple's device CA and signs the machine info
  // (profile.machine_info). Fleet::Create fails with the first device that
  // cannot get its identity.
  ProfileFetch profile;
  // Optional: adjusts each device after creation (behaviours, names, ...).
  std::function<void(int index, Device& device)> customize;
};

struct FleetStats {
  int devices = 0;
  int ok = 0;      // operations that succeeded (devices, or sessions for RunSessions)
  int failed = 0;  // operations that failed
  SessionStats sessions;
  int sessions_run = 0;
  double seconds = 0;
  // Latency percentiles over every request in the phase, milliseconds.
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
  std::vector<std::string> first_errors;  // up to 10 "UDID: status" messages
};

class Fleet {
 public:
  // Issues one identity per device from ca (the Fleet takes ownership).
  // Raises RLIMIT_NOFILE when the devices' connections need it.
  static Result<std::unique_ptr<Fleet>> Create(const FleetOptions& options,
                                               std::unique_ptr<testing::TestCa> ca);
  ~Fleet();

  // Authenticate + TokenUpdate for every device, spread over threads.
  FleetStats Enroll(int threads);
  // `rounds` rounds; in each round every device runs one session (device channel).
  // ok/failed count sessions.
  FleetStats RunSessions(int threads, int rounds = 1);
  // Runs fn(device) once per device over threads; ok/failed count devices.
  FleetStats ForEach(int threads, const std::function<Status(Device&)>& fn);

  size_t size() const { return devices_.size(); }
  Device& device(size_t i) { return *devices_[i]; }
  testing::TestCa& ca() { return *ca_; }
  uint64_t seed() const { return seed_; }  // the seed used (chosen when options.seed was 0)

 private:
  Fleet() = default;
  std::unique_ptr<testing::TestCa> ca_;
  std::vector<std::unique_ptr<Device>> devices_;
  uint64_t seed_ = 0;
};

// Raises the soft RLIMIT_NOFILE to at least `needed` (up to the hard limit).
// Returns the resulting soft limit.
uint64_t EnsureFileLimit(uint64_t needed);

}  // namespace orchard::sim
