#include "apns_mock/mock_apns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/test_pki.h"

using orchard::testing::Identity;
using orchard::testing::IssueOptions;
using orchard::testing::MockApns;
using orchard::testing::MockApnsOptions;
using orchard::testing::MockPush;
using orchard::testing::TestCa;

namespace {

constexpr char kTopic[] = "com.apple.mgmt.External.5b1a2c3d-1111-4222-8333-0123456789ab";
constexpr char kOtherTopic[] = "com.apple.mgmt.External.ffffffff-1111-4222-8333-0123456789ab";
const std::string kToken = "8f3c1e0a9b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";
const std::string kToken2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Waits for a condition another thread makes true (bounded; not a sleep).
bool WaitUntil(const std::function<bool()>& done, int timeout_ms = 5000) {
  int64_t deadline = NowMs() + timeout_ms;
  while (!done()) {
    if (NowMs() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

struct Pki {
  std::unique_ptr<TestCa> ca, foreign_ca;
  Identity server, push, other_push, foreign_push, no_uid;
};

const Pki& GetPki() {
  static const Pki pki = [] {
    Pki p;
    p.ca = TestCa::Create("Mock APNs Test CA");
    p.foreign_ca = TestCa::Create("Someone Else");
    IssueOptions server;
    server.common_name = "localhost";
    server.server_auth_eku = true;
    server.dns_name = "localhost,127.0.0.1";
    p.server = p.ca->Issue(server);
    IssueOptions push;
    push.common_name = "APSP:5b1a2c3d-1111-4222-8333-0123456789ab";
    push.uid = kTopic;
    p.push = p.ca->Issue(push);
    p.foreign_push = p.foreign_ca->Issue(push);
    push.uid = kOtherTopic;
    p.other_push = p.ca->Issue(push);
    push.uid.clear();
    p.no_uid = p.ca->Issue(push);
    return p;
  }();
  return pki;
}

MockApnsOptions Options() {
  MockApnsOptions o;
  o.cert_pem = GetPki().server.cert_pem;
  o.key_pem = GetPki().server.key_pem;
  o.client_ca_pem = GetPki().ca->cert_pem();
  return o;
}

std::unique_ptr<MockApns> StartMock(const MockApnsOptions& options = Options()) {
  auto mock = MockApns::Start(options);
  REQUIRE(mock);
  return mock;
}

struct Request {
  std::string method = "POST";
  std::string path;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// An MDM push the way core/push should send it.
Request Push(const std::string& token = kToken, const std::string& magic = "magic-1",
             const std::string& topic = kTopic) {
  Request r;
  r.path = "/3/device/" + token;
  r.headers = {{"apns-topic", topic}, {"apns-push-type", "mdm"}, {"apns-priority", "10"}};
  r.body = R"({"mdm":")" + magic + "\"}";
  return r;
}

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
  bool closed = false;
  uint32_t error_code = 0;
};

// Minimal blocking HTTP/2 client over TLS (test-only): submit requests, then
// Pump() the connection until a condition holds.
class H2Client {
 public:
  struct Config {
    uint16_t port = 0;
    const Identity* identity = nullptr;  // client certificate
    bool tls12_only = false;
    std::string alpn = std::string("\x02h2", 3);
  };

  // nullptr (and *error) when TCP, TLS or ALPN fail; otherwise connected and
  // the server's first SETTINGS received.
  static std::unique_ptr<H2Client> Connect(const Config& config, std::string* error) {
    std::unique_ptr<H2Client> c(new H2Client());
    if (!c->Open(config, error)) return nullptr;
    return c;
  }

  ~H2Client() {
    if (session_) nghttp2_session_del(session_);
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }

  int32_t Submit(const Request& r) {
    std::vector<nghttp2_nv> nva;
    std::string authority = "127.0.0.1:" + std::to_string(port_);
    auto add = [&](const std::string& n, const std::string& v) {
      nva.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                     reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                     NGHTTP2_NV_FLAG_NONE});
    };
    static const std::string kMethod = ":method", kScheme = ":scheme", kHttps = "https",
                             kAuthority = ":authority", kPath = ":path";
    add(kMethod, r.method);
    add(kScheme, kHttps);
    add(kAuthority, authority);
    add(kPath, r.path);
    for (const auto& [n, v] : r.headers) add(n, v);
    nghttp2_data_provider provider{};
    nghttp2_data_provider* prd = nullptr;
    if (!r.body.empty()) {
      bodies_.push_back(std::make_unique<Body>(Body{r.body, 0}));
      provider.source.ptr = bodies_.back().get();
      provider.read_callback = ReadBody;
      prd = &provider;
    }
    int32_t id = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(), prd, nullptr);
    REQUIRE(id > 0);
    responses_[id];
    return id;
  }

