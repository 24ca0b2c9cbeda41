// The built inventory-export.so, loaded with dlopen and driven through a fake
// host table (in-memory key-value namespace with run-level commits, recorded
// commands, captured HTTP answers): events in, records and routes out, with
// no orchardd. The integration test (tests/integration/inventory_export_it.cpp)
// runs the same plugin in the real server.
#include <catch2/catch.hpp>

#include <dlfcn.h>

#include <cstdio>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "orchard/plugin.h"
#include "plist/plist.h"
#include "support/fixtures.h"
#include "support/orchardd_process.h"
#include "support/skip.h"
#include "support/strict_utf8.h"

using orchard::testing::FixturePath;
using orchard::testing::IsStrictUtf8;
using orchard::testing::ReadFile;

struct FakeHost;

struct orchard_plugin_ref {
  FakeHost* host;
};

struct orchard_run {
  FakeHost* host;
  const orchard_event* event;
  std::map<std::string, std::optional<std::string>> writes;  // nullopt = delete
  std::vector<std::pair<std::string, std::string>> commands;  // (request_type, fields_json)
  std::deque<std::string> out;                                 // host-owned buffers
  std::string error;
};

struct orchard_http_response {
  bool responded = false;
  int status = 0;
  std::string content_type, body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string Header(const std::string& name) const {
    for (const auto& [n, v] : headers)
      if (n == name) return v;
    return "";
  }
};

namespace {

orchard_buf B(const std::string& s) { return orchard_buf{s.data(), s.size()}; }
std::string S(orchard_buf b) { return b.len ? std::string(b.ptr, b.len) : std::string(); }

struct Command {
  std::string enrollment_id, request_type, fields_json;
};

}  // namespace

struct FakeHost {
  void* dl = nullptr;
  const orchard_plugin_descriptor* desc = nullptr;
  void* state = nullptr;
  orchard_host_api api{};
  orchard_plugin_ref ref{this};
  std::map<std::string, std::string> kv;        // committed
  std::map<std::string, std::string> devices;   // enrollment id -> device JSON
  std::vector<Command> queued;
  std::vector<std::string> logs;
  int64_t next_seq = 1;

  FakeHost() {
    api.size = sizeof(api);
    api.abi_major = ORCHARD_PLUGIN_ABI_MAJOR;
    api.abi_minor = ORCHARD_PLUGIN_ABI_MINOR;
    api.log = [](orchard_plugin_ref* self, orchard_log_level, orchard_buf m) { self->host->logs.push_back(S(m)); };
    api.enqueue = [](orchard_run* run, orchard_buf dev, orchard_buf rt, orchard_buf fields, int32_t, uint32_t,
                     orchard_buf* uuid) {
      std::string d = S(dev);
      if (d.empty()) d = S(run->event->enrollment_id);
      run->commands.emplace_back(S(rt), S(fields));
      run->out.push_back(d + "|" + S(rt));
      if (uuid) *uuid = B(run->out.back());
      return ORCHARD_OK;
    };
    api.kv_get = [](orchard_run* run, orchard_buf key, orchard_buf* value) {
      const std::string k = S(key);
      auto w = run->writes.find(k);
      if (w != run->writes.end()) {
        if (!w->second) return ORCHARD_ERR_NOT_FOUND;
        run->out.push_back(*w->second);
      } else {
        auto it = run->host->kv.find(k);
        if (it == run->host->kv.end()) return ORCHARD_ERR_NOT_FOUND;
        run->out.push_back(it->second);
      }
      *value = B(run->out.back());
      return ORCHARD_OK;
    };
    api.kv_put = [](orchard_run* run, orchard_buf key, orchard_buf value) {
      if (key.len == 0 || key.len > 512 || value.len > 64 * 1024) return ORCHARD_ERR_INVALID_ARGUMENT;
      run->writes[S(key)] = S(value);
      return ORCHARD_OK;
    };
    api.kv_delete = [](orchard_run* run, orchard_buf key) {
      run->writes[S(key)] = std::nullopt;
      return ORCHARD_OK;
    };
    api.device = [](orchard_run* run, orchard_buf dev, orchard_buf* json) {
      std::string d = S(dev);
      if (d.empty()) d = S(run->event->enrollment_id);
      auto it = run->host->devices.find(d);
      if (it == run->host->devices.end()) return ORCHARD_ERR_NOT_FOUND;
      *json = B(it->second);
      return ORCHARD_OK;
    };
    api.last_result = [](orchard_run*, orchard_buf, orchard_buf, orchard_buf*, orchard_buf*) {
      return ORCHARD_ERR_NOT_FOUND;
    };
    api.set_error = [](orchard_run* run, orchard_buf m) { run->error = S(m); };
    api.kv_read = [](orchard_plugin_ref* self, orchard_buf key, orchard_value_fn fn, void* ctx) {
      auto it = self->host->kv.find(S(key));
      if (it == self->host->kv.end()) return ORCHARD_ERR_NOT_FOUND;
      fn(ctx, B(it->second));
      return ORCHARD_OK;
    };
    api.kv_scan = [](orchard_plugin_ref* self, orchard_buf prefix, orchard_buf after, size_t limit,
                     orchard_entry_fn fn, void* ctx) {
      if (limit < 1 || limit > 10000) return ORCHARD_ERR_INVALID_ARGUMENT;
      const std::string p = S(prefix), a = S(after);
      auto it = a.empty() ? self->host->kv.lower_bound(p) : self->host->kv.upper_bound(a);
      for (size_t n = 0; it != self->host->kv.end() && n < limit; ++it, ++n) {
        if (it->first.compare(0, p.size(), p) != 0) break;
        if (fn(ctx, B(it->first), B(it->second)) != 0) break;
      }
      return ORCHARD_OK;
    };
    api.http_respond = [](orchard_http_response* r, int32_t status, orchard_buf ct, orchard_buf body) {
      r->responded = true;
      r->status = status;
      r->content_type = S(ct);
      r->body = S(body);
      return ORCHARD_OK;
    };
    api.http_header = [](orchard_http_response* r, orchard_buf name, orchard_buf value) {
      const std::string v = S(value);
      if (v.find_first_of(std::string("\r\n\0", 3)) != std::string::npos) return ORCHARD_ERR_INVALID_ARGUMENT;
      r->headers.emplace_back(S(name), v);
      return ORCHARD_OK;
    };
  }

