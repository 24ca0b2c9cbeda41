// orchardctl against the real orchardd: a device enrolls with the fixture
// plists, then every check runs the real orchardctl binary through popen.
// Push tests add a test push CA and the mock APNs (tests/apns_mock).
#include <netinet/in.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "apns_mock/mock_apns.h"
#include "plist/plist.h"
#include "support/fixtures.h"
#include "support/strict_utf8.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"
#include "util/encoding.h"

namespace {

using orchard::plist::Value;
using orchard::testing::HttpCall;
using orchard::testing::OrchardBinary;
using orchard::testing::OrchardProcess;

constexpr char kApiKey[] = "0123456789abcdef0123";
constexpr char kUdid[] = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69";
constexpr char kSerial[] = "F5JM992LF193";
constexpr char kCheckinType[] = "Content-Type: application/x-apple-aspen-mdm-checkin";

std::string FixturesDir() { return orchard::testing::FixturePath("devices"); }

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

// A running orchardd (insecure dev mode, known API key) in a fresh directory,
// optionally with a config file holding config_text and with --policy-dir holding
// policies (file name -> Lua source).
class Server {
 public:
  using Policies = std::map<std::string, std::string>;
  explicit Server(const std::string& config_text = "", const Policies& policies = {})
      : dir_(orchard::testing::MakeTempDir("orchard-ctl-test")),
        process_(dir_ + "/data", Args(dir_, !config_text.empty(), !policies.empty())) {
    if (!config_text.empty()) REQUIRE(orchard::testing::WriteFile(dir_ + "/orchard.conf", config_text));
    if (!policies.empty()) {
      std::filesystem::create_directories(policy_dir());
      for (const auto& [name, source] : policies)
        REQUIRE(orchard::testing::WriteFile(policy_dir() + "/" + name, source));
    }
  }
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
  std::string policy_dir() const { return dir_ + "/policies"; }
  std::string Log() const { return orchard::testing::ReadFile(process_.log_path()); }

  // orchardctl with this server's URL; the key comes from the environment, to
  // which env ("NAME=value ..., shell-quoted") is added.
  CtlRun Ctl(const std::string& args, const std::string& env = "") const {
    return RunCtl(dir_, "--url " + ShellQuote(url()) + " " + args,
                  std::string("ORCHARD_API_KEY=") + kApiKey + " " + env);
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
  static std::vector<std::string> Args(const std::string& dir, bool with_config,
                                       bool with_policies) {
    std::vector<std::string> args = {"--insecure-dev", "--api-key", kApiKey};
    if (with_config) args.insert(args.begin(), {"--config", dir + "/orchard.conf"});
    if (with_policies) args.insert(args.end(), {"--policy-dir", dir + "/policies"});
    return args;
  }

  std::string dir_;
  OrchardProcess process_;
};

// ---- push certificates --------------------------------------------------------

constexpr char kPushTopic[] = "com.apple.mgmt.External.test";
// The topic in the fixture TokenUpdate.
constexpr char kFixtureTopic[] = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9";

orchard::testing::Identity PushIdentity(orchard::testing::TestCa& ca, const std::string& topic,
                                        int64_t valid_seconds) {
  orchard::testing::IssueOptions o;
  o.common_name = "APSP:ctl-test";  // a CN is at most 64 characters; the topic is the UID
  o.uid = topic;
  o.not_after_offset_s = valid_seconds;
  return ca.Issue(o);
}

// The certificate's notAfter as the server reports it.
std::string NotAfter(const orchard::testing::Identity& id) {
  BIO* bio = BIO_new_mem_buf(id.cert_pem.data(), static_cast<int>(id.cert_pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (!cert) return "";
  struct tm tm {};
  const bool ok = ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1;
  X509_free(cert);
  return ok ? orchard::FormatRfc3339(static_cast<int64_t>(timegm(&tm)) * 1000) : "";
}


#define REQUIRE_FIXTURES()                           \
  do {                                               \
    INFO("device fixtures under " << FixturesDir()); \
    REQUIRE(HaveFixtures());                         \
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
        "--timeout 0 version", "--url ftp://x version", "device", "pushcert",
        "pushcert --key K", "pushcert --p12 P --cert C", "pushcert --cert C --password-env V",
        "pushcert --p12 P --password-env V --password-file F", "pushcert --p12 - --password-file -",
        "pushcert --p12 /nonexistent.p12"}) {
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

TEST_CASE("orchardctl pushcert stores PEM and PKCS#12 push certificates", "[integration][ctl][push]") {
  Server server;
  REQUIRE(server.Start());
  const std::string dir = server.dir();
  auto ca = orchard::testing::TestCa::Create("Push CA (ctl test)");
  REQUIRE(ca);

  CtlRun r = server.Ctl("pushcerts");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "no push certificates stored\n");

  // PEM: certificate and key in two files, or both in one.
  const auto pem = PushIdentity(*ca, kPushTopic, 30 * 86400 + 3600);
  const std::string pem_not_after = NotAfter(pem);
  REQUIRE(!pem_not_after.empty());
  REQUIRE(orchard::testing::WriteFile(dir + "/push.pem", pem.cert_pem));
  REQUIRE(orchard::testing::WriteFile(dir + "/push.key", pem.key_pem));
  REQUIRE(orchard::testing::WriteFile(dir + "/both.pem", pem.cert_pem + pem.key_pem));
  r = server.Ctl("pushcert --cert " + ShellQuote(dir + "/push.pem") + " --key " +
                 ShellQuote(dir + "/push.key"));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "stored push certificate for topic " + std::string(kPushTopic) + " (valid until " +
                     pem_not_after + ", 30 days left)\n");
  r = server.Ctl("pushcert --cert " + ShellQuote(dir + "/both.pem"));
  CHECK(r.exit_code == 0);
  CHECK(r.out.find(kPushTopic) != std::string::npos);

  r = server.Ctl("pushcerts");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("TOPIC") == 0);
  CHECK(r.out.find("NOT AFTER") != std::string::npos);
  CHECK(r.out.find("DAYS LEFT") != std::string::npos);
  {
    const size_t row = r.out.find(kPushTopic);
    REQUIRE(row != std::string::npos);
    const std::string line = r.out.substr(row, r.out.find('\n', row) - row);
    CHECK(line.find(pem_not_after) != std::string::npos);
    CHECK(line.substr(line.size() - 2) == "30");
  }
  r = server.Ctl("pushcerts --json");
  REQUIRE(r.exit_code == 0);
  Value listed = ParseJsonOrFail(r.out);
  REQUIRE(listed.Find("push_certs"));
  REQUIRE(listed.Find("push_certs")->AsArray());
  REQUIRE(listed.Find("push_certs")->AsArray()->size() == 1);
  CHECK(listed.Find("push_certs")->AsArray()->at(0).GetString("topic") == kPushTopic);
  CHECK(listed.Find("push_certs")->AsArray()->at(0).GetString("not_after") == pem_not_after);

