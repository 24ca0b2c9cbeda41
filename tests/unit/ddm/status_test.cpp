// DDM status (core/ddm/status.cpp): StatusReport parsing (checked against
// Apple's status-item schemas in tests/fixtures/apple-device-management/declarative/status), hostile input,
// merging into the per-enrollment store, and the reads.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ddm/status.h"
#include "store/store.h"
#include "support/fixtures.h"

using namespace orchard;
using namespace orchard::ddm;

namespace {

struct TempDb {
  std::string dir;
  std::unique_ptr<store::Store> db;
  TempDb() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "orchard-ddm-status-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    Open();
  }
  void Open() {
    auto s = store::Store::Open({.path = dir + "/db"});
    REQUIRE(s.ok());
    db = std::move(s.value());
  }
  void Reopen() {
    db.reset();
    Open();
  }
  ~TempDb() {
    db.reset();
    std::filesystem::remove_all(dir);
  }
};

ParsedReport Parse(const std::string& json, const StatusLimits& limits = {}) {
  auto r = ParseStatusReport(json, limits);
  INFO(json.substr(0, 200));
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return std::move(r.value());
}

Code ParseCode(const std::string& json, const StatusLimits& limits = {}) {
  auto r = ParseStatusReport(json, limits);
  if (!r.ok()) CHECK_FALSE(r.status().message().empty());
  return r.status().code();
}

// Parses, applies and commits json for enrollment e.
ApplyResult ApplyJson(TempDb& t, StatusStore& s, const std::string& e, const std::string& json, int64_t now = 1000) {
  ParsedReport p = Parse(json, s.limits());
  store::Batch b;
  auto r = s.Apply(b, e, p, json, now);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  REQUIRE(t.db->Write(b).ok());
  return std::move(r.value());
}

std::optional<std::string> ItemOf(StatusStore& s, const std::string& e, const std::string& item) {
  auto v = s.Item(e, item);
  REQUIRE(v.ok());
  return *v;
}

std::map<std::string, std::string> ItemMap(const ParsedReport& p) {
  return std::map<std::string, std::string>(p.items.begin(), p.items.end());
}

// ---- Apple's status schemas ----
// A reader for the fields of tests/fixtures/apple-device-management/declarative/status/*.yaml these tests
// use: statusitemtype and each key's name, type, rangelist and subkeys ("- key:"
// list items whose fields sit two columns right of the dash), with the YAML
// anchors Apple uses on subkeys ("subkeys: &id001" ... "subkeys: *id001").
// Not a YAML parser.
struct SchemaKey {
  std::string name, type;
  std::vector<std::string> rangelist;
  std::vector<SchemaKey> subkeys;
};
struct StatusSchema {
  std::string item;  // statusitemtype
  SchemaKey key;     // the item's value
};

size_t Indent(const std::string& l) {
  size_t n = 0;
  while (n < l.size() && l[n] == ' ') ++n;
  return n;
}
std::string Unquote(std::string v) {
  while (!v.empty() && (v.back() == ' ' || v.back() == '\r')) v.pop_back();
  if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front()) v = v.substr(1, v.size() - 2);
  return v;
}

StatusSchema ReadStatusSchema(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  StatusSchema out;
  size_t i = 0;
  for (; i < lines.size() && lines[i] != "payloadkeys:"; ++i)
    if (lines[i].rfind("  statusitemtype: ", 0) == 0) out.item = Unquote(lines[i].substr(18));
  ++i;
  std::map<std::string, std::vector<SchemaKey>> anchors;
  std::function<std::vector<SchemaKey>(size_t)> list = [&](size_t col) {
    std::vector<SchemaKey> keys;
    while (i < lines.size()) {
      const std::string& l = lines[i];
      if (l.empty()) {
        ++i;
        continue;
      }
      const size_t ind = Indent(l);
      if (ind < col || (ind == col && l.compare(ind, 7, "- key: ") != 0)) break;
      if (ind > col) {
        ++i;
        continue;
      }
      SchemaKey k;
      k.name = Unquote(l.substr(ind + 7));
      ++i;
      const size_t field = col + 2;
      while (i < lines.size()) {
        const std::string& f = lines[i];
        if (f.empty()) {
          ++i;
          continue;
        }
        const size_t fi = Indent(f);
        if (fi < field) break;
        if (fi > field) {
          ++i;
          continue;
        }
        const std::string body = f.substr(fi);
        if (body.rfind("type: ", 0) == 0) k.type = Unquote(body.substr(6));
        if (body == "rangelist:") {
          ++i;
          while (i < lines.size() && Indent(lines[i]) == field && lines[i].compare(field, 2, "- ") == 0)
            k.rangelist.push_back(Unquote(lines[i++].substr(field + 2)));
          continue;
        }
        if (body.rfind("subkeys:", 0) == 0) {
          std::string anchor = Unquote(body.substr(8));  // "", "&id001" or "*id001"
          anchor.erase(0, anchor.find_first_not_of(' ') == std::string::npos ? anchor.size()
                                                                              : anchor.find_first_not_of(' '));
          ++i;
          if (!anchor.empty() && anchor[0] == '*') {
            k.subkeys = anchors[anchor.substr(1)];
          } else {
            k.subkeys = list(field);
            if (!anchor.empty() && anchor[0] == '&') anchors[anchor.substr(1)] = k.subkeys;
          }
          continue;
        }
        ++i;
      }
      keys.push_back(std::move(k));
    }
    return keys;
  };
  std::vector<SchemaKey> top = list(0);
  if (!top.empty()) out.key = top[0];
  return out;
}

std::vector<StatusSchema> LoadStatusSchemas() {
  std::vector<StatusSchema> out;
  for (const auto& e : std::filesystem::directory_iterator(testing::FixturePath("apple-device-management/declarative/status"))) {
    if (e.path().extension() != ".yaml") continue;
    StatusSchema s = ReadStatusSchema(e.path().string());
    INFO(e.path().string());
    REQUIRE_FALSE(s.item.empty());
    REQUIRE(s.key.name == s.item);
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.item < b.item; });
  return out;
}

std::string Quoted(const std::string& s) { return "\"" + s + "\""; }