  // Loads the plugin and calls init; the status init returned.
  orchard_status Load(const std::string& config = "{}") {
    dl = dlopen(INVENTORY_EXPORT_SO, RTLD_NOW | RTLD_LOCAL);
    INFO(dlerror());
    REQUIRE(dl != nullptr);
    auto entry = reinterpret_cast<orchard_plugin_entry_fn>(dlsym(dl, ORCHARD_PLUGIN_ENTRY));
    REQUIRE(entry != nullptr);
    REQUIRE(entry(&api, &desc) == ORCHARD_OK);
    return desc->init(&ref, &api, B(config), &state);
  }
  ~FakeHost() {
    if (state && desc && desc->shutdown) desc->shutdown(state);
    if (dl) dlclose(dl);
  }

  // Delivers one event; commits the run's writes and commands on ORCHARD_OK.
  orchard_status Deliver(const std::string& type, const std::string& id, const std::string& request_type = "",
                         const std::string& raw_plist = "", int64_t time_ms = 1764641700000) {
    const std::string cursor = "0." + std::to_string(next_seq);
    orchard_event e{};
    e.size = sizeof(e);
    e.seq = static_cast<uint64_t>(next_seq++);
    e.time_ms = time_ms;
    e.type = B(type);
    e.cursor = B(cursor);
    e.enrollment_id = B(id);
    e.request_type = B(request_type);
    e.raw_plist = B(raw_plist);
    orchard_run run{this, &e, {}, {}, {}, {}};
    orchard_status st = desc->on_event(state, &run, &e);
    INFO(run.error);
    if (st == ORCHARD_OK) {
      for (auto& [k, v] : run.writes) {
        if (v) kv[k] = *v;
        else kv.erase(k);
      }
      for (auto& [rt, f] : run.commands) queued.push_back({id, rt, f});
    }
    return st;
  }
  orchard_http_response Http(const std::string& method, const std::string& path, const std::string& query = "") {
    orchard_http_request req{};
    req.size = sizeof(req);
    req.method = B(method);
    req.path = B(path);
    req.query = B(query);
    orchard_http_response resp;
    orchard_status st = desc->on_http(state, &req, &resp);
    if (!resp.responded) {
      resp.status = st == ORCHARD_OK ? 204 : st == ORCHARD_ERR_NOT_FOUND ? 404 : st == ORCHARD_ERR_INVALID_ARGUMENT ? 400 : 500;
    }
    return resp;
  }
  void Report(const std::string& id, const std::string& request_type, const std::string& xml, int64_t t = 1764641700000) {
    REQUIRE(Deliver(ORCHARD_EVENT_COMMAND_ACKNOWLEDGED, id, request_type, xml, t) == ORCHARD_OK);
  }
};

