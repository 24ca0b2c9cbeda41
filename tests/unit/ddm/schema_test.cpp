// DDM declaration payloads checked against Apple's declaration schemas
// (core/ddm/schema.cpp; the table generated from
// tests/fixtures/apple-device-management/declarative/declarations): for every
// declaration Type a generated valid instance is accepted, and each required
// key removed, each value of a wrong type, out of range or outside its
// rangelist is refused naming the key path; hand-written payloads; unknown
// keys warn; ParseDeclaration end to end.
#include "ddm/schema.h"

#include <catch2/catch.hpp>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "ddm/declarations.h"
#include "ddm/json.h"
#include "support/fixtures.h"

using namespace orchard;
using namespace orchard::ddm;
using json::Value;

namespace {

// ---- JSON values ----

Value Str(std::string s) {
  Value v;
  v.type = json::Type::kString;
  v.text = std::move(s);
  return v;
}
Value Num(std::string text) {
  Value v;
  v.type = json::Type::kNumber;
  v.text = std::move(text);
  return v;
}
Value Bool(bool b) {
  Value v;
  v.type = json::Type::kBool;
  v.boolean = b;
  return v;
}
Value Arr(std::vector<Value> elements = {}) {
  Value v;
  v.type = json::Type::kArray;
  v.elements = std::move(elements);
  return v;
}
Value Obj() {
  Value v;
  v.type = json::Type::kObject;
  return v;
}

// A number's text as the canonical JSON writes it: integers plainly, others with a '.'.
std::string NumberText(double d, bool integer) {
  if (integer) return std::to_string(static_cast<long long>(d));
  std::string s = std::to_string(d);
  s.erase(s.find_last_not_of('0') + 1);
  if (s.back() == '.') s.push_back('0');
  return s;
}

// ---- instances generated from the schema table ----

// The name an "ANY" key gets in a generated instance.
constexpr const char* kAnyName = "SampleKey";

// A valid value for k; dictionaries with every key (full) or only the required ones.
Value Gen(const SchemaKey& k, bool full) {
  switch (k.type) {
    case ValueType::kString:
      return Str(k.rangelist.empty() ? "text" : std::string(k.rangelist.front()));
    case ValueType::kData:
      return Str("AAECAw==");
    case ValueType::kDate:
      return Str("2024-06-01T10:00:00Z");
    case ValueType::kInteger:
    case ValueType::kReal: {
      const bool integer = k.type == ValueType::kInteger;
      if (!k.rangelist.empty()) return Num(std::string(k.rangelist.front()));
      if (k.min != kNoMin) return Num(NumberText(k.min, integer));
      if (k.max != kNoMax) return Num(NumberText(k.max, integer));
      return Num(integer ? "7" : "2.5");
    }
    case ValueType::kBoolean:
      return Bool(true);
    case ValueType::kAny:
      return Str("anything");
    case ValueType::kArray:
      return k.subkeys.empty() ? Arr() : Arr({Gen(k.subkeys[0], full)});
    case ValueType::kDictionary: {
      Value o = Obj();
      for (const SchemaKey& s : k.subkeys) {
        if (!full && !s.required) continue;
        o.members.push_back({s.name == "ANY" ? kAnyName : std::string(s.name), Gen(s, full)});
      }
      return o;
    }
  }
  FAIL("unknown value type");
  return Value();
}

Value Instance(const SchemaType& t, bool full) {
  SchemaKey top{"Payload", ValueType::kDictionary, true, t.keys};
  return Gen(top, full);
}

// One key of a generated instance: how to reach its value, the path messages
// name it by, and its schema.
struct Site {
  std::vector<std::variant<std::string, size_t>> steps;  // member keys and array indexes
  std::string path;                                      // "Payload.A.B[0]"
  const SchemaKey* key;
  bool in_object;  // a member (can be removed), not an array item
};

// The path segment of a member key, as the checker writes it.
std::string Segment(const std::string& key) {
  bool plain = !key.empty() && key.size() <= 40;
  for (char c : key)
    if (c < 0x20 || c > 0x7e || c == '.' || c == '[' || c == ']' || c == '"' || c == '\\')
      plain = false;
  return plain ? "." + key : "[" + json::Excerpt(key) + "]";
}

void Sites(const Value& v, const SchemaKey& k, Site at, std::vector<Site>* out) {
  if (k.type == ValueType::kDictionary) {
    for (const auto& m : v.members) {
      const SchemaKey* sub = nullptr;
      for (const SchemaKey& s : k.subkeys)
        if (s.name == m.key || (s.name == "ANY" && m.key == kAnyName)) sub = &s;
      REQUIRE(sub != nullptr);
      Site s = at;
      s.steps.push_back(m.key);
      s.path += Segment(m.key);
      s.key = sub;
      s.in_object = true;
      out->push_back(s);
      Sites(m.value, *sub, s, out);
    }
  } else if (k.type == ValueType::kArray) {
    for (size_t i = 0; i < v.elements.size(); ++i) {
      Site s = at;
      s.steps.push_back(i);
      s.path += "[" + std::to_string(i) + "]";
      s.key = &k.subkeys[0];
      s.in_object = false;
      out->push_back(s);
      Sites(v.elements[i], k.subkeys[0], s, out);
    }
  }
}

// The value at steps, and (for a member) the object holding it.
Value* At(Value* root, const std::vector<std::variant<std::string, size_t>>& steps,
          Value** parent = nullptr) {
  Value* v = root;
  for (const auto& step : steps) {
    if (parent) *parent = v;
    if (const auto* key = std::get_if<std::string>(&step)) {
      Value* next = nullptr;
      for (auto& m : v->members)
        if (m.key == *key) next = &m.value;
      REQUIRE(next != nullptr);
      v = next;
    } else {
      v = &v->elements.at(std::get<size_t>(step));
    }
  }
  return v;
}

// Values of another type than k's (none for <any>).
std::vector<Value> WrongTypes(const SchemaKey& k) {
  switch (k.type) {
    case ValueType::kString:
    case ValueType::kData:
    case ValueType::kDate:
      return {Num("7"), Bool(true), Arr(), Obj(), Value()};
    case ValueType::kInteger:
      return {Str("7"), Num("7.5"), Num("1.0e3"), Bool(false), Value()};
    case ValueType::kReal:
      return {Str("7.5"), Bool(false), Arr()};
    case ValueType::kBoolean:
      return {Str("true"), Num("1"), Value()};
    case ValueType::kArray:
      return {Obj(), Str("a"), Num("1")};
    case ValueType::kDictionary:
      return {Arr(), Str("a"), Bool(true)};
    case ValueType::kAny:
      return {};
  }
  return {};
}

// Values outside k's range or rangelist.
std::vector<Value> OutOfRange(const SchemaKey& k) {
  std::vector<Value> out;
  const bool integer = k.type == ValueType::kInteger;
  if (k.type == ValueType::kInteger || k.type == ValueType::kReal) {
    const double step = integer ? 1 : 0.5;
    if (k.min != kNoMin) out.push_back(Num(NumberText(k.min - step, integer)));
    if (k.max != kNoMax) {
      out.push_back(Num(NumberText(k.max + step, integer)));
      if (integer) out.push_back(Num("1" + std::string(400, '0')));  // beyond a double
    }
    if (!k.rangelist.empty()) {
      double biggest = 0;
      for (auto v : k.rangelist) biggest = std::max(biggest, std::stod(std::string(v)));
      out.push_back(Num(NumberText(biggest + 1, integer)));
    }
  }
  if (k.type == ValueType::kString && !k.rangelist.empty()) {
    out.push_back(Str("NotInTheRangeList"));
    out.push_back(Str(std::string(k.rangelist.front()) + " "));
    std::string lower(k.rangelist.front());
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower != k.rangelist.front()) out.push_back(Str(lower));
  }
  return out;
}

