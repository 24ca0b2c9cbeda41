// Admin API hardening, end to end against the real orchardd: commands a device cannot
// parse are refused, every JSON answer is valid UTF-8 JSON whatever devices sent, every
// listing pages by count and bytes with opaque cursors, NanoMDM compatibility choices,
// and request fields cannot forge log lines.
#include <catch2/catch.hpp>

#include <filesystem>
#include <map>
#include <set>

#include "plist/plist.h"
#include "support/strict_utf8.h"
#include "support/orchardd_process.h"
#include "support/test_pki.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::testing;
using plist::Value;

namespace {

constexpr const char* kKey = "api-hardening-test-key-0001";
constexpr size_t kMaxResponse = 65536;  // api.max_response_bytes in these tests (the minimum)

struct Server {
  std::string dir = MakeTempDir("orchard-api");
  std::unique_ptr<TestCa> ca = TestCa::Create("API Device CA");
  std::unique_ptr<OrchardProcess> proc;

  explicit Server(std::string config = "", bool with_key = true) {
    REQUIRE(ca->WriteCertPem(dir + "/ca.pem"));
    REQUIRE(WriteFile(dir + "/orchard.conf", config));
    std::vector<std::string> args = {"--device-ca", dir + "/ca.pem", "--config", dir + "/orchard.conf"};
    if (with_key) args.insert(args.end(), {"--api-key", kKey});
    proc = std::make_unique<OrchardProcess>(dir + "/data", args);
    REQUIRE(proc->Start());
  }
  ~Server() {
    proc.reset();
    std::filesystem::remove_all(dir);
    std::filesystem::remove(dir + "/data.log");
  }

  HttpResult Device(const Identity& id, const std::string& body, bool checkin) {
    std::vector<std::string> h = {"Client-Cert: " + id.Rfc9440Header()};
    h.push_back(checkin ? "Content-Type: application/x-apple-aspen-mdm-checkin"
                        : "Content-Type: application/x-apple-aspen-mdm");
    return HttpCall("PUT", proc->url() + "/mdm", body, h);
  }
  HttpResult Api(const std::string& method, const std::string& path, const std::string& body = "") {
    return HttpCall(method, proc->url() + path, body, {std::string("X-API-Key: ") + kKey});
  }
};

Value S(const std::string& s) { return Value::String(s); }

std::string AuthenticateBody(const std::string& udid, const std::string& device_name = "iPhone") {
  Value v;
  v.Set("MessageType", S("Authenticate"));
  v.Set("UDID", S(udid));
  v.Set("SerialNumber", S("SN-" + udid));
  v.Set("DeviceName", S(device_name));
  v.Set("Topic", S("com.apple.mgmt.test"));
  return plist::ToXml(v);
}

std::string TokenUpdateBody(const std::string& udid) {
  Value v;
  v.Set("MessageType", S("TokenUpdate"));
  v.Set("UDID", S(udid));
  v.Set("Token", Value::DataValue(std::string(32, '\x07')));
  v.Set("PushMagic", S("magic"));
  v.Set("Topic", S("com.apple.mgmt.test"));
  return plist::ToXml(v);
}

std::string ReportBody(const std::string& udid, const std::string& status, const std::string& uuid = "") {
  Value v;
  v.Set("UDID", S(udid));
  v.Set("Status", S(status));
  if (!uuid.empty()) v.Set("CommandUUID", S(uuid));
  return plist::ToXml(v);
}

std::string CommandPlist(const std::string& uuid, const std::string& type, const std::string& filler = "") {
  Value cmd;
  cmd.Set("RequestType", S(type));
  if (!filler.empty()) cmd.Set("Filler", S(filler));
  Value v;
  v.Set("CommandUUID", S(uuid));
  v.Set("Command", cmd);
  return plist::ToXml(v);
}

void Enroll(Server& s, const Identity& id, const std::string& udid, const std::string& name = "iPhone") {
  REQUIRE(s.Device(id, AuthenticateBody(udid, name), true).status == 200);
  REQUIRE(s.Device(id, TokenUpdateBody(udid), true).status == 200);
}


// Strict JSON: UTF-8 text that our RFC 8259 parser reads (it refuses raw control characters).
Value StrictJson(const HttpResult& r) {
  INFO(r.body.substr(0, 300));
  REQUIRE(r.content_type.find("application/json") == 0);
  REQUIRE(IsStrictUtf8(r.body));
  auto v = plist::ParseJson(r.body, plist::Limits{64u << 20, 256});
  REQUIRE(v.ok());
  return v.value();
}

std::string Error(const HttpResult& r) {
  auto v = plist::ParseJson(r.body);
  return v.ok() ? std::string(v->GetString("error")) : "(not JSON) " + r.body;
}

// Follows next_cursor through every page of a listing; checks each page's size.
std::vector<Value> AllPages(Server& s, const std::string& path, const char* key, size_t* pages = nullptr) {
  std::vector<Value> items;
  std::string cursor;
  std::set<std::string> seen;
  size_t n = 0;
  for (;;) {
    std::string p = path + (path.find('?') == std::string::npos ? "?" : "&");
    if (!cursor.empty()) p += "cursor=" + PercentEncode(cursor);
    auto r = s.Api("GET", p);
    INFO(p << " -> " << r.status << " " << r.body.substr(0, 200));
    REQUIRE(r.status == 200);
    CHECK(r.body.size() <= kMaxResponse);
    Value v = StrictJson(r);
    REQUIRE(v.Find(key));
    for (const auto& e : *v.Find(key)->AsArray()) items.push_back(e);
    ++n;
    cursor = std::string(v.GetString("next_cursor"));
    if (cursor.empty()) break;
    REQUIRE(seen.insert(cursor).second);
    REQUIRE(n < 10000);
  }
  if (pages) *pages = n;
  return items;
}

std::string LimitConfig() { return "api.max_response_bytes = " + std::to_string(kMaxResponse) + "\n"; }

}  // namespace

