// orchardctl against the real orchardd: a device enrolls with the fixture
// plists, then every check runs the real orchardctl binary through popen.
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "plist/plist.h"
#include "support/orchardd_process.h"

namespace {

using orchard::plist::Value;
using orchard::testing::HttpCall;
using orchard::testing::OrchardBinary;
using orchard::testing::OrchardProcess;

constexpr char kApiKey[] = "0123456789abcdef0123";
constexpr char kUdid[] = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69";
constexpr char kSerial[] = "F5JM992LF193";
constexpr char kCheckinType[] = "Content-Type: application/x-apple-aspen-mdm-checkin";

std::string FixturesDir() {
  return std::string(ORCHARD_SOURCE_DIR) + "/../shared/fixtures/devices";
}

bool HaveFixtures() {
  struct stat st;
  return stat((FixturesDir() + "/Authenticate.1.plist").c_str(), &st) == 0 &&
         stat((FixturesDir() + "/TokenUpdate.1.plist").c_str(), &st) == 0;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct CtlRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs orchardctl with args (already shell-quoted where needed); stderr is
// captured through a file in dir.
CtlRun RunCtl(const std::string& dir, const std::string& args, const std::string& env = "") {
  const std::string err_path = dir + "/ctl.stderr";
  const std::string cmd = env + " " + ShellQuote(OrchardBinary("orchardctl")) + " " + args + " 2>" +
                          ShellQuote(err_path) + " </dev/null";
  CtlRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = orchard::testing::ReadFile(err_path);
  return r;
}

Value ParseJsonOrFail(const std::string& text) {
  auto v = orchard::plist::ParseJson(text);
  INFO("output: " << text);
  REQUIRE(v.ok());
  return v.value();
}

std::string DeviceReport(const std::string& status, const std::string& extra = "") {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
         "<key>Status</key><string>" +
         status +
         "</string>"
         "<key>UDID</key><string>" +
         std::string(kUdid) + "</string>" + extra + "</dict></plist>\n";
}

// A running orchardd (insecure dev mode, known API key) in a fresh directory.
class Server {
 public:
  Server()
      : dir_(orchard::testing::MakeTempDir("orchard-ctl-test")),
        process_(dir_ + "/data", {"--insecure-dev", "--api-key", kApiKey}) {}
  ~Server() {
    process_.Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    std::filesystem::remove(process_.log_path(), ec);
  }

  bool Start() {
    const bool ok = process_.Start();
    if (!ok) UNSCOPED_INFO("orchardd log:\n" << orchard::testing::ReadFile(process_.log_path()));
    return ok;
  }
  const std::string& dir() const { return dir_; }
  std::string url() const { return process_.url(); }

  // orchardctl with this server's URL; the key comes from the environment.
  CtlRun Ctl(const std::string& args) const {
    return RunCtl(dir_, "--url " + ShellQuote(url()) + " " + args,
                  std::string("ORCHARD_API_KEY=") + kApiKey);
  }

  orchard::testing::HttpResult Checkin(const std::string& fixture) const {
    return HttpCall("PUT", url() + "/mdm",
                    orchard::testing::ReadFile(FixturesDir() + "/" + fixture), {kCheckinType});
  }
  orchard::testing::HttpResult Report(const std::string& body) const {
    return HttpCall("PUT", url() + "/mdm", body, {"Content-Type: application/x-apple-plist"});
  }
  void Enroll() const {
    REQUIRE(Checkin("Authenticate.1.plist").status == 200);
    REQUIRE(Checkin("TokenUpdate.1.plist").status == 200);
  }

 private:
  std::string dir_;
  OrchardProcess process_;
};

#define REQUIRE_FIXTURES()                                                   \
  do {                                                                       \
    if (!HaveFixtures()) {                                                   \
      WARN("device fixtures not found under " << FixturesDir() << "; skip"); \
      return;                                                                \
    }                                                                        \
  } while (0)

// Starts the server and enrolls the fixture device; `s` names the Server.
#define START_ENROLLED(s) \
  REQUIRE_FIXTURES();     \
  Server s;               \
  REQUIRE(s.Start());     \
  s.Enroll()

}  // namespace

TEST_CASE("orchardctl devices and device show an enrolled device", "[integration][ctl]") {
  START_ENROLLED(server);

  CtlRun r = server.Ctl("devices");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("ID") == 0);
  CHECK(r.out.find("LAST SEEN") != std::string::npos);
  const size_t row = r.out.find(kUdid);
  REQUIRE(row != std::string::npos);
  const std::string line = r.out.substr(row, r.out.find('\n', row) - row);
  CHECK(line.find(kSerial) != std::string::npos);
  CHECK(line.find("iPad2,5") != std::string::npos);
  CHECK(line.find("9.3.5") != std::string::npos);
  CHECK(line.find("enrolled") != std::string::npos);

