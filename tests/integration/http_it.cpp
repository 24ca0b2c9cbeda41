// The HTTP layer of the real orchardd, spoken to in raw bytes: keep-alive by
// default, refused framing closes the connection, and what a device sends
// reaches the log escaped.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "support/orchardd_process.h"
#include "support/raw_http.h"

using namespace orchard::testing;
using namespace std::string_literals;

namespace {

struct Orchardd {
  std::string dir = MakeTempDir("orchard-http-it");
  std::unique_ptr<OrchardProcess> proc;

  Orchardd() {
    proc = std::make_unique<OrchardProcess>(dir + "/data", std::vector<std::string>{"--insecure-dev"});
    REQUIRE(proc->Start());
  }
  ~Orchardd() {
    proc.reset();
    std::filesystem::remove_all(dir);
    std::filesystem::remove(dir + "/data.log");
  }
  std::unique_ptr<RawConnection> Connect() {
    auto c = RawConnection::Connect(static_cast<uint16_t>(proc->port()));
    REQUIRE(c != nullptr);
    return c;
  }
};

bool IEquals(const std::string& a, const char* b) { return strcasecmp(a.c_str(), b) == 0; }

std::string Checkin(const std::string& message_type, const std::string& udid) {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
         "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
         "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
         "<plist version=\"1.0\"><dict>"
         "<key>MessageType</key><string>" + message_type + "</string>"
         "<key>UDID</key><string>" + udid + "</string>"
         "<key>Topic</key><string>com.apple.mgmt.test</string>"
         "</dict></plist>";
}

std::string Put(const std::string& path, const std::string& body) {
  return "PUT " + path + " HTTP/1.1\r\nHost: orchard\r\nContent-Type: application/x-apple-aspen-mdm-checkin\r\n"
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

TEST_CASE("orchardd keeps HTTP/1.1 connections open and closes them when asked", "[integration][http]") {
  Orchardd o;
  auto c = o.Connect();
  for (int i = 0; i < 3; ++i) {
    REQUIRE(c->Send("GET /healthz HTTP/1.1\r\nHost: orchard\r\n\r\n"));
    auto r = c->Read();
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(IEquals(r->Header("Connection"), "keep-alive"));
  }
  REQUIRE(c->Send("GET /metrics HTTP/1.1\r\nHost: orchard\r\nConnection: close\r\n\r\n"));
  auto m = c->Read();
  REQUIRE(m);
  CHECK(m->status == 200);
  CHECK(IEquals(m->Header("Connection"), "close"));
  CHECK(m->body.find("orchard_http_open_connections 1\n") != std::string::npos);
  CHECK(m->body.find("orchard_http_max_connections ") != std::string::npos);
  CHECK(c->WaitClosed() == RawConnection::End::kClosed);
}

TEST_CASE("orchardd closes a connection after refusing its framing", "[integration][http]") {
  Orchardd o;
  auto c = o.Connect();
  REQUIRE(c->Send("PUT /mdm HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 50\r\n\r\n"
                  "abcdGET /healthz HTTP/1.1\r\n\r\n"));
  auto r = c->Read();
  REQUIRE(r);
  CHECK(r->status == 400);
  CHECK(c->WaitClosed() == RawConnection::End::kClosed);
  CHECK(c->pending().empty());
  auto m = HttpCall("GET", o.proc->url() + "/metrics");
  CHECK(m.body.find("orchard_http_refused_requests_total{status=\"400\"} 1") != std::string::npos);
}

TEST_CASE("device fields with newlines, escapes and invalid UTF-8 are logged escaped on one line",
          "[integration][http][log]") {
  Orchardd o;
  auto c = o.Connect();
  // An unknown MessageType is refused and logged with the reason quoting it.
  // (MessageType is limited to 64 bytes.)
  const std::string type = "Idle\nts=2030 level=error event=forged \x1b[31m\xff\xfe";
  REQUIRE(c->Send(Put("/mdm/checkin", Checkin(type, "UDID-1"))));
  auto r1 = c->Read();
  REQUIRE(r1);
  CHECK(r1->status == 400);
  // An Authenticate whose UDID carries control bytes and invalid UTF-8.
  REQUIRE(c->Send(Put("/mdm/checkin", Checkin("Authenticate", "U\x1b[31m\xc3\x28\nX"))));
  auto r2 = c->Read();
  REQUIRE(r2);

  o.proc->Stop();  // flushes and ends the log
  const std::string log = ReadFile(o.proc->log_path());
  INFO(log);
  // The refusal is one line whose reason is one quoted field.
  const size_t at = log.find("event=device_request_refused");
  REQUIRE(at != std::string::npos);
  const std::string line = log.substr(at, log.find('\n', at) - at);
  CHECK(line.find(R"(reason="unknown check-in MessageType 'Idle\nts=2030 level=error )"
                  R"(event=forged \x1b[31m\xff\xfe'")") != std::string::npos);
  // No forged line, and nothing raw anywhere.
  CHECK(log.find("\nts=2030") == std::string::npos);
  CHECK(log.find("event=forged") == at + line.find("event=forged"));
  CHECK(log.find('\x1b') == std::string::npos);
  CHECK(log.find('\xff') == std::string::npos);
  CHECK(log.find("\xc3\x28") == std::string::npos);
  CHECK(log.find("U\\x1b[31m\\xc3(\\nX") != std::string::npos);  // the UDID, escaped
}
