// bench_automation: the automation host end to end, in one process, from a
// device report to the committed decision.
//
//   bench_automation [--devices 20000] [--backlog 200000] [--seconds 10]
//                    [--handlers native,plugin,lua,min-os] [--policy FILE] [--work DIR]
//                    [--trivial-rate 25000] [--min-os-rate 5000] [--load F] [--json FILE]
//
// Everything is real except the network: RocksDB on disk, the device protocol
// service (protocol::Service, as orchardd's /mdm handler calls it: plist
// parsing, identity check, enrollment and queue reads, the result, the event
// and the queue change in one batch), the event log, the runner with its lanes,
// the Lua engine, and the StoreCommitter (decisions + checkpoint in one
// transaction). Each report is a device's Acknowledged answer to a queued
// DeviceInformation command carrying QueryResponses {OSVersion, ProductName};
// the OS alternates between 17.4 and 18.1 for each device, so every report
// changes what the minimum-OS policy decides.
//
// Handlers (each on a fresh data directory):
//   native  a C++ consumer that writes one key per report (the host's own cost)
//   plugin  the same work in a C plugin loaded through the plugin ABI
//           (tests/bench/bench_plugin.c: one kv_put per report)
//   lua     a Lua policy whose handler writes one key per report (ctx:put)
//   min-os  the shipped policies/min_os.lua (compliance writes, escalation
//           state, a ScheduleOSUpdate command queued for each report below the
//           floor)
//
// Two measurements per handler:
//   1. Throughput: --backlog reports are answered while no consumer runs
//      (the device side, timed on its own), then the consumer starts from its
//      saved checkpoint; events/s = reports / time from its start to the commit
//      of the last decision.
//   2. Dispatch latency at half the target throughput (--trivial-rate 25,000/s
//      for native, plugin and lua, --min-os-rate 5,000/s; or --load F times the
//      throughput measured in step 1): for --seconds, one thread
//      commits report events at a steady rate while the consumer runs (copies
//      of the events the protocol service wrote in step 1, one transaction per
//      report: on 2 cores the device side alone cannot produce half the host's
//      rate); each event's latency is from its commit to the commit of the
//      decision it caused (the Committer returned). p50/p99/max.
// Prints the machine, a table, and JSON lines (--json). Not a ctest test.
#include <sys/utsname.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "automation/runner.h"
#include "automation/scheduler.h"
#include "automation/store_host.h"
#include "bench/bench_common.h"
#include "bench/counting_push.h"
#include "domain/commands.h"
#include "domain/enrollments.h"
#include "domain/tx.h"
#include "events/events.h"
#include "log/log.h"
#include "plugin/plugin_set.h"
#include "policy/policy_set.h"
#include "protocol/service.h"
#include "push/push.h"
#include "queue/queue.h"
#include "store/store.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::bench;
namespace fs = std::filesystem;

namespace {

// CommandUUID of report `index` (UUID-shaped; the index is in the last group).
std::string ReportUuid(uint64_t index) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "B0000000-0000-4000-8000-%012" PRIx64, index);
  return buf;
}

// The report index back from a CommandUUID made by ReportUuid (-1 if not one).
int64_t ReportIndex(const std::string& uuid) {
  if (uuid.size() != 36 || uuid.compare(0, 24, "B0000000-0000-4000-8000-") != 0) return -1;
  return static_cast<int64_t>(std::strtoull(uuid.c_str() + 24, nullptr, 16));
}

std::string AckBody(const std::string& udid, const std::string& uuid, bool below_floor) {
  std::string b;
  b.reserve(700);
  b += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
       "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\"><dict>"
       "<key>CommandUUID</key><string>";
  b += uuid;
  b += "</string><key>QueryResponses</key><dict><key>OSVersion</key><string>";
  b += below_floor ? "17.4" : "18.1";
  b += "</string><key>ProductName</key><string>iPhone15,2</string></dict>"
       "<key>Status</key><string>Acknowledged</string><key>UDID</key><string>";
  b += udid;
  b += "</string></dict></plist>\n";
  return b;
}