  // PKCS#12 with a password: the upload replaces the certificate of the topic.
  const char* password = "correct horse battery";
  const auto renewed = PushIdentity(*ca, kPushTopic, 60 * 86400 + 3600);
  const std::string p12_not_after = NotAfter(renewed);
  const std::string p12 = renewed.Pkcs12(password);
  REQUIRE(!p12.empty());
  REQUIRE(orchard::testing::WriteFile(dir + "/push.p12", p12));
  const std::string p12_arg = "pushcert --p12 " + ShellQuote(dir + "/push.p12");
  r = server.Ctl(p12_arg + " --password-env P12_PASSWORD",
                 "P12_PASSWORD=" + ShellQuote(password));
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "stored push certificate for topic " + std::string(kPushTopic) + " (valid until " +
                     p12_not_after + ", 60 days left)\n");
  CHECK(r.out.find(password) == std::string::npos);
  CHECK(r.err.find(password) == std::string::npos);
  r = server.Ctl("pushcerts");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find(p12_not_after) != std::string::npos);
  CHECK(r.out.find(pem_not_after) == std::string::npos);

  REQUIRE(orchard::testing::WriteFile(dir + "/p12-password", std::string(password) + "\n"));
  r = server.Ctl(p12_arg + " --password-file " + ShellQuote(dir + "/p12-password") + " --json");
  REQUIRE(r.exit_code == 0);
  Value stored = ParseJsonOrFail(r.out);
  CHECK(stored.GetString("topic") == kPushTopic);
  CHECK(stored.GetString("not_after") == p12_not_after);

  SECTION("a wrong or missing password is a clear error that never shows the password") {
    const std::string wrong = "not the password";
    r = server.Ctl(p12_arg + " --password-env P12_PASSWORD", "P12_PASSWORD=" + ShellQuote(wrong));
    CHECK(r.exit_code == 1);
    CHECK(r.out.empty());
    CHECK(r.err.find("wrong password") != std::string::npos);
    CHECK(r.err.find("HTTP 400") != std::string::npos);
    CHECK(r.err.find("hint: check the password") != std::string::npos);
    CHECK(r.err.find(wrong) == std::string::npos);

    r = server.Ctl(p12_arg);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("wrong password") != std::string::npos);
    CHECK(r.err.find("--password-env") != std::string::npos);

    r = server.Ctl(p12_arg + " --password-env ORCHARD_CTL_TEST_UNSET");
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("ORCHARD_CTL_TEST_UNSET") != std::string::npos);
    CHECK(r.err.find("not set") != std::string::npos);
    // The stored certificate is unchanged.
    r = server.Ctl("pushcerts");
    CHECK(r.out.find(p12_not_after) != std::string::npos);
  }
  SECTION("a PKCS#12 without a password needs no password option") {
    const auto open = PushIdentity(*ca, "com.apple.mgmt.External.open", 10 * 86400 + 3600);
    REQUIRE(orchard::testing::WriteFile(dir + "/open.p12", open.Pkcs12("")));
    // Another topic than the enrollment topic: refused (it would strand enrolled devices) ...
    r = server.Ctl("pushcert --p12 " + ShellQuote(dir + "/open.p12"));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("HTTP 409") != std::string::npos);
    CHECK(r.err.find("devices enroll with topic " + std::string(kPushTopic)) != std::string::npos);
    // ... unless forced; it becomes the enrollment topic.
    r = server.Ctl("pushcert --force --p12 " + ShellQuote(dir + "/open.p12"));
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("com.apple.mgmt.External.open") != std::string::npos);
    CHECK(r.out.find("10 days left") != std::string::npos);
    CHECK(r.out.find("the enrollment topic changed from " + std::string(kPushTopic)) != std::string::npos);
    r = server.Ctl("pushcerts --json");
    Value both = ParseJsonOrFail(r.out);
    REQUIRE(both.Find("push_certs"));
    REQUIRE(both.Find("push_certs")->AsArray()->size() == 2);
    for (const auto& c : *both.Find("push_certs")->AsArray())
      CHECK(c.GetBool("enrollment_topic", false) == (c.GetString("topic") == "com.apple.mgmt.External.open"));
  }
  SECTION("a certificate for a topic that is not an MDM topic is refused") {
    const auto other = PushIdentity(*ca, "com.example.not-mdm", 30 * 86400);
    REQUIRE(orchard::testing::WriteFile(dir + "/other.pem", other.cert_pem + other.key_pem));
    r = server.Ctl("pushcert --cert " + ShellQuote(dir + "/other.pem"));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("com.example.not-mdm") != std::string::npos);
    CHECK(r.err.find("is not an MDM topic") != std::string::npos);
    CHECK(r.err.find("HTTP 400") != std::string::npos);
    REQUIRE(orchard::testing::WriteFile(dir + "/other.p12", other.Pkcs12(password)));
    r = server.Ctl("pushcert --p12 " + ShellQuote(dir + "/other.p12") + " --password-env P12_PASSWORD",
                   "P12_PASSWORD=" + ShellQuote(password));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("is not an MDM topic") != std::string::npos);
  }
  SECTION("the wrong file kind is caught before sending") {
    r = server.Ctl("pushcert --p12 " + ShellQuote(dir + "/both.pem"));
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("is PEM text") != std::string::npos);
    r = server.Ctl("pushcert --cert " + ShellQuote(dir + "/push.p12"));
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--p12") != std::string::npos);
    r = server.Ctl("pushcert --cert " + ShellQuote(dir + "/push.pem"));  // no key anywhere
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--key FILE is required") != std::string::npos);
  }
}

