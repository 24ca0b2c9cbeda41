// bench_load: closed-loop Idle load. Each of N keep-alive connections is one
// device that PUTs its Idle report to /mdm, with its own certificate in the
// Client-Cert header, and sends the next report as soon as the answer arrives.
// The same requests go to orchardd and to bench_bare_pistache, so the two
// figures are comparable.
//
//   bench_load --port P --devices N [--identities DIR | --no-cert]
//              [--duration 10] [--warmup 2] [--server-pid PID] [--label NAME]
//              [--threads 1] [--first-device 0] [--json FILE] [--no-keepalive]
//
// Phases: ramp-up (open every connection, one request each, at most 64 opening
// at once), warm-up (full closed loop, not measured), then the measured
// window. Reports req/s, latency percentiles, errors (non-200 answers,
// transport and protocol errors), reconnects (server sent Connection: close)
// and, with --server-pid, the server's CPU (utime+stime from /proc) per request.
// other_cpu is what the rest of the machine used during the window (interference).
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_common.h"
#include "bench/http_engine.h"
#include "plist/plist.h"
#include "sim/responder.h"

using namespace orchard;
using namespace orchard::bench;

namespace {

class IdleDriver : public Driver {
 public:
  IdleDriver(std::vector<std::string> requests, int threads)
      : requests_(std::move(requests)), per_thread_(static_cast<size_t>(threads)) {}

  bool Next(size_t conn, std::string_view* request) override {
    *request = requests_[conn];
    return true;
  }

  void OnResponse(int thread, size_t, const Response& r, uint32_t latency_us) override {
    if (!measuring_.load(std::memory_order_relaxed)) return;
    PerThread& p = per_thread_[static_cast<size_t>(thread)];
    p.latencies.push_back(latency_us);
    if (r.status != 200) {
      ++p.non_200;
      if (p.first_error.empty())
        p.first_error = std::to_string(r.status) + " " + std::string(r.body.substr(0, 200));
    }
  }

  void SetMeasuring(bool on) { measuring_ = on; }

  struct PerThread {
    std::vector<uint32_t> latencies;
    uint64_t non_200 = 0;
    std::string first_error;
    char pad[64];
  };
  std::vector<PerThread>& per_thread() { return per_thread_; }

 private:
  std::vector<std::string> requests_;
  std::atomic<bool> measuring_{false};
  std::vector<PerThread> per_thread_;
};

void Usage() {
  std::fputs(
      "usage: bench_load --port P --devices N [--identities DIR | --no-cert] [--duration 10]\n"
      "                  [--warmup 2] [--server-pid PID] [--label NAME] [--threads 1]\n"
      "                  [--first-device 0] [--host 127.0.0.1] [--path /mdm] [--json FILE]\n"
      "                  [--no-keepalive]\n",
      stderr);
}

}  // namespace