// The subkeys of a dictionary as generated: "_removed" left out (it would
// make a removal marker), "ANY" named "any"; sorted by name.
std::map<std::string, const SchemaKey*> DictKeys(const SchemaKey& k) {
  std::map<std::string, const SchemaKey*> out;
  for (const SchemaKey& s : k.subkeys)
    if (s.name != "_removed") out[s.name == "ANY" ? "any" : s.name] = &s;
  return out;
}

// A canonical JSON value of k's declared type; strings name their path.
std::string Gen(const SchemaKey& k, const std::string& path) {
  if (k.type == "<string>") return Quoted(k.rangelist.empty() ? path : k.rangelist[0]);
  if (k.type == "<any>") return Quoted(path);
  if (k.type == "<data>") return Quoted("MIIBAgMEBQ==");
  if (k.type == "<integer>") return "7";
  if (k.type == "<real>") return "2.5";
  if (k.type == "<boolean>") return "true";
  if (k.type == "<array>") return k.subkeys.size() == 1 ? "[" + Gen(k.subkeys[0], path + "[]") + "]" : "[]";
  if (k.type == "<dictionary>") {
    std::string out = "{";
    for (const auto& [name, sub] : DictKeys(k)) {
      if (out.size() > 1) out += ",";
      out += Quoted(name) + ":" + Gen(*sub, path + "." + name);
    }
    return out + "}";
  }
  FAIL("unknown schema type " << k.type << " at " << path);
  return "";
}

// The items a value generated by Gen becomes: dictionaries recurse into
// dotted names, an empty one is an item "{}", everything else is one item.
void ExpectedItems(const SchemaKey& k, const std::string& path, std::map<std::string, std::string>* out) {
  if (k.type != "<dictionary>") {
    (*out)[path] = Gen(k, path);
    return;
  }
  const auto keys = DictKeys(k);
  if (keys.empty()) (*out)[path] = "{}";
  for (const auto& [name, sub] : keys) ExpectedItems(*sub, path + "." + name, out);
}

// {"StatusItems":{"a":{"b":<value>}}} for item "a.b".
std::string ReportWith(const std::string& item, const std::string& value) {
  std::string head, tail;
  size_t start = 0;
  while (true) {
    const size_t dot = item.find('.', start);
    head += Quoted(item.substr(start, dot == std::string::npos ? std::string::npos : dot - start)) + ":";
    if (dot == std::string::npos) break;
    head += "{";
    tail += "}";
    start = dot + 1;
  }
  return "{\"StatusItems\":{" + head + value + tail + "},\"Errors\":[],\"FullReport\":false}";
}

const std::string kExample =
    R"({"StatusItems":{"device":{"operating-system":{"version":"26.0"}},"softwareupdate":{"install-state":"downloading"},)"
    R"("management":{"declarations":{"activations":[],"assets":[],"management":[],"configurations":[{"identifier":"cfg.os-floor",)"
    R"("server-token":"c3a1","active":true,"valid":"valid"}]}}},"Errors":[],"FullReport":false})";

std::string Declarations(const std::string& configurations, const std::string& activations = "") {
  return R"({"StatusItems":{"management":{"declarations":{"activations":[)" + activations +
         R"(],"assets":[],"management":[],"configurations":[)" + configurations + "]}}}}";
}
std::string Decl(const std::string& id, const std::string& token, bool active = true, const std::string& valid = "valid") {
  return R"({"identifier":")" + id + R"(","server-token":")" + token + R"(","active":)" + (active ? "true" : "false") +
         R"(,"valid":")" + valid + "\"}";
}

}  // namespace

TEST_CASE("ddm status parse: the example report gives two items and one declaration status", "[ddm][status]") {
  const ParsedReport p = Parse(kExample);
  CHECK_FALSE(p.full);
  REQUIRE(p.items.size() == 2);
  CHECK(p.items[0] == std::pair<std::string, std::string>("device.operating-system.version", "\"26.0\""));
  CHECK(p.items[1] == std::pair<std::string, std::string>("softwareupdate.install-state", "\"downloading\""));
  CHECK(p.removed.empty());
  CHECK(p.has_declarations);
  REQUIRE(p.declarations.size() == 1);
  const DeclarationStatus& d = p.declarations[0];
  CHECK(d.identifier == "cfg.os-floor");
  CHECK(d.kind == Kind::kConfiguration);
  CHECK(d.server_token == "c3a1");
  CHECK(d.active);
  CHECK(d.valid == "valid");
  CHECK(d.reasons.empty());
  CHECK(p.errors.empty());

  const ParsedReport none = Parse(R"({"StatusItems":{"passcode":{"is-present":true}},"FullReport":true})");
  CHECK(none.full);
  CHECK_FALSE(none.has_declarations);
  CHECK(ItemMap(none) == std::map<std::string, std::string>{{"passcode.is-present", "true"}});
  CHECK(Parse("{}").items.empty());
}

