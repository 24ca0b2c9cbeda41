// The shipped webhook plugin (plugins/webhook) in the real orchardd, posting to
// a real HTTP receiver on a loopback socket that checks X-Hmac-Signature and
// records every body: the NanoMDM shape, retries while the receiver is down,
// topic filters, kill -9 with undelivered events, a receiver that never
// answers, a refused config. Devices check in without certificates
// (--insecure-dev). Every wait polls with a deadline.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "plist/plist.h"
#include "support/orchardd_process.h"

namespace {

namespace fs = std::filesystem;
using orchard::plist::Value;
using orchard::testing::HttpCall;
using orchard::testing::HttpResult;
using orchard::testing::MakeTempDir;
using orchard::testing::OrchardProcess;
using orchard::testing::ReadFile;
using orchard::testing::WriteFile;

constexpr char kKey[] = "0123456789abcdef0123";

template <class F>
bool WaitFor(F cond, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

std::string B64(const unsigned char* p, size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

std::string UnB64(const std::string& s) {
  std::string out(s.size() / 4 * 3 + 3, '\0');
  const int len = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (len < 0) return {};
  size_t n = static_cast<size_t>(len);
  if (!s.empty() && s.back() == '=') --n;
  if (s.size() > 1 && s[s.size() - 2] == '=') --n;
  out.resize(n);
  return out;
}

std::string HmacB64(const std::string& key, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(body.data()),
       body.size(), mac, &len);
  return B64(mac, len);
}

// A real HTTP/1.1 server on 127.0.0.1: one thread accepting, one per
// connection, keep-alive, Content-Length bodies. Records each POST.
class Receiver {
 public:
  enum class Mode { kOk, kFail503, kHang };
  struct Request {
    std::string path, body, signature;
    bool hmac_ok = false;
  };

  explicit Receiver(std::string secret) : secret_(std::move(secret)) {}
  ~Receiver() { Stop(); }

  // Listens on port (0 = ephemeral; a fixed port is reused after Stop).
  bool Start(int port = 0) {
    stop_ = false;
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd_ < 0) return false;
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(listen_fd_, 128) != 0) {
      close(listen_fd_);
      listen_fd_ = -1;
      return false;
    }
    socklen_t len = sizeof a;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
    return true;
  }

