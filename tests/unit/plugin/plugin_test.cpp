// The plugin loader and host on the real automation host: the test plugins
// (tests/unit/plugin/*.c, *.cpp) are loaded from a temp directory, driven
// directly (Consumer::Handle over a MemoryHost) and through the real Runner +
// StoreCommitter on RocksDB.
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "automation/store_host.h"
#include "ddm/service.h"
#include "domain/commands.h"
#include "orchard/plugin.h"
#include "plist/plist.h"
#include "plugin/plugin_set.h"
#include "support/store_world.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::automation;
using orchard::plugin::LoadError;
using orchard::plugin::PluginSet;
using orchard::plugin::PluginSetOptions;
using orchard::plugin::PluginState;
using orchard::plugin::PluginStatus;
namespace fs = std::filesystem;

namespace {

using testing::RecordingPush;

// The automation host on a real RocksDB in a temp dir.
struct Host : testing::StoreWorld {
  AutomationStore automation{db.get(), &enrollments, &queue};
  StoreCommitter committer{{&automation, log.get(), &commands, &enrollments, &locks}};
  LogSource source{log.get()};

  Host() : StoreWorld("orchard-plugin") {}
  void Emit(const std::string& type, const std::string& device) {
    events::Transaction tx(log.get());
    events::Event ev;
    ev.type = type;
    ev.enrollment_id = device;
    tx.Emit(ev);
    REQUIRE(log->Commit(tx).ok());
  }
  std::string Kv(const std::string& consumer, const std::string& key) {
    auto v = automation.KvGet(consumer, key);
    REQUIRE(v.ok());
    return v->value_or("<absent>");
  }
};

RunnerOptions Fast(int max_attempts = 3) {
  RunnerOptions o;
  o.commit_interval_ms = 20;
  o.poll_ms = 20;
  o.host_retry_ms = 5;
  o.max_attempts = max_attempts;
  return o;
}

// A private plugin directory (mode 0700) holding copies of the given plugins (mode 0755).
struct PluginDir {
  std::string path = testing::MakeTempDir("orchard-plugins");
  explicit PluginDir(std::initializer_list<const char*> sos, mode_t mode = 0755) {
    for (const char* so : sos) Add(so, mode);
  }
  std::string Add(const char* so, mode_t mode = 0755) {
    const std::string to = path + "/" + fs::path(so).filename().string();
    fs::copy_file(so, to, fs::copy_options::overwrite_existing);
    REQUIRE(chmod(to.c_str(), mode) == 0);
    return to;
  }
  ~PluginDir() { fs::remove_all(path); }
};

const PluginStatus* Find(const std::vector<PluginStatus>& list, const std::string& name) {
  for (const auto& s : list)
    if (s.name == name) return &s;
  return nullptr;
}

}  // namespace

