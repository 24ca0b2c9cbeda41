#include "apns_mock/mock_apns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <future>
#include <mutex>
#include <queue>
#include <random>
#include <string_view>
#include <thread>
#include <unordered_map>

namespace orchard::testing {
namespace {

constexpr size_t kMaxPayload = 4096;
constexpr size_t kReadBuffer = 32 * 1024;  // > one TLS record
constexpr size_t kWriteBatch = 64 * 1024;  // serialize this much before SSL_write
constexpr int kReadsPerEvent = 8;          // fairness between connections
constexpr int64_t kCloseGraceMs = 2000;    // closing connections that cannot flush
constexpr int64_t kLingerMs = 1000;        // drain the peer's bytes after our FIN
constexpr uint64_t kListenId = 0, kWakeId = 1;
constexpr char kShutdownDebug[] = R"({"reason":"Shutdown"})";

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void LogError(const std::string& what) {
  char buf[256] = "";
  unsigned long e = ERR_get_error();
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  std::fprintf(stderr, "mock_apns: %s%s%s\n", what.c_str(), buf[0] ? ": " : "", buf);
}

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool ValidToken(std::string_view t) {
  if (t.size() < 32 || t.size() > 200 || t.size() % 2 != 0) return false;
  return std::all_of(t.begin(), t.end(), IsHex);
}

bool ValidUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !IsHex(s[i])) return false;
  }
  return true;
}

bool ParseInt(std::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Just enough JSON: validates one document and extracts the top-level "mdm"
// string. Depth-limited; \u escapes are decoded without pairing surrogates.
class JsonScan {
 public:
  explicit JsonScan(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}

  // True if the text is a JSON object with a string member "mdm".
  bool MdmObject(std::string* magic) {
    Ws();
    if (p_ >= end_ || *p_ != '{') return false;
    bool found = false;
    if (!Object(magic, &found)) return false;
    Ws();
    return p_ == end_ && found;
  }

 private:
  void Ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool Literal(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word)
      return false;
    p_ += word.size();
    return true;
  }

  static void Utf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  bool String(std::string* out) {
    if (p_ >= end_ || *p_ != '"') return false;
    ++p_;
    while (p_ < end_) {
      char c = *p_++;
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        if (out) out->push_back(c);
        continue;
      }
      if (p_ >= end_) return false;
      char e = *p_++;
      char v;
      switch (e) {
        case '"':
        case '\\':
        case '/':
          v = e;
          break;
        case 'b':
          v = '\b';
          break;
        case 'f':
          v = '\f';
          break;
        case 'n':
          v = '\n';
          break;
        case 'r':
          v = '\r';
          break;
        case 't':
          v = '\t';
          break;
        case 'u': {
          if (end_ - p_ < 4) return false;
          uint32_t cp = 0;
          for (int i = 0; i < 4; ++i) {
            char h = *p_++;
            if (!IsHex(h)) return false;
            cp = cp * 16 + static_cast<uint32_t>(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
          }
          if (out) Utf8(cp, out);
          continue;
        }
        default:
          return false;
      }
      if (out) out->push_back(v);
    }
    return false;
  }

  bool Number() {
    const char* start = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    const char* digits = p_;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    if (p_ == digits) return false;
    if (p_ < end_ && *p_ == '.') {
      const char* frac = ++p_;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      if (p_ == frac) return false;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      const char* exp = p_;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      if (p_ == exp) return false;
    }
    return p_ > start;
  }

  bool Value() {
    Ws();
    if (p_ >= end_) return false;
    switch (*p_) {
      case '{':
        return Object(nullptr, nullptr);
      case '[':
        return Array();
      case '"':
        return String(nullptr);
      case 't':
        return Literal("true");
      case 'f':
        return Literal("false");
      case 'n':
        return Literal("null");
      default:
        return Number();
    }
  }

  bool Array() {
    if (++depth_ > 32) return false;
    ++p_;  // '['
    Ws();
    if (p_ < end_ && *p_ == ']') {
      ++p_;
      --depth_;
      return true;
    }
    for (;;) {
      if (!Value()) return false;
      Ws();
      if (p_ >= end_) return false;
      if (*p_ == ']') break;
      if (*p_ != ',') return false;
      ++p_;
    }
    ++p_;
    --depth_;
    return true;
  }

  // magic/found non-null only for the top-level object.
  bool Object(std::string* magic, bool* found) {
    if (++depth_ > 32) return false;
    ++p_;  // '{'
    Ws();
    if (p_ < end_ && *p_ == '}') {
      ++p_;
      --depth_;
      return true;
    }
    std::string key;
    for (;;) {
      Ws();
      key.clear();
      if (!String(&key)) return false;
      Ws();
      if (p_ >= end_ || *p_ != ':') return false;
      ++p_;
      Ws();
      if (found && key == "mdm" && p_ < end_ && *p_ == '"') {
        magic->clear();
        if (!String(magic)) return false;
        *found = true;
      } else if (!Value()) {
        return false;
      }
      Ws();
      if (p_ >= end_) return false;
      if (*p_ == '}') break;
      if (*p_ != ',') return false;
      ++p_;
    }
    ++p_;
    --depth_;
    return true;
  }

  const char* p_;
  const char* end_;
  int depth_ = 0;
};