// Wraps the StoreCommitter: notes when each report's decision was committed.
class TimingCommitter : public automation::Committer {
 public:
  TimingCommitter(automation::Committer* inner, std::vector<std::atomic<uint64_t>>* done)
      : inner_(inner), done_(done) {}
  Status Commit(const automation::LaneKey& lane, uint64_t checkpoint_seq, uint64_t epoch,
                std::vector<automation::RunRecord>& runs) override {
    Status st = inner_->Commit(lane, checkpoint_seq, epoch, runs);
    if (!st.ok()) return st;
    const uint64_t now = NowNs();
    for (const auto& r : runs) {
      if (!r.decisions.HasEffects()) continue;
      const int64_t i = ReportIndex(r.event.command_uuid);
      if (i < 0 || static_cast<size_t>(i) >= done_->size()) continue;
      uint64_t expected = 0;
      if ((*done_)[i].compare_exchange_strong(expected, now)) decided_.fetch_add(1);
      uint64_t last = last_ns_.load();
      while (now > last && !last_ns_.compare_exchange_weak(last, now)) {
      }
    }
    return st;
  }
  Result<std::map<int, automation::SavedCheckpoint>> LoadCheckpoints(const std::string& c, uint32_t p) override {
    return inner_->LoadCheckpoints(c, p);
  }
  Status DropCheckpoints(const std::string& c) override { return inner_->DropCheckpoints(c); }
  automation::HostReader* reader() override { return inner_->reader(); }

  uint64_t decided() const { return decided_.load(); }
  uint64_t last_ns() const { return last_ns_.load(); }

 private:
  automation::Committer* inner_;
  std::vector<std::atomic<uint64_t>>* done_;
  std::atomic<uint64_t> decided_{0};
  std::atomic<uint64_t> last_ns_{0};
};

// The trivial native consumer: one key per acknowledged DeviceInformation.
class NativeConsumer : public automation::Consumer {
 public:
  const std::string& name() const override { return name_; }
  bool Wants(const events::Event& e) const override {
    return e.type == events::type::kCommandAcknowledged && e.request_type == "DeviceInformation";
  }
  bool WantsType(std::string_view type) const override { return type == events::type::kCommandAcknowledged; }
  automation::RunOutcome Handle(int, const events::Event& e, const std::string&, automation::HostReader*,
                                automation::Decisions* out, bool*) override {
    out->kv.push_back({"seen/" + e.enrollment_id, e.command_uuid});
    return {};
  }

 private:
  std::string name_ = "bench:native";
};

const char* kLuaTrivial = R"(policy { name = "bench-trivial", description = "one key per report", version = "1" }
policy:on_result("DeviceInformation", function(ctx, result)
  ctx:put(ctx.enrollment_id, result.status)
end)
)";

using orchard::bench::CountingPush;

// One fresh store with every service the device path and the host need.
struct World {
  std::string dir;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<events::EventLog> events;
  std::unique_ptr<queue::CommandQueue> queue;
  std::unique_ptr<domain::Enrollments> enrollments;
  domain::EnrollmentLocks locks;
  std::unique_ptr<auth::Authenticator> auth;
  std::unique_ptr<protocol::Service> service;
  CountingPush push;
  std::unique_ptr<domain::CommandService> commands;
  std::unique_ptr<automation::AutomationStore> automation;
  std::unique_ptr<automation::StoreCommitter> committer;
  std::unique_ptr<automation::LogSource> source;
  std::unique_ptr<automation::Scheduler> scheduler;