// ---------------------------------------------------------------- 1. clean data in

TEST_CASE("raw enqueue refuses what a device cannot parse, naming what and where", "[integration][api]") {
  Server s;
  auto dev = s.ca->Issue();
  Enroll(s, dev, "CLEAN");
  const std::string head =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
      "<plist version=\"1.0\">\n";
  auto cmd = [&](const std::string& text) {
    return head + "<dict><key>CommandUUID</key><string>U-1</string><key>Command</key><dict>"
                  "<key>RequestType</key><string>Settings</string><key>Name</key><string>" +
           text + "</string></dict></dict></plist>\n";
  };
  const std::vector<std::pair<std::string, std::string>> bad = {
      {cmd("a&#0;b"), "character reference '&#0;' to U+0000"},
      {cmd("&#x1;"), "'&#x1;' to U+0001"},
      {cmd("&#xFFFE;"), "U+FFFE"},
      {cmd("&#xD800;"), "U+D800"},
      {cmd("raw\x01"), "character U+0001, which XML 1.0 does not allow"},
      {cmd("bad \xff utf8"), "invalid UTF-8 (byte 0xff)"},
      {cmd("\xED\xA0\x80"), "invalid UTF-8"},
      {cmd("&xxe;"), "undefined entity reference '&xxe;'"},
      {"<?xml version=\"1.0\"?>\n<!DOCTYPE plist [<!ENTITY x \"y\">]>\n<plist><dict/></plist>",
       "internal DTD subset"},
      {head + "<!ENTITY x \"y\"><dict/></plist>", "markup declaration '<!ENTITY'"},
  };
  for (const auto& [body, what] : bad) {
    auto r = s.Api("PUT", "/v1/enqueue/CLEAN?nopush=1", body);
    INFO(what << " -> " << r.body);
    CHECK(r.status == 400);
    CHECK(Error(r).find(what) != std::string::npos);
    CHECK(Error(r).find("at line ") != std::string::npos);
  }
  // Identifiers are logged and listed: no control characters even where XML allows them.
  std::string tab_type = head + "<dict><key>Command</key><dict><key>RequestType</key><string>Dev\tice</string>"
                                "</dict></dict></plist>";
  auto r = s.Api("PUT", "/v1/enqueue/CLEAN?nopush=1", tab_type);
  CHECK(r.status == 400);
  CHECK(Error(r).find("RequestType must be") != std::string::npos);
  r = s.Api("PUT", "/v1/enqueue/CLEAN?nopush=1", CommandPlist("A\nB", "Settings"));
  CHECK(r.status == 400);
  CHECK(Error(r) == "CommandUUID must not contain control characters");
  CHECK(StrictJson(s.Api("GET", "/v1/enrollments/CLEAN/queue")).Find("commands")->AsArray()->empty());

  // The standard DOCTYPE line, comments and other layouts are fine; the device gets the
  // command re-serialized (what the server checked and lists), equal to the input when
  // that is already in the canonical form.
  std::string odd = head + "<!-- built by hand -->\n<dict>\n  <key>CommandUUID</key> <string>U-2</string>\n"
                           "  <key>Command</key><dict><key>RequestType</key><string>ProfileList</string>"
                           "<key>Note</key><string>R&amp;D &#x263A; &#9;</string></dict>\n</dict></plist>";
  REQUIRE(s.Api("PUT", "/v1/enqueue/CLEAN?nopush=1", odd).status == 200);
  REQUIRE(s.Api("PUT", "/v1/enqueue/CLEAN?nopush=1", CommandPlist("U-3", "DeviceInformation")).status == 200);
  auto first = s.Device(dev, ReportBody("CLEAN", "Idle"), false);
  REQUIRE(first.status == 200);
  auto parsed = plist::ParseXml(odd);
  REQUIRE(parsed.ok());
  CHECK(first.body == plist::ToXml(*parsed));
  CHECK(first.body.find("<!--") == std::string::npos);
  auto second = s.Device(dev, ReportBody("CLEAN", "Acknowledged", "U-2"), false);
  CHECK(second.body == CommandPlist("U-3", "DeviceInformation"));  // canonical input: byte for byte
}

