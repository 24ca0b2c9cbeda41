// bench_push: APNs push throughput against the mock APNs over TLS on loopback.
//
//   client   the raw HTTP/2 client (push::ApnsClient), N pushes
//   service  Orchard's PushService: per push a RocksDB push-state lookup, the
//            request, and the recorded outcome (state write, batched); timed
//            until every outcome is written (WaitIdle); its p50/p99 are the
//            time Push() takes to accept a batch of 10,000 (it does not wait
//            for APNs)
// each with --connections 1 and with a pool. The mock runs as a separate
// process (tests/apns_mock's mock-apns), so this process's CPU is the client's.
// scripts/bench-push runs it next to h2load against the same mock.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "bench/bench_common.h"
#include "events/events.h"
#include "push/apns_client.h"
#include "push/push.h"
#include "push/push_service.h"
#include "store/records.h"
#include "store/store.h"
#include "support/orchardd_process.h"
#include "util/encoding.h"

using namespace orchard;

namespace {

struct Mock {
  pid_t pid = -1;
  int port = 0;
  std::string ca, push_cert, push_key;
  ~Mock() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
};

bool StartMock(const std::string& binary, const std::string& pki_dir, const std::string& topic, Mock* m) {
  int out[2];
  if (pipe(out) != 0) return false;
  m->pid = fork();
  if (m->pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    execl(binary.c_str(), binary.c_str(), "--pki-dir", pki_dir.c_str(), "--topic", topic.c_str(),
          "--max-streams", "1000", nullptr);
    _exit(127);
  }
  close(out[1]);
  FILE* f = fdopen(out[0], "r");
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    std::string l(line);
    if (l.rfind("listening on 127.0.0.1:", 0) == 0) {
      m->port = std::atoi(l.c_str() + strlen("listening on 127.0.0.1:"));
      break;
    }
  }
  fclose(f);
  m->ca = pki_dir + "/ca.pem";
  m->push_cert = pki_dir + "/push.pem";
  m->push_key = pki_dir + "/push.key";
  return m->port > 0;
}

struct Result1 {
  double seconds = 0, cpu = 0, mock_cpu = 0;
  uint64_t ok = 0, failed = 0;
  bench::LatencySummary latency;
};

void Print(const char* name, int connections, uint64_t n, const Result1& r, const std::string& json_out) {
  const double rate = r.ok / r.seconds;
  std::printf("%-8s connections=%d pushes=%llu ok=%llu failed=%llu  %.0f pushes/s  p50=%.2fms p99=%.2fms  "
              "client_cpu=%.2fs (%.1f us/push)  mock_cpu=%.2fs\n",
              name, connections, (unsigned long long)n, (unsigned long long)r.ok,
              (unsigned long long)r.failed, rate, r.latency.p50_ms, r.latency.p99_ms, r.cpu,
              r.cpu / n * 1e6, r.mock_cpu);
  if (!json_out.empty())
    bench::AppendLine(json_out, "{\"bench\":\"push\",\"mode\":\"" + std::string(name) +
                                    "\",\"connections\":" + std::to_string(connections) +
                                    ",\"pushes\":" + std::to_string(n) + ",\"ok\":" + std::to_string(r.ok) +
                                    ",\"rate\":" + std::to_string(rate) +
                                    ",\"p99_ms\":" + std::to_string(r.latency.p99_ms) +
                                    ",\"cpu_us_per_push\":" + std::to_string(r.cpu / n * 1e6) + "}");
}

push::ApnsClientOptions ClientOptions(const Mock& m, int connections) {
  push::ApnsClientOptions o;
  o.endpoint.host = "127.0.0.1";
  o.endpoint.port = static_cast<uint16_t>(m.port);
  o.endpoint.ca_file = m.ca;
  o.cert_pem = testing::ReadFile(m.push_cert);
  o.key_pem = testing::ReadFile(m.push_key);
  o.connections = connections;
  return o;
}

Result1 RunClient(const Mock& m, int connections, uint64_t n, const std::string& topic) {
  auto client = push::ApnsClient::Create(ClientOptions(m, connections));
  if (!client.ok()) {
    std::fprintf(stderr, "bench_push: %s\n", client.status().message().c_str());
    std::exit(1);
  }
  std::vector<uint32_t> lat(n);
  std::atomic<uint64_t> ok{0}, failed{0}, done{0};
  std::mutex mu;
  std::condition_variable cv;
  const double cpu0 = bench::SelfCpuSeconds(), mock0 = bench::ProcessCpuSeconds(m.pid);
  const uint64_t t0 = bench::NowNs();
  for (uint64_t i = 0; i < n; ++i) {
    push::ApnsRequest r;
    std::string token(32, '\0');
    for (int b = 0; b < 8; ++b) token[b] = char((i >> (b * 8)) & 0xFF);
    r.device_token_hex = HexEncode(token);
    r.topic = topic;
    r.push_magic = "A1B2C3D4-0000-4000-8000-000000000000";
    r.expiration_unix = 0;
    const uint64_t start = bench::NowNs();
    (*client)->Send(std::move(r), [&, i, start](const push::ApnsResponse& resp) {
      lat[i] = static_cast<uint32_t>((bench::NowNs() - start) / 1000);
      (resp.status == 200 ? ok : failed)++;
      if (++done == n) {
        std::lock_guard lock(mu);
        cv.notify_all();
      }
    });
  }
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::minutes(5), [&] { return done == n; });
  }
  Result1 r;
  r.seconds = bench::SecondsSince(t0);
  r.cpu = bench::SelfCpuSeconds() - cpu0;
  r.mock_cpu = bench::ProcessCpuSeconds(m.pid) - mock0;
  r.ok = ok;
  r.failed = failed;
  r.latency = bench::Summarize(&lat);
  return r;
}