  // Runs the connection until done() or timeout or end of connection.
  bool Pump(const std::function<bool()>& done, int timeout_ms = 5000) {
    int64_t deadline = NowMs() + timeout_ms;
    for (;;) {
      if (!eof_) Flush();
      if (done()) return true;
      if (eof_) return false;
      int64_t left = deadline - NowMs();
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 100)));
      ReadAvailable();
    }
  }

  bool Wait(int32_t id, int timeout_ms = 5000) {
    return Pump([&] { return responses_[id].closed; }, timeout_ms);
  }
  bool WaitAll(const std::vector<int32_t>& ids, int timeout_ms = 5000) {
    return Pump(
        [&] {
          for (int32_t id : ids)
            if (!responses_[id].closed) return false;
          return true;
        },
        timeout_ms);
  }
  bool WaitEof(int timeout_ms = 5000) {
    Pump([] { return false; }, timeout_ms);
    return eof_;
  }
  // Submits and waits for one request.
  const Response& Send(const Request& r) {
    int32_t id = Submit(r);
    REQUIRE(Wait(id));
    return responses_[id];
  }

  const Response& response(int32_t id) { return responses_[id]; }
  uint32_t remote_max_streams() const {
    return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  }
  bool eof() const { return eof_; }
  bool goaway() const { return goaway_; }
  int32_t goaway_last_stream() const { return goaway_last_; }
  uint32_t goaway_error() const { return goaway_error_; }
  const std::string& goaway_debug() const { return goaway_debug_; }
  const std::string& tls_error() const { return tls_error_; }

 private:
  struct Body {
    std::string data;
    size_t off;
  };

  H2Client() = default;

  bool Open(const Config& config, std::string* error) {
    sigset_t pipe;  // a write to a closed socket must not kill the test
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);

    port_ = config.port;
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(config.port);
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      *error = std::string("connect: ") + std::strerror(errno);
      return false;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);

    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    if (config.tls12_only) SSL_CTX_set_max_proto_version(ctx_, TLS1_2_VERSION);
    SSL_CTX_set_alpn_protos(ctx_, reinterpret_cast<const unsigned char*>(config.alpn.data()),
                            static_cast<unsigned>(config.alpn.size()));
    // Verify the mock's certificate like the real client will (CA + IP SAN).
    BIO* bio = BIO_new_mem_buf(GetPki().ca->cert_pem().data(), -1);
    X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx_), ca);
    X509_free(ca);
    BIO_free(bio);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (config.identity) {
      bio = BIO_new_mem_buf(config.identity->cert_pem.data(), -1);
      X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
      BIO_free(bio);
      bio = BIO_new_mem_buf(config.identity->key_pem.data(), -1);
      EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
      BIO_free(bio);
      REQUIRE(SSL_CTX_use_certificate(ctx_, cert) == 1);
      REQUIRE(SSL_CTX_use_PrivateKey(ctx_, key) == 1);
      X509_free(cert);
      EVP_PKEY_free(key);
    }
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), "127.0.0.1");
    int64_t deadline = NowMs() + 5000;
    for (;;) {
      int rv = SSL_connect(ssl_);
      if (rv == 1) break;
      int err = SSL_get_error(ssl_, rv);
      if ((err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) || NowMs() > deadline) {
        *error = "TLS handshake failed: " + SslError();
        return false;
      }
      pollfd p{fd_, static_cast<short>(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
      ::poll(&p, 1, 100);
    }
    const unsigned char* alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
    if (alpn_len != 2 || std::memcmp(alpn, "h2", 2) != 0) {
      *error = "ALPN h2 not selected";
      return false;
    }

    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, OnHeader);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, OnData);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, OnStreamClose);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, OnFrame);
    nghttp2_session_client_new(&session_, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
    if (!Pump([this] { return settings_ > 0; })) {
      *error = "no SETTINGS from server" + (tls_error_.empty() ? "" : ": " + tls_error_);
      return false;
    }
    return true;
  }

  static std::string SslError() {
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
  }

  void Flush() {
    for (;;) {
      const uint8_t* data;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      REQUIRE(n >= 0);
      if (n == 0) return;
      size_t off = 0;
      while (off < static_cast<size_t>(n)) {
        int w = SSL_write(ssl_, data + off, static_cast<int>(n - off));
        if (w > 0) {
          off += static_cast<size_t>(w);
          continue;
        }
        int err = SSL_get_error(ssl_, w);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
          // Our send buffer is full: keep reading so the server can write too.
          pollfd p{fd_, POLLOUT, 0};
          ::poll(&p, 1, 100);
          ReadAvailable();
          if (eof_) return;
          continue;
        }
        tls_error_ = SslError();
        eof_ = true;
        return;
      }
    }
  }

  void ReadAvailable() {
    unsigned char buf[16384];
    for (;;) {
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n > 0) {
        if (nghttp2_session_mem_recv(session_, buf, static_cast<size_t>(n)) < 0) eof_ = true;
        continue;
      }
      int err = SSL_get_error(ssl_, n);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return;
      if (err != SSL_ERROR_ZERO_RETURN) tls_error_ = SslError();
      eof_ = true;
      return;
    }
  }

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source* source, void*) {
    auto* b = static_cast<Body*>(source->ptr);
    size_t n = std::min(length, b->data.size() - b->off);
    std::memcpy(buf, b->data.data() + b->off, n);
    b->off += n;
    if (b->off == b->data.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }
  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    auto* c = static_cast<H2Client*>(user);
    std::string n(reinterpret_cast<const char*>(name), namelen);
    std::string v(reinterpret_cast<const char*>(value), valuelen);
    Response& r = c->responses_[frame->hd.stream_id];
    if (n == ":status") {
      r.status = std::stoi(v);
    } else {
      r.headers[n] = v;
    }
    return 0;
  }
  static int OnData(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len,
                    void* user) {
    static_cast<H2Client*>(user)->responses_[id].body.append(reinterpret_cast<const char*>(data),
                                                             len);
    return 0;
  }
  static int OnStreamClose(nghttp2_session*, int32_t id, uint32_t error_code, void* user) {
    Response& r = static_cast<H2Client*>(user)->responses_[id];
    r.closed = true;
    r.error_code = error_code;
    return 0;
  }
  static int OnFrame(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto* c = static_cast<H2Client*>(user);
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) ++c->settings_;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      c->goaway_ = true;
      c->goaway_last_ = frame->goaway.last_stream_id;
      c->goaway_error_ = frame->goaway.error_code;
      c->goaway_debug_.assign(reinterpret_cast<const char*>(frame->goaway.opaque_data),
                              frame->goaway.opaque_data_len);
    }
    return 0;
  }

  uint16_t port_ = 0;
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  nghttp2_session* session_ = nullptr;
  bool eof_ = false;
  int settings_ = 0;
  bool goaway_ = false;
  int32_t goaway_last_ = -1;
  uint32_t goaway_error_ = 0;
  std::string goaway_debug_, tls_error_;
  std::map<int32_t, Response> responses_;
  std::vector<std::unique_ptr<Body>> bodies_;
};

