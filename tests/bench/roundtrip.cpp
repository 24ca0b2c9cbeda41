// bench_roundtrip: command round trip against a running orchardd.
//
//   bench_roundtrip --port P --api-key KEY --identities DIR [--server-pid PID]
//                   [--devices 100] [--depths 10,1000,10000] [--threads 2]
//                   [--enqueue-connections 2] [--min-seconds 3] [--max-seconds 20]
//                   [--first-device 0] [--json FILE]
//
// 1. Enrolls D devices over HTTP (Authenticate + TokenUpdate check-ins, each
//    device with its own certificate from the identity cache; orchardd must
//    run with --device-ca DIR/ca.pem).
// 2. For each depth K: enqueues K commands per device through the admin API
//    (K requests of POST /v1/commands, each fanning one DeviceInformation
//    command out to all D devices, nopush), timed as the enqueue rate; then
//    every device runs one session on its own keep-alive connection (Idle ->
//    command -> Acknowledged -> next command ... -> empty 200), connections
//    spread over --threads epoll threads. commands/s counts Acknowledged
//    reports answered 200 (the result is committed to orchardd's RocksDB
//    before the answer). Shallow depths repeat enqueue+drain rounds until
//    --min-seconds of draining; a drain stops after --max-seconds (the figure
//    is then the rate while the queue was still deep; the rest of the queues is
//    cleared through the admin API before the next depth).
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <sstream>
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

constexpr char kTopic[] = "com.apple.mgmt.External.orchard-bench";
constexpr char kPlaceholder[] = "@@COMMAND-UUID-PLACEHOLDER-36-CHARS@@";

std::string HttpRequest(const std::string& method, const std::string& path, const std::string& host,
                        const std::string& content_type, const std::string& extra_headers,
                        const std::string& body) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: " + host + "\r\n";
  if (!content_type.empty()) r += "Content-Type: " + content_type + "\r\n";
  r += "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: keep-alive\r\n";
  r += extra_headers;
  r += "\r\n";
  r += body;
  return r;
}

// Fixed list of requests per connection, sent in order (enrollment check-ins).
class ScriptDriver : public Driver {
 public:
  explicit ScriptDriver(std::vector<std::vector<std::string>> scripts)
      : scripts_(std::move(scripts)), pos_(scripts_.size(), 0) {}
  bool Next(size_t conn, std::string_view* request) override {
    if (pos_[conn] >= scripts_[conn].size()) return false;
    *request = scripts_[conn][pos_[conn]++];
    return true;
  }
  void OnResponse(int, size_t conn, const Response& r, uint32_t) override {
    if (r.status == 200) {
      ++ok_;
      return;
    }
    ++failed_;
    std::lock_guard lock(mu_);
    if (first_error_.empty())
      first_error_ = "device " + std::to_string(conn) + ": " + std::to_string(r.status) + " " +
                     std::string(r.body.substr(0, 300));
  }
  std::atomic<uint64_t> ok_{0}, failed_{0};
  std::string first_error_;

 private:
  std::vector<std::vector<std::string>> scripts_;
  std::vector<size_t> pos_;
  std::mutex mu_;
};

// The same request `count` times over any number of connections (admin API fan-out).
class RepeatDriver : public Driver {
 public:
  RepeatDriver(std::string request, uint64_t count) : request_(std::move(request)), left_(count) {}
  bool Next(size_t, std::string_view* request) override {
    if (left_.fetch_sub(1) <= 0) return false;
    *request = request_;
    return true;
  }
  void OnResponse(int, size_t, const Response& r, uint32_t) override {
    if (r.status == 200) {
      ++ok_;
      return;
    }
    ++failed_;
    std::lock_guard lock(mu_);
    if (first_error_.empty()) first_error_ = std::to_string(r.status) + " " + std::string(r.body.substr(0, 300));
  }
  std::atomic<uint64_t> ok_{0}, failed_{0};
  std::string first_error_;

 private:
  std::string request_;
  std::atomic<int64_t> left_;
  std::mutex mu_;
};

// One device per connection: Idle, then acknowledge every command until the
// server ends the session with an empty 200.
class SessionDriver : public Driver {
 public:
  struct Device {
    std::string cert_header;  // "Client-Cert: ...\r\n"
    std::string idle_body;
    std::string ack_prefix, ack_suffix;  // Acknowledged report around the CommandUUID
    // Per session:
    bool started = false;
    bool done = false;
    std::string pending_uuid;  // command to acknowledge next ("" = send Idle)
    std::string request;       // bytes of the current request
  };

  SessionDriver(std::vector<Device>* devices, std::string host, int threads)
      : devices_(devices), host_(std::move(host)), per_thread_(static_cast<size_t>(threads)) {}