TEST_CASE("JSON commands with characters a device cannot parse are refused", "[integration][api]") {
  Server s;
  auto dev = s.ca->Issue();
  Enroll(s, dev, "JS");
  auto post = [&](const std::string& command) {
    return s.Api("POST", "/v1/commands", R"({"enrollment_ids":["JS"],"nopush":true,"command":)" + command + "}");
  };
  auto r = post(R"({"RequestType":"Settings","Message":"a\u0000b"})");
  CHECK(r.status == 400);
  CHECK(Error(r) == "command: string at /Command/Message contains U+0000, which XML 1.0 does not allow (byte 1)");
  r = post(R"({"RequestType":"Settings","Items":["ok","\u001f"]})");
  CHECK(r.status == 400);
  CHECK(Error(r).find("/Command/Items/1 contains U+001F") != std::string::npos);
  r = post(R"({"RequestType":"Settings","Message":"\uFFFE"})");
  CHECK(r.status == 400);
  r = post(R"({"RequestType":"Settings","K\u0001":1})");
  CHECK(r.status == 400);
  CHECK(Error(r).find("key at /Command/K\\x01 contains U+0001") != std::string::npos);
  r = post("{\"RequestType\":\"Settings\",\"Message\":\"raw \xC3\x28\"}");
  CHECK(r.status == 400);
  CHECK(Error(r).find("/Command/Message is not valid UTF-8") != std::string::npos);
  r = post(R"({"RequestType":"Settings","Message":"\ud800"})");  // lone surrogate
  CHECK(r.status == 400);
  CHECK(Error(r).find("unpaired high surrogate") != std::string::npos);
  r = post(R"({"RequestType":"Settings","Message":"\udc00x"})");
  CHECK(r.status == 400);
  CHECK(StrictJson(s.Api("GET", "/v1/enrollments/JS/queue")).Find("commands")->AsArray()->empty());
  // Valid text, including non-BMP characters through a surrogate pair, is queued.
  r = post(R"({"RequestType":"Settings","Message":"caf\u00e9 \ud83d\ude00 \t"})");
  CHECK(r.status == 200);
}

// ---------------------------------------------------------------- 2. valid JSON always