std::unique_ptr<H2Client> ConnectOk(uint16_t port, const Identity* identity = &GetPki().push) {
  H2Client::Config config;
  config.port = port;
  config.identity = identity;
  std::string error;
  auto c = H2Client::Connect(config, &error);
  INFO(error);
  REQUIRE(c);
  return c;
}

bool IsUpperUuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i])) || std::islower(s[i]))
      return false;
  }
  return true;
}

std::string Reason(const std::string& reason) { return R"({"reason":")" + reason + "\"}"; }

}  // namespace

TEST_CASE("a valid MDM push is answered 200 with an apns-id") {
  auto mock = StartMock();
  std::mutex mu;
  std::vector<MockPush> delivered;
  mock->OnDelivered([&](const MockPush& p) {
    std::lock_guard<std::mutex> lock(mu);
    delivered.push_back(p);
  });
  auto client = ConnectOk(mock->port());

  Request with_id = Push(kToken, "magic-1");
  with_id.headers.push_back({"apns-id", "123e4567-e89b-12d3-a456-426614174000"});
  with_id.headers.push_back({"apns-expiration", "1900000000"});
  const Response& r1 = client->Send(with_id);
  CHECK(r1.status == 200);
  CHECK(r1.body.empty());
  CHECK(r1.headers.at("apns-id") == "123e4567-e89b-12d3-a456-426614174000");

  const Response& r2 = client->Send(Push(kToken2, "magic-2"));
  CHECK(r2.status == 200);
  CHECK(IsUpperUuid(r2.headers.at("apns-id")));

  std::vector<MockPush> received = mock->Received();
  REQUIRE(received.size() == 2);
  CHECK(received[0].token_hex == kToken);
  CHECK(received[0].topic == kTopic);
  CHECK(received[0].push_magic == "magic-1");
  CHECK(received[0].apns_id == "123e4567-e89b-12d3-a456-426614174000");
  CHECK(received[0].status == 200);
  CHECK(received[0].priority == 10);
  CHECK(received[0].expiration == 1900000000);
  CHECK(received[1].apns_id == r2.headers.at("apns-id"));
  {
    std::lock_guard<std::mutex> lock(mu);  // OnDelivered ran before the answer was written
    REQUIRE(delivered.size() == 2);
    CHECK(delivered[1].token_hex == kToken2);
    CHECK(delivered[1].push_magic == "magic-2");
  }
  CHECK(mock->connections_accepted() == 1);
  CHECK(mock->open_connections() == 1);
  CHECK(mock->requests_answered() == 2);
}