  // Closes the listening socket and every connection (the port refuses).
  void Stop() {
    stop_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    if (listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
    std::vector<std::thread> conns;
    {
      std::lock_guard lock(mu_);
      conns.swap(conns_);
    }
    for (auto& t : conns) t.join();
  }

  void SetMode(Mode m) { mode_ = m; }
  int port() const { return port_; }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  size_t connections() const { return connections_; }

  std::vector<Request> Requests(const std::string& path = "") {
    std::lock_guard lock(mu_);
    std::vector<Request> out;
    for (const auto& r : requests_)
      if (path.empty() || r.path == path) out.push_back(r);
    return out;
  }
  size_t Count(const std::string& path = "") {
    std::lock_guard lock(mu_);
    if (path.empty()) return requests_.size();
    return static_cast<size_t>(
        std::count_if(requests_.begin(), requests_.end(), [&](const Request& r) { return r.path == path; }));
  }

 private:
  void Accept() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      ++connections_;
      std::lock_guard lock(mu_);
      conns_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  // Reads until cond(buffer) or stop/EOF; false on EOF or stop.
  bool ReadMore(int fd, std::string* buf) {
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      const int r = poll(&p, 1, 20);
      if (r < 0) return false;
      if (r == 0) continue;
      char tmp[65536];
      const ssize_t n = recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) return false;
      buf->append(tmp, static_cast<size_t>(n));
      return true;
    }
    return false;
  }

  void Serve(int fd) {
    std::string buf;
    while (!stop_) {
      size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos)
        if (!ReadMore(fd, &buf)) return (void)close(fd);
      const std::string head = buf.substr(0, end);
      size_t content_length = 0;
      std::string signature;
      std::string lower = head;
      for (char& c : lower) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
      if (size_t p = lower.find("\r\ncontent-length:"); p != std::string::npos)
        content_length = std::stoul(head.substr(p + 17));
      if (size_t p = lower.find("\r\nx-hmac-signature:"); p != std::string::npos) {
        size_t v = p + 19;
        while (v < head.size() && head[v] == ' ') ++v;
        signature = head.substr(v, head.find("\r\n", v) - v);
      }
      while (buf.size() < end + 4 + content_length)
        if (!ReadMore(fd, &buf)) return (void)close(fd);
      Request r;
      const size_t sp1 = head.find(' '), sp2 = head.find(' ', sp1 + 1);
      r.path = head.substr(sp1 + 1, sp2 - sp1 - 1);
      r.body = buf.substr(end + 4, content_length);
      r.signature = signature;
      r.hmac_ok = !signature.empty() && signature == HmacB64(secret_, r.body);
      buf.erase(0, end + 4 + content_length);
      const Mode mode = mode_;
      if (mode == Mode::kHang) {
        // Accept the request, never answer: hold the connection until Stop.
        while (ReadMore(fd, &buf)) {
        }
        close(fd);
        return;
      }
      std::string reply;
      if (mode == Mode::kOk) {
        {
          std::lock_guard lock(mu_);
          requests_.push_back(std::move(r));
        }
        reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
      } else {
        reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
      }
      if (send(fd, reply.data(), reply.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(reply.size())) break;
    }
    close(fd);
  }

  std::string secret_;
  std::atomic<bool> stop_{false};
  std::atomic<Mode> mode_{Mode::kOk};
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<size_t> connections_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> conns_;
  std::vector<Request> requests_;
};

Value Json(const std::string& body) {
  auto v = orchard::plist::ParseJson(body);
  INFO(body);
  REQUIRE(v.ok());
  return std::move(v.value());
}

Value S(const std::string& s) { return Value::String(s); }

std::string AuthenticatePlist(const std::string& udid) {
  Value v;
  v.Set("MessageType", S("Authenticate"));
  v.Set("UDID", S(udid));
  v.Set("SerialNumber", S("SN-" + udid.substr(0, 8)));
  v.Set("Model", S("iPhone15,2"));
  v.Set("OSVersion", S("17.4"));
  v.Set("BuildVersion", S("21E219"));
  v.Set("Topic", S("com.apple.mgmt.test"));
  return orchard::plist::ToXml(v);
}

std::string TokenUpdatePlist(const std::string& udid) {
  Value v;
  v.Set("MessageType", S("TokenUpdate"));
  v.Set("UDID", S(udid));
  v.Set("Token", Value::DataValue(std::string(32, '\x07')));
  v.Set("PushMagic", S("magic-secret"));
  v.Set("Topic", S("com.apple.mgmt.test"));
  return orchard::plist::ToXml(v);
}

// orchardd with the webhook plugin copied into a private plugin dir.
struct Orchard {
  std::string dir = MakeTempDir("orchard-webhook-it");
  std::string plugins = dir + "/plugins";
  std::unique_ptr<OrchardProcess> proc;

