// A small HTTP/1.1 server on Pistache, decoupled from Pistache's types.
//
// The application supplies one dispatch function that maps a Request to a
// Response; the server handles sockets, size limits, unknown methods (answered
// 405 before Pistache's router could race on them), keep-alive and SIGPIPE.
// Handlers run on Pistache worker threads and must not block for long.
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

struct Request {
  std::string method;  // GET, PUT, POST, DELETE, ...
  std::string path;    // without the query string
  std::string query;   // raw query string (without '?')
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string peer;  // the TCP peer's IP address (the proxy's, behind nginx)

  // Case-insensitive header lookup; empty if absent.
  std::string_view Header(std::string_view name) const;
  // Query parameter (percent-decoded); empty if absent.
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
};

class Server {
 public:
  static Result<std::unique_ptr<Server>> Start(const ServerOptions& options, Dispatch dispatch);
  virtual ~Server() = default;
  virtual uint16_t port() const = 0;
  virtual void Stop() = 0;
};

}  // namespace orchard::http