namespace {

std::string Fixture(const std::string& name) {
  std::string s = ReadFile(FixturePath(name));
  REQUIRE_FALSE(s.empty());
  return s;
}

std::string DeviceInfo(const std::string& name, const std::string& serial) {
  return "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>QueryResponses</key><dict>"
         "<key>DeviceName</key><string>" + name + "</string><key>SerialNumber</key><string>" + serial +
         "</string><key>OSVersion</key><string>18.1</string></dict><key>Status</key><string>Acknowledged</string>"
         "</dict></plist>";
}

orchard::plist::Value Json(const orchard_http_response& r) {
  INFO(r.status << " " << r.body.substr(0, 300));
  REQUIRE(IsStrictUtf8(r.body));
  auto v = orchard::plist::ParseJson(r.body);
  REQUIRE(v.ok());
  return std::move(v.value());
}

// A list answer (devices or apps); *next is its "next" ("" on the last page).
orchard::plist::Value ListJson(const orchard_http_response& r, std::string* next) {
  orchard::plist::Value v = Json(r);
  REQUIRE(v.Find("next") != nullptr);
  *next = std::string(v.GetString("next"));
  return v;
}

}  // namespace

TEST_CASE("inventory plugin keeps the three reports of a device and serves its record", "[inventory][plugin]") {
  FakeHost h;
  REQUIRE(h.Load() == ORCHARD_OK);
  REQUIRE(h.desc->abi_minor == 1);
  REQUIRE(h.desc->schedule_count == 1);
  CHECK(std::string(h.desc->schedules[0].name) == "refresh");
  CHECK(h.desc->schedules[0].per_device == 1);
  const std::string id = "00008030-0011223344556677";
  h.Report(id, "DeviceInformation", Fixture("inventory/DeviceInformation.ipad.plist"), 1764641700000);
  h.Report(id, "SecurityInfo", Fixture("inventory/SecurityInfo.ipad.plist"), 1764641701000);
  h.Report(id, "InstalledApplicationList", Fixture("inventory/InstalledApplicationList.ipad.plist"), 1764641702000);
  // Another RequestType and an event without a device change nothing.
  REQUIRE(h.Deliver(ORCHARD_EVENT_COMMAND_ACKNOWLEDGED, id, "ProfileList", "<plist><dict/></plist>") == ORCHARD_OK);
  REQUIRE(h.Deliver(ORCHARD_EVENT_COMMAND_ACKNOWLEDGED, "", "DeviceInformation", "") == ORCHARD_OK);
  // A malformed report is noted and skipped, not retried forever.
  REQUIRE(h.Deliver(ORCHARD_EVENT_COMMAND_ACKNOWLEDGED, id, "SecurityInfo", "<plist>broken") == ORCHARD_OK);
  CHECK(h.kv.count("dev/" + id) == 1);
  CHECK(h.kv.count("apps/" + id + "/000000") == 1);

  auto rec = h.Http("GET", "/devices/" + id);
  REQUIRE(rec.status == 200);
  CHECK(rec.content_type == "application/json");
  auto v = Json(rec);
  CHECK(v.GetString("enrollment_id") == id);
  CHECK(v.GetString("device_information_at") == "2025-12-02T02:15:00.000Z");
  CHECK(v.GetString("security_info_at") == "2025-12-02T02:15:01.000Z");
  CHECK(v.GetString("installed_applications_at") == "2025-12-02T02:15:02.000Z");
  CHECK(*v.Find("app_count")->AsInteger() == 4);
  CHECK(v.Find("fields")->GetString("SerialNumber") == "DMPXK2ABCD12");
  CHECK(v.Find("fields")->GetBool("SecurityInfo.PasscodePresent", true) == false);

  // Apps, two per page.
  auto p1 = h.Http("GET", "/devices/" + id + "/apps", "limit=2");
  REQUIRE(p1.status == 200);
  auto a1 = Json(p1);
  REQUIRE(a1.Find("apps")->AsArray()->size() == 2);
  CHECK(a1.Find("apps")->AsArray()->at(0).GetString("identifier") == "com.apple.Keynote");
  CHECK(a1.GetString("next") == "2");
  CHECK(p1.Header("X-Next-Cursor") == "2");
  std::string next;
  auto p2 = h.Http("GET", "/devices/" + id + "/apps", "limit=2&after=2");
  auto a2 = ListJson(p2, &next);
  REQUIRE(a2.Find("apps")->AsArray()->size() == 2);
  CHECK(a2.Find("apps")->AsArray()->at(1).GetString("identifier") == "com.example.sheets");
  CHECK(next.empty());

  // A smaller app list replaces the larger one (old chunks removed).
  h.Report(id, "InstalledApplicationList",
           "<plist><dict><key>InstalledApplicationList</key><array/></dict></plist>", 1764641703000);
  auto a3 = ListJson(h.Http("GET", "/devices/" + id + "/apps"), &next);
  CHECK(a3.Find("apps")->AsArray()->empty());
  CHECK(*a3.Find("app_count")->AsInteger() == 0);
  CHECK(h.kv.count("apps/" + id + "/000000") == 0);
}