TEST_CASE("orchardctl device shows the push state recorded from APNs", "[integration][ctl][push]") {
  REQUIRE_FIXTURES();
  using orchard::testing::IssueOptions;
  using orchard::testing::TestCa;
  // The mock APNs (TLS with the test server CA, client certificates from the push CA).
  auto server_ca = TestCa::Create("APNs server CA (ctl test)");
  auto push_ca = TestCa::Create("Push CA (ctl test)");
  IssueOptions so;
  so.dns_name = "localhost,127.0.0.1";
  so.server_auth_eku = true;
  so.client_auth_eku = false;
  const auto server_id = server_ca->Issue(so);
  orchard::testing::MockApnsOptions mo;
  mo.cert_pem = server_id.cert_pem;
  mo.key_pem = server_id.key_pem;
  mo.client_ca_pem = push_ca->cert_pem();
  auto apns = orchard::testing::MockApns::Start(mo);
  REQUIRE(apns);

  const std::string ca_dir = orchard::testing::MakeTempDir("orchard-ctl-apns");
  REQUIRE(server_ca->WriteCertPem(ca_dir + "/apns-ca.pem"));
  Server server("push.endpoint = 127.0.0.1:" + std::to_string(apns->port()) +
                "\npush.ca_file = " + ca_dir + "/apns-ca.pem\npush.coalesce_ms = 0\n");
  REQUIRE(server.Start());
  server.Enroll();

  CtlRun r = server.Ctl(std::string("device ") + kUdid);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("\npush: none recorded\n") != std::string::npos);
  CHECK(r.out.find("\nddm:\n  enabled:") != std::string::npos);  // the channel's DDM state, its own section

  // Without a push certificate for the device's topic the push fails clearly.
  r = server.Ctl(std::string("push ") + kUdid);
  CHECK(r.exit_code == 1);
  CHECK(r.out.find(std::string("no push certificate for topic ") + kFixtureTopic) != std::string::npos);

  const auto cert = PushIdentity(*push_ca, kFixtureTopic, 365 * 86400);
  REQUIRE(orchard::testing::WriteFile(server.dir() + "/push.pem", cert.cert_pem + cert.key_pem));
  r = server.Ctl("pushcert --cert " + ShellQuote(server.dir() + "/push.pem"));
  REQUIRE(r.exit_code == 0);

  r = server.Ctl(std::string("push ") + kUdid);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("push accepted (apns-id ") != std::string::npos);

  // The push is accepted at once; APNs' answer is recorded when it comes.
  auto wait_for_device = [&](const std::string& needle) {
    for (int i = 0; i < 500; ++i) {  // at most ~10 s
      r = server.Ctl(std::string("device ") + kUdid);
      if (r.exit_code == 0 && r.out.find(needle) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  REQUIRE(wait_for_device("\npush:\n"));
  const size_t section = r.out.find("\npush:\n");
  REQUIRE(section != std::string::npos);
  const std::string push = r.out.substr(section);
  CHECK(push.find("\n  last_push_at:") != std::string::npos);
  CHECK(push.find("\n  last_apns_id:") != std::string::npos);
  CHECK(push.find("\n  last_status:") != std::string::npos);
  CHECK(push.find(" 200\n") != std::string::npos);
  CHECK(push.find("\n  consecutive_failures:") != std::string::npos);
  CHECK(push.find("\n  token_invalid:") != std::string::npos);
  CHECK(push.find("note:") == std::string::npos);
  CHECK(r.out.find("queue_depth:") < section);  // the enrollment's own keys come first

  // APNs says the token is gone: the state shows it and further pushes stop.
  auto received = apns->Received();
  REQUIRE(!received.empty());
  apns->SetUnregistered(received.back().token_hex, 1700000000000);
  r = server.Ctl(std::string("push ") + kUdid);
  CHECK(r.exit_code == 0);  // accepted; APNs answers 410 later
  REQUIRE(wait_for_device("token_invalid_reason:"));
  CHECK(r.out.find("\n  token_invalid_reason:") != std::string::npos);
  CHECK(r.out.find("Unregistered") != std::string::npos);
  CHECK(r.out.find("note: APNs declared the push token invalid (Unregistered)") != std::string::npos);
  r = server.Ctl(std::string("--json device ") + kUdid);
  REQUIRE(r.exit_code == 0);
  Value d = ParseJsonOrFail(r.out);
  REQUIRE(d.Find("push"));
  CHECK(d.Find("push")->GetBool("token_invalid", false));
  CHECK(d.Find("push")->GetString("token_invalid_at") == "2023-11-14T22:13:20Z");
  // Now known: the next push is refused at once.
  r = server.Ctl(std::string("push ") + kUdid);
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("push token invalid (Unregistered)") != std::string::npos);

  apns.reset();
  std::error_code ec;
  std::filesystem::remove_all(ca_dir, ec);
}


TEST_CASE("orchardctl lists every item across byte-bounded pages", "[integration][ctl]") {
  REQUIRE_FIXTURES();
  Server server("api.max_response_bytes = 65536\n");
  REQUIRE(server.Start());
  server.Enroll();
  const int n = 400;  // about 80 KB of queue listing: two pages or more at 64 KiB
  for (int i = 0; i < n; ++i) {
    auto r = HttpCall("PUT", server.url() + "/v1/enqueue/" + kUdid + "?nopush=1",
                      "<plist><dict><key>CommandUUID</key><string>PAGE-" + std::to_string(i) +
                          "</string><key>Command</key><dict><key>RequestType</key><string>ProfileList"
                          "</string></dict></dict></plist>",
                      {std::string("X-API-Key: ") + kApiKey});
    REQUIRE(r.status == 200);
  }
  auto one_page = HttpCall("GET", server.url() + "/v1/enrollments/" + kUdid + "/queue", "",
                           {std::string("X-API-Key: ") + kApiKey});
  REQUIRE(!ParseJsonOrFail(one_page.body).GetString("next_cursor").empty());  // really paged

  CtlRun r = server.Ctl("queue " + std::string(kUdid) + " --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  Value v = ParseJsonOrFail(r.out);
  REQUIRE(v.Find("commands"));
  std::vector<std::string> got;
  for (const auto& c : *v.Find("commands")->AsArray()) got.emplace_back(c.GetString("command_uuid"));
  REQUIRE(got.size() == static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) CHECK(got[static_cast<size_t>(i)] == "PAGE-" + std::to_string(i));
  CHECK(v.GetString("next_cursor").empty());

  r = server.Ctl("queue " + std::string(kUdid));
  REQUIRE(r.exit_code == 0);
  size_t rows = 0;
  for (size_t at = r.out.find("PAGE-"); at != std::string::npos; at = r.out.find("PAGE-", at + 1)) ++rows;
  CHECK(rows == static_cast<size_t>(n));
  CHECK(r.err.empty());

  // Events across pages, starting after a sequence number (the cursor then takes over).
  r = server.Ctl("events --after 0 --limit 1000 --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  Value events = ParseJsonOrFail(r.out);
  std::set<int64_t> seqs;
  for (const auto& e : *events.Find("events")->AsArray()) seqs.insert(*e.Find("seq")->AsInteger());
  CHECK(seqs.size() == events.Find("events")->AsArray()->size());
  CHECK(seqs.size() >= static_cast<size_t>(n));

  r = server.Ctl("queue " + std::string(kUdid) + " --limit 5");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("PAGE-4") != std::string::npos);
  CHECK(r.out.find("PAGE-5") == std::string::npos);
  CHECK(r.err.find("more commands queued than --limit") != std::string::npos);
}

TEST_CASE("orchardctl --json prints valid UTF-8 JSON when a device sent invalid UTF-8", "[integration][ctl]") {
  REQUIRE_FIXTURES();
  Server server;
  REQUIRE(server.Start());
  std::string auth = orchard::testing::ReadFile(FixturesDir() + "/Authenticate.1.plist");
  const size_t dict = auth.find("<dict>");
  REQUIRE(dict != std::string::npos);
  auth.insert(dict + 6, "<key>DeviceName</key><string>Bad\xff\xfe \x01\x1b[2J \xC0\xAF</string>");
  REQUIRE(HttpCall("PUT", server.url() + "/mdm", auth, {kCheckinType}).status == 200);
  for (const char* cmd : {"devices --json", "device " , "events --json --limit 1000"}) {
    std::string args = cmd;
    if (args == "device ") args += std::string(kUdid) + " --json";
    CtlRun r = server.Ctl(args);
    INFO(args << "\n" << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(orchard::testing::IsStrictUtf8(r.out));
    ParseJsonOrFail(r.out);
  }
  CtlRun r = server.Ctl("device " + std::string(kUdid) + " --json");
  CHECK(ParseJsonOrFail(r.out).GetString("device_name") == "Bad\xEF\xBF\xBD\xEF\xBF\xBD \x01\x1b[2J \xEF\xBF\xBD\xEF\xBF\xBD");
}

// ---- policies and compliance --------------------------------------------------

namespace {

// A policy.run with args.devices = N judges DEV-001..DEV-N (odd ones non-compliant);
// args.tag is stored (so every run decides something); args.fail makes the run fail.
constexpr char kDemoPolicy[] = R"(
policy { name = "demo", version = "1.2", description = "orchardctl test policy" }
policy:on("policy.run", function(ctx, event)
  local args = event.payload.args or {}
  for i = 1, tonumber(args.devices or 0) do
    local id = string.format("DEV-%03d", i)
    if i % 2 == 0 then ctx:compliant(id) else ctx:noncompliant("odd", id) end
  end
  ctx:put("last", args.tag or "none")
  if args.fail then error("asked to fail") end
end)
policy:every("1h", function(ctx) end, { name = "hourly", per_device = false })
)";

// A policy whose name is also a route word (/v1/policies/reload), and one that never loads.
Server::Policies TestPolicies() {
  return {{"demo.lua", kDemoPolicy},
          {"reload.lua", "policy:on('policy.run', function(ctx) ctx:put('x', 1) end)\n"},
          {"broken.lua", "policy:on('policy.run', function(ctx)\n  if then\nend)\n"}};
}

// The policies are reloaded on request only (no directory polling to race with).
#define START_WITH_POLICIES(s)                            \
  Server s("policy.watch_seconds = 0\n", TestPolicies()); \
  REQUIRE(s.Start())

// Polls until cond() holds or the deadline passes.
template <typename F>
bool WaitFor(F cond, std::chrono::seconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// The items of a --json listing, under key.
std::vector<Value> Items(const CtlRun& r, const char* key) {
  INFO(r.err << r.out);
  REQUIRE(r.exit_code == 0);
  Value v = ParseJsonOrFail(r.out);
  const Value* list = v.Find(key);
  REQUIRE(list);
  REQUIRE(list->AsArray());
  return *list->AsArray();
}

// How many items `orchardctl ARGS --json` lists under key (0 on any failure), for polling.
size_t CountItems(const Server& s, const std::string& args, const char* key) {
  CtlRun r = s.Ctl(args + " --json");
  auto v = orchard::plist::ParseJson(r.out);
  if (r.exit_code != 0 || !v.ok() || !v->Find(key) || !v->Find(key)->AsArray()) return 0;
  return v->Find(key)->AsArray()->size();
}

std::vector<std::string> Strings(const std::vector<Value>& items, const char* field) {
  std::vector<std::string> out;
  for (const auto& v : items) out.emplace_back(v.GetString(field));
  return out;
}

// The cursor of the "next page: --cursor C" hint on stderr ("" without one).
std::string NextCursor(const CtlRun& r) {
  const auto at = r.err.find("--cursor ");
  if (at == std::string::npos) return "";
  std::string c = r.err.substr(at + 9);
  return c.substr(0, c.find('\n'));
}

// The whitespace-separated cells of the table row that starts with first.
std::vector<std::string> Row(const std::string& out, const std::string& first) {
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream cells(line);
    std::vector<std::string> row;
    for (std::string c; cells >> c;) row.push_back(c);
    if (!row.empty() && row[0] == first) return row;
  }
  return {};
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("orchardctl policy list, show and the enabled and dry-run switches",
          "[integration][ctl][policy]") {
  START_WITH_POLICIES(server);

  CtlRun r = server.Ctl("policy list");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("NAME") == 0);
  CHECK(r.out.find("DRY RUN") != std::string::npos);
  CHECK(r.out.find("LAG") != std::string::npos);
  std::vector<std::string> row = Row(r.out, "demo");
  REQUIRE(row.size() == 9);
  CHECK(std::vector<std::string>(row.begin(), row.begin() + 5) ==
        std::vector<std::string>{"demo", "1.2", "yes", "no", "loaded"});
  CHECK(row[5].find_first_not_of("0123456789") == std::string::npos);  // handled (schedule ticks)
  CHECK(row[6] == "0");                                                // failed
  CHECK(row[7] == "0");                                                // parked
  CHECK(row[8].back() == 's');                                         // lag
  CHECK(Row(r.out, "broken") ==
        std::vector<std::string>{"broken", "-", "yes", "no", "not", "loaded", "-", "-", "-", "-"});
  CHECK(r.out.find("broken: broken.lua:2:") != std::string::npos);

  r = server.Ctl("policy list --json");
  auto policies = Items(r, "policies");
  CHECK(Strings(policies, "name") == std::vector<std::string>{"demo", "reload", "broken"});
  CHECK(policies[0].Find("consumer") != nullptr);
  CHECK_FALSE(policies[2].GetBool("loaded", true));

  r = server.Ctl("policy show demo");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("name:") == 0);
  CHECK(r.out.find("description:  orchardctl test policy\n") != std::string::npos);
  CHECK(r.out.find("events:       policy.run\n") != std::string::npos);
  CHECK(Row(r.out, "hourly") == std::vector<std::string>{"hourly", "3600s", "0s", "no"});
  CHECK(r.out.find("\nconsumer:\n  lanes:") != std::string::npos);
  r = server.Ctl("policy show demo --json");
  REQUIRE(r.exit_code == 0);
  CHECK(ParseJsonOrFail(r.out).GetString("version") == "1.2");
  // A policy may be named like the reload-everything route.
  r = server.Ctl("policy show reload");
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("name:") == 0);
  CHECK(Row(r.out, "name:") == std::vector<std::string>{"name:", "reload"});
  r = server.Ctl("policy show broken");
  CHECK(r.exit_code == 0);
  CHECK(Row(r.out, "loaded:") == std::vector<std::string>{"loaded:", "false"});
  CHECK(Row(r.out, "load_error:").at(1) == "broken.lua:2:");
  CHECK(r.out.find("consumer") == std::string::npos);
  r = server.Ctl("policy show nope");
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("no policy nope (HTTP 404)") != std::string::npos);

  r = server.Ctl("policy disable demo");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("policy demo: disabled, dry run off") == 0);
  CHECK_FALSE(ParseJsonOrFail(server.Ctl("policy show demo --json").out).GetBool("enabled", true));
  CHECK(Row(server.Ctl("policy list").out, "demo").at(2) == "no");
  // A run of a disabled policy is accepted with a warning.
  r = server.Ctl("policy run demo");
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("warning: the policy is disabled") != std::string::npos);
  r = server.Ctl("policy enable demo --json");
  REQUIRE(r.exit_code == 0);
  CHECK(ParseJsonOrFail(r.out).GetBool("enabled", false));
  r = server.Ctl("policy dry-run demo on");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "policy demo: enabled, dry run on (decisions are recorded, nothing is applied)\n");
  CHECK(Row(server.Ctl("policy list").out, "demo").at(3) == "yes");
  r = server.Ctl("policy dry-run demo off --json");
  REQUIRE(r.exit_code == 0);
  CHECK_FALSE(ParseJsonOrFail(r.out).GetBool("dry_run", true));
  r = server.Ctl("policy disable nope");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("404") != std::string::npos);

  SECTION("usage errors exit 2 and name the action") {
    for (const char* args :
         {"policy", "policy frob", "policy show", "policy show a b", "policy dry-run demo maybe",
          "policy dry-run demo", "policy run demo --limit 3", "policy list --events x",
          "policy decisions demo --limit 0", "policy decisions demo --all --cursor x",
          "policy run demo --arg novalue", "policy run demo --arg 'n:=[1'", "policy test",
          "policy test x.lua"}) {
      r = server.Ctl(args);
      INFO(args << "\n" << r.err);
      CHECK(r.exit_code == 2);
      CHECK(r.out.empty());
      CHECK(r.err.find("orchardctl policy") == 0);
      CHECK(r.err.find("usage: orchardctl policy ") != std::string::npos);
    }
    r = server.Ctl("policy run demo --limit 3");
    CHECK(r.err.find("--limit does not apply to policy run") != std::string::npos);
    CHECK(r.err.find("usage: orchardctl policy run NAME [--device ID]") != std::string::npos);
  }
  SECTION("help policy lists every action") {
    for (const char* args : {"help policy", "policy --help"}) {
      r = server.Ctl(args);
      CHECK(r.exit_code == 0);
      for (const char* action :
           {"list", "show NAME", "reload [NAME]", "enable NAME", "disable NAME",
            "dry-run NAME on|off", "run NAME [--device ID] [--arg KEY=VALUE ...]", "decisions NAME",
            "parked NAME", "test FILE --events EVENTS.jsonl"})
        CHECK(r.out.find(std::string("  ") + action) != std::string::npos);
    }
    r = server.Ctl("--help");
    CHECK(r.out.find("  policy ") != std::string::npos);
    CHECK(r.out.find("  compliance ") != std::string::npos);
  }
}