Status Check(std::string_view type, const Value& payload,
             std::vector<std::string>* warnings = nullptr) {
  return CheckPayload(type, json::Canonical(payload), warnings);
}

Status CheckText(std::string_view type, const std::string& payload,
                 std::vector<std::string>* warnings = nullptr) {
  return CheckPayload(type, std::string_view(payload), warnings);
}

void Accepted(std::string_view type, const std::string& payload,
              std::vector<std::string>* warnings = nullptr) {
  std::vector<std::string> w;
  const Status s = CheckText(type, payload, &w);
  INFO(type << " " << payload);
  INFO(s.ToString());
  CHECK(s.ok());
  if (warnings) {
    *warnings = w;
  } else {
    CHECK(w.empty());
  }
}

// Refused as InvalidArgument with a message starting "<path>: " and containing what.
void Refused(std::string_view type, const std::string& payload, const std::string& path,
             const std::string& what = "") {
  const Status s = CheckText(type, payload, nullptr);
  INFO(type << " " << payload);
  INFO(s.ToString());
  REQUIRE_FALSE(s.ok());
  CHECK(s.code() == Code::kInvalidArgument);
  CHECK(s.message().rfind(path + ": ", 0) == 0);
  CHECK(s.message().find(what) != std::string::npos);
}

std::string Decl(const std::string& type, const std::string& payload) {
  return R"({"Type":")" + type + R"(","Identifier":"org.example.d","Payload":)" + payload + "}";
}

