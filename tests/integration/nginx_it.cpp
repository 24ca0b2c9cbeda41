// End-to-end through the production front end: simulated devices speak TLS with
// their identity as client certificate to the real nginx, configured by
// examples/nginx/orchard.conf itself (placeholders substituted), which forwards
// to the real orchardd. Admin calls go to orchardd directly.
//
// Reported as Skipped by ctest when /usr/sbin/nginx is absent (CI installs nginx-light).
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <curl/curl.h>

#include "plist/plist.h"
#include "sim/simulator.h"
#include "support/orchardd_process.h"
#include "support/skip.h"
#include "support/test_pki.h"

using namespace orchard;
using namespace orchard::testing;
using plist::Value;

namespace {

constexpr const char* kKey = "nginx-integration-api-key-0001";
constexpr const char* kNginx = "/usr/sbin/nginx";

bool HaveNginx() { return access(kNginx, X_OK) == 0; }

#define REQUIRE_NGINX()                                                                  \
  do {                                                                                   \
    if (!HaveNginx()) ORCHARD_SKIP(kNginx << " not found (apt-get install nginx-light)"); \
  } while (0)

// A port that was free a moment ago (the kernel picks it; we release it).
int PickFreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  close(fd);
  return ntohs(a.sin_port);
}

// A TCP connection to 127.0.0.1:port, closed on destruction; -1 when refused.
struct Socket {
  int fd = -1;
  explicit Socket(int port) {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(fd);
      fd = -1;
    }
  }
  ~Socket() {
    if (fd >= 0) close(fd);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  bool ok() const { return fd >= 0; }
};

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
  return s;
}

// The real nginx as a child process (master + one worker), in its own prefix
// directory. Stopped (SIGTERM + waitpid) and removed on destruction.
class NginxProcess {
 public:
  struct Paths {
    std::string upstream;   // orchardd host:port
    std::string device_ca;  // PEM file
    std::string cert_pem, key_pem;  // server identity (contents)
  };

  ~NginxProcess() {
    Stop();
    if (!prefix_.empty()) std::filesystem::remove_all(prefix_);
  }

