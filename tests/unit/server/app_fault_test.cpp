// The whole server in process (real HTTP on an ephemeral port, real RocksDB in
// a temp dir) on a file system that reports a full disk on demand: answers,
// health, metrics and recovery while the disk is full and after space returns.
#include <catch2/catch.hpp>

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include <chrono>
#include <filesystem>
#include <thread>

#include "config/config.h"
#include "events/events.h"
#include "plist/plist.h"
#include "server/app.h"
#include "store/store.h"
#include "support/orchardd_process.h"
#include "unit/store/fault_fs.h"

using namespace orchard;
using plist::Value;

namespace {

constexpr const char* kKey = "app-fault-test-api-key-0001";

struct Reply {
  long status = 0;
  std::string body;
  std::string retry_after;  // the Retry-After header ("" if absent)
};

size_t CollectBody(char* p, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(p, size * n);
  return size * n;
}

size_t CollectHeader(char* p, size_t size, size_t n, void* out) {
  std::string line(p, size * n);
  const std::string name = "retry-after:";
  std::string lower = line.substr(0, std::min(line.size(), name.size()));
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == name) {
    std::string v = line.substr(name.size());
    while (!v.empty() && (v.front() == ' ')) v.erase(0, 1);
    while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.pop_back();
    *static_cast<std::string*>(out) = v;
  }
  return size * n;
}

Reply Call(const std::string& method, const std::string& url, const std::string& body,
           std::vector<std::string> headers) {
  Reply r;
  CURL* c = curl_easy_init();
  REQUIRE(c);
  curl_slist* hs = nullptr;
  headers.push_back("Expect:");
  for (const auto& h : headers) hs = curl_slist_append(hs, h.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method != "GET" && method != "DELETE") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, CollectBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, CollectHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.retry_after);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(hs);
  curl_easy_cleanup(c);
  return r;
}

struct Server {
  std::string dir = testing::MakeTempDir("orchard-app-fault");
  testing::FullDiskEnv disk;
  std::unique_ptr<server::App> app;

  explicit Server(bool faulty = true) {
    config::Config c;
    c.listen_port = 0;
    c.data_dir = dir + "/data";
    c.insecure_dev = true;  // devices without certificates: this test is about storage
    c.api_key = kKey;
    REQUIRE(Start(c, faulty));
  }
  bool Start(const config::Config& c, bool faulty) {
    server::TestHooks hooks;
    if (faulty) hooks.store_env = disk.env.get();
    auto a = server::App::Start(c, hooks);
    if (!a.ok()) return false;
    app = std::move(a.value());
    return true;
  }
  ~Server() {
    app.reset();
    std::filesystem::remove_all(dir);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(app->port()); }
  Reply Device(const std::string& body, bool checkin) {
    return Call("PUT", url() + "/mdm", body,
                {checkin ? "Content-Type: application/x-apple-aspen-mdm-checkin"
                         : "Content-Type: application/x-apple-aspen-mdm"});
  }
  Reply Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return Call(method, url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
  Reply Get(const std::string& path) { return Call("GET", url() + path, "", {}); }
};

std::string Checkin(const std::string& type, const std::string& udid) {
  Value v;
  v.Set("MessageType", Value::String(type));
  v.Set("UDID", Value::String(udid));
  v.Set("Topic", Value::String("com.apple.mgmt.test"));
  if (type == "Authenticate") v.Set("SerialNumber", Value::String("SN-" + udid));
  if (type == "TokenUpdate") {
    v.Set("Token", Value::DataValue(std::string(32, '\x07')));
    v.Set("PushMagic", Value::String("magic"));
  }
  return plist::ToXml(v);
}

std::string Idle(const std::string& udid) {
  Value v;
  v.Set("UDID", Value::String(udid));
  v.Set("Status", Value::String("Idle"));
  return plist::ToXml(v);
}

std::string Command(const std::string& uuid) {
  Value cmd;
  cmd.Set("RequestType", Value::String("DeviceInformation"));
  Value v;
  v.Set("CommandUUID", Value::String(uuid));
  v.Set("Command", cmd);
  return plist::ToXml(v);
}

// The value of one exposition line ("name{labels} value"); -1 if absent.
double Metric(const std::string& text, const std::string& series) {
  auto pos = text.find("\n" + series + " ");
  if (pos == std::string::npos) return -1;
  return std::stod(text.substr(pos + series.size() + 2));
}

// Sends this process's stderr (where the log goes) to a file while alive.
class StderrCapture {
 public:
  explicit StderrCapture(std::string path) : path_(std::move(path)) {
    std::fflush(stderr);
    saved_ = dup(2);
    int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    dup2(fd, 2);
    close(fd);
  }
  ~StderrCapture() {
    std::fflush(stderr);
    dup2(saved_, 2);
    close(saved_);
  }
  std::string Text() const {
    std::fflush(stderr);
    return testing::ReadFile(path_);
  }