// ---- the fixtures' top-level keys ----
// From tests/fixtures/apple-device-management/declarative/declarations/**/*.yaml:
// payload.declarationtype and each top-level payload key's name, type and
// presence ("- key:" at column 0 after "payloadkeys:", its fields at column 2).
// Not a YAML parser: enough to tie the generated table to the committed schemas.
struct TopKey {
  std::string name, type;
  bool required = false;
};

std::string Unquote(std::string v) {
  while (!v.empty() && (v.back() == ' ' || v.back() == '\r')) v.pop_back();
  if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front())
    v = v.substr(1, v.size() - 2);
  return v;
}

std::map<std::string, std::vector<TopKey>> FixtureTopKeys() {
  std::map<std::string, std::vector<TopKey>> out;
  const auto dir = testing::FixturePath("apple-device-management/declarative/declarations");
  REQUIRE(std::filesystem::is_directory(dir));
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    std::ifstream in(e.path());
    std::string type;
    std::vector<TopKey> keys;
    bool in_keys = false;
    for (std::string l; std::getline(in, l);) {
      if (l.rfind("  declarationtype: ", 0) == 0) type = Unquote(l.substr(19));
      if (l.rfind("payloadkeys:", 0) == 0) {
        in_keys = true;
        continue;
      }
      if (!in_keys) continue;
      if (!l.empty() && l[0] != ' ' && l[0] != '-')
        in_keys = false;  // the next top-level field
      else if (l.rfind("- key: ", 0) == 0)
        keys.push_back({Unquote(l.substr(7)), "", false});
      else if (!keys.empty() && l.rfind("  type: ", 0) == 0)
        keys.back().type = Unquote(l.substr(8));
      else if (!keys.empty() && l.rfind("  presence: ", 0) == 0)
        keys.back().required = Unquote(l.substr(12)) == "required";
    }
    if (type.empty() || type == "any") continue;
    INFO(e.path().string());
    CHECK(out.count(type) == 0);
    out[type] = keys;
  }
  return out;
}

}  // namespace

TEST_CASE(
    "ddm schema: the table has every declaration type of the fixtures with their top-level keys",
    "[ddm][schema]") {
  const auto fixtures = FixtureTopKeys();
  REQUIRE(fixtures.size() >= 35);
  std::set<std::string> table;
  for (const SchemaType& t : AllSchemas()) table.insert(std::string(t.type));
  std::set<std::string> files;
  for (const auto& [type, keys] : fixtures) files.insert(type);
  CHECK(table == files);
  for (const auto& [type, keys] : fixtures) {
    INFO(type);
    const SchemaType* t = FindSchema(type);
    REQUIRE(t != nullptr);
    CHECK(t->type == type);
    REQUIRE(t->keys.size() == keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      INFO(keys[i].name);
      CHECK(t->keys[i].name == keys[i].name);
      CHECK("<" + std::string(ValueTypeName(t->keys[i].type)) + ">" == keys[i].type);
      CHECK(t->keys[i].required == keys[i].required);
    }
  }
  CHECK(FindSchema("com.apple.configuration.no-such-thing") == nullptr);
  CHECK(FindSchema("") == nullptr);
  CHECK(FindSchema("com.apple.configuration.passcode.setting") == nullptr);
  const SchemaType* passcode = FindSchema("com.apple.configuration.passcode.settings");
  REQUIRE(passcode != nullptr);
  bool found = false;
  for (const SchemaKey& k : passcode->keys) {
    if (k.name != "MinimumLength") continue;
    found = true;
    CHECK(k.type == ValueType::kInteger);
    CHECK(k.min == 0);
    CHECK(k.max == 16);
  }
  CHECK(found);
}