// Bits for DuplicateHeaders detection.
enum : uint32_t {
  kHdrTopic = 1,
  kHdrPushType = 2,
  kHdrPriority = 4,
  kHdrExpiration = 8,
  kHdrId = 16,
  kHdrCollapse = 32,
};

// One request stream. Pooled per connection so the strings keep their capacity.
struct Stream {
  int32_t id = 0;
  std::string method, path, topic, push_type, priority, expiration, apns_id;
  uint32_t seen = 0;
  bool duplicate = false;
  bool refused = false;
  std::string body;
  size_t body_size = 0;
  // The answer, decided when the request is complete.
  int status = 0;
  std::string status_text, reason, resp_apns_id, resp_body, push_magic;
  size_t resp_off = 0;
  size_t record = SIZE_MAX;

  void Reset(int32_t sid) {
    id = sid;
    method.clear(), path.clear(), topic.clear(), push_type.clear(), priority.clear();
    expiration.clear(), apns_id.clear(), body.clear(), status_text.clear(), reason.clear();
    resp_apns_id.clear(), resp_body.clear(), push_magic.clear();
    seen = 0;
    duplicate = refused = false;
    body_size = resp_off = 0;
    status = 0;
    record = SIZE_MAX;
  }
};

class MockApnsImpl;

struct Conn {
  MockApnsImpl* owner = nullptr;
  uint64_t id = 0;
  int fd = -1;
  SSL* ssl = nullptr;
  nghttp2_session* session = nullptr;
  bool handshake_done = false;
  std::string topic;  // client certificate subject UID
  std::string out;    // serialized frames not yet accepted by SSL_write
  size_t out_off = 0;
  size_t retry_len = 0;  // SSL_write must be retried with this length
  bool write_blocked = false, read_wants_write = false;
  bool dirty = false;
  bool finishing = false;      // close after this loop iteration (see Finish)
  bool close_notify = false;   // ... sending TLS close_notify first
  bool lingering = false;      // FIN sent; discarding input until EOF or deadline
  bool dead = false;           // remove now
  bool frozen = false;         // DropConnectionsAfter: answer nothing, flush, close
  bool goaway = false;         // GOAWAY submitted
  int32_t cutoff = INT32_MAX;  // streams above are never answered
  int64_t close_deadline = 0;  // 0 = not closing
  uint32_t epoll_mask = 0;
  std::vector<int32_t> delayed;                  // streams waiting on a timer
  std::vector<std::unique_ptr<Stream>> streams;  // owns every Stream of this connection
  std::vector<Stream*> free_streams;

  ~Conn() {
    if (session) nghttp2_session_del(session);
    if (ssl) SSL_free(ssl);
    if (fd >= 0) ::close(fd);
  }

  Stream* Acquire(int32_t sid) {
    Stream* s;
    if (free_streams.empty()) {
      streams.push_back(std::make_unique<Stream>());
      s = streams.back().get();
    } else {
      s = free_streams.back();
      free_streams.pop_back();
    }
    s->Reset(sid);
    return s;
  }
};

struct Timer {
  int64_t due;
  uint64_t seq;
  uint64_t conn;
  int32_t stream;
  bool operator>(const Timer& o) const { return due != o.due ? due > o.due : seq > o.seq; }
};

class MockApnsImpl final : public MockApns {
 public:
  explicit MockApnsImpl(const MockApnsOptions& options)
      : options_(options),
        max_streams_(options.max_concurrent_streams),
        rng_(std::random_device{}()) {}

  ~MockApnsImpl() override {
    stop_.store(true);
    Wake();
    if (thread_.joinable()) thread_.join();
    conns_.clear();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    if (callbacks_) nghttp2_session_callbacks_del(callbacks_);
    if (ctx_) SSL_CTX_free(ctx_);
  }

  bool Init();
  void StartThread() {
    thread_ = std::thread([this] { Run(); });
  }

  uint16_t port() const override { return port_; }  // the same after SetListening(true)