  r = server.Ctl("devices --serial " + std::string(kSerial) +
                 " --state enrolled --seen-after 1h --all");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find(kUdid) != std::string::npos);
  r = server.Ctl("devices --serial NOPE");
  CHECK(r.exit_code == 0);
  CHECK(r.out == "no enrollments match\n");

  r = server.Ctl(std::string("device ") + kUdid);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("serial_number:") != std::string::npos);
  CHECK(r.out.find(kSerial) != std::string::npos);
  CHECK(r.out.find("state:") != std::string::npos);

  SECTION("--json prints the server's JSON") {
    r = server.Ctl("devices --json");
    REQUIRE(r.exit_code == 0);
    Value v = ParseJsonOrFail(r.out);
    const Value* list = v.Find("enrollments");
    REQUIRE(list);
    REQUIRE(list->AsArray());
    REQUIRE(list->AsArray()->size() == 1);
    CHECK(list->AsArray()->at(0).GetString("id") == kUdid);
    CHECK(list->AsArray()->at(0).GetString("serial_number") == kSerial);
    CHECK(v.Find("next_cursor"));

    r = server.Ctl(std::string("--json device ") + kUdid);  // global flag before the command
    REQUIRE(r.exit_code == 0);
    Value d = ParseJsonOrFail(r.out);
    CHECK(d.GetString("state") == "enrolled");
    CHECK(d.GetBool("blocked", true) == false);
  }
  SECTION("an unknown id is a clear error") {
    r = server.Ctl("device NOPE");
    CHECK(r.exit_code == 1);
    CHECK(r.out.empty());
    CHECK(r.err.find("no enrollment NOPE") != std::string::npos);
    CHECK(r.err.find("404") != std::string::npos);
  }
}

TEST_CASE("orchardctl devices pages with --cursor and --all", "[integration][ctl]") {
  START_ENROLLED(server);
  // A second device: the Authenticate fixture with another UDID.
  std::string second = orchard::testing::ReadFile(FixturesDir() + "/Authenticate.1.plist");
  const std::string other_udid = "0000AAAA783e9ade1dae4fbb92ea12afc0ce5b69";
  second.replace(second.find(kUdid), std::string(kUdid).size(), other_udid);
  REQUIRE(HttpCall("PUT", server.url() + "/mdm", second, {kCheckinType}).status == 200);

  CtlRun r = server.Ctl("devices --limit 1");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find(other_udid) != std::string::npos);  // ids sort: 0000AAAA... first
  CHECK(r.out.find(kUdid) == std::string::npos);
  const auto at = r.err.find("--cursor ");
  REQUIRE(at != std::string::npos);
  std::string cursor = r.err.substr(at + 9);
  cursor.erase(cursor.find_last_not_of("\n") + 1);

  r = server.Ctl("devices --limit 1 --cursor " + ShellQuote(cursor));
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find(kUdid) != std::string::npos);
  CHECK(r.out.find(other_udid) == std::string::npos);

  r = server.Ctl("devices --limit 1 --all");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find(kUdid) != std::string::npos);
  CHECK(r.out.find(other_udid) != std::string::npos);
  CHECK(r.err.empty());

  r = server.Ctl("devices --limit 1 --all --json");
  REQUIRE(r.exit_code == 0);
  Value v = ParseJsonOrFail(r.out);
  REQUIRE(v.Find("enrollments"));
  REQUIRE(v.Find("enrollments")->AsArray());
  CHECK(v.Find("enrollments")->AsArray()->size() == 2);
  CHECK(v.GetString("next_cursor").empty());

  r = server.Ctl("devices --state authenticated");
  CHECK(r.out.find(other_udid) != std::string::npos);
  CHECK(r.out.find(kUdid) == std::string::npos);
}

