// bench_ddm: the Declarative Device Management benchmark of the DDM issue
// (driven by scripts/bench-ddm; see docs/performance.md, "Declarative Device
// Management"). Subcommands:
//
//   bench_ddm seed-http --data-dir D --devices N [--declarations 50]
//       Adds to an orchardd data dir already holding bench enrollments 0..N-1
//       (bench_seed enrollments): 50 declarations (5 activations, 45
//       configurations) in one set "bench.m50", assigned to every enrollment,
//       through ddm::DeclarationStore (token records as orchardd computes
//       them; no sync commands are queued, so Idle stays an empty 200).
//   bench_ddm http ...            HTTP rates against a running orchardd (ddm_bench_http.cpp)
//   bench_ddm seed-sets --data-dir D --enrollments N [--lists 100]
//       The start-up fixture: the 65 declarations and 21 sets of the list
//       design (ddm_bench.h) and 3 sets assigned to each of N enrollments.
//   bench_ddm token-cost [--work DIR] [--declarations 10000] [--sets 10] [--repeat 5] [--calls 20]
//       DeclarationStore::ManifestOf cold, then SharedManifestOf (manifest cache) and TokenOf
//       of one enrollment whose sets hold 10,000 declarations, on a real
//       RocksDB: "cold" = the first call after the store is opened (block
//       cache and manifest cache empty; the files are in the OS page cache),
//       "cached" = the calls after it, "token record" = TokenOf. Baseline: the
//       same keys read raw (scans + point reads).
//   bench_ddm fanout [--work DIR] [--enrollments 100000] [--lists 100]
//       In process, real RocksDB: DdmService + domain::CommandService with a
//       counting push provider. One edited declaration of the set every
//       enrollment holds -> every token record, one sync command each, pushes.
//       Baseline: one plain command to the same enrollments through
//       CommandService::Enqueue (the admin API's fan-out path), pushed.
//   bench_ddm policy [--work DIR] [--devices 20000] [--reports 200000]
//       policies/min-os-ddm.lua draining a backlog of ddm.status.changed events
//       (device.operating-system.version at or above the floor) written by the
//       real status check-in path; baseline: a no-op Lua on_status policy on
//       the same backlog.
//
// Every subcommand prints its figures and appends JSON lines (--json) and
// summary rows (--summary, TSV). Not a ctest test; not run in CI.
#include "bench/ddm_bench.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "automation/runner.h"
#include "automation/scheduler.h"
#include "automation/store_host.h"
#include "bench/counting_push.h"
#include "ddm/declarations.h"
#include "ddm/service.h"
#include "domain/commands.h"
#include "domain/enrollments.h"
#include "events/events.h"
#include "log/log.h"
#include "plist/plist.h"
#include "policy/policy_set.h"
#include "push/push.h"
#include "queue/queue.h"
#include "store/store.h"
#include "util/encoding.h"

namespace fs = std::filesystem;

namespace orchard::bench::ddm {

// ---------------------------------------------------------------- output

std::string Fmt(const char* format, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, format);
  std::vsnprintf(buf, sizeof buf, format, ap);
  va_end(ap);
  return buf;
}

const char* PassFail(bool met) { return met ? "pass" : "FAIL"; }

void SummaryRow(const std::string& path, const std::string& figure, const std::string& value,
                const std::string& target, const std::string& result, const std::string& baseline,
                const std::string& other) {
  AppendLine(path, figure + "\t" + value + "\t" + target + "\t" + result + "\t" + baseline + "\t" + other);
}

double Interference::OtherSeconds() const {
  return std::max(0.0, (SystemBusySeconds() - sys0_) - (SelfCpuSeconds() - self0_));
}

std::string Interference::Text() const { return Fmt("%.2f s", OtherSeconds()); }

// ---------------------------------------------------------------- fixtures

std::string ActivationJson(const std::string& id, const std::vector<std::string>& configurations) {
  std::string s = R"({"Type":"com.apple.activation.simple","Identifier":")" + id +
                  R"(","Payload":{"StandardConfigurations":[)";
  for (size_t i = 0; i < configurations.size(); ++i) s += (i ? ",\"" : "\"") + configurations[i] + "\"";
  return s + "]}}";
}

std::string TestConfigurationJson(const std::string& id, size_t echo_bytes, const std::string& salt) {
  std::string echo = "bench " + id + " " + salt + " ";
  while (echo.size() < echo_bytes) echo += "lorem ipsum dolor sit amet ";
  echo.resize(echo_bytes);
  return R"({"Type":"com.apple.configuration.management.test","Identifier":")" + id + R"(","Payload":{"Echo":")" +
         echo + "\"}}";
}

std::string PasscodeJson(const std::string& id, int min_length) {
  return R"({"Type":"com.apple.configuration.passcode.settings","Identifier":")" + id +
         R"(","Payload":{"RequirePasscode":true,"MinimumLength":)" + std::to_string(min_length) +
         R"(,"MaximumFailedAttempts":10}})";
}

Status PutDeclarations(store::Store* db, const std::vector<std::string>& uploads) {
  orchard::ddm::DeclarationStore decls(db);
  store::Batch batch;
  const int64_t now = NowMillis();
  for (size_t i = 0; i < uploads.size(); ++i) {
    auto d = orchard::ddm::ParseDeclaration(uploads[i], decls.limits());
    if (!d.ok()) return Status::InvalidArgument("fixture declaration: " + d.status().message());
    auto changes = decls.Put(batch, std::move(*d), "admin", now);
    if (!changes.ok()) return changes.status();
    if (!changes->empty()) return Status::InvalidArgument("fixture declarations must be put before assignments");
    if ((i + 1) % 1000 == 0 || i + 1 == uploads.size()) {
      ORCHARD_RETURN_IF_ERROR(db->Write(batch));
      batch.Clear();
    }
  }
  return Status::Ok();
}