TEST_CASE("plugin: enqueue and kv writes commit with the checkpoint through the real runner on RocksDB",
          "[plugin]") {
  Host h;
  h.Enroll("D1");
  Runner runner(Fast(), &h.source, &h.committer);
  PluginDir dir({TP_FULL});
  PluginSetOptions o;
  o.dir = dir.path;
  o.configs["full"] = R"({"greeting":"hello"})";
  PluginSet plugins(o, &runner);
  REQUIRE(plugins.Start().ok());
  auto list = plugins.List();
  REQUIRE(list.size() == 1);
  CHECK(list[0].name == "full");
  CHECK(list[0].version == "1.2.3");
  CHECK(list[0].state == PluginState::kLoaded);
  CHECK(list[0].abi == "1.1");
  CHECK(list[0].http);
  CHECK(list[0].schedules == std::vector<std::string>{"hourly every 3600000ms"});
  CHECK(list[0].lanes == 2);

  h.Emit(ORCHARD_EVENT_ENROLLMENT_ENROLLED, "D1");
  h.Emit(ORCHARD_EVENT_DEVICE_IDLE, "D1");  // not subscribed
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(20)));

  const std::string c = "plugin:full";
  CHECK(h.Kv(c, "count") == "1");
  CHECK(h.Kv(c, "type") == "enrollment.enrolled");
  CHECK(h.Kv(c, "config") == R"({"greeting":"hello"})");
  CHECK(h.Kv(c, "tmp") == "<absent>");
  CHECK(h.Kv(c, "bad_enqueue") == "refused");
  auto device = plist::ParseJson(h.Kv(c, "device"));
  REQUIRE(device.ok());
  CHECK(device->GetString("serial_number") == "SER-D1");
  CHECK(device->Find("push_magic") == nullptr);
  CHECK(h.Kv(c, "last_result") == "none");

  // The two commands are queued, with the UUIDs the plugin was given.
  auto queued = h.queue.List("D1", 10).value();
  REQUIRE(queued.size() == 2);
  std::set<std::string> uuids;
  for (const auto& q : queued) {
    uuids.insert(q.command_uuid);
    CHECK(q.origin == c);
  }
  CHECK(uuids == std::set<std::string>{h.Kv(c, "uuid1"), h.Kv(c, "uuid2")});
  // The first one wakes the device, ORCHARD_ENQUEUE_NO_PUSH does not, push() does.
  {
    std::lock_guard lock(h.push.mu);
    CHECK(!h.push.pushed.empty());
  }
  // The checkpoint was written in the same transaction, past the event.
  auto cps = h.log->LaneCheckpoints(c, 0).value();
  uint64_t highest = 0;
  for (const auto& [lane, cp] : cps) highest = std::max(highest, cp.seq);
  CHECK(highest >= 1);
  // A decision record names the commands.
  auto recs = h.automation.Records("dl", c, "", "", 10).value();
  REQUIRE(recs.items.size() == 1);
  CHECK(recs.items[0].Find("commands")->AsArray()->size() == 2);

  // A second event of the device: the counter reads back the committed value.
  h.Emit(ORCHARD_EVENT_ENROLLMENT_ENROLLED, "D1");
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(20)));
  CHECK(h.Kv(c, "count") == "2");
  CHECK(h.queue.List("D1", 10).value().size() == 4);
  list = plugins.List();
  CHECK(list[0].handled == 2);
  CHECK(list[0].errors == 0);
  plugins.Stop();
  runner.Stop();
}

TEST_CASE("plugin: every host read through Handle on a memory host", "[plugin]") {
  Host h;
  Runner runner(Fast(), &h.source, &h.committer);
  PluginDir dir({TP_FULL});
  PluginSet plugins({}, &runner);
  REQUIRE(plugins.Load(dir.path + "/tp_full.so").ok());
  auto consumer = plugins.ConsumerOf("full");
  REQUIRE(consumer);
  CHECK(consumer->name() == "plugin:full");

  MemoryHost mem;
  store::Enrollment e;
  e.id = "D7";
  e.serial = "S7";
  mem.PutDevice(e);
  store::CommandResult r;
  r.command_uuid = "U-1";
  r.request_type = "DeviceInformation";
  r.status = "Acknowledged";
  r.raw = "<plist><dict><key>Status</key><string>Acknowledged</string></dict></plist>";
  mem.PutResult("D7", r);
  Decisions seed;
  seed.kv.push_back({"count", std::string("41")});
  mem.Commit("plugin:full", seed);

  events::Event ev;
  ev.seq = 9;
  ev.type = ORCHARD_EVENT_COMMAND_ACKNOWLEDGED;
  ev.enrollment_id = "D7";
  ev.command_uuid = "U-1";
  ev.request_type = "DeviceInformation";
  ev.payload_json = R"({"Status":"Acknowledged","UDID":"D7"})";
  CHECK(consumer->Wants(ev));
  events::Event idle = ev;
  idle.type = ORCHARD_EVENT_DEVICE_IDLE;
  CHECK_FALSE(consumer->Wants(idle));

  Decisions out;
  bool dry = true;
  auto outcome = consumer->Handle(0, ev, "0.9", &mem, &out, &dry);
  REQUIRE(outcome.ok());
  CHECK_FALSE(dry);
  CHECK(out.commands.empty());  // only enrollment.enrolled enqueues
  std::map<std::string, std::optional<std::string>> kv;
  for (auto& w : out.kv) kv[w.key] = w.value;
  CHECK(kv["count"] == "42");
  CHECK(kv["cursor"] == "0.9");
  CHECK(kv["config"] == "{}");
  CHECK_FALSE(kv["tmp"].has_value());
  CHECK(kv["last_result_raw"] == r.raw);
  auto result = plist::ParseJson(*kv["last_result"]);
  REQUIRE(result.ok());
  CHECK(result->GetString("command_uuid") == "U-1");
  CHECK(result->Find("response")->GetString("Status") == "Acknowledged");
  CHECK(kv["payload"] == ev.payload_json);
  REQUIRE(kv["raw_plist"].has_value());
  auto raw = plist::ParseXml(*kv["raw_plist"]);
  REQUIRE(raw.ok());
  CHECK(raw->GetString("UDID") == "D7");
  auto device = plist::ParseJson(*kv["device"]);
  REQUIRE(device.ok());
  CHECK(device->GetString("serial_number") == "S7");

  // The derived CommandUUIDs are the same on redelivery.
  events::Event enrolled = ev;
  enrolled.type = ORCHARD_EVENT_ENROLLMENT_ENROLLED;
  Decisions a, b;
  REQUIRE(consumer->Handle(1, enrolled, "0.10", &mem, &a, &dry).ok());
  REQUIRE(consumer->Handle(1, enrolled, "0.10", &mem, &b, &dry).ok());
  REQUIRE(a.commands.size() == 2);
  CHECK(a.commands[0].command_uuid == b.commands[0].command_uuid);
  CHECK(a.commands[0].request_type == "DeviceInformation");
  CHECK(a.commands[0].priority == 5);
  CHECK(a.commands[0].push);
  CHECK(a.commands[1].request_type == "SecurityInfo");
  CHECK_FALSE(a.commands[1].push);
  auto plist = plist::ParseXml(a.commands[0].plist);
  REQUIRE(plist.ok());
  CHECK(plist->GetString("CommandUUID") == a.commands[0].command_uuid);
  CHECK(plist->Find("Command")->Find("Queries")->AsArray()->size() == 1);
  CHECK(a.pushes == std::vector<std::string>{"D7"});
  plugins.Stop();
  CHECK(plugins.ConsumerOf("full") == nullptr);
}