  void SetUnregistered(const std::string& token_hex, int64_t timestamp_ms) override {
    std::lock_guard<std::mutex> lock(mu_);
    unregistered_[Lower(token_hex)] = timestamp_ms;
  }
  void FailNext(int count, int status, const std::string& reason) override {
    std::lock_guard<std::mutex> lock(mu_);
    fail_count_ = count;
    fail_status_ = status;
    fail_reason_ = reason;
  }
  void SetFailRate(double probability, int status, const std::string& reason) override {
    std::lock_guard<std::mutex> lock(mu_);
    fail_rate_ = probability;
    rate_status_ = status;
    rate_reason_ = reason;
  }
  void GoawayAfter(int streams) override {
    if (streams > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      goaway_after_ = streams;
      return;
    }
    Post([this] {
      for (auto& [id, c] : conns_) {
        if (c->session && !Closing(*c) && !c->goaway && !c->frozen)
          StartGoaway(*c, nghttp2_session_get_last_proc_stream_id(c->session));
      }
    });
  }
  void SetMaxConcurrentStreams(uint32_t n) override {
    max_streams_.store(n);
    Post([this, n] {
      for (auto& [id, c] : conns_) {
        if (!c->session || Closing(*c)) continue;
        nghttp2_settings_entry iv{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, n};
        nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, &iv, 1);
        MarkDirty(*c);
      }
    });
  }
  void DropConnectionsAfter(int streams) override {
    if (streams > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      drop_after_ = streams;
      return;
    }
    Post([this] { DropAll(); });
  }
  void SetDelayMs(int64_t ms) override {
    std::lock_guard<std::mutex> lock(mu_);
    delay_ms_ = ms > 0 ? ms : 0;
  }
  bool SetListening(bool on) override;
  void RefuseStreamsNext(int count) override {
    std::lock_guard<std::mutex> lock(mu_);
    refuse_count_ = count;
  }
  void OnDelivered(std::function<void(const MockPush&)> fn) override {
    auto p =
        fn ? std::make_shared<const std::function<void(const MockPush&)>>(std::move(fn)) : nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    on_delivered_ = std::move(p);
  }
  std::vector<MockPush> Received() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return records_;
  }
  uint64_t connections_accepted() const override { return accepted_.load(); }
  uint64_t handshake_failures() const override { return handshake_failures_.load(); }
  uint64_t open_connections() const override { return open_.load(); }
  uint64_t requests_answered() const override { return answered_.load(); }

  // nghttp2 callbacks (I/O thread).
  static int OnBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user);
  static int OnHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                      void* user);
  static int OnDataChunk(nghttp2_session* session, uint8_t flags, int32_t stream_id,
                         const uint8_t* data, size_t len, void* user);
  static int OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user);
  static int OnStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                           void* user);
  static ssize_t ReadBody(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void* user);

 private:
  void Run();
  void Wake() {
    uint64_t one = 1;
    if (wake_fd_ >= 0) {
      [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
    }
  }
  void Post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      commands_.push_back(std::move(fn));
    }
    Wake();
  }
  void RunCommands();
  bool OpenListener(uint16_t port);  // I/O thread, or Init before it starts
  void Accept();
  void HandleIo(Conn& c);
  bool Handshake(Conn& c);
  void DoRead(Conn& c);
  void DoWrite(Conn& c);
  void MaybeFinish(Conn& c);
  void UpdateInterest(Conn& c);
  void FlushDirty();
  void RunTimers();
  int PollTimeout();
  void MarkDirty(Conn& c) {
    if (!c.dirty) {
      c.dirty = true;
      dirty_.push_back(c.id);
    }
  }
  // Orderly end: optional close_notify, FIN, then read and discard what the
  // peer still sends (closing with unread input would send RST, which can
  // destroy our last frames before the peer reads them).
  void Finish(Conn& c, bool close_notify) {
    if (c.dead || c.finishing) return;
    c.finishing = true;
    c.close_notify = close_notify;
    MarkDirty(c);
  }
  // Immediate close (peer gone, I/O error, deadline).
  void Kill(Conn& c) {
    c.dead = true;
    MarkDirty(c);
  }
  bool Closing(const Conn& c) const { return c.dead || c.finishing || c.lingering; }
  void Linger(Conn& c);

  void OnRequestHeaders(Conn& c, Stream& s);
  void OnRequest(Conn& c, Stream& s);
  void Validate(const Conn& c, Stream& s, std::string_view* token);
  void Respond(Conn& c, Stream& s);
  void StartGoaway(Conn& c, int32_t last_stream_id);
  void DropAll();
  void GenerateUuid(std::string* out);

  const MockApnsOptions options_;
  std::atomic<uint32_t> max_streams_;
  SSL_CTX* ctx_ = nullptr;
  nghttp2_session_callbacks* callbacks_ = nullptr;
  int listen_fd_ = -1, epoll_fd_ = -1, wake_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> accepted_{0}, handshake_failures_{0}, open_{0}, answered_{0};

  // I/O thread only.
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  uint64_t next_conn_id_ = 2;
  std::vector<uint64_t> dirty_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  uint64_t timer_seq_ = 0;
  std::mt19937_64 rng_;
  unsigned char read_buf_[kReadBuffer];

  // Shared with the setters.
  mutable std::mutex mu_;
  std::vector<std::function<void()>> commands_;
  std::unordered_map<std::string, int64_t> unregistered_;
  int fail_count_ = 0, fail_status_ = 0;
  std::string fail_reason_;
  double fail_rate_ = 0;
  int rate_status_ = 0;
  std::string rate_reason_;
  int goaway_after_ = 0, drop_after_ = 0, refuse_count_ = 0;
  int64_t delay_ms_ = 0;
  std::shared_ptr<const std::function<void(const MockPush&)>> on_delivered_;
  std::vector<MockPush> records_;
};