Status AddToSets(store::Store* db, const std::vector<std::pair<std::string, std::string>>& members) {
  orchard::ddm::DeclarationStore decls(db);
  store::Batch batch;
  const int64_t now = NowMillis();
  for (size_t i = 0; i < members.size(); ++i) {
    auto changes = decls.SetAdd(batch, members[i].first, members[i].second, now);
    if (!changes.ok()) return changes.status();
    if (!changes->empty()) return Status::InvalidArgument("fixture sets must be filled before assignments");
    if ((i + 1) % 1000 == 0 || i + 1 == members.size()) {
      ORCHARD_RETURN_IF_ERROR(db->Write(batch));
      batch.Clear();
    }
  }
  return Status::Ok();
}

Status AssignPass(store::Store* db, uint64_t first, uint64_t count, const std::function<std::string(uint64_t)>& set_of,
                  size_t per_batch) {
  orchard::ddm::DeclarationStore decls(db);
  store::Batch batch;
  const int64_t now = NowMillis();
  for (uint64_t i = first; i < first + count; ++i) {
    // One Assign per enrollment per batch: each reads only its own enrollment's committed sets.
    auto changes = decls.Assign(batch, DeviceUdid(i), set_of(i), now);
    if (!changes.ok()) return changes.status();
    if ((i - first + 1) % per_batch == 0 || i + 1 == first + count) {
      ORCHARD_RETURN_IF_ERROR(db->Write(batch));
      batch.Clear();
    }
  }
  return Status::Ok();
}

Result<ListDesign> ListDesign::Make(size_t lists) {
  ListDesign d;
  d.lists = lists;
  for (int a = 0; a < 20 && d.pairs.size() < lists; ++a)
    for (int b = a + 1; b < 20 && d.pairs.size() < lists; ++b) d.pairs.push_back({a, b});
  if (lists == 0 || d.pairs.size() < lists) return Status::InvalidArgument("--lists must be 1..190");
  return d;
}

std::string ListDesign::SetOf(uint64_t enrollment, int pass) const {
  if (pass == 0) return "bench.common";
  const auto& p = pairs[enrollment % lists];
  return Fmt("bench.s%02d", pass == 1 ? p.first : p.second);
}

std::string ListDesign::CommonConfig(int k) { return Fmt("com.example.bench.common.cfg%d", k); }

Status SeedDesign(store::Store* db, const ListDesign& design, uint64_t n, double* assign_seconds) {
  std::vector<std::string> uploads;
  std::vector<std::pair<std::string, std::string>> members;
  {
    std::vector<std::string> cfgs;
    for (int k = 0; k < 4; ++k) {
      cfgs.push_back(ListDesign::CommonConfig(k));
      uploads.push_back(k == 0 ? PasscodeJson(cfgs.back(), 6) : TestConfigurationJson(cfgs.back(), 200));
      members.push_back({"bench.common", cfgs.back()});
    }
    uploads.push_back(ActivationJson("com.example.bench.common.act", cfgs));
    members.push_back({"bench.common", "com.example.bench.common.act"});
  }
  for (int s = 0; s < 20; ++s) {
    const std::string set = Fmt("bench.s%02d", s);
    std::vector<std::string> cfgs;
    for (int k = 0; k < 2; ++k) {
      cfgs.push_back(Fmt("com.example.bench.s%02d.cfg%d", s, k));
      uploads.push_back(TestConfigurationJson(cfgs.back(), 200));
      members.push_back({set, cfgs.back()});
    }
    uploads.push_back(ActivationJson(Fmt("com.example.bench.s%02d.act", s), cfgs));
    members.push_back({set, Fmt("com.example.bench.s%02d.act", s)});
  }
  ORCHARD_RETURN_IF_ERROR(PutDeclarations(db, uploads));
  ORCHARD_RETURN_IF_ERROR(AddToSets(db, members));
  const uint64_t t0 = NowNs();
  for (int pass = 0; pass < 3; ++pass) {
    const uint64_t tp = NowNs();
    ORCHARD_RETURN_IF_ERROR(AssignPass(db, 0, n, [&](uint64_t i) { return design.SetOf(i, pass); }));
    std::fprintf(stderr, "bench_ddm: assignment pass %d (%s): %" PRIu64 " enrollments in %.2f s\n", pass + 1,
                 pass == 0 ? "bench.common" : "bench.sNN", n, SecondsSince(tp));
  }
  *assign_seconds = SecondsSince(t0);
  return Status::Ok();
}

namespace {

// ---------------------------------------------------------------- in-process world

using orchard::bench::CountingPush;

// One fresh store with the services the DDM paths need, wired as orchardd wires them.
struct World {
  std::string dir;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<events::EventLog> events;
  std::unique_ptr<queue::CommandQueue> queue;
  std::unique_ptr<domain::Enrollments> enrollments;
  domain::EnrollmentLocks locks;
  CountingPush push;
  std::unique_ptr<domain::CommandService> commands;
  std::unique_ptr<orchard::ddm::DdmService> ddm;
  std::unique_ptr<automation::AutomationStore> automation;
  std::unique_ptr<automation::StoreCommitter> committer;
  std::unique_ptr<automation::LogSource> source;
  std::unique_ptr<automation::Scheduler> scheduler;
  bool keep = false;