TEST_CASE("orchardctl policy run, decisions and parked follow the runs page by page",
          "[integration][ctl][policy]") {
  START_WITH_POLICIES(server);

  CtlRun r = server.Ctl("policy run demo --arg devices=5 --arg tag=first");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("sent policy.run to policy demo (cursor 0.") == 0);
  CHECK(r.err.empty());
  std::vector<std::string> cursors;
  const auto at = r.out.find("(cursor ") + 8;
  cursors.push_back(r.out.substr(at, r.out.find(')', at) - at));
  for (int i = 1; i <= 4; ++i) {
    r = server.Ctl("policy run demo --device DEV-00" + std::to_string(i) +
                   " --arg 'tag:=\"t\"' --json");
    REQUIRE(r.exit_code == 0);
    Value run = ParseJsonOrFail(r.out);
    CHECK(run.GetString("policy") == "demo");
    cursors.emplace_back(run.GetString("cursor"));
  }
  REQUIRE(WaitFor([&] { return CountItems(server, "policy decisions demo", "decisions") == 5; }));

  // Every run is a decision record, in event order, under the cursor the run answered.
  auto all = Items(server.Ctl("policy decisions demo --json"), "decisions");
  CHECK(Strings(all, "cursor") == cursors);
  r = server.Ctl("policy decisions demo");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("CURSOR") == 0);
  CHECK(Row(r.out, cursors[0]) ==
        std::vector<std::string>{cursors[0], Row(r.out, cursors[0]).at(1), "policy.run", "5",
                                 "devices", "5", "compliance", "states;", "store", "write"});
  CHECK(Row(r.out, cursors[2]).at(3) == "DEV-002");
  CHECK(r.err.empty());

  // --limit stops early and prints the cursor to continue from.
  std::vector<std::string> paged;
  std::string cursor;
  int pages = 0;
  do {
    r = server.Ctl("policy decisions demo --limit 2 --json" +
                   (cursor.empty() ? std::string() : " --cursor " + ShellQuote(cursor)));
    for (auto& c : Strings(Items(r, "decisions"), "cursor")) paged.push_back(c);
    cursor = ParseJsonOrFail(r.out).GetString("next_cursor");  // --json: in the answer
    CHECK(r.err.empty());
    ++pages;
  } while (!cursor.empty() && pages < 10);
  CHECK(pages == 3);
  CHECK(paged == cursors);
  r = server.Ctl("policy decisions demo --limit 2");
  CHECK(Count(r.out, "policy.run") == 2);
  CHECK(r.err.find("more decisions than --limit; next page: --cursor ") == 0);
  // --all follows next_cursor through pages of --limit items.
  r = server.Ctl("policy decisions demo --all --limit 2 --json");
  CHECK(Strings(Items(r, "decisions"), "cursor") == cursors);
  CHECK(ParseJsonOrFail(r.out).GetString("next_cursor").empty());
  CHECK(r.err.empty());
  // --device: the records about one device (the first run judged DEV-002 too).
  r = server.Ctl("policy decisions demo --device DEV-002 --json");
  CHECK(Strings(Items(r, "decisions"), "cursor") ==
        std::vector<std::string>{cursors[0], cursors[2]});
  r = server.Ctl("policy decisions demo --device DEV-002 --all --limit 1 --json");
  CHECK(Strings(Items(r, "decisions"), "cursor") ==
        std::vector<std::string>{cursors[0], cursors[2]});
  r = server.Ctl("policy decisions demo --device NOBODY");
  CHECK(r.exit_code == 0);
  CHECK(r.out == "no decisions of policy demo about NOBODY\n");

  // A run that fails on every attempt is parked.
  r = server.Ctl("policy run demo --arg fail:=true --arg devices:=1");
  REQUIRE(r.exit_code == 0);
  REQUIRE(WaitFor([&] { return CountItems(server, "policy parked demo", "parked") == 1; }));
  r = server.Ctl("policy parked demo");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("CURSOR") == 0);
  CHECK(r.out.find("script_error: demo.lua:10: asked to fail") != std::string::npos);
  CHECK(r.out.find("stack traceback") == std::string::npos);  // the first line only
  auto parked = Items(server.Ctl("policy parked demo --json"), "parked");
  CHECK(*parked[0].Find("attempts")->AsInteger() == 3);
  CHECK(parked[0].Find("error")->GetString("message").find("stack traceback") != std::string::npos);
  CHECK(CountItems(server, "policy decisions demo", "decisions") == 5);  // it decided nothing

  // Errors: no such policy, a policy that never loaded.
  r = server.Ctl("policy run nope");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("no policy nope (HTTP 404)") != std::string::npos);
  r = server.Ctl("policy run broken");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("policy broken is not loaded (broken.lua:2:") != std::string::npos);
  CHECK(r.err.find("(HTTP 409)") != std::string::npos);
  r = server.Ctl("policy decisions nope");
  CHECK(r.exit_code == 0);
  CHECK(r.out == "no decisions of policy nope\n");
  CHECK(r.err.find("note: there is no policy nope") == 0);
  r = server.Ctl("policy parked reload");
  CHECK(r.exit_code == 0);
  CHECK(r.out == "no parked events of policy reload\n");
  CHECK(r.err.empty());
}