  ~World() {
    scheduler.reset();
    service.reset();
    commands.reset();
    committer.reset();
    automation.reset();
    source.reset();
    enrollments.reset();
    queue.reset();
    events.reset();
    store.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  Status Open(const std::string& path) {
    dir = path;
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::create_directories(dir, ec);
    auto st = store::Store::Open({.path = dir + "/db"});
    if (!st.ok()) return st.status();
    store = std::move(st.value());
    auto ev = events::EventLog::Open(store.get());
    if (!ev.ok()) return ev.status();
    events = std::move(ev.value());
    queue = std::make_unique<queue::CommandQueue>(store.get());
    enrollments = std::make_unique<domain::Enrollments>(store.get());
    // Reports carry no certificate here: identity checks have their own
    // benchmark (scripts/bench Idle, certificates in Client-Cert).
    auto au = auth::Authenticator::Create({.insecure_allow_anonymous = true});
    if (!au.ok()) return au.status();
    auth = std::move(au.value());
    commands = std::make_unique<domain::CommandService>(
        domain::CommandDeps{events.get(), queue.get(), enrollments.get(), &locks, &push});
    automation = std::make_unique<automation::AutomationStore>(store.get(), enrollments.get(), queue.get());
    committer = std::make_unique<automation::StoreCommitter>(
        automation::CommitterDeps{automation.get(), events.get(), commands.get(), enrollments.get(), &locks});
    source = std::make_unique<automation::LogSource>(events.get());
    scheduler = std::make_unique<automation::Scheduler>(automation::SchedulerOptions{}, store.get(), events.get(),
                                                        enrollments.get());
    return Status::Ok();
  }

  void MakeService(const events::Interest* interest) {
    protocol::ServiceOptions so;
    service = std::make_unique<protocol::Service>(
        so, protocol::Deps{store.get(), events.get(), queue.get(), auth.get(), enrollments.get(), &locks, interest});
  }

  // Enrolled devices, written directly (no events).
  Status Seed(uint64_t devices) {
    const int64_t now = NowMillis();
    store::Batch batch;
    for (uint64_t i = 0; i < devices; ++i) {
      enrollments->Put(batch, std::nullopt, BenchEnrollment(i, now, nullptr));
      if ((i + 1) % 2000 == 0 || i + 1 == devices) {
        ORCHARD_RETURN_IF_ERROR(store->Write(batch));
        batch.Clear();
      }
    }
    return Status::Ok();
  }

  // Queues the DeviceInformation commands of reports [first, first + n)
  // (report i is for device i % devices), without events.
  Status Queue(uint64_t first, uint64_t n, uint64_t devices) {
    const int64_t now = NowMillis();
    store::Batch batch;
    for (uint64_t i = first; i < first + n; ++i) {
      const std::string uuid = ReportUuid(i);
      std::string plist =
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict><key>Command</key><dict>"
          "<key>Queries</key><array><string>OSVersion</string><string>ProductName</string></array>"
          "<key>RequestType</key><string>DeviceInformation</string></dict><key>CommandUUID</key><string>" +
          uuid + "</string></dict></plist>";
      ORCHARD_RETURN_IF_ERROR(queue->Enqueue(batch, DeviceUdid(i % devices),
                                             {uuid, "DeviceInformation", std::move(plist), 0, "api", ""}, now));
      if ((i - first + 1) % 5000 == 0 || i + 1 == first + n) {
        ORCHARD_RETURN_IF_ERROR(store->Write(batch));
        batch.Clear();
      }
    }
    return Status::Ok();
  }

  // Sends report i through the device protocol; false on a non-200 answer.
  bool Report(uint64_t i, uint64_t devices) {
    const uint64_t device = i % devices;
    const std::string udid = DeviceUdid(device);
    const std::string body = AckBody(udid, ReportUuid(i), (i / devices) % 2 == 0);
    protocol::DeviceRequest req;
    req.content_type = "application/x-apple-aspen-mdm";
    req.body = body;
    req.presented.body = body;
    protocol::DeviceResponse resp = service->Handle(req);
    if (resp.status != 200) {
      std::fprintf(stderr, "bench_automation: report %" PRIu64 " answered %d: %s\n", i, resp.status,
                   resp.error.c_str());
      return false;
    }
    return true;
  }
};

// The consumer side of one handler kind: a runner with the consumer(s).
struct Host {
  int64_t linger_us = -1;  // RunnerOptions::read_linger_us (-1: the default)
  std::unique_ptr<TimingCommitter> timing;
  std::unique_ptr<automation::Runner> runner;
  std::unique_ptr<policy::PolicySet> policies;
  std::unique_ptr<plugin::PluginSet> plugins;