TEST_CASE("plugin: refusals name the reason with an error code", "[plugin]") {
  Host h;
  Runner runner(Fast(), &h.source, &h.committer);
  PluginDir dir({TP_MAJOR, TP_MINOR, TP_NOENTRY});
  const std::string writable = dir.path + "/writable.so";
  fs::copy_file(TP_FULL, writable);
  REQUIRE(chmod(writable.c_str(), 0666) == 0);
  const std::string group = dir.path + "/group.so";
  fs::copy_file(TP_FULL, group);
  REQUIRE(chmod(group.c_str(), 0775) == 0);
  const std::string garbage = dir.path + "/garbage.so";
  REQUIRE(testing::WriteFile(garbage, "not an ELF file"));
  REQUIRE(chmod(garbage.c_str(), 0755) == 0);

  PluginSetOptions o;
  o.dir = dir.path;
  PluginSet plugins(o, &runner);
  REQUIRE(plugins.Start().ok());  // refusals of single files do not fail the start
  auto list = plugins.List();
  REQUIRE(list.size() == 6);
  for (const auto& s : list) CHECK(s.state == PluginState::kRefused);

  const auto* major = Find(list, "tp_major");
  REQUIRE(major);
  CHECK(major->error == LoadError::kAbiMajor);
  CHECK(major->abi == "2.0");
  CHECK_THAT(major->message, Catch::Contains("ABI 2.0") && Catch::Contains("1.x"));

  const auto* minor = Find(list, "tp_minor");
  REQUIRE(minor);
  CHECK(minor->error == LoadError::kAbiMinor);
  CHECK_THAT(minor->message, Catch::Contains("needs plugin ABI 1.7") && Catch::Contains("provides plugin ABI 1.2") &&
                                 Catch::Contains("lacks what ABI 1.3 to 1.7 added"));

  const auto* noentry = Find(list, "tp_noentry");
  REQUIRE(noentry);
  CHECK(noentry->error == LoadError::kNoEntry);
  CHECK_THAT(noentry->message, Catch::Contains("orchard_plugin_init"));

  const auto* ww = Find(list, "writable");
  REQUIRE(ww);
  CHECK(ww->error == LoadError::kInsecureFile);
  CHECK_THAT(ww->message, Catch::Contains("0666"));
  const auto* gw = Find(list, "group");
  REQUIRE(gw);
  CHECK(gw->error == LoadError::kInsecureFile);

  const auto* bad = Find(list, "garbage");
  REQUIRE(bad);
  CHECK(bad->error == LoadError::kOpen);

  // The Status of a direct load carries a code too.
  Status st = plugins.Load(writable);
  CHECK(st.code() == Code::kPermissionDenied);
  CHECK(plugins.Load(dir.path + "/tp_major.so").code() == Code::kInvalidArgument);
  CHECK(plugins.Load(dir.path + "/missing.so").code() == Code::kNotFound);
  // Nothing runs.
  CHECK(runner.Statuses().empty());
}