int main(int argc, char** argv) {
  Flags f(argc, argv,
          {"port", "host", "devices", "identities", "no-cert!", "duration", "warmup", "server-pid",
           "label", "threads", "first-device", "path", "json", "no-keepalive!", "help!"});
  if (!f.ok() || f.Has("help") || !f.Has("port")) {
    if (!f.ok()) std::fprintf(stderr, "bench_load: %s\n", f.error().c_str());
    Usage();
    return 2;
  }
  const std::string host = f.Get("host", "127.0.0.1");
  const int port = static_cast<int>(f.GetInt("port", 0));
  const size_t devices = static_cast<size_t>(std::max<int64_t>(1, f.GetInt("devices", 1000)));
  const size_t first = static_cast<size_t>(std::max<int64_t>(0, f.GetInt("first-device", 0)));
  const double duration = std::min(300.0, std::max(0.5, f.GetDouble("duration", 10)));
  const double warmup = std::min(60.0, std::max(0.0, f.GetDouble("warmup", 2)));
  const pid_t server_pid = static_cast<pid_t>(f.GetInt("server-pid", 0));
  const int threads = static_cast<int>(std::max<int64_t>(1, f.GetInt("threads", 1)));
  const std::string label = f.Get("label", "load");
  const std::string path = f.Get("path", "/mdm");
  const bool no_cert = f.Has("no-cert");
  // Sent on every request: the bare Pistache handler closes without it (see
  // dependency-notes.md); orchardd keeps HTTP/1.1 open either way.
  const bool keep_alive = !f.Has("no-keepalive");

  // One fd per connection plus slack; the kernel limits (somaxconn, ports) suffice for 10k on loopback.
  const uint64_t need = devices + 256;
  if (RaiseFileLimit(need) < need) {
    std::fprintf(stderr, "bench_load: RLIMIT_NOFILE hard limit too low for %zu connections (ulimit -Hn)\n",
                 devices);
    return 1;
  }

  std::vector<std::string> ders;
  if (!no_cert) {
    if (!f.Has("identities")) {
      std::fputs("bench_load: --identities DIR (or --no-cert) is required\n", stderr);
      return 2;
    }
    auto cache = IdentityCache::Load(f.Get("identities"), first + devices);
    if (!cache.ok()) {
      std::fprintf(stderr, "bench_load: %s\n", cache.status().message().c_str());
      return 1;
    }
    ders = std::move(cache->ders);
  }

  // Precompute every device's complete request: headers, certificate, Idle plist.
  std::vector<std::string> requests;
  requests.reserve(devices);
  const std::string host_header = host + ":" + std::to_string(port);
  for (size_t i = 0; i < devices; ++i) {
    sim::DeviceState s;
    s.udid = DeviceUdid(first + i);
    std::string body = plist::ToXml(sim::BuildIdle(s, nullptr));
    std::string r = "PUT " + path + " HTTP/1.1\r\nHost: " + host_header +
                    "\r\nUser-Agent: MDM/1.0\r\nContent-Type: application/x-apple-aspen-mdm\r\n"
                    "Content-Length: " + std::to_string(body.size()) + "\r\n";
    if (keep_alive) r += "Connection: keep-alive\r\n";
    if (!no_cert) r += "Client-Cert: " + ClientCertValue(ders[first + i]) + "\r\n";
    r += "\r\n";
    r += body;
    requests.push_back(std::move(r));
  }
  ders.clear();
  ders.shrink_to_fit();

  IdleDriver driver(std::move(requests), threads);
  EngineOptions eo;
  eo.host = host;
  eo.port = static_cast<uint16_t>(port);
  eo.connections = devices;
  eo.threads = threads;
  eo.ramp = true;
  Engine engine(eo, &driver);

  const uint64_t ramp_start = NowNs();
  engine.Start();
  if (!engine.WaitRamp(120)) {
    std::fprintf(stderr, "bench_load[%s]: ramp-up timed out: %zu of %zu connections established (%" PRIu64
                         " connect errors, %" PRIu64 " transport errors)\n",
                 label.c_str(), engine.established(), devices, engine.connect_errors(),
                 engine.transport_errors());
    engine.Stop();
    return 1;
  }
  const double ramp_s = SecondsSince(ramp_start);
  engine.Go();
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));

  // Measured window.
  const uint64_t te0 = engine.transport_errors(), ce0 = engine.connect_errors(),
                 pe0 = engine.protocol_errors(), sc0 = engine.server_closes();
  const double cpu0 = server_pid > 0 ? ProcessCpuSeconds(server_pid) : -1;
  const double self0 = SelfCpuSeconds();
  const double sys0 = SystemBusySeconds();
  const uint64_t t0 = NowNs();
  driver.SetMeasuring(true);
  std::this_thread::sleep_for(std::chrono::duration<double>(duration));
  driver.SetMeasuring(false);
  const double secs = SecondsSince(t0);
  const double cpu1 = server_pid > 0 ? ProcessCpuSeconds(server_pid) : -1;
  const double self1 = SelfCpuSeconds();
  const double sys1 = SystemBusySeconds();
  const uint64_t transport = engine.transport_errors() - te0, connect = engine.connect_errors() - ce0,
                 protocol = engine.protocol_errors() - pe0, closes = engine.server_closes() - sc0;
  engine.Stop();

  std::vector<uint32_t> all;
  uint64_t non_200 = 0;
  std::string first_error;
  for (auto& p : driver.per_thread()) {
    all.insert(all.end(), p.latencies.begin(), p.latencies.end());
    non_200 += p.non_200;
    if (first_error.empty()) first_error = p.first_error;
  }
  LatencySummary lat = Summarize(&all);
  const double rps = static_cast<double>(lat.count) / secs;
  const uint64_t errors = non_200 + transport + connect + protocol;
  const double server_cpu = (cpu0 >= 0 && cpu1 >= 0) ? cpu1 - cpu0 : -1;
  // CPU used by everything else on the machine during the window (other builds, tests).
  const double other_cpu = std::max(0.0, (sys1 - sys0) - (self1 - self0) - std::max(0.0, server_cpu));
  const double cpu_ms_per_req = server_cpu >= 0 && lat.count ? server_cpu * 1000.0 / static_cast<double>(lat.count) : -1;

  std::printf("bench_load[%s]: devices=%zu ramp=%.1fs window=%.1fs requests=%" PRIu64 " req/s=%.0f "
              "p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms errors=%" PRIu64 " (non-200=%" PRIu64
              " transport=%" PRIu64 " connect=%" PRIu64 " protocol=%" PRIu64 ") reconnects=%" PRIu64
              " server_cpu=%.2fs server_cpu/req=%.4fms client_cpu=%.2fs other_cpu=%.2fs\n",
              label.c_str(), devices, ramp_s, secs, lat.count, rps, lat.p50_ms, lat.p90_ms, lat.p99_ms,
              lat.max_ms, errors, non_200, transport, connect, protocol, closes, server_cpu, cpu_ms_per_req,
              self1 - self0, other_cpu);
  if (!first_error.empty()) std::printf("bench_load[%s]: first error: %s\n", label.c_str(), first_error.c_str());
  std::fflush(stdout);

  char json[1024];
  std::snprintf(json, sizeof json,
                "{\"kind\":\"idle\",\"label\":\"%s\",\"devices\":%zu,\"seconds\":%.3f,\"requests\":%" PRIu64
                ",\"rps\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"errors\":%" PRIu64
                ",\"reconnects\":%" PRIu64 ",\"server_cpu_s\":%.3f,\"server_cpu_ms_per_req\":%.5f,"
                "\"client_cpu_s\":%.3f,\"other_cpu_s\":%.3f}",
                label.c_str(), devices, secs, lat.count, rps, lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.max_ms,
                errors, closes, server_cpu, cpu_ms_per_req, self1 - self0, other_cpu);
  AppendLine(f.Get("json"), json);
  return lat.count > 0 ? 0 : 1;
}