// ---- set-up -----------------------------------------------------------------

int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  unsigned char* sel = nullptr;
  if (nghttp2_select_next_protocol(&sel, outlen, in, inlen) != 1) return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

bool LoadCertChain(SSL_CTX* ctx, const std::string& cert_pem, const std::string& key_pem) {
  BIO* bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* leaf = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  bool ok = leaf && SSL_CTX_use_certificate(ctx, leaf) == 1;
  X509_free(leaf);
  while (ok) {
    X509* extra = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (!extra) break;
    ok = SSL_CTX_add0_chain_cert(ctx, extra) == 1;
    if (!ok) X509_free(extra);
  }
  BIO_free(bio);
  ERR_clear_error();  // end of PEM input
  if (!ok) return false;
  bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ok = key && SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
  EVP_PKEY_free(key);
  return ok;
}

bool LoadClientCas(SSL_CTX* ctx, const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  STACK_OF(X509_NAME)* names = sk_X509_NAME_new_null();
  int count = 0;
  while (X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    if (X509_STORE_add_cert(store, ca) == 1) ++count;
    sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(ca)));
    X509_free(ca);
  }
  BIO_free(bio);
  ERR_clear_error();
  SSL_CTX_set_client_CA_list(ctx, names);
  return count > 0;
}

bool MockApnsImpl::Init() {
  ctx_ = SSL_CTX_new(TLS_server_method());
  if (!ctx_) return LogError("SSL_CTX_new"), false;
  SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
  SSL_CTX_set_options(
      ctx_, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // RFC 9113 9.2.2: TLS 1.2 with h2 needs ephemeral key exchange and AEAD.
  SSL_CTX_set_cipher_list(ctx_, "ECDHE+AESGCM:ECDHE+CHACHA20");
  SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_num_tickets(ctx_, 0);
  static const unsigned char kSid[] = "orchard-mock-apns";
  SSL_CTX_set_session_id_context(ctx_, kSid, sizeof kSid - 1);
  SSL_CTX_set_alpn_select_cb(ctx_, SelectAlpn, nullptr);
  if (!LoadCertChain(ctx_, options_.cert_pem, options_.key_pem))
    return LogError("server certificate/key"), false;
  if (options_.require_client_cert) {
    if (!LoadClientCas(ctx_, options_.client_ca_pem))
      return LogError("client_ca_pem holds no certificate"), false;
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }

  nghttp2_session_callbacks_new(&callbacks_);
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks_, OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(callbacks_, OnHeader);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks_, OnDataChunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks_, OnFrameRecv);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks_, OnStreamClose);

  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) return LogError("epoll/eventfd"), false;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeId;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  return OpenListener(options_.port);
}

bool MockApnsImpl::OpenListener(uint16_t port) {
  sockaddr_storage addr{};
  socklen_t addr_len;
  auto* a4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* a6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, options_.host.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    addr_len = sizeof *a4;
  } else if (inet_pton(AF_INET6, options_.host.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    addr_len = sizeof *a6;
  } else {
    return LogError("host must be a numeric address: " + options_.host), false;
  }
  listen_fd_ = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0 ||
      ::listen(listen_fd_, 256) != 0) {
    LogError(std::string("listen: ") + std::strerror(errno));
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    return false;
  }
  addr_len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &addr_len);
  port_ = ntohs(addr.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenId;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  return true;
}

bool MockApnsImpl::SetListening(bool on) {
  std::promise<bool> done;
  std::future<bool> result = done.get_future();
  Post([this, on, &done] {
    bool ok = true;
    if (!on && listen_fd_ >= 0) {
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
      ::close(listen_fd_);  // new connections are refused from now on
      listen_fd_ = -1;
      DropAll();
    } else if (on && listen_fd_ < 0) {
      ok = OpenListener(port_);
    }
    done.set_value(ok);
  });
  return result.get();
}

// ---- I/O loop ---------------------------------------------------------------

void MockApnsImpl::Run() {
  // Writes to a closed peer must fail with EPIPE, not kill the process.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);

  epoll_event events[64];
  while (!stop_.load()) {
    int n = epoll_wait(epoll_fd_, events, 64, PollTimeout());
    if (n < 0 && errno != EINTR) {
      LogError(std::string("epoll_wait: ") + std::strerror(errno));
      break;
    }
    RunCommands();  // before reading: a setter called before a request was sent wins
    for (int i = 0; i < n; ++i) {
      uint64_t id = events[i].data.u64;
      if (id == kListenId) {
        Accept();
      } else if (id == kWakeId) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(wake_fd_, &v, sizeof v);
        RunCommands();
      } else if (auto it = conns_.find(id);
                 it != conns_.end() && !it->second->dead && !it->second->finishing) {
        if (it->second->lingering) {
          Linger(*it->second);
        } else {
          HandleIo(*it->second);
        }
      }
    }
    RunTimers();
    int64_t now = NowMs();
    for (auto& [id, c] : conns_) {
      if (c->close_deadline != 0 && now >= c->close_deadline) Kill(*c);
    }
    FlushDirty();
  }
}