  Status Start(World& w, const std::string& kind, const std::string& policy_dir,
               std::vector<std::atomic<uint64_t>>* done) {
    timing = std::make_unique<TimingCommitter>(w.committer.get(), done);
    automation::RunnerOptions ro;
    if (linger_us >= 0) ro.read_linger_us = linger_us;
    runner = std::make_unique<automation::Runner>(ro, w.source.get(), timing.get());
    if (kind == "native") return runner->Register(std::make_shared<NativeConsumer>());
    if (kind == "plugin") {
      // A private directory (0700) with the bench plugin (0755), as orchardd wants it.
      const std::string dir = policy_dir + "/plugins";
      std::error_code ec;
      fs::create_directories(dir, ec);
      fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
      fs::copy_file(BENCH_PLUGIN, dir + "/bench.so", fs::copy_options::overwrite_existing, ec);
      if (ec) return Status::Io("cannot copy the bench plugin: " + ec.message());
      fs::permissions(dir + "/bench.so", fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                             fs::perms::others_read | fs::perms::others_exec,
                      fs::perm_options::replace, ec);
      plugin::PluginSetOptions plo;
      plo.dir = dir;
      plugins = std::make_unique<plugin::PluginSet>(plo, runner.get());
      ORCHARD_RETURN_IF_ERROR(plugins->Start());
      for (const auto& p : plugins->List())
        if (p.state != plugin::PluginState::kLoaded) return Status::InvalidArgument("bench plugin: " + p.message);
      return Status::Ok();
    }
    policy::PolicySetOptions pso;
    pso.dir = policy_dir;
    pso.watch_interval_ms = 0;
    policies = std::make_unique<policy::PolicySet>(pso, runner.get(), w.automation.get(), w.scheduler.get());
    ORCHARD_RETURN_IF_ERROR(policies->Start());
    for (const auto& p : policies->List())
      if (!p.loaded) return Status::InvalidArgument("policy " + p.name + " did not load: " + p.load_error);
    return Status::Ok();
  }
  void Stop() {
    if (plugins) plugins->Stop();
    if (policies) policies->Stop();
    if (runner) runner->Stop();
    policies.reset();
    plugins.reset();
    runner.reset();
    timing.reset();
  }
};

struct Figures {
  std::string handler;
  uint64_t backlog = 0;
  double report_rate = 0;  // device reports/s answered with no consumer running
  double events_per_s = 0;
  double consumer_cpu_s = 0;
  double target_rate = 0;
  double achieved_rate = 0;
  LatencySummary latency;
  uint64_t missing = 0;  // reports whose decision was never committed
  bool ok = false;
};

std::string PolicyDir(const std::string& work, const std::string& kind, const std::string& min_os_file) {
  std::string dir = work + "/policies-" + kind;
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  if (kind == "lua") {
    std::ofstream(dir + "/bench_trivial.lua") << kLuaTrivial;
  } else if (kind == "min-os") {
    fs::copy_file(min_os_file, dir + "/min_os.lua", ec);
    if (ec) std::fprintf(stderr, "bench_automation: copy %s: %s\n", min_os_file.c_str(), ec.message().c_str());
  }
  return dir;
}

bool RunHandler(const std::string& kind, const Flags& f, const std::string& work, Figures* out) {
  const uint64_t devices = static_cast<uint64_t>(f.GetInt("devices", 20000));
  const uint64_t backlog = static_cast<uint64_t>(f.GetInt("backlog", 200000));
  const double seconds = f.GetDouble("seconds", 10);
  const std::string policy_dir = PolicyDir(work, kind, f.Get("policy", std::string(ORCHARD_SOURCE_DIR) + "/policies/min_os.lua"));
  out->handler = kind;
  out->backlog = backlog;

  World w;
  Status st = w.Open(work + "/data-" + kind);
  if (st.ok()) st = w.Seed(devices);
  if (st.ok()) st = w.Queue(0, backlog, devices);
  if (!st.ok()) {
    std::fprintf(stderr, "bench_automation: setup: %s\n", st.message().c_str());
    return false;
  }
  std::vector<std::atomic<uint64_t>> done(backlog + static_cast<uint64_t>(seconds * 200000) + 1);
  std::vector<uint64_t> sent(done.size(), 0);

  // 1. Register the consumer (its checkpoint is saved at the empty log's head),
  //    stop it, answer the backlog of reports, start it again and time the drain.
  {
    Host h;
    st = h.Start(w, kind, policy_dir, &done);
    h.Stop();
    if (!st.ok()) {
      std::fprintf(stderr, "bench_automation: %s: %s\n", kind.c_str(), st.message().c_str());
      return false;
    }
  }
  w.MakeService(nullptr);
  uint64_t t0 = NowNs();
  for (uint64_t i = 0; i < backlog; ++i)
    if (!w.Report(i, devices)) return false;
  out->report_rate = backlog / SecondsSince(t0);

  Host h;
  h.linger_us = f.GetInt("linger-us", -1);
  const double cpu0 = SelfCpuSeconds();
  t0 = NowNs();
  st = h.Start(w, kind, policy_dir, &done);
  if (!st.ok()) {
    std::fprintf(stderr, "bench_automation: %s: %s\n", kind.c_str(), st.message().c_str());
    return false;
  }
  const uint64_t deadline = t0 + 600ull * 1000000000ull;
  while (h.timing->decided() < backlog && NowNs() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (h.timing->decided() < backlog) {
    std::fprintf(stderr, "bench_automation: %s: only %" PRIu64 " of %" PRIu64 " decisions committed in 600 s\n",
                 kind.c_str(), h.timing->decided(), backlog);
    return false;
  }
  out->events_per_s = backlog / (static_cast<double>(h.timing->last_ns() - t0) / 1e9);
  out->consumer_cpu_s = SelfCpuSeconds() - cpu0;

  // 2. Steady load, the consumer running.
  // Half the target throughputs (50,000/s trivial, 10,000/s minimum OS), or
  // --load times what was measured above.
  out->target_rate = f.Has("load") ? out->events_per_s * f.GetDouble("load", 0.5)
                                   : (kind == "min-os" ? f.GetDouble("min-os-rate", 5000) : f.GetDouble("trivial-rate", 25000));
  uint64_t n = static_cast<uint64_t>(out->target_rate * seconds);
  n = std::min<uint64_t>(n, done.size() - backlog - 1);
  // The events the device side wrote for the first two rounds of reports (each
  // device once below and once above the floor) are committed again, as the
  // protocol service commits them, one transaction per report, at the target
  // rate: on 2 cores the device side alone cannot produce that rate beside the host.
  std::vector<events::Event> templates;
  {
    auto read = w.events->Read(0, 2 * devices);
    if (!read.ok()) {
      std::fprintf(stderr, "bench_automation: read: %s\n", read.status().message().c_str());
      return false;
    }
    for (auto& e : *read)
      if (e.type == events::type::kCommandAcknowledged) templates.push_back(std::move(e));
  }
  if (templates.size() < 2 * devices) {
    std::fprintf(stderr, "bench_automation: --backlog must be at least twice --devices\n");
    return false;
  }
  templates.resize(2 * devices);  // k % size keeps each device alternating
  const double interval_ns = 1e9 / out->target_rate;
  t0 = NowNs();
  for (uint64_t k = 0; k < n; ++k) {
    const uint64_t due = t0 + static_cast<uint64_t>(static_cast<double>(k) * interval_ns);
    uint64_t now = NowNs();
    while (now < due) {
      if (due - now > 200000) std::this_thread::sleep_for(std::chrono::nanoseconds(due - now - 100000));
      now = NowNs();
    }
    events::Event e = templates[k % templates.size()];
    e.seq = 0;
    e.time_ms = NowMillis();
    e.command_uuid = ReportUuid(backlog + k);
    events::Transaction txn(w.events.get());
    txn.Emit(std::move(e));
    sent[backlog + k] = NowNs();
    Status cs = w.events->Commit(txn);
    if (!cs.ok()) {
      std::fprintf(stderr, "bench_automation: commit: %s\n", cs.message().c_str());
      return false;
    }
  }
  out->achieved_rate = n / SecondsSince(t0);
  const uint64_t wait_until = NowNs() + 60ull * 1000000000ull;
  while (h.timing->decided() < backlog + n && NowNs() < wait_until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  for (const auto& cs : h.runner->Statuses())
    if (cs.failed || cs.parked)
      std::fprintf(stderr, "  %s: %" PRIu64 " failed runs, %" PRIu64 " parked; last error: %s\n", cs.name.c_str(),
                   cs.failed, cs.parked, cs.last_error.c_str());
  h.Stop();
  std::vector<uint32_t> us;
  us.reserve(n);
  for (uint64_t k = 0; k < n; ++k) {
    const uint64_t d = done[backlog + k].load();
    if (d == 0) {
      ++out->missing;
      continue;
    }
    us.push_back(static_cast<uint32_t>(std::min<uint64_t>((d - sent[backlog + k]) / 1000, UINT32_MAX)));
  }
  out->latency = Summarize(&us);
  out->ok = out->missing == 0;
  if (kind == "min-os") {
    auto counts = w.automation->ComplianceCounts(policy::PolicySet::ConsumerName("min-os"));
    if (counts.ok())
      for (const auto& [status, c] : *counts) std::fprintf(stderr, "  min-os compliance %s=%" PRId64 "\n", status.c_str(), c);
    std::fprintf(stderr, "  min-os pushes accepted=%" PRIu64 "\n", w.push.pushes());
  }
  return true;
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
  Flags f(argc, argv, {"devices", "backlog", "seconds", "load", "trivial-rate", "min-os-rate", "linger-us", "handlers", "policy", "work", "json", "help!"});
  if (!f.ok() || f.Has("help")) {
    std::fprintf(stderr, "%s\nusage: bench_automation [--devices 20000] [--backlog 200000] [--seconds 10]\n"
                         "         [--handlers native,plugin,lua,min-os] [--policy policies/min_os.lua] [--work DIR]"
                         " [--trivial-rate 25000] [--min-os-rate 5000] [--load F] [--json FILE]\n",
                 f.error().c_str());
    return f.Has("help") ? 0 : 2;
  }
  log::Configure(log::Level::kError);  // the policies' own warnings are not the point
  const std::string work = f.Get("work", fs::temp_directory_path().string() + "/orchard-bench-automation");
  PrintMachine();
  std::vector<std::string> kinds;
  std::stringstream ss(f.Get("handlers", "native,plugin,lua,min-os"));
  for (std::string k; std::getline(ss, k, ',');) kinds.push_back(k);
  std::vector<Figures> all;
  bool ok = true;
  for (const auto& kind : kinds) {
    if (kind != "native" && kind != "plugin" && kind != "lua" && kind != "min-os") {
      std::fprintf(stderr, "bench_automation: unknown handler %s\n", kind.c_str());
      return 2;
    }
    std::fprintf(stderr, "bench_automation: %s ...\n", kind.c_str());
    Figures fig;
    if (!RunHandler(kind, f, work, &fig)) return 1;
    ok = ok && fig.ok;
    all.push_back(fig);
    char line[1024];
    std::snprintf(line, sizeof line,
                  "{\"bench\":\"automation\",\"handler\":\"%s\",\"backlog\":%" PRIu64
                  ",\"report_rate\":%.0f,\"events_per_s\":%.0f,\"consumer_cpu_s\":%.2f,\"target_rate\":%.0f,"
                  "\"achieved_rate\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"missing\":%" PRIu64 "}",
                  fig.handler.c_str(), fig.backlog, fig.report_rate, fig.events_per_s, fig.consumer_cpu_s,
                  fig.target_rate, fig.achieved_rate, fig.latency.p50_ms, fig.latency.p99_ms, fig.latency.max_ms,
                  fig.missing);
    if (f.Has("json")) AppendLine(f.Get("json"), line);
  }
  std::printf("%-8s %10s %12s %12s %12s %12s %9s %9s %9s %8s\n", "handler", "backlog", "reports/s", "events/s",
              "load/s", "achieved/s", "p50 ms", "p99 ms", "max ms", "missing");
  for (const auto& fig : all)
    std::printf("%-8s %10" PRIu64 " %12.0f %12.0f %12.0f %12.0f %9.3f %9.3f %9.3f %8" PRIu64 "\n",
                fig.handler.c_str(), fig.backlog, fig.report_rate, fig.events_per_s, fig.target_rate,
                fig.achieved_rate, fig.latency.p50_ms, fig.latency.p99_ms, fig.latency.max_ms, fig.missing);
  std::printf("reports/s: device reports answered by the protocol service with no consumer running (1 thread)\n"
              "events/s: backlog drained by the consumer, from its start to its last committed decision\n"
              "latency: report event committed -> its decision committed, at the rate in column 'load/s'\n");
  return ok ? 0 : 1;
}