TEST_CASE("plugin: a directory writable by others, a duplicate name and a failing init are refused", "[plugin]") {
  Host h;
  Runner runner(Fast(), &h.source, &h.committer);
  {
    PluginDir dir({TP_FULL});
    REQUIRE(chmod(dir.path.c_str(), 0777) == 0);
    PluginSetOptions o;
    o.dir = dir.path;
    PluginSet plugins(o, &runner);
    Status st = plugins.Start();
    CHECK(st.code() == Code::kPermissionDenied);
    CHECK(plugins.List().empty());
  }
  {
    PluginDir dir({TP_FULL});
    const std::string copy = dir.path + "/copy.so";
    fs::copy_file(TP_FULL, copy);
    REQUIRE(chmod(copy.c_str(), 0755) == 0);
    PluginSetOptions o;
    o.dir = dir.path;
    PluginSet plugins(o, &runner);
    REQUIRE(plugins.Start().ok());
    auto list = plugins.List();
    REQUIRE(list.size() == 2);
    // copy.so sorts first and wins the name.
    CHECK(list[0].state == PluginState::kLoaded);
    CHECK(list[1].error == LoadError::kDuplicate);
    CHECK(runner.Statuses().size() == 1);
    plugins.Stop();
    CHECK(runner.Statuses().empty());
  }
  {
    PluginDir dir({TP_FULL});
    PluginSetOptions o;
    o.dir = dir.path;
    o.configs["full"] = R"({"fail":1})";
    PluginSet plugins(o, &runner);
    REQUIRE(plugins.Start().ok());
    auto list = plugins.List();
    REQUIRE(list.size() == 1);
    CHECK(list[0].state == PluginState::kError);
    CHECK(list[0].error == LoadError::kInitFailed);
    CHECK_THAT(list[0].message, Catch::Contains("init returned failed"));
    CHECK(runner.Statuses().empty());
  }
}

TEST_CASE("plugin: a hook that returns an error fails the run, which is retried then parked", "[plugin]") {
  Host h;
  h.Enroll("D1");
  Runner runner(Fast(2), &h.source, &h.committer);
  PluginDir dir({TP_FAIL, TP_FULL});
  PluginSetOptions o;
  o.dir = dir.path;
  PluginSet plugins(o, &runner);
  REQUIRE(plugins.Start().ok());
  h.Emit(ORCHARD_EVENT_ENROLLMENT_ENROLLED, "D1");
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(20)));

  auto list = plugins.List();
  const auto* failing = Find(list, "failing");
  REQUIRE(failing);
  CHECK(failing->state == PluginState::kLoaded);
  CHECK(failing->errors == 2);
  CHECK(failing->parked == 1);
  CHECK_THAT(failing->last_error, Catch::Contains("plugin_error") && Catch::Contains("deliberate failure"));
  // Its writes were dropped; the parked event is recorded.
  CHECK(h.Kv("plugin:failing", "never") == "<absent>");
  auto parked = h.automation.Records("pk", "plugin:failing", "", "", 10).value();
  REQUIRE(parked.items.size() == 1);
  // The other plugin is unaffected.
  CHECK(h.Kv("plugin:full", "count") == "1");
  CHECK(Find(list, "full")->errors == 0);
  plugins.Stop();
  runner.Stop();
}

TEST_CASE("plugin: an exception thrown through plugin.hpp becomes an error code and the host carries on",
          "[plugin]") {
  Host h;
  h.Enroll("D1");
  Runner runner(Fast(2), &h.source, &h.committer);
  PluginDir dir({TP_THROW, TP_FULL});
  PluginSetOptions o;
  o.dir = dir.path;
  PluginSet plugins(o, &runner);
  REQUIRE(plugins.Start().ok());
  auto consumer = plugins.ConsumerOf("thrower");
  REQUIRE(consumer);
  MemoryHost mem;
  events::Event ev;
  ev.type = ORCHARD_EVENT_ENROLLMENT_ENROLLED;
  ev.enrollment_id = "D1";
  Decisions out;
  bool dry = false;
  auto outcome = consumer->Handle(0, ev, "0.1", &mem, &out, &dry);
  CHECK(outcome.error == RunError::kPlugin);
  CHECK_THAT(outcome.message, Catch::Contains("internal") && Catch::Contains("boom from the plugin"));
  CHECK(out.kv.empty());  // a failed run decides nothing
  ev.type = ORCHARD_EVENT_COMMAND_ACKNOWLEDGED;
  outcome = consumer->Handle(0, ev, "0.2", &mem, &out, &dry);
  CHECK(outcome.error == RunError::kPlugin);
  CHECK_THAT(outcome.message, Catch::Contains("unknown type"));

  // Through the runner: parked after the attempts; the other plugin runs on.
  h.Emit(ORCHARD_EVENT_ENROLLMENT_ENROLLED, "D1");
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(20)));
  auto list = plugins.List();
  CHECK(Find(list, "thrower")->parked == 1);
  CHECK(Find(list, "thrower")->version == "0.1");
  CHECK(h.Kv("plugin:full", "count") == "1");
  CHECK(h.queue.List("D1", 10).value().size() == 2);
  plugins.Stop();
  runner.Stop();
}

