// bench_ddm http: DDM check-ins against a running orchardd over HTTP, with the
// same load engine, keep-alive connections and device certificates
// (Client-Cert) as bench_load's Idle test, and that Idle test itself as the
// baseline, in the same process against the same orchardd.
//
//   bench_ddm http --port P --identities DIR --devices N [--full-devices 32]
//                  [--duration 8] [--warmup 2] [--rounds 2] [--paced-seconds 10]
//                  [--incr-rate 2500] [--full-rate 250] [--server-pid PID]
//                  [--threads 1] [--json FILE] [--summary FILE]
//
// The data dir must hold bench enrollments 0..N+F-1 with their certificate
// bindings (bench_seed enrollments --identities) and the 50-declaration set
// assigned to each (bench_ddm seed-http).
//
// Closed loop (one connection per device, N devices, every connection sends
// its next request when the answer arrives): windows of --duration seconds
// after --warmup, the request kind switched on all connections at once, in
// rounds: idle, tokens, declaration-items, declaration/configuration/<id>
// (each device cycling through 5 of the 45 configurations), status (an
// incremental report, ~4 KB: 20 declaration statuses and 10 items; each
// device alternates two variants, so every report changes its 10 items and 2
// of its declaration statuses: 12 events). Then full reports (FullReport
// true, ~256 KB: 50 declaration statuses, 10 changing and a dozen fixed items, 3
// arrays of app/certificate/account objects) from F other devices on F
// connections. Then open loop at --incr-rate and --full-rate (half the
// targets by default): requests due at fixed times, spread over blocking
// connections; latency = answer complete - due time (lateness included).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_common.h"
#include "bench/ddm_bench.h"
#include "bench/http_engine.h"
#include "plist/plist.h"
#include "sim/responder.h"