  // Writes the config derived from examples/nginx/orchard.conf and starts
  // nginx; returns once it accepts TCP connections.
  void Start(const Paths& p) {
    prefix_ = MakeTempDir("orchard-nginx");
    REQUIRE(!prefix_.empty());
    // When the master runs as root the workers run as nobody: they must reach
    // the temp directories below the prefix.
    chmod(prefix_.c_str(), 0755);
    REQUIRE(WriteFile(prefix_ + "/server.pem", p.cert_pem));
    REQUIRE(WriteFile(prefix_ + "/server.key", p.key_pem));
    chmod((prefix_ + "/server.key").c_str(), 0600);

    const std::string example = ReadFile(std::string(ORCHARD_SOURCE_DIR) + "/examples/nginx/orchard.conf");
    REQUIRE(example.find("server {") != std::string::npos);
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = PickFreePort();
      std::string conf = example;
      conf = Replace(conf, "@LISTEN@", "127.0.0.1:" + std::to_string(port_));
      conf = Replace(conf, "@SERVER_NAME@", "localhost");
      conf = Replace(conf, "@CERT@", prefix_ + "/server.pem");
      conf = Replace(conf, "@KEY@", prefix_ + "/server.key");
      conf = Replace(conf, "@DEVICE_CA@", p.device_ca);
      conf = Replace(conf, "@UPSTREAM@", p.upstream);
      conf = Replace(conf, "@ACCESS_LOG@", prefix_ + "/access.log");
      // Every placeholder of the example must be known to this test.
      std::smatch left;
      if (std::regex_search(conf, left, std::regex("@[A-Z_]+@")))
        FAIL("examples/nginx/orchard.conf has a placeholder this test does not know: " << left.str());
      REQUIRE(WriteFile(prefix_ + "/orchard.conf", conf));
      // The main file is what /etc/nginx/nginx.conf provides on Debian, with
      // the temp paths moved into the prefix.
      std::string main_conf = "worker_processes 1;\nevents { worker_connections 1024; }\nhttp {\n";
      for (const char* t : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"})
        main_conf += std::string("  ") + t + "_temp_path " + prefix_ + "/tmp_" + t + ";\n";
      main_conf += "  default_type application/octet-stream;\n";
      main_conf += "  include " + prefix_ + "/orchard.conf;\n}\n";
      REQUIRE(WriteFile(prefix_ + "/nginx.conf", main_conf));
      if (Launch()) return;
      INFO("nginx output:\n" << Log());
      if (Log().find("Address already in use") == std::string::npos) FAIL("nginx did not start");
    }
    FAIL("nginx could not bind a free port in 3 attempts");
  }

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);  // fast shutdown; the master waits for its workers
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  int port() const { return port_; }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  std::string Log() const { return ReadFile(prefix_ + "/nginx.stderr"); }
  std::string AccessLog() const { return ReadFile(prefix_ + "/access.log"); }

 private:
  bool Launch() {
    const std::string globals = "daemon off; master_process on; pid " + prefix_ +
                                "/nginx.pid; error_log stderr notice;";
    std::vector<std::string> argv = {kNginx, "-p", prefix_ + "/", "-c", prefix_ + "/nginx.conf",
                                     "-g", globals};
    const std::string log = prefix_ + "/nginx.stderr";
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);  // no orphaned nginx if the test process dies
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      std::vector<char*> cargv;
      for (auto& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      execv(kNginx, cargv.data());
      _exit(127);
    }
    // Ready once the master has bound its socket and started the worker (it
    // logs "start worker process" after binding; a port someone else took makes
    // it exit instead) and the socket accepts. Give up if nginx exits or after a
    // bounded number of attempts (about 10 s).
    for (int i = 0; i < 1000; ++i) {
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      if (Log().find("start worker process") != std::string::npos && Socket(port_).ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // poll interval
    }
    Stop();
    return false;
  }

  std::string prefix_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// A temporary directory, removed with everything in it on destruction.
struct TempDir {
  std::string path = MakeTempDir("orchard-nginx-it");
  ~TempDir() {
    if (!path.empty()) std::filesystem::remove_all(path);
  }
};

// orchardd + nginx in front of it, and the CAs both sides need. Members clean
// up after themselves (in reverse order) even when the constructor fails.
struct Stack {
  TempDir tmp;
  const std::string dir = tmp.path;
  std::unique_ptr<TestCa> device_ca = TestCa::Create("Orchard Device CA");
  std::unique_ptr<TestCa> tls_ca = TestCa::Create("Orchard TLS CA");
  std::unique_ptr<OrchardProcess> orchardd;
  NginxProcess nginx;

  Stack() {
    REQUIRE(!dir.empty());
    chmod(dir.c_str(), 0755);
    REQUIRE(device_ca->WriteCertPem(dir + "/device-ca.pem"));
    REQUIRE(tls_ca->WriteCertPem(dir + "/tls-ca.pem"));
    orchardd = std::make_unique<OrchardProcess>(
        dir + "/data", std::vector<std::string>{"--device-ca", dir + "/device-ca.pem",
                                                "--cert-header", "Client-Cert", "--api-key", kKey,
                                                "--threads", "2"});
    INFO("orchardd log: " << orchardd->log_path());
    REQUIRE(orchardd->Start());
    IssueOptions so;
    so.common_name = "localhost";
    so.dns_name = "localhost,127.0.0.1";
    so.server_auth_eku = true;
    so.client_auth_eku = false;
    Identity server = tls_ca->Issue(so);
    nginx.Start({"127.0.0.1:" + std::to_string(orchardd->port()), dir + "/device-ca.pem",
                 server.cert_pem, server.key_pem});
  }
  ~Stack() {
    nginx.Stop();
    orchardd.reset();
  }

  sim::SimConfig Config() const {
    sim::SimConfig c;
    c.base_url = nginx.url();
    c.cert_mode = sim::CertMode::kTls;
    c.tls_ca_file = dir + "/tls-ca.pem";
    c.timeout_ms = 15000;
    return c;
  }