namespace {
// A host whose key-value reads fail (storage trouble).
class FailingKv : public MemoryHost {
 public:
  Result<std::optional<std::string>> KvGet(const std::string&, const std::string&) override {
    return Status::Io("disk on fire");
  }
};
}  // namespace

TEST_CASE("plugin: a failed host read passed on as ORCHARD_ERR_HOST is a host failure, not the event's",
          "[plugin]") {
  Host h;
  Runner runner(Fast(), &h.source, &h.committer);
  PluginDir dir({TP_FULL});
  PluginSet plugins({}, &runner);
  REQUIRE(plugins.Load(dir.path + "/tp_full.so").ok());
  auto consumer = plugins.ConsumerOf("full");
  REQUIRE(consumer);
  FailingKv failing;
  events::Event ev;
  ev.type = ORCHARD_EVENT_ENROLLMENT_ENROLLED;
  ev.enrollment_id = "D1";
  Decisions out;
  bool dry = false;
  auto outcome = consumer->Handle(0, ev, "0.1", &failing, &out, &dry);
  CHECK(outcome.error == RunError::kHost);  // retried with backoff by the runner, never parked
  CHECK_THAT(outcome.message, Catch::Contains("kv_get") && Catch::Contains("disk on fire"));
  CHECK(out.empty());

  // A plugin returning ORCHARD_ERR_HOST when no host call failed: a failed run of its own
  // (it cannot hold its lane forever).
  REQUIRE(plugins.Load(dir.Add(TP_HOSTLIE)).ok());
  auto liar = plugins.ConsumerOf("hostlie");
  REQUIRE(liar);
  MemoryHost mem;
  outcome = liar->Handle(0, ev, "0.1", &mem, &out, &dry);
  CHECK(outcome.error == RunError::kPlugin);
  CHECK_THAT(outcome.message, Catch::Contains("on_event returned host: deliberate failure"));
  CHECK(out.empty());
  plugins.Stop();
}

// ---- ABI 1.1: the namespace outside runs, routes, schedules ----

namespace {
using orchard::plugin::PluginHttpRequest;
using orchard::plugin::PluginHttpResponse;
using orchard::plugin::PluginSetDeps;

// Records what consumers declare.
class RecordingSchedules : public ScheduleRegistry {
 public:
  void SetSchedules(const std::string& consumer, const std::vector<ScheduleInfo>& s) override {
    std::lock_guard lock(mu);
    by_consumer[consumer] = s;
  }
  std::vector<ScheduleInfo> Of(const std::string& consumer) {
    std::lock_guard lock(mu);
    return by_consumer[consumer];
  }
  std::mutex mu;
  std::map<std::string, std::vector<ScheduleInfo>> by_consumer;
};

PluginHttpResponse Get(PluginSet& set, const std::string& path, size_t max_body = 1 << 20,
                       const std::string& method = "GET", const std::string& body = "",
                       const std::string& query = "") {
  PluginHttpRequest r;
  r.method = method;
  r.path = path;
  r.body = body;
  r.query = query;
  return set.Http("full", r, max_body);
}

std::string MemKv(MemoryHost& mem, const std::string& key) {
  auto v = mem.KvGet("plugin:full", key);
  REQUIRE(v.ok());
  return v->value_or("<absent>");
}

std::string Header(const PluginHttpResponse& r, const std::string& name) {
  for (const auto& [n, v] : r.headers)
    if (n == name) return v;
  return "<absent>";
}
}  // namespace