TEST_CASE("ddm schema: a generated valid instance of every declaration type is accepted",
          "[ddm][schema]") {
  size_t types = 0;
  for (const SchemaType& t : AllSchemas()) {
    INFO(t.type);
    for (bool full : {false, true}) {
      const Value v = Instance(t, full);
      const std::string payload = json::Canonical(v);
      INFO(payload);
      std::vector<std::string> warnings;
      const Status s = CheckPayload(t.type, payload, &warnings);
      INFO(s.ToString());
      CHECK(s.ok());
      CHECK(warnings.empty());
      // End to end: the declaration parses, without warnings.
      auto d = ParseDeclaration(Decl(std::string(t.type), payload), {});
      INFO(d.status().ToString());
      REQUIRE(d.ok());
      CHECK(d->warnings.empty());
      CHECK(d->payload_json == payload);
    }
    ++types;
  }
  CHECK(types == AllSchemas().size());
  CHECK(types >= 35);
}

TEST_CASE(
    "ddm schema: each required key removed, wrong type or out-of-range value is refused naming the "
    "key",
    "[ddm][schema]") {
  size_t removed = 0, wrong_types = 0, out_of_range = 0, unknown = 0;
  for (const SchemaType& t : AllSchemas()) {
    INFO(t.type);
    const Value instance = Instance(t, true);
    std::vector<Site> sites;
    SchemaKey top{"Payload", ValueType::kDictionary, true, t.keys};
    Sites(instance, top, Site{{}, "Payload", &top, false}, &sites);
    for (const Site& site : sites) {
      INFO(site.path);
      auto refused = [&](const Value& mutated, const std::string& what) {
        const std::string payload = json::Canonical(mutated);
        INFO(payload);
        const Status s = CheckPayload(t.type, payload, nullptr);
        INFO(s.ToString());
        REQUIRE_FALSE(s.ok());
        CHECK(s.code() == Code::kInvalidArgument);
        CHECK(s.message().rfind(site.path + ": " + what, 0) == 0);
        // And through ParseDeclaration: the same refusal.
        auto d = ParseDeclaration(Decl(std::string(t.type), payload), {});
        REQUIRE_FALSE(d.ok());
        CHECK(d.status().message() == s.message());
      };
      // Removed: refused when required (and not an "ANY"), else still valid.
      if (site.in_object) {
        Value copy = instance;
        Value* parent = nullptr;
        At(&copy, site.steps, &parent);
        const std::string& name = std::get<std::string>(site.steps.back());
        std::erase_if(parent->members, [&](const json::Member& m) { return m.key == name; });
        if (site.key->required && site.key->name != "ANY") {
          refused(copy, "missing");
          ++removed;
        } else {
          CHECK(Check(t.type, copy).ok());
        }
      }
      for (const Value& wrong : WrongTypes(*site.key)) {
        Value copy = instance;
        *At(&copy, site.steps) = wrong;
        refused(copy, "must be");
        ++wrong_types;
      }
      for (const Value& bad : OutOfRange(*site.key)) {
        Value copy = instance;
        *At(&copy, site.steps) = bad;
        refused(copy, "must be");
        ++out_of_range;
      }
      // A key the dictionary's schema does not name, beside it: a warning, or
      // checked against "ANY" when the dictionary has one.
      if (site.in_object) {
        Value copy = instance;
        Value* parent = nullptr;
        At(&copy, site.steps, &parent);
        const std::string& name = std::get<std::string>(site.steps.back());
        const std::string parent_path =
            site.path.substr(0, site.path.size() - Segment(name).size());
        std::span<const SchemaKey> siblings = t.keys;
        for (const Site& p : sites)
          if (p.path == parent_path) siblings = p.key->subkeys;
        const SchemaKey* any = nullptr;
        for (const SchemaKey& k : siblings)
          if (k.name == "ANY") any = &k;
        parent->members.push_back({"NoSuchKeyInAppleSchema", any ? Gen(*any, true) : Str("x")});
        std::vector<std::string> warnings;
        const Status s = Check(t.type, copy, &warnings);
        INFO(s.ToString());
        CHECK(s.ok());
        if (any) {
          CHECK(warnings.empty());
        } else {
          REQUIRE(warnings.size() == 1);
          CHECK(warnings[0].rfind(parent_path + ".NoSuchKeyInAppleSchema: unknown key", 0) == 0);
          ++unknown;
        }
      }
    }
  }
  // Every kind of check ran, across the table (80, 1175, 122 and 265 with
  // the fixtures' release).
  CHECK(removed >= 75);
  CHECK(wrong_types >= 1000);
  CHECK(out_of_range >= 100);
  CHECK(unknown >= 250);
}