TEST_CASE("orchardctl compliance summarises the fleet and lists a policy's devices page by page",
          "[integration][ctl][policy]") {
  START_WITH_POLICIES(server);
  REQUIRE(server.Ctl("policy run demo --arg devices=7").exit_code == 0);
  REQUIRE(WaitFor([&] { return CountItems(server, "compliance demo", "devices") == 7; }));

  CtlRun r = server.Ctl("compliance");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("POLICY") == 0);
  CHECK(r.out.find("NON-COMPLIANT") != std::string::npos);
  CHECK(Row(r.out, "demo") == std::vector<std::string>{"demo", "yes", "no", "3", "4", "0", "0"});
  CHECK(Row(r.out, "reload") ==
        std::vector<std::string>{"reload", "yes", "no", "0", "0", "0", "0"});
  auto summary = Items(server.Ctl("compliance --json"), "compliance");
  REQUIRE(summary.size() == 3);
  CHECK(summary[0].GetString("policy") == "demo");
  CHECK(*summary[0].Find("devices")->Find("non_compliant")->AsInteger() == 4);

  std::vector<std::string> ids;
  for (int i = 1; i <= 7; ++i) ids.push_back("DEV-00" + std::to_string(i));
  r = server.Ctl("compliance demo");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("ENROLLMENT") == 0);
  CHECK(Row(r.out, "DEV-001").at(1) == "non_compliant");
  CHECK(Row(r.out, "DEV-001").back() == "odd");
  CHECK(Row(r.out, "DEV-002").at(1) == "compliant");
  CHECK(Count(r.out, "DEV-00") == 7);
  CHECK(Strings(Items(server.Ctl("compliance demo --json"), "devices"), "enrollment_id") == ids);

  // --limit and --cursor, page after page.
  std::vector<std::string> paged;
  std::string cursor;
  int pages = 0;
  do {
    r = server.Ctl("compliance demo --limit 3" +
                   (cursor.empty() ? std::string() : " --cursor " + ShellQuote(cursor)));
    REQUIRE(r.exit_code == 0);
    for (const auto& id : ids)
      if (r.out.find(id) != std::string::npos) paged.push_back(id);
    cursor = NextCursor(r);
    ++pages;
  } while (!cursor.empty() && pages < 10);
  CHECK(pages == 3);
  CHECK(paged == ids);
  r = server.Ctl("compliance demo --all --limit 2 --json");
  CHECK(Strings(Items(r, "devices"), "enrollment_id") == ids);
  CHECK(ParseJsonOrFail(r.out).GetString("next_cursor").empty());
  r = server.Ctl("compliance demo --status non_compliant --all --limit 1 --json");
  CHECK(Strings(Items(r, "devices"), "enrollment_id") ==
        std::vector<std::string>{"DEV-001", "DEV-003", "DEV-005", "DEV-007"});
  r = server.Ctl("compliance demo --status exempt");
  CHECK(r.exit_code == 0);
  CHECK(r.out == "no device has a compliance state exempt for policy demo\n");

  r = server.Ctl("compliance demo --status bogus");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("status must be compliant, non_compliant") != std::string::npos);
  CHECK(r.err.find("(HTTP 400)") != std::string::npos);
  r = server.Ctl("compliance nope");
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("note: there is no policy nope") == 0);
  for (const char* args :
       {"compliance --status compliant", "compliance --limit 2", "compliance a b",
        "compliance demo --limit x", "compliance demo --device x"}) {
    r = server.Ctl(args);
    INFO(args);
    CHECK(r.exit_code == 2);
    CHECK(r.out.empty());
  }
}