TEST_CASE("inventory plugin pages the device list in JSON and CSV", "[inventory][plugin]") {
  FakeHost h;
  REQUIRE(h.Load(R"({"columns":"enrollment_id,serial_number,device_name,os_version"})") == ORCHARD_OK);
  std::set<std::string> ids;
  for (int i = 0; i < 25; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "DEV-%03d", i);
    ids.insert(id);
    h.Report(id, "DeviceInformation", DeviceInfo(i == 7 ? "=2+5" : "iPad " + std::to_string(i), "SN" + std::to_string(i)));
  }
  // JSON: 10 + 10 + 5.
  std::set<std::string> seen;
  std::string after;
  int pages = 0;
  for (;;) {
    auto r = h.Http("GET", "/devices", "limit=10" + (after.empty() ? "" : "&after=" + after));
    REQUIRE(r.status == 200);
    std::string next;
    auto v = ListJson(r, &next);
    for (const auto& d : *v.Find("devices")->AsArray()) CHECK(seen.insert(std::string(d.GetString("enrollment_id"))).second);
    ++pages;
    if (next.empty()) {
      CHECK(r.Header("X-Next-Cursor").empty());
      break;
    }
    CHECK(r.Header("X-Next-Cursor") == next);
    CHECK(r.Header("Link") == "</plugins/inventory-export/devices?limit=10&after=" + next + ">; rel=\"next\"");
    after = next;
    REQUIRE(pages < 10);
  }
  CHECK(pages == 3);
  CHECK(seen == ids);

  // CSV: header every page, rows in id order, formula neutralised.
  std::string csv_rows;
  after.clear();
  pages = 0;
  for (;;) {
    auto r = h.Http("GET", "/devices.csv", "limit=10" + (after.empty() ? "" : "&after=" + after));
    REQUIRE(r.status == 200);
    CHECK(r.content_type == "text/csv; charset=utf-8; header=present");
    REQUIRE(r.body.rfind("enrollment_id,serial_number,device_name,os_version\r\n", 0) == 0);
    csv_rows += r.body.substr(r.body.find("\r\n") + 2);
    ++pages;
    after = r.Header("X-Next-Cursor");
    if (after.empty()) break;
    CHECK(r.Header("Link").rfind("</plugins/inventory-export/devices.csv?limit=10&after=", 0) == 0);
    REQUIRE(pages < 10);
  }
  CHECK(pages == 3);
  CHECK(csv_rows.find("DEV-000,SN0,iPad 0,18.1\r\nDEV-001,SN1,iPad 1,18.1\r\n") == 0);
  CHECK(csv_rows.find("DEV-007,SN7,'=2+5,18.1\r\n") != std::string::npos);
  size_t lines = 0;
  for (size_t p = 0; (p = csv_rows.find("\r\n", p)) != std::string::npos; p += 2) ++lines;
  CHECK(lines == 25);
  // ?format=csv is the same as /devices.csv.
  auto f = h.Http("GET", "/devices", "format=csv&limit=1000");
  CHECK(f.status == 200);
  CHECK(f.body.substr(f.body.find("\r\n") + 2) == csv_rows);
}