TEST_CASE("every JSON answer is valid UTF-8 when a device sent invalid UTF-8 and control characters",
          "[integration][api]") {
  Server s;
  auto dev = s.ca->Issue();
  // pugixml reads raw bytes as they come: invalid UTF-8 and C0 controls reach the store.
  const std::string nasty = "Bad\xff\xfe Name \x01\x1b[31m \xC0\xAF \xED\xA0\x80 end\xE2\x82";
  Enroll(s, dev, "NASTY", nasty);
  REQUIRE(s.Api("PUT", "/v1/enqueue/NASTY?nopush=1", CommandPlist("C-1", "ProfileList")).status == 200);
  REQUIRE(s.Device(dev, ReportBody("NASTY", "Idle"), false).status == 200);
  std::string report =
      "<plist><dict><key>UDID</key><string>NASTY</string><key>Status</key><string>Error</string>"
      "<key>CommandUUID</key><string>C-1</string><key>ErrorChain</key><array><dict>"
      "<key>LocalizedDescription</key><string>" + nasty + "</string><key>ErrorCode</key><integer>1</integer>"
      "</dict></array><key>Extra\xff</key><string>" + nasty + "</string></dict></plist>";
  REQUIRE(s.Device(dev, report, false).status == 200);

  Value one = StrictJson(s.Api("GET", "/v1/enrollments/NASTY"));
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(one.GetString("device_name").find("Bad" + fffd + fffd + " Name \x01\x1b[31m") == 0);
  Value list = StrictJson(s.Api("GET", "/v1/enrollments"));
  CHECK(list.Find("enrollments")->AsArray()->size() == 1);
  StrictJson(s.Api("GET", "/v1/enrollments?serial=SN-NASTY"));
  StrictJson(s.Api("GET", "/v1/enrollments/NASTY/queue"));
  Value results = StrictJson(s.Api("GET", "/v1/enrollments/NASTY/results"));
  REQUIRE(results.Find("results")->AsArray()->size() == 1);
  Value result = StrictJson(s.Api("GET", "/v1/enrollments/NASTY/results/C-1"));
  CHECK(result.Find("response")->Find("Extra" + fffd) != nullptr);
  Value events = StrictJson(s.Api("GET", "/v1/events?limit=1000"));
  CHECK(events.Find("events")->AsArray()->size() >= 4);
  StrictJson(s.Api("PUT", "/v1/block/NASTY"));  // 404 error body
  StrictJson(s.Api("PUT", "/v1/enrollments/NASTY/block"));
  StrictJson(s.Api("POST", "/v1/push/NASTY," + PercentEncode("X\xff\x01")));
  StrictJson(s.Api("GET", "/v1/enrollments/" + PercentEncode("no\xff\x01such")));
  // The raw report is still available byte for byte.
  CHECK(s.Api("GET", "/v1/enrollments/NASTY/results/C-1?format=plist").body == report);
}

// ---------------------------------------------------------------- 3. bounded responses

TEST_CASE("the queue pages by count and by bytes, each command exactly once in order", "[integration][api]") {
  Server s(LimitConfig());
  auto dev = s.ca->Issue();
  Enroll(s, dev, "Q");
  std::vector<std::string> sent;
  const int n = 400;  // ~200 bytes each in the listing: more than one 64 KiB page
  for (int i = 0; i < n; ++i) {
    // Priorities shuffle the delivery order; equal priorities stay FIFO.
    auto r = s.Api("POST", "/v1/commands",
                   R"({"enrollment_ids":["Q"],"nopush":true,"priority":)" + std::to_string(i % 3) +
                       R"(,"command":{"RequestType":"Settings"}})");
    REQUIRE(r.status == 200);
    sent.emplace_back(StrictJson(r).GetString("command_uuid"));
  }
  std::vector<std::string> expected;
  for (int p = 2; p >= 0; --p)
    for (int i = 0; i < n; ++i)
      if (i % 3 == p) expected.push_back(sent[static_cast<size_t>(i)]);
  // Count-bound pages.
  size_t pages = 0;
  auto items = AllPages(s, "/v1/enrollments/Q/queue?limit=7", "commands", &pages);
  std::vector<std::string> got;
  for (const auto& c : items) got.emplace_back(c.GetString("command_uuid"));
  CHECK(got == expected);
  CHECK(pages == 58);  // 400 / 7, rounded up
  // Byte-bound pages: the default count (1000) would not fit in 64 KiB.
  items = AllPages(s, "/v1/enrollments/Q/queue", "commands", &pages);
  got.clear();
  for (const auto& c : items) got.emplace_back(c.GetString("command_uuid"));
  CHECK(got == expected);
  CHECK(pages >= 2);
  // Bad cursors are refused clearly.
  auto bad = s.Api("GET", "/v1/enrollments/Q/queue?cursor=%%%");
  CHECK(bad.status == 400);
  CHECK(Error(bad) == "cursor is not one this server issued");
  auto first = StrictJson(s.Api("GET", "/v1/enrollments/Q/queue?limit=1"));
  auto other = s.Api("GET", "/v1/events?cursor=" + std::string(first.GetString("next_cursor")));
  CHECK(other.status == 400);
  CHECK(Error(other) == "cursor belongs to another listing");
}

