// bench_webhook: webhook deliveries/s with HMAC from the real orchardd with
// plugins/webhook loaded to a local receiver that checks every signature, and
// the same receiver's capacity driven directly (the baseline).
//
//   bench_webhook [--devices 4000] [--steady-devices 4000] [--concurrency 16]
//                 [--receiver-threads 2] [--checkin-connections 8] [--work DIR] [--json FILE]
//                 [--keep-work]
//
// 1. backlog: orchardd (plugin.webhook: one endpoint with a secret,
//    orchard_events = true) while the receiver is down; --devices devices check
//    in through the real device protocol (PUT /mdm: Authenticate, TokenUpdate;
//    3 webhook events each: mdm.Authenticate, mdm.TokenUpdate,
//    orchard.enrollment.enrolled). Once the outbox holds every record (status
//    route depth), the receiver starts on the endpoint's port: deliveries/s =
//    records / (receiver start -> last accepted request). Failed attempts
//    while it was down wait at most backoff_max_ms (100 ms) before a retry.
// 2. steady: the receiver up, --steady-devices more devices check in as fast
//    as the check-in client gets answers (closed loop, --checkin-connections
//    keep-alive connections): records/s written, deliveries/s while check-ins
//    arrive, deliveries/s from the first check-in to the last delivery, and
//    the lag of the last delivery behind the last check-in.
// 3. baseline: a fresh receiver driven by a curl-multi client in this process
//    (--concurrency transfers, keep-alive, each request signed with
//    HMAC-SHA256 like the plugin's) posting the bodies the plugin delivered in 1.
// Every accepted request's HMAC is valid (else 401 and counted); event_ids are
// checked for duplicates. Prints the machine, a table and a JSON line.
// Not a ctest test.
#include <curl/curl.h>
#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_common.h"
#include "bench/http_engine.h"
#include "bench/webhook_receiver.h"
#include "support/orchardd_process.h"

using namespace orchard::bench;
using orchard::testing::HttpCall;
using orchard::testing::OrchardProcess;
namespace fs = std::filesystem;

namespace {

constexpr char kApiKey[] = "bench-webhook-api-key-0123456789";
constexpr char kSecret[] = "bench-webhook-secret";
constexpr int kEventsPerDevice = 3;

std::string CheckinBody(bool authenticate, const std::string& udid) {
  std::string b =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
      "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\"><dict>";
  if (authenticate) {
    b += "<key>BuildVersion</key><string>21E219</string><key>MessageType</key><string>Authenticate</string>"
         "<key>Model</key><string>iPhone15,2</string><key>OSVersion</key><string>17.4</string>"
         "<key>SerialNumber</key><string>SN-" +
         udid.substr(udid.size() - 8) + "</string>";
  } else {
    b += "<key>MessageType</key><string>TokenUpdate</string><key>PushMagic</key><string>magic-secret</string>"
         "<key>Token</key><data>BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=</data>";
  }
  b += "<key>Topic</key><string>com.apple.mgmt.test</string><key>UDID</key><string>" + udid +
       "</string></dict></plist>\n";
  return b;
}

// Closed-loop check-ins: connection c enrolls devices first + c, first + c + C, ...
// (Authenticate, then TokenUpdate, each answered before the next).
class CheckinDriver : public Driver {
 public:
  CheckinDriver(uint64_t first, uint64_t count, size_t connections)
      : first_(first), count_(count), conns_(connections) {
    for (size_t c = 0; c < connections; ++c) conns_[c].next = c;
  }
  bool Next(size_t conn, std::string_view* request) override {
    ConnState& s = conns_[conn];
    if (s.next >= count_) return false;
    const std::string body = CheckinBody(s.step == 0, DeviceUdid(first_ + s.next));
    s.req = "PUT /mdm HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-apple-aspen-mdm-checkin\r\n"
            "Content-Length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body;
    if (s.step == 1) s.next += conns_.size();
    s.step ^= 1;
    *request = s.req;
    return true;
  }
  void OnResponse(int, size_t, const Response& r, uint32_t) override {
    if (r.status == 200) ok_.fetch_add(1);
    else failed_.fetch_add(1);
  }
  uint64_t ok() const { return ok_.load(); }
  uint64_t failed() const { return failed_.load(); }