TEST_CASE("ddm status parse: every status item of Apple's schemas lands as its stored item", "[ddm][status]") {
  const auto schemas = LoadStatusSchemas();
  REQUIRE(schemas.size() >= 40);
  TempDb t;
  StatusStore s(t.db.get());
  size_t checked = 0;
  for (const StatusSchema& schema : schemas) {
    INFO(schema.item);
    const std::string value = Gen(schema.key, schema.item);
    const std::string json = ReportWith(schema.item, value);
    INFO(json);
    const ParsedReport p = Parse(json);
    if (schema.item == "management.declarations") {
      CHECK(p.items.empty());
      REQUIRE(p.has_declarations);
      REQUIRE(p.declarations.size() == 4);
      const Kind kinds[] = {Kind::kActivation, Kind::kConfiguration, Kind::kAsset, Kind::kManagement};
      const char* plural[] = {"activations", "configurations", "assets", "management"};
      for (size_t i = 0; i < 4; ++i) {
        const DeclarationStatus& d = p.declarations[i];
        const std::string base = "management.declarations." + std::string(plural[i]) + "[]";
        CHECK(d.kind == kinds[i]);
        CHECK(d.identifier == base + ".identifier");
        CHECK(d.server_token == base + ".server-token");
        CHECK(d.active);
        CHECK(d.valid == "unknown");
        REQUIRE(d.reasons.size() == 1);
        CHECK(d.reasons[0].code == base + ".reasons[].code");
        CHECK(d.reasons[0].description == base + ".reasons[].description");
        CHECK(d.reasons[0].details_json == "{\"any\":\"" + base + ".reasons[].details.any\"}");
      }
      ++checked;
      continue;
    }
    std::map<std::string, std::string> expected;
    ExpectedItems(schema.key, schema.item, &expected);
    CHECK(ItemMap(p) == expected);
    CHECK_FALSE(p.has_declarations);
    // Applied, each lands as the stored item of that name.
    store::Batch b;
    auto r = s.Apply(b, "E1", p, json, 1);
    REQUIRE(r.ok());
    REQUIRE(t.db->Write(b).ok());
    for (const auto& [name, v] : expected) CHECK(ItemOf(s, "E1", name) == v);
    CHECK(r->capabilities_changed == (schema.item == "management.client-capabilities"));
    ++checked;
  }
  CHECK(checked == schemas.size());
  // Spot checks of what the generator made.
  CHECK(ItemOf(s, "E1", "device.operating-system.version") == "\"device.operating-system.version\"");
  CHECK(ItemOf(s, "E1", "device.power.battery-health") == "\"non-genuine\"");
  CHECK(ItemOf(s, "E1", "test.integer-value") == "7");
  CHECK(ItemOf(s, "E1", "test.real-value") == "2.5");
  CHECK(ItemOf(s, "E1", "passcode.is-compliant") == "true");
  CHECK(ItemOf(s, "E1", "test.dictionary-value.key1") == "\"test.dictionary-value.key1\"");
  CHECK(ItemOf(s, "E1", "test.dictionary-value") == std::nullopt);
  auto apps = ItemOf(s, "E1", "app.managed.list");
  REQUIRE(apps);
  CHECK(apps->find("\"identifier\":\"app.managed.list[].identifier\"") != std::string::npos);
}

TEST_CASE("ddm status parse: hostile input is refused with InvalidArgument, not a crash", "[ddm][status]") {
  const StatusLimits l;
  CHECK(ParseCode("not json") == Code::kInvalidArgument);
  CHECK(ParseCode("") == Code::kInvalidArgument);
  CHECK(ParseCode("   ") == Code::kInvalidArgument);
  CHECK(ParseCode("[1,2]") == Code::kInvalidArgument);
  CHECK(ParseCode("\"StatusItems\"") == Code::kInvalidArgument);
  CHECK(ParseCode("null") == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":[]})") == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":"x"})") == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":{"a":1},"FullReport":"yes"})") == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":{"a":1},"Errors":{}})") == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":{"a":1})") == Code::kInvalidArgument);        // truncated
  CHECK(ParseCode(R"({"StatusItems":{"a":1}} x)") == Code::kInvalidArgument);     // trailing
  CHECK(ParseCode(R"({"StatusItems":{"a":01}})") == Code::kInvalidArgument);      // leading zero
  CHECK(ParseCode(R"({"StatusItems":{"a":1e999}})") == Code::kInvalidArgument);   // out of range
  CHECK(ParseCode(R"({"StatusItems":{"a":"\q"}})") == Code::kInvalidArgument);    // bad escape
  CHECK(ParseCode("{\"StatusItems\":{\"a\":\"tab\there\"}}") == Code::kInvalidArgument);  // raw control
  CHECK(ParseCode(R"({"StatusItems":{"":1}})") == Code::kInvalidArgument);        // empty name
  CHECK(ParseCode(R"({"StatusItems":{"a\u0000b":1}})") == Code::kInvalidArgument);  // NUL in a name
  // Invalid UTF-8, raw or as an unpaired escaped surrogate.
  CHECK(ParseCode("{\"StatusItems\":{\"a\":\"\xff\"}}") == Code::kInvalidArgument);
  CHECK(ParseCode("{\"StatusItems\":{\"a\":\"\xc0\xaf\"}}") == Code::kInvalidArgument);      // overlong
  CHECK(ParseCode("{\"StatusItems\":{\"a\":\"\xed\xa0\x80\"}}") == Code::kInvalidArgument);  // surrogate
  CHECK(ParseCode("{\"StatusItems\":{\"a\":\"\xe2\x82\"}}") == Code::kInvalidArgument);      // cut short
  CHECK(ParseCode("{\"StatusItems\":{\"\xfe\":1}}") == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":{"a":"\ud800"}})") == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":{"a":"\udc00\ud800"}})") == Code::kInvalidArgument);
  // Nesting far beyond max_depth, objects and arrays, closed or not.
  std::string deep = "{\"StatusItems\":";
  for (int i = 0; i < 100000; ++i) deep += "{\"a\":";
  CHECK(ParseCode(deep) == Code::kInvalidArgument);
  deep += "1";
  deep.append(100000, '}');
  deep += "}";
  CHECK(ParseCode(deep) == Code::kInvalidArgument);
  CHECK(ParseCode("{\"StatusItems\":{\"a\":" + std::string(100000, '[') + "}}") == Code::kInvalidArgument);
  // At the limit accepted, one deeper refused.
  StatusLimits shallow;
  shallow.max_depth = 4;
  CHECK(ParseCode(R"({"StatusItems":{"a":{"b":[1]}}})", shallow) == Code::kOk);
  CHECK(ParseCode(R"({"StatusItems":{"a":{"b":{"c":[1]}}}})", shallow) == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":{"a":{"b":[[1]]}}})", shallow) == Code::kInvalidArgument);
  // Name, count and value limits.
  CHECK(ParseCode(R"({"StatusItems":{")" + std::string(l.max_item_name_bytes, 'n') + R"(":1}})") == Code::kOk);
  CHECK(ParseCode(R"({"StatusItems":{")" + std::string(l.max_item_name_bytes + 1, 'n') + R"(":1}})") ==
        Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":{")" + std::string(200, 'a') + R"(":{")" + std::string(100, 'b') + R"(":1}}})") ==
        Code::kInvalidArgument);  // the dotted name is what counts
  StatusLimits few;
  few.max_items = 3;
  CHECK(ParseCode(R"({"StatusItems":{"a":1,"b":2,"c":{"d":3}}})", few) == Code::kOk);
  CHECK(ParseCode(R"({"StatusItems":{"a":1,"b":2,"c":{"d":3,"e":4}}})", few) == Code::kInvalidArgument);
  CHECK(ParseCode(Declarations(Decl("a", "1") + "," + Decl("b", "1") + "," + Decl("c", "1") + "," + Decl("d", "1")),
                  few) == Code::kInvalidArgument);
  StatusLimits small;
  small.max_value_bytes = 10;
  CHECK(ParseCode(R"({"StatusItems":{"a":"12345678"}})", small) == Code::kOk);  // 10 bytes quoted
  CHECK(ParseCode(R"({"StatusItems":{"a":"123456789"}})", small) == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":{"a":[1,2,3,4,5,6]}})", small) == Code::kInvalidArgument);
  StatusLimits tiny;
  tiny.max_report_bytes = 33;  // the first report below, exactly
  CHECK(ParseCode(R"({"StatusItems":{"a":"123456789"}})", tiny) == Code::kOk);
  CHECK(ParseCode(R"({"StatusItems":{"a":"1234567890123"}})", tiny) == Code::kTooLarge);
  CHECK(ParseCode(std::string(l.max_report_bytes + 1, ' ')) == Code::kTooLarge);
  // Malformed protocol structures.
  CHECK(ParseCode(R"({"StatusItems":{"management":{"declarations":[]}}})") == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"StatusItems":{"management":{"declarations":{"configurations":{}}}}})") ==
        Code::kInvalidArgument);
  CHECK(ParseCode(Declarations(R"({"server-token":"x"})")) == Code::kInvalidArgument);
  CHECK(ParseCode(Declarations(R"({"identifier":"a","active":"yes"})")) == Code::kInvalidArgument);
  CHECK(ParseCode(Declarations(R"({"identifier":"a","reasons":{}})")) == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"Errors":[{"StatusItem":1}]})") == Code::kInvalidArgument);
  CHECK(ParseCode(R"({"Errors":["x"]})") == Code::kInvalidArgument);
}