  explicit Orchard(const std::string& webhook_config) {
    fs::create_directories(plugins);
    REQUIRE(chmod(plugins.c_str(), 0755) == 0);
    fs::copy_file(WEBHOOK_SO, plugins + "/webhook.so");
    REQUIRE(chmod((plugins + "/webhook.so").c_str(), 0755) == 0);
    REQUIRE(WriteFile(dir + "/orchard.conf", "plugin.dir = " + plugins + "\nlog.level = info\n" + webhook_config));
  }
  ~Orchard() {
    proc.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::remove(dir + "/data.log", ec);
  }
  void Start() {
    proc = std::make_unique<OrchardProcess>(
        dir + "/data", std::vector<std::string>{"--config", dir + "/orchard.conf", "--insecure-dev", "--api-key", kKey});
    const bool started = proc->Start();
    INFO("orchardd log:\n" << Log());
    REQUIRE(started);
  }
  std::string Log() const { return proc ? ReadFile(proc->log_path()) : std::string(); }
  HttpResult Checkin(const std::string& plist) {
    return HttpCall("PUT", proc->url() + "/mdm", plist, {"Content-Type: application/x-apple-aspen-mdm-checkin"});
  }
  HttpResult Report(const std::string& plist) {
    return HttpCall("PUT", proc->url() + "/mdm", plist, {"Content-Type: application/x-apple-aspen-mdm"});
  }
  HttpResult Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return HttpCall(method, proc->url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
  void Enroll(const std::string& udid) {
    REQUIRE(Checkin(AuthenticatePlist(udid)).status == 200);
    REQUIRE(Checkin(TokenUpdatePlist(udid)).status == 200);
  }
  // The plugin's status route for one endpoint (an empty Value if absent).
  Value EndpointStatus(const std::string& name) {
    auto r = Api("GET", "/plugins/webhook/status");
    if (r.status != 200) return Value();
    auto v = orchard::plist::ParseJson(r.body);
    if (!v.ok()) return Value();
    const Value* eps = v->Find("endpoints");
    if (!eps || !eps->AsArray()) return Value();
    for (const Value& e : *eps->AsArray())
      if (e.GetString("name") == name) return e;
    return Value();
  }
  int64_t Counter(const std::string& endpoint, const char* field) {
    Value e = EndpointStatus(endpoint);
    const Value* f = e.Find(field);
    return f && f->AsInteger() ? *f->AsInteger() : -1;
  }
};

std::string Conf(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += "plugin.webhook." + l + "\n";
  return out;
}

std::multiset<std::string> Topics(const std::vector<Receiver::Request>& rs) {
  std::multiset<std::string> out;
  for (const auto& r : rs) out.insert(std::string(Json(r.body).GetString("topic")));
  return out;
}

// Every event_id at most once.
void CheckNoDuplicates(const std::vector<Receiver::Request>& rs) {
  std::map<std::string, int> ids;
  for (const auto& r : rs) ids[std::string(Json(r.body).GetString("event_id"))] += 1;
  for (const auto& [id, n] : ids) {
    INFO("event_id " << id);
    CHECK(n == 1);
  }
}

const Receiver::Request* FindTopic(const std::vector<Receiver::Request>& rs, const std::string& topic) {
  for (const auto& r : rs)
    if (Json(r.body).GetString("topic") == topic) return &r;
  return nullptr;
}

}  // namespace

