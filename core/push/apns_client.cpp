// ApnsClient implementation: one I/O thread, poll() over the pool's sockets
// plus an eventfd, OpenSSL non-blocking TLS, nghttp2 in memory mode
// (mem_recv / mem_send into one write buffer, one SSL_write per batch). Host
// names are resolved on a separate resolver thread (getaddrinfo blocks), whose
// answers come back through the same eventfd; IP literals need no lookup.
//
// Request life cycle (all on the I/O thread after Send):
//   incoming_ (locked, filled by Send) -> queue_ (FIFO, sorted by seq) ->
//   a connection's in-flight list (stream open) -> callback.
// A request whose stream closes without a response (REFUSED_STREAM, streams
// above a GOAWAY's last_stream_id, connection loss) goes back to queue_ in
// seq order and is sent again, at most max_resends times (streams above a
// GOAWAY's last-stream-id were never processed: those sends do not count).
//
// Ownership: Pending objects are owned by unique_ptr while queued; while on a
// stream they are owned by the connection's intrusive in-flight list (raw
// pointers, released/re-wrapped at the two edges) because nghttp2 refers to
// them as stream user data and data source.
#include "push/apns_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <string_view>
#include <thread>
#include <vector>

#include "log/log.h"

namespace orchard::push {
namespace {

constexpr char kLog[] = "push";
using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using std::chrono::milliseconds;

constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kWriteBatch = 64 * 1024;  // bytes collected from nghttp2 per SSL_write
constexpr size_t kMaxErrorBody = 4096;     // response body kept for reason parsing
constexpr size_t kMaxPushMagic = 1024;
constexpr size_t kMaxToken = 200;
constexpr uint32_t kMaxStreamsCap = 1u << 16;  // sanity cap on the server's advertised value
constexpr int32_t kLocalWindow = 1 << 24;
constexpr std::string_view kBodyPrefix = "{\"mdm\":\"";
constexpr std::string_view kBodySuffix = "\"}";

// Device tokens may be logged only truncated.
std::string TruncatedToken(std::string_view token) {
  return std::string(token.substr(0, 8)) + (token.size() > 8 ? "..." : "");
}

// Drains OpenSSL's thread-local error queue into one line (no key material:
// OpenSSL's messages name reasons, never data).
std::string OpenSslErrors() {
  std::string out;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Visible ASCII only: values that go into HTTP/2 header fields.
bool IsHeaderSafe(std::string_view v) {
  for (unsigned char c : v)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

// Length of s once JSON-escaped (without quotes); equals s.size() iff no escaping is needed.
size_t JsonEscapedLength(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') n += 2;
    else if (c < 0x20) n += 6;
    else n += 1;
  }
  return n;
}

std::string JsonEscape(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(JsonEscapedLength(s));
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

// Minimal JSON reader for APNs error bodies: a top-level object whose
// "reason" (string) and "timestamp" (integer) members are extracted; other
// members are skipped. Returns false on malformed input.
class ErrorBodyParser {
 public:
  explicit ErrorBodyParser(std::string_view s) : s_(s) {}

  bool Parse(std::string* reason, int64_t* timestamp) {
    Ws();
    if (!Eat('{')) return false;
    Ws();
    if (Eat('}')) return true;
    for (;;) {
      std::string key;
      Ws();
      if (!String(&key)) return false;
      Ws();
      if (!Eat(':')) return false;
      Ws();
      if (key == "reason" && Peek() == '"') {
        if (!String(reason)) return false;
      } else if (key == "timestamp" && (Peek() == '-' || (Peek() >= '0' && Peek() <= '9'))) {
        if (!Number(timestamp)) return false;
      } else if (!Skip(0)) {
        return false;
      }
      Ws();
      if (Eat('}')) return true;
      if (!Eat(',')) return false;
    }
  }

 private:
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool Eat(char c) {
    if (Peek() != c) return false;
    ++i_;
    return true;
  }
  void Ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  static void Utf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xC0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xE0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *out += static_cast<char>(0xF0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  bool Hex4(uint32_t* v) {
    if (i_ + 4 > s_.size()) return false;
    *v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_++];
      if (!IsHex(c)) return false;
      *v = *v * 16 + static_cast<uint32_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return true;
  }
  bool String(std::string* out) {
    if (!Eat('"')) return false;
    out->clear();
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '"') return true;
      if (c != '\\') {
        *out += c;
        continue;
      }
      if (i_ >= s_.size()) return false;
      char e = s_[i_++];
      switch (e) {
        case '"': case '\\': case '/': *out += e; break;
        case 'b': *out += '\b'; break;
        case 'f': *out += '\f'; break;
        case 'n': *out += '\n'; break;
        case 'r': *out += '\r'; break;
        case 't': *out += '\t'; break;
        case 'u': {
          uint32_t cp;
          if (!Hex4(&cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00 && i_ + 6 <= s_.size() && s_[i_] == '\\' && s_[i_ + 1] == 'u') {
            i_ += 2;
            uint32_t lo;
            if (!Hex4(&lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xD800 && cp <= 0xDFFF) {
            cp = 0xFFFD;
          }
          Utf8(cp, out);
          break;
        }
        default: return false;
      }
    }
    return false;
  }
  bool Number(int64_t* out) {
    bool neg = Eat('-');
    if (!(Peek() >= '0' && Peek() <= '9')) return false;
    int64_t v = 0;
    while (Peek() >= '0' && Peek() <= '9') {
      int d = s_[i_++] - '0';
      if (v > (INT64_MAX - d) / 10) return false;
      v = v * 10 + d;
    }
    // A fraction or exponent is tolerated and truncated.
    if (Eat('.'))
      while (Peek() >= '0' && Peek() <= '9') ++i_;
    if (Peek() == 'e' || Peek() == 'E') {
      ++i_;
      if (Peek() == '+' || Peek() == '-') ++i_;
      while (Peek() >= '0' && Peek() <= '9') ++i_;
    }
    *out = neg ? -v : v;
    return true;
  }
  bool Skip(int depth) {
    if (depth > 32) return false;
    char c = Peek();
    if (c == '"') {
      std::string ignored;
      return String(&ignored);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      int64_t ignored;
      return Number(&ignored);
    }
    for (std::string_view lit : {"true", "false", "null"})
      if (s_.substr(i_, lit.size()) == lit) {
        i_ += lit.size();
        return true;
      }
    if (c == '{' || c == '[') {
      char close = c == '{' ? '}' : ']';
      ++i_;
      Ws();
      if (Eat(close)) return true;
      for (;;) {
        Ws();
        if (c == '{') {
          std::string ignored;
          if (!String(&ignored)) return false;
          Ws();
          if (!Eat(':')) return false;
          Ws();
        }
        if (!Skip(depth + 1)) return false;
        Ws();
        if (Eat(close)) return true;
        if (!Eat(',')) return false;
      }
    }
    return false;
  }

  std::string_view s_;
  size_t i_ = 0;
};

// Printable ASCII copy, bounded: for text from the network that goes into logs or errors.
std::string Printable(std::string_view s, size_t max) {
  std::string out;
  for (unsigned char c : s.substr(0, max)) out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  if (s.size() > max) out += "...";
  return out;
}

struct Conn;

// One request from Send until its callback.
struct Pending {
  ApnsRequest req;
  ApnsCallback done;
  uint64_t seq = 0;
  TimePoint deadline;
  int sends = 0;              // times submitted on a stream
  std::string reject;         // set by Send: rejected, complete on the I/O thread with this error
  ApnsFailure reject_failure = ApnsFailure::kNone;
  std::string escaped_magic;  // only when the magic needs JSON escaping
  char generated_id[36];      // apns-id when the caller gave none
  bool has_generated_id = false;
  // While on a stream:
  Conn* conn = nullptr;
  int32_t stream_id = 0;
  Pending* prev = nullptr;
  Pending* next = nullptr;
  size_t body_len = 0;
  size_t body_sent = 0;
  bool cancelled = false;  // timed out on a stream: callback done, waiting for the stream to close
  ApnsResponse resp;       // response being received
  std::string body;        // error body being received (bounded)

  std::string_view apns_id() const {
    return has_generated_id ? std::string_view(generated_id, sizeof generated_id)
                            : std::string_view(req.apns_id);
  }
  std::string_view magic_json() const {
    return escaped_magic.empty() ? std::string_view(req.push_magic) : std::string_view(escaped_magic);
  }
};

enum class ConnState { kIdle, kResolving, kConnecting, kHandshaking, kReady };

struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

// One pooled connection slot; reused across reconnects. I/O thread only.
struct Conn {
  class ClientImpl* client = nullptr;
  int index = 0;
  ConnState state = ConnState::kIdle;
  int fd = -1;
  std::unique_ptr<SSL, SslFree> ssl;
  nghttp2_session* session = nullptr;  // owned; deleted in Close
  std::vector<std::pair<sockaddr_storage, socklen_t>> addrs;
  size_t next_addr = 0;
  uint64_t resolve_gen = 0;  // the lookup whose answer this slot waits for (kResolving)
  TimePoint connect_deadline{};
  int64_t backoff_ms = 0;    // this slot's next connect backoff
  TimePoint next_attempt{};  // no connect attempt on this slot before this
  int32_t goaway_last_stream_id = INT32_MAX;  // streams above it were never processed
  bool handshake_wants_write = false;
  bool settings_received = false;
  bool draining = false;      // GOAWAY received or stream ids exhausted: no new streams
  bool had_response = false;  // the server answered at least one request on this connection
  bool ping_outstanding = false;
  TimePoint last_recv{};
  TimePoint ping_deadline{};
  std::string fatal;  // non-empty: close at the next safe point, with this reason
  bool tls_broken = false;  // fatal TLS/socket error: no close_notify
  uint32_t in_flight = 0;  // open streams we submitted (including cancelled ones)
  Pending* head = nullptr;  // live requests on streams, submit order
  Pending* tail = nullptr;
  TimePoint earliest_deadline = TimePoint::max();
  std::string wbuf;
  size_t woff = 0;
  bool want_pollout = false;  // SSL_write blocked on the socket

  void Link(Pending* p) {
    p->prev = tail;
    p->next = nullptr;
    (tail ? tail->next : head) = p;
    tail = p;
    p->conn = this;
    earliest_deadline = std::min(earliest_deadline, p->deadline);
  }
  void Unlink(Pending* p) {
    (p->prev ? p->prev->next : head) = p->next;
    (p->next ? p->next->prev : tail) = p->prev;
    p->prev = p->next = nullptr;
    p->conn = nullptr;
  }
};

// The system resolver: getaddrinfo, numeric addresses out. Blocks.
Result<std::vector<std::string>> SystemResolve(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) return Status::Unavailable(gai_strerror(rc));
  std::vector<std::string> out;
  char buf[INET6_ADDRSTRLEN];
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    const void* a = nullptr;
    if (ai->ai_family == AF_INET) a = &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr;
    else if (ai->ai_family == AF_INET6) a = &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr;
    if (a && inet_ntop(ai->ai_family, a, buf, sizeof buf)) out.emplace_back(buf);
  }
  freeaddrinfo(res);
  return out;
}

// State shared between a client and its resolver thread. The thread owns a
// reference, so a lookup that outlives the client (a slow DNS server at
// shutdown) touches only this; `wake` is cleared under mu before the client
// closes its eventfd.
struct ResolverShared {
  struct Job {
    int conn;
    uint64_t gen;
  };
  struct Answer {
    int conn;
    uint64_t gen;
    Result<std::vector<std::string>> addrs;
  };
  std::string host;
  ApnsResolver resolve;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> jobs;
  std::vector<Answer> answers;
  std::function<void()> wake;
  bool stop = false;
  bool busy = false;  // a lookup is running

  // The resolver thread's body. Catches everything: a throwing resolver is a
  // failed lookup, anything else is logged and the thread goes on.
  static void Run(std::shared_ptr<ResolverShared> r) {
    std::unique_lock<std::mutex> lock(r->mu);
    while (!r->stop) {
      try {
        r->cv.wait(lock, [&] { return r->stop || !r->jobs.empty(); });
        if (r->stop) break;
        Job job = r->jobs.front();
        r->jobs.pop_front();
        r->busy = true;
        lock.unlock();
        Result<std::vector<std::string>> addrs = Status::Internal("no answer");
        try {
          addrs = r->resolve(r->host);
        } catch (const std::exception& e) {
          addrs = Status::Internal(std::string("resolver threw: ") + e.what());
        } catch (...) {
          addrs = Status::Internal("resolver threw");
        }
        lock.lock();
        r->busy = false;
        if (r->stop) break;
        r->answers.push_back({job.conn, job.gen, std::move(addrs)});
        if (r->wake) r->wake();
      } catch (const std::exception& e) {
        if (!lock.owns_lock()) lock.lock();
        r->busy = false;
        log::Error(kLog, "event=resolver_thread_error error=\"{}\"", e.what());
      } catch (...) {
        if (!lock.owns_lock()) lock.lock();
        r->busy = false;
        log::Error(kLog, "event=resolver_thread_error error=unknown");
      }
    }
  }
};

class ClientImpl final : public ApnsClient {
 public:
  ClientImpl(const ApnsClientOptions& options, SSL_CTX* ctx)
      : opt_(options), ctx_(ctx), rng_(std::random_device{}()) {
    authority_ = opt_.endpoint.host;
    if (opt_.endpoint.port != 443) authority_ += ":" + std::to_string(opt_.endpoint.port);
    host_is_ip_ = IsIpLiteral(opt_.endpoint.host);
    for (int i = 0; i < opt_.connections; ++i) {
      auto c = std::make_unique<Conn>();
      c->client = this;
      c->index = i;
      c->backoff_ms = opt_.connect_backoff_initial_ms;
      conns_.push_back(std::move(c));
    }
    rbuf_ = std::make_unique<uint8_t[]>(kReadChunk);
  }

  ~ClientImpl() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    Wake();
    if (thread_.joinable()) thread_.join();
    if (resolver_) {
      bool busy;
      {
        std::lock_guard<std::mutex> lock(resolver_->mu);
        resolver_->stop = true;
        resolver_->wake = nullptr;  // before efd_ closes
        busy = resolver_->busy;
      }
      resolver_->cv.notify_all();
      // An idle resolver exits at once; one stuck in a lookup is left to finish
      // on its own (it holds only the shared state), so shutdown never waits on DNS.
      if (resolver_thread_.joinable()) {
        if (busy) resolver_thread_.detach();
        else resolver_thread_.join();
      }
    }
    if (efd_ >= 0) close(efd_);
    if (callbacks_) nghttp2_session_callbacks_del(callbacks_);
    if (h2opt_) nghttp2_option_del(h2opt_);
    SSL_CTX_free(ctx_);
  }

  Status Start() {
    efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd_ < 0) return Status::Internal(std::string("apns: eventfd: ") + strerror(errno));
    if (nghttp2_session_callbacks_new(&callbacks_) != 0 || nghttp2_option_new(&h2opt_) != 0)
      return Status::Internal("apns: nghttp2 out of memory");
    nghttp2_session_callbacks_set_on_header_callback(callbacks_, &ClientImpl::OnHeader);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks_, &ClientImpl::OnDataChunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks_, &ClientImpl::OnStreamClose);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks_, &ClientImpl::OnFrameRecv);
    nghttp2_option_set_no_closed_streams(h2opt_, 1);
    if (!host_is_ip_ || opt_.resolver) {
      resolver_ = std::make_shared<ResolverShared>();
      resolver_->host = opt_.endpoint.host;
      resolver_->resolve = opt_.resolver ? opt_.resolver : ApnsResolver(SystemResolve);
      resolver_->wake = [this] { Wake(); };
      try {
        resolver_thread_ = std::thread(&ResolverShared::Run, resolver_);
      } catch (const std::exception& e) {
        return Status::Internal(std::string("apns: cannot start the resolver thread: ") + e.what());
      }
    }
    try {
      thread_ = std::thread([this] { Run(); });
    } catch (const std::exception& e) {
      return Status::Internal(std::string("apns: cannot start the I/O thread: ") + e.what());
    }
    return Status::Ok();
  }

  void Send(ApnsRequest request, ApnsCallback done) override {
    auto p = std::make_unique<Pending>();
    p->req = std::move(request);
    p->done = std::move(done);
    p->reject = Validate(p->req);
    if (!p->reject.empty()) p->reject_failure = ApnsFailure::kInvalidRequest;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stopping_) {
        lock.unlock();
        Finish(std::move(p), ApnsFailure::kShutdown, "client shut down");
        return;
      }
      p->seq = next_seq_++;
      // Taken under the lock so that deadlines are ordered like seq.
      p->deadline = Clock::now() + milliseconds(opt_.request_timeout_ms);
      if (p->reject.empty() && queued_.load(std::memory_order_relaxed) >= opt_.max_queued) {
        p->reject = "queue full";
        p->reject_failure = ApnsFailure::kQueueFull;
      }
      if (p->reject.empty()) queued_.fetch_add(1, std::memory_order_relaxed);
      incoming_.push_back(std::move(p));
    }
    Wake();
  }

  Stats stats() const override {
    Stats s;
    s.connects = connects_.load(std::memory_order_relaxed);
    s.connect_failures = connect_failures_.load(std::memory_order_relaxed);
    s.goaways = goaways_.load(std::memory_order_relaxed);
    s.resent = resent_.load(std::memory_order_relaxed);
    s.pings = pings_.load(std::memory_order_relaxed);
    s.goaway_refused = goaway_refused_.load(std::memory_order_relaxed);
    s.in_flight = in_flight_.load(std::memory_order_relaxed);
    s.queued = queued_.load(std::memory_order_relaxed);
    s.max_concurrent_streams = max_streams_seen_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  static std::string Validate(const ApnsRequest& r) {
    if (r.device_token_hex.empty() || r.device_token_hex.size() > kMaxToken ||
        !std::all_of(r.device_token_hex.begin(), r.device_token_hex.end(), IsHex))
      return "invalid request: device token must be 1-200 hex digits";
    if (r.topic.empty() || r.topic.size() > 255 || !IsHeaderSafe(r.topic))
      return "invalid request: topic must be 1-255 visible ASCII characters";
    if (r.apns_id.size() > 64 || !IsHeaderSafe(r.apns_id))
      return "invalid request: apns_id must be at most 64 visible ASCII characters";
    if (r.push_magic.empty() || r.push_magic.size() > kMaxPushMagic)
      return "invalid request: push magic must be 1-1024 bytes";
    if (r.expiration_unix < 0) return "invalid request: negative expiration";
    return {};
  }

  void Wake() {
    if (wake_pending_.exchange(true)) return;
    uint64_t one = 1;
    ssize_t n = write(efd_, &one, sizeof one);
    (void)n;  // EAGAIN means the counter is already non-zero: the thread wakes anyway
  }

  // ---------------------------------------------------------------- completion

  // Fails the request without an HTTP answer: runs the callback (exactly once
  // per request) and frees the request.
  void Finish(std::unique_ptr<Pending> p, ApnsFailure failure, std::string error) {
    ApnsResponse& r = p->resp;
    if (log::Enabled(log::Level::kDebug))
      log::Debug(kLog, "event=push_failed token={} error=\"{}\"", TruncatedToken(p->req.device_token_hex), error);
    r = ApnsResponse{};
    r.error = std::move(error);
    r.failure = failure;
    r.apns_id = std::string(p->apns_id());
    Invoke(*p);
  }

  void Invoke(Pending& p) {
    if (!p.done) return;
    try {
      p.done(p.resp);
    } catch (const std::exception& e) {
      log::Error(kLog, "event=callback_threw error=\"{}\"", e.what());
    } catch (...) {
      log::Error(kLog, "event=callback_threw error=unknown");
    }
    p.done = nullptr;
  }

  // A stream closed with a response (any status).
  void FinishAnswered(std::unique_ptr<Pending> p) {
    ApnsResponse& r = p->resp;
    if (r.apns_id.empty()) r.apns_id = std::string(p->apns_id());
    if (!p->body.empty()) {
      ErrorBodyParser parser(p->body);
      if (!parser.Parse(&r.reason, &r.timestamp_ms)) {
        r.reason = Printable(p->body, 200);
        r.timestamp_ms = 0;
      }
    }
    Invoke(*p);
  }

  // A request went unanswered on a stream: back to the queue unless it has
  // been sent too often or has expired.
  void Requeue(std::unique_ptr<Pending> p, std::string why) {
    if (p->deadline <= Clock::now()) {
      Finish(std::move(p), ApnsFailure::kTimeout, "timeout");
      return;
    }
    if (p->sends > opt_.max_resends) {
      Finish(std::move(p), ApnsFailure::kGaveUp,
             "gave up after " + std::to_string(p->sends) + " sends: " + why);
      return;
    }
    resent_.fetch_add(1, std::memory_order_relaxed);
    requeue_.push_back(std::move(p));
  }

  // Merges requeue_ into queue_, keeping queue_ sorted by seq (= deadline order).
  void ApplyRequeues() {
    if (requeue_.empty()) return;
    std::sort(requeue_.begin(), requeue_.end(),
              [](const auto& a, const auto& b) { return a->seq < b->seq; });
    queued_.fetch_add(requeue_.size(), std::memory_order_relaxed);
    auto pos = queue_.begin();
    for (auto& p : requeue_) {
      pos = std::upper_bound(pos, queue_.end(), p->seq,
                             [](uint64_t seq, const std::unique_ptr<Pending>& q) { return seq < q->seq; });
      pos = queue_.insert(pos, std::move(p));
      ++pos;
    }
    requeue_.clear();
  }

  // ---------------------------------------------------------------- the loop

  // Moves Send's requests into queue_; completes rejected ones; takes the
  // resolver's answers. Returns false when stopping.
  bool DrainIncoming() {
    wake_pending_.store(false);
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drained_.swap(incoming_);
      stopping = stopping_;
    }
    for (auto& p : drained_) {
      if (!p->reject.empty()) {
        std::string why = std::move(p->reject);
        ApnsFailure failure = p->reject_failure;
        Finish(std::move(p), failure, std::move(why));
      } else {
        queue_.push_back(std::move(p));
      }
    }
    drained_.clear();
    if (resolver_) {
      std::vector<ResolverShared::Answer> answers;
      {
        std::lock_guard<std::mutex> lock(resolver_->mu);
        answers.swap(resolver_->answers);
      }
      for (auto& a : answers) {
        Conn& c = *conns_[static_cast<size_t>(a.conn)];
        if (c.state != ConnState::kResolving || c.resolve_gen != a.gen) continue;  // timed out meanwhile
        Resolved(c, std::move(a.addrs));
        if (!c.fatal.empty()) Close(c);
      }
    }
    return !stopping;
  }

  void Run() {
    // SIGPIPE from writing to a reset socket stays pending on this thread instead
    // of killing the process; the write fails with EPIPE.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    std::vector<pollfd> fds;
    std::vector<Conn*> polled;
    // Every exception is caught here, at the top of each turn: logged, and the
    // loop goes on (after a pause, never a tight loop).
    for (;;) {
      try {
        if (!Turn(fds, polled)) break;
      } catch (const std::exception& e) {
        log::Error(kLog, "event=io_thread_error error=\"{}\"", e.what());
        std::this_thread::sleep_for(milliseconds(50));
      } catch (...) {
        log::Error(kLog, "event=io_thread_error error=unknown");
        std::this_thread::sleep_for(milliseconds(50));
      }
    }
    try {
      Shutdown();
    } catch (const std::exception& e) {
      log::Error(kLog, "event=io_thread_error phase=shutdown error=\"{}\"", e.what());
    } catch (...) {
      log::Error(kLog, "event=io_thread_error phase=shutdown error=unknown");
    }
  }

  // One turn of the I/O loop; false when the client is stopping.
  bool Turn(std::vector<pollfd>& fds, std::vector<Conn*>& polled) {
    if (!DrainIncoming()) return false;
    TimePoint now = Clock::now();
    for (auto& c : conns_) Timers(*c, now);
    ApplyRequeues();
    ExpireQueued(now);
    Dispatch(now);
    for (auto& c : conns_)
      if (c->state == ConnState::kReady) {
        Flush(*c);
        if (!c->fatal.empty()) Close(*c);
      }
    ApplyRequeues();

    fds.clear();
    polled.clear();
    fds.push_back({efd_, POLLIN, 0});
    for (auto& c : conns_) {
      short ev = 0;
      switch (c->state) {
        case ConnState::kIdle: break;
        case ConnState::kResolving: break;  // the resolver's answer comes through efd_
        case ConnState::kConnecting: ev = POLLOUT; break;
        case ConnState::kHandshaking: ev = c->handshake_wants_write ? POLLOUT : POLLIN; break;
        case ConnState::kReady: ev = static_cast<short>(POLLIN | (c->want_pollout ? POLLOUT : 0)); break;
      }
      if (ev == 0) continue;
      fds.push_back({c->fd, ev, 0});
      polled.push_back(c.get());
    }
    int timeout = requeue_.empty() && !run_again_ ? PollTimeout(Clock::now()) : 0;
    run_again_ = false;
    int n = poll(fds.data(), fds.size(), timeout);
    if (n < 0) {
      if (errno == EINTR) return true;
      log::Error(kLog, "event=poll_failed error=\"{}\"", strerror(errno));
      std::this_thread::sleep_for(milliseconds(50));  // never a tight loop
      return true;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      ssize_t r = read(efd_, &v, sizeof v);
      (void)r;
    }
    for (size_t i = 0; i < polled.size(); ++i) {
      short re = fds[i + 1].revents;
      if (re == 0) continue;
      Conn& c = *polled[i];
      HandleIo(c, re);
      if (!c.fatal.empty()) Close(c);
    }
    return true;
  }

  int PollTimeout(TimePoint now) const {
    TimePoint next = now + milliseconds(1000);
    if (!queue_.empty()) next = std::min(next, queue_.front()->deadline);
    for (const auto& c : conns_) {
      switch (c->state) {
        case ConnState::kIdle:
          // A past next_attempt needs no wake-up: Dispatch already decided.
          if (!queue_.empty() && c->next_attempt > now) next = std::min(next, c->next_attempt);
          break;
        case ConnState::kResolving:
        case ConnState::kConnecting:
        case ConnState::kHandshaking:
          next = std::min(next, c->connect_deadline);
          break;
        case ConnState::kReady:
          if (!c->settings_received) next = std::min(next, c->connect_deadline);
          next = std::min(next, c->earliest_deadline);
          if (c->ping_outstanding) next = std::min(next, c->ping_deadline);
          else if (c->settings_received) next = std::min(next, c->last_recv + milliseconds(opt_.ping_after_idle_ms));
          break;
      }
    }
    if (next <= now) return 0;
    auto ms = std::chrono::duration_cast<milliseconds>(next - now).count() + 1;
    return static_cast<int>(std::min<int64_t>(ms, 1000));
  }

  // Fails queued requests whose deadline passed (queue_ is in deadline order).
  void ExpireQueued(TimePoint now) {
    while (!queue_.empty() && queue_.front()->deadline <= now) {
      std::unique_ptr<Pending> p = std::move(queue_.front());
      queue_.pop_front();
      queued_.fetch_sub(1, std::memory_order_relaxed);
      Finish(std::move(p), ApnsFailure::kTimeout, "timeout");
    }
  }

  void Timers(Conn& c, TimePoint now) {
    switch (c.state) {
      case ConnState::kIdle:
        return;
      case ConnState::kResolving:
      case ConnState::kConnecting:
      case ConnState::kHandshaking:
        if (now >= c.connect_deadline) {
          c.fatal = c.state == ConnState::kResolving ? "DNS: no answer within the connect timeout"
                                                      : "connect timeout";
          Close(c);
        }
        return;
      case ConnState::kReady:
        break;
    }
    if (!c.settings_received && now >= c.connect_deadline) {
      c.fatal = "no SETTINGS from the server";
    } else if (c.ping_outstanding && now >= c.ping_deadline) {
      c.fatal = "PING timeout";
    } else if (!nghttp2_session_want_read(c.session) && !nghttp2_session_want_write(c.session)) {
      c.fatal = "session finished";
    } else if (c.draining && c.in_flight == 0) {
      c.fatal = "drained after GOAWAY";
    }
    if (!c.fatal.empty()) {
      Close(c);
      return;
    }
    if (now >= c.earliest_deadline) ExpireInFlight(c, now);
    if (!c.ping_outstanding && c.settings_received &&
        now - c.last_recv >= milliseconds(opt_.ping_after_idle_ms)) {
      if (nghttp2_submit_ping(c.session, NGHTTP2_FLAG_NONE, nullptr) == 0) {
        c.ping_outstanding = true;
        c.ping_deadline = now + milliseconds(opt_.ping_timeout_ms);
        pings_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }

  // Times out requests on streams: callback now, RST_STREAM CANCEL; the
  // Pending stays linked (nghttp2 may still read its body) until the stream closes.
  void ExpireInFlight(Conn& c, TimePoint now) {
    c.earliest_deadline = TimePoint::max();
    for (Pending* p = c.head; p; p = p->next) {
      if (p->cancelled) continue;
      if (p->deadline <= now) {
        p->cancelled = true;
        nghttp2_submit_rst_stream(c.session, NGHTTP2_FLAG_NONE, p->stream_id, NGHTTP2_CANCEL);
        p->resp = ApnsResponse{};
        p->resp.error = "timeout";
        p->resp.failure = ApnsFailure::kTimeout;
        p->resp.apns_id = std::string(p->apns_id());
        Invoke(*p);
      } else {
        c.earliest_deadline = std::min(c.earliest_deadline, p->deadline);
      }
    }
  }

  uint32_t FreeStreams(const Conn& c) const {
    if (c.state != ConnState::kReady || c.draining || !c.fatal.empty()) return 0;
    uint32_t limit = 1;  // until the server's SETTINGS arrive
    if (c.settings_received) {
      limit = std::min(kMaxStreamsCap, nghttp2_session_get_remote_settings(
                                           c.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
    }
    return limit > c.in_flight ? limit - c.in_flight : 0;
  }

  void Dispatch(TimePoint now) {
    while (!queue_.empty()) {
      Conn* best = nullptr;
      uint32_t best_free = 0;
      for (auto& c : conns_) {
        uint32_t f = FreeStreams(*c);
        if (f > best_free) {
          best_free = f;
          best = c.get();
        }
      }
      if (!best) break;
      // With one usable connection, hand it a batch without rescanning.
      uint32_t batch = 1;
      if (conns_.size() == 1) batch = best_free;
      for (uint32_t k = 0; k < batch && !queue_.empty(); ++k) {
        std::unique_ptr<Pending> p = std::move(queue_.front());
        queue_.pop_front();
        queued_.fetch_sub(1, std::memory_order_relaxed);
        if (!Submit(*best, std::move(p))) break;
      }
    }
    if (queue_.empty()) return;
    // Requests are waiting: open more connections while the waiting requests
    // exceed what connections being opened will take (1 stream each until SETTINGS).
    size_t coming = 0;
    for (auto& c : conns_)
      if (c->state == ConnState::kResolving || c->state == ConnState::kConnecting ||
          c->state == ConnState::kHandshaking || (c->state == ConnState::kReady && !c->settings_received))
        ++coming;
    for (auto& c : conns_) {
      if (queue_.size() <= coming) break;
      if (c->state != ConnState::kIdle) continue;
      if (c->next_attempt > now) continue;  // this slot is backing off
      StartConnect(*c, now);
      if (!c->fatal.empty()) {
        Close(*c);
        continue;
      }
      ++coming;
    }
  }

  // Submits p on c (c has a free stream). Returns false if c cannot take more.
  bool Submit(Conn& c, std::unique_ptr<Pending> p) {
    if (p->req.apns_id.empty() && !p->has_generated_id) {  // kept across re-sends
      GenerateId(p->generated_id);
      p->has_generated_id = true;
    }
    if (p->sends == 0 && JsonEscapedLength(p->req.push_magic) != p->req.push_magic.size())
      p->escaped_magic = JsonEscape(p->req.push_magic);
    p->body_len = kBodyPrefix.size() + p->magic_json().size() + kBodySuffix.size();
    p->body_sent = 0;
    p->resp = ApnsResponse{};
    p->body.clear();

    path_buf_.assign("/3/device/");
    path_buf_.append(p->req.device_token_hex);
    char len_buf[24], exp_buf[24];
    int len_n = snprintf(len_buf, sizeof len_buf, "%zu", p->body_len);
    int exp_n = snprintf(exp_buf, sizeof exp_buf, "%lld", static_cast<long long>(p->req.expiration_unix));
    std::string_view id = p->apns_id();
    auto nv = [](std::string_view name, std::string_view value) {
      return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                        reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                        value.size(), NGHTTP2_NV_FLAG_NO_COPY_NAME};
    };
    nghttp2_nv hdrs[10];
    size_t n = 0;
    hdrs[n++] = nv(":method", "POST");
    hdrs[n++] = nv(":scheme", "https");
    hdrs[n++] = nv(":path", path_buf_);
    hdrs[n++] = nv(":authority", authority_);
    hdrs[n++] = nv("apns-push-type", "mdm");
    hdrs[n++] = nv("apns-topic", p->req.topic);
    hdrs[n++] = nv("apns-priority", "10");
    if (p->req.expiration_unix > 0) hdrs[n++] = nv("apns-expiration", std::string_view(exp_buf, exp_n));
    hdrs[n++] = nv("apns-id", id);
    hdrs[n++] = nv("content-length", std::string_view(len_buf, len_n));

    nghttp2_data_provider prd;
    prd.source.ptr = p.get();
    prd.read_callback = &ClientImpl::ReadBody;
    int32_t stream_id = nghttp2_submit_request(c.session, nullptr, hdrs, n, &prd, p.get());
    if (stream_id < 0) {
      if (stream_id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
        log::Info(kLog, "event=stream_ids_exhausted conn={}", c.index);
        c.draining = true;
        queue_.push_front(std::move(p));
        queued_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
      Finish(std::move(p), ApnsFailure::kInternal, std::string("nghttp2: ") + nghttp2_strerror(stream_id));
      return true;
    }
    p->stream_id = stream_id;
    p->sends++;
    p->cancelled = false;
    c.in_flight++;
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    c.Link(p.release());
    return true;
  }

  void GenerateId(char out[36]) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    uint64_t a = rng_(), b = rng_();
    a = (a & ~0xF000ull) | 0x4000ull;                         // version 4
    b = (b & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull;  // variant 10
    int k = 0;
    for (int i = 0; i < 32; ++i) {
      if (i == 8 || i == 12 || i == 16 || i == 20) out[k++] = '-';
      uint64_t word = i < 16 ? a : b;
      int shift = 60 - 4 * (i % 16);
      out[k++] = kHex[(word >> shift) & 15];
    }
  }

  // ---------------------------------------------------------------- connections

  // Starts a connection attempt: a lookup on the resolver thread (host names
  // are resolved afresh on every attempt: APNs rotates addresses), or at once
  // for an IP literal.
  void StartConnect(Conn& c, TimePoint now) {
    c.connect_deadline = now + milliseconds(opt_.connect_timeout_ms);
    c.addrs.clear();
    c.next_addr = 0;
    c.state = ConnState::kResolving;
    if (!resolver_) {
      Resolved(c, std::vector<std::string>{opt_.endpoint.host});
      return;
    }
    c.resolve_gen = ++resolve_gen_;
    {
      std::lock_guard<std::mutex> lock(resolver_->mu);
      // At most one job per slot: a lookup still queued for an earlier attempt
      // (behind a hung one) is replaced, so the job list stays bounded.
      auto& jobs = resolver_->jobs;
      jobs.erase(std::remove_if(jobs.begin(), jobs.end(),
                                [&](const ResolverShared::Job& j) { return j.conn == c.index; }),
                 jobs.end());
      jobs.push_back({c.index, c.resolve_gen});
    }
    resolver_->cv.notify_one();
  }

  // The lookup for c finished: connect to the first address (c.fatal on failure).
  void Resolved(Conn& c, Result<std::vector<std::string>> addrs) {
    if (!addrs.ok()) {
      c.fatal = "DNS: " + addrs.status().message();
      return;
    }
    for (const std::string& a : *addrs) {
      sockaddr_storage ss{};
      auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
      auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
      if (inet_pton(AF_INET, a.c_str(), &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(opt_.endpoint.port);
        c.addrs.emplace_back(ss, static_cast<socklen_t>(sizeof *a4));
      } else if (inet_pton(AF_INET6, a.c_str(), &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(opt_.endpoint.port);
        c.addrs.emplace_back(ss, static_cast<socklen_t>(sizeof *a6));
      }
    }
    c.state = ConnState::kConnecting;
    TryNextAddress(c, c.addrs.empty() ? "DNS: no usable address" : "no address");
  }

  // Starts a non-blocking TCP connect to the next resolved address.
  void TryNextAddress(Conn& c, std::string last_error) {
    if (c.fd >= 0) {
      close(c.fd);
      c.fd = -1;
    }
    while (c.next_addr < c.addrs.size()) {
      const auto& [ss, len] = c.addrs[c.next_addr++];
      int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        last_error = std::string("socket: ") + strerror(errno);
        continue;
      }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      c.fd = fd;
      if (connect(fd, reinterpret_cast<const sockaddr*>(&ss), len) == 0) {
        StartTls(c);
        return;
      }
      if (errno == EINPROGRESS) {
        c.state = ConnState::kConnecting;
        return;
      }
      last_error = std::string("connect: ") + strerror(errno);
      close(fd);
      c.fd = -1;
    }
    c.fatal = std::move(last_error);
  }

  void StartTls(Conn& c) {
    c.ssl.reset(SSL_new(ctx_));
    if (!c.ssl || SSL_set_fd(c.ssl.get(), c.fd) != 1) {
      c.fatal = "TLS setup: " + OpenSslErrors();
      return;
    }
    const std::string& host = opt_.endpoint.host;
    if (!host_is_ip_) SSL_set_tlsext_host_name(c.ssl.get(), host.c_str());  // SNI
    if (opt_.endpoint.verify_server) {
      int ok = host_is_ip_ ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c.ssl.get()), host.c_str())
                           : SSL_set1_host(c.ssl.get(), host.c_str());
      if (ok != 1) {
        c.fatal = "TLS setup: host name check: " + OpenSslErrors();
        return;
      }
    }
    SSL_set_connect_state(c.ssl.get());
    c.state = ConnState::kHandshaking;
    Handshake(c);
  }

  void Handshake(Conn& c) {
    ERR_clear_error();
    int r = SSL_connect(c.ssl.get());
    if (r != 1) {
      int err = SSL_get_error(c.ssl.get(), r);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        c.handshake_wants_write = err == SSL_ERROR_WANT_WRITE;
        return;
      }
      std::string why = "TLS handshake: ";
      long vr = SSL_get_verify_result(c.ssl.get());
      if (vr != X509_V_OK) why += std::string("server certificate: ") + X509_verify_cert_error_string(vr);
      else if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) why += errno ? strerror(errno) : "connection closed";
      else why += OpenSslErrors();
      ERR_clear_error();
      c.fatal = std::move(why);
      return;
    }
    const unsigned char* alpn = nullptr;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(c.ssl.get(), &alpn, &alpn_len);
    if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
      c.fatal = "server did not select ALPN h2";
      return;
    }
    if (nghttp2_session_client_new2(&c.session, callbacks_, &c, h2opt_) != 0) {
      c.fatal = "nghttp2 session: out of memory";
      return;
    }
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(c.session, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(c.session, NGHTTP2_FLAG_NONE, 0, kLocalWindow);
    c.state = ConnState::kReady;
    c.last_recv = Clock::now();
    c.wbuf.reserve(kWriteBatch * 2);
    log::Debug(kLog, "event=tls_ready conn={} host={} port={} version={}", c.index, opt_.endpoint.host,
               opt_.endpoint.port, SSL_get_version(c.ssl.get()));
  }

  void HandleIo(Conn& c, short revents) {
    switch (c.state) {
      case ConnState::kIdle:
      case ConnState::kResolving:
        return;
      case ConnState::kConnecting: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err != 0) {
          TryNextAddress(c, std::string("connect: ") + strerror(err));
          return;
        }
        if (!(revents & POLLOUT)) return;
        StartTls(c);
        return;
      }
      case ConnState::kHandshaking:
        Handshake(c);
        return;
      case ConnState::kReady:
        if (revents & (POLLIN | POLLHUP | POLLERR)) Read(c);
        if (c.fatal.empty() && (revents & POLLOUT)) {
          c.want_pollout = false;
          Flush(c);
        }
        return;
    }
  }

  void Read(Conn& c) {
    // Until the socket is drained: data left in OpenSSL's buffers would not wake poll().
    for (;;) {
      ERR_clear_error();
      int n = SSL_read(c.ssl.get(), rbuf_.get(), static_cast<int>(kReadChunk));
      if (n > 0) {
        c.last_recv = Clock::now();
        ssize_t rv = nghttp2_session_mem_recv(c.session, rbuf_.get(), static_cast<size_t>(n));
        if (rv < 0) {
          c.fatal = std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(rv));
          return;
        }
        continue;
      }
      int err = SSL_get_error(c.ssl.get(), n);
      if (err == SSL_ERROR_WANT_READ) return;
      if (err == SSL_ERROR_WANT_WRITE) {
        c.want_pollout = true;
        return;
      }
      c.tls_broken = err != SSL_ERROR_ZERO_RETURN;
      if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0))
        c.fatal = "connection closed by the server";
      else if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        c.fatal = std::string("read: ") + strerror(errno);
      else
        c.fatal = "TLS read: " + OpenSslErrors();
      ERR_clear_error();
      return;
    }
  }

  // Serialises everything nghttp2 has to send into wbuf and writes it with as
  // few SSL_write calls as possible.
  void Flush(Conn& c) {
    if (c.want_pollout) return;
    for (;;) {
      if (c.woff == c.wbuf.size()) {
        c.wbuf.clear();
        c.woff = 0;
      }
      while (c.wbuf.size() - c.woff < kWriteBatch) {
        const uint8_t* data = nullptr;
        ssize_t n = nghttp2_session_mem_send(c.session, &data);
        if (n < 0) {
          c.fatal = std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(n));
          return;
        }
        if (n == 0) break;
        c.wbuf.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
      }
      if (c.woff == c.wbuf.size()) return;
      ERR_clear_error();
      int n = SSL_write(c.ssl.get(), c.wbuf.data() + c.woff, static_cast<int>(c.wbuf.size() - c.woff));
      if (n > 0) {
        c.woff += static_cast<size_t>(n);
        continue;
      }
      int err = SSL_get_error(c.ssl.get(), n);
      if (err == SSL_ERROR_WANT_WRITE) {
        c.want_pollout = true;
        return;
      }
      if (err == SSL_ERROR_WANT_READ) return;  // retried after the next read
      c.tls_broken = true;
      if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        c.fatal = std::string("write: ") + (errno ? strerror(errno) : "connection closed");
      else
        c.fatal = "TLS write: " + OpenSslErrors();
      ERR_clear_error();
      return;
    }
  }

  // Closes c (outside nghttp2 callbacks), re-queues its unanswered requests and
  // schedules the next attempt.
  void Close(Conn& c) {
    std::string reason = c.fatal.empty() ? std::string("closed") : std::move(c.fatal);
    c.fatal.clear();
    bool established = c.state == ConnState::kReady && c.settings_received;
    TimePoint now = Clock::now();
    // Unanswered requests, in submit order. Before the server's SETTINGS
    // (its connection preface) the server has not taken the connection (e.g.
    // client certificate rejected after a TLS 1.3 handshake): not a send.
    while (Pending* p = c.head) {
      c.Unlink(p);
      std::unique_ptr<Pending> owned(p);
      if (owned->cancelled) continue;
      if (c.settings_received && owned->stream_id > c.goaway_last_stream_id) {
        // Above the GOAWAY's last-stream-id: never processed, not a send.
        owned->sends--;
        goaway_refused_.fetch_add(1, std::memory_order_relaxed);
        Requeue(std::move(owned), "refused by GOAWAY");
      } else if (c.settings_received) {
        Requeue(std::move(owned), "connection lost: " + reason);
      } else if (owned->deadline <= now) {
        Finish(std::move(owned), ApnsFailure::kTimeout, "timeout");
      } else {
        owned->sends--;
        requeue_.push_back(std::move(owned));
      }
    }
    in_flight_.fetch_sub(c.in_flight, std::memory_order_relaxed);
    c.in_flight = 0;
    c.earliest_deadline = TimePoint::max();
    if (c.session) {
      nghttp2_session_del(c.session);
      c.session = nullptr;
    }
    if (c.ssl && established && !c.tls_broken) SSL_shutdown(c.ssl.get());  // best effort close_notify
    c.ssl.reset();
    if (c.fd >= 0) close(c.fd);
    c.fd = -1;
    c.wbuf.clear();
    c.woff = 0;
    c.want_pollout = false;
    c.handshake_wants_write = false;

    // Backoff, per connection slot (one bad address or connection does not
    // hold the others back), capped at connect_backoff_max_ms so that a server
    // that comes back is reached within seconds: a connection the server
    // answered on resets it; anything else (connect failure, or a connection
    // closed before any answer, e.g. a client certificate rejected after a
    // TLS 1.3 handshake) waits and doubles it.
    if (c.had_response) {
      c.backoff_ms = opt_.connect_backoff_initial_ms;
      log::Info(kLog, "event=disconnected conn={} reason=\"{}\"", c.index, reason);
    } else {
      std::uniform_real_distribution<double> jitter(0.5, 1.0);
      auto delay = static_cast<int64_t>(static_cast<double>(c.backoff_ms) * jitter(rng_));
      c.next_attempt = now + milliseconds(delay);
      c.backoff_ms = std::min(c.backoff_ms * 2, opt_.connect_backoff_max_ms);
      if (!established) connect_failures_.fetch_add(1, std::memory_order_relaxed);
      log::Warn(kLog, "event={} conn={} host={} port={} reason=\"{}\" retry_in_ms={}",
                established ? "disconnected" : "connect_failed", c.index, opt_.endpoint.host,
                opt_.endpoint.port, reason, delay);
    }
    c.state = ConnState::kIdle;
    c.settings_received = c.draining = c.had_response = c.ping_outstanding = c.tls_broken = false;
    c.goaway_last_stream_id = INT32_MAX;
    run_again_ = true;
  }

  void Shutdown() {
    for (auto& cp : conns_) {
      Conn& c = *cp;
      if (c.state == ConnState::kReady && c.fatal.empty()) {
        // Best effort GOAWAY, while the streams' requests are still alive
        // (nghttp2 refers to them until the session is deleted in Close).
        nghttp2_session_terminate_session(c.session, NGHTTP2_NO_ERROR);
        Flush(c);
      }
      while (Pending* p = c.head) {
        c.Unlink(p);
        std::unique_ptr<Pending> owned(p);
        if (!owned->cancelled) Finish(std::move(owned), ApnsFailure::kShutdown, "client shut down");
      }
      c.fatal = "client shut down";
      c.had_response = true;  // no backoff bookkeeping or warning on the way out
      if (c.state != ConnState::kIdle) Close(c);
    }
    for (auto& p : requeue_) Finish(std::move(p), ApnsFailure::kShutdown, "client shut down");
    requeue_.clear();
    for (auto& p : queue_) Finish(std::move(p), ApnsFailure::kShutdown, "client shut down");
    queue_.clear();
    for (;;) {
      std::vector<std::unique_ptr<Pending>> rest;
      {
        std::lock_guard<std::mutex> lock(mu_);
        rest.swap(incoming_);
      }
      if (rest.empty()) break;
      for (auto& p : rest) {
        ApnsFailure failure = p->reject.empty() ? ApnsFailure::kShutdown : p->reject_failure;
        std::string why = p->reject.empty() ? "client shut down" : std::move(p->reject);
        Finish(std::move(p), failure, std::move(why));
      }
    }
    queued_.store(0);
    in_flight_.store(0);
  }

  // ---------------------------------------------------------------- nghttp2 callbacks

  static Pending* StreamPending(nghttp2_session* s, int32_t stream_id) {
    return static_cast<Pending*>(nghttp2_session_get_stream_user_data(s, stream_id));
  }

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source* source, void*) {
    auto* p = static_cast<Pending*>(source->ptr);
    std::string_view parts[3] = {kBodyPrefix, p->magic_json(), kBodySuffix};
    size_t off = p->body_sent, written = 0;
    for (std::string_view part : parts) {
      if (off >= part.size()) {
        off -= part.size();
        continue;
      }
      size_t n = std::min(part.size() - off, length - written);
      memcpy(buf + written, part.data() + off, n);
      written += n;
      off = 0;
      if (written == length) break;
    }
    p->body_sent += written;
    if (p->body_sent >= p->body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(written);
  }

  static int OnHeader(nghttp2_session* s, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t, void*) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Pending* p = StreamPending(s, frame->hd.stream_id);
    if (!p || p->cancelled) return 0;
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":status") {
      int status = 0;
      for (char ch : v) status = status * 10 + (ch - '0');  // nghttp2 validated 3 digits
      if (status >= 200) p->resp.status = status;          // ignore 1xx interim responses
    } else if (n == "apns-id") {
      p->resp.apns_id.assign(v);
    }
    return 0;
  }

  static int OnDataChunk(nghttp2_session* s, uint8_t, int32_t stream_id, const uint8_t* data, size_t len,
                         void*) {
    Pending* p = StreamPending(s, stream_id);
    if (!p || p->cancelled) return 0;
    size_t room = kMaxErrorBody - std::min(kMaxErrorBody, p->body.size());
    p->body.append(reinterpret_cast<const char*>(data), std::min(room, len));
    return 0;
  }

  static int OnStreamClose(nghttp2_session* s, int32_t stream_id, uint32_t error_code, void* user) {
    auto& c = *static_cast<Conn*>(user);
    ClientImpl& self = *c.client;
    Pending* p = StreamPending(s, stream_id);
    if (!p) return 0;
    c.in_flight--;
    self.in_flight_.fetch_sub(1, std::memory_order_relaxed);
    c.Unlink(p);
    std::unique_ptr<Pending> owned(p);
    if (owned->cancelled) return 0;
    if (owned->resp.status != 0) {
      c.had_response = true;
      self.FinishAnswered(std::move(owned));
    } else if (stream_id > c.goaway_last_stream_id) {
      // Above the GOAWAY's last-stream-id: the server never processed it, so
      // this send does not count against max_resends.
      owned->sends--;
      self.goaway_refused_.fetch_add(1, std::memory_order_relaxed);
      self.Requeue(std::move(owned), "refused by GOAWAY");
    } else {
      self.Requeue(std::move(owned), std::string("stream closed without a response: ") +
                                         nghttp2_http2_strerror(error_code));
    }
    return 0;
  }

  static int OnFrameRecv(nghttp2_session* s, const nghttp2_frame* frame, void* user) {
    auto& c = *static_cast<Conn*>(user);
    ClientImpl& self = *c.client;
    switch (frame->hd.type) {
      case NGHTTP2_SETTINGS: {
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) break;
        uint32_t max = nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        self.max_streams_seen_.store(std::min(max, kMaxStreamsCap), std::memory_order_relaxed);
        if (!c.settings_received) {
          c.settings_received = true;
          self.connects_.fetch_add(1, std::memory_order_relaxed);
          log::Info(kLog, "event=connected conn={} host={} port={} max_concurrent_streams={}", c.index,
                    self.opt_.endpoint.host, self.opt_.endpoint.port, max);
        } else {
          log::Debug(kLog, "event=settings conn={} max_concurrent_streams={}", c.index, max);
        }
        break;
      }
      case NGHTTP2_GOAWAY: {
        c.draining = true;
        self.goaways_.fetch_add(1, std::memory_order_relaxed);
        const nghttp2_goaway& g = frame->goaway;
        // nghttp2 closes the streams above it right after this callback.
        c.goaway_last_stream_id = std::min(c.goaway_last_stream_id, g.last_stream_id);
        log::Info(kLog, "event=goaway conn={} error_code={} last_stream_id={} debug=\"{}\"", c.index,
                  nghttp2_http2_strerror(g.error_code), g.last_stream_id,
                  Printable(std::string_view(reinterpret_cast<const char*>(g.opaque_data), g.opaque_data_len), 200));
        break;
      }
      case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) c.ping_outstanding = false;
        break;
      default:
        break;
    }
    return 0;
  }

  // ---------------------------------------------------------------- state

  const ApnsClientOptions opt_;
  SSL_CTX* const ctx_;  // owned
  std::string authority_;
  bool host_is_ip_ = false;
  int efd_ = -1;
  nghttp2_session_callbacks* callbacks_ = nullptr;
  nghttp2_option* h2opt_ = nullptr;
  std::thread thread_;

  // Shared with Send (under mu_).
  std::mutex mu_;
  std::vector<std::unique_ptr<Pending>> incoming_;
  uint64_t next_seq_ = 0;
  bool stopping_ = false;
  std::atomic<bool> wake_pending_{false};

  // Counters (read by stats()).
  std::atomic<uint64_t> connects_{0}, connect_failures_{0}, goaways_{0}, resent_{0}, pings_{0},
      goaway_refused_{0};
  std::atomic<uint64_t> in_flight_{0};
  std::atomic<size_t> queued_{0};
  std::atomic<uint32_t> max_streams_seen_{0};

  // I/O thread only.
  std::vector<std::unique_ptr<Conn>> conns_;
  std::deque<std::unique_ptr<Pending>> queue_;  // sorted by seq
  std::vector<std::unique_ptr<Pending>> requeue_;
  std::vector<std::unique_ptr<Pending>> drained_;
  uint64_t resolve_gen_ = 0;
  bool run_again_ = false;  // a connection closed: run the loop once more before sleeping
  std::mt19937_64 rng_;
  std::string path_buf_;
  std::unique_ptr<uint8_t[]> rbuf_;

  // The resolver (null for an IP literal without a custom resolver).
  std::shared_ptr<ResolverShared> resolver_;
  std::thread resolver_thread_;
};