namespace orchard::bench::ddm {
namespace {

enum Kind : int { kIdle = 0, kTokens, kItems, kDecl, kStatus, kFull, kKinds };
const char* const kKindNames[kKinds] = {"idle", "tokens", "declaration-items", "declaration", "status", "full-status"};

// ---------------------------------------------------------------- requests

std::string HttpRequest(const std::string& host_header, const char* path, const char* content_type,
                        const std::string& cert_der, const std::string& body) {
  std::string r = std::string("PUT ") + path + " HTTP/1.1\r\nHost: " + host_header +
                  "\r\nUser-Agent: MDM/1.0\r\nContent-Type: " + content_type +
                  "\r\nContent-Length: " + std::to_string(body.size()) +
                  "\r\nConnection: keep-alive\r\nClient-Cert: " + ClientCertValue(cert_der) + "\r\n\r\n";
  r += body;
  return r;
}

std::string IdleRequest(const std::string& host, uint64_t device, const std::string& der) {
  sim::DeviceState s;
  s.udid = DeviceUdid(device);
  return HttpRequest(host, "/mdm", "application/x-apple-aspen-mdm", der, plist::ToXml(sim::BuildIdle(s, nullptr)));
}

std::string DdmRequest(const std::string& host, uint64_t device, const std::string& der, const std::string& endpoint,
                       const std::string* data = nullptr) {
  plist::Value m;
  m.Set("MessageType", plist::Value::String("DeclarativeManagement"));
  m.Set("UDID", plist::Value::String(DeviceUdid(device)));
  m.Set("Endpoint", plist::Value::String(endpoint));
  if (data != nullptr) m.Set("Data", plist::Value::DataValue(*data));
  return HttpRequest(host, "/mdm/checkin", "application/x-apple-aspen-mdm-checkin", der, plist::ToXml(m));
}

struct Item {
  std::string id, token;
};
struct ManifestSeen {
  std::vector<Item> activations, configurations;
};

// management.declarations of a report: the given items, each valid and
// active, but those in `invalid` (indexes into configurations) rejected.
std::string DeclarationStatuses(const std::vector<Item>& acts, const std::vector<Item>& cfgs,
                                const std::vector<size_t>& invalid) {
  auto one = [](const Item& it, bool bad) {
    std::string s = R"({"identifier":")" + it.id + R"(","active":)" + (bad ? "false" : "true") +
                    R"(,"valid":")" + (bad ? "invalid" : "valid") + R"(","server-token":")" + it.token + R"(","reasons":)";
    s += bad ? R"([{"code":"Error.ConfigurationCannotBeApplied","description":"The configuration could not be applied.","details":{"Error":"bench"}}])"
             : "[]";
    return s + "}";
  };
  std::string s = R"({"activations":[)";
  for (size_t i = 0; i < acts.size(); ++i) s += (i ? "," : "") + one(acts[i], false);
  s += R"(],"configurations":[)";
  for (size_t i = 0; i < cfgs.size(); ++i)
    s += (i ? "," : "") + one(cfgs[i], std::find(invalid.begin(), invalid.end(), i) != invalid.end());
  return s + R"(],"assets":[],"management":[]})";
}

// The 10 items every report carries (variant 0 and 1 differ in each), in
// three parts so that the full report can add its fixed items beside them.
std::string DeviceItems(int v, const std::string& extra) {
  return Fmt(R"("device":{"operating-system":{"version":"%s","build-version":"%s","supplemental":{"build-version":"%s","extra-version":"%s"}},"battery-health":"%s")",
             v ? "26.2" : "26.1", v ? "23C55" : "23B74", v ? "23C55a" : "23B74a", v ? "(a)" : "(b)",
             v ? "service-recommended" : "normal") +
         extra + "}";
}
std::string UpdateItems(int v) {
  return Fmt(R"("softwareupdate":{"install-state":"%s","pending-version":{"os-version":"%s","build-version":"%s"},"failure-reason":{"count":%d}})",
             v ? "downloading" : "none", v ? "26.3" : "26.2", v ? "23D40" : "23C55", v ? 1 : 0);
}
std::string PasscodeItems(int v, const std::string& extra) {
  return Fmt(R"("passcode":{"is-compliant":%s)", v ? "false" : "true") + extra + "}";
}
std::string ChangingItems(int v) { return DeviceItems(v, "") + "," + UpdateItems(v) + "," + PasscodeItems(v, ""); }

std::string IncrementalReport(const ManifestSeen& m, int v) {
  std::vector<Item> cfgs(m.configurations.begin(), m.configurations.begin() + std::min<size_t>(15, m.configurations.size()));
  std::string items = "{" + ChangingItems(v) + R"(,"management":{"declarations":)" +
                      DeclarationStatuses(m.activations, cfgs, v ? std::vector<size_t>{3, 7} : std::vector<size_t>{}) +
                      "}}";
  return R"({"StatusItems":)" + items + R"(,"Errors":[],"FullReport":false})";
}

std::string FullReport(const ManifestSeen& m, uint64_t device, int v, size_t target_bytes) {
  // The changing items plus the fixed part of a device's inventory.
  std::string s = R"({"StatusItems":{)" +
                  DeviceItems(v, R"(,"identifier":{"serial-number":")" + DeviceSerial(device) + R"(","udid":")" +
                                     DeviceUdid(device) +
                                     R"("},"model":{"family":"iPhone","identifier":"iPhone15,2","marketing-name":"iPhone 14 Pro","number":"MQ0T3"},"power":{"battery-level":"0.81"})") +
                  "," + UpdateItems(v) + "," + PasscodeItems(v, R"(,"is-present":true)") +
                  R"(,"diskmanagement":{"filevault":{"enabled":false}},)" +
                  R"("management":{"client-capabilities":{"supported-versions":["1.0","1.1"],"supported-features":{}},"declarations":)" +
                  DeclarationStatuses(m.activations, m.configurations, v ? std::vector<size_t>{3, 7} : std::vector<size_t>{}) +
                  "},";
  // Arrays of objects merged by identifier; fill up to target_bytes (each item stays under 256 KB).
  std::string certs = R"("security":{"certificate":{"list":[)";
  for (int i = 0; i < 150; ++i) {
    if (i) certs += ",";
    certs += Fmt(R"({"identifier":"%064x","common-name":"Bench Certificate %d","is-identity":%s,"data":")", i * 2654435761u, i,
                 i % 3 ? "false" : "true");
    for (int k = 0; k < 6; ++k) certs += "MIIBszCCAVmgAwIBAgIUb2JlbmNoLWNlcnQtZGF0YS0wMDAwMDAwMDAwMDAw";
    certs += "\"}";
  }
  certs += "]}},";
  std::string accounts = R"("account":{"list":{"mail":[)";
  for (int i = 0; i < 60; ++i)
    accounts += Fmt(R"(%s{"identifier":"mail-%04d","account-description":"Bench mail account %d","incoming-server":"imap%d.example.com","outgoing-server":"smtp%d.example.com","user-name":"user%d@example.com"})",
                    i ? "," : "", i, i, i % 4, i % 4, i);
  accounts += "]}},";
  s += certs + accounts;
  std::string apps = R"("app":{"managed":{"list":[)";
  const size_t fixed = s.size() + 200;
  for (int i = 0; fixed + apps.size() < target_bytes; ++i)
    apps += Fmt(R"(%s{"identifier":"com.example.app%04d","name":"Example App %d","version":"%d.%d.%d","short-version":"%d.%d","state":"%s","external-version-id":%d,"is-removable":true,"is-user-installed":false,"install-reason":"managed"})",
                i ? "," : "", i, i, 1 + i % 5, i % 10, (v && i % 97 == 0) ? 1 : 0, 1 + i % 5, i % 10,
                (v && i % 97 == 0) ? "updating" : "managed", 800000 + i);
  apps += "]}}";
  s += apps;
  return s + R"(},"Errors":[],"FullReport":true})";
}