 private:
  struct ConnState {
    uint64_t next = 0;
    int step = 0;
    std::string req;
  };
  uint64_t first_, count_;
  std::vector<ConnState> conns_;
  std::atomic<uint64_t> ok_{0}, failed_{0};
};

// Runs the check-ins of devices [first, first + count); false on any failure.
bool Checkins(uint16_t port, uint64_t first, uint64_t count, size_t connections) {
  CheckinDriver d(first, count, connections);
  EngineOptions eo;
  eo.port = port;
  eo.connections = connections;
  eo.threads = 1;
  eo.ramp = false;
  Engine e(eo, &d);
  e.Start();
  const bool done = e.WaitFinished(600);
  e.Stop();
  if (!done || d.failed() > 0 || d.ok() != 2 * count) {
    std::fprintf(stderr, "bench_webhook: check-ins: %" PRIu64 " answered 200, %" PRIu64 " failed (of %" PRIu64
                         "), transport errors %" PRIu64 "\n",
                 d.ok(), d.failed(), 2 * count, e.transport_errors());
    return false;
  }
  return true;
}

// The outbox depth from the plugin's status route (-1 if unreadable).
int64_t Depth(const OrchardProcess& p) {
  auto r = HttpCall("GET", p.url() + "/plugins/webhook/status?dead_limit=0", "",
                    {std::string("X-API-Key: ") + kApiKey});
  if (r.status != 200) return -1;
  const size_t k = r.body.find("\"depth\":");
  if (k == std::string::npos) return -1;
  return std::strtoll(r.body.c_str() + k + 8, nullptr, 10);
}

template <class F>
bool WaitFor(F cond, double timeout_s, int poll_ms = 5) {
  const uint64_t start = NowNs();
  while (!cond()) {
    if (SecondsSince(start) > timeout_s) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  return true;
}

// The orchardd child of this process (for its CPU time); -1 if not found.
pid_t OrchardPid() {
  pid_t found = -1;
  DIR* d = opendir("/proc");
  if (!d) return -1;
  while (dirent* e = readdir(d)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream f("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    std::getline(f, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos || line.find("(orchardd)") == std::string::npos) continue;
    int ppid = 0;
    char state = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == getpid()) found = pid;
  }
  closedir(d);
  return found;
}

std::string B64(const unsigned char* p, size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

// The baseline: posts each body once with --concurrency transfers on curl
// multi, set up like the plugin's sender (reused easy handles, keep-alive,
// Content-Type, "Expect:" removed, X-Hmac-Signature). Returns deliveries/s
// (2xx), or 0 on failure.
double CurlMultiBaseline(const std::string& url, const std::vector<std::string>& bodies, int concurrency,
                         uint64_t* failed) {
  CURLM* multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, static_cast<long>(concurrency + 4));
  struct Slot {
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    bool busy = false;
  };
  std::vector<Slot> slots(static_cast<size_t>(concurrency));
  for (auto& s : slots) {
    s.easy = curl_easy_init();
    curl_easy_setopt(s.easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(s.easy, CURLOPT_POST, 1L);
    curl_easy_setopt(s.easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s.easy, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(s.easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(s.easy, CURLOPT_WRITEFUNCTION, &Discard);
    curl_easy_setopt(s.easy, CURLOPT_USERAGENT, "orchard-webhook/1.0");
    curl_easy_setopt(s.easy, CURLOPT_PRIVATE, &s);
  }
  size_t next = 0, done = 0;
  uint64_t ok = 0;
  const uint64_t t0 = NowNs();
  while (done < bodies.size()) {
    for (auto& s : slots) {
      if (s.busy || next >= bodies.size()) continue;
      const std::string& body = bodies[next++];
      unsigned char mac[EVP_MAX_MD_SIZE];
      unsigned int len = 0;
      HMAC(EVP_sha256(), kSecret, static_cast<int>(std::strlen(kSecret)),
           reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
      if (s.headers) curl_slist_free_all(s.headers);
      s.headers = curl_slist_append(nullptr, "Content-Type: application/json");
      s.headers = curl_slist_append(s.headers, "Expect:");
      s.headers = curl_slist_append(s.headers, ("X-Hmac-Signature: " + B64(mac, len)).c_str());
      curl_easy_setopt(s.easy, CURLOPT_HTTPHEADER, s.headers);
      curl_easy_setopt(s.easy, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(s.easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
      curl_multi_add_handle(multi, s.easy);
      s.busy = true;
    }
    int running = 0;
    curl_multi_perform(multi, &running);
    int left = 0;
    bool any = false;
    while (CURLMsg* m = curl_multi_info_read(multi, &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      any = true;
      Slot* s = nullptr;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&s));
      long status = 0;
      curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      if (m->data.result == CURLE_OK && status >= 200 && status < 300) ++ok;
      else ++*failed;
      curl_multi_remove_handle(multi, m->easy_handle);
      s->busy = false;
      ++done;
    }
    if (!any) curl_multi_poll(multi, nullptr, 0, 100, nullptr);
  }
  const double secs = SecondsSince(t0);
  for (auto& s : slots) {
    curl_easy_cleanup(s.easy);
    if (s.headers) curl_slist_free_all(s.headers);
  }
  curl_multi_cleanup(multi);
  return secs > 0 ? static_cast<double>(ok) / secs : 0;
}

void PrintMachine() {
  struct utsname u {};
  uname(&u);
  std::string model;
  std::ifstream cpu("/proc/cpuinfo");
  for (std::string line; std::getline(cpu, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  std::printf("machine: %s %s, %u cpus, %s\n", u.sysname, u.release, std::thread::hardware_concurrency(),
              model.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Flags f(argc, argv, {"devices", "steady-devices", "concurrency", "receiver-threads", "checkin-connections", "work",
                       "json", "keep-work!", "help!"});
  if (!f.ok() || f.Has("help")) {
    std::fprintf(stderr, "%s\nusage: bench_webhook [--devices 4000] [--steady-devices 4000] [--concurrency 16]\n"
                         "         [--receiver-threads 2] [--checkin-connections 8] [--work DIR] [--json FILE] [--keep-work]\n",
                 f.error().c_str());
    return f.Has("help") ? 0 : 2;
  }
  const uint64_t devices = static_cast<uint64_t>(f.GetInt("devices", 4000));
  const uint64_t steady_devices = static_cast<uint64_t>(f.GetInt("steady-devices", 4000));
  const int concurrency = static_cast<int>(f.GetInt("concurrency", 16));
  const int rx_threads = static_cast<int>(f.GetInt("receiver-threads", 2));
  const size_t checkin_conns = static_cast<size_t>(f.GetInt("checkin-connections", 8));
  const std::string work = f.Get("work", fs::temp_directory_path().string() + "/orchard-bench-webhook");
  curl_global_init(CURL_GLOBAL_DEFAULT);
  PrintMachine();

  std::error_code ec;
  fs::remove_all(work, ec);
  fs::create_directories(work + "/plugins", ec);
  fs::permissions(work, fs::perms::owner_all, fs::perm_options::replace, ec);
  fs::permissions(work + "/plugins", fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                         fs::perms::others_read | fs::perms::others_exec,
                  fs::perm_options::replace, ec);
  fs::copy_file(WEBHOOK_SO, work + "/plugins/webhook.so", fs::copy_options::overwrite_existing, ec);
  if (ec) {
    std::fprintf(stderr, "bench_webhook: cannot copy %s: %s\n", WEBHOOK_SO, ec.message().c_str());
    return 1;
  }
  chmod((work + "/plugins/webhook.so").c_str(), 0755);

  // The endpoint's port: taken by a receiver, freed (connections refused until phase 1's receiver starts).
  uint16_t port = 0;
  {
    HookReceiver probe({.secret = kSecret, .threads = 1});
    std::string err;
    if (!probe.Start(&err)) {
      std::fprintf(stderr, "bench_webhook: receiver: %s\n", err.c_str());
      return 1;
    }
    port = probe.port();
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/hook";
  {
    std::ofstream conf(work + "/orchard.conf");
    conf << "plugin.dir = " << work << "/plugins\nlog.level = warn\n"
         << "plugin.webhook.endpoint.main.url = " << url << "\n"
         << "plugin.webhook.endpoint.main.secret = " << kSecret << "\n"
         << "plugin.webhook.endpoint.main.concurrency = " << concurrency << "\n"
         << "plugin.webhook.orchard_events = true\n"
         << "plugin.webhook.backoff_min_ms = 100\nplugin.webhook.backoff_max_ms = 100\n"
         << "plugin.webhook.max_attempts = 1000000\n";
  }
  OrchardProcess server(work + "/data", {"--config", work + "/orchard.conf", "--insecure-dev", "--api-key", kApiKey});
  if (!server.Start()) {
    std::fprintf(stderr, "bench_webhook: orchardd did not start; log %s\n", server.log_path().c_str());
    return 1;
  }
  const pid_t pid = OrchardPid();
  const uint64_t backlog = devices * kEventsPerDevice;
  const uint64_t steady = steady_devices * kEventsPerDevice;

  // 1. Backlog.
  std::fprintf(stderr, "bench_webhook: backlog: %" PRIu64 " devices check in while the receiver is down...\n", devices);
  uint64_t t0 = NowNs();
  if (!Checkins(static_cast<uint16_t>(server.port()), 0, devices, checkin_conns)) return 1;
  const double fill_checkins_s = SecondsSince(t0);
  if (!WaitFor([&] { return Depth(server) == static_cast<int64_t>(backlog); }, 300, 200)) {
    std::fprintf(stderr, "bench_webhook: the outbox never held %" PRIu64 " records (depth %" PRId64 ")\n", backlog,
                 Depth(server));
    return 1;
  }
  HookReceiver rx({.secret = kSecret, .threads = rx_threads, .port = port, .keep_bodies = backlog});
  std::string err;
  double cpu_server = pid > 0 ? ProcessCpuSeconds(pid) : -1;
  double cpu_self = SelfCpuSeconds();
  double busy = SystemBusySeconds();
  const uint64_t t_rx = NowNs();
  if (!rx.Start(&err)) {
    std::fprintf(stderr, "bench_webhook: receiver on port %u: %s\n", port, err.c_str());
    return 1;
  }
  if (!WaitFor([&] { return rx.accepted() >= backlog; }, 300)) {
    std::fprintf(stderr, "bench_webhook: drained only %" PRIu64 " of %" PRIu64 " in 300 s\n", rx.accepted(), backlog);
    return 1;
  }
  const double drain_s = static_cast<double>(rx.last_ns() - t_rx) / 1e9;
  const double drain_rate = backlog / drain_s;
  const double drain_cpu_server = pid > 0 ? ProcessCpuSeconds(pid) - cpu_server : -1;
  const double drain_cpu_self = SelfCpuSeconds() - cpu_self;
  const double drain_others = SystemBusySeconds() - busy - drain_cpu_server - drain_cpu_self;

  // 2. Steady state.
  std::fprintf(stderr, "bench_webhook: steady: %" PRIu64 " more devices check in, receiver up...\n", steady_devices);
  const uint64_t before = rx.accepted();
  cpu_server = pid > 0 ? ProcessCpuSeconds(pid) : -1;
  cpu_self = SelfCpuSeconds();
  busy = SystemBusySeconds();
  t0 = NowNs();
  if (!Checkins(static_cast<uint16_t>(server.port()), devices, steady_devices, checkin_conns)) return 1;
  const uint64_t t_checked_in = NowNs();
  const uint64_t delivered_during = rx.accepted() - before;
  if (!WaitFor([&] { return rx.accepted() >= before + steady; }, 300)) {
    std::fprintf(stderr, "bench_webhook: steady: delivered only %" PRIu64 " of %" PRIu64 " in 300 s\n",
                 rx.accepted() - before, steady);
    return 1;
  }
  const double checkin_s = static_cast<double>(t_checked_in - t0) / 1e9;
  const double produced_rate = steady / checkin_s;
  const double during_rate = delivered_during / checkin_s;
  const double steady_rate = steady / (static_cast<double>(rx.last_ns() - t0) / 1e9);
  const double lag_ms = rx.last_ns() > t_checked_in ? static_cast<double>(rx.last_ns() - t_checked_in) / 1e6 : 0;
  const double steady_cpu_server = pid > 0 ? ProcessCpuSeconds(pid) - cpu_server : -1;
  const double steady_cpu_self = SelfCpuSeconds() - cpu_self;
  const double steady_others = SystemBusySeconds() - busy - steady_cpu_server - steady_cpu_self;
  const bool empty = WaitFor([&] { return Depth(server) == 0; }, 30, 100);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // anything sent twice would arrive now
  server.Stop();
  rx.Stop();
  const uint64_t dups = rx.Duplicates(), bad = rx.bad_hmac(), missing_ids = rx.MissingIds();
  const uint64_t total = rx.accepted(), conns = rx.connections();
  std::vector<std::string> bodies = rx.TakeBodies();

  // 3. Baseline: the same receiver, driven directly.
  std::fprintf(stderr, "bench_webhook: baseline: %zu bodies posted by curl multi (%d transfers)...\n", bodies.size(),
               concurrency);
  HookReceiver base({.secret = kSecret, .threads = rx_threads});
  if (!base.Start(&err)) {
    std::fprintf(stderr, "bench_webhook: baseline receiver: %s\n", err.c_str());
    return 1;
  }
  cpu_self = SelfCpuSeconds();
  busy = SystemBusySeconds();
  uint64_t base_failed = 0;
  const double base_rate = CurlMultiBaseline("http://127.0.0.1:" + std::to_string(base.port()) + "/hook", bodies,
                                             concurrency, &base_failed);
  const double base_cpu = SelfCpuSeconds() - cpu_self;
  const double base_others = SystemBusySeconds() - busy - base_cpu;
  base.Stop();
  size_t body_bytes = 0;
  for (const auto& b : bodies) body_bytes += b.size();
  const double mean_body = bodies.empty() ? 0 : static_cast<double>(body_bytes) / bodies.size();

  std::printf("webhook: 1 endpoint, HMAC-SHA256, concurrency %d, receiver %d epoll threads, mean body %.0f bytes\n",
              concurrency, rx_threads, mean_body);
  std::printf("%-10s %9s %12s %12s %9s %8s %11s %11s %9s\n", "phase", "records", "deliveries/s", "vs baseline",
              "lag ms", "wall s", "orchardd s", "bench s", "others s");
  std::printf("%-10s %9" PRIu64 " %12.0f %11.0f%% %9s %8.2f %11.2f %11.2f %9.2f\n", "backlog", backlog, drain_rate,
              100 * drain_rate / base_rate, "-", drain_s, drain_cpu_server, drain_cpu_self, drain_others);
  std::printf("%-10s %9" PRIu64 " %12.0f %11.0f%% %9.0f %8.2f %11.2f %11.2f %9.2f\n", "steady", steady, steady_rate,
              100 * steady_rate / base_rate, lag_ms, steady / steady_rate, steady_cpu_server, steady_cpu_self,
              steady_others);
  std::printf("%-10s %9zu %12.0f %11s %9s %8.2f %11s %11.2f %9.2f\n", "baseline", bodies.size(), base_rate, "100%",
              "-", bodies.size() / base_rate, "-", base_cpu, base_others);
  std::printf("backlog: %" PRIu64 " devices' check-ins (%.1f s) queued %" PRIu64
              " records while the receiver was down; deliveries/s = records / (receiver start -> last delivery)\n",
              devices, fill_checkins_s, backlog);
  std::printf("steady: check-ins produced %.0f records/s (%" PRIu64 " devices, %zu connections); %.0f deliveries/s "
              "while they arrived; deliveries/s = records / (first check-in -> last delivery); lag = last delivery "
              "after the last check-in answered\n",
              produced_rate, steady_devices, checkin_conns, during_rate);
  std::printf("baseline: the same receiver driven by curl multi in this process (%d transfers, keep-alive, HMAC per "
              "request), each backlog body once; %" PRIu64 " failed\n",
              concurrency, base_failed);
  std::printf("checks: %" PRIu64 " accepted, %" PRIu64 " bad HMAC, %" PRIu64 " duplicate event_ids, %" PRIu64
              " without event_id, %" PRIu64 " connections, outbox empty at the end: %s\n",
              total, bad, dups, missing_ids, conns, empty ? "yes" : "NO");
  std::printf("CPU seconds during each phase: orchardd's, this process's (receiver, check-in client, baseline "
              "driver), and the rest of the machine's (others: other processes; 0 on a quiet machine)\n");
  if (f.Has("json")) {
    char line[1024];
    std::snprintf(line, sizeof line,
                  "{\"bench\":\"webhook\",\"concurrency\":%d,\"backlog\":%" PRIu64 ",\"drain_per_s\":%.0f,"
                  "\"steady\":%" PRIu64 ",\"steady_per_s\":%.0f,\"steady_during_per_s\":%.0f,\"produced_per_s\":%.0f,"
                  "\"lag_ms\":%.0f,\"baseline_per_s\":%.0f,\"bad_hmac\":%" PRIu64 ",\"duplicates\":%" PRIu64 "}",
                  concurrency, backlog, drain_rate, steady, steady_rate, during_rate, produced_rate, lag_ms, base_rate,
                  bad, dups);
    AppendLine(f.Get("json"), line);
  }
  if (!f.Has("keep-work")) fs::remove_all(work, ec);  // else orchardd's log stays in <work>/data.log
  curl_global_cleanup();
  const bool ok = bad == 0 && dups == 0 && missing_ids == 0 && empty && total == backlog + steady && base_failed == 0;
  if (!ok) std::fprintf(stderr, "bench_webhook: checks failed\n");
  return ok ? 0 : 1;
}
