#include "http/server.h"

#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/net.h>
#include <signal.h>

#include <sstream>
#include <strings.h>

#include "log/log.h"
#include "util/encoding.h"

namespace orchard::http {
namespace {

constexpr const char* kLog = "http";

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

const char* MethodName(Pistache::Http::Method m) {
  using M = Pistache::Http::Method;
  switch (m) {
    case M::Get: return "GET";
    case M::Post: return "POST";
    case M::Put: return "PUT";
    case M::Delete: return "DELETE";
    case M::Head: return "HEAD";
    case M::Patch: return "PATCH";
    case M::Options: return "OPTIONS";
    default: return nullptr;
  }
}

// A response header with a name chosen at run time. Pistache 0.0.5 writes only
// typed headers: what addRaw() stores is never sent (Retry-After and
// WWW-Authenticate were silently dropped).
class NamedHeader : public Pistache::Http::Header::Header {
 public:
  NamedHeader(std::string name, std::string value) : name_(std::move(name)), value_(std::move(value)) {}
  const char* name() const override { return name_.c_str(); }
  void write(std::ostream& os) const override { os << value_; }
  uint64_t hash() const override { return Pistache::Http::Header::detail::hash(name_.c_str()); }

 private:
  std::string name_, value_;
};

class Handler : public Pistache::Http::Handler {
 public:
  HTTP_PROTOTYPE(Handler)
  explicit Handler(const Dispatch* dispatch) : dispatch_(dispatch) {}

  void onRequest(const Pistache::Http::Request& req, Pistache::Http::ResponseWriter writer) override {
    Response resp;
    const char* method = MethodName(req.method());
    if (method == nullptr) {
      resp.status = 405;
      resp.content_type = "text/plain";
      resp.body = "method not allowed\n";
    } else {
      Request r;
      r.method = method;
      const std::string& resource = req.resource();
      r.path = resource;
      // Pistache keeps the query separately; rebuild the raw string.
      std::string q;
      for (auto it = req.query().parameters_begin(); it != req.query().parameters_end(); ++it) {
        if (!q.empty()) q += '&';
        q += PercentEncode(it->first) + "=" + PercentEncode(it->second);
      }
      r.query = std::move(q);
      r.body = req.body();
      r.peer = req.address().host();
      // Pistache keeps unknown headers raw and parses known ones; copy the raw
      // ones and only the two parsed ones handlers read (copying every parsed
      // header through a stream cost ~7% of an Idle request).
      for (const auto& [name, raw] : req.headers().rawList()) r.headers.emplace_back(name, raw.value());
      if (auto ct = req.headers().tryGet<Pistache::Http::Header::ContentType>())
        r.headers.emplace_back("Content-Type", ct->mime().toString());
      if (auto auth = req.headers().tryGet<Pistache::Http::Header::Authorization>())
        r.headers.emplace_back("Authorization", auth->value());
      try {
        resp = (*dispatch_)(r);
      } catch (const std::exception& e) {
        // No exception may take a worker down; this is a bug, reported as 500.
        log::Error(kLog, "event=handler_exception path={} error=\"{}\"", r.path, e.what());
        resp = Response{500, "text/plain", "internal error\n", {}};
      }
    }
    for (auto& [k, v] : resp.headers) writer.headers().add(std::make_shared<NamedHeader>(k, v));
    // Pistache only writes Content-Type from the typed MIME argument.
    auto mime = resp.content_type.empty() ? Pistache::Http::Mime::MediaType()
                                          : Pistache::Http::Mime::MediaType::fromString(resp.content_type);
    writer.send(static_cast<Pistache::Http::Code>(resp.status), resp.body, mime);
  }

 private:
  const Dispatch* dispatch_;
};

class PistacheServer : public Server {
 public:
  PistacheServer(Dispatch dispatch) : dispatch_(std::move(dispatch)) {}
  ~PistacheServer() override { Stop(); }

  Status Init(const ServerOptions& o) {
    try {
      Pistache::Address addr(o.host, Pistache::Port(o.port));
      endpoint_ = std::make_unique<Pistache::Http::Endpoint>(addr);
      auto opts = Pistache::Http::Endpoint::options()
                      .threads(o.threads)
                      .flags(Pistache::Tcp::Options::ReuseAddr)
                      .maxRequestSize(o.max_request_bytes + 64 * 1024)  // headers on top of body
                      .maxResponseSize(64 * 1024 * 1024)
                      .headerTimeout(std::chrono::seconds(30))
                      .bodyTimeout(std::chrono::seconds(60))
                      // Idle keep-alive connections (nginx's upstream pool keeps them
                      // 20 s) are closed after this long.
                      .keepaliveTimeout(std::chrono::seconds(120));
      endpoint_->init(opts);
      endpoint_->setHandler(Pistache::Http::make_handler<Handler>(&dispatch_));
      endpoint_->serveThreaded();
      port_ = static_cast<uint16_t>(endpoint_->getPort());
    } catch (const std::exception& e) {
      return Status::Io("cannot listen on " + o.host + ":" + std::to_string(o.port) + ": " + e.what());
    }
    return Status::Ok();
  }

  uint16_t port() const override { return port_; }
  void Stop() override {
    if (endpoint_) {
      endpoint_->shutdown();
      endpoint_.reset();
    }
  }

 private:
  Dispatch dispatch_;
  std::unique_ptr<Pistache::Http::Endpoint> endpoint_;
  uint16_t port_ = 0;
};

}  // namespace

std::string_view Request::Header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (IEquals(k, name)) return v;
  return {};
}

std::string Request::Param(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    size_t eq = part.find('=');
    std::string_view key = part.substr(0, eq);
    if (key == name) {
      if (eq == std::string_view::npos) return "";
      auto v = PercentDecode(part.substr(eq + 1));
      return v ? *v : std::string();
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return "";
}

bool Request::HasParam(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    if (part.substr(0, part.find('=')) == name) return true;
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return false;
}

Result<std::unique_ptr<Server>> Server::Start(const ServerOptions& options, Dispatch dispatch) {
  signal(SIGPIPE, SIG_IGN);  // a client reset must not kill the process
  auto s = std::make_unique<PistacheServer>(std::move(dispatch));
  ORCHARD_RETURN_IF_ERROR(s->Init(options));
  log::Info(kLog, "event=listening host={} port={} threads={}", options.host, s->port(),
            options.threads);
  return std::unique_ptr<Server>(std::move(s));
}

}  // namespace orchard::http
