// A small HTTP/1.1 server on Pistache, decoupled from Pistache's types.
//
// The application supplies one dispatch function that maps a Request to a
// Response; the server handles sockets, framing, size limits, unknown methods
// (answered 405 before Pistache's router could race on them), keep-alive and
// SIGPIPE. Handlers run on Pistache worker threads and must not block for long.
//
// Connections (docs/architecture.md, "HTTP layer"):
//   - HTTP/1.1 connections stay open unless the request says "Connection:
//     close"; HTTP/1.0 ones only with "Connection: keep-alive". Every response
//     says which ("Connection: keep-alive" or "Connection: Close"), and after a
//     "Close" answer the server shuts the socket down once it is written.
//   - Every request is framed by http::RequestFramer (framing.h) before Pistache
//     parses it: ambiguous framing (bad or duplicate Content-Length, chunked
//     with Content-Length, bad chunk sizes, ...) gets 400/413/431/501/505 and
//     the connection is closed, so bytes after a refused request are never
//     read as another request. Pipelined requests are answered in order.
//   - At most max_connections are open; more are answered 503 and closed at
//     once, which keeps the process below RLIMIT_NOFILE (Pistache's accept
//     loop spins on EMFILE). Start raises the soft RLIMIT_NOFILE to the hard
//     limit (process-wide).
//   - A response that cannot be sent (connection lost, write error, body over
//     max_response_bytes) is logged with its path and status and counted in
//     orchard_http_send_failures_total.
//   - No exception (of any type) escapes into Pistache's threads: a throwing
//     dispatch is answered 500.
//
// Native TLS is deliberately not offered: Pistache performs TLS handshakes on
// its accept thread, so one silent client stalls every new connection. Put
// nginx in front (examples/nginx/) and pass the client certificate in a header.
//
// Thread-safety: Start/Stop from one thread; dispatch is called concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/status.h"

namespace orchard::http {

class Metrics;

struct Request {
  std::string method;  // GET, PUT, POST, DELETE, ...
  std::string path;    // without the query string
  std::string query;   // raw query string (without '?')
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string peer;  // the TCP peer's IP address (the proxy's, behind nginx)

  // Case-insensitive header lookup; empty if absent.
  std::string_view Header(std::string_view name) const;
  // Query parameter, percent-decoded ('+' kept); a malformed escape is
  // returned as sent; empty if absent.
  std::string Param(std::string_view name) const;
  bool HasParam(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type;  // empty: no body expected
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

using Dispatch = std::function<Response(const Request&)>;

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0 = ephemeral
  int threads = 2;
  size_t max_request_bytes = 8 * 1024 * 1024;  // body limit; larger requests get 413
  // Open connections; more are answered 503 and closed. 0: derived from
  // RLIMIT_NOFILE (after raising it), the descriptors already open and a
  // reserve of max(16, limit / 8) for RocksDB, APNs and the like.
  size_t max_connections = 0;
  // Larger responses are not sent: the client gets 500 and the failure is logged.
  size_t max_response_bytes = 64 * 1024 * 1024;
  // Optional; counters and gauges of the HTTP layer go there. Borrowed: must
  // outlive the server.
  Metrics* metrics = nullptr;
};

class Server {
 public:
  static Result<std::unique_ptr<Server>> Start(const ServerOptions& options, Dispatch dispatch);
  virtual ~Server() = default;
  virtual uint16_t port() const = 0;
  // The connection limit in force (configured or derived).
  virtual size_t max_connections() const = 0;
  virtual void Stop() = 0;
};

}  // namespace orchard::http