  std::unique_ptr<sim::Device> NewDevice(uint64_t seed, const Identity* identity = nullptr,
                                         sim::SimConfig config = {},
                                         sim::Platform platform = sim::Platform::kIos) {
    if (config.base_url == sim::SimConfig{}.base_url) config = Config();
    sim::DeviceState st = sim::RandomDeviceState(platform, seed);
    IssueOptions io;
    io.common_name = st.udid;
    auto d = sim::Device::Create(config, st, identity ? *identity : device_ca->Issue(io));
    REQUIRE(d.ok());
    return std::move(d.value());
  }

  HttpResult Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return HttpCall(method, orchardd->url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
  void Enqueue(const std::string& ids, const std::string& uuid, const std::string& type) {
    auto r = Api("PUT", "/v1/enqueue/" + ids + "?nopush=1", CommandPlist(uuid, type));
    INFO(r.body);
    REQUIRE(r.status == 200);
  }
  // The stored result's status, "" when there is none.
  std::string ResultStatus(const std::string& id, const std::string& uuid) {
    auto r = Api("GET", "/v1/enrollments/" + id + "/results/" + uuid);
    if (r.status != 200) return "";
    auto v = plist::ParseJson(r.body);
    REQUIRE(v.ok());
    return std::string(v->GetString("status"));
  }
  size_t QueueDepth(const std::string& id) {
    auto r = Api("GET", "/v1/enrollments/" + id + "/queue");
    REQUIRE(r.status == 200);
    auto v = plist::ParseJson(r.body);
    REQUIRE(v.ok());
    return v->Find("commands")->AsArray()->size();
  }

  static std::string CommandPlist(const std::string& uuid, const std::string& type) {
    Value cmd;
    cmd.Set("RequestType", Value::String(type));
    if (type == "DeviceInformation") {
      Value q = Value::MakeArray();
      for (const char* k : {"UDID", "SerialNumber", "OSVersion", "DeviceName", "Model"})
        q.AsArray()->push_back(Value::String(k));
      cmd.Set("Queries", q);
    }
    Value v;
    v.Set("CommandUUID", Value::String(uuid));
    v.Set("Command", cmd);
    return plist::ToXml(v);
  }
};

std::string StatusText(const Status& s) { return s.ok() ? "ok" : s.message(); }

// Sockets in TIME_WAIT that involve `port` (either end): each one is a TCP
// connection that was closed, so none should appear while nginx reuses its
// keep-alive connections to orchardd.
int TimeWaitCount(int port) {
  std::ifstream f("/proc/net/tcp");
  std::string line;
  std::getline(f, line);  // header
  int n = 0;
  char hexport[8];
  std::snprintf(hexport, sizeof hexport, "%04X", port);
  while (std::getline(f, line)) {
    std::istringstream is(line);
    std::string sl, local, remote, st;
    is >> sl >> local >> remote >> st;
    if (st != "06") continue;  // TCP_TIME_WAIT
    if (local.substr(local.size() - 4) == hexport || remote.substr(remote.size() - 4) == hexport) ++n;
  }
  return n;
}

// GET through nginx over TLS without a client certificate, optionally from
// another loopback source address.
HttpResult Get(const std::string& url, const std::string& ca_file, const char* source = nullptr) {
  HttpResult r;
  CURL* c = curl_easy_init();
  REQUIRE(c != nullptr);
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CAINFO, ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  if (source) curl_easy_setopt(c, CURLOPT_INTERFACE, source);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION,
                   +[](char* p, size_t s, size_t n, void* u) {
                     static_cast<std::string*>(u)->append(p, s * n);
                     return s * n;
                   });
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_slist* hs = curl_slist_append(nullptr, (std::string("X-API-Key: ") + kKey).c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) r.error = curl_easy_strerror(rc);
  else curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(hs);
  curl_easy_cleanup(c);
  return r;
}

}  // namespace