TEST_CASE("results page newest first by count and bytes, each once", "[integration][api]") {
  Server s(LimitConfig());
  auto dev = s.ca->Issue();
  Enroll(s, dev, "R");
  const int n = 60;
  for (int i = 0; i < n; ++i)
    REQUIRE(s.Api("PUT", "/v1/enqueue/R?nopush=1", CommandPlist("R-" + std::to_string(i), "ProfileList")).status == 200);
  auto reply = s.Device(dev, ReportBody("R", "Idle"), false);
  for (int i = 0; i < n; ++i) {
    REQUIRE(reply.status == 200);
    const std::string uuid = "R-" + std::to_string(i);
    REQUIRE(plist::ParseXml(reply.body)->GetString("CommandUUID") == uuid);
    // Error reports with a 2 KB error chain: 60 of them do not fit one 64 KiB page.
    Value chain;
    chain.Set("LocalizedDescription", S(std::string(2000, 'e')));
    Value r;
    r.Set("UDID", S("R"));
    r.Set("Status", S("Error"));
    r.Set("CommandUUID", S(uuid));
    r.Set("ErrorChain", Value::MakeArray({chain}));
    reply = s.Device(dev, plist::ToXml(r), false);
  }
  size_t pages = 0;
  auto items = AllPages(s, "/v1/enrollments/R/results?limit=10000", "results", &pages);
  CHECK(pages >= 2);
  REQUIRE(items.size() == static_cast<size_t>(n));
  std::set<std::string> uuids;
  std::string prev_time = "9999";
  for (const auto& r : items) {
    uuids.emplace(r.GetString("command_uuid"));
    CHECK(std::string(r.GetString("received_at")) <= prev_time);  // newest first
    prev_time = r.GetString("received_at");
  }
  CHECK(uuids.size() == static_cast<size_t>(n));
  items = AllPages(s, "/v1/enrollments/R/results?limit=7", "results", &pages);
  CHECK(items.size() == static_cast<size_t>(n));
  CHECK(pages == 9);
}