TEST_CASE("requests are validated like APNs, with APNs status codes and reasons") {
  auto mock = StartMock();
  auto client = ConnectOk(mock->port());
  struct Case {
    const char* name;
    Request request;
    int status;
    const char* reason;  // nullptr: success
  };
  auto with = [](Request r, const std::string& name, const std::string& value) {
    bool replaced = false;
    for (auto& [n, v] : r.headers)
      if (n == name) v = value, replaced = true;
    if (!replaced) r.headers.push_back({name, value});
    return r;
  };
  auto without = [](Request r, const std::string& name) {
    std::erase_if(r.headers, [&](const auto& h) { return h.first == name; });
    return r;
  };
  auto body = [](Request r, std::string b) {
    r.body = std::move(b);
    return r;
  };
  Request get = Push();
  get.method = "GET";
  get.body.clear();
  Request bad_path = Push();
  bad_path.path = "/3/devices/" + kToken;
  Request no_token = Push("");
  Request dup = Push();
  dup.headers.push_back({"apns-topic", kTopic});
  std::string upper = kToken;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  std::string magic_4096(4096 - std::string(R"({"mdm":""})").size(), 'm');
  std::string magic_4097 = magic_4096 + "m";

  std::vector<Case> cases = {
      {"valid", Push(), 200, nullptr},
      {"upper-case token", Push(upper), 200, nullptr},
      {"shortest token", Push(std::string(32, 'a')), 200, nullptr},
      {"priority 5", with(Push(), "apns-priority", "5"), 200, nullptr},
      {"no priority", without(Push(), "apns-priority"), 200, nullptr},
      {"expiration 0", with(Push(), "apns-expiration", "0"), 200, nullptr},
      {"json with other members", body(Push(), R"( {"x":[1,2.5e3,{"y":null}],"mdm":"m\u00e9"} )"),
       200, nullptr},
      {"4096-byte payload", Push(kToken, magic_4096), 200, nullptr},
      {"GET", get, 405, "MethodNotAllowed"},
      {"bad path", bad_path, 404, "BadPath"},
      {"empty token", no_token, 400, "MissingDeviceToken"},
      {"non-hex token", Push(std::string(64, 'z')), 400, "BadDeviceToken"},
      {"odd-length token", Push(kToken.substr(1)), 400, "BadDeviceToken"},
      {"short token", Push(std::string(30, 'a')), 400, "BadDeviceToken"},
      {"long token", Push(std::string(202, 'a')), 400, "BadDeviceToken"},
      {"duplicate apns-topic", dup, 400, "DuplicateHeaders"},
      {"missing topic", without(Push(), "apns-topic"), 400, "MissingTopic"},
      {"other topic", Push(kToken, "m", kOtherTopic), 400, "TopicDisallowed"},
      {"missing push type", without(Push(), "apns-push-type"), 400, "InvalidPushType"},
      {"alert push type", with(Push(), "apns-push-type", "alert"), 400, "InvalidPushType"},
      {"priority 7", with(Push(), "apns-priority", "7"), 400, "BadPriority"},
      {"expiration not a number", with(Push(), "apns-expiration", "soon"), 400,
       "BadExpirationDate"},
      {"apns-id not a UUID", with(Push(), "apns-id", "42"), 400, "BadMessageId"},
      {"empty payload", body(Push(), ""), 400, "PayloadEmpty"},
      {"4097-byte payload", Push(kToken, magic_4097), 413, "PayloadTooLarge"},
      {"not JSON", body(Push(), "mdm=magic"), 400, "PayloadEmpty"},
      {"JSON without mdm", body(Push(), R"({"aps":{}})"), 400, "PayloadEmpty"},
      {"mdm not a string", body(Push(), R"({"mdm":1})"), 400, "PayloadEmpty"},
      {"trailing garbage", body(Push(), R"({"mdm":"m"}x)"), 400, "PayloadEmpty"},
  };
  std::vector<int32_t> ids;
  for (const auto& c : cases) ids.push_back(client->Submit(c.request));  // all in flight at once
  REQUIRE(client->WaitAll(ids));
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO(cases[i].name);
    const Response& r = client->response(ids[i]);
    CHECK(r.status == cases[i].status);
    CHECK(r.headers.count("apns-id") == 1);
    if (cases[i].reason) {
      CHECK(r.body == Reason(cases[i].reason));
      CHECK(r.headers.at("content-type") == "application/json");
    } else {
      CHECK(r.body.empty());
    }
  }
  std::vector<MockPush> received = mock->Received();
  REQUIRE(received.size() == cases.size());  // arrival order may differ from submission order
  CHECK(std::count_if(received.begin(), received.end(), [](const MockPush& p) {
          return p.push_magic == "m\xc3\xa9" && p.status == 200;
        }) == 1);
  CHECK(std::count_if(received.begin(), received.end(), [](const MockPush& p) {
          return p.reason == "BadPath" && p.status == 404;
        }) == 1);
}