TEST_CASE("ddm status parse: unknown items, unknown enum values and every JSON type are kept", "[ddm][status]") {
  const ParsedReport p = Parse(
      R"({"StatusItems":{"softwareupdate":{"install-state":"waiting","pending-version":{}},)"
      R"("future":{"thing":null,"n":-12,"big":123456789012345678901234567890,"r":1.50,"two":2.0,"e":1E2,)"
      R"("t":false,"list":["b","a",{"z":1,"a":[true]}],"s":"\u00e9\n\/\"x\"","u":"é😀"}},)"
      R"("Future":1,"FullReport":false})");
  const std::map<std::string, std::string> want = {
      {"future.big", "123456789012345678901234567890"},
      {"future.e", "100.0"},
      {"future.list", R"(["b","a",{"a":[true],"z":1}])"},
      {"future.n", "-12"},
      {"future.r", "1.5"},
      {"future.s", R"("é\n/\"x\"")"},
      {"future.t", "false"},
      {"future.thing", "null"},
      {"future.two", "2.0"},
      {"future.u", "\"é😀\""},
      {"softwareupdate.install-state", "\"waiting\""},
      {"softwareupdate.pending-version", "{}"},
  };
  CHECK(ItemMap(p) == want);
  // Sorted by name, as documented.
  CHECK(std::is_sorted(p.items.begin(), p.items.end()));
  // Duplicate keys: the last one wins.
  CHECK(ItemMap(Parse(R"({"StatusItems":{"a":1,"a":2}})")) == std::map<std::string, std::string>{{"a", "2"}});
  // Unknown validity values, unknown declaration kinds and reasons are kept as sent.
  const ParsedReport d = Parse(
      R"({"StatusItems":{"management":{"declarations":{"widgets":[{"identifier":"w"}],"activations":[)"
      R"({"identifier":"act","active":false,"valid":"pending","reasons":[{"code":"Error.X","description":"d",)"
      R"("details":{"b":1,"a":"x"}},{"code":"Info.Y"}]}]}}}})");
  REQUIRE(d.declarations.size() == 1);
  CHECK(d.declarations[0].kind == Kind::kActivation);
  CHECK(d.declarations[0].valid == "pending");
  CHECK(d.declarations[0].server_token.empty());
  REQUIRE(d.declarations[0].reasons.size() == 2);
  CHECK(d.declarations[0].reasons[0].code == "Error.X");
  CHECK(d.declarations[0].reasons[0].description == "d");
  CHECK(d.declarations[0].reasons[0].details_json == R"({"a":"x","b":1})");
  CHECK(d.declarations[0].reasons[1].details_json.empty());
  // Errors, capitalised keys.
  const ParsedReport e = Parse(
      R"({"Errors":[{"StatusItem":"device.model.family","Reasons":[{"Code":"Error.NotSupported","Description":"no",)"
      R"("Details":{"k":[1]}}]}]})");
  REQUIRE(e.errors.size() == 1);
  CHECK(e.errors[0].status_item == "device.model.family");
  REQUIRE(e.errors[0].reasons.size() == 1);
  CHECK(e.errors[0].reasons[0].code == "Error.NotSupported");
  CHECK(e.errors[0].reasons[0].description == "no");
  CHECK(e.errors[0].reasons[0].details_json == R"({"k":[1]})");
}

TEST_CASE("ddm status parse: arrays of identified objects become merges with removals", "[ddm][status]") {
  const std::string items =
      R"("app":{"managed":{"list":[{"identifier":"com.b","state":"managed"},{"identifier":"com.gone","_removed":true},)"
      R"({"identifier":"com.a","state":"queued"}]}},"plain":[{"identifier":"x"},{"name":"no id"}])";
  const ParsedReport inc = Parse("{\"StatusItems\":{" + items + "}}");
  const auto m = ItemMap(inc);
  CHECK(m.at("app.managed.list") ==
        R"([{"identifier":"com.a","state":"queued"},{"identifier":"com.b","state":"managed"}])");
  CHECK(m.at("plain") == R"([{"identifier":"x"},{"name":"no id"}])");  // not every element identified
  REQUIRE(inc.removed.size() == 1);
  CHECK(inc.removed[0].first == "app.managed.list");
  CHECK(inc.removed[0].second == std::vector<std::string>{"com.gone"});
  // In a FullReport the markers are dropped.
  const ParsedReport full = Parse("{\"StatusItems\":{" + items + "},\"FullReport\":true}");
  CHECK(full.removed.empty());
  CHECK(ItemMap(full).at("app.managed.list") == m.at("app.managed.list"));
  // Only markers: the item is there (empty), with its removals.
  const ParsedReport only = Parse(R"({"StatusItems":{"mdm":{"app":[{"identifier":"z","_removed":true}]}}})");
  CHECK(ItemMap(only) == std::map<std::string, std::string>{{"mdm.app", "[]"}});
  REQUIRE(only.removed.size() == 1);
  CHECK(only.removed[0].second == std::vector<std::string>{"z"});
}

