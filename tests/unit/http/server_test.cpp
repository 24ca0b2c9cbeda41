// http::Server over real loopback sockets, speaking raw bytes: keep-alive,
// framing and request smuggling, send failures, exceptions, log escaping and
// the connection limit.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "http/metrics.h"
#include "http/server.h"
#include "support/raw_http.h"
#include "support/stderr_capture.h"

using namespace orchard;
using namespace std::chrono_literals;
using namespace std::string_literals;
using orchard::testing::RawConnection;
using orchard::testing::RawResponse;
using orchard::testing::StderrCapture;

namespace {

bool IEquals(const std::string& a, const char* b) { return strcasecmp(a.c_str(), b) == 0; }

// The line of text that contains needle (without its newline).
std::string LineWith(const std::string& text, const std::string& needle) {
  const size_t at = text.find(needle);
  if (at == std::string::npos) return "";
  const size_t begin = text.rfind('\n', at);
  const size_t end = text.find('\n', at);
  return text.substr(begin == std::string::npos ? 0 : begin + 1,
                     end == std::string::npos ? std::string::npos : end - (begin == std::string::npos ? 0 : begin + 1));
}

// A server whose dispatch echoes what it got, throws, blocks or answers big
// on request.
struct TestServer {
  http::Metrics metrics;
  std::unique_ptr<http::Server> server;
  std::mutex mu;
  std::condition_variable cv;
  bool blocked = false;   // a /block request is inside dispatch
  bool release = false;   // let it return

  explicit TestServer(size_t max_body = 1000) {
    http::ServerOptions o;
    o.max_request_bytes = max_body;
    o.max_response_bytes = 64 * 1024;
    o.metrics = &metrics;
    auto s = http::Server::Start(o, [this](const http::Request& r) { return Dispatch(r); });
    REQUIRE(s.ok());
    server = std::move(s.value());
  }
  ~TestServer() {
    {
      std::lock_guard lock(mu);
      release = true;
    }
    cv.notify_all();
    server->Stop();
  }

  http::Response Dispatch(const http::Request& r) {
    if (r.path.rfind("/throw-int", 0) == 0) throw 42;
    if (r.path.rfind("/throw", 0) == 0) throw std::runtime_error("boom\nts=0 level=error forged=1");
    if (r.path == "/big") return {200, "text/plain", std::string(100 * 1024, 'b'), {}};
    if (r.path == "/block") {
      std::unique_lock lock(mu);
      blocked = true;
      cv.notify_all();
      cv.wait_for(lock, 30s, [this] { return release; });
      return {200, "text/plain", "released\n", {}};
    }
    return {200, "text/plain", r.method + " " + r.path + (r.query.empty() ? "" : "?" + r.query) +
                                   " body=" + std::to_string(r.body.size()), {}};
  }

  std::unique_ptr<RawConnection> Connect() {
    auto c = RawConnection::Connect(server->port());
    REQUIRE(c != nullptr);
    return c;
  }

  bool WaitMetric(const std::string& line, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (metrics.Render().find(line) != std::string::npos) return true;
      std::this_thread::sleep_for(5ms);  // polling a counter, not synchronising threads
    }
    return false;
  }
};

}  // namespace