TEST_CASE("webhook posts check-ins and command reports in the NanoMDM shape, signed with HMAC", "[webhook]") {
  Receiver rx("hook-secret-1");
  REQUIRE(rx.Start());
  Orchard o(Conf({"endpoint.main.url = " + rx.url("/hook"), "endpoint.main.secret = hook-secret-1",
                  "orchard_events = true", "poll_ms = 50"}));
  o.Start();
  auto plugin = o.Api("GET", "/v1/plugins/webhook");
  INFO(plugin.body << "\n" << o.Log());
  REQUIRE(plugin.status == 200);
  REQUIRE(Json(plugin.body).GetString("status") == "loaded");

  const std::string udid = "0000AAAA-WEBHOOK-SHAPE-0001";
  const std::string auth = AuthenticatePlist(udid);
  o.Enroll(udid);
  // A command, fetched on Idle and acknowledged.
  Value cmd;
  cmd.Set("RequestType", S("DeviceInformation"));
  Value queries = Value::MakeArray();
  queries.AsArray()->push_back(S("OSVersion"));
  cmd.Set("Queries", queries);
  Value full;
  full.Set("CommandUUID", S("WH-CMD-1"));
  full.Set("Command", cmd);
  REQUIRE(o.Api("PUT", "/v1/enqueue/" + udid + "?nopush=1", orchard::plist::ToXml(full)).status == 200);
  Value idle;
  idle.Set("UDID", S(udid));
  idle.Set("Status", S("Idle"));
  REQUIRE(o.Report(orchard::plist::ToXml(idle)).status == 200);
  Value ack;
  ack.Set("UDID", S(udid));
  ack.Set("Status", S("Acknowledged"));
  ack.Set("CommandUUID", S("WH-CMD-1"));
  Value qr;
  qr.Set("OSVersion", S("17.4"));
  ack.Set("QueryResponses", qr);
  REQUIRE(o.Report(orchard::plist::ToXml(ack)).status == 200);

  REQUIRE(WaitFor([&] {
    auto t = Topics(rx.Requests());
    return t.count("mdm.Authenticate") && t.count("mdm.TokenUpdate") && t.count("mdm.Connect") &&
           t.count("orchard.enrollment.enrolled");
  }));
  const auto reqs = rx.Requests();
  for (const auto& r : reqs) {
    INFO(r.body);
    CHECK(r.path == "/hook");
    CHECK(r.hmac_ok);
  }

  // mdm.Authenticate: checkin_event with udid and the device's message.
  const Receiver::Request* a = FindTopic(reqs, "mdm.Authenticate");
  REQUIRE(a);
  Value body = Json(a->body);
  CHECK(!body.GetString("event_id").empty());
  CHECK(body.GetString("created_at").size() >= 20);
  const Value* ce = body.Find("checkin_event");
  REQUIRE(ce);
  CHECK(ce->GetString("udid") == udid);
  auto raw = orchard::plist::ParseXml(UnB64(std::string(ce->GetString("raw_payload"))));
  REQUIRE(raw.ok());
  auto sent = orchard::plist::ParseXml(auth);
  REQUIRE(sent.ok());
  CHECK(*raw == *sent);  // exactly the message (Orchard's ReEnrollment is not added)
  CHECK(body.Find("acknowledge_event") == nullptr);

  // mdm.TokenUpdate: the message without its secrets; the first one has tally 1.
  const Receiver::Request* tu = FindTopic(reqs, "mdm.TokenUpdate");
  REQUIRE(tu);
  body = Json(tu->body);
  ce = body.Find("checkin_event");
  REQUIRE(ce);
  CHECK(ce->GetString("udid") == udid);
  const Value* tally = ce->Find("token_update_tally");
  REQUIRE(tally);
  REQUIRE(tally->AsInteger());
  CHECK(*tally->AsInteger() == 1);
  raw = orchard::plist::ParseXml(UnB64(std::string(ce->GetString("raw_payload"))));
  REQUIRE(raw.ok());
  CHECK(raw->GetString("MessageType") == "TokenUpdate");
  CHECK(raw->GetString("UDID") == udid);
  CHECK(raw->GetString("Topic") == "com.apple.mgmt.test");
  CHECK(raw->Find("Token") == nullptr);
  CHECK(raw->Find("PushMagic") == nullptr);
  CHECK(raw->Find("FirstTokenUpdate") == nullptr);
  CHECK(tu->body.find("magic-secret") == std::string::npos);

  // mdm.Connect: acknowledge_event with status, command_uuid and the report.
  const Receiver::Request* c = FindTopic(reqs, "mdm.Connect");
  REQUIRE(c);
  body = Json(c->body);
  const Value* ae = body.Find("acknowledge_event");
  REQUIRE(ae);
  CHECK(ae->GetString("udid") == udid);
  CHECK(ae->GetString("status") == "Acknowledged");
  CHECK(ae->GetString("command_uuid") == "WH-CMD-1");
  raw = orchard::plist::ParseXml(UnB64(std::string(ae->GetString("raw_payload"))));
  REQUIRE(raw.ok());
  CHECK(*raw == ack);

  // Orchard-specific events: orchard.<type> with the event's payload.
  const Receiver::Request* en = FindTopic(reqs, "orchard.enrollment.enrolled");
  REQUIRE(en);
  body = Json(en->body);
  const Value* oe = body.Find("orchard_event");
  REQUIRE(oe);
  CHECK(oe->GetString("type") == "enrollment.enrolled");
  CHECK(!oe->GetString("cursor").empty());
  CHECK(!oe->GetString("enrollment_id").empty());
  REQUIRE(oe->Find("payload"));
  CHECK(oe->Find("payload")->GetString("MessageType") == "TokenUpdate");

  // Delivered records leave the outbox; the status route says so.
  CHECK(WaitFor([&] { return o.Counter("main", "depth") == 0; }));
  Value st = o.EndpointStatus("main");
  CHECK(st.GetString("url") == rx.url("/hook"));
  CHECK(st.GetBool("signed", false));
  CHECK(o.Counter("main", "delivered") >= 4);
  CheckNoDuplicates(rx.Requests());
  // The secret is never logged.
  CHECK(o.Log().find("hook-secret-1") == std::string::npos);
}