TEST_CASE("a fleet enrolls and reports over TLS client certificates through nginx", "[integration][nginx]") {
  REQUIRE_NGINX();
  Stack s;
  sim::FleetOptions fo;
  fo.devices = 20;
  fo.config = s.Config();
  fo.config.checkin_path = "/mdm";  // check-ins on /mdm (by Content-Type), reports on /mdm/connect
  fo.macos_fraction = 0.25;
  auto device_ca_copy = TestCa::Load(s.device_ca->cert_pem(), s.device_ca->key_pem());
  auto fleet_r = sim::Fleet::Create(fo, std::move(device_ca_copy));
  REQUIRE(fleet_r.ok());
  sim::Fleet& fleet = *fleet_r.value();

  sim::FleetStats enrolled = fleet.Enroll(4);
  INFO("first errors: " << (enrolled.first_errors.empty() ? "" : enrolled.first_errors[0]));
  INFO("nginx: " << s.nginx.Log());
  REQUIRE(enrolled.ok == 20);
  REQUIRE(enrolled.failed == 0);

  std::string ids;
  for (size_t i = 0; i < fleet.size(); ++i) {
    if (!ids.empty()) ids += ',';
    ids += fleet.device(i).udid();
    // The certificate nginx forwarded is bound to the enrollment.
    auto e = s.Api("GET", "/v1/enrollments/" + fleet.device(i).udid());
    REQUIRE(e.status == 200);
    auto ej = plist::ParseJson(e.body);
    REQUIRE(ej.ok());
    CHECK(ej->GetString("state") == "enrolled");
    CHECK(ej->GetString("cert_sha256") == fleet.device(i).identity().Sha256Hex());
  }
  s.Enqueue(ids, "NGX-DEVINFO-1", "DeviceInformation");
  s.Enqueue(ids, "NGX-SECINFO-1", "SecurityInfo");

  const int time_wait_before = TimeWaitCount(s.orchardd->port());
  sim::FleetStats run = fleet.RunSessions(4, 1);
  INFO("first errors: " << (run.first_errors.empty() ? "" : run.first_errors[0]));
  REQUIRE(run.ok == 20);
  CHECK(run.sessions.commands == 40);
  CHECK(run.sessions.acknowledged == 40);
  // nginx kept its upstream connections open (Connection: keep-alive to
  // Pistache): no connection to orchardd was closed during 60 requests.
  CHECK(TimeWaitCount(s.orchardd->port()) - time_wait_before < 5);

  for (size_t i = 0; i < fleet.size(); ++i) {
    const std::string& udid = fleet.device(i).udid();
    CHECK(s.ResultStatus(udid, "NGX-DEVINFO-1") == "Acknowledged");
    CHECK(s.ResultStatus(udid, "NGX-SECINFO-1") == "Acknowledged");
    CHECK(s.QueueDepth(udid) == 0);
  }
  // A second round: nothing left, every session is a single Idle.
  sim::FleetStats idle = fleet.RunSessions(4, 1);
  CHECK(idle.ok == 20);
  CHECK(idle.sessions.commands == 0);
  // The access log records the verified identity.
  CHECK(s.nginx.AccessLog().find("verify=SUCCESS") != std::string::npos);
}

TEST_CASE("NotNow through nginx: not redelivered in the same session, delivered in the next",
          "[integration][nginx]") {
  REQUIRE_NGINX();
  Stack s;
  auto d = s.NewDevice(101);
  REQUIRE(StatusText(d->Authenticate()) == "ok");
  REQUIRE(StatusText(d->TokenUpdate()) == "ok");
  d->responder().SetBehavior("DeviceInformation", sim::Behavior::kNotNowOnce);
  s.Enqueue(d->udid(), "NGX-NOTNOW-1", "DeviceInformation");
  s.Enqueue(d->udid(), "NGX-NOTNOW-2", "SecurityInfo");

  auto first = d->RunSession();
  REQUIRE(first.ok());
  CHECK(first->not_now == 1);
  CHECK(first->not_now_redelivered == 0);
  CHECK(first->acknowledged == 1);  // SecurityInfo still went through
  CHECK(s.ResultStatus(d->udid(), "NGX-NOTNOW-2") == "Acknowledged");
  CHECK(s.ResultStatus(d->udid(), "NGX-NOTNOW-1") != "Acknowledged");
  CHECK(s.QueueDepth(d->udid()) == 1);

  auto second = d->RunSession();
  REQUIRE(second.ok());
  REQUIRE(second->handled.size() == 1);
  CHECK(second->handled[0].first == "NGX-NOTNOW-1");
  CHECK(second->acknowledged == 1);
  CHECK(s.ResultStatus(d->udid(), "NGX-NOTNOW-1") == "Acknowledged");
  CHECK(s.QueueDepth(d->udid()) == 0);
}