  ~World() {
    scheduler.reset();
    committer.reset();
    automation.reset();
    ddm.reset();
    commands.reset();
    source.reset();
    enrollments.reset();
    queue.reset();
    events.reset();
    store.reset();
    std::error_code ec;
    if (!keep && !dir.empty()) fs::remove_all(dir, ec);
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
    commands = std::make_unique<domain::CommandService>(
        domain::CommandDeps{events.get(), queue.get(), enrollments.get(), &locks, &push});
    ddm = std::make_unique<orchard::ddm::DdmService>(
        orchard::ddm::DdmOptions{},
        orchard::ddm::DdmDeps{store.get(), events.get(), queue.get(), enrollments.get(), &locks, commands.get()});
    automation = std::make_unique<automation::AutomationStore>(store.get(), enrollments.get(), queue.get());
    automation->SetDdm(ddm.get());
    committer = std::make_unique<automation::StoreCommitter>(
        automation::CommitterDeps{automation.get(), events.get(), commands.get(), enrollments.get(), &locks});
    source = std::make_unique<automation::LogSource>(events.get());
    scheduler = std::make_unique<automation::Scheduler>(automation::SchedulerOptions{}, store.get(), events.get(),
                                                        enrollments.get());
    return Status::Ok();
  }

  // Enrolled bench enrollments 0..n-1 (push token, topic), written directly (no events).
  Status Seed(uint64_t n) {
    const int64_t now = NowMillis();
    store::Batch batch;
    for (uint64_t i = 0; i < n; ++i) {
      enrollments->Put(batch, std::nullopt, BenchEnrollment(i, now, nullptr));
      if ((i + 1) % 5000 == 0 || i + 1 == n) {
        ORCHARD_RETURN_IF_ERROR(store->Write(batch));
        batch.Clear();
      }
    }
    return Status::Ok();
  }
};

std::string WorkDir(const Flags& f, const std::string& name) {
  return f.Get("work", fs::temp_directory_path().string() + "/orchard-bench-ddm") + "/" + name;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

// ---------------------------------------------------------------- seed-http

int SeedHttp(const Flags& f) {
  const std::string data_dir = f.Get("data-dir");
  const uint64_t devices = static_cast<uint64_t>(f.GetInt("devices", 0));
  const int n = static_cast<int>(f.GetInt("declarations", 50));
  if (data_dir.empty() || devices == 0 || n < 2) {
    std::fputs("bench_ddm seed-http: --data-dir D --devices N [--declarations 50] are required\n", stderr);
    return 2;
  }
  auto opened = store::Store::Open({.path = data_dir + "/db"});
  if (!opened.ok()) {
    std::fprintf(stderr, "bench_ddm: %s\n", opened.status().message().c_str());
    return 1;
  }
  store::Store* db = opened->get();
  const uint64_t t0 = NowNs();
  // n/10 activations, each listing its share of the configurations; of the
  // configurations, every ninth a passcode.settings, the others management.test.
  const int activations = std::max(1, n / 10);
  const int configurations = n - activations;
  std::vector<std::string> uploads, cfg_ids;
  std::vector<std::pair<std::string, std::string>> members;
  for (int c = 0; c < configurations; ++c) {
    cfg_ids.push_back(Fmt("com.example.bench.configuration.%03d", c));
    uploads.push_back(c % 9 == 8 ? PasscodeJson(cfg_ids.back(), 4 + c % 8) : TestConfigurationJson(cfg_ids.back(), 300));
    members.push_back({"bench.m50", cfg_ids.back()});
  }
  for (int a = 0; a < activations; ++a) {
    std::vector<std::string> mine;
    for (int c = a; c < configurations; c += activations) mine.push_back(cfg_ids[static_cast<size_t>(c)]);
    const std::string id = Fmt("com.example.bench.activation.%03d", a);
    uploads.push_back(ActivationJson(id, mine));
    members.push_back({"bench.m50", id});
  }
  Status st = PutDeclarations(db, uploads);
  if (st.ok()) st = AddToSets(db, members);
  if (st.ok()) st = AssignPass(db, 0, devices, [](uint64_t) { return std::string("bench.m50"); });
  if (!st.ok()) {
    std::fprintf(stderr, "bench_ddm seed-http: %s\n", st.message().c_str());
    return 1;
  }
  orchard::ddm::DeclarationStore decls(db);
  auto m = decls.ManifestOf(DeviceUdid(devices - 1));
  if (!m.ok()) {
    std::fprintf(stderr, "bench_ddm seed-http: %s\n", m.status().message().c_str());
    return 1;
  }
  const size_t items = m->activations.size() + m->configurations.size() + m->assets.size() + m->management.size();
  std::printf("bench_ddm seed-http: %d declarations in set bench.m50 assigned to %" PRIu64
              " enrollments in %.2f s; manifest of the last: %zu items, token %.12s...\n",
              n, devices, SecondsSince(t0), items, m->declarations_token.c_str());
  return items == static_cast<size_t>(n) ? 0 : 1;
}

// ---------------------------------------------------------------- seed-sets

int SeedSets(const Flags& f) {
  const std::string data_dir = f.Get("data-dir");
  const uint64_t n = static_cast<uint64_t>(f.GetInt("enrollments", 0));
  auto design = ListDesign::Make(static_cast<size_t>(f.GetInt("lists", 100)));
  if (data_dir.empty() || n == 0 || !design.ok()) {
    std::fputs("bench_ddm seed-sets: --data-dir D --enrollments N [--lists 1..190] are required\n", stderr);
    return 2;
  }
  auto opened = store::Store::Open({.path = data_dir + "/db"});
  if (!opened.ok()) {
    std::fprintf(stderr, "bench_ddm: %s\n", opened.status().message().c_str());
    return 1;
  }
  const uint64_t t0 = NowNs();
  double assign_s = 0;
  Status st = SeedDesign(opened->get(), *design, n, &assign_s);
  if (!st.ok()) {
    std::fprintf(stderr, "bench_ddm seed-sets: %s\n", st.message().c_str());
    return 1;
  }
  orchard::ddm::DeclarationStore decls(opened->get());
  auto sets = decls.EnrollmentSets(DeviceUdid(n - 1), "", 10);
  auto m = decls.ManifestOf(DeviceUdid(n - 1));
  if (!sets.ok() || !m.ok() || sets->items.size() != 3) {
    std::fprintf(stderr, "bench_ddm seed-sets: the last enrollment does not hold 3 sets\n");
    return 1;
  }
  std::printf("bench_ddm seed-sets: %" PRIu64 " enrollments x 3 sets (%zu distinct lists, 65 declarations) in %.1f s "
              "(assignments %.1f s, %.0f Assign/s); the last holds %s,%s,%s, manifest %zu items\n",
              n, design->lists, SecondsSince(t0), assign_s, 3.0 * static_cast<double>(n) / assign_s,
              sets->items[0].c_str(), sets->items[1].c_str(), sets->items[2].c_str(),
              m->activations.size() + m->configurations.size());
  if (f.Has("json"))
    AppendLine(f.Get("json"), Fmt("{\"kind\":\"seed_sets\",\"enrollments\":%" PRIu64 ",\"seconds\":%.2f,"
                                  "\"assign_per_s\":%.0f}",
                                  n, SecondsSince(t0), 3.0 * static_cast<double>(n) / assign_s));
  return 0;
}

// ---------------------------------------------------------------- token-cost

int TokenCost(const Flags& f) {
  const int n = static_cast<int>(f.GetInt("declarations", 10000));
  const int sets = static_cast<int>(std::max<int64_t>(1, f.GetInt("sets", 10)));
  const int repeat = static_cast<int>(std::max<int64_t>(1, f.GetInt("repeat", 5)));
  const int calls = static_cast<int>(std::max<int64_t>(2, f.GetInt("calls", 20)));
  const std::string dir = WorkDir(f, "token-cost");
  const std::string summary = f.Get("summary");
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  const std::string enrollment = DeviceUdid(0);
  std::vector<std::string> ids;
  {
    auto opened = store::Store::Open({.path = dir + "/db"});
    if (!opened.ok()) {
      std::fprintf(stderr, "bench_ddm: %s\n", opened.status().message().c_str());
      return 1;
    }
    store::Store* db = opened->get();
    std::vector<std::string> uploads;
    std::vector<std::pair<std::string, std::string>> members;
    // One activation in a hundred (listing the 99 configurations after it), the rest management.test.
    for (int i = 0; i < n; ++i) {
      ids.push_back(Fmt("com.example.big.%05d", i));
      if (i % 100 == 0) {
        std::vector<std::string> cfgs;
        for (int k = i + 1; k < std::min(n, i + 100); ++k) cfgs.push_back(Fmt("com.example.big.%05d", k));
        uploads.push_back(ActivationJson(ids.back(), cfgs));
      } else {
        uploads.push_back(TestConfigurationJson(ids.back(), 120));
      }
      members.push_back({Fmt("bench.big%02d", i % sets), ids.back()});
    }
    const uint64_t t0 = NowNs();
    Status st = PutDeclarations(db, uploads);
    if (st.ok()) st = AddToSets(db, members);
    for (int s = 0; st.ok() && s < sets; ++s)
      st = AssignPass(db, 0, 1, [&](uint64_t) { return Fmt("bench.big%02d", s); });
    if (!st.ok()) {
      std::fprintf(stderr, "bench_ddm token-cost: %s\n", st.message().c_str());
      return 1;
    }
    std::fprintf(stderr, "bench_ddm token-cost: %d declarations in %d sets, all assigned to one enrollment, in %.1f s\n",
                 n, sets, SecondsSince(t0));
  }
  // Each round: open the store (empty block cache), one call (cold), then `calls` more.
  const Interference others;
  std::vector<double> cold_ms, warm_ms, record_ms, raw_ms, hash_ms;
  std::string token;
  size_t items = 0;
  for (int r = 0; r < repeat; ++r) {
    auto opened = store::Store::Open({.path = dir + "/db"});
    if (!opened.ok()) {
      std::fprintf(stderr, "bench_ddm: %s\n", opened.status().message().c_str());
      return 1;
    }
    store::Store* db = opened->get();
    // With the manifest cache as orchardd has it (its default budget).
    orchard::ddm::DeclarationStore decls(db, {}, orchard::ddm::DdmOptions{}.manifest_cache_items);
    uint64_t t = NowNs();
    auto m = decls.ManifestOf(enrollment);
    cold_ms.push_back(SecondsSince(t) * 1e3);
    if (!m.ok()) {
      std::fprintf(stderr, "bench_ddm token-cost: %s\n", m.status().message().c_str());
      return 1;
    }
    items = m->activations.size() + m->configurations.size() + m->assets.size() + m->management.size();
    if (!token.empty() && token != m->declarations_token) {
      std::fprintf(stderr, "bench_ddm token-cost: the token changed between calls\n");
      return 1;
    }
    token = m->declarations_token;
    for (int c = 0; c < calls; ++c) {
      t = NowNs();
      auto again = decls.SharedManifestOf(enrollment);  // the token, as the status check-in reads it
      warm_ms.push_back(SecondsSince(t) * 1e3);
      if (!again.ok() || (*again)->declarations_token != token) {
        std::fprintf(stderr, "bench_ddm token-cost: a second call failed or differed\n");
        return 1;
      }
    }
    if (decls.cache_stats().hits < static_cast<uint64_t>(calls)) {
      std::fprintf(stderr, "bench_ddm token-cost: the later calls missed the manifest cache\n");
      return 1;
    }
    for (int c = 0; c < calls; ++c) {
      t = NowNs();
      auto record = decls.TokenOf(enrollment);  // what `tokens` answers from
      record_ms.push_back(SecondsSince(t) * 1e3);
      if (!record.ok() || record->declarations_token != token) {
        std::fprintf(stderr, "bench_ddm token-cost: the token record differed from the manifest's token\n");
        return 1;
      }
    }
    // Baseline: what any uncached computation must read, read raw (warm): the
    // enrollment's assignments, each set's members, every declaration record
    // (keys as documented in ddm/declarations.h), and the token hash alone.
    t = NowNs();
    size_t keys = 0, bytes = 0;
    auto scan = [&](const std::string& prefix) {
      auto it = db->Scan(store::Cf::kDdm, prefix, store::PrefixEnd(prefix));
      for (; it->Valid(); it->Next()) ++keys;
    };
    scan(std::string("es\0", 3) + enrollment + std::string(1, '\0'));
    for (int s = 0; s < sets; ++s) scan(std::string("sd\0", 3) + Fmt("bench.big%02d", s) + std::string(1, '\0'));
    for (const auto& id : ids) {
      auto v = db->Get(store::Cf::kDdm, std::string("d\0", 2) + id);
      if (v.ok() && v->has_value()) bytes += (*v)->size();
    }
    raw_ms.push_back(SecondsSince(t) * 1e3);
    t = NowNs();
    const std::string again = orchard::ddm::DeclarationsTokenOf(*m);
    hash_ms.push_back(SecondsSince(t) * 1e3);
    if (r == 0)
      std::fprintf(stderr, "bench_ddm token-cost: raw reads: %zu index keys scanned, %zu declaration records (%zu bytes)\n",
                   keys, ids.size(), bytes);
    (void)again;
  }
  const double cold = Median(cold_ms), warm = Median(warm_ms), record = Median(record_ms), raw = Median(raw_ms),
               hash = Median(hash_ms);
  std::printf("token cost: manifest over %zu declarations (%d sets), real RocksDB, manifest cache on, %d rounds of "
              "open + 1 + %d + %d calls\n",
              items, sets, repeat, calls, calls);
  std::printf("  cold (ManifestOf, first call after open: computed, cached) median %8.3f ms  min %8.3f  max %8.3f\n",
              cold, *std::min_element(cold_ms.begin(), cold_ms.end()), *std::max_element(cold_ms.begin(), cold_ms.end()));
  std::printf("  cached (SharedManifestOf, the later calls)                 median %8.3f ms  min %8.3f  p90 %8.3f\n",
              warm, *std::min_element(warm_ms.begin(), warm_ms.end()), Percentile(warm_ms, 0.9));
  std::printf("  token record (TokenOf, what `tokens` reads)               median %8.3f ms  min %8.3f  p90 %8.3f\n",
              record, *std::min_element(record_ms.begin(), record_ms.end()), Percentile(record_ms, 0.9));
  std::printf("  baseline: the same keys read raw %8.3f ms (scans + %zu point reads), SHA-256 token alone %8.3f ms\n", raw,
              ids.size(), hash);
  if (f.Has("json"))
    AppendLine(f.Get("json"), Fmt("{\"kind\":\"token_cost\",\"declarations\":%zu,\"cold_ms\":%.3f,\"cached_ms\":%.4f,"
                                  "\"token_record_ms\":%.4f,\"raw_reads_ms\":%.3f,\"hash_ms\":%.3f}",
                                  items, cold, warm, record, raw, hash));
  const std::string base = Fmt("raw reads %.2f ms, hash %.3f ms", raw, hash);
  std::printf("  other processes used %s of CPU during these measurements\n", others.Text().c_str());
  SummaryRow(summary, Fmt("token over %zu declarations, cold", items), Fmt("%.2f ms", cold), "<= 5 ms",
             PassFail(cold <= 5.0), base, others.Text());
  SummaryRow(summary, Fmt("token over %zu declarations, cached", items), Fmt("%.4f ms", warm), "<= 0.05 ms",
             PassFail(warm <= 0.05), base, others.Text());
  fs::remove_all(dir, ec);
  return 0;
}

// ---------------------------------------------------------------- fanout

int FanOut(const Flags& f) {
  const uint64_t n = static_cast<uint64_t>(f.GetInt("enrollments", 100000));
  auto design = ListDesign::Make(static_cast<size_t>(f.GetInt("lists", 100)));
  const std::string summary = f.Get("summary");
  if (!design.ok() || n == 0) {
    std::fputs("bench_ddm fanout: --enrollments N (>0) and --lists 1..190\n", stderr);
    return 2;
  }
  World w;
  Status st = w.Open(WorkDir(f, "fanout"));
  uint64_t t0 = NowNs();
  if (st.ok()) st = w.Seed(n);
  const double seed_s = SecondsSince(t0);
  double assign_s = 0;
  if (st.ok()) st = SeedDesign(w.store.get(), *design, n, &assign_s);
  if (!st.ok()) {
    std::fprintf(stderr, "bench_ddm fanout: setup: %s\n", st.message().c_str());
    return 1;
  }
  std::fprintf(stderr, "bench_ddm fanout: %" PRIu64 " enrollments in %.1f s; 3 sets each (%zu lists) in %.1f s\n", n,
               seed_s, design->lists, assign_s);
  const std::string edited = ListDesign::CommonConfig(1);
  std::vector<std::string> ids;
  ids.reserve(n);
  for (uint64_t i = 0; i < n; ++i) ids.push_back(DeviceUdid(i));

  // 1. The token computation alone: DeclarationStore::Put into a batch that is dropped.
  const Interference others;
  double dry_s = 0;
  size_t dry_changes = 0;
  {
    auto d = orchard::ddm::ParseDeclaration(TestConfigurationJson(edited, 200, "dry"), w.ddm->declarations().limits());
    store::Batch scratch;
    t0 = NowNs();
    auto changes = w.ddm->declarations().Put(scratch, std::move(*d), "admin", NowMillis());
    dry_s = SecondsSince(t0);
    if (!changes.ok()) {
      std::fprintf(stderr, "bench_ddm fanout: %s\n", changes.status().message().c_str());
      return 1;
    }
    dry_changes = changes->size();
  }

  // 2. The edit through DdmService (admin path), twice: the second replaces the
  //    100k undelivered sync commands of the first.
  struct Edit {
    double seconds = 0, cpu = 0;
    orchard::ddm::WriteOutcome out;
    uint64_t pushes = 0;
  };
  std::vector<Edit> edits;
  for (int k = 0; k < 2; ++k) {
    Edit e;
    const uint64_t p0 = w.push.pushes();
    const double c0 = SelfCpuSeconds();
    t0 = NowNs();
    auto out = w.ddm->Put(TestConfigurationJson(edited, 200, Fmt("edit %d", k)), "admin", true);
    e.seconds = SecondsSince(t0);
    e.cpu = SelfCpuSeconds() - c0;
    if (!out.ok()) {
      std::fprintf(stderr, "bench_ddm fanout: edit %d: %s\n", k + 1, out.status().message().c_str());
      return 1;
    }
    e.out = *out;
    e.pushes = w.push.pushes() - p0;
    edits.push_back(e);
  }
  // Check: a sample enrollment holds one sync command whose Data is its current token.
  bool verified = true;
  for (uint64_t i : {uint64_t{0}, n / 2, n - 1}) {
    auto m = w.ddm->declarations().ManifestOf(DeviceUdid(i));
    auto q = w.queue->List(DeviceUdid(i), 100);
    size_t syncs = 0;
    bool match = false;
    if (m.ok() && q.ok())
      for (const auto& e : *q)
        if (e.request_type == "DeclarativeManagement") {
          ++syncs;
          auto p = plist::ParseXml(e.plist);
          const plist::Value* data = p.ok() ? p->Find("Command") : nullptr;
          data = data ? data->Find("Data") : nullptr;
          match = data && data->AsData() && data->AsData()->bytes == orchard::ddm::TokensResponseJson(*m);
        }
    verified = verified && syncs == 1 && match;
  }
  auto depth = w.queue->Depth();

  // 3. Baseline: one plain command to the same enrollments through the admin
  //    API's fan-out path (one transaction per enrollment), pushed.
  queue::NewCommand cmd;
  cmd.command_uuid = NewUuid();
  cmd.request_type = "DeviceInformation";
  cmd.plist = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict><key>Command</key><dict>"
              "<key>Queries</key><array><string>OSVersion</string></array><key>RequestType</key>"
              "<string>DeviceInformation</string></dict><key>CommandUUID</key><string>" +
              cmd.command_uuid + "</string></dict></plist>";
  const uint64_t p0 = w.push.pushes();
  t0 = NowNs();
  auto results = w.commands->Enqueue(ids, cmd, true);
  const double base_s = SecondsSince(t0);
  size_t base_ok = 0;
  for (const auto& r : results) base_ok += r.status.ok() ? 1 : 0;
  const uint64_t base_pushes = w.push.pushes() - p0;

  std::printf("fan-out: %" PRIu64 " enrollments, 3 sets each, %zu distinct set lists; in process, real RocksDB, "
              "DdmService + CommandService, counting push provider\n",
              n, design->lists);
  std::printf("  token recomputation only (DeclarationStore::Put, batch dropped): %.3f s, %zu tokens changed\n", dry_s,
              dry_changes);
  for (size_t k = 0; k < edits.size(); ++k)
    std::printf("  edit %zu (DdmService::Put, notify)%s: %.3f s (CPU %.2f s), tokens changed %zu, commands queued %zu, "
                "pushed %zu (provider counted %" PRIu64 ")\n",
                k + 1, k ? ", replacing the pending sync commands" : "", edits[k].seconds, edits[k].cpu,
                edits[k].out.tokens_changed, edits[k].out.commands_queued, edits[k].out.pushed, edits[k].pushes);
  std::printf("  check: sample enrollments hold one sync command with their current token: %s; queue depth %" PRId64 "\n",
              verified ? "yes" : "NO", depth.ok() ? *depth : -1);
  std::printf("  baseline: one DeviceInformation to the same %" PRIu64 " through CommandService::Enqueue (pushed): "
              "%.3f s, %zu queued, %" PRIu64 " pushes\n",
              n, base_s, base_ok, base_pushes);
  std::printf("  other processes used %s of CPU during these measurements\n", others.Text().c_str());
  if (f.Has("json"))
    AppendLine(f.Get("json"),
               Fmt("{\"kind\":\"fanout\",\"enrollments\":%" PRIu64 ",\"dry_s\":%.3f,\"edit1_s\":%.3f,\"edit2_s\":%.3f,"
                   "\"tokens\":%zu,\"commands\":%zu,\"pushes\":%" PRIu64 ",\"baseline_s\":%.3f,\"verified\":%s}",
                   n, dry_s, edits[0].seconds, edits[1].seconds, edits[0].out.tokens_changed,
                   edits[0].out.commands_queued, edits[0].pushes, base_s, verified ? "true" : "false"));
  const bool complete = verified && edits[0].out.tokens_changed == n && edits[0].out.commands_queued == n &&
                        edits[0].pushes == n;
  const std::string base = Fmt("plain command to the same %" PRIu64 ": %.2f s", n, base_s);
  for (size_t k = 0; k < edits.size(); ++k) {
    const bool all = verified && edits[k].out.tokens_changed == n && edits[k].out.commands_queued == n &&
                     edits[k].pushes == n;
    SummaryRow(summary,
               Fmt("fan-out edit %zu -> %" PRIu64 " tokens+commands+pushes%s", k + 1, n,
                   k ? " (replaces pending)" : ""),
               Fmt("%.2f s%s", edits[k].seconds, all ? "" : " (INCOMPLETE)"), "<= 5 s",
               PassFail(all && edits[k].seconds <= 5.0), base, others.Text());
  }
  return complete ? 0 : 1;
}

// ---------------------------------------------------------------- policy

namespace {

const char* kNoopStatusPolicy = R"(policy { name = "bench-noop-status", description = "no-op on_status", version = "1" }
policy:on_status("device.operating-system.version", function(ctx, change) end)
)";

struct PolicyHost {
  std::unique_ptr<automation::Runner> runner;
  std::unique_ptr<policy::PolicySet> policies;

  Status Start(World& w, const std::string& dir) {
    runner = std::make_unique<automation::Runner>(automation::RunnerOptions{}, w.source.get(), w.committer.get());
    policy::PolicySetOptions pso;
    pso.dir = dir;
    pso.watch_interval_ms = 0;
    policies = std::make_unique<policy::PolicySet>(pso, runner.get(), w.automation.get(), w.scheduler.get());
    ORCHARD_RETURN_IF_ERROR(policies->Start());
    for (const auto& p : policies->List())
      if (!p.loaded) return Status::InvalidArgument("policy " + p.name + " did not load: " + p.load_error);
    return Status::Ok();
  }
  uint64_t Handled() {
    uint64_t h = 0;
    for (const auto& s : runner->Statuses()) h += s.handled;
    return h;
  }
  void Stop() {
    if (policies) policies->Stop();
    if (runner) runner->Stop();
    policies.reset();
    runner.reset();
  }
};

struct Drain {
  uint64_t handled = 0;
  double seconds = 0, cpu = 0;
  uint64_t failed = 0, parked = 0;
  bool ok = false;
};

// Starts the policies of dir on w's backlog (their checkpoints were saved
// before it) and times them until every event is handled and committed.
Drain RunDrain(World& w, const std::string& dir) {
  Drain d;
  PolicyHost h;
  const double c0 = SelfCpuSeconds();
  const uint64_t t0 = NowNs();
  Status st = h.Start(w, dir);
  if (!st.ok()) {
    std::fprintf(stderr, "bench_ddm policy: %s\n", st.message().c_str());
    return d;
  }
  uint64_t last = 0, last_ns = t0;
  const uint64_t deadline = t0 + 600ull * 1000000000ull;
  while (NowNs() < deadline) {
    const uint64_t now_handled = h.Handled();
    if (now_handled != last) {
      last = now_handled;
      last_ns = NowNs();
    }
    // Caught up: every consumer committed everything up to the log's head.
    if (now_handled > 0 && h.runner->WaitCaughtUp(std::chrono::milliseconds(0))) {
      d.ok = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  d.handled = h.Handled();
  if (d.handled != last) last_ns = NowNs();
  d.seconds = static_cast<double>(last_ns - t0) / 1e9;
  d.cpu = SelfCpuSeconds() - c0;
  for (const auto& s : h.runner->Statuses()) {
    d.failed += s.failed;
    d.parked += s.parked;
    if (s.failed || s.parked)
      std::fprintf(stderr, "  %s: %" PRIu64 " failed, %" PRIu64 " parked; last error: %s\n", s.name.c_str(), s.failed,
                   s.parked, s.last_error.c_str());
  }
  h.Stop();
  return d;
}

}  // namespace

int Policy(const Flags& f) {
  const uint64_t devices = static_cast<uint64_t>(f.GetInt("devices", 20000));
  const uint64_t reports = static_cast<uint64_t>(f.GetInt("reports", 200000));
  const std::string policy_file = f.Get("policy", std::string(ORCHARD_SOURCE_DIR) + "/policies/min-os-ddm.lua");
  const std::string summary = f.Get("summary");
  const std::string work = WorkDir(f, "policy");
  World w;
  Status st = w.Open(work + "/data");
  if (st.ok()) st = w.Seed(devices);
  if (!st.ok()) {
    std::fprintf(stderr, "bench_ddm policy: setup: %s\n", st.message().c_str());
    return 1;
  }
  std::error_code ec;
  const std::string noop_dir = work + "/policies-noop", minos_dir = work + "/policies-min-os-ddm";
  fs::create_directories(noop_dir, ec);
  fs::create_directories(minos_dir, ec);
  std::ofstream(noop_dir + "/bench_noop_status.lua") << kNoopStatusPolicy;
  fs::copy_file(policy_file, minos_dir + "/min-os-ddm.lua", fs::copy_options::overwrite_existing, ec);
  if (ec) {
    std::fprintf(stderr, "bench_ddm policy: copy %s: %s\n", policy_file.c_str(), ec.message().c_str());
    return 1;
  }
  // Both consumers register (checkpoint at the empty log's head) and stop.
  for (const auto& dir : {noop_dir, minos_dir}) {
    PolicyHost h;
    st = h.Start(w, dir);
    h.Stop();
    if (!st.ok()) {
      std::fprintf(stderr, "bench_ddm policy: %s\n", st.message().c_str());
      return 1;
    }
  }
  // The backlog, through the real status check-in (parse, merge, events, one
  // transaction per report): report k is device k % devices's; its version
  // alternates 26.1 / 26.2 (at or above the floor 26.1), so every report is one
  // ddm.status.changed of device.operating-system.version (the first round
  // also reports the family, iOS).
  const uint64_t head0 = w.events->Watermark();
  uint64_t t0 = NowNs();
  for (uint64_t k = 0; k < reports; ++k) {
    const uint64_t device = k % devices;
    const bool first_round = k < devices;
    const char* v = (k / devices) % 2 == 0 ? "26.1" : "26.2";
    std::string body = std::string(R"({"StatusItems":{"device":{"operating-system":{)") +
                       (first_round ? R"("family":"iOS",)" : "") + R"("version":")" + v +
                       R"("}}},"Errors":[],"FullReport":false})";
    protocol::DeclarativeRequest req;
    req.enrollment_id = DeviceUdid(device);
    req.device_id = req.enrollment_id;
    req.endpoint = "status";
    req.data = std::move(body);
    req.has_data = true;
    protocol::DeviceResponse resp = w.ddm->Checkin(req);
    if (resp.status != 200) {
      std::fprintf(stderr, "bench_ddm policy: report %" PRIu64 " answered %d: %s\n", k, resp.status,
                   resp.error.c_str());
      return 1;
    }
  }
  const double report_rate = static_cast<double>(reports) / SecondsSince(t0);
  const uint64_t events = w.events->Watermark() - head0;
  std::fprintf(stderr, "bench_ddm policy: %" PRIu64 " status reports -> %" PRIu64 " events, %.0f reports/s\n", reports,
               events, report_rate);

  const Interference others;
  Drain noop = RunDrain(w, noop_dir);
  Drain minos = RunDrain(w, minos_dir);
  auto counts = w.automation->ComplianceCounts(policy::PolicySet::ConsumerName("min-os-ddm"));
  std::string compliance;
  if (counts.ok())
    for (const auto& [status, c] : *counts) compliance += Fmt("%s%s=%" PRId64, compliance.empty() ? "" : " ", status.c_str(), c);
  const double noop_rate = noop.seconds > 0 ? static_cast<double>(noop.handled) / noop.seconds : 0;
  const double minos_rate = minos.seconds > 0 ? static_cast<double>(minos.handled) / minos.seconds : 0;
  std::printf("policy: %" PRIu64 " devices, %" PRIu64 " status reports (versions 26.1/26.2, floor 26.1) -> %" PRIu64
              " ddm.status.changed events; in process, real RocksDB, Runner + Lua + StoreCommitter\n",
              devices, reports, events);
  std::printf("  status check-ins (DdmService::Checkin, 1 thread, no consumer running): %.0f reports/s\n", report_rate);
  std::printf("  %-22s handled %8" PRIu64 " in %.3f s: %8.0f events/s (CPU %.2f s)%s\n", "no-op on_status (base)",
              noop.handled, noop.seconds, noop_rate, noop.cpu, noop.ok ? "" : " (DID NOT CATCH UP)");
  std::printf("  %-22s handled %8" PRIu64 " in %.3f s: %8.0f events/s (CPU %.2f s)%s\n", "min-os-ddm.lua",
              minos.handled, minos.seconds, minos_rate, minos.cpu, minos.ok ? "" : " (DID NOT CATCH UP)");
  std::printf("  min-os-ddm compliance: %s\n", compliance.c_str());
  std::printf("  other processes used %s of CPU during the two drains\n", others.Text().c_str());
  if (f.Has("json"))
    AppendLine(f.Get("json"), Fmt("{\"kind\":\"policy\",\"devices\":%" PRIu64 ",\"events\":%" PRIu64
                                  ",\"report_rate\":%.0f,\"noop_rate\":%.0f,\"min_os_rate\":%.0f,\"min_os_handled\":%" PRIu64
                                  ",\"failed\":%" PRIu64 "}",
                                  devices, events, report_rate, noop_rate, minos_rate, minos.handled, minos.failed));
  const bool ok = minos.ok && minos.failed == 0 && minos.parked == 0;
  SummaryRow(summary, "min-os-ddm.lua, ddm.status.changed at/above floor", Fmt("%.0f events/s%s", minos_rate, ok ? "" : " (errors)"),
             ">= 10,000/s", PassFail(ok && minos_rate >= 10000), Fmt("no-op Lua policy %.0f/s", noop_rate), others.Text());
  fs::remove_all(work, ec);
  return ok && noop.ok ? 0 : 1;
}

}  // namespace orchard::bench::ddm