TEST_CASE("webhook retries while the receiver is down and delivers once it is back", "[webhook]") {
  Receiver rx("s2");
  REQUIRE(rx.Start());
  const int port = rx.port();
  rx.Stop();  // the port now refuses connections
  Orchard o(Conf({"endpoint.main.url = " + rx.url("/down"), "endpoint.main.secret = s2", "backoff_min_ms = 50",
                  "backoff_max_ms = 200", "poll_ms = 50", "max_attempts = 1000"}));
  o.Start();
  o.Enroll("0000BBBB-WEBHOOK-DOWN-0001");
  INFO(o.Log());
  REQUIRE(WaitFor([&] { return o.Counter("main", "failed_attempts") >= 3; }));
  CHECK(o.Counter("main", "depth") == 2);
  CHECK(o.Counter("main", "delivered") == 0);

  // A 503 is retried too.
  REQUIRE(rx.Start(port));
  rx.SetMode(Receiver::Mode::kFail503);
  const int64_t failed = o.Counter("main", "failed_attempts");
  REQUIRE(WaitFor([&] { return o.Counter("main", "failed_attempts") >= failed + 2; }));
  CHECK(rx.Count() == 0);

  rx.SetMode(Receiver::Mode::kOk);
  REQUIRE(WaitFor([&] { return rx.Count() >= 2 && o.Counter("main", "depth") == 0; }));
  auto t = Topics(rx.Requests());
  CHECK(t.count("mdm.Authenticate") == 1);
  CHECK(t.count("mdm.TokenUpdate") == 1);
  // In stream order for the device: Authenticate first.
  CHECK(Json(rx.Requests()[0].body).GetString("topic") == "mdm.Authenticate");
  for (const auto& r : rx.Requests()) CHECK(r.hmac_ok);
  CheckNoDuplicates(rx.Requests());
  CHECK(o.Counter("main", "dead") == 0);
}

TEST_CASE("webhook topic filters route each event to the endpoints that want it", "[webhook]") {
  Receiver rx("shared");
  REQUIRE(rx.Start());
  Orchard o(Conf({"endpoint.auth.url = " + rx.url("/auth"), "endpoint.auth.secret = shared",
                  "endpoint.auth.topics = mdm.Authenticate", "endpoint.rest.url = " + rx.url("/rest"),
                  "endpoint.rest.secret = shared", "endpoint.rest.topics = mdm.TokenUpdate, orchard.*",
                  "orchard_events = true", "poll_ms = 50"}));
  o.Start();
  o.Enroll("0000CCCC-WEBHOOK-FILTER-0001");
  REQUIRE(WaitFor([&] { return rx.Count("/auth") >= 1 && rx.Count("/rest") >= 2; }));
  REQUIRE(WaitFor([&] { return o.Counter("auth", "depth") == 0 && o.Counter("rest", "depth") == 0; }));
  auto auth = Topics(rx.Requests("/auth"));
  auto rest = Topics(rx.Requests("/rest"));
  CHECK(auth == std::multiset<std::string>{"mdm.Authenticate"});
  CHECK(rest.count("mdm.TokenUpdate") == 1);
  CHECK(rest.count("orchard.enrollment.enrolled") == 1);
  CHECK(rest.count("mdm.Authenticate") == 0);
  for (const auto& t : rest) CHECK((t == "mdm.TokenUpdate" || t.rfind("orchard.", 0) == 0));
  // The same event has the same event_id everywhere; no endpoint got one twice.
  CheckNoDuplicates(rx.Requests("/auth"));
  CheckNoDuplicates(rx.Requests("/rest"));
}