int NoPassphrase(char*, int, int, void*) { return 0; }

// Builds the TLS client context: TLS >= 1.2, ALPN h2, client certificate
// (+ chain) and key from memory, server verification. The key is never logged.
Result<SSL_CTX*> MakeContext(const ApnsClientOptions& o) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return Status::Internal("apns: SSL_CTX_new: " + OpenSslErrors());
  auto fail = [ctx](Status s) {
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return s;
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // HTTP/2 (RFC 9113 9.2.2) requires ephemeral key exchange and AEAD on TLS 1.2.
  if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL") != 1)
    return fail(Status::Internal("apns: cipher list: " + OpenSslErrors()));
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  if (SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof kAlpn) != 0)  // 0 means success here
    return fail(Status::Internal("apns: ALPN: " + OpenSslErrors()));
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, kReadChunk);

  // Client certificate and its chain.
  {
    BIO* bio = BIO_new_mem_buf(o.cert_pem.data(), static_cast<int>(o.cert_pem.size()));
    X509* leaf = bio ? PEM_read_bio_X509(bio, nullptr, NoPassphrase, nullptr) : nullptr;
    if (!leaf) {
      BIO_free(bio);
      return fail(Status::InvalidArgument("apns: cert_pem: no PEM certificate"));
    }
    int ok = SSL_CTX_use_certificate(ctx, leaf);
    X509_free(leaf);
    if (ok != 1) {
      BIO_free(bio);
      return fail(Status::InvalidArgument("apns: cert_pem: " + OpenSslErrors()));
    }
    while (X509* extra = PEM_read_bio_X509(bio, nullptr, NoPassphrase, nullptr)) {
      if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) X509_free(extra);
    }
    ERR_clear_error();  // end of PEM input
    BIO_free(bio);
  }
  {
    BIO* bio = BIO_new_mem_buf(o.key_pem.data(), static_cast<int>(o.key_pem.size()));
    EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio, nullptr, NoPassphrase, nullptr) : nullptr;
    BIO_free(bio);
    if (!key) return fail(Status::InvalidArgument("apns: key_pem: no unencrypted PEM private key"));
    int ok = SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
    if (ok != 1 || SSL_CTX_check_private_key(ctx) != 1)
      return fail(Status::InvalidArgument("apns: key_pem: private key does not match the certificate"));
  }

  if (o.endpoint.verify_server) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if (!o.endpoint.ca_pem.empty()) {
      X509_STORE* store = SSL_CTX_get_cert_store(ctx);
      BIO* bio = BIO_new_mem_buf(o.endpoint.ca_pem.data(), static_cast<int>(o.endpoint.ca_pem.size()));
      int added = 0;
      while (X509* ca = bio ? PEM_read_bio_X509(bio, nullptr, NoPassphrase, nullptr) : nullptr) {
        if (X509_STORE_add_cert(store, ca) == 1) ++added;
        X509_free(ca);
      }
      BIO_free(bio);
      ERR_clear_error();
      if (added == 0) return fail(Status::InvalidArgument("apns: endpoint.ca_pem: no PEM certificate"));
    }
    if (!o.endpoint.ca_file.empty() &&
        SSL_CTX_load_verify_locations(ctx, o.endpoint.ca_file.c_str(), nullptr) != 1)
      return fail(Status::InvalidArgument("apns: endpoint.ca_file '" + o.endpoint.ca_file +
                                          "': " + OpenSslErrors()));
    if (o.endpoint.ca_pem.empty() && o.endpoint.ca_file.empty() && SSL_CTX_set_default_verify_paths(ctx) != 1)
      return fail(Status::Internal("apns: system trust store: " + OpenSslErrors()));
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  return ctx;
}

}  // namespace