int MockApnsImpl::PollTimeout() {
  int64_t timeout = -1;
  if (!timers_.empty()) timeout = std::max<int64_t>(0, timers_.top().due - NowMs());
  for (auto& [id, c] : conns_) {
    if (c->close_deadline != 0) {
      timeout = timeout < 0 ? 100 : std::min<int64_t>(timeout, 100);
      break;
    }
  }
  return static_cast<int>(timeout);
}

void MockApnsImpl::RunCommands() {
  std::vector<std::function<void()>> commands;
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands.swap(commands_);
  }
  for (auto& fn : commands) fn();
}

void MockApnsImpl::Accept() {
  for (;;) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a transient error: the next event retries
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Conn>();
    c->owner = this;
    c->id = next_conn_id_++;
    c->fd = fd;
    c->ssl = SSL_new(ctx_);
    if (!c->ssl) {
      LogError("SSL_new");
      continue;
    }
    SSL_set_fd(c->ssl, fd);
    SSL_set_accept_state(c->ssl);
    epoll_event ev{};
    ev.events = c->epoll_mask = EPOLLIN;
    ev.data.u64 = c->id;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    open_.fetch_add(1);
    Conn& ref = *c;
    conns_.emplace(c->id, std::move(c));
    HandleIo(ref);  // the ClientHello is often already there
  }
}

void MockApnsImpl::HandleIo(Conn& c) {
  c.write_blocked = c.read_wants_write = false;  // re-evaluated below
  if (!c.handshake_done) {
    if (!Handshake(c)) {
      handshake_failures_.fetch_add(1);
      Finish(c, false);  // lets the client read OpenSSL's alert
      return;
    }
    if (!c.handshake_done) {
      MarkDirty(c);
      return;
    }
  }
  if (!c.frozen) DoRead(c);
  MarkDirty(c);
}

void MockApnsImpl::Linger(Conn& c) {
  for (;;) {
    ssize_t n = ::recv(c.fd, read_buf_, sizeof read_buf_, 0);
    if (n > 0) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    Kill(c);  // EOF or error: done
    return;
  }
}

bool MockApnsImpl::Handshake(Conn& c) {
  int rv = SSL_do_handshake(c.ssl);
  if (rv != 1) {
    int err = SSL_get_error(c.ssl, rv);
    if (err == SSL_ERROR_WANT_READ) return true;
    if (err == SSL_ERROR_WANT_WRITE) {
      c.read_wants_write = true;
      return true;
    }
    ERR_clear_error();
    return false;
  }
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(c.ssl, &alpn, &alpn_len);
  if (alpn_len != 2 || std::memcmp(alpn, "h2", 2) != 0) return false;
  if (X509* peer = SSL_get0_peer_certificate(c.ssl)) {
    X509_NAME* subject = X509_get_subject_name(peer);
    int idx = X509_NAME_get_index_by_NID(subject, NID_userId, -1);
    if (idx >= 0) {
      unsigned char* utf8 = nullptr;
      int len =
          ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
      if (len >= 0) c.topic.assign(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
      OPENSSL_free(utf8);
    }
  }
  if (nghttp2_session_server_new(&c.session, callbacks_, &c) != 0) return false;
  nghttp2_settings_entry iv{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams_.load()};
  nghttp2_submit_settings(c.session, NGHTTP2_FLAG_NONE, &iv, 1);
  c.handshake_done = true;
  accepted_.fetch_add(1);
  return true;
}

void MockApnsImpl::DoRead(Conn& c) {
  for (int i = 0; i < kReadsPerEvent || SSL_pending(c.ssl) > 0; ++i) {
    int n = SSL_read(c.ssl, read_buf_, sizeof read_buf_);
    if (n > 0) {
      ssize_t rv = nghttp2_session_mem_recv(c.session, read_buf_, static_cast<size_t>(n));
      if (rv < 0) {  // protocol error: nghttp2 may have queued a GOAWAY; flush it and close
        c.frozen = true;
        c.close_deadline = NowMs() + kCloseGraceMs;
        return;
      }
      if (Closing(c) || c.frozen) return;
      continue;
    }
    int err = SSL_get_error(c.ssl, n);
    if (err == SSL_ERROR_WANT_READ) return;
    if (err == SSL_ERROR_WANT_WRITE) {
      c.read_wants_write = true;
      return;
    }
    ERR_clear_error();  // EOF, reset or TLS error
    Kill(c);
    return;
  }
}

void MockApnsImpl::DoWrite(Conn& c) {
  if (!c.handshake_done) {
    // Handshake output is written by SSL_do_handshake itself.
    return;
  }
  for (;;) {
    if (c.out_off == c.out.size()) {
      c.out.clear();
      c.out_off = 0;
      while (c.out.size() < kWriteBatch) {
        const uint8_t* data;
        ssize_t n = nghttp2_session_mem_send(c.session, &data);
        if (n < 0) {
          Kill(c);
          return;
        }
        if (n == 0) break;
        c.out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
      }
      if (c.out.empty()) return;
    }
    size_t len = c.retry_len ? c.retry_len : c.out.size() - c.out_off;
    int n = SSL_write(c.ssl, c.out.data() + c.out_off,
                      static_cast<int>(std::min<size_t>(len, INT_MAX)));
    if (n > 0) {
      c.out_off += static_cast<size_t>(n);
      c.retry_len = 0;
      continue;
    }
    int err = SSL_get_error(c.ssl, n);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
      c.retry_len = len;
      if (err == SSL_ERROR_WANT_WRITE) c.write_blocked = true;
      return;
    }
    ERR_clear_error();
    Kill(c);
    return;
  }
}