TEST_CASE("nginx refuses untrusted, expired and missing device certificates and stores nothing",
          "[integration][nginx]") {
  REQUIRE_NGINX();
  Stack s;
  auto rogue_ca = TestCa::Create("Rogue CA");

  SECTION("certificate from another CA") {
    IssueOptions io;
    io.common_name = "rogue";
    Identity rogue = rogue_ca->Issue(io);
    auto d = s.NewDevice(201, &rogue);
    Status st = d->Authenticate();
    CHECK_FALSE(st.ok());
    // Presented but not verified: nginx answers 403 for every path; never 401.
    CHECK(d->last_http_status() == 403);  // nginx 495 -> 403 (error_page)
    CHECK(d->last_response().body == "client certificate refused\n");
    CHECK_FALSE(d->unenrolled());
    CHECK(s.Api("GET", "/v1/enrollments/" + d->udid()).status == 404);
  }
  SECTION("expired certificate from the right CA") {
    IssueOptions io;
    io.not_before_offset_s = -7200;
    io.not_after_offset_s = -60;
    Identity expired = s.device_ca->Issue(io);
    auto d = s.NewDevice(202, &expired);
    CHECK_FALSE(d->Authenticate().ok());
    CHECK(d->last_http_status() == 403);  // nginx 495 -> 403 (error_page)
    CHECK(d->last_response().body == "client certificate refused\n");
    CHECK(s.Api("GET", "/v1/enrollments/" + d->udid()).status == 404);
  }
  SECTION("right CA but no clientAuth purpose") {
    IssueOptions io;
    io.client_auth_eku = false;
    io.server_auth_eku = true;
    Identity server_only = s.device_ca->Issue(io);
    auto d = s.NewDevice(203, &server_only);
    CHECK_FALSE(d->Authenticate().ok());
    CHECK(d->last_http_status() == 403);  // nginx 495 -> 403 (error_page)
    CHECK(d->last_response().body == "client certificate refused\n");
    CHECK(s.Api("GET", "/v1/enrollments/" + d->udid()).status == 404);
  }
  SECTION("no certificate at all") {
    sim::SimConfig c = s.Config();
    c.cert_mode = sim::CertMode::kNone;
    auto d = s.NewDevice(204, nullptr, c);
    CHECK_FALSE(d->Authenticate().ok());
    CHECK(d->last_http_status() == 403);
    CHECK(s.Api("GET", "/v1/enrollments/" + d->udid()).status == 404);
  }
  // orchardd never saw a device request.
  auto events = s.Api("GET", "/v1/events?limit=100");
  REQUIRE(events.status == 200);
  CHECK(plist::ParseJson(events.body)->Find("events")->AsArray()->empty());
}