TEST_CASE("ddm status apply: an incremental report changes only what it mentions", "[ddm][status]") {
  TempDb t;
  StatusStore s(t.db.get());
  ApplyResult first = ApplyJson(t, s, "E1", kExample);
  REQUIRE(first.items.size() == 2);
  CHECK(first.items[0].item == "device.operating-system.version");
  CHECK(first.items[0].value == "\"26.0\"");
  CHECK(first.items[0].previous.empty());
  CHECK(first.declarations.size() == 1);

  ApplyResult again = ApplyJson(t, s, "E1", kExample);
  CHECK(again.items.empty());
  CHECK(again.declarations.empty());
  CHECK_FALSE(again.capabilities_changed);

  ApplyResult next = ApplyJson(t, s, "E1", R"({"StatusItems":{"softwareupdate":{"install-state":"installing"}}})");
  REQUIRE(next.items.size() == 1);
  CHECK(next.items[0].item == "softwareupdate.install-state");
  CHECK(next.items[0].value == "\"installing\"");
  CHECK(next.items[0].previous == "\"downloading\"");
  CHECK(ItemOf(s, "E1", "device.operating-system.version") == "\"26.0\"");
  CHECK(ItemOf(s, "E1", "softwareupdate.install-state") == "\"installing\"");
  // Whitespace and key order are not changes.
  ApplyResult same = ApplyJson(t, s, "E1", R"({ "FullReport" : false, "StatusItems" : { "softwareupdate" : {
      "install-state" : "installing" } } })");
  CHECK(same.items.empty());
  // Another enrollment is separate.
  CHECK(ItemOf(s, "E2", "softwareupdate.install-state") == std::nullopt);
  // Apply refuses a bad enrollment id and writes nothing.
  store::Batch b;
  CHECK(s.Apply(b, std::string("E\0x", 3), Parse(kExample), kExample, 1).status().code() == Code::kInvalidArgument);
  CHECK(s.Apply(b, "", Parse(kExample), kExample, 1).status().code() == Code::kInvalidArgument);
  CHECK(b.empty());
}

TEST_CASE("ddm status apply: a FullReport removes the items it lacks", "[ddm][status]") {
  TempDb t;
  StatusStore s(t.db.get());
  ApplyJson(t, s, "E1", R"({"StatusItems":{"a":1,"b":{"c":"x","d":true}}})");
  ApplyResult r = ApplyJson(t, s, "E1", R"({"StatusItems":{"a":1,"b":{"c":"y"}},"FullReport":true})");
  REQUIRE(r.items.size() == 2);
  CHECK(r.items[0].item == "b.c");
  CHECK(r.items[0].value == "\"y\"");
  CHECK(r.items[0].previous == "\"x\"");
  CHECK(r.items[1].item == "b.d");
  CHECK(r.items[1].value.empty());
  CHECK(r.items[1].previous == "true");
  CHECK(ItemOf(s, "E1", "b.d") == std::nullopt);
  CHECK(ItemOf(s, "E1", "a") == "1");
  // An incremental report lacking items removes nothing.
  ApplyResult inc = ApplyJson(t, s, "E1", R"({"StatusItems":{"z":1}})");
  REQUIRE(inc.items.size() == 1);
  CHECK(inc.items[0].item == "z");
  CHECK(ItemOf(s, "E1", "a") == "1");
  // An empty FullReport empties everything.
  ApplyResult empty = ApplyJson(t, s, "E1", R"({"StatusItems":{},"FullReport":true})");
  CHECK(empty.items.size() == 3);
  auto page = s.Items("E1", "", "", 10);
  REQUIRE(page.ok());
  CHECK(page->items.empty());
}

TEST_CASE("ddm status apply: declaration statuses follow management.declarations only", "[ddm][status]") {
  TempDb t;
  StatusStore s(t.db.get());
  ApplyResult r = ApplyJson(t, s, "E1", Declarations(Decl("cfg.b", "1") + "," + Decl("cfg.a", "1"), Decl("act.z", "9")));
  REQUIRE(r.declarations.size() == 3);
  // Sorted by kind (activation first), then identifier.
  CHECK(r.declarations[0].status.identifier == "act.z");
  CHECK(r.declarations[0].status.kind == Kind::kActivation);
  CHECK(r.declarations[1].status.identifier == "cfg.a");
  CHECK(r.declarations[2].status.identifier == "cfg.b");
  for (const auto& c : r.declarations) CHECK_FALSE(c.removed);

  // Reports without management.declarations, incremental or full, keep them.
  for (const char* json : {R"({"StatusItems":{"a":1}})", R"({"StatusItems":{"a":1},"FullReport":true})"}) {
    ApplyResult keep = ApplyJson(t, s, "E1", json);
    CHECK(keep.declarations.empty());
    auto all = s.Declarations("E1", "", 100);
    REQUIRE(all.ok());
    CHECK(all->items.size() == 3);
  }

  // A report with it is the whole list: what it lacks is removed.
  ApplyResult next = ApplyJson(t, s, "E1", Declarations(Decl("cfg.a", "2", false, "invalid") + "," + Decl("cfg.b", "1")));
  REQUIRE(next.declarations.size() == 2);
  CHECK(next.declarations[0].status.identifier == "act.z");
  CHECK(next.declarations[0].removed);
  CHECK(next.declarations[0].status.server_token == "9");  // what was stored
  CHECK(next.declarations[1].status.identifier == "cfg.a");
  CHECK_FALSE(next.declarations[1].removed);
  CHECK(next.declarations[1].status.server_token == "2");
  CHECK_FALSE(next.declarations[1].status.active);
  CHECK(next.declarations[1].status.valid == "invalid");
  auto gone = s.Declaration("E1", "act.z");
  REQUIRE(gone.ok());
  CHECK_FALSE(gone->has_value());
  auto a = s.Declaration("E1", "cfg.a");
  REQUIRE(a.ok());
  REQUIRE(a->has_value());
  CHECK((*a)->server_token == "2");
  CHECK((*a)->kind == Kind::kConfiguration);

  // Reasons are part of the status: a new reason is a change, the same is not.
  const std::string with_reason =
      Declarations(R"({"identifier":"cfg.a","server-token":"2","active":false,"valid":"invalid",)"
                   R"("reasons":[{"code":"Error.ConfigurationCannotBeApplied","details":{"k":1}}]},)" +
                   Decl("cfg.b", "1"));
  ApplyResult reason = ApplyJson(t, s, "E1", with_reason);
  REQUIRE(reason.declarations.size() == 1);
  REQUIRE(reason.declarations[0].status.reasons.size() == 1);
  CHECK(ApplyJson(t, s, "E1", with_reason).declarations.empty());
  auto stored = s.Declaration("E1", "cfg.a");
  REQUIRE(stored.ok());
  REQUIRE(stored->has_value());
  REQUIRE((*stored)->reasons.size() == 1);
  CHECK((*stored)->reasons[0].code == "Error.ConfigurationCannotBeApplied");
  CHECK((*stored)->reasons[0].details_json == R"({"k":1})");

  // An empty management.declarations removes every one.
  ApplyResult none = ApplyJson(t, s, "E1", Declarations(""));
  CHECK(none.declarations.size() == 2);
  for (const auto& c : none.declarations) CHECK(c.removed);
}