Result1 RunService(const Mock& m, int connections, uint64_t n, const std::string& topic,
                   const std::string& dir) {
  std::filesystem::remove_all(dir);
  auto db = std::move(store::Store::Open({.path = dir}).value());
  auto log = std::move(events::EventLog::Open(db.get()).value());
  push::PushCertStore certs(db.get(), nullptr);
  auto cert = push::ParsePushCert(testing::ReadFile(m.push_cert) + testing::ReadFile(m.push_key));
  if (!cert.ok() || !certs.Put(*cert).ok()) {
    std::fprintf(stderr, "bench_push: push certificate: %s\n", cert.status().message().c_str());
    std::exit(1);
  }
  push::PushServiceOptions o;
  o.endpoint.host = "127.0.0.1";
  o.endpoint.port = static_cast<uint16_t>(m.port);
  o.endpoint.ca_file = m.ca;
  o.connections = connections;
  o.coalesce_ms = 0;
  push::PushService svc(o, db.get(), log.get(), &certs);
  // Targets as the admin API builds them, with a stored push state for half of them.
  std::vector<push::Target> targets;
  targets.reserve(n);
  store::Batch seed;
  for (uint64_t i = 0; i < n; ++i) {
    std::string token(32, '\0');
    for (int b = 0; b < 8; ++b) token[b] = char((i >> (b * 8)) & 0xFF);
    targets.push_back({bench::DeviceUdid(i), topic, token, "MAGIC-" + std::to_string(i)});
    if (i % 2 == 0) {
      store::PushState s;
      s.last_push_ms = 1;
      s.last_status = 200;
      seed.Put(store::Cf::kPushState, targets.back().enrollment_id, s.Encode());
    }
  }
  if (!db->Write(seed).ok()) std::exit(1);
  // Warm the connection(s).
  (void)svc.Push({targets[0]});
  svc.WaitIdle(std::chrono::seconds(60));
  const push::PushService::Counters before = svc.counters();
  const double cpu0 = bench::SelfCpuSeconds(), mock0 = bench::ProcessCpuSeconds(m.pid);
  const uint64_t t0 = bench::NowNs();
  std::vector<uint32_t> lat;
  Result1 r;
  const size_t chunk = 10000;
  for (size_t off = 0; off < targets.size(); off += chunk) {
    std::vector<push::Target> part(targets.begin() + off,
                                   targets.begin() + std::min(targets.size(), off + chunk));
    const uint64_t start = bench::NowNs();
    auto out = svc.Push(part);  // accepts without waiting for APNs
    lat.push_back(static_cast<uint32_t>((bench::NowNs() - start) / 1000));
    for (auto& x : out) r.failed += x.ok ? 0 : 1;  // refused at once
  }
  // Until every APNs answer is handled and its outcome written.
  svc.WaitIdle(std::chrono::minutes(5));
  r.seconds = bench::SecondsSince(t0);
  const push::PushService::Counters after = svc.counters();
  r.ok = after.ok - before.ok;
  r.failed += (after.failed - before.failed) + (after.rejected - before.rejected) +
              (after.unregistered - before.unregistered) + (after.certificate_error - before.certificate_error);
  r.cpu = bench::SelfCpuSeconds() - cpu0;
  r.mock_cpu = bench::ProcessCpuSeconds(m.pid) - mock0;
  r.latency = bench::Summarize(&lat);  // Push() per 10,000-push batch (acceptance only)
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv, {"pushes", "pool", "mock", "work-dir", "json-out", "mode"});
  if (!flags.ok()) {
    std::fprintf(stderr, "bench_push: %s\nusage: bench_push --mock PATH/mock-apns [--pushes N] [--pool C] "
                         "[--mode client|service|both] [--work-dir DIR] [--json-out FILE]\n",
                 flags.error().c_str());
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  const uint64_t n = static_cast<uint64_t>(flags.GetInt("pushes", 100000));
  const int pool = static_cast<int>(flags.GetInt("pool", 4));
  const std::string mode = flags.Get("mode", "both");
  const std::string work = flags.Get("work-dir", "/tmp/orchard-bench-push");
  const std::string topic = "com.apple.mgmt.External.orchard-bench";
  std::filesystem::create_directories(work + "/pki");
  Mock mock;
  if (!StartMock(flags.Get("mock"), work + "/pki", topic, &mock)) {
    std::fprintf(stderr, "bench_push: cannot start the mock (%s)\n", flags.Get("mock").c_str());
    return 1;
  }
  const std::string json = flags.Get("json-out");
  for (int c : {1, pool}) {
    if (mode == "client" || mode == "both") Print("client", c, n, RunClient(mock, c, n, topic), json);
    if (mode == "service" || mode == "both")
      Print("service", c, n, RunService(mock, c, n, topic, work + "/db"), json);
  }
  std::filesystem::remove_all(work + "/db");
  return 0;
}