TEST_CASE("HTTP/1.1 requests without a Connection header share one connection", "[http][keepalive]") {
  TestServer s;
  auto c = s.Connect();
  REQUIRE(c->Send("GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r1 = c->Read();
  REQUIRE(r1);
  CHECK(r1->status == 200);
  CHECK(r1->body == "GET /echo?n=1 body=0");
  CHECK(IEquals(r1->Header("Connection"), "keep-alive"));
  REQUIRE(c->Send("PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd"));
  auto r2 = c->Read();
  REQUIRE(r2);
  CHECK(r2->status == 200);
  CHECK(r2->body == "PUT /echo body=4");
  CHECK(IEquals(r2->Header("Connection"), "keep-alive"));
}

TEST_CASE("Connection close is answered Close and the server closes the socket", "[http][keepalive]") {
  TestServer s;
  auto c = s.Connect();
  REQUIRE(c->Send("GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  auto r = c->Read();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(IEquals(r->Header("Connection"), "close"));
  CHECK(c->WaitClosed() == RawConnection::End::kClosed);
  CHECK(c->pending().empty());
}

TEST_CASE("HTTP/1.0 closes unless the client asks for keep-alive", "[http][keepalive]") {
  TestServer s;
  {
    auto c = s.Connect();
    REQUIRE(c->Send("GET /echo HTTP/1.0\r\n\r\n"));
    auto r = c->Read();
    REQUIRE(r);
    CHECK(r->version == "HTTP/1.0");
    CHECK(IEquals(r->Header("Connection"), "close"));
    CHECK(c->WaitClosed() == RawConnection::End::kClosed);
  }
  {
    auto c = s.Connect();
    REQUIRE(c->Send("GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto r1 = c->Read();
    REQUIRE(r1);
    CHECK(IEquals(r1->Header("Connection"), "keep-alive"));
    REQUIRE(c->Send("GET /echo?again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto r2 = c->Read();
    REQUIRE(r2);
    CHECK(r2->body == "GET /echo?again= body=0");
  }
}

TEST_CASE("pipelined requests are all answered in order", "[http][keepalive]") {
  TestServer s;
  auto c = s.Connect();
  REQUIRE(c->Send("GET /echo?n=1 HTTP/1.1\r\n\r\n"
                  "PUT /echo?n=2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                  "POST /echo?n=3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
                  "GET /echo?n=4 HTTP/1.1\r\nConnection: close\r\n\r\n"));
  const char* expected[] = {"GET /echo?n=1 body=0", "PUT /echo?n=2 body=3", "POST /echo?n=3 body=2",
                            "GET /echo?n=4 body=0"};
  for (const char* e : expected) {
    auto r = c->Read();
    REQUIRE(r);
    CHECK(r->body == e);
  }
  CHECK(c->WaitClosed() == RawConnection::End::kClosed);
}

TEST_CASE("a chunked request may end in a later write and the connection goes on", "[http][framing]") {
  TestServer s;
  auto c = s.Connect();
  REQUIRE(c->Send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"));
  REQUIRE(c->Send("\r\nGET /echo?next HTTP/1.1\r\n\r\n"));
  auto r1 = c->Read();
  REQUIRE(r1);
  CHECK(r1->body == "POST /echo body=3");
  auto r2 = c->Read();
  REQUIRE(r2);
  CHECK(r2->status == 200);
  CHECK(r2->body == "GET /echo?next= body=0");
}

TEST_CASE("HEAD is answered without a body and the connection stays usable", "[http][keepalive]") {
  TestServer s;
  auto c = s.Connect();
  REQUIRE(c->Send("HEAD /echo HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n"));
  auto head = c->Read(10s, true);
  REQUIRE(head);
  CHECK(head->status == 200);
  auto get = c->Read();
  REQUIRE(get);
  CHECK(get->body == "GET /echo body=0");
}

TEST_CASE("a refused request closes the connection and the bytes after it are never answered",
          "[http][framing]") {
  const std::string smuggled = "GET /echo?smuggled HTTP/1.1\r\n\r\n";
  struct Case {
    const char* name;
    std::string wire;
    int status;
  };
  const std::vector<Case> cases = {
      {"negative Content-Length", "POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
      {"conflicting Content-Length", "POST /echo HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 31\r\n\r\n", 400},
      {"Content-Length and chunked",
       "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"chunk size hex overflow",
       "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\n", 400},
      {"chunk size beyond the body limit",
       "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n", 413},
      {"negative chunk size", "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400},
      {"Content-Length beyond the body limit", "POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413},
      {"bare LF", "GET /echo HTTP/1.1\nContent-Length: 5\r\n\r\n", 400},
      {"unsupported Transfer-Encoding", "POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"method Pistache does not know", "BREW /echo HTTP/1.1\r\n\r\n", 400},
  };
  TestServer s;
  for (const auto& k : cases) {
    INFO(k.name);
    auto c = s.Connect();
    REQUIRE(c->Send(k.wire + smuggled));
    auto r = c->Read();
    REQUIRE(r);
    CHECK(r->status == k.status);
    CHECK(IEquals(r->Header("Connection"), "close"));
    CHECK(c->WaitClosed() == RawConnection::End::kClosed);
    CHECK(c->pending().empty());  // no second response
  }
}

TEST_CASE("after a 413 the rest of the body is not read as a new request", "[http][framing]") {
  TestServer s(/*max_body=*/1000);
  auto c = s.Connect();
  REQUIRE(c->Send("POST /echo HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + std::string(2000, 'A')));
  auto r = c->Read();
  REQUIRE(r);
  CHECK(r->status == 413);
  // The client goes on sending its "body", which carries a request.
  c->Send(std::string(2000, 'A') + "GET /echo?smuggled HTTP/1.1\r\n\r\n");
  const auto end = c->WaitClosed();
  CHECK(end != RawConnection::End::kTimeout);
  CHECK(c->pending().find("smuggled") == std::string::npos);
  CHECK(c->pending().find("HTTP/1.1") == std::string::npos);
}

TEST_CASE("a dispatch that throws anything is answered 500 and the connection stays usable", "[http]") {
  StderrCapture log;
  REQUIRE(log.ok());
  TestServer s;
  auto c = s.Connect();
  REQUIRE(c->Send("GET /throw-int HTTP/1.1\r\n\r\n"));
  auto r1 = c->Read();
  REQUIRE(r1);
  CHECK(r1->status == 500);
  REQUIRE(c->Send("GET /throw HTTP/1.1\r\n\r\n"));
  auto r2 = c->Read();
  REQUIRE(r2);
  CHECK(r2->status == 500);
  REQUIRE(c->Send("GET /echo HTTP/1.1\r\n\r\n"));
  auto r3 = c->Read();
  REQUIRE(r3);
  CHECK(r3->status == 200);
  const std::string text = log.Text();
  CHECK(text.find("event=handler_exception path=/throw-int error=non_standard_exception") != std::string::npos);
  // The exception text cannot start a forged log line.
  CHECK(text.find("\nts=0 level=error forged=1") == std::string::npos);
  CHECK(text.find("error=\"boom\\nts=0 level=error forged=1\"") != std::string::npos);
}

TEST_CASE("request bytes reach the log escaped, on one line", "[http][log]") {
  StderrCapture log;
  TestServer s;
  {
    // Control bytes in the target: refused, logged with the whole target.
    auto c = s.Connect();
    REQUIRE(c->Send("GET /p\x1b[31m\0\xff\xfe\nX-Forged: 1\r\n\r\n"s));
    auto r = c->Read();
    REQUIRE(r);
    CHECK(r->status == 400);
  }
  {
    // Invalid UTF-8 and an encoded newline in a path that reaches dispatch.
    auto c = s.Connect();
    REQUIRE(c->Send("GET /throw\xc3\x28\xff%0Ats=1 HTTP/1.1\r\n\r\n"s));
    auto r = c->Read();
    REQUIRE(r);
    CHECK(r->status == 500);
  }
  REQUIRE(log.WaitFor("event=request_refused"));
  const std::string text = log.Text();
  const std::string refused = LineWith(text, "event=request_refused");
  CHECK(refused.find(R"(target="/p\x1b[31m\x00\xff\xfe")") != std::string::npos);
  const std::string thrown = LineWith(text, "event=handler_exception");
  CHECK(thrown.find(R"(path="/throw\xc3(\xff%0Ats=1")") != std::string::npos);
  // Nothing raw: no escape byte, NUL or invalid UTF-8 anywhere in the log.
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.find('\0') == std::string::npos);
  CHECK(text.find('\xff') == std::string::npos);
  CHECK(text.find("\nX-Forged") == std::string::npos);
}

TEST_CASE("a response lost with its connection is logged with path and status and counted", "[http][send]") {
  StderrCapture log;
  TestServer s;
  auto c = s.Connect();
  REQUIRE(c->Send("GET /block HTTP/1.1\r\n\r\n"));
  {
    std::unique_lock lock(s.mu);
    REQUIRE(s.cv.wait_for(lock, 10s, [&] { return s.blocked; }));
  }
  c->Reset();  // the client is gone (RST) before the answer is written
  {
    std::lock_guard lock(s.mu);
    s.release = true;
  }
  s.cv.notify_all();
  CHECK(s.WaitMetric("orchard_http_send_failures_total{reason=\"connection_lost\"} 1"));
  CHECK(log.WaitFor("event=send_failed path=/block status=200 reason=connection_lost"));
}

TEST_CASE("a response over max_response_bytes is answered 500, logged and counted", "[http][send]") {
  StderrCapture log;
  TestServer s;
  auto c = s.Connect();
  REQUIRE(c->Send("GET /big HTTP/1.1\r\n\r\n"));
  auto r = c->Read();
  REQUIRE(r);
  CHECK(r->status == 500);
  CHECK(s.metrics.Render().find("orchard_http_send_failures_total{reason=\"too_large\"} 1") != std::string::npos);
  CHECK(log.WaitFor("event=send_failed path=/big status=200 reason=too_large"));
  REQUIRE(c->Send("GET /echo HTTP/1.1\r\n\r\n"));
  auto again = c->Read();
  REQUIRE(again);
  CHECK(again->status == 200);
}

namespace {

// CPU seconds (user + system) a process has used so far.
double CpuSeconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream is(stat.substr(paren + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && is >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return double(utime + stime) / double(sysconf(_SC_CLK_TCK));
}

}  // namespace

TEST_CASE("at the file descriptor limit the server neither spins nor stops answering", "[http][fdlimit]") {
  // The server runs in a child process whose RLIMIT_NOFILE is 64 (soft and
  // hard), so the limit cannot disturb this test process.
  int port_pipe[2], stop_pipe[2];
  REQUIRE(pipe(port_pipe) == 0);
  REQUIRE(pipe(stop_pipe) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(port_pipe[0]);
    close(stop_pipe[1]);
    rlimit rl{64, 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(3);
    http::ServerOptions o;  // max_connections derived from the limit
    auto s = http::Server::Start(o, [](const http::Request&) {
      return http::Response{200, "text/plain", "ok\n", {}};
    });
    if (!s.ok()) _exit(4);
    const uint16_t port = s.value()->port();
    if (write(port_pipe[1], &port, sizeof port) != sizeof port) _exit(5);
    char b;
    while (read(stop_pipe[0], &b, 1) < 0 && errno == EINTR) {
    }
    _exit(0);  // no Stop: the process ends here
  }
  close(port_pipe[1]);
  close(stop_pipe[0]);
  struct Reap {
    pid_t pid;
    int stop;
    ~Reap() {
      close(stop);
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } reap{child, stop_pipe[1]};
  uint16_t port = 0;
  REQUIRE(read(port_pipe[0], &port, sizeof port) == sizeof port);
  close(port_pipe[0]);

  // More connections than the child has descriptors, each with a request.
  constexpr int kClients = 100;
  std::vector<std::unique_ptr<RawConnection>> clients;
  for (int i = 0; i < kClients; ++i) {
    auto c = RawConnection::Connect(port);
    REQUIRE(c != nullptr);
    REQUIRE(c->Send("GET / HTTP/1.1\r\n\r\n"));
    clients.push_back(std::move(c));
  }
  // Every client is either served (200, stays open) or refused (503).
  int served = 0, refused = 0, silent = 0;
  const auto read_deadline = std::chrono::steady_clock::now() + 10s;
  for (auto& c : clients) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        read_deadline - std::chrono::steady_clock::now());
    auto r = c->Read(std::max(left, 1ms));
    if (!r) ++silent;
    else if (r->status == 200) ++served;
    else if (r->status == 503) ++refused;
  }
  INFO("served " << served << " refused " << refused << " silent " << silent);
  CHECK(silent == 0);
  CHECK(served > 0);
  CHECK(refused > 0);
  CHECK(served + refused == kClients);

  // Held at its limit, the server stays (nearly) idle: an accept loop spinning
  // on EMFILE would burn a whole core.
  const double before = CpuSeconds(child);
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(1s);  // the measurement window, not a synchronisation
  const double used = CpuSeconds(child) - before;
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO("child used " << used << " s of CPU in " << wall << " s");
  CHECK(used < 0.25 * wall);

  // Once clients leave, new ones are served again.
  clients.clear();
  bool answered = false;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!answered && std::chrono::steady_clock::now() < deadline) {
    auto c = RawConnection::Connect(port);
    REQUIRE(c != nullptr);
    REQUIRE(c->Send("GET / HTTP/1.1\r\n\r\n"));
    auto r = c->Read(5s);
    answered = r && r->status == 200;
  }
  CHECK(answered);
}