TEST_CASE("a Client-Cert header sent by the client cannot impersonate a device", "[integration][nginx]") {
  REQUIRE_NGINX();
  Stack s;
  auto victim = s.NewDevice(301);
  REQUIRE(StatusText(victim->Authenticate()) == "ok");
  REQUIRE(StatusText(victim->TokenUpdate()) == "ok");
  s.Enqueue(victim->udid(), "NGX-VICTIM-1", "DeviceInformation");
  const std::string idle = plist::ToXml(sim::BuildIdle(victim->state(), nullptr));
  const std::string forged_rfc = "Client-Cert: " + victim->identity().Rfc9440Header();
  const std::string forged_pem = "Client-Cert: " + victim->identity().EscapedPemHeader();

  SECTION("without a TLS client certificate: 403 from nginx") {
    sim::SimConfig c = s.Config();
    c.cert_mode = sim::CertMode::kNone;
    auto attacker = s.NewDevice(302, nullptr, c);
    for (const auto& forged : {forged_rfc, forged_pem}) {
      for (const char* path : {"/mdm", "/mdm/connect", "/mdm/checkin"}) {
        auto r = attacker->Put(path, "application/x-apple-aspen-mdm", idle, {forged});
        REQUIRE(r.ok());
        CHECK(r->status == 403);
        CHECK(r->body.find("NGX-VICTIM-1") == std::string::npos);
      }
    }
  }
  SECTION("with another valid device certificate: nginx overwrites the header") {
    auto attacker = s.NewDevice(303);
    REQUIRE(StatusText(attacker->Authenticate()) == "ok");
    auto r = attacker->Put("/mdm/connect", "application/x-apple-aspen-mdm", idle, {forged_rfc});
    REQUIRE(r.ok());
    CHECK(r->status == 403);  // orchardd: the attacker's certificate is not bound to the victim
    CHECK(r->body.find("NGX-VICTIM-1") == std::string::npos);
  }
  CHECK(s.QueueDepth(victim->udid()) == 1);
  // The victim itself still gets its command.
  auto session = victim->RunSession();
  REQUIRE(session.ok());
  CHECK(session->acknowledged == 1);
  CHECK(s.ResultStatus(victim->udid(), "NGX-VICTIM-1") == "Acknowledged");
}

TEST_CASE("silent and half-open clients do not delay a device session through nginx",
          "[integration][nginx]") {
  REQUIRE_NGINX();
  Stack s;
  std::vector<std::unique_ptr<Socket>> idle;
  for (int i = 0; i < 50; ++i) {
    idle.push_back(std::make_unique<Socket>(s.nginx.port()));
    REQUIRE(idle.back()->ok());
  }
  // The start of a TLS ClientHello (record header + handshake header), then silence.
  const unsigned char partial_hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01,
                                         0xfc, 0x03, 0x03, 0x11, 0x22, 0x33};
  for (int i = 0; i < 5; ++i) {
    idle.push_back(std::make_unique<Socket>(s.nginx.port()));
    REQUIRE(idle.back()->ok());
    REQUIRE(send(idle.back()->fd, partial_hello, sizeof partial_hello, MSG_NOSIGNAL) ==
            static_cast<ssize_t>(sizeof partial_hello));
  }
  // And plain-text clients that send half a request line (not even TLS).
  for (int i = 0; i < 3; ++i) {
    idle.push_back(std::make_unique<Socket>(s.nginx.port()));
    REQUIRE(idle.back()->ok());
    const char partial_request[] = "PUT /mdm HTTP/1.1\r\nHost: x\r\n";
    REQUIRE(send(idle.back()->fd, partial_request, sizeof partial_request - 1, MSG_NOSIGNAL) > 0);
  }

  const auto start = std::chrono::steady_clock::now();
  auto d = s.NewDevice(401);
  REQUIRE(StatusText(d->Authenticate()) == "ok");
  REQUIRE(StatusText(d->TokenUpdate()) == "ok");
  s.Enqueue(d->udid(), "NGX-SLOW-1", "DeviceInformation");
  auto session = d->RunSession();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(session.ok());
  CHECK(session->acknowledged == 1);
  CHECK(s.ResultStatus(d->udid(), "NGX-SLOW-1") == "Acknowledged");
  INFO("device enrollment + session took " << secs << " s with 58 stalled connections open");
  CHECK(secs < 3.0);
}