TEST_CASE("inventory plugin answers 404, 405 and 400 where it should", "[inventory][plugin]") {
  FakeHost h;
  REQUIRE(h.Load() == ORCHARD_OK);
  h.Report("A", "DeviceInformation", DeviceInfo("a", "1"));
  CHECK(h.Http("GET", "/").status == 404);
  CHECK(h.Http("GET", "/nope").status == 404);
  CHECK(h.Http("GET", "/devices/").status == 404);
  CHECK(h.Http("GET", "/devices/B").status == 404);
  CHECK(h.Http("GET", "/devices/B/apps").status == 404);
  CHECK(h.Http("GET", "/devices/A/x/y").status == 404);
  auto post = h.Http("POST", "/devices");
  CHECK(post.status == 405);
  CHECK(post.Header("Allow") == "GET");
  CHECK(h.Http("DELETE", "/devices/A").status == 405);
  CHECK(h.Http("PUT", "/devices.csv").status == 405);
  CHECK(h.Http("GET", "/devices", "limit=0").status == 400);
  CHECK(h.Http("GET", "/devices", "limit=1001").status == 400);
  CHECK(h.Http("GET", "/devices", "limit=abc").status == 400);
  CHECK(h.Http("GET", "/devices", "format=xml").status == 400);
  CHECK(h.Http("GET", "/devices/A/apps", "after=-1").status == 400);
  CHECK(h.Http("GET", "/devices", "limit=1000").status == 200);
  // Unreadable entries under dev/ are skipped without ending the listing early.
  h.Report("C", "DeviceInformation", DeviceInfo("c", "3"));
  h.kv["dev/B1"] = "not a record";
  h.kv["dev/B2"] = "{}";
  std::vector<std::string> walked;
  std::string after;
  for (int pages = 0;; ++pages) {
    REQUIRE(pages < 10);
    std::string next;
    auto page = ListJson(h.Http("GET", "/devices", "limit=1" + (after.empty() ? "" : "&after=" + after)), &next);
    CHECK(page.Find("devices")->AsArray()->size() <= 1);
    for (const auto& d : *page.Find("devices")->AsArray()) walked.emplace_back(d.GetString("enrollment_id"));
    if (next.empty()) break;
    after = next;
  }
  CHECK(walked == std::vector<std::string>{"A", "C"});
  CHECK(h.Http("GET", "/devices/B1").status == 500);
  // A device without an app list yet.
  auto apps = h.Http("GET", "/devices/A/apps");
  REQUIRE(apps.status == 200);
  auto av = Json(apps);
  CHECK(av.Find("app_count") == nullptr);
  CHECK(av.Find("installed_applications_at") == nullptr);
  CHECK(av.GetString("next").empty());
}