TEST_CASE("orchardctl policy reload keeps the running version when the new one fails",
          "[integration][ctl][policy]") {
  START_WITH_POLICIES(server);

  CtlRun r = server.Ctl("policy reload demo");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(Row(r.out, "demo").at(4) == "loaded");
  CHECK(Row(r.out, "reload").empty());  // only the policy reloaded

  REQUIRE(orchard::testing::WriteFile(server.policy_dir() + "/demo.lua",
                                      "policy { name = 'demo', version = '2' }\n"
                                      "policy:on('policy.run', function(ctx)\n  if then\nend)\n"));
  r = server.Ctl("policy reload demo");
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("demo.lua:3:") != std::string::npos);
  CHECK(r.err.find("(HTTP 422)") != std::string::npos);
  CHECK(r.err.find("note: policy demo keeps running its previous version (1.2)") !=
        std::string::npos);
  r = server.Ctl("policy reload demo --json");
  CHECK(r.exit_code == 1);
  Value answer = ParseJsonOrFail(r.out);
  CHECK_FALSE(answer.GetBool("reloaded", true));
  CHECK(answer.Find("policies")->AsArray()->at(0).GetString("version") == "1.2");
  r = server.Ctl("policy list");
  CHECK(Row(r.out, "demo").at(1) == "1.2");
  CHECK(Row(r.out, "demo").at(4) == "reload");  // "reload failed"
  CHECK(r.out.find("demo (the previous version keeps running): demo.lua:3:") != std::string::npos);
  // Every policy: broken.lua still fails, so the answer is an error too.
  r = server.Ctl("policy reload");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("broken.lua:2:") != std::string::npos);

  REQUIRE(orchard::testing::WriteFile(
      server.policy_dir() + "/demo.lua",
      std::string(kDemoPolicy).replace(std::string(kDemoPolicy).find("1.2"), 3, "1.3")));
  r = server.Ctl("policy reload demo");
  CHECK(r.exit_code == 0);
  CHECK(Row(r.out, "demo").at(1) == "1.3");
  CHECK(Row(r.out, "demo").at(4) == "loaded");
  r = server.Ctl("policy reload nope");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("no policy nope (HTTP 404)") != std::string::npos);
}