TEST_CASE("ddm status apply: _removed markers remove array elements by identifier and others merge",
          "[ddm][status]") {
  TempDb t;
  StatusStore s(t.db.get());
  ApplyJson(t, s, "E1",
            R"({"StatusItems":{"app":{"managed":{"list":[{"identifier":"com.a","state":"queued"},)"
            R"({"identifier":"com.b","state":"managed"},{"identifier":"com.c","state":"managed"}]}}},"FullReport":true})");
  ApplyResult r = ApplyJson(t, s, "E1",
                            R"({"StatusItems":{"app":{"managed":{"list":[{"identifier":"com.b","_removed":true},)"
                            R"({"identifier":"com.a","state":"managed"},{"identifier":"com.d","state":"queued"}]}}}})");
  const std::string want =
      R"([{"identifier":"com.a","state":"managed"},{"identifier":"com.c","state":"managed"},)"
      R"({"identifier":"com.d","state":"queued"}])";
  REQUIRE(r.items.size() == 1);
  CHECK(r.items[0].item == "app.managed.list");
  CHECK(r.items[0].value == want);
  CHECK(r.items[0].previous ==
        R"([{"identifier":"com.a","state":"queued"},{"identifier":"com.b","state":"managed"},)"
        R"({"identifier":"com.c","state":"managed"}])");
  CHECK(ItemOf(s, "E1", "app.managed.list") == want);
  // Removing what is not there, or re-sending what is, changes nothing.
  CHECK(ApplyJson(t, s, "E1", R"({"StatusItems":{"app":{"managed":{"list":[{"identifier":"com.zz","_removed":true},)"
                              R"({"identifier":"com.c","state":"managed"}]}}}})")
            .items.empty());
  // Only markers.
  ApplyResult rm = ApplyJson(t, s, "E1",
                             R"({"StatusItems":{"app":{"managed":{"list":[{"identifier":"com.a","_removed":true},)"
                             R"({"identifier":"com.c","_removed":true},{"identifier":"com.d","_removed":true}]}}}})");
  REQUIRE(rm.items.size() == 1);
  CHECK(rm.items[0].value == "[]");
  // A FullReport replaces the array entirely.
  ApplyJson(t, s, "E1", R"({"StatusItems":{"app":{"managed":{"list":[{"identifier":"com.x"}]}}}})");
  ApplyJson(t, s, "E1", R"({"StatusItems":{"app":{"managed":{"list":[{"identifier":"com.y"}]}}},"FullReport":true})");
  CHECK(ItemOf(s, "E1", "app.managed.list") == R"([{"identifier":"com.y"}])");
  // Arrays that are not all identified objects are replaced, not merged.
  ApplyJson(t, s, "E1", R"({"StatusItems":{"plain":[1,2]}})");
  ApplyJson(t, s, "E1", R"({"StatusItems":{"plain":[3]}})");
  CHECK(ItemOf(s, "E1", "plain") == "[3]");
  // A merge that would grow past max_value_bytes is refused and writes nothing.
  StatusLimits small;
  small.max_value_bytes = 40;
  StatusStore s2(t.db.get(), small);
  ApplyJson(t, s2, "E2", R"({"StatusItems":{"l":[{"identifier":"aaaaaaaaaa"}]}})");
  const std::string more = R"({"StatusItems":{"l":[{"identifier":"bbbbbbbbbb"}]}})";
  store::Batch b;
  CHECK(s2.Apply(b, "E2", Parse(more, small), more, 1).status().code() == Code::kInvalidArgument);
  CHECK(b.empty());
}

TEST_CASE("ddm status apply: capabilities_changed only when a client-capabilities item changed", "[ddm][status]") {
  TempDb t;
  StatusStore s(t.db.get());
  const std::string caps =
      R"({"StatusItems":{"management":{"client-capabilities":{"supported-versions":["1.0.0"],)"
      R"("supported-features":{}}}}})";
  ApplyResult first = ApplyJson(t, s, "E1", caps);
  CHECK(first.capabilities_changed);
  CHECK(ItemOf(s, "E1", "management.client-capabilities.supported-versions") == R"(["1.0.0"])");
  CHECK(ItemOf(s, "E1", "management.client-capabilities.supported-features") == "{}");
  CHECK_FALSE(ApplyJson(t, s, "E1", caps).capabilities_changed);
  CHECK_FALSE(ApplyJson(t, s, "E1", kExample).capabilities_changed);
  // Something that only looks like it.
  CHECK_FALSE(ApplyJson(t, s, "E1", R"({"StatusItems":{"management":{"client-capabilitiesx":1}}})").capabilities_changed);
  ApplyResult changed = ApplyJson(
      t, s, "E1", R"({"StatusItems":{"management":{"client-capabilities":{"supported-versions":["1.0.0","1.1.0"]}}}})");
  CHECK(changed.capabilities_changed);
  // Removed by a FullReport: a change too.
  ApplyResult removed = ApplyJson(t, s, "E1", R"({"StatusItems":{"x":1},"FullReport":true})");
  CHECK(removed.capabilities_changed);
}