TEST_CASE("inventory plugin queues the inventory commands on enrollment and on refresh ticks", "[inventory][plugin]") {
  auto check_three = [](const std::vector<Command>& q, size_t from, const std::string& id) {
    REQUIRE(q.size() >= from + 3);
    CHECK(q[from].request_type == "DeviceInformation");
    CHECK(q[from].enrollment_id == id);
    auto fields = orchard::plist::ParseJson(q[from].fields_json);
    REQUIRE(fields.ok());
    const auto* queries = fields->Find("Queries")->AsArray();
    REQUIRE(queries != nullptr);
    std::set<std::string> names;
    for (const auto& n : *queries) names.insert(std::string(*n.AsString()));
    for (const char* k : {"SerialNumber", "OSVersion", "DeviceName", "IsSupervised", "BatteryLevel", "WiFiMAC"})
      CHECK(names.count(k) == 1);
    CHECK(q[from + 1].request_type == "SecurityInfo");
    CHECK(q[from + 2].request_type == "InstalledApplicationList");
    CHECK(q[from + 2].fields_json == R"({"ManagedAppsOnly":false})");
  };
  {
    FakeHost h;
    REQUIRE(h.Load() == ORCHARD_OK);
    h.devices["D1"] = R"({"id":"D1","type":"device"})";
    h.devices["D1:user"] = R"({"id":"D1:user","type":"user"})";
    REQUIRE(h.Deliver(ORCHARD_EVENT_ENROLLMENT_ENROLLED, "D1") == ORCHARD_OK);
    check_three(h.queued, 0, "D1");
    REQUIRE(h.Deliver(ORCHARD_EVENT_ENROLLMENT_ENROLLED, "D1:user") == ORCHARD_OK);
    CHECK(h.queued.size() == 3);  // user channels are not asked
    // The enrollment's three commands are unanswered: a tick right after adds nothing.
    REQUIRE(h.Deliver(ORCHARD_EVENT_SCHEDULE_TICK, "D1", "plugin:inventory-export/refresh") == ORCHARD_OK);
    CHECK(h.queued.size() == 3);
    // Still unanswered a week later: asked again (the first ones may have failed or expired).
    const int64_t week = 7LL * 24 * 3600 * 1000;
    REQUIRE(h.Deliver(ORCHARD_EVENT_SCHEDULE_TICK, "D1", "plugin:inventory-export/refresh", "", 1764641700000 + week) ==
            ORCHARD_OK);
    check_three(h.queued, 3, "D1");
    REQUIRE(h.Deliver(ORCHARD_EVENT_SCHEDULE_TICK, "D1", "plugin:inventory-export/other", "", 1764641700000 + 2 * week) ==
            ORCHARD_OK);
    REQUIRE(h.Deliver(ORCHARD_EVENT_SCHEDULE_TICK, "", "plugin:inventory-export/refresh", "", 1764641700000 + 2 * week) ==
            ORCHARD_OK);
    REQUIRE(h.Deliver(ORCHARD_EVENT_ENROLLMENT_ENROLLED, "gone") == ORCHARD_OK);
    CHECK(h.queued.size() == 6);
  }
  {
    FakeHost h;
    REQUIRE(h.Load(R"({"refresh":"off"})") == ORCHARD_OK);
    h.devices["D1"] = R"({"id":"D1","type":"device"})";
    REQUIRE(h.Deliver(ORCHARD_EVENT_SCHEDULE_TICK, "D1", "plugin:inventory-export/refresh") == ORCHARD_OK);
    CHECK(h.queued.empty());  // the tick is a no-op
    REQUIRE(h.Deliver(ORCHARD_EVENT_ENROLLMENT_ENROLLED, "D1") == ORCHARD_OK);
    CHECK(h.queued.size() == 3);  // enrollment still asks once
  }
  {
    FakeHost h;
    REQUIRE(h.Load(R"({"query_on_enroll":"off"})") == ORCHARD_OK);
    h.devices["D1"] = R"({"id":"D1","type":"device"})";
    REQUIRE(h.Deliver(ORCHARD_EVENT_ENROLLMENT_ENROLLED, "D1") == ORCHARD_OK);
    CHECK(h.queued.empty());
  }
}

TEST_CASE("inventory plugin skips the refresh of a device whose three reports are fresh", "[inventory][plugin]") {
  FakeHost h;
  REQUIRE(h.Load() == ORCHARD_OK);
  h.devices["00008030-0011223344556677"] = R"({"type":"device"})";
  const std::string id = "00008030-0011223344556677";
  const int64_t t0 = 1764641700000, hour = 3600 * 1000;
  const std::string di = Fixture("inventory/DeviceInformation.ipad.plist");
  const std::string si = Fixture("inventory/SecurityInfo.ipad.plist");
  const std::string apps = Fixture("inventory/InstalledApplicationList.ipad.plist");
  auto tick = [&](int64_t t) {
    REQUIRE(h.Deliver(ORCHARD_EVENT_SCHEDULE_TICK, id, "plugin:inventory-export/refresh", "", t) == ORCHARD_OK);
  };
  h.Report(id, "DeviceInformation", di, t0);
  h.Report(id, "SecurityInfo", si, t0);
  // Two of three sources: the tick still asks.
  tick(t0 + hour);
  CHECK(h.queued.size() == 3);
  // Those three are not answered yet: a tick adds nothing.
  tick(t0 + 2 * hour);
  CHECK(h.queued.size() == 3);
  h.Report(id, "DeviceInformation", di, t0 + 3 * hour);
  h.Report(id, "SecurityInfo", si, t0 + 3 * hour);
  tick(t0 + 4 * hour);  // one of the three still missing: still outstanding
  CHECK(h.queued.size() == 3);
  h.Report(id, "InstalledApplicationList", apps, t0 + 3 * hour);
  // All three answered and younger than 12 hours: skipped.
  tick(t0 + 14 * hour);
  CHECK(h.queued.size() == 3);
  // Older: asked again.
  tick(t0 + 16 * hour);
  CHECK(h.queued.size() == 6);
  // An offline device is not asked every day ...
  for (int day = 1; day < 7; ++day) tick(t0 + 16 * hour + day * 24 * hour);
  CHECK(h.queued.size() == 6);
  // ... but again once the unanswered request is a week old.
  tick(t0 + 16 * hour + 7 * 24 * hour);
  CHECK(h.queued.size() == 9);
}