TEST_CASE("enrollments, events and push certificates page with cursors, items too big are truncated",
          "[integration][api]") {
  Server s(LimitConfig());
  const int n = 80;
  for (int i = 0; i < n; ++i) {
    auto dev = s.ca->Issue();
    char id[16];
    std::snprintf(id, sizeof id, "E%03d", i);
    // ~1 KB per enrollment (DeviceName is limited to 1024 bytes): several pages.
    Enroll(s, dev, id, std::string(1000, 'n'));
  }
  size_t pages = 0;
  auto items = AllPages(s, "/v1/enrollments?limit=1000", "enrollments", &pages);
  CHECK(pages >= 2);
  REQUIRE(items.size() == static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "E%03d", i);
    CHECK(items[static_cast<size_t>(i)].GetString("id") == id);
  }
  items = AllPages(s, "/v1/enrollments?limit=4&state=enrolled", "enrollments", &pages);
  CHECK(items.size() == static_cast<size_t>(n));
  CHECK(pages == 20);

  // Events: every seq once, increasing, across byte-bound pages (Authenticate payloads are ~1 KB).
  auto events = AllPages(s, "/v1/events?limit=10000", "events", &pages);
  CHECK(pages >= 2);
  CHECK(events.size() == static_cast<size_t>(3 * n));  // authenticated, token_updated, enrolled
  int64_t last = 0;
  for (const auto& e : events) {
    CHECK(*e.Find("seq")->AsInteger() > last);
    last = *e.Find("seq")->AsInteger();
  }
  // last_seq still works for followers; after and cursor are exclusive.
  Value page = StrictJson(s.Api("GET", "/v1/events?limit=3"));
  CHECK(*page.Find("last_seq")->AsInteger() == *page.Find("events")->AsArray()->back().Find("seq")->AsInteger());
  CHECK(s.Api("GET", "/v1/events?after=1&cursor=" + std::string(page.GetString("next_cursor"))).status == 400);
  Value tail = StrictJson(s.Api("GET", "/v1/events?after=" + std::to_string(last)));
  CHECK(tail.Find("events")->AsArray()->empty());
  CHECK(tail.GetString("next_cursor").empty());
  CHECK(*tail.Find("last_seq")->AsInteger() == last);

  // One item larger than the whole budget: shortened and flagged, never over the limit.
  // Device strings that are stored have length limits, so the enrollment stays
  // small; an unknown key of the Authenticate message makes its event large.
  auto big = s.ca->Issue();
  {
    auto body = plist::ParseXml(AuthenticateBody("F-BIG"));
    REQUIRE(body.ok());
    body->Set("Padding", S(std::string(100000, 'x')));
    REQUIRE(s.Device(big, plist::ToXml(*body), true).status == 200);
    REQUIRE(s.Device(big, TokenUpdateBody("F-BIG"), true).status == 200);
  }
  auto one = s.Api("GET", "/v1/enrollments/F-BIG");
  CHECK(one.status == 200);
  CHECK(one.body.size() <= kMaxResponse);
  items = AllPages(s, "/v1/events?after=" + std::to_string(last), "events");
  REQUIRE(items.size() == 3);
  CHECK(items[0].GetBool("truncated", false));
  CHECK(items[0].Find("payload") == nullptr);
  CHECK(items[1].GetBool("truncated", false) == false);
  CHECK(items[2].GetString("type") == "enrollment.enrolled");

  // A report larger than the budget: the JSON answer leaves it out; the plist is refused clearly.
  REQUIRE(s.Api("PUT", "/v1/enqueue/F-BIG?nopush=1", CommandPlist("BIG-1", "ProfileList")).status == 200);
  REQUIRE(s.Device(big, ReportBody("F-BIG", "Idle"), false).status == 200);
  Value huge;
  huge.Set("UDID", S("F-BIG"));
  huge.Set("Status", S("Acknowledged"));
  huge.Set("CommandUUID", S("BIG-1"));
  huge.Set("ProfileList", Value::MakeArray({S(std::string(200000, 'y'))}));
  REQUIRE(s.Device(big, plist::ToXml(huge), false).status == 200);
  auto res = s.Api("GET", "/v1/enrollments/F-BIG/results/BIG-1");
  CHECK(res.status == 200);
  CHECK(res.body.size() <= kMaxResponse);
  Value rv = StrictJson(res);
  CHECK(rv.GetBool("response_truncated", false));
  CHECK(rv.Find("response") == nullptr);
  CHECK(rv.GetString("status") == "Acknowledged");
  auto raw = s.Api("GET", "/v1/enrollments/F-BIG/results/BIG-1?format=plist");
  CHECK(raw.status == 413);
  CHECK(Error(raw).find("over api.max_response_bytes (65536)") != std::string::npos);

  // Push certificates: three topics, pages of one.
  for (const char* topic : {"com.apple.mgmt.b", "com.apple.mgmt.a", "com.apple.mgmt.c"}) {
    auto cert = s.ca->Issue({.common_name = "push", .uid = topic});
    REQUIRE(s.Api("PUT", "/v1/pushcert?force=true", cert.cert_pem + cert.key_pem).status == 200);
  }
  items = AllPages(s, "/v1/pushcerts?limit=1", "push_certs", &pages);
  CHECK(pages == 3);
  REQUIRE(items.size() == 3);
  CHECK(items[0].GetString("topic") == "com.apple.mgmt.a");
  CHECK(items[2].GetString("topic") == "com.apple.mgmt.c");
}

TEST_CASE("a multi-id request whose answer could exceed the limit is refused", "[integration][api]") {
  Server s(LimitConfig());
  std::string ids;
  for (int i = 0; i < 80; ++i) ids += (ids.empty() ? "" : ",") + std::string("ID-") + std::to_string(i);
  auto r = s.Api("POST", "/v1/push/" + ids);
  CHECK(r.status == 400);
  CHECK(Error(r).find("send fewer ids per request") != std::string::npos);
  CHECK(s.Api("POST", "/v1/push/ID-1,ID-2").status == 500);
}

// ---------------------------------------------------------------- 4. NanoMDM drop-in