TEST_CASE("an unregistered token gets 410 with the timestamp in milliseconds") {
  auto mock = StartMock();
  std::string upper = kToken;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  mock->SetUnregistered(upper, 1700000000123);
  auto client = ConnectOk(mock->port());
  const Response& r = client->Send(Push(kToken));
  CHECK(r.status == 410);
  CHECK(r.body == R"({"reason":"Unregistered","timestamp":1700000000123})");
  CHECK(r.headers.at("content-type") == "application/json");
  CHECK(client->Send(Push(kToken2)).status == 200);
  Request invalid = Push(kToken);  // an invalid request is reported as invalid first
  invalid.headers.push_back({"apns-priority", "7"});
  invalid.headers.erase(invalid.headers.begin() + 2);  // the original apns-priority
  CHECK(client->Send(invalid).status == 400);
  std::vector<MockPush> received = mock->Received();
  REQUIRE(received.size() == 3);
  CHECK(received[0].status == 410);
  CHECK(received[0].reason == "Unregistered");
}

TEST_CASE("a push certificate for another topic gets TopicDisallowed") {
  auto mock = StartMock();
  auto client = ConnectOk(mock->port(), &GetPki().other_push);
  const Response& r = client->Send(Push(kToken, "m", kTopic));
  CHECK(r.status == 400);
  CHECK(r.body == Reason("TopicDisallowed"));
  CHECK(client->Send(Push(kToken, "m", kOtherTopic)).status == 200);
  // A certificate without a UID may push to no topic at all.
  auto no_uid = ConnectOk(mock->port(), &GetPki().no_uid);
  CHECK(no_uid->Send(Push()).status == 400);
}

