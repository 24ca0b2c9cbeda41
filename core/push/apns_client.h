// APNs HTTP/2 client on libnghttp2's C API with OpenSSL.
//
// ApnsClient keeps a small pool of long-lived TLS (>= 1.2, ALPN "h2")
// connections to one APNs endpoint, authenticated by one push certificate
// (the topic's). Requests are multiplexed on those connections; in-flight
// streams per connection never exceed the server's current
// SETTINGS_MAX_CONCURRENT_STREAMS (which may change mid-connection); extra
// requests wait in the client's own bounded queue. Idle connections are kept
// alive with PING. On GOAWAY, REFUSED_STREAM or a dropped connection, requests
// the server did not answer are re-sent on another connection (never a request
// the server did answer); requests a GOAWAY shows were never processed (above
// its last-stream-id) are re-sent without counting against max_resends. Each
// connect resolves DNS afresh, on a resolver thread (never on the I/O thread),
// and each connection slot backs off exponentially after failures, capped at
// connect_backoff_max_ms (never a tight reconnect loop, never minutes of wait
// once the server is back).
//
// Thread-safety: Send() and stats() may be called from any thread; callbacks
// run on the client's single I/O thread (always, including rejections) and
// must not block or destroy the client. The client owns its I/O thread,
// sockets and TLS state; the destructor fails every outstanding request with
// status 0 and failure kShutdown (the callbacks run before it returns). The
// resolver thread shares only its own state with the client and is detached
// at destruction if a lookup is still running. Both threads catch every
// exception at their top and log it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "util/status.h"

namespace orchard::push {

struct ApnsEndpoint {
  std::string host = "api.push.apple.com";  // sandbox: api.sandbox.push.apple.com
  uint16_t port = 443;
  std::string ca_file;        // trust store for the server (PEM file)
  std::string ca_pem;         // trust anchors in memory (PEM); both empty: system default paths
  bool verify_server = true;  // verify the server certificate and host name (tests pass ca_file)
};

// Resolves a host name to numeric addresses ("17.188.0.1", "2620:149::1").
// Runs on the client's resolver thread and may block; errors become connect
// failures. Must be thread-safe if shared between clients.
using ApnsResolver = std::function<Result<std::vector<std::string>>(const std::string& host)>;

struct ApnsClientOptions {
  ApnsEndpoint endpoint;
  std::string cert_pem;  // push certificate (client certificate)
  std::string key_pem;   // its private key (secret)
  int connections = 2;   // pool size
  int64_t ping_after_idle_ms = 60 * 60 * 1000;
  int64_t request_timeout_ms = 30 * 1000;
  int64_t ping_timeout_ms = 10 * 1000;      // no PING ack within this: reconnect
  int64_t connect_timeout_ms = 10 * 1000;   // TCP + TLS + the server's first SETTINGS
  int64_t connect_backoff_initial_ms = 250;  // per connection slot; doubles, with jitter
  int64_t connect_backoff_max_ms = 3000;     // cap: a recovered server is reached within seconds
  size_t max_queued = 1000000;  // requests waiting for a stream before Send fails
  int max_resends = 3;  // re-sends after REFUSED_STREAM or a drop, then kGaveUp (GOAWAY-refused: not counted)
  ApnsResolver resolver;  // empty: the system resolver (getaddrinfo); tests inject slow or failing ones
};

struct ApnsRequest {
  std::string device_token_hex;  // path /3/device/<hex>
  std::string topic;             // apns-topic
  std::string push_magic;        // body {"mdm":"<PushMagic>"}
  int64_t expiration_unix = 0;   // apns-expiration; 0 = omit (APNs: attempt once)
  std::string apns_id;           // apns-id (UUID); generated if empty
};

// Why a request got no HTTP answer (ApnsResponse::status == 0).
enum class ApnsFailure {
  kNone = 0,        // an HTTP answer (any status)
  kInvalidRequest,  // malformed request, never sent
  kQueueFull,       // more than max_queued waiting, never sent
  kTimeout,         // no answer within request_timeout_ms (from Send)
  kGaveUp,          // unanswered after max_resends re-sends
  kShutdown,        // the client was destroyed first
  kInternal,        // nghttp2 refused the request
};

struct ApnsResponse {
  int status = 0;           // HTTP status; 0 = transport failure (see failure, error)
  std::string apns_id;      // from the response header
  std::string reason;       // APNs JSON "reason" (e.g. "Unregistered", "BadDeviceToken")
  int64_t timestamp_ms = 0; // APNs JSON "timestamp" (410 responses)
  std::string error;        // transport error text when status == 0 (for logs and people)
  ApnsFailure failure = ApnsFailure::kNone;  // what to act on when status == 0
};

using ApnsCallback = std::function<void(const ApnsResponse&)>;

class ApnsClient {
 public:
  // Validates the options, certificate/key and trust store and starts the I/O
  // thread. Connections are opened lazily when requests are waiting.
  // Errors: kInvalidArgument naming the bad option; kInternal if a thread or
  // eventfd cannot be created.
  static Result<std::unique_ptr<ApnsClient>> Create(const ApnsClientOptions& options);
  virtual ~ApnsClient() = default;
  // Queues one request; `done` runs exactly once, on the I/O thread (on the
  // calling thread only when the client is already shutting down). Rejected
  // at once (status 0): kInvalidRequest ("invalid request: ..."), kQueueFull
  // (more than max_queued waiting). Transport failures (status 0): kTimeout
  // after request_timeout_ms (counted from Send), kGaveUp when re-sends are
  // exhausted. Any HTTP answer, including 4xx/5xx, is delivered as is; the
  // client never retries an answered request.
  virtual void Send(ApnsRequest request, ApnsCallback done) = 0;
  // Counters for metrics and tests.
  struct Stats {
    // connects: connections that completed TLS + ALPN h2 and got the server's
    // SETTINGS; connect_failures: attempts that did not (DNS, TCP, TLS, ALPN,
    // timeout, closed before SETTINGS); resent: requests put back for another
    // send (may be duplicates at the server); pings: PINGs sent.
    // goaway_refused: requests above a GOAWAY's last-stream-id (never
    // processed by the server), re-sent without counting against max_resends.
    uint64_t connects = 0, connect_failures = 0, goaways = 0, resent = 0, pings = 0;
    uint64_t goaway_refused = 0;
    uint64_t in_flight = 0, queued = 0;
    uint32_t max_concurrent_streams = 0;  // latest value advertised on any connection
  };
  virtual Stats stats() const = 0;
};

}  // namespace orchard::push