// ---------------------------------------------------------------- blocking client

class BlockingConn {
 public:
  ~BlockingConn() { Close(); }
  bool Connect(const std::string& host, uint16_t port) {
    Close();
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, host.c_str(), &a.sin_addr);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      Close();
      return false;
    }
    return true;
  }
  // Sends req and reads one complete response (its body views this object's buffer).
  bool RoundTrip(std::string_view req, Response* resp) {
    if (fd_ < 0) return false;
    size_t off = 0;
    while (off < req.size()) {
      ssize_t n = send(fd_, req.data() + off, req.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        Close();
        return false;
      }
      off += static_cast<size_t>(n);
    }
    buf_.clear();
    char chunk[65536];
    for (;;) {
      const long done = ParseResponse(buf_, resp);
      if (done > 0) break;
      if (done < 0) {
        Close();
        return false;
      }
      ssize_t n = recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) {
        Close();
        return false;
      }
      buf_.append(chunk, static_cast<size_t>(n));
    }
    if (resp->close) Close();
    return true;
  }
  bool open() const { return fd_ >= 0; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

// ---------------------------------------------------------------- closed loop

struct Device {
  std::string idle, tokens, items;
  std::vector<std::string> decl;  // cycled
  std::string status[2];          // the two report variants
};

class DdmDriver : public Driver {
 public:
  DdmDriver(std::vector<Device>* devices, std::vector<uint8_t>* variant, size_t connections, int threads)
      : devices_(devices), variant_(variant), conns_(connections), per_thread_(static_cast<size_t>(threads)) {}

  void SetKind(int k) { kind_.store(k); }
  // Responses to requests of kind k are recorded from now on (-1: none).
  void Measure(int k) {
    if (k >= 0)
      for (auto& p : per_thread_) {
        std::lock_guard l(p.mu);
        p.latencies.clear();
        p.non_200 = 0;
        p.first_error.clear();
      }
    measuring_.store(k);
  }

  bool Next(size_t conn, std::string_view* request) override {
    Device& d = (*devices_)[conn];
    Conn& c = conns_[conn];
    c.kind = kind_.load(std::memory_order_relaxed);
    switch (c.kind) {
      case kIdle: *request = d.idle; break;
      case kTokens: *request = d.tokens; break;
      case kItems: *request = d.items; break;
      case kDecl: *request = d.decl[c.rotation++ % d.decl.size()]; break;
      default: *request = d.status[(*variant_)[conn] & 1]; break;
    }
    return true;
  }

  void OnResponse(int thread, size_t conn, const Response& r, uint32_t latency_us) override {
    Conn& c = conns_[conn];
    if ((c.kind == kStatus || c.kind == kFull) && r.status == 200) (*variant_)[conn] ^= 1;  // stored: send the other
    if (c.kind != measuring_.load(std::memory_order_relaxed)) return;
    PerThread& p = per_thread_[static_cast<size_t>(thread)];
    std::lock_guard l(p.mu);
    p.latencies.push_back(latency_us);
    if (r.status != 200) {
      ++p.non_200;
      if (p.first_error.empty()) p.first_error = std::to_string(r.status) + " " + std::string(r.body.substr(0, 200));
    }
  }

  struct Collected {
    std::vector<uint32_t> latencies;
    uint64_t non_200 = 0;
    std::string first_error;
  };
  Collected Collect() {
    Collected out;
    for (auto& p : per_thread_) {
      std::lock_guard l(p.mu);
      out.latencies.insert(out.latencies.end(), p.latencies.begin(), p.latencies.end());
      out.non_200 += p.non_200;
      if (out.first_error.empty()) out.first_error = p.first_error;
    }
    return out;
  }

 private:
  struct Conn {
    int kind = 0;
    uint32_t rotation = 0;
  };
  struct PerThread {
    std::mutex mu;
    std::vector<uint32_t> latencies;
    uint64_t non_200 = 0;
    std::string first_error;
  };
  std::vector<Device>* devices_;
  std::vector<uint8_t>* variant_;
  std::vector<Conn> conns_;
  std::vector<PerThread> per_thread_;
  std::atomic<int> kind_{kIdle};
  std::atomic<int> measuring_{-1};
};

struct Window {
  std::string kind;
  int round = 0;
  size_t connections = 0;
  double seconds = 0, rps = 0;
  LatencySummary lat;
  uint64_t errors = 0, reconnects = 0;
  double server_cpu_ms = -1, other_cpu_s = 0;
  std::string first_error;
  bool paced = false;
  double target_rate = 0;
};

void PrintWindow(const Window& w) {
  std::printf("%-18s %5d %6zu %6s %9.0f %8.2f %8.2f %8.2f %7" PRIu64 " %6" PRIu64 " %10.4f %8.2f\n", w.kind.c_str(),
              w.round, w.connections, w.paced ? Fmt("%.0f/s", w.target_rate).c_str() : "closed", w.rps, w.lat.p50_ms,
              w.lat.p99_ms, w.lat.max_ms, w.errors, w.reconnects, w.server_cpu_ms, w.other_cpu_s);
  if (!w.first_error.empty()) std::printf("  first error: %s\n", w.first_error.c_str());
  std::fflush(stdout);
}

void JsonWindow(const std::string& path, const Window& w) {
  AppendLine(path, Fmt("{\"kind\":\"ddm_http\",\"label\":\"%s\",\"round\":%d,\"connections\":%zu,\"paced\":%s,"
                       "\"target_rate\":%.0f,\"seconds\":%.3f,\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
                       "\"max_ms\":%.3f,\"errors\":%" PRIu64 ",\"reconnects\":%" PRIu64
                       ",\"server_cpu_ms_per_req\":%.5f,\"other_cpu_s\":%.3f}",
                       w.kind.c_str(), w.round, w.connections, w.paced ? "true" : "false", w.target_rate, w.seconds,
                       w.rps, w.lat.p50_ms, w.lat.p99_ms, w.lat.max_ms, w.errors, w.reconnects, w.server_cpu_ms,
                       w.other_cpu_s));
}

// One measured window of kind k on a running engine.
Window MeasureWindow(Engine& engine, DdmDriver& driver, int k, int round, size_t conns, double warmup,
                     double duration, pid_t server_pid) {
  driver.SetKind(k);
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
  Window w;
  w.kind = kKindNames[k];
  w.round = round;
  w.connections = conns;
  const uint64_t te0 = engine.transport_errors(), ce0 = engine.connect_errors(), pe0 = engine.protocol_errors(),
                 sc0 = engine.server_closes();
  const double cpu0 = server_pid > 0 ? ProcessCpuSeconds(server_pid) : -1, self0 = SelfCpuSeconds(),
               sys0 = SystemBusySeconds();
  const uint64_t t0 = NowNs();
  driver.Measure(k);
  std::this_thread::sleep_for(std::chrono::duration<double>(duration));
  driver.Measure(-1);
  w.seconds = SecondsSince(t0);
  const double cpu1 = server_pid > 0 ? ProcessCpuSeconds(server_pid) : -1, self1 = SelfCpuSeconds(),
               sys1 = SystemBusySeconds();
  auto got = driver.Collect();
  w.lat = Summarize(&got.latencies);
  w.rps = static_cast<double>(w.lat.count) / w.seconds;
  w.errors = got.non_200 + (engine.transport_errors() - te0) + (engine.connect_errors() - ce0) +
             (engine.protocol_errors() - pe0);
  w.reconnects = engine.server_closes() - sc0;
  w.first_error = got.first_error;
  const double server_cpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
  if (server_cpu >= 0 && w.lat.count) w.server_cpu_ms = server_cpu * 1000.0 / static_cast<double>(w.lat.count);
  w.other_cpu_s = std::max(0.0, (sys1 - sys0) - (self1 - self0) - std::max(0.0, server_cpu));
  return w;
}

// ---------------------------------------------------------------- open loop

// Requests due every 1/rate s, spread over `threads` blocking connections
// (thread t sends requests t, t+T, ... to its own devices d with d % T == t).
Window RunPaced(const std::string& host, uint16_t port, std::vector<Device>* devices, std::vector<uint8_t>* variant,
                int kind, double rate, double warmup, double seconds, int threads, pid_t server_pid) {
  threads = std::max(1, std::min<int>(threads, static_cast<int>(devices->size())));
  std::vector<std::vector<uint32_t>> lat(static_cast<size_t>(threads));
  std::vector<uint64_t> errors(static_cast<size_t>(threads), 0), reconnects(static_cast<size_t>(threads), 0);
  std::vector<std::string> first_error(static_cast<size_t>(threads));
  const double interval_ns = 1e9 / rate;
  const uint64_t start = NowNs() + 200000000ull;  // everyone connected by then
  const uint64_t measure_from = start + static_cast<uint64_t>(warmup * 1e9);
  const uint64_t end = measure_from + static_cast<uint64_t>(seconds * 1e9);
  double cpu0 = -1, self0 = 0, sys0 = 0;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::vector<size_t> mine;
      for (size_t d = static_cast<size_t>(t); d < devices->size(); d += static_cast<size_t>(threads)) mine.push_back(d);
      BlockingConn conn;
      conn.Connect(host, port);
      for (uint64_t j = 0;; ++j) {
        const uint64_t k = static_cast<uint64_t>(t) + j * static_cast<uint64_t>(threads);
        const uint64_t due = start + static_cast<uint64_t>(static_cast<double>(k) * interval_ns);
        if (due >= end) break;
        uint64_t now = NowNs();
        if (now < due) std::this_thread::sleep_for(std::chrono::nanoseconds(due - now));
        const size_t d = mine[j % mine.size()];
        Device& dev = (*devices)[d];
        const std::string& req = kind == kStatus || kind == kFull ? dev.status[(*variant)[d] & 1] : dev.tokens;
        Response r;
        bool ok = conn.open() || conn.Connect(host, port);
        ok = ok && conn.RoundTrip(req, &r);
        const uint64_t done = NowNs();
        if (ok && !conn.open()) ++reconnects[static_cast<size_t>(t)];
        if (ok && r.status == 200) (*variant)[d] ^= 1;
        if (due < measure_from) continue;
        lat[static_cast<size_t>(t)].push_back(static_cast<uint32_t>(std::min<uint64_t>((done - due) / 1000, UINT32_MAX)));
        if (!ok || r.status != 200) {
          ++errors[static_cast<size_t>(t)];
          if (first_error[static_cast<size_t>(t)].empty())
            first_error[static_cast<size_t>(t)] =
                ok ? std::to_string(r.status) + " " + std::string(r.body.substr(0, 200)) : "transport error";
        }
      }
    });
  }
  // Server and machine CPU over the measured part.
  {
    uint64_t now = NowNs();
    if (now < measure_from) std::this_thread::sleep_for(std::chrono::nanoseconds(measure_from - now));
    cpu0 = server_pid > 0 ? ProcessCpuSeconds(server_pid) : -1;
    self0 = SelfCpuSeconds();
    sys0 = SystemBusySeconds();
  }
  for (auto& th : pool) th.join();
  Window w;
  w.kind = kKindNames[kind];
  w.round = 1;
  w.paced = true;
  w.target_rate = rate;
  w.connections = static_cast<size_t>(threads);
  w.seconds = static_cast<double>(NowNs() - measure_from) / 1e9;
  const double cpu1 = server_pid > 0 ? ProcessCpuSeconds(server_pid) : -1, self1 = SelfCpuSeconds(),
               sys1 = SystemBusySeconds();
  std::vector<uint32_t> all;
  for (size_t t = 0; t < lat.size(); ++t) {
    all.insert(all.end(), lat[t].begin(), lat[t].end());
    w.errors += errors[t];
    w.reconnects += reconnects[t];
    if (w.first_error.empty()) w.first_error = first_error[t];
  }
  w.lat = Summarize(&all);
  // Achieved: answers / time from the first measured due time to the last answer
  // (longer than `seconds` when the server fell behind).
  w.rps = static_cast<double>(w.lat.count) / std::max(seconds, w.seconds);
  const double server_cpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
  if (server_cpu >= 0 && w.lat.count) w.server_cpu_ms = server_cpu * 1000.0 / static_cast<double>(w.lat.count);
  w.other_cpu_s = std::max(0.0, (sys1 - sys0) - (self1 - self0) - std::max(0.0, server_cpu));
  return w;
}