TEST_CASE("clients without an acceptable certificate or without h2 are refused") {
  auto mock = StartMock();
  H2Client::Config config;
  config.port = mock->port();
  std::string error;
  uint64_t failures = 0;

  SECTION("no certificate, TLS 1.2: the handshake fails") {
    config.tls12_only = true;
    CHECK_FALSE(H2Client::Connect(config, &error));
    CHECK_THAT(error, Catch::Contains("TLS handshake failed"));
    failures = 1;
  }
  SECTION("no certificate, TLS 1.3: the server aborts after the client's Finished") {
    // The client believes the handshake is done before the server checks its
    // certificate, so the failure shows as an alert on the first read.
    auto client = H2Client::Connect(config, &error);
    CHECK_FALSE(client);
    CHECK_THAT(error, Catch::Contains("certificate required"));
    failures = 1;
  }
  SECTION("a certificate from another CA") {
    config.identity = &GetPki().foreign_push;
    CHECK_FALSE(H2Client::Connect(config, &error));
    failures = 1;
  }
  SECTION("ALPN without h2") {
    config.identity = &GetPki().push;
    config.alpn = std::string("\x08http/1.1", 9);
    CHECK_FALSE(H2Client::Connect(config, &error));
    failures = 1;
  }
  CHECK(WaitUntil([&] { return mock->handshake_failures() == failures; }));
  CHECK(mock->connections_accepted() == 0);
  CHECK(mock->Received().empty());
  // The mock keeps serving good clients.
  auto good = ConnectOk(mock->port());
  CHECK(good->Send(Push()).status == 200);
}

TEST_CASE("FailNext answers the next requests with the injected error, then recovers") {
  auto mock = StartMock();
  auto client = ConnectOk(mock->port());
  mock->FailNext(1, 429, "TooManyRequests");
  const Response& r1 = client->Send(Push());
  CHECK(r1.status == 429);
  CHECK(r1.body == Reason("TooManyRequests"));
  CHECK(r1.headers.count("apns-id") == 1);
  CHECK(client->Send(Push()).status == 200);

  mock->FailNext(2, 503, "ServiceUnavailable");
  CHECK(client->Send(Push()).status == 503);
  CHECK(client->Send(Push()).status == 503);
  CHECK(client->Send(Push()).status == 200);

  mock->SetFailRate(1.0, 500, "InternalServerError");
  CHECK(client->Send(Push()).body == Reason("InternalServerError"));
  mock->SetFailRate(0, 0, "");
  CHECK(client->Send(Push()).status == 200);

  std::vector<MockPush> received = mock->Received();
  REQUIRE(received.size() == 7);
  CHECK(received[0].status == 429);
  CHECK(received[0].reason == "TooManyRequests");
  CHECK(received[1].status == 200);
}