TEST_CASE("orchardctl policy test runs a policy file locally", "[integration][ctl][policy]") {
  const std::string dir = orchard::testing::MakeTempDir("orchard-ctl-policy-test");
  const std::string root = ORCHARD_SOURCE_DIR;
  // No server and no API key: the URL leads nowhere.
  const auto test = [&](const std::string& args) {
    return RunCtl(dir, "--url http://127.0.0.1:1 policy test " + args);
  };

  SECTION("every shipped policy on its events file") {
    for (const auto& entry : std::filesystem::directory_iterator(root + "/policies")) {
      if (entry.path().extension() != ".lua") continue;
      const std::string name = entry.path().stem().string();
      const std::string events = root + "/tests/policies/" + name + ".events.jsonl";
      if (!std::filesystem::exists(events)) continue;
      CtlRun r = test(ShellQuote(entry.path().string()) + " --events " + ShellQuote(events));
      INFO(name << "\n" << r.err);
      CHECK(r.exit_code == 0);
      CHECK(r.err.empty());
      std::istringstream lines(r.out);
      size_t n = 0;
      for (std::string line; std::getline(lines, line); ++n) {
        Value v = ParseJsonOrFail(line);
        CHECK(v.Find("line"));
        CHECK(!v.GetString("kind").empty());
        CHECK(v.GetString("kind") != "error");
      }
      CHECK(n > 0);
    }
  }
  SECTION("the passcode policy's decisions, also as a dry run") {
    const std::string args = ShellQuote(root + "/policies/passcode.lua") + " --events " +
                             ShellQuote(root + "/tests/policies/passcode.events.jsonl");
    CtlRun r = test(args);
    REQUIRE(r.exit_code == 0);
    Value first = ParseJsonOrFail(r.out.substr(0, r.out.find('\n')));
    CHECK(*first.Find("line")->AsInteger() == 1);
    CHECK(first.GetString("kind") == "command");
    CHECK(first.GetString("request_type") == "InstallProfile");
    CHECK(r.out.find(
              R"("kind":"compliance","enrollment_id":"PHONE-1","status":"remediation_pending")") !=
          std::string::npos);
    r = test(args + " --dry-run");
    CHECK(r.exit_code == 0);
    CHECK(r.out.find(R"("kind":"command")") != std::string::npos);
  }
  SECTION("a failing run exits 1, after the other lines ran") {
    REQUIRE(orchard::testing::WriteFile(dir + "/fail.lua", R"(
policy:on("policy.run", function(ctx, event)
  if event.payload.args and event.payload.args.fail then error("boom") end
  ctx:put("ok", true)
end))"));
    REQUIRE(orchard::testing::WriteFile(
        dir + "/events.jsonl",
        "{\"type\": \"policy.run\", \"payload\": {\"args\": {\"fail\": true}}}\n"
        "# a comment\n"
        "{\"type\": \"policy.run\"}\n"));
    CtlRun r =
        test(ShellQuote(dir + "/fail.lua") + " --events " + ShellQuote(dir + "/events.jsonl"));
    CHECK(r.exit_code == 1);
    CHECK(
        r.out.find(
            R"({"line":1,"event":"policy.run","kind":"error","error":"script_error","message":"fail.lua:3: boom)") ==
        0);
    CHECK(r.out.find(R"({"line":3,"event":"policy.run","kind":"store","key":"ok","value":true})") !=
          std::string::npos);
    CHECK(r.err.find("a run failed") != std::string::npos);
  }
  SECTION("bad input exits 2 and says where") {
    REQUIRE(orchard::testing::WriteFile(dir + "/events.jsonl",
                                        "{\"type\": \"policy.run\"}\n{\"type\": \"policy.run\"\n"));
    const std::string policy = ShellQuote(root + "/policies/lost_mode.lua");
    CtlRun r = test(policy + " --events " + ShellQuote(dir + "/events.jsonl"));
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("orchardctl: policy test: events line 2: not a JSON object") == 0);
    r = test(policy + " --events " + ShellQuote(dir + "/missing.jsonl"));
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("cannot read " + dir + "/missing.jsonl") != std::string::npos);
    r = test(ShellQuote(dir + "/missing.lua") + " --events " + ShellQuote(dir + "/events.jsonl"));
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("cannot read policy " + dir + "/missing.lua") != std::string::npos);
    REQUIRE(orchard::testing::WriteFile(dir + "/bad.lua",
                                        "policy:on('x', function(ctx)\n  if then\nend)\n"));
    r = test(ShellQuote(dir + "/bad.lua") + " --events " + ShellQuote(dir + "/events.jsonl"));
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("bad.lua:2:") != std::string::npos);
    r = test(policy + " --events " + ShellQuote(dir));
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("is a directory") != std::string::npos);
    r = test(policy);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--events EVENTS.jsonl is required") != std::string::npos);
    r = test(policy + " --events - ");  // stdin is empty: nothing to run
    CHECK(r.exit_code == 0);
    CHECK(r.out.empty());
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// ---- plugins ------------------------------------------------------------------

