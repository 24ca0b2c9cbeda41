// AdminClient: a blocking HTTP client for orchardd's admin API, on libcurl.
//
// One instance owns one curl easy handle (connections are reused between
// calls). Transport failures (refused, DNS, TLS, timeout) come back as
// Unavailable with a message starting "cannot reach orchardd at URL"; any
// HTTP answer, whatever its status, is a successful Result carrying the
// status, content type and body. The API key is sent as HTTP Basic auth and
// never appears in a message. Not thread-safe; curl_global_init must have run.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "util/status.h"

namespace orchard::ctl {

struct ClientOptions {
  std::string base_url;  // http(s)://host:port[/prefix], no trailing slash needed
  std::string api_key;
  std::string ca_file;  // --cacert: trust this CA bundle for https
  long timeout_seconds = 60;
};

struct HttpReply {
  long status = 0;
  std::string content_type;
  std::string body;
};

// Query parameters in order; values are percent-encoded by the client.
using Query = std::vector<std::pair<std::string, std::string>>;

class AdminClient {
 public:
  // InvalidArgument if the URL is not http:// or https://.
  static Result<std::unique_ptr<AdminClient>> Create(ClientOptions options);
  ~AdminClient();
  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;

  // path starts with '/' and is already encoded (see PathSegment). body and
  // content_type are sent when content_type is non-empty. headers are extra
  // "Name: value" lines (values may be secret: they never appear in a message).
  Result<HttpReply> Call(const std::string& method, const std::string& path,
                         const Query& query = {}, const std::string& body = "",
                         const std::string& content_type = "",
                         const std::vector<std::string>& headers = {});

  const std::string& base_url() const { return options_.base_url; }

 private:
  struct CurlHandle;
  AdminClient(ClientOptions options, std::unique_ptr<CurlHandle> handle);

  ClientOptions options_;
  std::unique_ptr<CurlHandle> curl_;
};

// Percent-encodes one path segment (an id, a UUID, a comma-joined id list).
std::string PathSegment(const std::string& raw);

}  // namespace orchard::ctl