TEST_CASE("GoawayAfter sends GOAWAY after N answered streams, then closes") {
  auto mock = StartMock();
  auto client = ConnectOk(mock->port());
  mock->GoawayAfter(3);
  std::vector<int32_t> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(client->Submit(Push(kToken, "m" + std::to_string(i))));
  CHECK(client->WaitEof());
  REQUIRE(client->goaway());
  CHECK(client->goaway_error() == NGHTTP2_NO_ERROR);
  CHECK(client->goaway_debug() == R"({"reason":"Shutdown"})");
  CHECK(client->tls_error().empty());  // closed with close_notify
  // Streams usually complete in id order, so last-stream-id is the third;
  // whatever the order, streams up to it are answered and the rest refused.
  int32_t last = client->goaway_last_stream();
  CHECK(last >= ids[2]);
  size_t answered = 0;
  for (int32_t id : ids) {
    INFO("stream " << id << ", last-stream-id " << last);
    if (id <= last) {
      CHECK(client->response(id).status == 200);
      ++answered;
    } else {
      CHECK(client->response(id).status == 0);  // the client must retry these elsewhere
      CHECK(client->response(id).error_code == NGHTTP2_REFUSED_STREAM);
    }
  }
  CHECK(answered >= 3);
  CHECK(mock->Received().size() == answered);
  CHECK(WaitUntil([&] { return mock->open_connections() == 0; }));

  // One-shot: a new connection is served normally.
  auto again = ConnectOk(mock->port());
  CHECK(again->Send(Push()).status == 200);
  CHECK(mock->connections_accepted() == 2);

  // GoawayAfter(0): at once, last-stream-id = the last stream received.
  mock->GoawayAfter(0);
  CHECK(again->WaitEof());
  CHECK(again->goaway());
  CHECK(again->goaway_last_stream() == 1);
}

TEST_CASE("DropConnectionsAfter closes the TCP connection without GOAWAY") {
  auto mock = StartMock();
  auto client = ConnectOk(mock->port());
  auto other = ConnectOk(mock->port());
  mock->DropConnectionsAfter(2);
  std::vector<int32_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(client->Submit(Push()));
  CHECK(client->WaitEof());
  CHECK_FALSE(client->goaway());
  CHECK_THAT(client->tls_error(), Catch::Contains("unexpected eof"));  // no close_notify
  int answered = 0, open = 0;
  for (int32_t id : ids) {
    answered += client->response(id).status == 200;
    open += !client->response(id).closed;
  }
  CHECK(answered == 2);
  CHECK(open == 2);
  CHECK(other->WaitEof());  // every open connection is dropped
  CHECK_FALSE(other->goaway());
  CHECK(mock->Received().size() == 2);
  auto again = ConnectOk(mock->port());
  CHECK(again->Send(Push()).status == 200);
}

TEST_CASE("RefuseStreamsNext resets streams with REFUSED_STREAM") {
  auto mock = StartMock();
  auto client = ConnectOk(mock->port());
  mock->RefuseStreamsNext(1);
  int32_t refused = client->Submit(Push(kToken, "first"));
  int32_t ok = client->Submit(Push(kToken, "second"));
  REQUIRE(client->WaitAll({refused, ok}));
  CHECK(client->response(refused).status == 0);
  CHECK(client->response(refused).error_code == NGHTTP2_REFUSED_STREAM);
  CHECK(client->response(ok).status == 200);
  std::vector<MockPush> received = mock->Received();
  REQUIRE(received.size() == 2);
  CHECK(received[0].status == 0);
  CHECK(received[0].reason == "RefusedStream");
  CHECK(received[1].push_magic == "second");
}

