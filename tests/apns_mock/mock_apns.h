// A faithful stand-in for Apple's APNs provider API (HTTP/2 over TLS), for
// tests and benchmarks: libnghttp2 server, OpenSSL with ALPN "h2", a REQUIRED
// client certificate whose subject UID is the topic it may push to. It checks
// requests the way APNs does and answers with APNs' status codes and JSON
// reasons, and it can inject faults.
//
// Request checks, first failure wins (status reason):
//   injected fault (FailNext / SetFailRate) takes precedence over everything;
//   method != POST                          405 MethodNotAllowed
//   path not /3/device/<token>              404 BadPath
//   empty token                             400 MissingDeviceToken
//   token not even-length hex, 32..200      400 BadDeviceToken
//   an apns-* header sent twice             400 DuplicateHeaders
//   apns-topic missing                      400 MissingTopic
//   apns-topic != certificate UID           400 TopicDisallowed (skipped without client certs)
//   apns-push-type missing or != "mdm"      400 InvalidPushType
//   apns-priority present, not 5 or 10      400 BadPriority
//   apns-expiration present, not integer    400 BadExpirationDate
//   apns-id present, not a UUID             400 BadMessageId
//   empty body                              400 PayloadEmpty
//   body > 4096 bytes                       413 PayloadTooLarge
//   body not a JSON object with a string
//     "mdm" member (mock's choice: Apple
//     has no dedicated reason)              400 PayloadEmpty
//   token marked SetUnregistered            410 Unregistered (+ "timestamp", ms)
// Success: 200, empty body. Every answer carries an apns-id header (the
// request's if it was a valid UUID, else a generated upper-case UUID); error
// answers have content-type application/json and body {"reason":"..."}.
//
// Thread-safety: configure before Start(); fault setters, OnDelivered and the
// counters are safe to use from any thread while running. One I/O thread
// serves all connections; it never blocks (delays use a timer list).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace orchard::testing {

struct MockApnsOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0 = ephemeral
  std::string cert_pem,
      key_pem;                // server certificate (SAN 127.0.0.1/localhost); PEM may hold a chain
  std::string client_ca_pem;  // CA(s) that issued acceptable push certificates
  bool require_client_cert = true;  // false: no client cert checks (h2load baseline)
  uint32_t max_concurrent_streams = 1000;
  bool record_requests = true;  // false: Received() stays empty (long benchmark runs)
};

struct MockPush {
  std::string token_hex, topic, apns_id, push_magic;  // as sent; apns_id as answered
  // HTTP status answered; 0 = never answered (refused with RST_STREAM, reason
  // "RefusedStream"; or still delayed; or lost to a dropped connection).
  int status = 0;
  std::string reason;
  int64_t expiration = 0;
  int priority = 0;
};

class MockApns {
 public:
  // Listens and starts the I/O thread. nullptr on failure (reason on stderr).
  static std::unique_ptr<MockApns> Start(const MockApnsOptions& options);
  // Stops the I/O thread and closes every socket.
  virtual ~MockApns() = default;
  virtual uint16_t port() const = 0;

  // Faults (take effect for requests arriving after the call).
  // Later pushes to this token (any hex case) get 410 Unregistered with this
  // timestamp (0: the time of each answer).
  virtual void SetUnregistered(const std::string& token_hex, int64_t timestamp_ms) = 0;
  // The next `count` requests (whatever their content) get `status` with {"reason":reason}.
  virtual void FailNext(int count, int status,
                        const std::string& reason) = 0;  // e.g. 429 TooManyRequests, 500, 503
  // Each request fails like FailNext with this probability (0 disables). Counted after FailNext.
  virtual void SetFailRate(double probability, int status, const std::string& reason) = 0;
  // One-shot: once `streams` more streams have been answered (all connections
  // together), the connection that answered the last of them sends GOAWAY
  // (NO_ERROR, last-stream-id = that stream, debug data {"reason":"Shutdown"}),
  // answers nothing above it, answers delayed streams below it, flushes and closes.
  // streams <= 0: every open connection does so now (last-stream-id = the last
  // stream it received). Other and later connections are unaffected.
  virtual void GoawayAfter(int streams) = 0;
  // Current and new connections advertise this SETTINGS_MAX_CONCURRENT_STREAMS.
  virtual void SetMaxConcurrentStreams(uint32_t n) = 0;
  // One-shot: once `streams` more streams have been answered (all connections
  // together), every open connection flushes the answers already made and closes
  // its TCP socket without GOAWAY or TLS close_notify; nothing further is
  // answered on them. streams <= 0: now.
  virtual void DropConnectionsAfter(int streams) = 0;
  // Answer each request (including errors) this much later; 0 = at once.
  virtual void SetDelayMs(int64_t ms) = 0;
  // An APNs outage and its end. false: stops listening (connections to the
  // port are refused) and drops every open connection like
  // DropConnectionsAfter(0). true: listens again on the same port. Returns
  // once done (false if the port cannot be bound again). Not from OnDelivered.
  virtual bool SetListening(bool on) = 0;
  // The next `count` request streams get RST_STREAM REFUSED_STREAM as soon as
  // their headers arrive (recorded with status 0, reason "RefusedStream").
  virtual void RefuseStreamsNext(int count) = 0;

  // Called (on the mock's thread, before the answer is written) for every push
  // answered 200. Must not block; may call the fault setters.
  virtual void OnDelivered(std::function<void(const MockPush&)> fn) = 0;
  // Everything received so far, in arrival order (including rejected requests).
  // Requests a GOAWAY or dropped connection left unprocessed are not listed.
  virtual std::vector<MockPush> Received() const = 0;
  virtual uint64_t connections_accepted() const = 0;  // TLS handshakes completed with ALPN h2
  virtual uint64_t handshake_failures() const = 0;    // TLS/ALPN rejected (e.g. no client cert)
  virtual uint64_t open_connections() const = 0;
  virtual uint64_t requests_answered() const = 0;  // any status (counted even if not recorded)
};

}  // namespace orchard::testing