TEST_CASE("inventory plugin exports only its entry point", "[inventory][plugin]") {
  void* dl = dlopen(INVENTORY_EXPORT_SO, RTLD_NOW | RTLD_LOCAL);
  REQUIRE(dl != nullptr);
  CHECK(dlsym(dl, ORCHARD_PLUGIN_ENTRY) != nullptr);
  dlclose(dl);
  // Every defined dynamic symbol (nm from binutils, as the toolchain has it).
  FILE* p = popen("nm -D --defined-only " INVENTORY_EXPORT_SO " 2>/dev/null", "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p) != nullptr) out += buf;
  const int rc = pclose(p);
  if (rc != 0 || out.empty()) ORCHARD_SKIP("nm is not available");
  std::vector<std::string> symbols;
  for (size_t pos = 0; pos < out.size();) {
    size_t nl = out.find('\n', pos);
    const std::string line = out.substr(pos, nl - pos);
    pos = nl == std::string::npos ? out.size() : nl + 1;
    const size_t sp = line.rfind(' ');
    if (sp != std::string::npos) symbols.push_back(line.substr(sp + 1));
  }
  CHECK(symbols == std::vector<std::string>{ORCHARD_PLUGIN_ENTRY});
}

TEST_CASE("inventory plugin refuses a bad config section", "[inventory][plugin]") {
  for (const char* bad : {R"({"refesh":"off"})", R"({"refresh":"sometimes"})", R"({"columns":"a,,b"})",
                          R"({"columns":"serial number"})", R"({"max_response_bytes":"10"})", "[1]", "{"}) {
    FakeHost h;
    INFO(bad);
    CHECK(h.Load(bad) == ORCHARD_ERR_INVALID_ARGUMENT);
    CHECK_FALSE(h.logs.empty());
    h.state = nullptr;
  }
  FakeHost ok;
  CHECK(ok.Load(R"({"refresh":"on","query_on_enroll":"off","columns":"serial_number","max_response_bytes":"262144"})") ==
        ORCHARD_OK);
}

TEST_CASE("inventory plugin stops a page before the response budget", "[inventory][plugin]") {
  FakeHost h;
  REQUIRE(h.Load(R"({"max_response_bytes":"262144"})") == ORCHARD_OK);
  // Records of about 50 KB each: five do not fit into 256 KiB.
  std::string body;
  for (int i = 0; i < 90; ++i) body += "<key>K" + std::to_string(i) + "</key><string>" + std::string(540, 'v') + "</string>";
  const std::string xml = "<plist><dict><key>QueryResponses</key><dict>" + body + "</dict></dict></plist>";
  for (int i = 0; i < 8; ++i) h.Report("BIG-" + std::to_string(i), "DeviceInformation", xml);
  std::set<std::string> seen;
  std::string after;
  for (int pages = 0; pages < 10; ++pages) {
    auto r = h.Http("GET", "/devices", "limit=1000" + (after.empty() ? "" : "&after=" + after));
    REQUIRE(r.status == 200);
    CHECK(r.body.size() <= 262144);
    std::string next;
    auto v = ListJson(r, &next);
    CHECK(v.Find("devices")->AsArray()->size() >= 1);
    for (const auto& d : *v.Find("devices")->AsArray()) seen.insert(std::string(d.GetString("enrollment_id")));
    if (next.empty()) break;
    CHECK(v.Find("devices")->AsArray()->size() < 8);
    after = next;
  }
  CHECK(seen.size() == 8);
}