int main(int argc, char** argv) {
  using namespace orchard::bench;
  Flags f(argc, argv,
          {"data-dir", "devices", "declarations", "enrollments", "lists", "work", "sets", "repeat", "calls", "reports",
           "policy", "json", "summary", "port", "host", "identities", "full-devices", "duration", "warmup", "rounds",
           "server-pid", "threads", "paced-seconds", "incr-rate", "full-rate", "kinds", "help!"});
  const std::string mode = f.positional().empty() ? "" : f.positional()[0];
  if (!f.ok() || f.Has("help") || mode.empty()) {
    if (!f.ok()) std::fprintf(stderr, "bench_ddm: %s\n", f.error().c_str());
    std::fputs(
        "usage: bench_ddm seed-http --data-dir D --devices N [--declarations 50]\n"
        "       bench_ddm http --port P --identities DIR --devices N [--full-devices 32] [--duration 8]\n"
        "                  [--warmup 2] [--rounds 2] [--paced-seconds 10] [--incr-rate 2500] [--full-rate 250]\n"
        "                  [--server-pid PID] [--threads 1] [--kinds idle,tokens,items,declaration,status,full]\n"
        "       bench_ddm seed-sets --data-dir D --enrollments N [--lists 100]\n"
        "       bench_ddm token-cost [--work DIR] [--declarations 10000] [--sets 10] [--repeat 5] [--calls 20]\n"
        "       bench_ddm fanout [--work DIR] [--enrollments 100000] [--lists 100]\n"
        "       bench_ddm policy [--work DIR] [--devices 20000] [--reports 200000] [--policy FILE]\n"
        "  every mode: [--json FILE] (JSON lines) [--summary FILE] (summary rows, TSV)\n",
        stderr);
    return f.Has("help") ? 0 : 2;
  }
  orchard::log::Configure(orchard::log::Level::kError);
  using namespace orchard::bench::ddm;
  if (mode == "seed-http") return SeedHttp(f);
  if (mode == "http") return RunHttp(f);
  if (mode == "seed-sets") return SeedSets(f);
  if (mode == "token-cost") return TokenCost(f);
  if (mode == "fanout") return FanOut(f);
  if (mode == "policy") return Policy(f);
  std::fprintf(stderr, "bench_ddm: unknown mode %s\n", mode.c_str());
  return 2;
}