TEST_CASE("ddm schema: softwareupdate.enforcement.specific", "[ddm][schema]") {
  const std::string t = "com.apple.configuration.softwareupdate.enforcement.specific";
  Accepted(t, R"({"TargetOSVersion":"17.4","TargetLocalDateTime":"2024-06-01T10:00:00"})");
  Accepted(
      t,
      R"({"TargetOSVersion":"17.4","TargetBuildVersion":"21E219","TargetLocalDateTime":"2024-06-01T10:00:00",
                  "DetailsURL":"https://example.com/update"})");
  Refused(t, R"({"TargetOSVersion":"17.4"})", "Payload.TargetLocalDateTime", "missing");
  Refused(t, R"({"TargetLocalDateTime":"2024-06-01T10:00:00"})", "Payload.TargetOSVersion",
          "missing");
  Refused(t, R"({"TargetOSVersion":17.4,"TargetLocalDateTime":"2024-06-01T10:00:00"})",
          "Payload.TargetOSVersion", "must be a string, not a number");
  Refused(t, R"({"TargetOSVersion":"17.4","TargetLocalDateTime":null})",
          "Payload.TargetLocalDateTime", "must be a string, not null");
  Refused(t, "[]", "Payload", "must be an object");
  Refused(t, "{", "Payload", "json:");
}

TEST_CASE("ddm schema: passcode.settings ranges and integers", "[ddm][schema]") {
  const std::string t = "com.apple.configuration.passcode.settings";
  Accepted(t, "{}");
  Accepted(t, R"({"MinimumLength":0})");
  Accepted(t, R"({"MinimumLength":16,"MaximumFailedAttempts":2,"RequirePasscode":true})");
  Refused(t, R"({"MinimumLength":17})", "Payload.MinimumLength",
          "must be between 0 and 16, not 17");
  Refused(t, R"({"MinimumLength":-1})", "Payload.MinimumLength", "between 0 and 16");
  Refused(t, R"({"MinimumLength":6.0})", "Payload.MinimumLength", "must be an integer");
  Refused(t, R"({"MinimumLength":6e0})", "Payload.MinimumLength", "must be an integer");
  Refused(t, R"({"MinimumLength":"6"})", "Payload.MinimumLength",
          "must be an integer, not a string");
  Refused(t, R"({"MinimumLength":)" + std::string(400, '9') + "}", "Payload.MinimumLength",
          "between 0 and 16");
  Refused(t, R"({"MinimumLength":-)" + std::string(400, '9') + "}", "Payload.MinimumLength",
          "between 0 and 16");
  Refused(t, R"({"MaximumFailedAttempts":1})", "Payload.MaximumFailedAttempts", "between 2 and 11");
  Refused(t, R"({"RequirePasscode":"true"})", "Payload.RequirePasscode", "must be a boolean");
  Refused(t, R"({"RequirePasscode":1})", "Payload.RequirePasscode", "must be a boolean");
  // Without a range, any integer.
  Accepted(t, R"({"FailedAttemptsResetInMinutes":123456789012345678901234567890})");
  // CustomRegex.Description: a dictionary of strings under any key.
  Accepted(t,
           R"({"CustomRegex":{"Regex":"^[0-9]+$","Description":{"en":"digits","fr":"chiffres"}}})");
  Refused(t, R"({"CustomRegex":{"Description":{"en":"x"}}})", "Payload.CustomRegex.Regex",
          "missing");
  Refused(t, R"({"CustomRegex":{"Regex":"x","Description":{"en":5}}})",
          "Payload.CustomRegex.Description.en", "must be a string");
  Refused(t, R"({"CustomRegex":{"Regex":"x","Description":{"en.US":5}}})",
          R"(Payload.CustomRegex.Description["en.US"])", "must be a string");
}