  bool Next(size_t conn, std::string_view* request) override {
    Device& d = (*devices_)[conn];
    if (d.done) return false;
    std::string body;
    if (!d.started) {
      d.started = true;
      body = d.idle_body;
    } else {
      body = d.ack_prefix + d.pending_uuid + d.ack_suffix;
    }
    d.request = HttpRequest("PUT", "/mdm", host_, "application/x-apple-aspen-mdm", d.cert_header, body);
    *request = d.request;
    return true;
  }

  void OnResponse(int thread, size_t conn, const Response& r, uint32_t latency_us) override {
    Device& d = (*devices_)[conn];
    PerThread& p = per_thread_[static_cast<size_t>(thread)];
    p.latencies.push_back(latency_us);
    const bool was_ack = !d.pending_uuid.empty();
    if (r.status != 200) {
      ++p.errors;
      if (p.first_error.empty())
        p.first_error = std::to_string(r.status) + " " + std::string(r.body.substr(0, 300));
      d.done = true;  // a device would retry later; the bench stops this session
      return;
    }
    if (was_ack) ++p.acked;
    if (r.body.empty()) {
      d.done = true;
      d.pending_uuid.clear();
      return;
    }
    ++p.commands;
    std::string uuid = ExtractUuid(r.body);
    if (uuid.empty()) {
      ++p.errors;
      if (p.first_error.empty()) p.first_error = "command without CommandUUID: " + std::string(r.body.substr(0, 300));
      d.done = true;
      return;
    }
    d.pending_uuid = std::move(uuid);
  }

  static std::string ExtractUuid(std::string_view body) {
    size_t k = body.find("<key>CommandUUID</key>");
    if (k == std::string_view::npos) return "";
    size_t s = body.find("<string>", k);
    if (s == std::string_view::npos) return "";
    s += 8;
    size_t e = body.find("</string>", s);
    if (e == std::string_view::npos) return "";
    return std::string(body.substr(s, e - s));
  }

  struct PerThread {
    std::vector<uint32_t> latencies;
    uint64_t acked = 0, commands = 0, errors = 0;
    std::string first_error;
    char pad[64];
  };
  std::vector<PerThread>& per_thread() { return per_thread_; }

 private:
  std::vector<Device>* devices_;
  std::string host_;
  std::vector<PerThread> per_thread_;
};

std::vector<int64_t> ParseList(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(std::strtoll(item.c_str(), nullptr, 10));
  return out;
}