TEST_CASE("ddm status apply: errors are returned and the latest ones kept", "[ddm][status]") {
  TempDb t;
  StatusStore s(t.db.get());
  auto none = s.Errors("E1");
  REQUIRE(none.ok());
  CHECK(none->empty());
  const std::string json =
      R"({"StatusItems":{"a":1},"Errors":[{"StatusItem":"device.power.battery-health","Reasons":[)"
      R"({"Code":"Error.NotSupported","Description":"not here","Details":{"b":2,"a":1}}]},{"StatusItem":"x.y"}]})";
  ApplyResult r = ApplyJson(t, s, "E1", json);
  REQUIRE(r.errors.size() == 2);
  CHECK(r.errors[0].status_item == "device.power.battery-health");
  CHECK(r.errors[1].status_item == "x.y");
  auto kept = s.Errors("E1");
  REQUIRE(kept.ok());
  REQUIRE(kept->size() == 2);
  CHECK((*kept)[0].status_item == "device.power.battery-health");
  REQUIRE((*kept)[0].reasons.size() == 1);
  CHECK((*kept)[0].reasons[0].code == "Error.NotSupported");
  CHECK((*kept)[0].reasons[0].description == "not here");
  CHECK((*kept)[0].reasons[0].details_json == R"({"a":1,"b":2})");
  CHECK((*kept)[1].reasons.empty());
  // The same errors again are returned again (each is an event).
  CHECK(ApplyJson(t, s, "E1", json).errors.size() == 2);
  // A report without errors leaves the kept ones.
  CHECK(ApplyJson(t, s, "E1", R"({"StatusItems":{"a":2},"Errors":[]})").errors.empty());
  kept = s.Errors("E1");
  REQUIRE(kept.ok());
  CHECK(kept->size() == 2);
  // A later report with errors replaces them.
  ApplyJson(t, s, "E1", R"({"Errors":[{"StatusItem":"z","Reasons":[]}]})");
  kept = s.Errors("E1");
  REQUIRE(kept.ok());
  REQUIRE(kept->size() == 1);
  CHECK((*kept)[0].status_item == "z");
}

TEST_CASE("ddm status apply: old raw reports are deleted by key, one per report, leaving exactly the kept ones",
          "[ddm][status]") {
  TempDb t;
  StatusLimits l;
  l.keep_raw_reports = 3;
  StatusStore s(t.db.get(), l);
  auto raw_keys = [&](const std::string& e) {
    const std::string prefix = std::string("sr\0", 3) + e + std::string(1, '\0');
    size_t n = 0;
    auto it = t.db->Scan(store::Cf::kDdm, prefix, store::PrefixEnd(prefix));
    for (; it->Valid(); it->Next()) ++n;
    REQUIRE(it->status().ok());
    return n;
  };
  for (int i = 1; i <= 200; ++i) {
    // Apply's own batch: one put of the new report, at most one delete.
    ParsedReport r;
    r.items.emplace_back("n", std::to_string(i));
    store::Batch b;
    REQUIRE(s.Apply(b, "E1", r, R"({"StatusItems":{"n":)" + std::to_string(i) + "}}", 1000 + i).ok());
    size_t raw_deletes = 0;
    for (const auto& op : b.ops())
      if (op.kind == store::Batch::Op::kDelete && op.key.compare(0, 2, "sr") == 0) ++raw_deletes;
    CHECK(raw_deletes == (i > 3 ? 1u : 0u));
    REQUIRE(t.db->Write(b).ok());
  }
  CHECK(raw_keys("E1") == 3);
  auto raw = s.RawReports("E1", 10);
  REQUIRE(raw.ok());
  REQUIRE(raw->size() == 3);
  CHECK((*raw)[0].received_ms == 1200);
  CHECK((*raw)[2].received_ms == 1198);
  // Lowering the cap deletes the surplus at once; raising it keeps what is there.
  StatusLimits one = l;
  one.keep_raw_reports = 1;
  StatusStore s1(t.db.get(), one);
  ApplyJson(t, s1, "E1", R"({"StatusItems":{"n":201}})", 1201);
  CHECK(raw_keys("E1") == 1);
  StatusLimits five = l;
  five.keep_raw_reports = 5;
  StatusStore s5(t.db.get(), five);
  ApplyJson(t, s5, "E1", R"({"StatusItems":{"n":202}})", 1202);
  CHECK(raw_keys("E1") == 2);
  raw = s5.RawReports("E1", 10);
  REQUIRE(raw.ok());
  REQUIRE(raw->size() == 2);
  CHECK((*raw)[0].received_ms == 1202);
  CHECK((*raw)[1].received_ms == 1201);
  CHECK(raw_keys("E2") == 0);
}

TEST_CASE("ddm status apply: raw reports are capped at keep_raw_reports and listed newest first", "[ddm][status]") {
  TempDb t;
  StatusLimits l;
  l.keep_raw_reports = 3;
  StatusStore s(t.db.get(), l);
  for (int i = 1; i <= 5; ++i)
    ApplyJson(t, s, "E1", R"({"StatusItems":{"n":)" + std::to_string(i) + "}}", 1000 + i);
  auto raw = s.RawReports("E1", 10);
  REQUIRE(raw.ok());
  REQUIRE(raw->size() == 3);
  CHECK((*raw)[0].received_ms == 1005);
  CHECK((*raw)[0].json == R"({"StatusItems":{"n":5}})");
  CHECK((*raw)[1].received_ms == 1004);
  CHECK((*raw)[2].received_ms == 1003);
  CHECK((*raw)[2].json == R"({"StatusItems":{"n":3}})");
  auto one = s.RawReports("E1", 1);
  REQUIRE(one.ok());
  REQUIRE(one->size() == 1);
  CHECK((*one)[0].received_ms == 1005);
  CHECK(s.RawReports("E1", 0).status().code() == Code::kInvalidArgument);
  CHECK(s.RawReports("E1", 1001).status().code() == Code::kInvalidArgument);
  // Lowering the cap trims on the next report; 0 keeps none.
  StatusLimits none = l;
  none.keep_raw_reports = 0;
  StatusStore s0(t.db.get(), none);
  ApplyJson(t, s0, "E1", R"({"StatusItems":{"n":6}})", 1006);
  raw = s0.RawReports("E1", 10);
  REQUIRE(raw.ok());
  CHECK(raw->empty());
  CHECK(ItemOf(s0, "E1", "n") == "6");
  // Over max_report_bytes the raw JSON is refused.
  StatusLimits tiny;
  tiny.max_report_bytes = 8;
  StatusStore st(t.db.get(), tiny);
  store::Batch b;
  CHECK(st.Apply(b, "E1", ParsedReport{}, R"({"StatusItems":{}})", 1).status().code() == Code::kTooLarge);
}