TEST_CASE("ddm schema: activation.simple and arrays", "[ddm][schema]") {
  const std::string t = "com.apple.activation.simple";
  Accepted(t, R"({"StandardConfigurations":["cfg.a","cfg.b"]})");
  Accepted(t, R"({"StandardConfigurations":[],"Predicate":"TRUEPREDICATE"})");
  Refused(t, "{}", "Payload.StandardConfigurations", "missing");
  Refused(t, R"({"StandardConfigurations":"cfg.a"})", "Payload.StandardConfigurations",
          "must be an array");
  Refused(t, R"({"StandardConfigurations":["cfg.a",3]})", "Payload.StandardConfigurations[1]",
          "must be a string, not an integer");
  const std::string s = "com.apple.configuration.management.status-subscriptions";
  Accepted(s, R"({"StatusItems":[{"Name":"device.operating-system.version"}]})");
  Refused(s, R"({"StatusItems":[{"Name":"a"},{}]})", "Payload.StatusItems[1].Name", "missing");
  Refused(s, R"({"StatusItems":[{"Name":"a"},"b"]})", "Payload.StatusItems[1]",
          "must be an object");
}

TEST_CASE("ddm schema: rangelists and dictionaries under any key", "[ddm][schema]") {
  const std::string data = "com.apple.asset.data";
  Accepted(data,
           R"({"Reference":{"DataURL":"https://example.com/d"},"Authentication":{"Type":"MDM"}})");
  Refused(data,
          R"({"Reference":{"DataURL":"https://example.com/d"},"Authentication":{"Type":"Basic"}})",
          "Payload.Authentication.Type", R"(must be one of "MDM", "None", not "Basic")");
  Refused(data,
          R"({"Reference":{"DataURL":"https://example.com/d"},"Authentication":{"Type":"mdm"}})",
          "Payload.Authentication.Type", "must be one of");
  Refused(data, R"({"Reference":{}})", "Payload.Reference.DataURL", "missing");
  Refused(data, R"({"Reference":{"DataURL":"u","Size":"12"}})", "Payload.Reference.Size",
          "must be an integer");
  const std::string safari = "com.apple.configuration.safari.extensions.settings";
  Accepted(safari, R"j({"ManagedExtensions":{"com.example.ext (ABCDE12345)":{"State":"AlwaysOn",
                        "AllowedDomains":["*.example.com"]},"other":{}}})j");
  Refused(safari, R"j({"ManagedExtensions":{"com.example.ext (ABCDE12345)":{"State":"On"}}})j",
          R"j(Payload.ManagedExtensions["com.example.ext (ABCDE12345)"].State)j", "must be one of");
  Refused(safari, R"({"ManagedExtensions":{"x":{"DeniedDomains":[1]}}})",
          "Payload.ManagedExtensions.x.DeniedDomains[0]", "must be a string");
  Refused(safari, R"({"ManagedExtensions":{"x":"AlwaysOn"}})", "Payload.ManagedExtensions.x",
          "must be an object");
  // <any>: anything at all, under any key.
  Accepted("com.apple.management.properties", R"({"a":1,"b":[null,{"c":true}],"d":"x"})");
  const std::string caps = "com.apple.management.server-capabilities";
  Accepted(caps, R"({"Version":"1","SupportedFeatures":{"x":{"y":[1]}}})");
  Refused(caps, R"({"SupportedFeatures":{}})", "Payload.Version", "missing");
}