TEST_CASE("webhook events undelivered at kill -9 are delivered after the restart", "[webhook]") {
  Receiver rx("s4");
  REQUIRE(rx.Start());
  rx.SetMode(Receiver::Mode::kFail503);
  Orchard o(Conf({"endpoint.main.url = " + rx.url("/k"), "endpoint.main.secret = s4", "backoff_min_ms = 100",
                  "backoff_max_ms = 300", "poll_ms = 50"}));
  o.Start();
  for (int i = 0; i < 3; ++i) o.Enroll("0000DDDD-WEBHOOK-KILL-000" + std::to_string(i));
  // All six records are committed to the outbox, none delivered.
  REQUIRE(WaitFor([&] { return o.Counter("main", "depth") == 6; }));
  CHECK(rx.Count() == 0);
  o.proc->Kill();

  rx.SetMode(Receiver::Mode::kOk);
  o.Start();  // same data dir
  REQUIRE(WaitFor([&] { return rx.Count() >= 6 && o.Counter("main", "depth") == 0; }));
  auto t = Topics(rx.Requests());
  CHECK(t.count("mdm.Authenticate") == 3);
  CHECK(t.count("mdm.TokenUpdate") == 3);
  CheckNoDuplicates(rx.Requests());
  // Nothing more arrives once the outbox is empty.
  const size_t n = rx.Count();
  o.Enroll("0000DDDD-WEBHOOK-KILL-0009");
  REQUIRE(WaitFor([&] { return rx.Count() >= n + 2 && o.Counter("main", "depth") == 0; }));
  CHECK(rx.Count() == n + 2);
  CheckNoDuplicates(rx.Requests());
}

TEST_CASE("webhook times out a receiver that never answers without stalling the other endpoint", "[webhook]") {
  Receiver hang("s5");
  REQUIRE(hang.Start());
  hang.SetMode(Receiver::Mode::kHang);
  Receiver ok("s5");
  REQUIRE(ok.Start());
  Orchard o(Conf({"endpoint.hang.url = " + hang.url("/h"), "endpoint.hang.secret = s5",
                  "endpoint.hang.timeout_ms = 400", "endpoint.ok.url = " + ok.url("/ok"), "endpoint.ok.secret = s5",
                  "backoff_min_ms = 100", "backoff_max_ms = 200", "poll_ms = 50"}));
  o.Start();
  for (int i = 0; i < 5; ++i) o.Enroll("0000EEEE-WEBHOOK-HANG-000" + std::to_string(i));
  // The healthy endpoint gets everything while the other hangs.
  REQUIRE(WaitFor([&] { return ok.Count() >= 10; }, std::chrono::seconds(10)));
  CHECK(hang.connections() >= 1);
  // The hanging one is timed out and retried (a new connection each time).
  REQUIRE(WaitFor([&] { return o.Counter("hang", "failed_attempts") >= 2; }));
  Value st = o.EndpointStatus("hang");
  CHECK(std::string(st.GetString("last_error")).find("imeout") != std::string::npos);
  CHECK(o.Counter("hang", "depth") == 10);
  CHECK(o.Counter("hang", "delivered") == 0);
  CHECK(o.Counter("ok", "depth") == 0);
  CheckNoDuplicates(ok.Requests());
  hang.Stop();
}