void MockApnsImpl::MaybeFinish(Conn& c) {
  if (Closing(c) || !c.session) return;
  bool flushed = c.out_off == c.out.size() && !c.write_blocked && c.retry_len == 0 &&
                 nghttp2_session_want_write(c.session) == 0;
  if (c.frozen) {
    if (flushed) Finish(c, false);
    return;
  }
  if (c.goaway) {
    bool waiting =
        std::any_of(c.delayed.begin(), c.delayed.end(), [&](int32_t s) { return s <= c.cutoff; });
    if (flushed && !waiting) Finish(c, true);
    return;
  }
  if (flushed && nghttp2_session_want_read(c.session) == 0) Finish(c, true);
}

void MockApnsImpl::UpdateInterest(Conn& c) {
  uint32_t want =
      c.frozen ? 0u : static_cast<uint32_t>(EPOLLIN);  // frozen: no more reading, only flushing
  if (c.write_blocked || c.read_wants_write) want |= EPOLLOUT;
  if (want == c.epoll_mask) return;
  epoll_event ev{};
  ev.events = c.epoll_mask = want;
  ev.data.u64 = c.id;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void MockApnsImpl::FlushDirty() {
  // Respond() may dirty other connections (DropAll), so iterate by index.
  for (size_t i = 0; i < dirty_.size(); ++i) {
    auto it = conns_.find(dirty_[i]);
    if (it == conns_.end()) continue;
    Conn& c = *it->second;
    if (!Closing(c)) {
      DoWrite(c);
      MaybeFinish(c);
    }
    if (!Closing(c)) UpdateInterest(c);
  }
  for (uint64_t id : dirty_) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    Conn& c = *it->second;
    c.dirty = false;
    if (c.finishing && !c.dead) {
      if (c.close_notify && c.handshake_done) SSL_shutdown(c.ssl);  // best effort
      ERR_clear_error();
      ::shutdown(c.fd, SHUT_WR);
      c.finishing = false;
      c.lingering = true;
      c.close_deadline = NowMs() + kLingerMs;
      open_.fetch_sub(1);
      epoll_event ev{};
      ev.events = c.epoll_mask = EPOLLIN;
      ev.data.u64 = c.id;
      epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
      Linger(c);
    }
    if (c.dead) {
      if (!c.lingering) open_.fetch_sub(1);
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
      conns_.erase(it);
    }
  }
  dirty_.clear();
}

void MockApnsImpl::RunTimers() {
  int64_t now = NowMs();
  while (!timers_.empty() && timers_.top().due <= now) {
    Timer t = timers_.top();
    timers_.pop();
    auto it = conns_.find(t.conn);
    if (it == conns_.end()) continue;
    Conn& c = *it->second;
    auto d = std::find(c.delayed.begin(), c.delayed.end(), t.stream);
    if (d != c.delayed.end()) c.delayed.erase(d);
    MarkDirty(c);
    if (Closing(c) || c.frozen || t.stream > c.cutoff) continue;
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(c.session, t.stream));
    if (s) Respond(c, *s);  // null: the client reset the stream meanwhile
  }
}

// ---- requests -----------------------------------------------------------------

int MockApnsImpl::OnBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto* c = static_cast<Conn*>(user);
  Stream* s = c->Acquire(frame->hd.stream_id);
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
  return 0;
}

int MockApnsImpl::OnHeader(nghttp2_session* session, const nghttp2_frame* frame,
                           const uint8_t* name, size_t namelen, const uint8_t* value,
                           size_t valuelen, uint8_t, void*) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (!s || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // trailers are ignored
  std::string_view n(reinterpret_cast<const char*>(name), namelen);
  std::string_view v(reinterpret_cast<const char*>(value), valuelen);
  auto field = [&](uint32_t bit, std::string& dst) {
    if (s->seen & bit) s->duplicate = true;
    s->seen |= bit;
    dst.assign(v);
  };
  if (n == ":method") {
    s->method.assign(v);
  } else if (n == ":path") {
    s->path.assign(v);
  } else if (n.size() > 5 && n.substr(0, 5) == "apns-") {
    if (n == "apns-topic")
      field(kHdrTopic, s->topic);
    else if (n == "apns-push-type")
      field(kHdrPushType, s->push_type);
    else if (n == "apns-priority")
      field(kHdrPriority, s->priority);
    else if (n == "apns-expiration")
      field(kHdrExpiration, s->expiration);
    else if (n == "apns-id")
      field(kHdrId, s->apns_id);
    else if (n == "apns-collapse-id") {
      std::string ignored;
      field(kHdrCollapse, ignored);
    }
  }
  return 0;
}