plist::Value CommandPlist() {
  plist::Value cmd;
  cmd.Set("RequestType", plist::Value::String("DeviceInformation"));
  plist::Array q;
  for (const char* k : {"DeviceName", "OSVersion", "BuildVersion", "ModelName", "SerialNumber", "BatteryLevel"})
    q.push_back(plist::Value::String(k));
  cmd.Set("Queries", plist::Value::MakeArray(std::move(q)));
  return cmd;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f(argc, argv,
          {"port", "host", "api-key", "identities", "server-pid", "devices", "depths", "threads",
           "enqueue-connections", "min-seconds", "max-seconds", "first-device", "json", "help!"});
  if (!f.ok() || f.Has("help") || !f.Has("port") || !f.Has("api-key") || !f.Has("identities")) {
    if (!f.ok()) std::fprintf(stderr, "bench_roundtrip: %s\n", f.error().c_str());
    std::fputs(
        "usage: bench_roundtrip --port P --api-key KEY --identities DIR [--server-pid PID] [--devices 100]\n"
        "                       [--depths 10,1000,10000] [--threads 2] [--enqueue-connections 2]\n"
        "                       [--min-seconds 3] [--max-seconds 20] [--first-device 0] [--json FILE]\n",
        stderr);
    return 2;
  }
  const std::string hostname = f.Get("host", "127.0.0.1");
  const uint16_t port = static_cast<uint16_t>(f.GetInt("port", 0));
  const std::string host = hostname + ":" + std::to_string(port);
  const std::string api_key = f.Get("api-key");
  const pid_t server_pid = static_cast<pid_t>(f.GetInt("server-pid", 0));
  const size_t devices = static_cast<size_t>(std::max<int64_t>(1, f.GetInt("devices", 100)));
  const size_t first = static_cast<size_t>(std::max<int64_t>(0, f.GetInt("first-device", 0)));
  const int threads = static_cast<int>(std::max<int64_t>(1, f.GetInt("threads", 2)));
  const int enqueue_conns = static_cast<int>(std::max<int64_t>(1, f.GetInt("enqueue-connections", 2)));
  const double min_seconds = std::max(0.0, f.GetDouble("min-seconds", 3));
  const double max_seconds = std::min(600.0, std::max(1.0, f.GetDouble("max-seconds", 20)));
  const std::vector<int64_t> depths = ParseList(f.Get("depths", "10,1000,10000"));
  RaiseFileLimit(devices + 256);

  auto cache = IdentityCache::Load(f.Get("identities"), first + devices);
  if (!cache.ok()) {
    std::fprintf(stderr, "bench_roundtrip: %s\n", cache.status().message().c_str());
    return 1;
  }

  // ---- Devices and their precomputed messages.
  const plist::Value command = CommandPlist();
  std::vector<SessionDriver::Device> devs(devices);
  std::vector<std::vector<std::string>> enroll_scripts(devices);
  std::string ids_json;
  for (size_t i = 0; i < devices; ++i) {
    const size_t index = first + i;
    sim::DeviceState s = sim::RandomDeviceState(sim::Platform::kIos, 0xbe4c000 + index);
    s.udid = DeviceUdid(index);
    s.serial_number = DeviceSerial(index);
    auto& d = devs[i];
    d.cert_header = "Client-Cert: " + ClientCertValue(cache->ders[index]) + "\r\n";
    d.idle_body = plist::ToXml(sim::BuildIdle(s, nullptr));
    plist::Value sent;
    sent.Set("CommandUUID", plist::Value::String(kPlaceholder));
    sent.Set("Command", command);
    std::string ack = plist::ToXml(sim::BuildReport(s, sent, sim::ReportStatus::kAcknowledged, nullptr));
    size_t at = ack.find(kPlaceholder);
    if (at == std::string::npos) {
      std::fputs("bench_roundtrip: report template without the CommandUUID placeholder\n", stderr);
      return 1;
    }
    d.ack_prefix = ack.substr(0, at);
    d.ack_suffix = ack.substr(at + std::strlen(kPlaceholder));
    const char* ct = "application/x-apple-aspen-mdm-checkin";
    enroll_scripts[i].push_back(HttpRequest("PUT", "/mdm", host, ct, d.cert_header,
                                            plist::ToXml(sim::BuildAuthenticate(s, kTopic))));
    enroll_scripts[i].push_back(HttpRequest("PUT", "/mdm", host, ct, d.cert_header,
                                            plist::ToXml(sim::BuildTokenUpdate(s, kTopic, false, nullptr))));
    ids_json += (i ? ",\"" : "\"") + s.udid + "\"";
  }

  EngineOptions base;
  base.host = hostname;
  base.port = port;

  // ---- Enrollment over HTTP.
  {
    ScriptDriver enroll(std::move(enroll_scripts));
    EngineOptions eo = base;
    eo.connections = devices;
    eo.threads = 1;
    eo.ramp = false;
    Engine e(eo, &enroll);
    const uint64_t t0 = NowNs();
    e.Start();
    const bool done = e.WaitFinished(120);
    e.Stop();
    std::printf("bench_roundtrip: enrolled %" PRIu64 " of %zu devices over HTTP in %.2f s\n", enroll.ok_.load() / 2,
                devices, SecondsSince(t0));
    if (!done || enroll.failed_ > 0) {
      std::fprintf(stderr, "bench_roundtrip: enrollment failed (%" PRIu64 " errors): %s\n", enroll.failed_.load(),
                   enroll.first_error_.c_str());
      return 1;
    }
  }

  const std::string enqueue_body = "{\"enrollment_ids\":[" + ids_json + "],\"command\":" + plist::ToJson(command) +
                                   ",\"nopush\":true}";
  const std::string enqueue_req = HttpRequest("POST", "/v1/commands", host, "application/json",
                                              "X-API-Key: " + api_key + "\r\n", enqueue_body);
  int rc = 0;
  for (int64_t depth : depths) {
    if (depth <= 0) continue;
    uint64_t acked = 0, commands = 0, errors = 0, rounds = 0, enqueued = 0;
    double drain_s = 0, enqueue_s = 0, cpu_s = 0, other_s = 0;
    bool drained = true;
    std::vector<uint32_t> lat;
    std::string first_error;
    while (true) {
      ++rounds;
      // Enqueue K commands per device: K fan-out requests.
      RepeatDriver enq(enqueue_req, depth);
      EngineOptions eo = base;
      eo.connections = static_cast<size_t>(enqueue_conns);
      eo.threads = 1;
      eo.ramp = false;
      Engine ee(eo, &enq);
      uint64_t t0 = NowNs();
      ee.Start();
      const bool enq_done = ee.WaitFinished(std::max(120.0, depth * static_cast<double>(devices) / 2000.0));
      ee.Stop();
      enqueue_s += SecondsSince(t0);
      enqueued += enq.ok_.load() * devices;
      if (!enq_done || enq.failed_ > 0) {
        std::fprintf(stderr, "bench_roundtrip: enqueue failed (%" PRIu64 " errors, finished=%d): %s\n",
                     enq.failed_.load(), enq_done, enq.first_error_.c_str());
        return 1;
      }

      // Drain: one session per device.
      for (auto& d : devs) {
        d.started = d.done = false;
        d.pending_uuid.clear();
      }
      SessionDriver sd(&devs, host, threads);
      EngineOptions so = base;
      so.connections = devices;
      so.threads = threads;
      so.ramp = false;
      Engine se(so, &sd);
      const double cpu0 = server_pid > 0 ? ProcessCpuSeconds(server_pid) : -1;
      const double self0 = SelfCpuSeconds(), sys0 = SystemBusySeconds();
      t0 = NowNs();
      se.Start();
      const double budget = max_seconds - drain_s;
      const bool finished = se.WaitFinished(std::max(0.5, budget));
      se.Stop();
      drain_s += SecondsSince(t0);
      const double cpu1 = server_pid > 0 ? ProcessCpuSeconds(server_pid) : -1;
      const double self1 = SelfCpuSeconds(), sys1 = SystemBusySeconds();
      const double server_round = (cpu0 >= 0 && cpu1 >= 0) ? cpu1 - cpu0 : 0;
      cpu_s += server_round;
      other_s += std::max(0.0, (sys1 - sys0) - (self1 - self0) - server_round);
      for (auto& p : sd.per_thread()) {
        acked += p.acked;
        commands += p.commands;
        errors += p.errors;
        lat.insert(lat.end(), p.latencies.begin(), p.latencies.end());
        if (first_error.empty()) first_error = p.first_error;
      }
      errors += se.transport_errors() + se.connect_errors() + se.protocol_errors();
      if (!finished) {
        drained = false;
        break;
      }
      if (drain_s >= min_seconds || drain_s >= max_seconds || errors > 0) break;
    }
    LatencySummary ls = Summarize(&lat);
    const double rate = drain_s > 0 ? static_cast<double>(acked) / drain_s : 0;
    const double enq_rate = enqueue_s > 0 ? static_cast<double>(enqueued) / enqueue_s : 0;
    const double cpu_ms = acked ? cpu_s * 1000.0 / static_cast<double>(acked) : -1;
    std::printf("bench_roundtrip: depth=%" PRId64 " devices=%zu rounds=%" PRIu64 " acknowledged=%" PRIu64
                " in %.2f s -> %.0f commands/s (%s) requests p50=%.2fms p99=%.2fms max=%.2fms errors=%" PRIu64
                " server_cpu/cmd=%.4fms other_cpu=%.2fs | enqueue %" PRIu64 " commands in %.2f s -> %.0f/s\n",
                depth, devices, rounds, acked, drain_s, rate, drained ? "queues drained" : "stopped at max-seconds",
                ls.p50_ms, ls.p99_ms, ls.max_ms, errors, cpu_ms, other_s, enqueued, enqueue_s, enq_rate);
    if (!first_error.empty()) std::printf("bench_roundtrip: first error: %s\n", first_error.c_str());
    std::fflush(stdout);
    char json[1024];
    std::snprintf(json, sizeof json,
                  "{\"kind\":\"roundtrip\",\"depth\":%" PRId64 ",\"devices\":%zu,\"rounds\":%" PRIu64
                  ",\"acknowledged\":%" PRIu64 ",\"seconds\":%.3f,\"commands_per_s\":%.1f,\"drained\":%s,"
                  "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"errors\":%" PRIu64
                  ",\"server_cpu_ms_per_cmd\":%.5f,\"other_cpu_s\":%.3f,\"enqueued\":%" PRIu64
                  ",\"enqueue_s\":%.3f,\"enqueue_per_s\":%.1f}",
                  depth, devices, rounds, acked, drain_s, rate, drained ? "true" : "false", ls.p50_ms, ls.p99_ms,
                  ls.max_ms, errors, cpu_ms, other_s, enqueued, enqueue_s, enq_rate);
    AppendLine(f.Get("json"), json);
    if (errors > 0) rc = 1;
    if (!drained) {
      // Empty the queues so that the next depth starts from its own commands.
      std::vector<std::vector<std::string>> clear(devices);
      for (size_t i = 0; i < devices; ++i)
        clear[i].push_back(HttpRequest("DELETE", "/v1/enrollments/" + DeviceUdid(first + i) + "/queue", host, "",
                                       "X-API-Key: " + api_key + "\r\n", ""));
      ScriptDriver cd(std::move(clear));
      EngineOptions eo = base;
      eo.connections = devices;
      eo.threads = 1;
      eo.ramp = false;
      Engine ce(eo, &cd);
      ce.Start();
      ce.WaitFinished(120);
      ce.Stop();
      if (cd.failed_ > 0) std::fprintf(stderr, "bench_roundtrip: clearing queues failed: %s\n", cd.first_error_.c_str());
    }
  }
  return rc;
}