TEST_CASE("orchardctl enqueue, queue and results follow a command", "[integration][ctl]") {
  START_ENROLLED(server);

  CtlRun r = server.Ctl(
      std::string("enqueue ") + kUdid +
      " --type DeviceInformation --set 'Queries:=[\"UDID\",\"OSVersion\"]' --nopush --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  Value enq = ParseJsonOrFail(r.out);
  const std::string uuid(enq.GetString("command_uuid"));
  REQUIRE(!uuid.empty());
  CHECK(enq.GetString("request_type") == "DeviceInformation");

  r = server.Ctl(std::string("queue ") + kUdid);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find(uuid) != std::string::npos);
  CHECK(r.out.find("DeviceInformation") != std::string::npos);
  CHECK(r.out.find("Pending") != std::string::npos);

  // The device checks in and gets the command with the queries we set.
  auto idle = server.Report(DeviceReport("Idle"));
  REQUIRE(idle.status == 200);
  CHECK(idle.body.find(uuid) != std::string::npos);
  auto sent = orchard::plist::ParseXml(idle.body);
  REQUIRE(sent.ok());
  const Value* queries = sent->Find("Command") ? sent->Find("Command")->Find("Queries") : nullptr;
  REQUIRE(queries);
  REQUIRE(queries->AsArray());
  CHECK(queries->AsArray()->size() == 2);

  // It acknowledges; the result is listed and shown.
  auto ack = server.Report(DeviceReport(
      "Acknowledged", "<key>CommandUUID</key><string>" + uuid +
                          "</string><key>QueryResponses</key><dict><key>OSVersion</key>"
                          "<string>9.3.5</string></dict>"));
  REQUIRE(ack.status == 200);

  r = server.Ctl(std::string("results ") + kUdid);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find(uuid) != std::string::npos);
  CHECK(r.out.find("Acknowledged") != std::string::npos);

  r = server.Ctl(std::string("results ") + kUdid + " " + uuid);
  REQUIRE(r.exit_code == 0);
  Value res = ParseJsonOrFail(r.out);
  CHECK(res.GetString("status") == "Acknowledged");
  const Value* response = res.Find("response");
  REQUIRE(response);
  REQUIRE(response->Find("QueryResponses"));
  CHECK(response->Find("QueryResponses")->GetString("OSVersion") == "9.3.5");

  r = server.Ctl(std::string("results ") + kUdid + " " + uuid + " --plist");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("<plist") != std::string::npos);
  CHECK(r.out.find(uuid) != std::string::npos);

  r = server.Ctl(std::string("queue ") + kUdid);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find(uuid) == std::string::npos);

  r = server.Ctl(std::string("results ") + kUdid + " NO-SUCH-UUID");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("404") != std::string::npos);
}

TEST_CASE("orchardctl enqueue of a raw plist, partial failure and queue edits",
          "[integration][ctl]") {
  START_ENROLLED(server);
  const std::string plist_path = server.dir() + "/cmd.plist";
  REQUIRE(orchard::testing::WriteFile(
      plist_path,
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
      "<key>CommandUUID</key><string>RAW-CMD-0001</string>"
      "<key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict>"
      "</dict></plist>\n"));

  CtlRun r = server.Ctl(std::string("enqueue ") + kUdid + ",NOT-ENROLLED --file " +
                        ShellQuote(plist_path) + " --nopush");
  INFO(r.out << r.err);
  CHECK(r.exit_code == 3);  // HTTP 207: one id failed
  CHECK(r.out.find("RAW-CMD-0001") != std::string::npos);
  CHECK(r.out.find("NOT-ENROLLED") != std::string::npos);
  CHECK(r.out.find("unknown enrollment") != std::string::npos);
  CHECK(r.err.find("1 of 2 ids failed") != std::string::npos);

  r = server.Ctl(std::string("enqueue ") + kUdid +
                 " --type DeviceInformation --priority 5 --nopush");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("queued") != std::string::npos);

  r = server.Ctl(std::string("queue ") + kUdid + " --json");
  REQUIRE(r.exit_code == 0);
  Value q = ParseJsonOrFail(r.out);
  REQUIRE(q.Find("commands"));
  REQUIRE(q.Find("commands")->AsArray());
  CHECK(q.Find("commands")->AsArray()->size() == 2);

  r = server.Ctl(std::string("queue ") + kUdid + " --delete RAW-CMD-0001");
  CHECK(r.exit_code == 0);
  r = server.Ctl(std::string("queue ") + kUdid + " --delete RAW-CMD-0001");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("not queued") != std::string::npos);
  r = server.Ctl(std::string("queue ") + kUdid + " --clear");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("removed 1") != std::string::npos);
  r = server.Ctl(std::string("queue ") + kUdid);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("no commands queued") != std::string::npos);

  r = server.Ctl("enqueue NOT-ENROLLED --type DeviceInformation --nopush");
  CHECK(r.exit_code == 1);  // every id failed: HTTP 500

  // --data-file sends a file's bytes as <data>, as InstallProfile needs.
  const std::string profile_path = server.dir() + "/test.mobileconfig";
  REQUIRE(orchard::testing::WriteFile(profile_path, std::string("PROFILE\0BYTES", 13)));
  r = server.Ctl(std::string("enqueue ") + kUdid + " --type InstallProfile --data-file Payload=" +
                 ShellQuote(profile_path) + " --nopush");
  REQUIRE(r.exit_code == 0);
  auto idle = server.Report(DeviceReport("Idle"));
  REQUIRE(idle.status == 200);
  auto sent = orchard::plist::ParseXml(idle.body);
  REQUIRE(sent.ok());
  const Value* command = sent->Find("Command");
  REQUIRE(command);
  CHECK(command->GetString("RequestType") == "InstallProfile");
  const std::string* payload = command->GetData("Payload");
  REQUIRE(payload);
  CHECK(*payload == std::string("PROFILE\0BYTES", 13));
}