TEST_CASE("ddm status store: Forget drops everything kept for the enrollment only", "[ddm][status]") {
  TempDb t;
  StatusStore s(t.db.get());
  const std::string json =
      R"({"StatusItems":{"a":1,"management":{"declarations":{"configurations":[{"identifier":"c","active":true}]}}},)"
      R"("Errors":[{"StatusItem":"a"}]})";
  ApplyJson(t, s, "E1", json);
  ApplyJson(t, s, "E10", json);  // shares the prefix "E1"
  store::Batch b;
  REQUIRE(s.Forget(b, "E1").ok());
  REQUIRE(t.db->Write(b).ok());
  CHECK(ItemOf(s, "E1", "a") == std::nullopt);
  CHECK(s.Declarations("E1", "", 10)->items.empty());
  CHECK(s.Errors("E1")->empty());
  CHECK(s.RawReports("E1", 10)->empty());
  CHECK(s.Declaration("E1", "c")->has_value() == false);
  // The other enrollment is untouched.
  CHECK(ItemOf(s, "E10", "a") == "1");
  CHECK(s.Declarations("E10", "", 10)->items.size() == 1);
  CHECK(s.Errors("E10")->size() == 1);
  CHECK(s.RawReports("E10", 10)->size() == 1);
  // After Forget the enrollment starts over: everything is new again.
  ApplyResult again = ApplyJson(t, s, "E1", json);
  CHECK(again.items.size() == 1);
  CHECK(again.declarations.size() == 1);
  CHECK(s.RawReports("E1", 10)->size() == 1);
}

TEST_CASE("ddm status store: state survives reopening the store", "[ddm][status]") {
  TempDb t;
  {
    StatusStore s(t.db.get());
    ApplyJson(t, s, "E1", kExample, 7);
    ApplyJson(t, s, "E1", R"({"Errors":[{"StatusItem":"a"}]})", 8);
  }
  t.Reopen();
  StatusStore s(t.db.get());
  CHECK(ItemOf(s, "E1", "device.operating-system.version") == "\"26.0\"");
  auto d = s.Declaration("E1", "cfg.os-floor");
  REQUIRE(d.ok());
  REQUIRE(d->has_value());
  CHECK((*d)->server_token == "c3a1");
  CHECK((*d)->active);
  CHECK((*d)->valid == "valid");
  CHECK(s.Errors("E1")->size() == 1);
  auto raw = s.RawReports("E1", 10);
  REQUIRE(raw.ok());
  REQUIRE(raw->size() == 2);
  CHECK((*raw)[0].received_ms == 8);
  CHECK((*raw)[1].json == kExample);
  // And nothing changes when the same report comes again.
  ApplyResult r = ApplyJson(t, s, "E1", kExample, 9);
  CHECK(r.items.empty());
  CHECK(r.declarations.empty());
  raw = s.RawReports("E1", 10);
  REQUIRE(raw.ok());
  REQUIRE(raw->size() == 3);
  CHECK((*raw)[0].received_ms == 9);  // sequence continues after the reopen
}

TEST_CASE("ddm status store: Items and Declarations page in name order with next", "[ddm][status]") {
  TempDb t;
  StatusStore s(t.db.get());
  ApplyJson(t, s, "E1",
            R"({"StatusItems":{"a":{"1":1,"2":2,"3":3,"4":4,"5":5},"ab":0,"b":{"1":1},)"
            R"("management":{"declarations":{"configurations":[{"identifier":"d1"},{"identifier":"d2"},)"
            R"({"identifier":"d3"}]}}}})");
  ApplyJson(t, s, "E0", R"({"StatusItems":{"a":{"0":0}}})");
  std::vector<std::string> names;
  std::string after;
  int pages = 0;
  do {
    auto p = s.Items("E1", "a.", after, 2);
    REQUIRE(p.ok());
    REQUIRE(p->items.size() <= 2);
    for (const auto& [n, v] : p->items) names.push_back(n);
    after = p->next;
    ++pages;
  } while (!after.empty() && pages < 10);
  CHECK(names == std::vector<std::string>{"a.1", "a.2", "a.3", "a.4", "a.5"});
  CHECK(pages == 3);
  auto exact = s.Items("E1", "a.", "", 5);
  REQUIRE(exact.ok());
  CHECK(exact->items.size() == 5);
  CHECK(exact->next.empty());
  CHECK(exact->items[4] == std::pair<std::string, std::string>("a.5", "5"));
  auto all = s.Items("E1", "", "", 1000);
  REQUIRE(all.ok());
  CHECK(all->items.size() == 7);
  auto a = s.Items("E1", "a", "a.5", 10);
  REQUIRE(a.ok());
  REQUIRE(a->items.size() == 1);
  CHECK(a->items[0].first == "ab");
  auto none = s.Items("E1", "zz", "", 10);
  REQUIRE(none.ok());
  CHECK(none->items.empty());
  CHECK(s.Items("E1", "", "", 0).status().code() == Code::kInvalidArgument);
  CHECK(s.Items("E1", "", "", 1001).status().code() == Code::kInvalidArgument);

  auto d1 = s.Declarations("E1", "", 2);
  REQUIRE(d1.ok());
  REQUIRE(d1->items.size() == 2);
  CHECK(d1->items[0].identifier == "d1");
  CHECK(d1->next == "d2");
  auto d2 = s.Declarations("E1", d1->next, 2);
  REQUIRE(d2.ok());
  REQUIRE(d2->items.size() == 1);
  CHECK(d2->items[0].identifier == "d3");
  CHECK(d2->next.empty());
  CHECK(s.Declarations("E1", "", 0).status().code() == Code::kInvalidArgument);
  CHECK(s.Declarations("E0", "", 10)->items.empty());
}