TEST_CASE("SETTINGS_MAX_CONCURRENT_STREAMS is advertised and can change mid-connection") {
  MockApnsOptions options = Options();
  options.max_concurrent_streams = 7;
  auto mock = StartMock(options);
  auto client = ConnectOk(mock->port());
  CHECK(client->remote_max_streams() == 7);
  mock->SetMaxConcurrentStreams(3);
  CHECK(client->Pump([&] { return client->remote_max_streams() == 3; }));
  CHECK(client->Send(Push()).status == 200);
  auto second = ConnectOk(mock->port());
  CHECK(second->remote_max_streams() == 3);
}

TEST_CASE("SetDelayMs answers later without blocking other requests") {
  auto mock = StartMock();
  auto client = ConnectOk(mock->port());
  auto other = ConnectOk(mock->port());
  mock->SetDelayMs(300);
  int64_t start = NowMs();
  std::vector<int32_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(client->Submit(Push()));
  int32_t other_id = other->Submit(Push());
  other->Pump([] { return true; });  // flush it now; both connections wait at the same time
  REQUIRE(client->WaitAll(ids));
  REQUIRE(other->Wait(other_id));
  int64_t elapsed = NowMs() - start;
  CHECK(elapsed >= 300);
  CHECK(elapsed < 1000);  // answered side by side (one after another would take 1800 ms)
  for (int32_t id : ids) CHECK(client->response(id).status == 200);
  CHECK(other->response(other_id).status == 200);
  mock->SetDelayMs(0);
  CHECK(client->Send(Push()).status == 200);
}

TEST_CASE("without client certificates the mock skips the certificate and topic checks") {
  MockApnsOptions options = Options();
  options.require_client_cert = false;
  options.client_ca_pem.clear();
  auto mock = StartMock(options);
  auto client = ConnectOk(mock->port(), nullptr);
  CHECK(client->Send(Push(kToken, "m", "any.topic")).status == 200);
  Request no_topic = Push();
  no_topic.headers.erase(no_topic.headers.begin());
  CHECK(client->Send(no_topic).body == Reason("MissingTopic"));
}

TEST_CASE("thousands of pushes on one connection are all answered and recorded") {
  auto mock = StartMock();
  std::atomic<int> delivered{0};
  mock->OnDelivered([&](const MockPush&) { delivered.fetch_add(1); });
  auto client = ConnectOk(mock->port());
  constexpr int kCount = 5000;
  std::vector<int32_t> ids;
  for (int i = 0; i < kCount; ++i) ids.push_back(client->Submit(Push(kToken, std::to_string(i))));
  REQUIRE(client->WaitAll(ids, 30000));
  int ok = 0;
  for (int32_t id : ids) ok += client->response(id).status == 200;
  CHECK(ok == kCount);
  CHECK(delivered.load() == kCount);
  std::vector<MockPush> received = mock->Received();
  REQUIRE(received.size() == kCount);
  CHECK(received[kCount - 1].push_magic == std::to_string(kCount - 1));
}

TEST_CASE("SetListening(false) refuses connections and drops open ones, true serves the same port again") {
  auto mock = StartMock();
  const uint16_t port = mock->port();
  auto client = ConnectOk(port);
  CHECK(client->Send(Push()).status == 200);
  REQUIRE(mock->SetListening(false));
  CHECK(client->WaitEof());  // dropped, no GOAWAY
  CHECK_FALSE(client->goaway());
  H2Client::Config config;
  config.port = port;
  config.identity = &GetPki().push;
  std::string error;
  CHECK_FALSE(H2Client::Connect(config, &error));
  CHECK_THAT(error, Catch::Contains("refused"));
  REQUIRE(mock->SetListening(true));
  CHECK(mock->port() == port);
  auto again = ConnectOk(port);
  CHECK(again->Send(Push()).status == 200);
  CHECK(mock->connections_accepted() == 2);
}