TEST_CASE("plugin: ABI 1.1 routes read and scan and write the plugin's committed namespace", "[plugin]") {
  Host h;
  Runner runner(Fast(), &h.source, &h.committer);
  MemoryHost mem;
  RecordingSchedules schedules;
  PluginDir dir({TP_FULL});
  PluginSet plugins({}, PluginSetDeps{&runner, &mem, &mem, &schedules});
  REQUIRE(plugins.Load(dir.path + "/tp_full.so").ok());

  auto r = Get(plugins, "/kv/w1");
  CHECK(r.status == 404);  // absent: the plugin passes ORCHARD_ERR_NOT_FOUND on

  r = Get(plugins, "/write", 1 << 20, "POST", "one");
  CHECK(r.status == 201);
  CHECK(r.body == "written");
  CHECK(MemKv(mem, "w1") == "one");
  CHECK(MemKv(mem, "w2") == "two");

  REQUIRE(mem.KvWriteNow("plugin:full", {{"w3", std::string("three")}, {"w4", std::string("four")}}).ok());
  r = Get(plugins, "/kv/w2");
  CHECK(r.status == 200);
  CHECK(r.body == "two");
  CHECK(r.content_type == "application/octet-stream");
  // Keys after "w0" with prefix "w", and the callback stops the scan after two.
  r = Get(plugins, "/scan");
  CHECK(r.status == 200);
  CHECK(r.body == "w1\nw2\n");
  // A second write deletes w3.
  REQUIRE(Get(plugins, "/write", 1 << 20, "POST", "uno").status == 201);
  CHECK(MemKv(mem, "w3") == "<absent>");
  CHECK(MemKv(mem, "w4") == "four");
  CHECK(MemKv(mem, "w1") == "uno");
  // Another plugin's namespace is not reachable: writes land under plugin:full only.
  auto other = mem.KvGet("plugin:other", "w1");
  REQUIRE(other.ok());
  CHECK_FALSE(other->has_value());
  plugins.Stop();
}

TEST_CASE("plugin: on_http answers and refusals and limits", "[plugin]") {
  Host h;
  Runner runner(Fast(), &h.source, &h.committer);
  MemoryHost mem;
  PluginDir dir({TP_FULL, TP_ABI10});
  PluginSet plugins({}, PluginSetDeps{&runner, &mem, &mem, nullptr});
  REQUIRE(plugins.Load(dir.path + "/tp_full.so").ok());

  auto r = Get(plugins, "/headers", 1 << 20, "GET", "", "a=1&b=%20");
  CHECK(r.status == 200);  // the plugin checked that framing headers, CR/LF, bad names and status 700 are refused
  CHECK(r.body == "a=1&b=%20");
  CHECK(Header(r, "X-Tp") == "yes");
  CHECK(r.headers.size() == 1);

  CHECK(Get(plugins, "/empty").status == 204);
  r = Get(plugins, "/bad");
  CHECK(r.status == 400);
  r = Get(plugins, "/fail");
  CHECK(r.status == 500);
  CHECK_THAT(r.body, Catch::Contains("failed"));
  r = Get(plugins, "/no/such/route");
  CHECK(r.status == 404);
  // A body over the limit is refused to the plugin (ORCHARD_ERR_LIMIT) and answered 500.
  r = Get(plugins, "/big", 1000);
  CHECK(r.status == 500);
  CHECK_THAT(r.body, Catch::Contains("exceeds"));
  // Under the limit the answer stands, whatever the plugin returns after it.
  CHECK(Get(plugins, "/big", 10000).status == 200);

  // No such plugin; a 1.0 plugin (no routes) loads on this 1.1 host and answers 404.
  PluginHttpRequest req;
  req.method = "GET";
  req.path = "/";
  CHECK(plugins.Http("nosuch", req, 1000).status == 404);
  REQUIRE(plugins.Load(dir.path + "/tp_abi10.so").ok());
  auto list = plugins.List();
  const PluginStatus* old = Find(list, "old");
  REQUIRE(old);
  CHECK(old->state == PluginState::kLoaded);
  CHECK(old->abi == "1.0");
  CHECK_FALSE(old->http);
  CHECK(old->schedules.empty());
  r = plugins.Http("old", req, 1000);
  CHECK(r.status == 404);
  CHECK_THAT(r.body, Catch::Contains("has no routes"));
  plugins.Stop();
  // Unloaded: no routes any more.
  CHECK(Get(plugins, "/empty").status == 404);
}