TEST_CASE("ddm schema: unknown keys warn and unknown types are not checked", "[ddm][schema]") {
  const std::string t = "com.apple.configuration.passcode.settings";
  std::vector<std::string> w;
  Accepted(t, R"({"MinimumLength":4,"Foo":1,"CustomRegex":{"Regex":"x","Bar":true},"we.ird":2})",
           &w);
  REQUIRE(w.size() == 3);
  // In the payload's order: members as given.
  CHECK(w[0] == "Payload.Foo: unknown key (not in Apple's schema for " + t + ")");
  CHECK(w[1].rfind("Payload.CustomRegex.Bar: unknown key", 0) == 0);
  CHECK(w[2].rfind(R"(Payload["we.ird"]: unknown key)", 0) == 0);
  // A key too long or unprintable is named as an excerpt.
  Accepted(t, R"({"\u0001x":1,")" + std::string(60, 'k') + R"(":2})", &w);
  REQUIRE(w.size() == 2);
  CHECK(w[0].rfind(R"(Payload["\x01x"]: unknown key)", 0) == 0);
  CHECK(w[1].rfind(R"(Payload[")" + std::string(40, 'k') + R"(..."]: unknown key)", 0) == 0);
  // At most kMaxSchemaWarnings, then how many more.
  std::string many = "{";
  for (int i = 0; i < 30; ++i) many += (i ? ",\"k" : "\"k") + std::to_string(100 + i) + "\":1";
  many += "}";
  Accepted(t, many, &w);
  REQUIRE(w.size() == kMaxSchemaWarnings + 1);
  CHECK(w.front().rfind("Payload.k100: unknown key", 0) == 0);
  CHECK(w.back() == "... and 10 more unknown keys");
  // A warning does not hide a refusal further on.
  Refused(t, R"({"Foo":1,"MinimumLength":99})", "Payload.MinimumLength", "between 0 and 16");
  // Null warnings: fine.
  CHECK(CheckText(t, R"({"Foo":1})", nullptr).ok());
  // Unknown Types, under com.apple. or not: nothing to check.
  Accepted("com.apple.configuration.no-such-thing",
           R"({"anything":[1,{"x":null}],"MinimumLength":99})");
  Accepted("com.example.configuration", R"({"StandardConfigurations":5})");
  CHECK(CheckText("com.apple.configuration.no-such-thing", "not json", nullptr).ok());
}

TEST_CASE("ddm schema: ParseDeclaration refuses a payload against the schema and reports warnings",
          "[ddm][schema]") {
  const std::string t = "com.apple.configuration.passcode.settings";
  auto bad = ParseDeclaration(Decl(t, R"({"MinimumLength":99})"), {});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == Code::kInvalidArgument);
  CHECK(bad.status().message() == "Payload.MinimumLength: must be between 0 and 16, not 99");
  auto missing = ParseDeclaration(Decl("com.apple.activation.simple", "{}"), {});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().message().rfind("Payload.StandardConfigurations: missing", 0) == 0);
  auto nested = ParseDeclaration(Decl("com.apple.configuration.softwareupdate.settings",
                                      R"({"Deferrals":{"MajorPeriodInDays":0}})"),
                                 {});
  REQUIRE_FALSE(nested.ok());
  CHECK(nested.status().message().rfind(
            "Payload.Deferrals.MajorPeriodInDays: must be between 1 and 90", 0) == 0);

  auto warned = ParseDeclaration(Decl(t, R"({"MinimumLength":6,"Zzz":{"a":1}})"), {});
  INFO(warned.status().ToString());
  REQUIRE(warned.ok());
  REQUIRE(warned->warnings.size() == 1);
  CHECK(warned->warnings[0].rfind("Payload.Zzz: unknown key", 0) == 0);
  CHECK(warned->payload_json == R"({"MinimumLength":6,"Zzz":{"a":1}})");  // kept as given

  auto clean = ParseDeclaration(Decl(t, R"({"MinimumLength":6})"), {});
  REQUIRE(clean.ok());
  CHECK(clean->warnings.empty());
  // The top-level checks still come first.
  auto both = ParseDeclaration(
      R"({"Type":")" + t + R"(","Identifier":"a/b","Payload":{"MinimumLength":99}})", {});
  REQUIRE_FALSE(both.ok());
  CHECK(both.status().message().rfind("Identifier:", 0) == 0);
  // Other Types (allowed by the limits) are not checked.
  Limits other;
  other.allow_other_types = true;
  auto o = ParseDeclaration(Decl("com.example.thing", R"({"MinimumLength":99})"), other);
  REQUIRE(o.ok());
  CHECK(o->warnings.empty());
}