TEST_CASE("the version is public as in NanoMDM", "[integration][api][nanomdm]") {
  Server s;
  auto v = HttpCall("GET", s.proc->url() + "/version");
  CHECK(v.status == 200);
  CHECK(!StrictJson(v).GetString("version").empty());
  CHECK(HttpCall("GET", s.proc->url() + "/v1/enrollments").status == 401);  // the rest is not
  Server disabled("", /*with_key=*/false);
  CHECK(HttpCall("GET", disabled.proc->url() + "/version").status == 200);
  CHECK(HttpCall("GET", disabled.proc->url() + "/v1/enrollments").status == 403);
}

TEST_CASE("a CommandUUID names one command per enrollment: reuse is a per-id error", "[integration][api][nanomdm]") {
  Server s;
  auto a = s.ca->Issue();
  auto b = s.ca->Issue();
  Enroll(s, a, "A");
  Enroll(s, b, "B");
  REQUIRE(s.Api("PUT", "/v1/enqueue/A?nopush=1", CommandPlist("SAME", "ProfileList")).status == 200);
  // Still queued for A: refused for A (500: every id failed), queued for B (207 mixed).
  auto again = s.Api("PUT", "/v1/enqueue/A?nopush=1", CommandPlist("SAME", "ProfileList"));
  CHECK(again.status == 500);
  CHECK(StrictJson(again).Find("status")->Find("A")->GetString("command_error") ==
        "command SAME is already queued for A");
  auto mixed = s.Api("PUT", "/v1/enqueue/A,B?nopush=1", CommandPlist("SAME", "ProfileList"));
  CHECK(mixed.status == 207);
  // Finished on A (its result is stored): still refused for A.
  REQUIRE(s.Device(a, ReportBody("A", "Idle"), false).status == 200);
  REQUIRE(s.Device(a, ReportBody("A", "Acknowledged", "SAME"), false).status == 200);
  auto after = s.Api("PUT", "/v1/enqueue/A?nopush=1", CommandPlist("SAME", "ProfileList"));
  CHECK(after.status == 500);
  CHECK(StrictJson(after).Find("status")->Find("A")->GetString("command_error") ==
        "command SAME was already used for A (its result is stored); use a new CommandUUID");
  CHECK(StrictJson(s.Api("GET", "/v1/enrollments/A/queue")).Find("commands")->AsArray()->empty());
  CHECK(StrictJson(s.Api("GET", "/v1/enrollments/A/results/SAME")).GetString("status") == "Acknowledged");
}

// ---------------------------------------------------------------- 5. log injection

TEST_CASE("request fields cannot forge log lines", "[integration][api][log]") {
  Server s;
  auto dev = s.ca->Issue();
  Enroll(s, dev, "LOG");
  // A newline in a CommandUUID or RequestType (as a character reference) is refused.
  CHECK(s.Api("PUT", "/v1/enqueue/LOG?nopush=1",
              "<plist><dict><key>CommandUUID</key><string>X&#10;event=forged_uuid</string><key>Command</key>"
              "<dict><key>RequestType</key><string>Settings</string></dict></dict></plist>").status == 400);
  CHECK(s.Api("PUT", "/v1/enqueue/LOG?nopush=1",
              "<plist><dict><key>Command</key><dict><key>RequestType</key>"
              "<string>Settings&#13;&#10;event=forged_type</string></dict></dict></plist>").status == 400);
  // Ids and UUIDs from paths are logged escaped.
  REQUIRE(s.Api("PUT", "/v1/enqueue/LOG?nopush=1", CommandPlist("OK-1", "Settings")).status == 200);
  CHECK(s.Api("DELETE", "/v1/enrollments/LOG/queue/OK-1").status == 200);
  CHECK(s.Api("DELETE", "/v1/enrollments/LOG/queue/OK%0Aevent=forged_path").status == 404);
  REQUIRE(s.Api("PUT", "/v1/enrollments/LOG/block").status == 200);
  s.proc->Stop();
  const std::string log = ReadFile(s.proc->log_path());
  CHECK(log.find("event=queued_command_deleted enrollment_id=LOG command_uuid=OK-1") != std::string::npos);
  CHECK(log.find("\nevent=forged") == std::string::npos);
  CHECK(log.find("\r\nevent=forged") == std::string::npos);
}