TEST_CASE("plugin: one on_http call per plugin at a time and the next gets 503 with Retry-After", "[plugin]") {
  Host h;
  Runner runner(Fast(), &h.source, &h.committer);
  MemoryHost mem;
  PluginDir dir({TP_FULL});
  PluginSet plugins({}, PluginSetDeps{&runner, &mem, &mem, nullptr});
  REQUIRE(plugins.Load(dir.path + "/tp_full.so").ok());
  PluginHttpResponse first;
  std::thread t([&] { first = Get(plugins, "/block"); });
  // Wait until the first call is inside the plugin (it writes "entered").
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (MemKv(mem, "entered") != "1" && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  REQUIRE(MemKv(mem, "entered") == "1");
  auto second = Get(plugins, "/empty");
  CHECK(second.status == 503);
  CHECK(Header(second, "Retry-After") == "1");
  REQUIRE(mem.KvWriteNow("plugin:full", {{"release", std::string("1")}}).ok());
  t.join();
  CHECK(first.status == 200);
  CHECK(first.body == "released");
  CHECK(Get(plugins, "/empty").status == 204);
  plugins.Stop();
}

TEST_CASE("plugin: an ABI 1.1 plugin's schedules are registered and its ticks reach on_event", "[plugin]") {
  Host h;
  Runner runner(Fast(), &h.source, &h.committer);
  MemoryHost mem;
  RecordingSchedules schedules;
  PluginDir dir({TP_FULL, TP_BADSCHED});
  PluginSet plugins({}, PluginSetDeps{&runner, &mem, &mem, &schedules});
  REQUIRE(plugins.Load(dir.path + "/tp_full.so").ok());
  auto s = schedules.Of("plugin:full");
  REQUIRE(s.size() == 1);
  CHECK(s[0].name == "hourly");
  CHECK(s[0].interval_ms == 3600000);
  CHECK(s[0].splay_ms == 60000);
  CHECK_FALSE(s[0].per_device);

  auto consumer = plugins.ConsumerOf("full");
  REQUIRE(consumer);
  events::Event tick;
  tick.type = ORCHARD_EVENT_SCHEDULE_TICK;
  tick.request_type = "plugin:full/hourly";
  tick.payload_json = R"({"period":3600000,"schedule":"hourly"})";
  CHECK(consumer->Wants(tick));  // not in its event_types, but its own timer
  CHECK(consumer->WantsType(ORCHARD_EVENT_SCHEDULE_TICK));
  events::Event others = tick;
  others.request_type = "plugin:fuller/hourly";
  CHECK_FALSE(consumer->Wants(others));  // another consumer's tick
  others.request_type = "policy:full/hourly";
  CHECK_FALSE(consumer->Wants(others));
  Decisions out;
  bool dry = false;
  auto outcome = consumer->Handle(0, tick, "0.9", &mem, &out, &dry);
  REQUIRE(outcome.error == RunError::kNone);
  REQUIRE(out.kv.size() == 1);
  CHECK(out.kv[0].key == "tick");
  CHECK(out.kv[0].value == tick.payload_json);

  // A schedule under a minute refuses the plugin, naming the field.
  CHECK_FALSE(plugins.Load(dir.path + "/tp_badsched.so").ok());
  auto list = plugins.List();
  const PluginStatus* bad = Find(list, "badsched");
  REQUIRE(bad);
  CHECK(bad->error == LoadError::kBadDescriptor);
  CHECK_THAT(bad->message, Catch::Contains("schedules[0]") && Catch::Contains("interval_ms"));
  CHECK(schedules.Of("plugin:badsched").empty());

  plugins.Stop();
  CHECK(schedules.Of("plugin:full").empty());  // unloading removes them
}

// ---- ABI 1.2: Declarative Device Management ----

TEST_CASE("plugin: ABI 1.2 DDM writes commit with the run and status reads answer", "[plugin][ddm]") {
  Host h;
  h.Enroll("D1");
  h.Enroll("D2");
  ddm::DdmService ddm_service(ddm::DdmOptions{},
                              ddm::DdmDeps{h.db.get(), h.log.get(), &h.queue, &h.enrollments, &h.locks, &h.commands});
  h.automation.SetDdm(&ddm_service);
  // D1 reports OS 26.0; D2 reports nothing.
  const std::string report = R"({"StatusItems":{"device":{"operating-system":{"version":"26.0"}}},"Errors":[]})";
  auto parsed = ddm::ParseStatusReport(report, ddm::StatusLimits{});
  REQUIRE(parsed.ok());
  store::Batch b;
  REQUIRE(ddm_service.status().Apply(b, "D1", *parsed, report, NowMillis()).ok());
  REQUIRE(h.db->Write(b).ok());

  Runner runner(Fast(), &h.source, &h.committer);
  PluginDir dir({TP_DDM});
  PluginSetOptions o;
  o.dir = dir.path;
  PluginSet plugins(o, &runner);
  REQUIRE(plugins.Start().ok());
  auto list = plugins.List();
  REQUIRE(list.size() == 1);
  CHECK(list[0].state == PluginState::kLoaded);
  CHECK(list[0].abi == "1.2");
  h.Emit(ORCHARD_EVENT_DDM_STATUS_CHANGED, "D1");
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(20)));
  const std::string c = "plugin:ddm";
  CHECK(h.Kv(c, "os") == "\"26.0\"");
  CHECK(h.Kv(c, "decl") == "none");
  CHECK(h.Kv(c, "bad_writes") == "refused");
  h.Emit(ORCHARD_EVENT_DDM_STATUS_CHANGED, "D2");
  REQUIRE(runner.WaitCaughtUp(std::chrono::seconds(20)));
  CHECK(h.Kv(c, "os") == "none");
  auto update = ddm_service.declarations().Get("plug.update").value();
  REQUIRE(update.has_value());
  CHECK(update->owner == c);
  auto m = ddm_service.declarations().ManifestOf("D1").value();
  CHECK(m.configurations.size() == 1);
  CHECK(m.activations.size() == 1);
  CHECK(ddm_service.declarations().ManifestOf("D2")->configurations.empty());
  size_t syncs = 0;
  for (const auto& q : h.queue.List("D1", 10).value()) syncs += q.request_type == "DeclarativeManagement";
  CHECK(syncs == 1);
  for (const auto& q : h.queue.List("D2", 10).value()) CHECK(q.request_type != "DeclarativeManagement");
  // Only D1's run wrote DDM.
  CHECK(h.automation.Records("dl", c, "D2", "", 10)->items.size() == 1);
  CHECK(h.automation.Records("dl", c, "D2", "", 10)->items[0].Find("ddm") == nullptr);
  auto recs = h.automation.Records("dl", c, "D1", "", 10).value();
  REQUIRE(recs.items.size() == 1);
  const plist::Value* ops = recs.items[0].Find("ddm");
  REQUIRE(ops != nullptr);
  REQUIRE(ops->AsArray()->size() == 5);
  for (const auto& op : *ops->AsArray()) CHECK(op.GetString("outcome") == "applied");
  runner.Stop();
}