// ---------------------------------------------------------------- setup

// What device 0's declaration-items lists (identifiers and ServerTokens), through orchardd.
Result<ManifestSeen> FetchManifest(const std::string& host, uint16_t port, const std::string& host_header,
                                   const std::string& der) {
  BlockingConn c;
  if (!c.Connect(host, port)) return Status::Unavailable("cannot connect to orchardd");
  Response r;
  const std::string req = DdmRequest(host_header, 0, der, "declaration-items");
  if (!c.RoundTrip(req, &r)) return Status::Unavailable("declaration-items: transport error");
  if (r.status != 200)
    return Status::Unavailable("declaration-items answered " + std::to_string(r.status) + ": " + std::string(r.body));
  auto v = plist::ParseJson(r.body);
  if (!v.ok()) return v.status();
  const plist::Value* decls = v->Find("Declarations");
  if (decls == nullptr) return Status::InvalidArgument("declaration-items: no Declarations");
  ManifestSeen m;
  for (auto [key, out] : {std::pair{"Activations", &m.activations}, std::pair{"Configurations", &m.configurations}}) {
    const plist::Value* arr = decls->Find(key);
    if (arr == nullptr || arr->AsArray() == nullptr) return Status::InvalidArgument("declaration-items: no array");
    for (const auto& item : *arr->AsArray())
      out->push_back({std::string(item.GetString("Identifier")), std::string(item.GetString("ServerToken"))});
  }
  if (m.activations.empty() || m.configurations.empty())
    return Status::InvalidArgument("device 0's manifest is empty: run bench_ddm seed-http first");
  return m;
}