TEST_CASE("orchardd loads plugins from plugin.dir: the plugin acts on events, GET /v1/plugins and "
          "orchardctl plugins report it and the refused ones",
          "[integration][ctl][plugin]") {
  // A private plugin directory with the test plugin (it queues two commands when a
  // device enrolls) and one built for another ABI major.
  const std::string plugins = orchard::testing::MakeTempDir("orchard-ctl-plugins");
  for (const char* so : {TP_FULL, TP_MAJOR}) {
    const std::string to = plugins + "/" + std::filesystem::path(so).filename().string();
    std::filesystem::copy_file(so, to);
    REQUIRE(chmod(to.c_str(), 0755) == 0);
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{plugins};
  Server server("plugin.dir = " + plugins + "\nplugin.full.greeting = \"hello there\"\n");
  REQUIRE(server.Start());

  // Not without the key.
  CHECK(HttpCall("GET", server.url() + "/v1/plugins", "", {}).status == 401);

  server.Enroll();  // enrollment.enrolled: the plugin queues DeviceInformation and SecurityInfo
  auto queued = [&] {
    auto r = HttpCall("GET", server.url() + "/v1/enrollments/" + kUdid + "/queue", "",
                      {std::string("X-API-Key: ") + kApiKey});
    if (r.status != 200) return std::set<std::string>{};
    auto v = orchard::plist::ParseJson(r.body);
    std::set<std::string> types;
    if (v.ok() && v->Find("commands") && v->Find("commands")->AsArray())
      for (const auto& c : *v->Find("commands")->AsArray()) types.insert(std::string(c.GetString("request_type")));
    return types;
  };
  REQUIRE(WaitFor([&] { return queued() == std::set<std::string>{"DeviceInformation", "SecurityInfo"}; }));

  auto list = Items(server.Ctl("plugins --json"), "plugins");
  REQUIRE(list.size() == 2);
  const Value& full = list[0];
  CHECK(full.GetString("name") == "full");
  CHECK(full.GetString("version") == "1.2.3");
  CHECK(full.GetString("status") == "loaded");
  CHECK(full.GetString("consumer") == "plugin:full");
  auto number = [](const Value& v, const char* key) -> int64_t {
    const Value* n = v.Find(key);
    return n && n->AsInteger() ? *n->AsInteger() : -1;
  };
  CHECK(number(full, "handled") >= 1);
  CHECK(number(full, "errors") == 0);
  CHECK(full.Find("lag_ms") != nullptr);
  const Value& major = list[1];
  CHECK(major.GetString("status") == "refused");
  CHECK(major.GetString("error") == "abi_major");
  CHECK(major.GetString("message").find("ABI 2.0") != std::string::npos);

  // The plugin's config section reached its init (it logs what it got).
  CHECK(server.Log().find(R"(event=plugin_log plugin=full message="config: {\"greeting\":\"hello there\"}")") !=
        std::string::npos);
  auto one = HttpCall("GET", server.url() + "/v1/plugins/full", "", {std::string("X-API-Key: ") + kApiKey});
  CHECK(one.status == 200);
  CHECK(ParseJsonOrFail(one.body).GetString("status") == "loaded");
  CHECK(HttpCall("GET", server.url() + "/v1/plugins/nope", "", {std::string("X-API-Key: ") + kApiKey}).status == 404);

  // The plugin's routes (ABI 1.1) behind the admin key, which the plugin never sees.
  CHECK(ParseJsonOrFail(one.body).Find("routes") != nullptr);
  CHECK(HttpCall("GET", server.url() + "/plugins/full/auth", "", {}).status == 401);
  CHECK(HttpCall("GET", server.url() + "/plugins/full/auth", "", {"X-API-Key: wrong-key-0123456789"}).status == 401);
  auto auth = HttpCall("GET", server.url() + "/plugins/full/auth", "", {std::string("X-API-Key: ") + kApiKey});
  CHECK(auth.status == 200);
  CHECK(auth.body == "no credentials");
  auth = HttpCall("GET", server.url() + "/plugins/full/auth", "",
                  {std::string("Authorization: Bearer ") + kApiKey});
  CHECK(auth.status == 200);
  CHECK(auth.body == "no credentials");
  auto hdr = HttpCall("GET", server.url() + "/plugins/full/headers?x=1&y=two", "", {std::string("X-API-Key: ") + kApiKey});
  CHECK(hdr.status == 200);
  CHECK((hdr.body == "x=1&y=two" || hdr.body == "y=two&x=1"));  // Pistache keeps no order
  CHECK(HttpCall("GET", server.url() + "/plugins/full/no-such", "", {std::string("X-API-Key: ") + kApiKey}).status ==
        404);
  CHECK(HttpCall("GET", server.url() + "/plugins/tp_major/x", "", {std::string("X-API-Key: ") + kApiKey}).status ==
        404);  // refused: not loaded
  CHECK(HttpCall("GET", server.url() + "/plugins/full/%zz", "", {std::string("X-API-Key: ") + kApiKey}).status ==
        400);
  // What it decided (the enrollment run queued two commands) is listed like a policy's.
  auto decisions = HttpCall("GET", server.url() + "/v1/plugins/full/decisions", "",
                            {std::string("X-API-Key: ") + kApiKey});
  CHECK(decisions.status == 200);
  CHECK(decisions.body.find("DeviceInformation") != std::string::npos);
  CHECK(HttpCall("GET", server.url() + "/v1/plugins/full/parked", "", {std::string("X-API-Key: ") + kApiKey}).status ==
        200);
  CHECK(HttpCall("GET", server.url() + "/v1/plugins/nope/decisions", "", {std::string("X-API-Key: ") + kApiKey})
            .status == 404);

  CtlRun r = server.Ctl("plugins");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("NAME") == 0);
  std::vector<std::string> row = Row(r.out, "full");
  REQUIRE(row.size() == 7);
  CHECK(std::vector<std::string>(row.begin(), row.begin() + 3) ==
        std::vector<std::string>{"full", "1.2.3", "loaded"});
  CHECK(row[4] == "0");  // errors
  CHECK(Row(r.out, "tp_major").at(2) == "refused");
  CHECK(r.out.find("tp_major (" + plugins + "/tp_major.so): abi_major: built for plugin ABI 2.0") !=
        std::string::npos);
  CHECK(server.Ctl("plugins extra").exit_code == 2);
}

TEST_CASE("orchardd refuses to start with a plugin.dir writable by others", "[integration][ctl][plugin]") {
  const std::string plugins = orchard::testing::MakeTempDir("orchard-ctl-plugins");
  REQUIRE(chmod(plugins.c_str(), 0777) == 0);
  Server server("plugin.dir = " + plugins + "\n");
  CHECK_FALSE(server.Start());
  CHECK(server.Log().find("plugin.dir: plugin.dir " + plugins + " is writable by group or others") !=
        std::string::npos);
  std::filesystem::remove_all(plugins);
}