TEST_CASE("plugin: ORCHARD_HOST_HAS tells a 1.2 plugin that a 1.1 host lacks the DDM calls", "[plugin][ddm]") {
  void* so = dlopen(TP_DDM, RTLD_NOW | RTLD_LOCAL);
  REQUIRE(so != nullptr);
  auto entry = reinterpret_cast<orchard_plugin_entry_fn>(dlsym(so, ORCHARD_PLUGIN_ENTRY));
  REQUIRE(entry != nullptr);
  // A 1.1 host's table ends before ddm_write: the plugin refuses itself.
  orchard_host_api old{};
  old.size = offsetof(orchard_host_api, ddm_write);
  old.abi_major = ORCHARD_PLUGIN_ABI_MAJOR;
  old.abi_minor = 1;
  const orchard_plugin_descriptor* desc = nullptr;
  CHECK(entry(&old, &desc) == ORCHARD_ERR_UNSUPPORTED);
  CHECK(desc == nullptr);
  // A full table with the DDM calls set: it loads.
  orchard_host_api full{};
  full.size = sizeof(orchard_host_api);
  full.abi_major = ORCHARD_PLUGIN_ABI_MAJOR;
  full.abi_minor = ORCHARD_PLUGIN_ABI_MINOR;
  full.ddm_write = [](orchard_run*, orchard_ddm_op, orchard_buf, orchard_buf) { return ORCHARD_OK; };
  full.ddm_status = [](orchard_run*, orchard_buf, orchard_buf, orchard_buf*) { return ORCHARD_OK; };
  full.ddm_declaration_status = [](orchard_run*, orchard_buf, orchard_buf, orchard_buf*) { return ORCHARD_OK; };
  REQUIRE(entry(&full, &desc) == ORCHARD_OK);
  REQUIRE(desc != nullptr);
  CHECK(desc->abi_minor == 2);
  dlclose(so);
}