Result<std::unique_ptr<ApnsClient>> ApnsClient::Create(const ApnsClientOptions& o) {
  if (o.endpoint.host.empty()) return Status::InvalidArgument("apns: endpoint.host is empty");
  if (o.endpoint.port == 0) return Status::InvalidArgument("apns: endpoint.port is 0");
  if (o.connections < 1 || o.connections > 64)
    return Status::InvalidArgument("apns: connections must be 1..64");
  if (o.ping_after_idle_ms <= 0 || o.ping_timeout_ms <= 0 || o.request_timeout_ms <= 0 ||
      o.connect_timeout_ms <= 0)
    return Status::InvalidArgument("apns: ping_after_idle_ms, ping_timeout_ms, request_timeout_ms and "
                                   "connect_timeout_ms must be > 0");
  if (o.connect_backoff_initial_ms <= 0 || o.connect_backoff_max_ms < o.connect_backoff_initial_ms)
    return Status::InvalidArgument("apns: connect_backoff_initial_ms must be > 0 and <= connect_backoff_max_ms");
  if (o.max_queued == 0) return Status::InvalidArgument("apns: max_queued must be > 0");
  if (o.max_resends < 0) return Status::InvalidArgument("apns: max_resends must be >= 0");
  Result<SSL_CTX*> ctx = MakeContext(o);
  if (!ctx.ok()) return ctx.status();
  if (!o.endpoint.verify_server)
    log::Warn(kLog, "event=apns_insecure host={} detail=\"server certificate not verified\"", o.endpoint.host);
  auto client = std::make_unique<ClientImpl>(o, *ctx);
  Status st = client->Start();
  if (!st.ok()) return st;
  return std::unique_ptr<ApnsClient>(std::move(client));
}

}  // namespace orchard::push
