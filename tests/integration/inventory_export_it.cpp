// The shipped inventory-export plugin (plugins/inventory-export) in the real
// orchardd: devices enroll (--insecure-dev, check-ins without certificates),
// the plugin queues DeviceInformation, SecurityInfo and InstalledApplicationList,
// the devices answer with the fixture reports (tests/fixtures/inventory and the
// captured devices/DeviceInformation.1.plist), and the admin reads the
// inventory on /plugins/inventory-export/...: the per-device record, the app
// list, the device list in JSON and CSV across pages (X-Next-Cursor, Link),
// 401 without the API key, and the same inventory after a restart. Every wait
// polls with a deadline.
#include <curl/curl.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "plist/plist.h"
#include "sim/simulator.h"
#include "support/fixtures.h"
#include "support/orchardd_process.h"
#include "support/strict_utf8.h"
#include "support/test_pki.h"

namespace {

namespace fs = std::filesystem;
using orchard::plist::Value;
using orchard::testing::FixturePath;
using orchard::testing::HttpCall;
using orchard::testing::HttpResult;
using orchard::testing::IsStrictUtf8;
using orchard::testing::MakeTempDir;
using orchard::testing::OrchardProcess;
using orchard::testing::ReadFile;
using orchard::testing::WriteFile;

constexpr char kKey[] = "inventory-export-it-api-key-0001";
constexpr char kRoot[] = "/plugins/inventory-export";

template <class F>
bool WaitFor(F cond, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

Value S(const std::string& s) { return Value::String(s); }

std::string Fixture(const std::string& name) {
  std::string s = ReadFile(FixturePath(name));
  REQUIRE_FALSE(s.empty());
  return s;
}

// A GET that also returns the response headers (lower-case names).
struct Response {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

size_t OnBody(char* p, size_t size, size_t n, void* ctx) {
  static_cast<std::string*>(ctx)->append(p, size * n);
  return size * n;
}
size_t OnHeader(char* p, size_t size, size_t n, void* ctx) {
  std::string line(p, size * n);
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.pop_back();
    (*static_cast<std::map<std::string, std::string>*>(ctx))[name] = value;
  }
  return size * n;
}

Response Get(const std::string& url, bool with_key = true) {
  Response r;
  CURL* c = curl_easy_init();
  REQUIRE(c != nullptr);
  curl_slist* hdrs = nullptr;
  if (with_key) hdrs = curl_slist_append(hdrs, (std::string("X-API-Key: ") + kKey).c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.headers);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(c);
  return r;
}

Value Json(const std::string& body) {
  INFO(body.substr(0, 500));
  REQUIRE(IsStrictUtf8(body));
  auto v = orchard::plist::ParseJson(body);
  REQUIRE(v.ok());
  return std::move(v.value());
}

// A device-list page: its ids and the next cursor ("" on the last page).
std::vector<std::string> ListPage(const Response& r, std::string* next) {
  REQUIRE(r.status == 200);
  Value v = Json(r.body);
  REQUIRE(v.Find("next") != nullptr);
  *next = std::string(v.GetString("next"));
  std::vector<std::string> ids;
  for (const Value& d : *v.Find("devices")->AsArray()) ids.emplace_back(d.GetString("enrollment_id"));
  return ids;
}

// RFC 4180 rows (quoted fields, doubled quotes, CRLF).
std::vector<std::vector<std::string>> ParseCsv(const std::string& csv) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < csv.size(); ++i) {
    const char c = csv[i];
    if (quoted) {
      if (c == '"' && i + 1 < csv.size() && csv[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
    } else if (c == '\r' && i + 1 < csv.size() && csv[i + 1] == '\n') {
      row.push_back(field);
      field.clear();
      rows.push_back(row);
      row.clear();
      ++i;
    } else {
      field += c;
    }
  }
  return rows;
}

std::string Authenticate(const std::string& udid) {
  Value v = Value::MakeDict();
  v.Set("MessageType", S("Authenticate"));
  v.Set("UDID", S(udid));
  v.Set("Topic", S("com.apple.mgmt.test"));
  v.Set("SerialNumber", S("SN" + udid.substr(udid.size() - 6)));
  return orchard::plist::ToXml(v);
}

std::string TokenUpdate(const std::string& udid) {
  Value v = Value::MakeDict();
  v.Set("MessageType", S("TokenUpdate"));
  v.Set("UDID", S(udid));
  v.Set("Token", Value::DataValue(std::string(32, '\x05')));
  v.Set("PushMagic", S("magic-secret"));
  v.Set("Topic", S("com.apple.mgmt.test"));
  return orchard::plist::ToXml(v);
}

// orchardd with inventory-export copied into a private plugin dir.
struct Orchard {
  std::string dir = MakeTempDir("orchard-inventory-it");
  std::string plugins = dir + "/plugins";
  std::unique_ptr<OrchardProcess> proc;

  explicit Orchard(const std::string& config = "") {
    fs::create_directories(plugins);
    REQUIRE(chmod(plugins.c_str(), 0755) == 0);
    fs::copy_file(INVENTORY_EXPORT_SO, plugins + "/inventory-export.so");
    REQUIRE(chmod((plugins + "/inventory-export.so").c_str(), 0755) == 0);
    REQUIRE(WriteFile(dir + "/orchard.conf", "plugin.dir = " + plugins + "\nlog.level = info\n" + config));
  }
  ~Orchard() {
    proc.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::remove(dir + "/data.log", ec);
  }
  void Start() {
    proc = std::make_unique<OrchardProcess>(
        dir + "/data", std::vector<std::string>{"--config", dir + "/orchard.conf", "--insecure-dev", "--api-key", kKey});
    const bool started = proc->Start();
    INFO("orchardd log:\n" << Log());
    REQUIRE(started);
  }
  void Restart() {
    REQUIRE(proc->Stop() == 0);
    Start();
  }
  std::string Log() const { return proc ? ReadFile(proc->log_path()) : std::string(); }
  HttpResult Put(const std::string& plist, bool checkin) {
    return HttpCall("PUT", proc->url() + "/mdm", plist,
                    {checkin ? "Content-Type: application/x-apple-aspen-mdm-checkin"
                             : "Content-Type: application/x-apple-aspen-mdm"});
  }
  HttpResult Api(const std::string& method, const std::string& path) {
    return HttpCall(method, proc->url() + path, "", {std::string("X-API-Key: ") + kKey});
  }
  Response Route(const std::string& path_and_query, bool with_key = true) {
    return Get(proc->url() + kRoot + path_and_query, with_key);
  }
  void Enroll(const std::string& udid) {
    REQUIRE(Put(Authenticate(udid), true).status == 200);
    REQUIRE(Put(TokenUpdate(udid), true).status == 200);
  }
  size_t Queued(const std::string& udid) {
    auto r = Api("GET", "/v1/enrollments/" + udid + "/queue");
    if (r.status != 200) return 0;
    auto v = orchard::plist::ParseJson(r.body);
    if (!v.ok() || v->Find("commands") == nullptr || v->Find("commands")->AsArray() == nullptr) return 0;
    return v->Find("commands")->AsArray()->size();
  }
  int64_t PluginCounter(const char* field) {
    auto r = Api("GET", "/v1/plugins/inventory-export");
    auto v = orchard::plist::ParseJson(r.body);
    if (r.status != 200 || !v.ok() || v->Find(field) == nullptr || v->Find(field)->AsInteger() == nullptr) return -1;
    return *v->Find(field)->AsInteger();
  }
  // One command session: Idle, then each command answered Acknowledged with
  // answers[RequestType] (an XML plist report whose CommandUUID and UDID are
  // replaced), or a bare acknowledgement. Returns the RequestTypes handled.
  std::vector<std::string> Session(const std::string& udid, const std::map<std::string, std::string>& answers) {
    Value idle = Value::MakeDict();
    idle.Set("Status", S("Idle"));
    idle.Set("UDID", S(udid));
    std::string body = orchard::plist::ToXml(idle);
    std::vector<std::string> handled;
    for (int i = 0; i < 20; ++i) {
      HttpResult r = Put(body, false);
      INFO(r.body);
      REQUIRE(r.status == 200);
      if (r.body.empty()) break;
      auto cmd = orchard::plist::ParseXml(r.body);
      REQUIRE(cmd.ok());
      const std::string uuid(cmd->GetString("CommandUUID"));
      const std::string rt(cmd->Find("Command")->GetString("RequestType"));
      handled.push_back(rt);
      Value report = Value::MakeDict();
      auto it = answers.find(rt);
      if (it != answers.end()) {
        auto parsed = orchard::plist::ParseXml(it->second);
        REQUIRE(parsed.ok());
        report = std::move(parsed.value());
      }
      report.Set("CommandUUID", S(uuid));
      report.Set("UDID", S(udid));
      report.Set("Status", S("Acknowledged"));
      body = orchard::plist::ToXml(report);
    }
    return handled;
  }
};

std::string DeviceInfo(const std::string& name, const std::string& serial) {
  Value q = Value::MakeDict();
  q.Set("DeviceName", S(name));
  q.Set("SerialNumber", S(serial));
  q.Set("OSVersion", S("18.1"));
  q.Set("IsSupervised", Value::Bool(true));
  Value v = Value::MakeDict();
  v.Set("QueryResponses", std::move(q));
  return orchard::plist::ToXml(v);
}

}  // namespace

TEST_CASE("inventory-export in orchardd keeps fixture reports and serves them as JSON and CSV across pages and restarts",
          "[integration][plugin][inventory]") {
  Orchard o;
  o.Start();
  {
    auto p = o.Api("GET", "/v1/plugins/inventory-export");
    INFO(p.body << "\n" << o.Log());
    REQUIRE(p.status == 200);
    Value v = Json(p.body);
    CHECK(v.GetString("status") == "loaded");
    CHECK(v.GetString("abi") == "1.1");
  }

  // The iPad: enrolls, the plugin asks for its inventory, it answers with the fixtures.
  const std::string ipad = "00008030-0011223344556677";
  o.Enroll(ipad);
  REQUIRE(WaitFor([&] { return o.Queued(ipad) == 3; }));
  const std::map<std::string, std::string> ipad_answers = {
      {"DeviceInformation", Fixture("inventory/DeviceInformation.ipad.plist")},
      {"SecurityInfo", Fixture("inventory/SecurityInfo.ipad.plist")},
      {"InstalledApplicationList", Fixture("inventory/InstalledApplicationList.ipad.plist")}};
  const auto handled = o.Session(ipad, ipad_answers);
  CHECK(std::set<std::string>(handled.begin(), handled.end()) ==
        std::set<std::string>{"DeviceInformation", "SecurityInfo", "InstalledApplicationList"});
  Response rec;
  REQUIRE(WaitFor([&] {
    rec = o.Route("/devices/" + ipad);
    return rec.status == 200 && rec.body.find("installed_applications_at") != std::string::npos &&
           rec.body.find("security_info_at") != std::string::npos &&
           rec.body.find("device_information_at") != std::string::npos;
  }));
  Value record = Json(rec.body);
  CHECK(record.GetString("enrollment_id") == ipad);
  const Value* fields = record.Find("fields");
  REQUIRE(fields != nullptr);
  CHECK(fields->GetString("SerialNumber") == "DMPXK2ABCD12");
  CHECK(fields->GetString("DeviceName") == "Ana\xE2\x80\x99s iPad");
  CHECK(fields->GetString("OSUpdateSettings.AutoCheckEnabled").empty());  // a bool, not a string
  CHECK(fields->GetBool("OSUpdateSettings.AutoCheckEnabled", false));
  CHECK(fields->GetBool("SecurityInfo.PasscodePresent", true) == false);
  CHECK(*record.Find("app_count")->AsInteger() == 4);

  // Its apps.
  Response apps = o.Route("/devices/" + ipad + "/apps?limit=3");
  REQUIRE(apps.status == 200);
  Value a = Json(apps.body);
  REQUIRE(a.Find("apps")->AsArray()->size() == 3);
  CHECK(a.Find("apps")->AsArray()->at(0).GetString("identifier") == "com.apple.Keynote");
  CHECK(a.GetString("next") == "3");
  CHECK(apps.Header("x-next-cursor") == "3");

  // A Mac-like device answering with the captured DeviceInformation (HostName, UDID) and
  // the Mac SecurityInfo; ten more answering with generated reports.
  const std::string mac = "5C2B5C9A-1F0E-5B7A-9A3C-2E4D6F8A0B1C";
  o.Enroll(mac);
  REQUIRE(WaitFor([&] { return o.Queued(mac) == 3; }));
  o.Session(mac, {{"DeviceInformation", Fixture("devices/DeviceInformation.1.plist")},
                  {"SecurityInfo", Fixture("inventory/SecurityInfo.mac.plist")}});
  std::set<std::string> all = {ipad, mac};
  for (int i = 0; i < 10; ++i) {
    char udid[64];
    std::snprintf(udid, sizeof udid, "0000AAAA-INVENTORY-IT-%04d", i);
    all.insert(udid);
    o.Enroll(udid);
    REQUIRE(WaitFor([&] { return o.Queued(udid) == 3; }));
    o.Session(udid, {{"DeviceInformation", DeviceInfo(i == 3 ? "=HYPERLINK(\"x\")" : "iPad " + std::to_string(i),
                                                      "SERIAL" + std::to_string(i))}});
  }
  REQUIRE(WaitFor([&] {
    Response r = o.Route("/devices?limit=1000");
    std::string next;
    return r.status == 200 && ListPage(r, &next).size() == all.size();
  }));
  Response mac_rec = o.Route("/devices/" + mac);
  REQUIRE(mac_rec.status == 200);
  Value mac_v = Json(mac_rec.body);
  CHECK(mac_v.Find("fields")->GetString("HostName") == "fruit.example.com");
  CHECK(mac_v.Find("fields")->GetBool("SecurityInfo.FirewallSettings.FirewallEnabled", false));

  // Authentication: the host answers 401 without the key, for every route.
  CHECK(o.Route("/devices", false).status == 401);
  CHECK(o.Route("/devices.csv", false).status == 401);
  CHECK(o.Route("/devices/" + ipad, false).status == 401);
  // Unknown routes and methods.
  CHECK(o.Route("/nothing").status == 404);
  CHECK(o.Route("/devices/UNKNOWN-DEVICE").status == 404);
  CHECK(o.Api("POST", std::string(kRoot) + "/devices").status == 405);

  // The JSON list, five per page: 12 devices, three pages, each once, in id order.
  auto walk_json = [&] {
    std::vector<std::string> seen;
    std::string after;
    int pages = 0;
    for (;;) {
      Response r = o.Route("/devices?limit=5" + (after.empty() ? "" : "&after=" + after));
      std::string next;
      auto ids = ListPage(r, &next);
      seen.insert(seen.end(), ids.begin(), ids.end());
      ++pages;
      if (next.empty()) {
        CHECK(r.Header("x-next-cursor").empty());
        break;
      }
      CHECK(ids.size() == 5);
      CHECK(r.Header("x-next-cursor") == next);  // ids here need no percent-encoding
      CHECK(r.Header("link") == "</plugins/inventory-export/devices?limit=5&after=" + next + ">; rel=\"next\"");
      after = next;
      REQUIRE(pages < 10);
    }
    CHECK(pages == 3);
    return seen;
  };
  const std::vector<std::string> json_ids = walk_json();
  CHECK(std::set<std::string>(json_ids.begin(), json_ids.end()) == all);
  CHECK(std::is_sorted(json_ids.begin(), json_ids.end()));

  // The CSV, five rows per page, following the Link header.
  auto walk_csv = [&] {
    std::string rows;
    std::string path = "/devices.csv?limit=5";
    int pages = 0;
    for (;;) {
      Response r = o.Route(path);
      REQUIRE(r.status == 200);
      CHECK(r.Header("content-type").rfind("text/csv", 0) == 0);
      REQUIRE(r.body.rfind("enrollment_id,serial_number,udid,device_name,", 0) == 0);
      rows += r.body.substr(r.body.find("\r\n") + 2);
      ++pages;
      const std::string link = r.Header("link");
      if (link.empty()) break;
      REQUIRE(link.rfind(std::string("<") + kRoot, 0) == 0);
      path = link.substr(1 + std::string(kRoot).size(), link.find('>') - 1 - std::string(kRoot).size());
      REQUIRE(pages < 10);
    }
    CHECK(pages == 3);
    return rows;
  };
  const std::string csv = walk_csv();
  size_t lines = 0;
  for (size_t p = 0; (p = csv.find("\r\n", p)) != std::string::npos; p += 2) ++lines;
  CHECK(lines == all.size());
  // "iPad12,1" has a comma: it is quoted.
  CHECK(csv.find(ipad + ",DMPXK2ABCD12,00008030-0011223344556677,Ana\xE2\x80\x99s iPad,MK2K3LL/A,\"iPad12,1\",18.1,") !=
        std::string::npos);
  CHECK(csv.find(",\"'=HYPERLINK(\"\"x\"\")\",") != std::string::npos);
  CHECK(IsStrictUtf8(csv));

  // A restart keeps everything.
  o.Restart();
  Response again = o.Route("/devices/" + ipad);
  REQUIRE(again.status == 200);
  CHECK(again.body == rec.body);
  CHECK(walk_json() == json_ids);
  CHECK(walk_csv() == csv);
  CHECK(o.Route("/devices/" + ipad + "/apps?limit=3").body == apps.body);
}

TEST_CASE("inventory-export with query_on_enroll off queues nothing at enrollment", "[integration][plugin][inventory]") {
  Orchard o("plugin.inventory-export.query_on_enroll = off\nplugin.inventory-export.refresh = off\n"
            "plugin.inventory-export.columns = serial_number,os_version\n");
  o.Start();
  const std::string udid = "0000BBBB-INVENTORY-IT-0001";
  o.Enroll(udid);
  // The plugin has handled the enrollment event (a positive barrier), and queued nothing.
  REQUIRE(WaitFor([&] { return o.PluginCounter("handled") >= 1; }));
  CHECK(o.Queued(udid) == 0);
  // An admin's DeviceInformation still lands in the inventory, and the CSV has the configured columns.
  auto r = HttpCall("POST", o.proc->url() + "/v1/commands",
                    R"({"enrollment_ids":[")" + udid + R"("],"command":{"RequestType":"DeviceInformation","Queries":["SerialNumber","OSVersion"]},"nopush":true})",
                    {std::string("X-API-Key: ") + kKey});
  INFO(r.body);
  REQUIRE(r.status == 200);
  o.Session(udid, {{"DeviceInformation", DeviceInfo("x", "C02XYZ")}});
  Response csv;
  REQUIRE(WaitFor([&] {
    csv = o.Route("/devices.csv");
    return csv.status == 200 && csv.body.find("C02XYZ") != std::string::npos;
  }));
  CHECK(csv.body == "serial_number,os_version\r\nC02XYZ,18.1\r\n");
}

TEST_CASE("inventory-export refuses a bad config section and orchardd reports it", "[integration][plugin][inventory]") {
  Orchard o("plugin.inventory-export.columns = serial number\n");
  o.Start();
  auto p = o.Api("GET", "/v1/plugins/inventory-export");
  REQUIRE(p.status == 200);
  Value v = Json(p.body);
  CHECK(v.GetString("status") == "error");
  CHECK(v.GetString("error") == "init_failed");
  CHECK(o.Log().find("plugin.inventory-export.columns") != std::string::npos);
}

TEST_CASE("inventory-export in orchardd with a simulated fleet of iPhones and Macs", "[integration][plugin][inventory]") {
  // Devices with certificates (proxy header), answering from the simulator's device state.
  const std::string dir = MakeTempDir("orchard-inventory-sim");
  const std::string plugins = dir + "/plugins";
  fs::create_directories(plugins);
  REQUIRE(chmod(plugins.c_str(), 0755) == 0);
  fs::copy_file(INVENTORY_EXPORT_SO, plugins + "/inventory-export.so");
  REQUIRE(chmod((plugins + "/inventory-export.so").c_str(), 0755) == 0);
  auto ca = orchard::testing::TestCa::Create("Device CA (inventory it)");
  REQUIRE(ca->WriteCertPem(dir + "/device-ca.pem"));
  REQUIRE(WriteFile(dir + "/orchard.conf", "plugin.dir = " + plugins +
                                               "\nplugin.inventory-export.columns = enrollment_id,serial_number,"
                                               "os_version,product_name,passcode_present,sip_enabled,app_count\n"));
  auto proc = std::make_unique<OrchardProcess>(
      dir + "/data",
      std::vector<std::string>{"--config", dir + "/orchard.conf", "--device-ca", dir + "/device-ca.pem", "--api-key", kKey});
  REQUIRE(proc->Start());

  orchard::sim::FleetOptions fo;
  fo.devices = 24;
  fo.seed = 0x1a7e;
  fo.macos_fraction = 0.25;
  fo.config.base_url = proc->url();
  fo.config.cert_mode = orchard::sim::CertMode::kHeader;
  auto fleet = orchard::sim::Fleet::Create(fo, std::move(ca));
  REQUIRE(fleet.ok());
  REQUIRE((*fleet)->Enroll(2).failed == 0);
  auto queued = [&](const std::string& id) {
    auto r = HttpCall("GET", proc->url() + "/v1/enrollments/" + id + "/queue", "", {std::string("X-API-Key: ") + kKey});
    auto v = orchard::plist::ParseJson(r.body);
    return r.status == 200 && v.ok() && v->Find("commands") ? v->Find("commands")->AsArray()->size() : size_t(0);
  };
  for (size_t i = 0; i < (*fleet)->size(); ++i) REQUIRE(WaitFor([&] { return queued((*fleet)->device(i).udid()) == 3; }, std::chrono::seconds(120)));
  auto sessions = (*fleet)->RunSessions(2);
  REQUIRE(sessions.failed == 0);
  CHECK(sessions.sessions.acknowledged == 3 * 24);

  // Every device's row, with what the simulator reported.
  std::map<std::string, std::vector<std::string>> rows;  // enrollment id -> fields
  auto complete = [](const std::vector<std::string>& f) {
    return f.size() == 7 && !f[2].empty() && !f[4].empty() && !f[6].empty();
  };
  REQUIRE(WaitFor([&] {
    Response r = Get(proc->url() + std::string(kRoot) + "/devices.csv?limit=1000");
    if (r.status != 200) return false;
    rows.clear();
    auto parsed = ParseCsv(r.body);
    REQUIRE(!parsed.empty());
    CHECK(parsed[0] == std::vector<std::string>{"enrollment_id", "serial_number", "os_version", "product_name",
                                                "passcode_present", "sip_enabled", "app_count"});
    for (size_t i = 1; i < parsed.size(); ++i)
      if (complete(parsed[i])) rows[parsed[i][0]] = parsed[i];
    return rows.size() == 24;
  }));
  size_t macs = 0;
  for (size_t i = 0; i < (*fleet)->size(); ++i) {
    const auto& st = (*fleet)->device(i).state();
    INFO(st.udid);
    REQUIRE(rows.count(st.udid) == 1);
    const auto& f = rows[st.udid];
    const bool mac = st.platform == orchard::sim::Platform::kMacos;
    macs += mac;
    CHECK(f[1] == st.serial_number);
    CHECK(f[2] == st.os_version);
    CHECK(f[3] == st.product_name);
    CHECK(f[4] == (st.passcode_present ? "true" : "false"));
    CHECK(f[5] == (mac ? "true" : ""));  // only Macs report SystemIntegrityProtectionEnabled
    CHECK(f[6] == std::to_string(st.apps.size()));
    Response apps = Get(proc->url() + std::string(kRoot) + "/devices/" + st.udid + "/apps?limit=1000");
    REQUIRE(apps.status == 200);
    CHECK(*Json(apps.body).Find("app_count")->AsInteger() == static_cast<int64_t>(st.apps.size()));
  }
  CHECK(macs > 0);
  fleet->reset();
  proc.reset();
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::remove(dir + "/data.log", ec);
}