int MockApnsImpl::OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                              const uint8_t* data, size_t len, void*) {
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (!s || s->refused) return 0;
  s->body_size += len;
  if (s->body.size() <= kMaxPayload) {
    size_t keep = std::min(len, kMaxPayload + 1 - s->body.size());
    s->body.append(reinterpret_cast<const char*>(data), keep);
  }
  return 0;
}

int MockApnsImpl::OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  auto* c = static_cast<Conn*>(user);
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (!s || s->refused) return 0;
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    c->owner->OnRequestHeaders(*c, *s);
    if (s->refused) return 0;
  }
  if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) c->owner->OnRequest(*c, *s);
  return 0;
}

int MockApnsImpl::OnStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t, void* user) {
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (s) static_cast<Conn*>(user)->free_streams.push_back(s);
  return 0;
}

ssize_t MockApnsImpl::ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                               uint32_t* data_flags, nghttp2_data_source* source, void*) {
  auto* s = static_cast<Stream*>(source->ptr);
  size_t n = std::min(length, s->resp_body.size() - s->resp_off);
  std::memcpy(buf, s->resp_body.data() + s->resp_off, n);
  s->resp_off += n;
  if (s->resp_off == s->resp_body.size()) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

void MockApnsImpl::OnRequestHeaders(Conn& c, Stream& s) {
  if (c.frozen || s.id > c.cutoff) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (refuse_count_ <= 0) return;
    --refuse_count_;
    if (options_.record_requests) {
      MockPush p;
      std::string_view path = s.path;
      if (path.substr(0, 10) == "/3/device/") p.token_hex.assign(path.substr(10));
      p.topic = s.topic;
      p.apns_id = s.apns_id;
      p.reason = "RefusedStream";
      records_.push_back(std::move(p));
    }
  }
  s.refused = true;
  nghttp2_submit_rst_stream(c.session, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_REFUSED_STREAM);
  MarkDirty(c);
}

void MockApnsImpl::Validate(const Conn& c, Stream& s, std::string_view* token) {
  auto fail = [&](int status, const char* reason) {
    s.status = status;
    s.reason = reason;
  };
  s.status = 200;
  std::string_view path = s.path;
  if (s.method != "POST") return fail(405, "MethodNotAllowed");
  if (path.substr(0, 10) != "/3/device/") return fail(404, "BadPath");
  *token = path.substr(10);
  if (token->empty()) return fail(400, "MissingDeviceToken");
  if (!ValidToken(*token)) return fail(400, "BadDeviceToken");
  if (s.duplicate) return fail(400, "DuplicateHeaders");
  if (!(s.seen & kHdrTopic)) return fail(400, "MissingTopic");
  if (options_.require_client_cert && s.topic != c.topic) return fail(400, "TopicDisallowed");
  if (s.push_type != "mdm") return fail(400, "InvalidPushType");
  if ((s.seen & kHdrPriority) && s.priority != "10" && s.priority != "5")
    return fail(400, "BadPriority");
  int64_t expiration;
  if ((s.seen & kHdrExpiration) && !ParseInt(s.expiration, &expiration))
    return fail(400, "BadExpirationDate");
  if ((s.seen & kHdrId) && !ValidUuid(s.apns_id)) return fail(400, "BadMessageId");
  if (s.body_size == 0) return fail(400, "PayloadEmpty");
  if (s.body_size > kMaxPayload) return fail(413, "PayloadTooLarge");
  if (!JsonScan(s.body).MdmObject(&s.push_magic)) return fail(400, "PayloadEmpty");
}