TEST_CASE("the user channel works through nginx", "[integration][nginx]") {
  REQUIRE_NGINX();
  Stack s;
  auto d = s.NewDevice(501, nullptr, s.Config(), sim::Platform::kMacos);
  REQUIRE(StatusText(d->Authenticate()) == "ok");
  REQUIRE(StatusText(d->TokenUpdate()) == "ok");
  const std::string user_id = "6A1D5E3C-9F1B-4C0E-8B9A-2D7E4F6A1B3C";
  REQUIRE(StatusText(d->UserTokenUpdate(user_id, "alice", "Alice Appleseed")) == "ok");
  const std::string user_enrollment = d->udid() + ":" + user_id;
  auto e = s.Api("GET", "/v1/enrollments/" + user_enrollment);
  REQUIRE(e.status == 200);

  s.Enqueue(user_enrollment, "NGX-USER-1", "ProfileList");
  s.Enqueue(d->udid(), "NGX-DEV-1", "SecurityInfo");
  auto user_session = d->RunSession(true);
  REQUIRE(user_session.ok());
  REQUIRE(user_session->handled.size() == 1);
  CHECK(user_session->handled[0].first == "NGX-USER-1");
  CHECK(s.ResultStatus(user_enrollment, "NGX-USER-1") == "Acknowledged");
  // The device channel's command stayed on the device channel.
  CHECK(s.QueueDepth(d->udid()) == 1);
  auto device_session = d->RunSession(false);
  REQUIRE(device_session.ok());
  REQUIRE(device_session->handled.size() == 1);
  CHECK(device_session->handled[0].first == "NGX-DEV-1");
  CHECK(s.ResultStatus(d->udid(), "NGX-DEV-1") == "Acknowledged");
}

TEST_CASE("nginx routes: admin API, metrics from loopback only, body limits, unknown paths",
          "[integration][nginx]") {
  REQUIRE_NGINX();
  Stack s;
  const std::string ca = s.dir + "/tls-ca.pem";
  auto version = Get(s.nginx.url() + "/version", ca);
  INFO(version.error << " " << version.body);
  CHECK(version.status == 200);
  CHECK(version.body.find("version") != std::string::npos);
  CHECK(Get(s.nginx.url() + "/v1/enrollments", ca).status == 200);
  CHECK(Get(s.nginx.url() + "/healthz", ca).status == 200);
  CHECK(Get(s.nginx.url() + "/metrics", ca).status == 200);
  // Any other loopback address stands for "not local" here.
  auto remote = Get(s.nginx.url() + "/metrics", ca, "127.0.0.2");
  if (remote.status != 0) CHECK(remote.status == 403);  // 0: the host cannot use 127.0.0.2
  CHECK(Get(s.nginx.url() + "/mdmx", ca).status == 404);
  CHECK(Get(s.nginx.url() + "/", ca).status == 404);

  // A large report (spooled to nginx's temp file) arrives intact; one over
  // 8 MiB is refused by nginx with 413.
  auto d = s.NewDevice(601);
  REQUIRE(StatusText(d->Authenticate()) == "ok");
  REQUIRE(StatusText(d->TokenUpdate()) == "ok");
  s.Enqueue(d->udid(), "NGX-BIG-1", "DeviceInformation");
  auto cmd = d->Put("/mdm/connect", "application/x-apple-aspen-mdm",
                    plist::ToXml(sim::BuildIdle(d->state(), nullptr)));
  REQUIRE(cmd.ok());
  REQUIRE(cmd->status == 200);
  auto command = plist::ParseXml(cmd->body);
  REQUIRE(command.ok());
  Value report = sim::BuildReport(d->state(), *command, sim::ReportStatus::kAcknowledged, nullptr);
  report.Find("QueryResponses")->Set("Padding", Value::String(std::string(2 * 1024 * 1024, 'p')));
  auto big = d->Put("/mdm/connect", "application/x-apple-aspen-mdm", plist::ToXml(report));
  REQUIRE(big.ok());
  CHECK(big->status == 200);
  CHECK(s.ResultStatus(d->udid(), "NGX-BIG-1") == "Acknowledged");
  auto too_big = d->Put("/mdm/connect", "application/x-apple-aspen-mdm",
                        "<plist><string>" + std::string(9 * 1024 * 1024, 'a') + "</string></plist>");
  REQUIRE(too_big.ok());
  CHECK(too_big->status == 413);
  CHECK_FALSE(d->unenrolled());
}