double Mean(const std::vector<Window>& ws, const std::string& kind) {
  double sum = 0;
  int n = 0;
  for (const auto& w : ws)
    if (w.kind == kind && !w.paced) {
      sum += w.rps;
      ++n;
    }
  return n ? sum / n : 0;
}

// Other processes' CPU seconds per window of that kind (mean).
std::string Other(const std::vector<Window>& ws, const std::string& kind) {
  double sum = 0;
  int n = 0;
  for (const auto& w : ws)
    if (w.kind == kind && !w.paced) {
      sum += w.other_cpu_s;
      ++n;
    }
  return n ? Fmt("%.2f s/window", sum / n) : std::string("-");
}

uint64_t Errors(const std::vector<Window>& ws, const std::string& kind) {
  uint64_t e = 0;
  for (const auto& w : ws)
    if (w.kind == kind && !w.paced) e += w.errors;
  return e;
}

}  // namespace

int RunHttp(const Flags& f) {
  const std::string host = f.Get("host", "127.0.0.1");
  const uint16_t port = static_cast<uint16_t>(f.GetInt("port", 0));
  const size_t devices = static_cast<size_t>(std::max<int64_t>(1, f.GetInt("devices", 1000)));
  const size_t full_devices = static_cast<size_t>(std::max<int64_t>(0, f.GetInt("full-devices", 32)));
  const double duration = std::max(0.5, f.GetDouble("duration", 8));
  const double warmup = std::max(0.0, f.GetDouble("warmup", 2));
  const int rounds = static_cast<int>(std::max<int64_t>(1, f.GetInt("rounds", 2)));
  const double paced_seconds = f.GetDouble("paced-seconds", 10);
  const double incr_rate = f.GetDouble("incr-rate", 2500), full_rate = f.GetDouble("full-rate", 250);
  const pid_t server_pid = static_cast<pid_t>(f.GetInt("server-pid", 0));
  const int threads = static_cast<int>(std::max<int64_t>(1, f.GetInt("threads", 1)));
  const std::string json = f.Get("json"), summary = f.Get("summary");
  if (port == 0 || !f.Has("identities")) {
    std::fputs("bench_ddm http: --port P and --identities DIR are required\n", stderr);
    return 2;
  }
  if (RaiseFileLimit(devices + full_devices + 256) < devices + full_devices + 256) {
    std::fputs("bench_ddm http: RLIMIT_NOFILE too low\n", stderr);
    return 1;
  }
  auto cache = IdentityCache::Load(f.Get("identities"), devices + full_devices);
  if (!cache.ok()) {
    std::fprintf(stderr, "bench_ddm http: %s\n", cache.status().message().c_str());
    return 1;
  }
  const std::string host_header = host + ":" + std::to_string(port);
  auto seen = FetchManifest(host, port, host_header, cache->ders[0]);
  if (!seen.ok()) {
    std::fprintf(stderr, "bench_ddm http: %s\n", seen.status().message().c_str());
    return 1;
  }
  const ManifestSeen& m = *seen;

  // Every request, precomputed.
  std::vector<Device> devs(devices);
  size_t incr_bytes = 0, full_bytes = 0;
  for (size_t i = 0; i < devices; ++i) {
    const std::string& der = cache->ders[i];
    Device& d = devs[i];
    d.idle = IdleRequest(host_header, i, der);
    d.tokens = DdmRequest(host_header, i, der, "tokens");
    d.items = DdmRequest(host_header, i, der, "declaration-items");
    for (size_t k = 0; k < 5; ++k)
      d.decl.push_back(DdmRequest(host_header, i, der,
                                  "declaration/configuration/" + m.configurations[(i + k * 9) % m.configurations.size()].id));
    for (int v = 0; v < 2; ++v) {
      const std::string report = IncrementalReport(m, v);
      incr_bytes = report.size();
      d.status[v] = DdmRequest(host_header, i, der, "status", &report);
    }
  }
  std::vector<Device> full(full_devices);
  for (size_t i = 0; i < full_devices; ++i)
    for (int v = 0; v < 2; ++v) {
      const std::string report = FullReport(m, devices + i, v, 256 * 1024);
      full_bytes = report.size();
      full[i].status[v] = DdmRequest(host_header, devices + i, cache->ders[devices + i], "status", &report);
    }
  cache->ders.clear();
  std::vector<uint8_t> variant(devices, 0), full_variant(full_devices, 0);
  std::printf("ddm http: orchardd at %s, %zu devices (one keep-alive connection each, Client-Cert), manifest of %zu "
              "activations + %zu configurations; incremental report %zu bytes of JSON (%zu on the wire), full report "
              "%zu bytes (%zu on the wire)\n",
              host_header.c_str(), devices, m.activations.size(), m.configurations.size(), incr_bytes,
              devs[0].status[0].size(), full_bytes, full_devices ? full[0].status[0].size() : 0);
  std::printf("%-18s %5s %6s %6s %9s %8s %8s %8s %7s %6s %10s %8s\n", "kind", "round", "conns", "load", "req/s",
              "p50 ms", "p99 ms", "max ms", "errors", "reconn", "CPU ms/req", "other s");

  // Which kinds to run (all by default).
  std::vector<bool> want(kKinds, true);
  if (f.Has("kinds")) {
    want.assign(kKinds, false);
    const std::string list = "," + f.Get("kinds") + ",";
    const char* names[kKinds] = {"idle", "tokens", "items", "declaration", "status", "full"};
    for (int k = 0; k < kKinds; ++k) want[k] = list.find("," + std::string(names[k]) + ",") != std::string::npos;
    want[kIdle] = true;  // the baseline
  }

  std::vector<Window> all;
  {
    DdmDriver driver(&devs, &variant, devices, threads);
    EngineOptions eo;
    eo.host = host;
    eo.port = port;
    eo.connections = devices;
    eo.threads = threads;
    Engine engine(eo, &driver);
    engine.Start();
    if (!engine.WaitRamp(120)) {
      std::fprintf(stderr, "bench_ddm http: ramp-up timed out (%zu of %zu connections)\n", engine.established(),
                   devices);
      engine.Stop();
      return 1;
    }
    engine.Go();
    for (int r = 1; r <= rounds; ++r)
      for (int k : {kIdle, kTokens, kItems, kDecl, kStatus}) {
        if (!want[k]) continue;
        Window w = MeasureWindow(engine, driver, k, r, devices, warmup, duration, server_pid);
        PrintWindow(w);
        JsonWindow(json, w);
        all.push_back(w);
      }
    engine.Stop();
  }
  if (full_devices > 0 && want[kFull]) {
    // Full reports: their own devices and connections (~350 KB requests).
    for (size_t i = 0; i < full_devices; ++i) full[i].idle = full[i].tokens = full[i].items = full[i].status[0];
    DdmDriver driver(&full, &full_variant, full_devices, threads);
    driver.SetKind(kFull);
    EngineOptions eo;
    eo.host = host;
    eo.port = port;
    eo.connections = full_devices;
    eo.threads = threads;
    Engine engine(eo, &driver);
    engine.Start();
    if (engine.WaitRamp(120)) {
      engine.Go();
      for (int r = 1; r <= rounds; ++r) {
        Window w = MeasureWindow(engine, driver, kFull, r, full_devices, warmup, duration, server_pid);
        PrintWindow(w);
        JsonWindow(json, w);
        all.push_back(w);
      }
    } else {
      std::fprintf(stderr, "bench_ddm http: full-report ramp-up timed out\n");
    }
    engine.Stop();
  }
  // Open loop at half the targets and, when the closed loop measured less
  // than the target, also at half of what it measured (information: the
  // latency of this implementation at half its own capacity).
  Window paced_incr, paced_full, paced_incr_half, paced_full_half;
  const double measured_incr = Mean(all, "status"), measured_full = Mean(all, "full-status");
  if (paced_seconds > 0 && want[kStatus]) {
    paced_incr = RunPaced(host, port, &devs, &variant, kStatus, incr_rate, 1.0, paced_seconds, 32, server_pid);
    PrintWindow(paced_incr);
    JsonWindow(json, paced_incr);
    if (measured_incr > 0 && measured_incr / 2 < incr_rate) {
      paced_incr_half =
          RunPaced(host, port, &devs, &variant, kStatus, measured_incr / 2, 1.0, paced_seconds, 32, server_pid);
      PrintWindow(paced_incr_half);
      JsonWindow(json, paced_incr_half);
    }
  }
  if (paced_seconds > 0 && full_devices > 0 && want[kFull]) {
    paced_full = RunPaced(host, port, &full, &full_variant, kFull, full_rate, 1.0, paced_seconds, 8, server_pid);
    PrintWindow(paced_full);
    JsonWindow(json, paced_full);
    if (measured_full > 0 && measured_full / 2 < full_rate) {
      paced_full_half =
          RunPaced(host, port, &full, &full_variant, kFull, measured_full / 2, 1.0, paced_seconds, 8, server_pid);
      PrintWindow(paced_full_half);
      JsonWindow(json, paced_full_half);
    }
  }
  std::printf("closed: N connections, each sends its next request when the answer arrives (--duration %.0f s windows "
              "after %.0f s warm-up, %d round(s), kinds interleaved); paced: requests due at the rate in 'load', latency "
              "from the due time\n",
              duration, warmup, rounds);

  // Figures against the Idle rate measured in the same run.
  const double idle = Mean(all, "idle");
  const std::string base = Fmt("Idle %.0f req/s (this run)", idle);
  auto errs = [&](const char* kind) {
    const uint64_t e = Errors(all, kind);
    return e ? Fmt(" (%" PRIu64 " errors)", e) : std::string();
  };
  SummaryRow(summary, Fmt("Idle, %zu devices (the baseline)", devices), Fmt("%.0f req/s%s", idle, errs("idle").c_str()),
             "-", "-", "-", Other(all, "idle"));
  struct Rel {
    int kind;
    const char* label;
    double target;
  };
  for (const Rel& rel : {Rel{kTokens, "check-in tokens", 60}, Rel{kItems, "declaration-items (50 declarations)", 40},
                         Rel{kDecl, "declaration/configuration/<id>", 50}}) {
    if (!want[rel.kind]) continue;
    const double rps = Mean(all, kKindNames[rel.kind]);
    const double pct = idle > 0 ? 100.0 * rps / idle : 0;
    const uint64_t e = Errors(all, kKindNames[rel.kind]);
    SummaryRow(summary, rel.label, Fmt("%.0f req/s = %.0f%% of Idle%s", rps, pct, errs(kKindNames[rel.kind]).c_str()),
               Fmt(">= %.0f%% of Idle", rel.target), PassFail(e == 0 && pct >= rel.target), base,
               Other(all, kKindNames[rel.kind]));
  }
  if (want[kStatus]) {
    const double rps = Mean(all, "status");
    SummaryRow(summary, Fmt("status, incremental (%zu B, 12 events)", incr_bytes),
               Fmt("%.0f reports/s = %.0f%% of Idle%s", rps, idle > 0 ? 100 * rps / idle : 0, errs("status").c_str()),
               ">= 5,000/s", PassFail(Errors(all, "status") == 0 && rps >= 5000), base, Other(all, "status"));
  }
  if (want[kFull] && full_devices > 0) {
    const double rps = Mean(all, "full-status");
    SummaryRow(summary, Fmt("status, full report (%zu KB)", full_bytes / 1024),
               Fmt("%.0f reports/s%s", rps, errs("full-status").c_str()), ">= 500/s",
               PassFail(Errors(all, "full-status") == 0 && rps >= 500), base, Other(all, "full-status"));
  }
  for (const Window* w : {&paced_incr, &paced_incr_half, &paced_full, &paced_full_half}) {
    if (w->lat.count == 0) continue;
    const bool full_kind = w->kind == "full-status";
    if (w == &paced_incr_half || w == &paced_full_half) {
      SummaryRow(summary,
                 Fmt("status %s, p99 at half the measured rate, %.0f/s (info)", full_kind ? "full" : "incremental",
                     w->target_rate),
                 Fmt("p99 %.1f ms (p50 %.1f, achieved %.0f/s%s)", w->lat.p99_ms, w->lat.p50_ms, w->rps,
                     w->errors ? Fmt(", %" PRIu64 " errors", w->errors).c_str() : ""),
                 "(no target: context)", "-", Fmt("closed loop %.0f/s", full_kind ? measured_full : measured_incr),
                 Fmt("%.2f s", w->other_cpu_s));
      continue;
    }
    SummaryRow(summary,
               Fmt("status %s, p99 at %.0f/s (open loop)", full_kind ? "full" : "incremental", w->target_rate),
               Fmt("p99 %.1f ms (p50 %.1f, achieved %.0f/s%s)", w->lat.p99_ms, w->lat.p50_ms, w->rps,
                   w->errors ? Fmt(", %" PRIu64 " errors", w->errors).c_str() : ""),
               Fmt("< 20 ms at %.0f/s", w->target_rate),
               PassFail(w->errors == 0 && w->lat.p99_ms < 20 && w->rps >= 0.95 * w->target_rate), base,
               Fmt("%.2f s", w->other_cpu_s));
  }
  return 0;
}

}  // namespace orchard::bench::ddm