void MockApnsImpl::OnRequest(Conn& c, Stream& s) {
  if (c.frozen || s.id > c.cutoff) return;  // after GOAWAY / drop: left for the client to retry
  std::string_view token;
  Validate(c, s, &token);
  if (ValidUuid(s.apns_id)) {
    s.resp_apns_id = s.apns_id;
  } else {
    GenerateUuid(&s.resp_apns_id);
  }
  int64_t delay, timestamp = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fail_count_ > 0) {
      --fail_count_;
      s.status = fail_status_;
      s.reason = fail_reason_;
    } else if (fail_rate_ > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < fail_rate_) {
      s.status = rate_status_;
      s.reason = rate_reason_;
    } else if (s.status == 200 && !unregistered_.empty()) {
      auto it = unregistered_.find(Lower(token));
      if (it != unregistered_.end()) {
        s.status = 410;
        s.reason = "Unregistered";
        timestamp = it->second;
      }
    }
    if (s.status == 410 && timestamp == 0) timestamp = WallMs();
    delay = delay_ms_;
    if (options_.record_requests) {
      MockPush p;
      p.token_hex.assign(token);
      p.topic = s.topic;
      p.apns_id = s.resp_apns_id;
      p.push_magic = s.push_magic;
      p.reason = s.reason;
      int64_t v = 0;
      if (ParseInt(s.expiration, &v)) p.expiration = v;
      if (ParseInt(s.priority, &v)) p.priority = static_cast<int>(v);
      s.record = records_.size();
      records_.push_back(std::move(p));
    }
  }
  s.status_text = std::to_string(s.status);
  if (s.status != 200) {
    s.resp_body = R"({"reason":")" + s.reason + "\"";
    if (s.status == 410) s.resp_body += ",\"timestamp\":" + std::to_string(timestamp);
    s.resp_body += "}";
  }
  if (delay > 0) {
    timers_.push(Timer{NowMs() + delay, timer_seq_++, c.id, s.id});
    c.delayed.push_back(s.id);
  } else {
    Respond(c, s);
  }
}

void MockApnsImpl::Respond(Conn& c, Stream& s) {
  auto nv = [](const char* name, const std::string& value) {
    return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
                      std::strlen(name), value.size(), NGHTTP2_NV_FLAG_NO_COPY_NAME};
  };
  static const std::string kJson = "application/json";
  nghttp2_nv headers[3] = {nv(":status", s.status_text), nv("apns-id", s.resp_apns_id),
                           nv("content-type", kJson)};
  nghttp2_data_provider body;
  body.source.ptr = &s;
  body.read_callback = ReadBody;
  bool has_body = !s.resp_body.empty();
  if (nghttp2_submit_response(c.session, s.id, headers, has_body ? 3 : 2,
                              has_body ? &body : nullptr) != 0)
    return;
  MarkDirty(c);
  answered_.fetch_add(1);

  bool goaway = false, drop = false;
  std::shared_ptr<const std::function<void(const MockPush&)>> delivered;
  MockPush push;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (s.status == 200) delivered = on_delivered_;
    if (s.record < records_.size()) {
      records_[s.record].status = s.status;
      if (delivered) push = records_[s.record];
    }
    if (goaway_after_ > 0 && --goaway_after_ == 0) goaway = true;
    if (drop_after_ > 0 && --drop_after_ == 0) drop = true;
  }
  if (delivered) {
    if (s.record == SIZE_MAX) {
      push.token_hex.assign(std::string_view(s.path).substr(10));
      push.topic = s.topic;
      push.apns_id = s.resp_apns_id;
      push.push_magic = s.push_magic;
      push.status = 200;
    }
    (*delivered)(push);
  }
  if (goaway && !c.goaway && !c.frozen) StartGoaway(c, s.id);
  if (drop) DropAll();
}

void MockApnsImpl::StartGoaway(Conn& c, int32_t last_stream_id) {
  c.goaway = true;
  c.cutoff = last_stream_id;
  int64_t delay;
  {
    std::lock_guard<std::mutex> lock(mu_);
    delay = delay_ms_;
  }
  c.close_deadline = NowMs() + delay + kCloseGraceMs;
  nghttp2_submit_goaway(c.session, NGHTTP2_FLAG_NONE, last_stream_id, NGHTTP2_NO_ERROR,
                        reinterpret_cast<const uint8_t*>(kShutdownDebug),
                        sizeof kShutdownDebug - 1);
  MarkDirty(c);
}

void MockApnsImpl::DropAll() {
  int64_t deadline = NowMs() + kCloseGraceMs;
  for (auto& [id, c] : conns_) {
    if (Closing(*c)) continue;
    if (!c->session) {
      Finish(*c, false);  // still in the TLS handshake
      continue;
    }
    c->frozen = true;
    c->close_deadline = deadline;
    MarkDirty(*c);
  }
}

void MockApnsImpl::GenerateUuid(std::string* out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  uint64_t hi = rng_(), lo = rng_();
  hi = (hi & ~0xF000ull) | 0x4000ull;                  // version 4
  lo = (lo & ~(0xC000ull << 48)) | (0x8000ull << 48);  // variant 10
  char buf[36];
  int pos = 0;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) buf[pos++] = '-';
    uint64_t word = i < 16 ? hi : lo;
    int shift = 60 - 4 * (i % 16);
    buf[pos++] = kHex[(word >> shift) & 0xF];
  }
  out->assign(buf, sizeof buf);
}

}  // namespace

std::unique_ptr<MockApns> MockApns::Start(const MockApnsOptions& options) {
  auto impl = std::make_unique<MockApnsImpl>(options);
  if (!impl->Init()) return nullptr;
  impl->StartThread();
  return impl;
}

}  // namespace orchard::testing