 private:
  std::string path_;
  int saved_ = -1;
};

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::seconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

}  // namespace

TEST_CASE("full disk: 503 with Retry-After, unhealthy, then recovery by itself with data intact", "[server][fault]") {
  Server s;
  StderrCapture log(s.dir + "/stderr.log");
  REQUIRE(s.Device(Checkin("Authenticate", "FULL-1"), true).status == 200);
  REQUIRE(s.Device(Checkin("TokenUpdate", "FULL-1"), true).status == 200);
  REQUIRE(s.Api("PUT", "/v1/enqueue/FULL-1?nopush=1", Command("BEFORE")).status == 200);
  REQUIRE(s.Get("/healthz").status == 200);

  s.disk.fs->set_full(true);
  auto idle = s.Device(Idle("FULL-1"), false);  // would deliver BEFORE: the delivery is not stored
  CHECK(idle.status == 503);
  CHECK(idle.retry_after == "30");
  auto enq = s.Api("PUT", "/v1/enqueue/FULL-1?nopush=1", Command("WHILE-FULL"));
  CHECK(enq.status == 503);
  CHECK(enq.retry_after == "30");
  auto clear = s.Api("DELETE", "/v1/enrollments/FULL-1/queue");
  CHECK(clear.status == 503);
  CHECK(clear.retry_after == "30");
  auto health = s.Get("/healthz");
  CHECK(health.status == 503);
  CHECK(health.body.find("No space") != std::string::npos);
  auto metrics = s.Get("/metrics").body;
  CHECK(Metric(metrics, "orchard_store_errors_total{kind=\"no_space\"}") >= 1);
  CHECK(Metric(metrics, "orchard_store_writable") == 0);
  // Reads still answer.
  CHECK(s.Api("GET", "/v1/enrollments/FULL-1").status == 200);

  s.disk.fs->set_full(false);
  REQUIRE(WaitUntil([&] { return s.Get("/healthz").status == 200; }, std::chrono::seconds(30)));
  CHECK(Metric(s.Get("/metrics").body, "orchard_store_writable") == 1);
  // The queued command survived, the refused one was never stored, and the
  // device is served again.
  auto cmd = s.Device(Idle("FULL-1"), false);
  REQUIRE(cmd.status == 200);
  CHECK(cmd.body.find("BEFORE") != std::string::npos);
  auto queue = s.Api("GET", "/v1/enrollments/FULL-1/queue");
  CHECK(queue.body.find("WHILE-FULL") == std::string::npos);
  CHECK(s.Api("PUT", "/v1/enqueue/FULL-1?nopush=1", Command("AFTER")).status == 200);

  // Logged: the fault and the recovery; the delivery that was not stored is
  // not logged as sent (only the one after recovery is).
  const std::string text = log.Text();
  CHECK(text.find("event=store_error kind=no_space") != std::string::npos);
  CHECK(text.find("event=store_recovered") != std::string::npos);
  CHECK(Count(text, "event=command_sent enrollment_id=FULL-1 command_uuid=BEFORE") == 1);
}

TEST_CASE("admin API lists event consumers and unregisters an abandoned one", "[server][retention]") {
  std::string dir = testing::MakeTempDir("orchard-app-consumers");
  {
    // A consumer that read up to seq 1 and was never heard of again.
    std::filesystem::create_directories(dir + "/data");
    auto st = std::move(store::Store::Open({.path = dir + "/data/db"}).value());
    auto log = std::move(events::EventLog::Open(st.get()).value());
    REQUIRE(log->SetCheckpoint("old-plugin", 1).ok());
  }
  config::Config c;
  c.listen_port = 0;
  c.data_dir = dir + "/data";
  c.insecure_dev = true;
  c.api_key = kKey;
  auto app = std::move(server::App::Start(c).value());
  const std::string url = "http://127.0.0.1:" + std::to_string(app->port());
  const std::vector<std::string> key = {std::string("X-API-Key: ") + kKey};

  auto list = Call("GET", url + "/v1/consumers", "", key);
  REQUIRE(list.status == 200);
  CHECK(list.body.find("\"name\":\"old-plugin\"") != std::string::npos);
  CHECK(list.body.find("\"checkpoint\":1") != std::string::npos);
  CHECK(Call("DELETE", url + "/v1/consumers/old-plugin", "", key).status == 200);
  CHECK(Call("DELETE", url + "/v1/consumers/old-plugin", "", key).status == 404);
  CHECK(Call("GET", url + "/v1/consumers", "", key).body.find("old-plugin") == std::string::npos);
  CHECK(Call("POST", url + "/v1/consumers", "", key).status == 405);
  CHECK(Call("GET", url + "/v1/consumers", "", {}).status == 401);
  app.reset();
  std::filesystem::remove_all(dir);
}