TEST_CASE("orchardctl block refuses the device until unblock", "[integration][ctl]") {
  START_ENROLLED(server);

  CtlRun r = server.Ctl(std::string("block ") + kUdid);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("blocked") != std::string::npos);
  CHECK(server.Report(DeviceReport("Idle")).status == 401);

  r = server.Ctl("devices --blocked true");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find(kUdid) != std::string::npos);

  r = server.Ctl(std::string("unblock ") + kUdid);
  REQUIRE(r.exit_code == 0);
  r = server.Ctl("devices --blocked true");
  CHECK(r.out.find(kUdid) == std::string::npos);
  CHECK(server.Report(DeviceReport("Idle")).status == 200);
}

TEST_CASE("orchardctl events and version", "[integration][ctl]") {
  START_ENROLLED(server);

  CtlRun r = server.Ctl("events --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  Value ev = ParseJsonOrFail(r.out);
  const Value* list = ev.Find("events");
  REQUIRE(list);
  REQUIRE(list->AsArray());
  REQUIRE(!list->AsArray()->empty());
  CHECK(list->AsArray()->at(0).GetString("type") == "enrollment.authenticated");
  const Value* last = ev.Find("last_seq");
  REQUIRE(last);
  REQUIRE(last->AsInteger());

  r = server.Ctl("events --after " + std::to_string(*last->AsInteger()));
  CHECK(r.exit_code == 0);
  CHECK(r.out == "no events\n");

  r = server.Ctl("events --limit 1");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("enrollment.authenticated") != std::string::npos);
  CHECK(r.out.find("enrollment.token_updated") == std::string::npos);

  r = server.Ctl("version");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("orchardctl ") == 0);
  CHECK(r.out.find("orchardd ") != std::string::npos);
}

TEST_CASE("orchardctl with a wrong API key fails clearly", "[integration][ctl]") {
  Server server;
  REQUIRE(server.Start());
  const std::string wrong = "WRONG-KEY-zzzzzzzzzzzz";
  CtlRun r = RunCtl(server.dir(), "--url " + server.url() + " --api-key " + wrong + " devices");
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("missing or wrong API key") != std::string::npos);
  CHECK(r.err.find("401") != std::string::npos);
  CHECK(r.err.find(wrong) == std::string::npos);  // never echo a key

  r = RunCtl(server.dir(), "--url " + server.url() + " devices", "ORCHARD_API_KEY=");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("401") != std::string::npos);
  CHECK(r.err.find("no API key given") != std::string::npos);

  // The key file works as well as the flag and the environment.
  const std::string key_file = server.dir() + "/key";
  REQUIRE(orchard::testing::WriteFile(key_file, std::string(kApiKey) + "\n"));
  r = RunCtl(server.dir(), "--url " + server.url() + " --api-key-file " + key_file + " devices");
  CHECK(r.exit_code == 0);
  CHECK(r.out == "no enrollments match\n");
}

TEST_CASE("orchardctl reports an unreachable server", "[integration][ctl]") {
  // A port that was free a moment ago: nothing listens there.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  close(fd);

  const std::string dir = orchard::testing::MakeTempDir("orchard-ctl-test");
  CtlRun r = RunCtl(dir, "--url " + url + " devices", std::string("ORCHARD_API_KEY=") + kApiKey);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("cannot reach orchardd at " + url) != std::string::npos);
}

TEST_CASE("orchardctl usage errors exit 2 without contacting a server", "[integration][ctl]") {
  const std::string dir = orchard::testing::MakeTempDir("orchard-ctl-test");
  // Port 9 (discard) is never contacted: every one of these fails before a request.
  const std::string url = "--url http://127.0.0.1:9 ";
  for (const char* args :
       {"", "frobnicate", "devices --bogus", "devices --blocked maybe",
        "devices --seen-after yesterday", "enqueue", "enqueue ID", "enqueue ID --type X --file Y",
        "enqueue ID --type X --priority 300", "enqueue ID --type X --set NoEquals",
        "queue ID --clear --delete U", "results ID --plist", "events --after -1",
        "--timeout 0 version", "--url ftp://x version", "device"}) {
    const std::string a = args;
    CtlRun r = RunCtl(dir, a.find("--url") == std::string::npos ? url + a : a);
    INFO("orchardctl " << args << "\n" << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("cannot reach") == std::string::npos);
  }
  CtlRun help = RunCtl(dir, "--help");
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("enqueue") != std::string::npos);
  help = RunCtl(dir, "enqueue --help");
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("--json-command") != std::string::npos);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
