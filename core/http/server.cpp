#include "http/server.h"

#include <dirent.h>
#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/net.h>
#include <pistache/peer.h>
#include <signal.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>

#include "http/framing.h"
#include "http/metrics.h"
#include "log/log.h"
#include "util/encoding.h"

namespace orchard::http {
namespace {

constexpr const char* kLog = "http";
constexpr size_t kHeaderLimit = 64 * 1024;       // request line + headers
constexpr size_t kChunkFramingSlack = 64 * 1024;  // chunk-size lines on top of the body
constexpr size_t kResponseHeadroom = 16 * 1024;   // status line and headers

using Pistache::Http::ResponseWriter;
using PeerPtr = std::shared_ptr<Pistache::Tcp::Peer>;

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

std::string Describe(const std::exception_ptr& e) {
  try {
    if (e) std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
  }
  return "unknown error";
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// State shared by the server, Pistache's handler clones (one per worker) and
// every connection. shared_ptr: connections and pending writes are owned by
// Pistache and may outlive the PistacheServer object by a little during Stop.
struct Shared {
  Dispatch dispatch;
  Metrics* metrics = nullptr;
  size_t max_body = 0;
  size_t max_raw = 0;
  size_t max_response = 0;
  std::atomic<size_t> max_connections{SIZE_MAX};  // set once the listener runs
  std::atomic<size_t> open{0};
  std::atomic<int64_t> refusal_logged_ms{0};
  std::atomic<uint64_t> refused_unlogged{0};

  void Count(const std::string& series) {
    if (metrics != nullptr) metrics->Increment(series);
  }
};

// One connection: Pistache's request parser (so Pistache's idle/timeout scan
// finds it where it expects) plus our framing state. Lives exactly as long as
// Pistache's Peer, which owns it; only that peer's worker thread touches it.
class Connection : public Pistache::Http::RequestParser {
 public:
  Connection(size_t max_request, std::shared_ptr<Shared> shared)
      : Pistache::Http::RequestParser(max_request),
        framer({.max_header_bytes = kHeaderLimit,
                .max_body_bytes = shared->max_body,
                .max_raw_bytes = shared->max_raw}),
        shared_(std::move(shared)) {
    shared_->open.fetch_add(1, std::memory_order_relaxed);
  }
  ~Connection() override { shared_->open.fetch_sub(1, std::memory_order_relaxed); }

  RequestFramer framer;
  bool parsed = false;   // Pistache has parsed the current request
  bool closing = false;  // answered "Connection: Close" or refused: input is discarded

 private:
  std::shared_ptr<Shared> shared_;
};

Connection* ConnectionOf(const PeerPtr& peer) {
  return static_cast<Connection*>(Pistache::Http::Handler::getParser(peer).get());
}

// Watches one response until it is written. Pistache drops a write without
// settling its promise when the peer is gone (EPIPE, ECONNRESET, a closed
// descriptor); the continuations holding this object are then destroyed
// unsettled, and the destructor reports the lost response.
class SendWatch {
 public:
  SendWatch(std::shared_ptr<Shared> shared, std::string path, int status)
      : shared_(std::move(shared)), path_(std::move(path)), status_(status) {}
  ~SendWatch() {
    if (!settled_) Report("connection_lost", "the connection ended before the response was written");
  }
  void Sent() { settled_ = true; }
  void Failed(const std::string& detail) {
    settled_ = true;
    Report("write_error", detail);
  }

 private:
  void Report(const char* reason, const std::string& detail) noexcept {
    try {
      log::Warn(kLog, "event=send_failed path={} status={} reason={} detail={}", log::Quote(path_, 256),
                status_, reason, log::Quote(detail));
      shared_->Count(std::string("orchard_http_send_failures_total{reason=\"") + reason + "\"}");
    } catch (...) {
    }
  }

  std::shared_ptr<Shared> shared_;
  std::string path_;
  int status_;
  bool settled_ = false;
};

void ShutdownPeer(const std::weak_ptr<Pistache::Tcp::Peer>& weak, int how) {
  // Runs on the peer's worker right after Pistache wrote to (or failed on) the
  // descriptor, so the descriptor is still this peer's: Pistache closes it
  // itself once it reads end-of-file.
  if (auto peer = weak.lock()) ::shutdown(peer->fd(), how);
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
  explicit Handler(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

  // Unused: requests are dispatched from onInput, which frames them first.
  void onRequest(const Pistache::Http::Request&, ResponseWriter) override {}

  void onConnection(const PeerPtr& peer) override {
    try {
      auto conn = std::make_shared<Connection>(getMaxRequestSize(), shared_);
      std::shared_ptr<Pistache::Http::RequestParser> parser = conn;
      peer->putData(ParserData, parser);
      const size_t open = shared_->open.load(std::memory_order_relaxed);
      if (open > shared_->max_connections.load(std::memory_order_relaxed)) Refuse(peer, conn.get(), open);
    } catch (const std::exception& e) {
      LogCaught("onConnection", e.what());
    } catch (...) {
      LogCaught("onConnection", "non-standard exception");
    }
  }

  void onInput(const char* data, size_t size, const PeerPtr& peer) override {
    Connection* conn = nullptr;
    try {
      conn = ConnectionOf(peer);
      while (size > 0 && !conn->closing) {
        const RequestFramer::Step step = conn->framer.Scan(data, size);
        if (step.outcome == RequestFramer::Outcome::kError) {
          Reject(peer, conn, conn->framer.error_status(), conn->framer.error_reason());
          return;
        }
        if (!conn->parsed && step.consumed > 0) {
          // The framer bounds the request below Pistache's buffer size.
          if (!conn->feed(data, step.consumed)) {
            Reject(peer, conn, 413, "request exceeds the configured limit");
            return;
          }
          conn->parsed = conn->parse() == Pistache::Http::Private::State::Done;
        }
        data += step.consumed;
        size -= step.consumed;
        if (step.outcome == RequestFramer::Outcome::kComplete) {
          if (!conn->parsed) {
            Reject(peer, conn, 400, "malformed request");
            return;
          }
          Serve(peer, conn);
          conn->reset();
          conn->parsed = false;
          conn->framer.Reset();
        }
      }
    } catch (const Pistache::Http::HttpError& e) {
      // Pistache's parser refused the request (unknown method, bad header value).
      if (conn) Reject(peer, conn, e.code(), e.reason());
    } catch (const std::exception& e) {
      LogCaught("onInput", e.what());
      if (conn) Reject(peer, conn, 500, "internal error");
    } catch (...) {
      LogCaught("onInput", "non-standard exception");
      if (conn) Reject(peer, conn, 500, "internal error");
    }
  }

 private:
  void LogCaught(const char* where, const char* what) noexcept {
    try {
      log::Error(kLog, "event=unexpected_exception where={} error={}", where, log::Quote(what));
    } catch (...) {
    }
  }

  // A complete, well-framed request that Pistache has parsed.
  void Serve(const PeerPtr& peer, Connection* conn) {
    Pistache::Http::Request& req = conn->request;
    req.copyAddress(peer->address());
    peer->setIdle(false);
    const bool keep_alive = conn->framer.keep_alive();
    ResponseWriter writer(req.version(), transport(), this, peer);

    Response resp;
    const char* method = MethodName(req.method());
    if (method == nullptr) {
      resp = Response{405, "text/plain", "method not allowed\n", {}};
    } else {
      Request r;
      r.method = method;
      r.path = req.resource();
      // Pistache keeps the query separately, split but not percent-decoded; rebuild the
      // raw string (Param decodes it once: "%2B" is '+', as SCEP's GET message= needs).
      std::string q;
      for (auto it = req.query().parameters_begin(); it != req.query().parameters_end(); ++it) {
        if (!q.empty()) q += '&';
        q += it->first + "=" + it->second;
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
      resp = Dispatch(r);
    }
    std::string path = req.resource();
    if (resp.body.size() + kResponseHeadroom > shared_->max_response) {
      log::Error(kLog, "event=send_failed path={} status={} reason=too_large bytes={} limit={}",
                 log::Quote(path, 256), resp.status, resp.body.size(), shared_->max_response);
      shared_->Count("orchard_http_send_failures_total{reason=\"too_large\"}");
      resp = Response{500, "text/plain", "response too large\n", {}};
    }

    for (auto& [k, v] : resp.headers) writer.headers().add(std::make_shared<NamedHeader>(k, v));
    writer.headers().add<Pistache::Http::Header::Connection>(
        keep_alive ? Pistache::Http::ConnectionControl::KeepAlive : Pistache::Http::ConnectionControl::Close);
    if (!keep_alive) conn->closing = true;
    // Pistache only writes Content-Type from the typed MIME argument.
    auto mime = resp.content_type.empty() ? Pistache::Http::Mime::MediaType()
                                          : Pistache::Http::Mime::MediaType::fromString(resp.content_type);
    // A HEAD answer has no body; Pistache would write it (and desynchronise a
    // keep-alive client), so send none.
    static const std::string kEmpty;
    const std::string& body = req.method() == Pistache::Http::Method::Head ? kEmpty : resp.body;
    Send(&writer, peer, resp.status, body, mime, std::move(path), !keep_alive);
  }

  Response Dispatch(const Request& r) {
    try {
      return shared_->dispatch(r);
    } catch (const std::exception& e) {
      // No exception may take a worker down; this is a bug, reported as 500.
      log::Error(kLog, "event=handler_exception path={} error={}", log::Quote(r.path, 256),
                 log::Quote(e.what()));
    } catch (...) {
      log::Error(kLog, "event=handler_exception path={} error=non_standard_exception",
                 log::Quote(r.path, 256));
    }
    return Response{500, "text/plain", "internal error\n", {}};
  }

  // Answers a request whose framing or syntax was refused and closes the
  // connection: what follows on it cannot be told apart from a new request.
  void Reject(const PeerPtr& peer, Connection* conn, int status, const std::string& reason) {
    conn->closing = true;
    try {
      log::Warn(kLog, "event=request_refused status={} reason={} peer={} target={}", status,
                log::Quote(reason), peer->address().host(), log::Quote(conn->framer.target()));
      shared_->Count("orchard_http_refused_requests_total{status=\"" + std::to_string(status) + "\"}");
      std::string target(conn->framer.target());
      conn->reset();
      ResponseWriter writer(Pistache::Http::Version::Http11, transport(), this, peer);
      writer.headers().add<Pistache::Http::Header::Connection>(Pistache::Http::ConnectionControl::Close);
      Send(&writer, peer, status, reason + "\n", Pistache::Http::Mime::MediaType::fromString("text/plain"),
           std::move(target), true);
    } catch (const std::exception& e) {
      LogCaught("reject", e.what());
      ::shutdown(peer->fd(), SHUT_RDWR);
    } catch (...) {
      LogCaught("reject", "non-standard exception");
      ::shutdown(peer->fd(), SHUT_RDWR);
    }
  }

  // Over max_connections: a fixed 503 written straight to the new socket (its
  // write queue is still empty), then shut down both ways, so Pistache reads
  // end-of-file and closes the descriptor at once.
  void Refuse(const PeerPtr& peer, Connection* conn, size_t open) {
    static constexpr char k503[] =
        "HTTP/1.1 503 Service Unavailable\r\nConnection: Close\r\nContent-Type: text/plain\r\n"
        "Content-Length: 21\r\n\r\ntoo many connections\n";
    conn->closing = true;
    ssize_t ignored = ::send(peer->fd(), k503, sizeof k503 - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)ignored;
    ::shutdown(peer->fd(), SHUT_RDWR);
    shared_->Count("orchard_http_connections_refused_total");
    // A flood must not flood the log: one line per second at most.
    const uint64_t unlogged = shared_->refused_unlogged.fetch_add(1) + 1;
    const int64_t now = NowMs();
    int64_t last = shared_->refusal_logged_ms.load();
    if (now - last >= 1000 && shared_->refusal_logged_ms.compare_exchange_strong(last, now)) {
      shared_->refused_unlogged.fetch_sub(unlogged);
      log::Warn(kLog, "event=connection_refused reason=max_connections open={} max_connections={} refused={}",
                open, shared_->max_connections.load(), unlogged);
    }
  }

  void Send(ResponseWriter* writer, const PeerPtr& peer, int status, const std::string& body,
            const Pistache::Http::Mime::MediaType& mime, std::string path, bool close) {
    auto watch = std::make_shared<SendWatch>(shared_, std::move(path), status);
    std::weak_ptr<Pistache::Tcp::Peer> weak = peer;
    writer->send(static_cast<Pistache::Http::Code>(status), body, mime)
        .then(
            [watch, weak, close](ssize_t) {
              watch->Sent();
              if (close) ShutdownPeer(weak, SHUT_WR);
            },
            [watch, weak](std::exception_ptr e) {
              try {
                watch->Failed(Describe(e));
                // The client got no complete answer: end the connection, or it waits forever.
                if (auto peer = weak.lock()) {
                  ConnectionOf(peer)->closing = true;
                  ::shutdown(peer->fd(), SHUT_RDWR);
                }
              } catch (...) {
              }
            });
  }

  std::shared_ptr<Shared> shared_;
};

// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force.
size_t RaiseFileLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
    else log::Warn(kLog, "event=file_limit_not_raised soft={} hard={}", rl.rlim_cur, rl.rlim_max);
  }
  return rl.rlim_cur == RLIM_INFINITY ? SIZE_MAX / 2 : static_cast<size_t>(rl.rlim_cur);
}

size_t OpenDescriptors() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  size_t n = 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n > 0 ? n - 1 : 0;  // not the directory's own descriptor
}

class PistacheServer : public Server {
 public:
  explicit PistacheServer(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  ~PistacheServer() override { Stop(); }

  Status Init(const ServerOptions& o) {
    const size_t file_limit = RaiseFileLimit();
    try {
      Pistache::Address addr(o.host, Pistache::Port(o.port));
      endpoint_ = std::make_unique<Pistache::Http::Endpoint>(addr);
      auto opts = Pistache::Http::Endpoint::options()
                      .threads(o.threads)
                      .flags(Pistache::Tcp::Options::ReuseAddr)
                      .maxRequestSize(shared_->max_raw)
                      .maxResponseSize(o.max_response_bytes)
                      .headerTimeout(std::chrono::seconds(30))
                      .bodyTimeout(std::chrono::seconds(60))
                      // Idle keep-alive connections (nginx's upstream pool keeps them
                      // 20 s) are closed after this long.
                      .keepaliveTimeout(std::chrono::seconds(120));
      endpoint_->init(opts);
      endpoint_->setHandler(Pistache::Http::make_handler<Handler>(shared_));
      endpoint_->serveThreaded();
      port_ = static_cast<uint16_t>(endpoint_->getPort());
    } catch (const std::exception& e) {
      return Status::Io("cannot listen on " + o.host + ":" + std::to_string(o.port) + ": " + e.what());
    }
    // Every descriptor the listener and its workers need is open now.
    const size_t open = OpenDescriptors();
    const size_t reserve = std::max<size_t>(16, file_limit / 8);
    const size_t safe = file_limit > open + reserve ? file_limit - open - reserve : 1;
    size_t limit = o.max_connections != 0 ? o.max_connections : safe;
    if (o.max_connections > safe)
      log::Warn(kLog, "event=max_connections_above_file_limit max_connections={} file_limit={} open_fds={} "
                      "detail=\"accepting may fail with EMFILE; raise the file limit (LimitNOFILE)\"",
                o.max_connections, file_limit, open);
    shared_->max_connections.store(limit);
    file_limit_ = file_limit;
    return Status::Ok();
  }

  void RegisterMetrics() {
    if (shared_->metrics == nullptr) return;
    shared_->metrics->AddCollector([shared = shared_](std::string* out) {
      *out += "# HELP orchard_http_open_connections Open HTTP connections.\n";
      *out += "# TYPE orchard_http_open_connections gauge\n";
      *out += "orchard_http_open_connections " + std::to_string(shared->open.load()) + "\n";
      *out += "# HELP orchard_http_max_connections Connection limit in force.\n";
      *out += "# TYPE orchard_http_max_connections gauge\n";
      *out += "orchard_http_max_connections " + std::to_string(shared->max_connections.load()) + "\n";
    });
  }

  uint16_t port() const override { return port_; }
  size_t max_connections() const override { return shared_->max_connections.load(); }
  size_t file_limit() const { return file_limit_; }
  void Stop() override {
    if (endpoint_) {
      endpoint_->shutdown();
      endpoint_.reset();
    }
  }

 private:
  std::shared_ptr<Shared> shared_;
  std::unique_ptr<Pistache::Http::Endpoint> endpoint_;
  uint16_t port_ = 0;
  size_t file_limit_ = 0;
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
      // A malformed escape is kept as sent, so the handler refuses the value
      // itself (an empty string would read as "absent").
      auto v = PercentDecode(part.substr(eq + 1));
      return v ? *v : std::string(part.substr(eq + 1));
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
  auto shared = std::make_shared<Shared>();
  shared->dispatch = std::move(dispatch);
  shared->metrics = options.metrics;
  shared->max_body = options.max_request_bytes;
  shared->max_raw = options.max_request_bytes + kHeaderLimit + kChunkFramingSlack;
  shared->max_response = options.max_response_bytes;
  auto s = std::make_unique<PistacheServer>(shared);
  ORCHARD_RETURN_IF_ERROR(s->Init(options));
  s->RegisterMetrics();
  log::Info(kLog, "event=listening host={} port={} threads={} max_connections={} file_limit={}", options.host,
            s->port(), options.threads, s->max_connections(), s->file_limit());
  return std::unique_ptr<Server>(std::move(s));
}

}  // namespace orchard::http