TEST_CASE("webhook refuses a bad config with a clear status and log line", "[webhook]") {
  Orchard o(Conf({"endpoint.main.url = ftp://example.com/hook", "endpoint.main.secret = never-log-me"}));
  o.Start();
  auto r = o.Api("GET", "/v1/plugins/webhook");
  INFO(r.body << "\n" << o.Log());
  REQUIRE(r.status == 200);
  Value v = Json(r.body);
  CHECK(v.GetString("status") == "error");
  CHECK(v.GetString("error") == "init_failed");
  CHECK(WaitFor([&] {
    return o.Log().find("event=webhook_config_invalid key=endpoint.main.url") != std::string::npos;
  }));
  CHECK(o.Log().find("never-log-me") == std::string::npos);
  // The server runs on: devices still check in.
  CHECK(o.Checkin(AuthenticatePlist("0000FFFF-WEBHOOK-BAD-0001")).status == 200);
}

TEST_CASE("webhook refuses unknown keys and bad numbers naming the key", "[webhook]") {
  Orchard o(Conf({"endpoint.main.url = http://127.0.0.1:9/x", "endpoint.main.concurency = 4",
                  "max_attempts = many"}));
  o.Start();
  auto r = o.Api("GET", "/v1/plugins/webhook");
  REQUIRE(r.status == 200);
  CHECK(Json(r.body).GetString("status") == "error");
  INFO(o.Log());
  CHECK(WaitFor([&] {
    return o.Log().find("event=webhook_config_invalid key=endpoint.main.concurency reason=") != std::string::npos &&
           o.Log().find("unknown endpoint setting") != std::string::npos;
  }));
}

// Not a CI test (hidden tag): how fast the sender drains a backlog to a local
// receiver that checks every HMAC. Run: webhook_it "[.bench]" -s
TEST_CASE("webhook drain throughput to a local receiver with HMAC", "[.bench]") {
  const int devices = 4000;
  Receiver rx("bench-secret");
  REQUIRE(rx.Start());
  const int port = rx.port();
  rx.Stop();
  Orchard o(Conf({"endpoint.main.url = " + rx.url("/b"), "endpoint.main.secret = bench-secret",
                  "orchard_events = true", "backoff_min_ms = 300", "backoff_max_ms = 400",
                  "max_attempts = 100000"}));
  o.Start();
  std::vector<std::thread> threads;
  std::atomic<int> failed{0};
  const auto t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = t; i < devices; i += 4) {
        const std::string udid = "BENCH-" + std::to_string(100000 + i);
        if (o.Checkin(AuthenticatePlist(udid)).status != 200) ++failed;
        if (o.Checkin(TokenUpdatePlist(udid)).status != 200) ++failed;
      }
    });
  for (auto& t : threads) t.join();
  REQUIRE(failed == 0);
  const auto t1 = std::chrono::steady_clock::now();
  const size_t n = static_cast<size_t>(devices) * 3;
  REQUIRE(WaitFor([&] { return o.Counter("main", "depth") == static_cast<int64_t>(n); }, std::chrono::seconds(120)));
  const auto t2 = std::chrono::steady_clock::now();
  REQUIRE(rx.Start(port));
  const auto t3 = std::chrono::steady_clock::now();
  REQUIRE(WaitFor([&] { return rx.Count() >= n; }, std::chrono::seconds(120)));
  const auto t4 = std::chrono::steady_clock::now();
  auto ms = [](auto a, auto b) { return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count(); };
  size_t bad = 0;
  for (const auto& r : rx.Requests()) bad += !r.hmac_ok;
  CHECK(bad == 0);
  CheckNoDuplicates(rx.Requests());
  WARN("check-ins: " << devices * 2 << " in " << ms(t0, t1) << " ms; outbox filled (" << n << " records) after "
                     << ms(t0, t2) << " ms; drained " << n << " deliveries in " << ms(t3, t4) << " ms = "
                     << (n * 1000.0 / std::max<int64_t>(1, ms(t3, t4))) << "/s (includes up to 400 ms of backoff); "
                     << rx.connections() << " connections");
}
