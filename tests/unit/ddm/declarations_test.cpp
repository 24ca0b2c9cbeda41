// The DDM declaration store (core/ddm/declarations.h): parsing and validation,
// canonical JSON and ServerTokens, manifests and DeclarationsTokens, and the
// writes' token changes on a real RocksDB in a temp directory.
#include <catch2/catch.hpp>

#include <rocksdb/db.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>

#include "ddm/declarations.h"
#include "support/orchardd_process.h"
#include "util/encoding.h"

using namespace orchard;
using ddm::Kind;

namespace {

struct Db {
  std::string dir = testing::MakeTempDir("orchard-ddm");
  std::unique_ptr<store::Store> db;
  std::unique_ptr<ddm::DeclarationStore> ds;
  Db() { Open(); }
  void Open() {
    db = std::move(store::Store::Open({.path = dir + "/db"}).value());
    ds = std::make_unique<ddm::DeclarationStore>(db.get());
  }
  void Reopen() {
    ds.reset();
    db.reset();
    Open();
  }
  ~Db() {
    ds.reset();
    db.reset();
    std::filesystem::remove_all(dir);
  }

  // Runs one write into a fresh batch, commits it, returns the changed enrollments (sorted).
  std::vector<std::string> Commit(const std::function<Result<std::vector<ddm::TokenChange>>(store::Batch&)>& f,
                                  std::vector<ddm::TokenChange>* changes = nullptr) {
    store::Batch b;
    auto r = f(b);
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    REQUIRE(db->Write(b).ok());
    std::vector<std::string> ids;
    for (const auto& c : *r) ids.push_back(c.enrollment_id);
    std::sort(ids.begin(), ids.end());
    if (changes) *changes = *r;
    return ids;
  }
  std::vector<std::string> Put(const std::string& type, const std::string& id, const std::string& payload,
                               int64_t now = 1000, const std::string& owner = "admin") {
    auto d = ddm::ParseDeclaration(R"({"Type":")" + type + R"(","Identifier":")" + id + R"(","Payload":)" +
                                       payload + "}",
                                   ds->limits());
    INFO(d.status().ToString());
    REQUIRE(d.ok());
    return Commit([&](store::Batch& b) { return ds->Put(b, *d, owner, now); });
  }
  std::vector<std::string> Config(const std::string& id, const std::string& payload, int64_t now = 1000) {
    return Put("com.apple.configuration.test", id, payload, now);
  }
  std::vector<std::string> SetAdd(const std::string& set, const std::string& id, int64_t now = 1000) {
    return Commit([&](store::Batch& b) { return ds->SetAdd(b, set, id, now); });
  }
  std::vector<std::string> SetRemove(const std::string& set, const std::string& id, int64_t now = 1000) {
    return Commit([&](store::Batch& b) { return ds->SetRemove(b, set, id, now); });
  }
  std::vector<std::string> Assign(const std::string& e, const std::string& set, int64_t now = 1000) {
    return Commit([&](store::Batch& b) { return ds->Assign(b, e, set, now); });
  }
  std::vector<std::string> Unassign(const std::string& e, const std::string& set, int64_t now = 1000) {
    return Commit([&](store::Batch& b) { return ds->Unassign(b, e, set, now); });
  }
  std::vector<std::string> Touch(const std::string& id, int64_t now = 1000) {
    return Commit([&](store::Batch& b) { return ds->Touch(b, id, now); });
  }
  std::vector<std::string> Delete(const std::string& id, int64_t now = 1000) {
    return Commit([&](store::Batch& b) { return ds->Delete(b, id, now); });
  }
  ddm::Manifest Manifest(const std::string& e) {
    auto m = ds->ManifestOf(e);
    REQUIRE(m.ok());
    return *m;
  }
  std::string Token(const std::string& e) { return Manifest(e).declarations_token; }
  ddm::Declaration Get(const std::string& id) {
    auto d = ds->Get(id);
    REQUIRE(d.ok());
    REQUIRE(d->has_value());
    return **d;
  }
};

using Ids = std::vector<std::string>;

std::string DeclJson(const std::string& type, const std::string& id, const std::string& payload) {
  return R"({"Type":")" + type + R"(","Identifier":")" + id + R"(","Payload":)" + payload + "}";
}

ddm::Declaration Parse(const std::string& json, const ddm::Limits& limits = {}) {
  auto d = ddm::ParseDeclaration(json, limits);
  INFO(json);
  INFO(d.status().ToString());
  REQUIRE(d.ok());
  return *d;
}

// The refusal of json: its code, and a message containing what.
void Refused(const std::string& json, Code code, const std::string& what, const ddm::Limits& limits = {}) {
  auto d = ddm::ParseDeclaration(json, limits);
  INFO(json.substr(0, 200));
  REQUIRE_FALSE(d.ok());
  INFO(d.status().ToString());
  CHECK(d.status().code() == code);
  CHECK(d.status().message().find(what) != std::string::npos);
}

bool IsHex64(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// A random JSON tree, written with random key order and whitespace.
struct Node {
  enum Type { kObject, kArray, kString, kInt, kBool, kReal } type = kObject;
  std::string s;
  int64_t i = 0;
  bool b = false;
  std::vector<std::pair<std::string, Node>> kids;  // object members / array items (empty key)
};

Node RandomNode(std::mt19937& rng, int depth) {
  Node n;
  const int pick = depth >= 4 ? 2 + static_cast<int>(rng() % 4) : static_cast<int>(rng() % 6);
  n.type = static_cast<Node::Type>(pick);
  switch (n.type) {
    case Node::kObject:
    case Node::kArray: {
      const int count = static_cast<int>(rng() % 4);
      for (int k = 0; k < count; ++k)
        n.kids.emplace_back(n.type == Node::kObject ? "k" + std::to_string(k) + "é" : "", RandomNode(rng, depth + 1));
      break;
    }
    case Node::kString: n.s = "s\"\\/\n" + std::to_string(rng() % 1000); break;
    case Node::kInt: n.i = static_cast<int64_t>(rng() % 2000) - 1000; break;
    case Node::kBool: n.b = rng() % 2; break;
    case Node::kReal: n.i = static_cast<int64_t>(rng() % 1000); break;  // written as i + 0.25
  }
  return n;
}

std::string JsonEscape(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out + "\"";
}

std::string Write(const Node& n, std::mt19937& rng) {
  auto ws = [&] { return std::string(rng() % 3, rng() % 2 ? ' ' : '\n'); };
  switch (n.type) {
    case Node::kString: return JsonEscape(n.s);
    case Node::kInt: return std::to_string(n.i);
    case Node::kBool: return n.b ? "true" : "false";
    case Node::kReal: return std::to_string(n.i) + ".25";
    case Node::kArray: {
      std::string out = "[" + ws();
      for (size_t k = 0; k < n.kids.size(); ++k) out += (k ? "," : "") + ws() + Write(n.kids[k].second, rng) + ws();
      return out + "]";
    }
    case Node::kObject: {
      std::vector<size_t> order(n.kids.size());
      for (size_t k = 0; k < order.size(); ++k) order[k] = k;
      std::shuffle(order.begin(), order.end(), rng);
      std::string out = "{" + ws();
      for (size_t k = 0; k < order.size(); ++k)
        out += (k ? "," : "") + ws() + JsonEscape(n.kids[order[k]].first) + ws() + ":" + ws() +
               Write(n.kids[order[k]].second, rng);
      return out + ws() + "}";
    }
  }
  return "";
}

void Leaves(Node* n, std::vector<Node*>* out) {
  if (n->type != Node::kObject && n->type != Node::kArray) {
    out->push_back(n);
    return;
  }
  for (auto& [k, kid] : n->kids) Leaves(&kid, out);
}

}  // namespace

// ---- parsing ----

TEST_CASE("ddm: ParseDeclaration accepts each kind and computes the ServerToken", "[ddm]") {
  // Each with the keys Apple's schema requires (canonical) besides "A" and "B" (unknown: warnings).
  const std::tuple<const char*, Kind, std::string> kinds[] = {
      {"com.apple.activation.simple", Kind::kActivation, R"("StandardConfigurations":["c"])"},
      {"com.apple.configuration.passcode.settings", Kind::kConfiguration, ""},
      {"com.apple.asset.credential.userpassword", Kind::kAsset, R"("Reference":{"DataURL":"https://example.com/c"})"},
      {"com.apple.management.server-capabilities", Kind::kManagement, R"("SupportedFeatures":{},"Version":"1")"}};
  for (const auto& [type, kind, required] : kinds) {
    const std::string more = required.empty() ? "" : "," + required;
    auto d = Parse(DeclJson(type, "org.example.x", R"({ "B" : [1, true], "A" : "v")" + more + " }"));
    CHECK(d.type == type);
    CHECK(d.kind == kind);
    CHECK(d.identifier == "org.example.x");
    CHECK(d.payload_json == R"({"A":"v","B":[1,true])" + more + "}");
    CHECK(d.warnings.size() == 2);
    CHECK(d.revision == 0);
    CHECK(IsHex64(d.server_token));
    CHECK(d.server_token == ddm::ServerTokenOf(d));
    CHECK(ddm::KindOfType(type) == kind);
    CHECK(ddm::KindFromName(ddm::KindName(kind)) == kind);
  }
  CHECK(std::string(ddm::KindName(Kind::kManagement)) == "management");
  CHECK_FALSE(ddm::KindFromName("config").has_value());
  CHECK_FALSE(ddm::KindOfType("com.apple.configuration.").has_value());
  CHECK_FALSE(ddm::KindOfType("com.apple.configurationx.y").has_value());
  CHECK_FALSE(ddm::KindOfType("com.example.configuration.y").has_value());

  // The token is SHA-256 of the canonical {Identifier, Payload, Type}, "\n", the revision.
  auto d = Parse(DeclJson("com.apple.configuration.x", "a", R"({"z":1})"));
  CHECK(d.server_token ==
        Sha256Hex(R"({"Identifier":"a","Payload":{"z":1},"Type":"com.apple.configuration.x"})" "\n0"));
  d.revision = 3;
  CHECK(ddm::ServerTokenOf(d) ==
        Sha256Hex(R"({"Identifier":"a","Payload":{"z":1},"Type":"com.apple.configuration.x"})" "\n3"));
  d.server_token = ddm::ServerTokenOf(d);
  CHECK(ddm::DeviceJson(d) == R"({"Identifier":"a","Payload":{"z":1},"ServerToken":")" + d.server_token +
                                  R"(","Type":"com.apple.configuration.x"})");
}

TEST_CASE("ddm: ParseDeclaration refuses bad declarations naming the key", "[ddm]") {
  const std::string t = "com.apple.configuration.x";
  const auto bad = Code::kInvalidArgument;
  Refused(R"({"Identifier":"a","Payload":{}})", bad, "Type: missing");
  Refused(R"({"Type":")" + t + R"(","Payload":{}})", bad, "Identifier: missing");
  Refused(R"({"Type":")" + t + R"(","Identifier":"a"})", bad, "Payload: missing");
  Refused(R"({"Type":5,"Identifier":"a","Payload":{}})", bad, "Type: must be a string");
  Refused(R"({"Type":")" + t + R"(","Identifier":["a"],"Payload":{}})", bad, "Identifier: must be a string");
  Refused(R"({"Type":"","Identifier":"a","Payload":{}})", bad, "Type: must not be empty");
  Refused(DeclJson(t, "", "{}"), bad, "Identifier: must not be empty");
  Refused(DeclJson(t, "a", "[]"), bad, "Payload: must be an object");
  Refused(DeclJson(t, "a", "\"x\""), bad, "Payload: must be an object");
  Refused(R"({"Type":")" + t + R"(","Identifier":"a","Payload":{},"Extra":1})", bad, "\"Extra\": unknown key");
  Refused(DeclJson(t, std::string(65, 'a'), "{}"), bad, "Identifier: longer than 64 bytes");
  CHECK(Parse(DeclJson(t, std::string(64, 'a'), "{}")).identifier.size() == 64);
  Refused(DeclJson(t, "a/b", "{}"), bad, "Identifier: must not contain '/'");
  Refused(DeclJson(t, "a\\u0001b", "{}"), bad, "Identifier: must be printable ASCII");
  Refused(DeclJson(t, "a\\tb", "{}"), bad, "Identifier: must be printable ASCII");
  Refused(DeclJson(t, "a b", "{}"), bad, "Identifier: must be printable ASCII");
  Refused(DeclJson(t, "..", "{}"), bad, "Identifier: must not be");
  Refused(DeclJson(t, ".", "{}"), bad, "Identifier: must not be");
  CHECK(Parse(DeclJson(t, "...", "{}")).identifier == "...");
  Refused(DeclJson(t, "caf\xC3\xA9", "{}"), bad, "Identifier: must be printable ASCII");
  Refused(DeclJson(t, "a\x7f", "{}"), bad, "Identifier: must be printable ASCII");
  Refused(DeclJson("com.example.thing", "a", "{}"), bad, "Type: must start with com.apple.activation.");
  Refused(DeclJson("com.apple.configuration.", "a", "{}"), bad, "Type: must start with");
  Refused(DeclJson("com.apple.legacy", "a", "{}"), bad, "Type: must start with");
  ddm::Limits other;
  other.allow_other_types = true;
  auto o = Parse(DeclJson("com.example.thing", "a", "{}"), other);
  CHECK(o.kind == Kind::kConfiguration);
  CHECK(o.type == "com.example.thing");
  Refused("[]", bad, "declaration: must be a JSON object");
  Refused("", bad, "json:");
  Refused("{", bad, "json:");
  Refused(R"({"Type":")" + t + R"(","Identifier":"a","Payload":{},})", bad, "json:");
  Refused(DeclJson(t, "a", "{}") + "x", bad, "trailing");
  // Invalid UTF-8: a stray continuation byte, an overlong form, a surrogate, a lone \ud800.
  Refused(DeclJson(t, "a", "{\"k\":\"x\x80y\"}"), bad, "Payload: json: invalid UTF-8");
  Refused(DeclJson(t, "a", "{\"k\":\"\xC0\xAF\"}"), bad, "invalid UTF-8");
  Refused(DeclJson(t, "a", "{\"k\":\"\xED\xA0\x80\"}"), bad, "invalid UTF-8");
  Refused(DeclJson(t, "a", "{\"k\xFF\":1}"), bad, "invalid UTF-8");
  Refused(DeclJson(t, "a", R"({"k":"\ud800"})"), bad, "surrogate");
  // Duplicate keys, at the top and inside the payload.
  Refused(R"({"Type":")" + t + R"(","Type":")" + t + R"(","Identifier":"a","Payload":{}})", bad,
          "duplicate key \"Type\"");
  Refused(DeclJson(t, "a", R"({"x":{"k":1,"j":2,"k":1}})"), bad, "Payload: json: duplicate key \"k\"");
  Refused(R"({"Type":")" + t + R"(","Identifier":"a\x","Payload":{}})", bad, "Identifier: json: invalid escape");
  // Over the size limit: TooLarge, before parsing.
  ddm::Limits small;
  small.max_declaration_bytes = 100;
  const std::string big = DeclJson(t, "a", "{\"k\":\"" + std::string(100, 'x') + "\"}");
  Refused(big, Code::kTooLarge, "exceeds", small);
  Refused("{" + std::string(200, ' '), Code::kTooLarge, "exceeds", small);
  CHECK(ddm::ParseDeclaration(big, {}).ok());
}

TEST_CASE("ddm: nesting deeper than max_depth is refused without recursing further", "[ddm]") {
  const std::string t = "com.apple.configuration.x";
  auto nested = [](int levels) {  // levels nested objects
    std::string s;
    for (int i = 0; i < levels; ++i) s += "{\"a\":";
    s += "1";
    for (int i = 0; i < levels; ++i) s += "}";
    return s;
  };
  // The declaration is one level, so the payload may nest max_depth - 1 levels.
  CHECK(ddm::ParseDeclaration(DeclJson(t, "a", nested(31)), {}).ok());
  Refused(DeclJson(t, "a", nested(32)), Code::kInvalidArgument, "nesting deeper than the limit of 32");
  ddm::Limits shallow;
  shallow.max_depth = 3;
  CHECK(ddm::ParseDeclaration(DeclJson(t, "a", R"({"a":[1]})"), shallow).ok());
  Refused(DeclJson(t, "a", R"({"a":[[1]]})"), Code::kInvalidArgument, "nesting", shallow);
  // Hostile depth: refused quickly, however large the caller's limit.
  ddm::Limits huge;
  huge.max_depth = size_t{1} << 40;
  const std::string deep(200000, '[');
  Refused(DeclJson(t, "a", "{\"k\":" + deep + "}"), Code::kInvalidArgument, "nesting", huge);
  CHECK_FALSE(ddm::CanonicalJson(deep, size_t{1} << 40).ok());
  CHECK(ddm::CanonicalJson("[[[1]]]", 3).ok());
  CHECK_FALSE(ddm::CanonicalJson("[[[1]]]", 2).ok());
}

TEST_CASE("ddm: a given ServerToken is ignored", "[ddm]") {
  const std::string t = "com.apple.configuration.x";
  auto without = Parse(R"({"Type":")" + t + R"(","Identifier":"a","Payload":{"k":1}})");
  auto with = Parse(R"({"ServerToken":"mine","Type":")" + t + R"(","Identifier":"a","Payload":{"k":1}})");
  auto odd = Parse(R"({"ServerToken":{"x":[1]},"Type":")" + t + R"(","Identifier":"a","Payload":{"k":1}})");
  CHECK(with.server_token == without.server_token);
  CHECK(odd.server_token == without.server_token);
  CHECK(with.server_token != "mine");
  CHECK(with.payload_json == without.payload_json);
}

// ---- canonical JSON ----

TEST_CASE("ddm: CanonicalJson sorts keys, drops whitespace and keeps numbers and strings", "[ddm]") {
  auto c = [](const std::string& in) {
    auto r = ddm::CanonicalJson(in);
    INFO(in);
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    return *r;
  };
  CHECK(c(" { \"b\" : 1 ,\n\t\"a\" : [ 1 , 2.50 , -0 , 1E2, 0.1, 1e300, -1.5e-3 ] } ") ==
        R"({"a":[1,2.5,-0,100.0,0.1,1e+300,-0.0015],"b":1})");
  CHECK(c("123456789012345678901234567890") == "123456789012345678901234567890");
  CHECK(c("-9223372036854775809") == "-9223372036854775809");
  CHECK(c("2.0") == "2.0");
  CHECK(c(R"("x\u00e9\/\"\\\n\u0001\u001f\u007f")") == "\"x\xC3\xA9/\\\"\\\\\\n\\u0001\\u001f\x7f\"");
  CHECK(c(R"("\ud83d\ude00")") == "\"\xF0\x9F\x98\x80\"");
  CHECK(c("{\"\xC3\xA9\":1,\"z\":2,\"Z\":3,\"a\":{\"y\":null,\"x\":false}}") ==
        "{\"Z\":3,\"a\":{\"x\":false,\"y\":null},\"z\":2,\"\xC3\xA9\":1}");
  CHECK(c("[]") == "[]");
  CHECK(c("{}") == "{}");
  CHECK(c(" true ") == "true");
  // Reals round-trip exactly.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    double d = std::ldexp(static_cast<double>(rng() >> 11), static_cast<int>(rng() % 200) - 100);
    char buf[64];
    snprintf(buf, sizeof buf, "%.17e", d);
    const std::string out = c(buf);
    CHECK(std::strtod(out.c_str(), nullptr) == d);
    CHECK(out.find_first_of(".e") != std::string::npos);
  }
  for (const char* bad : {"", " ", "{", "[1,]", "01", "1.", ".5", "+1", "1e", "nul", "[1 2]", "{\"a\" 1}",
                          "{\"a\":1,\"a\":2}", "\"\\ud800\"", "\"\\udc00\"", "\"\\x\"", "\"a\x01\"", "\"\xC3\"",
                          "1e999", "\"abc", "{'a':1}", "\xEF\xBB\xBF{}"}) {
    auto r = ddm::CanonicalJson(bad);
    INFO(bad);
    CHECK_FALSE(r.ok());
    CHECK(r.status().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("ddm: the ServerToken ignores key order and whitespace and follows every payload change", "[ddm]") {
  std::mt19937 rng(20261201);
  const std::string t = "com.apple.configuration.x";
  for (int round = 0; round < 300; ++round) {
    Node payload;  // an object with random members and at least one leaf
    const int members = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < members; ++k) payload.kids.emplace_back("m" + std::to_string(k), RandomNode(rng, 1));
    payload.kids.emplace_back("leaf", Node{Node::kInt, "", 1, false, {}});
    const auto a = Parse(DeclJson(t, "id", Write(payload, rng)));
    const auto b = Parse(DeclJson(t, "id", Write(payload, rng)));
    REQUIRE(a.payload_json == b.payload_json);
    REQUIRE(a.server_token == b.server_token);
    std::vector<Node*> leaves;
    Leaves(&payload, &leaves);
    Node* leaf = leaves[rng() % leaves.size()];
    switch (leaf->type) {
      case Node::kString: leaf->s += "x"; break;
      case Node::kInt: leaf->i += 1; break;
      case Node::kBool: leaf->b = !leaf->b; break;
      case Node::kReal: leaf->i += 1; break;
      default: break;
    }
    const auto changed = Parse(DeclJson(t, "id", Write(payload, rng)));
    INFO(a.payload_json);
    INFO(changed.payload_json);
    REQUIRE(changed.server_token != a.server_token);
  }
  // An integer and the same real are different payloads; so are the Identifier and Type.
  const auto i = Parse(DeclJson(t, "id", R"({"k":1})"));
  CHECK(Parse(DeclJson(t, "id", R"({"k":1.0})")).server_token != i.server_token);
  CHECK(Parse(DeclJson(t, "id2", R"({"k":1})")).server_token != i.server_token);
  CHECK(Parse(DeclJson(t + "y", "id", R"({"k":1})")).server_token != i.server_token);
}

TEST_CASE("ddm: Touch changes only that declaration's ServerToken", "[ddm]") {
  Db h;
  h.Config("a", R"({"k":1})");
  h.Config("b", R"({"k":1})");
  h.SetAdd("s", "a");
  h.SetAdd("s", "b");
  REQUIRE(h.Assign("e1", "s") == Ids{"e1"});
  const auto a0 = h.Get("a"), b0 = h.Get("b");
  const std::string token0 = h.Token("e1");
  REQUIRE(h.Touch("a", 2000) == Ids{"e1"});
  const auto a1 = h.Get("a"), b1 = h.Get("b");
  CHECK(a1.revision == 1);
  CHECK(a1.modified_ms == 2000);
  CHECK(a1.created_ms == a0.created_ms);
  CHECK(a1.payload_json == a0.payload_json);
  CHECK(a1.server_token != a0.server_token);
  CHECK(a1.server_token == ddm::ServerTokenOf(a1));
  CHECK(b1.server_token == b0.server_token);
  CHECK(h.Token("e1") != token0);
  REQUIRE(h.Touch("a", 3000) == Ids{"e1"});
  CHECK(h.Get("a").revision == 2);
  // A replacement keeps the revision (and created_ms).
  REQUIRE(h.Config("a", R"({"k":2})", 4000) == Ids{"e1"});
  const auto a2 = h.Get("a");
  CHECK(a2.revision == 2);
  CHECK(a2.created_ms == a0.created_ms);
  CHECK(a2.server_token == ddm::ServerTokenOf(a2));
  store::Batch b;
  auto missing = h.ds->Touch(b, "nope", 1);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == Code::kNotFound);
  CHECK(b.empty());
}

// ---- manifests and tokens ----

TEST_CASE("ddm: the DeclarationsToken does not depend on the order sets and assignments were made", "[ddm]") {
  Db h;
  const std::vector<std::pair<std::string, std::string>> decls = {
      {"com.apple.activation.simple", "act.1"},      {"com.apple.configuration.x", "cfg.b"},
      {"com.apple.configuration.x", "cfg.a"},        {"com.apple.asset.data", "asset.1"},
      {"com.apple.management.properties", "mgmt.1"}, {"com.apple.configuration.x", "cfg.c"}};
  for (const auto& [type, id] : decls) {
    std::string payload = R"({"v":")" + id + "\"";
    // The keys Apple's schemas require of these types.
    if (type == "com.apple.activation.simple") payload += R"(,"StandardConfigurations":[])";
    if (type == "com.apple.asset.data") payload += R"(,"Reference":{"DataURL":"https://example.com/a"})";
    h.Put(type, id, payload + "}");
  }
  std::mt19937 rng(42);
  std::set<std::string> tokens;
  for (int trial = 0; trial < 12; ++trial) {
    // Three sets sharing declarations; the enrollment gets all three.
    const std::string p = "t" + std::to_string(trial) + ".";
    std::vector<std::function<void()>> ops;
    const std::vector<std::vector<int>> members = {{0, 1, 2}, {2, 3}, {4, 5, 1}};
    for (size_t s = 0; s < members.size(); ++s) {
      for (int d : members[s]) ops.push_back([&, s, d] { h.SetAdd(p + std::to_string(s), decls[d].second); });
      ops.push_back([&, s] { h.Assign("e" + std::to_string(trial), p + std::to_string(s)); });
    }
    std::shuffle(ops.begin(), ops.end(), rng);
    for (auto& op : ops) op();
    tokens.insert(h.Token("e" + std::to_string(trial)));
  }
  REQUIRE(tokens.size() == 1);
  // It is the documented hash of the manifest, in kind order then identifier order.
  const auto m = h.Manifest("e0");
  std::string lines;
  for (const char* id : {"act.1", "cfg.a", "cfg.b", "cfg.c", "asset.1", "mgmt.1"})
    lines += std::string(id) + "\t" + h.Get(id).server_token + "\n";
  CHECK(m.declarations_token == Sha256Hex(lines));
  CHECK(ddm::DeclarationsTokenOf(m) == m.declarations_token);
  REQUIRE(m.configurations.size() == 3);
  CHECK(m.configurations[0].identifier == "cfg.a");
  CHECK(m.configurations[2].identifier == "cfg.c");
  CHECK(m.Of(Kind::kActivation).size() == 1);
  CHECK(m.Of(Kind::kAsset)[0].identifier == "asset.1");
  CHECK(m.Of(Kind::kManagement)[0].server_token == h.Get("mgmt.1").server_token);
}

TEST_CASE("ddm: tokens response and declaration items carry the same token and all four arrays", "[ddm]") {
  Db h;
  // Nothing assigned: the empty manifest still has a token, and the epoch.
  const auto empty = h.Manifest("nobody");
  CHECK(empty.declarations_token == Sha256Hex(""));
  CHECK(IsHex64(empty.declarations_token));
  CHECK(empty.changed_ms == 0);
  CHECK(ddm::TokensResponseJson(empty) == R"({"SyncTokens":{"DeclarationsToken":")" + Sha256Hex("") +
                                              R"(","Timestamp":"1970-01-01T00:00:00Z"}})");
  CHECK(ddm::DeclarationItemsJson(empty) ==
        R"({"Declarations":{"Activations":[],"Assets":[],"Configurations":[],"Management":[]},)"
        R"("DeclarationsToken":")" + Sha256Hex("") + "\"}");
  // A manifest built by hand without a token gets its computed one.
  ddm::Manifest bare;
  CHECK(ddm::TokensResponseJson(bare).find(Sha256Hex("")) != std::string::npos);

  const int64_t when = 1796119200000 + 789;  // 2026-12-01T10:00:00.789Z
  h.Put("com.apple.activation.simple", "act", R"({"StandardConfigurations":["cfg"]})", when);
  h.Put("com.apple.configuration.x", "cfg", R"({"k":1})", when);
  h.SetAdd("s", "act", when);
  h.SetAdd("s", "cfg", when);
  REQUIRE(h.Assign("e1", "s", when) == Ids{"e1"});
  const auto m = h.Manifest("e1");
  CHECK(m.changed_ms == when);
  const std::string tokens = ddm::TokensResponseJson(m);
  CHECK(tokens == R"({"SyncTokens":{"DeclarationsToken":")" + m.declarations_token +
                      R"(","Timestamp":"2026-12-01T10:00:00Z"}})");
  CHECK(ddm::DeclarationItemsJson(m) ==
        R"({"Declarations":{"Activations":[{"Identifier":"act","ServerToken":")" + h.Get("act").server_token +
            R"("}],"Assets":[],"Configurations":[{"Identifier":"cfg","ServerToken":")" +
            h.Get("cfg").server_token + R"("}],"Management":[]},"DeclarationsToken":")" + m.declarations_token +
            "\"}");
  // The timestamp is the stored change time, not the clock: the same a moment later.
  CHECK(ddm::TokensResponseJson(h.Manifest("e1")) == tokens);
}

TEST_CASE("ddm: an identical re-upload changes nothing and writes nothing", "[ddm]") {
  Db h;
  const std::string t = "com.apple.configuration.x";
  h.Put(t, "a", R"({"x":1,"y":[true,"s"]})", 1000, "admin");
  h.SetAdd("s", "a");
  h.Assign("e1", "s");
  const auto before = h.Get("a");
  const std::string token = h.Token("e1");
  for (const std::string& json : {DeclJson(t, "a", R"({"x":1,"y":[true,"s"]})"),
                                  DeclJson(t, "a", "{ \"y\" : [ true , \"s\" ] ,\n \"x\" : 1 }"),
                                  R"({"ServerToken":"x","Payload":{"y":[true,"s"],"x":1},"Identifier":"a","Type":")" +
                                      t + "\"}"}) {
    store::Batch b;
    bool changed = true;
    auto r = h.ds->Put(b, Parse(json), "policy:other", 5000, &changed);
    REQUIRE(r.ok());
    CHECK(r->empty());
    CHECK_FALSE(changed);
    CHECK(b.empty());
  }
  const auto after = h.Get("a");
  CHECK(after.owner == "admin");
  CHECK(after.modified_ms == before.modified_ms);
  CHECK(after.server_token == before.server_token);
  CHECK(h.Token("e1") == token);
  // A new declaration reports changed.
  store::Batch b;
  bool changed = false;
  REQUIRE(h.ds->Put(b, Parse(DeclJson(t, "new", "{}")), "admin", 1, &changed).ok());
  CHECK(changed);
  CHECK_FALSE(b.empty());
}

TEST_CASE("ddm: Put of a changed payload reports exactly the enrollments whose sets carry it", "[ddm]") {
  Db h;
  h.Config("d1", R"({"v":1})", 1000);
  h.Config("d2", R"({"v":2})", 1000);
  h.SetAdd("A", "d1");
  h.SetAdd("B", "d1");
  h.SetAdd("C", "d2");
  CHECK(h.Assign("e1", "A") == Ids{"e1"});
  CHECK(h.Assign("e2", "A") == Ids{"e2"});
  CHECK(h.Assign("e2", "B").empty());  // d1 already there via A
  CHECK(h.Assign("e3", "C") == Ids{"e3"});
  CHECK(h.Assign("e4", "D").empty());  // an empty set: the empty manifest's token, as before
  const std::string t3 = h.Token("e3"), t4 = h.Token("e4");
  const auto before = h.Get("d1");

  std::vector<ddm::TokenChange> changes;
  auto d = Parse(DeclJson("com.apple.configuration.test", "d1", R"({"v":10})"));
  const auto ids = h.Commit([&](store::Batch& b) { return h.ds->Put(b, d, "policy:p", 2000); }, &changes);
  CHECK(ids == Ids{"e1", "e2"});  // e2 once, though two of its sets carry d1
  for (const auto& c : changes) {
    CHECK(c.changed_ms == 2000);
    CHECK(c.declarations_token == h.Token(c.enrollment_id));
    CHECK(h.Manifest(c.enrollment_id).changed_ms == 2000);
  }
  CHECK(h.Token("e1") == h.Token("e2"));
  CHECK(h.Token("e3") == t3);
  CHECK(h.Token("e4") == t4);
  const auto after = h.Get("d1");
  CHECK(after.created_ms == before.created_ms);
  CHECK(after.modified_ms == 2000);
  CHECK(after.revision == before.revision);
  CHECK(after.owner == "policy:p");
  CHECK(after.payload_json == R"({"v":10})");
  // A replacement with another Type (even another kind) is allowed.
  CHECK(h.Put("com.apple.management.properties", "d1", R"({"v":10})", 3000) == Ids{"e1", "e2"});
  CHECK(h.Get("d1").kind == Kind::kManagement);
  CHECK(h.Manifest("e1").management.size() == 1);
  CHECK(h.Manifest("e1").configurations.empty());
}

TEST_CASE("ddm: each write reports the enrollments whose token it changes", "[ddm]") {
  Db h;
  h.Config("d1", R"({"v":1})");
  h.Config("d2", R"({"v":2})");
  h.SetAdd("A", "d1");

  // Assign: the enrollment, once; again: a no-op that writes nothing.
  CHECK(h.Assign("e1", "A") == Ids{"e1"});
  {
    store::Batch b;
    auto r = h.ds->Assign(b, "e1", "A", 1);
    REQUIRE(r.ok());
    CHECK(r->empty());
    CHECK(b.empty());
  }
  // SetAdd of a declaration e1 already has through A: no change for e1.
  CHECK(h.Assign("e1", "B").empty());
  CHECK(h.Assign("e2", "B").empty());
  const std::string e1_token = h.Token("e1");
  CHECK(h.SetAdd("B", "d1") == Ids{"e2"});
  CHECK(h.Token("e1") == e1_token);
  CHECK(h.Token("e2") == e1_token);
  CHECK(h.SetAdd("B", "d1").empty());  // already a member
  // SetAdd of a new declaration: both.
  CHECK(h.SetAdd("B", "d2") == Ids{"e1", "e2"});
  // SetRemove: d1 stays with e1 through A.
  CHECK(h.SetRemove("B", "d1") == Ids{"e2"});
  CHECK(h.SetRemove("B", "d1").empty());
  CHECK(h.SetRemove("B", "nope").empty());
  // Unassign: back to the empty manifest's token.
  CHECK(h.Assign("e3", "B") == Ids{"e3"});
  CHECK(h.Unassign("e3", "B") == Ids{"e3"});
  CHECK(h.Token("e3") == Sha256Hex(""));
  CHECK(h.Unassign("e3", "B").empty());
  // Touch and Delete: every enrollment carrying the declaration.
  CHECK(h.Touch("d1") == Ids{"e1"});
  CHECK(h.Touch("d2") == Ids{"e1", "e2"});
  const std::string e2_token = h.Token("e2");
  CHECK(h.Delete("d2") == Ids{"e1", "e2"});
  CHECK(h.Token("e2") == Sha256Hex(""));
  CHECK(h.Token("e2") != e2_token);
  auto got = h.ds->Get("d2");
  REQUIRE(got.ok());
  CHECK_FALSE(got->has_value());
  CHECK(h.ds->DeclarationSets("d2", "", 10)->items.empty());
  CHECK(h.ds->SetDeclarations("B", "", 10)->items.empty());
  // A re-created declaration is in no set.
  CHECK(h.Config("d2", R"({"v":2})").empty());
  CHECK(h.Manifest("e2").configurations.empty());

  store::Batch b;
  CHECK(h.ds->Delete(b, "d2x", 1).status().code() == Code::kNotFound);
  CHECK(h.ds->SetAdd(b, "A", "nope", 1).status().code() == Code::kNotFound);
  CHECK(h.ds->SetAdd(b, "bad set", "d1", 1).status().code() == Code::kInvalidArgument);
  CHECK(h.ds->SetAdd(b, std::string(65, 's'), "d1", 1).status().code() == Code::kInvalidArgument);
  CHECK(h.ds->SetRemove(b, "", "d1", 1).status().code() == Code::kInvalidArgument);
  CHECK(h.ds->Assign(b, "", "A", 1).status().code() == Code::kInvalidArgument);
  CHECK(h.ds->Assign(b, std::string("e\0x", 3), "A", 1).status().code() == Code::kInvalidArgument);
  CHECK(h.ds->Assign(b, std::string(257, 'e'), "A", 1).status().code() == Code::kInvalidArgument);
  CHECK(h.ds->Assign(b, std::string(256, 'e'), "A/", 1).status().code() == Code::kInvalidArgument);
  CHECK(h.ds->Unassign(b, "e1", "A\n", 1).status().code() == Code::kInvalidArgument);
  CHECK(b.empty());
  CHECK(h.Assign(std::string(256, 'e'), "A") == Ids{std::string(256, 'e')});
  CHECK(ddm::DeclarationStore::ValidSetName("Aa0._-"));
  CHECK(ddm::DeclarationStore::ValidSetName(std::string(64, 'a')));
  CHECK_FALSE(ddm::DeclarationStore::ValidSetName(std::string(65, 'a')));
  CHECK_FALSE(ddm::DeclarationStore::ValidSetName(""));
  CHECK_FALSE(ddm::DeclarationStore::ValidSetName("a b"));
  CHECK_FALSE(ddm::DeclarationStore::ValidSetName("a/b"));
  CHECK_FALSE(ddm::DeclarationStore::ValidSetName("caf\xC3\xA9"));
}

TEST_CASE("ddm: Resolve finds a declaration only in the enrollment's manifest with its kind", "[ddm]") {
  Db h;
  h.Config("cfg", R"({"v":1})");
  h.Put("com.apple.asset.data", "asset", R"({"Reference":{"DataURL":"https://example.com/a"},"v":2})");
  h.Config("other", R"({"v":3})");
  h.SetAdd("A", "cfg");
  h.SetAdd("A", "asset");
  h.SetAdd("B", "other");
  h.Assign("e1", "A");
  h.Assign("e2", "B");
  auto resolve = [&](const std::string& e, Kind k, const std::string& id) {
    auto r = h.ds->Resolve(e, k, id);
    REQUIRE(r.ok());
    return *r;
  };
  auto found = resolve("e1", Kind::kConfiguration, "cfg");
  REQUIRE(found.has_value());
  CHECK(found->payload_json == R"({"v":1})");
  CHECK(found->server_token == h.Get("cfg").server_token);
  CHECK(resolve("e1", Kind::kAsset, "asset").has_value());
  CHECK_FALSE(resolve("e1", Kind::kActivation, "cfg").has_value());   // another kind
  CHECK_FALSE(resolve("e1", Kind::kConfiguration, "asset").has_value());
  CHECK_FALSE(resolve("e1", Kind::kConfiguration, "other").has_value());  // another enrollment's
  CHECK_FALSE(resolve("e3", Kind::kConfiguration, "cfg").has_value());    // no sets
  CHECK_FALSE(resolve("", Kind::kConfiguration, "cfg").has_value());
  CHECK_FALSE(resolve("e1", Kind::kConfiguration, "").has_value());
  h.SetRemove("A", "asset");
  CHECK_FALSE(resolve("e1", Kind::kAsset, "asset").has_value());  // removed from the set
  h.Delete("cfg");
  CHECK_FALSE(resolve("e1", Kind::kConfiguration, "cfg").has_value());  // deleted
}

TEST_CASE("ddm: Forget drops an enrollment's assignments and token record", "[ddm]") {
  Db h;
  h.Config("d", R"({"v":1})");
  h.SetAdd("A", "d");
  h.Assign("e1", "A");
  h.Assign("e1", "B");
  h.Assign("e2", "A");
  REQUIRE(h.Manifest("e1").changed_ms == 1000);
  store::Batch b;
  REQUIRE(h.ds->Forget(b, "e1").ok());
  REQUIRE(h.db->Write(b).ok());
  CHECK(h.ds->EnrollmentSets("e1", "", 10)->items.empty());
  CHECK(h.ds->SetEnrollments("A", "", 10)->items == Ids{"e2"});
  CHECK(h.ds->SetEnrollments("B", "", 10)->items.empty());
  const auto m = h.Manifest("e1");
  CHECK(m.configurations.empty());
  CHECK(m.changed_ms == 0);
  CHECK(m.declarations_token == Sha256Hex(""));
  CHECK(h.Touch("d") == Ids{"e2"});
  store::Batch again;
  CHECK(h.ds->Forget(again, "").code() == Code::kInvalidArgument);
  REQUIRE(h.ds->Forget(again, "never").ok());  // nothing to forget: only the token record's delete
}

TEST_CASE("ddm: listings page with next and refuse a limit of 0 or over 1000", "[ddm]") {
  Db h;
  for (const char* id : {"e", "a", "c", "b", "d"}) h.Config(id, "{}");
  h.SetAdd("s2", "a");
  h.SetAdd("s2", "b");
  h.SetAdd("s2", "c");
  h.SetAdd("s4", "a");
  h.Assign("x", "s1");  // a set with only an enrollment
  h.Assign("x", "s2");
  h.Assign("y", "s2");
  h.Assign("z", "s3");

  auto p1 = h.ds->List("", 2);
  REQUIRE(p1.ok());
  REQUIRE(p1->items.size() == 2);
  CHECK(p1->items[0].identifier == "a");
  CHECK(p1->items[1].identifier == "b");
  CHECK(p1->next == "b");
  auto p2 = h.ds->List(p1->next, 2);
  REQUIRE(p2->items.size() == 2);
  CHECK(p2->items[0].identifier == "c");
  CHECK(p2->next == "d");
  auto p3 = h.ds->List(p2->next, 2);
  REQUIRE(p3->items.size() == 1);
  CHECK(p3->items[0].identifier == "e");
  CHECK(p3->next.empty());
  CHECK(h.ds->List("", 5)->next.empty());  // exactly the rest: no next
  CHECK(h.ds->List("", 5)->items.size() == 5);

  auto all_sets = [&](size_t limit) {
    Ids out;
    std::string after;
    int pages = 0;
    do {
      auto p = h.ds->Sets(after, limit);
      REQUIRE(p.ok());
      out.insert(out.end(), p->items.begin(), p->items.end());
      after = p->next;
      REQUIRE(++pages < 10);
    } while (!after.empty());
    return out;
  };
  CHECK(all_sets(1000) == Ids{"s1", "s2", "s3", "s4"});
  CHECK(all_sets(1) == Ids{"s1", "s2", "s3", "s4"});
  CHECK(all_sets(3) == Ids{"s1", "s2", "s3", "s4"});
  CHECK(h.ds->Sets("s2", 10)->items == Ids{"s3", "s4"});

  auto sd = h.ds->SetDeclarations("s2", "", 2);
  CHECK(sd->items == Ids{"a", "b"});
  CHECK(sd->next == "b");
  CHECK(h.ds->SetDeclarations("s2", "b", 2)->items == Ids{"c"});
  CHECK(h.ds->SetDeclarations("s2", "b", 2)->next.empty());
  CHECK(h.ds->DeclarationSets("a", "", 10)->items == Ids{"s2", "s4"});
  CHECK(h.ds->DeclarationSets("a", "s2", 10)->items == Ids{"s4"});
  CHECK(h.ds->EnrollmentSets("x", "", 1)->items == Ids{"s1"});
  CHECK(h.ds->EnrollmentSets("x", "", 1)->next == "s1");
  CHECK(h.ds->SetEnrollments("s2", "", 10)->items == Ids{"x", "y"});
  CHECK(h.ds->SetEnrollments("s2", "x", 10)->items == Ids{"y"});

  for (size_t bad : {size_t{0}, size_t{1001}}) {
    INFO(bad);
    CHECK(h.ds->List("", bad).status().code() == Code::kInvalidArgument);
    CHECK(h.ds->Sets("", bad).status().code() == Code::kInvalidArgument);
    CHECK(h.ds->SetDeclarations("s2", "", bad).status().code() == Code::kInvalidArgument);
    CHECK(h.ds->DeclarationSets("a", "", bad).status().code() == Code::kInvalidArgument);
    CHECK(h.ds->EnrollmentSets("x", "", bad).status().code() == Code::kInvalidArgument);
    CHECK(h.ds->SetEnrollments("s2", "", bad).status().code() == Code::kInvalidArgument);
  }
  CHECK(h.ds->List("", 1000).ok());
  CHECK(h.ds->SetDeclarations("bad set", "", 10).status().code() == Code::kInvalidArgument);
}

TEST_CASE("ddm: declarations, sets, assignments and tokens survive reopening the store", "[ddm]") {
  Db h;
  h.Put("com.apple.configuration.x", "d", R"({"v":[1,2]})", 1000, "plugin:p");
  h.SetAdd("A", "d", 1500);
  h.Assign("e1", "A", 2000);
  h.Touch("d", 2500);
  const auto d = h.Get("d");
  const auto m = h.Manifest("e1");
  h.Reopen();
  const auto d2 = h.Get("d");
  CHECK(d2.type == d.type);
  CHECK(d2.kind == d.kind);
  CHECK(d2.payload_json == d.payload_json);
  CHECK(d2.server_token == d.server_token);
  CHECK(d2.revision == 1);
  CHECK(d2.owner == "plugin:p");
  CHECK(d2.created_ms == 1000);
  CHECK(d2.modified_ms == 2500);
  const auto m2 = h.Manifest("e1");
  CHECK(m2.declarations_token == m.declarations_token);
  CHECK(m2.changed_ms == 2500);
  CHECK(ddm::TokensResponseJson(m2) == ddm::TokensResponseJson(m));
  CHECK(h.ds->Sets("", 10)->items == Ids{"A"});
  // An identical re-upload after the restart still changes nothing.
  store::Batch b;
  auto r = h.ds->Put(b, Parse(DeclJson("com.apple.configuration.x", "d", R"({"v":[1,2]})")), "admin", 9000);
  REQUIRE(r.ok());
  CHECK(r->empty());
  CHECK(b.empty());
}

TEST_CASE("ddm: a database created before the ddm column family opens and gets it", "[ddm]") {
  const std::string dir = testing::MakeTempDir("orchard-ddm-old");
  {
    rocksdb::Options options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {{"default", {}}, {"enrollments", {}}, {"enroll", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(options, dir + "/db", cfs, &handles, &raw).ok());
    for (auto* handle : handles) REQUIRE(raw->DestroyColumnFamilyHandle(handle).ok());
    delete raw;
  }
  {
    auto db = store::Store::Open({.path = dir + "/db"});
    REQUIRE(db.ok());
    ddm::DeclarationStore ds(db->get());
    store::Batch b;
    REQUIRE(ds.Put(b, Parse(DeclJson("com.apple.configuration.x", "d", "{}")), "admin", 1).ok());
    REQUIRE((*db)->Write(b).ok());
    auto got = ds.Get("d");
    REQUIRE(got.ok());
    CHECK(got->has_value());
  }
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir + "/db", &names).ok());
  CHECK(std::find(names.begin(), names.end(), "ddm") != names.end());
  std::filesystem::remove_all(dir);
}

TEST_CASE("ddm: one Put fans out to 10000 enrollments across 100 distinct set lists", "[ddm]") {
  Db h;
  h.Config("all", R"({"v":1})");
  h.SetAdd("all", "all");
  for (int g = 0; g < 100; ++g) {
    const std::string id = "g" + std::to_string(g);
    h.Config(id, R"({"g":)" + std::to_string(g) + "}");
    h.SetAdd(id, id);
  }
  // Assignments in big batches: within one round each enrollment is written once,
  // so each write sees what the previous rounds committed.
  constexpr int kEnrollments = 10000;
  auto enrollment = [](int i) { return "e" + std::to_string(i); };
  for (int round = 0; round < 2; ++round) {
    store::Batch b;
    for (int i = 0; i < kEnrollments; ++i) {
      const std::string set = round == 0 ? "all" : "g" + std::to_string(i % 100);
      auto r = h.ds->Assign(b, enrollment(i), set, 1000);
      REQUIRE(r.ok());
      REQUIRE(r->size() == 1);
    }
    REQUIRE(h.db->Write(b).ok());
  }
  REQUIRE(h.ds->SetEnrollments("all", "", 1000)->items.size() == 1000);

  std::vector<ddm::TokenChange> changes;
  auto d = Parse(DeclJson("com.apple.configuration.test", "all", R"({"v":2})"));
  const auto ids = h.Commit([&](store::Batch& b) { return h.ds->Put(b, d, "admin", 5000); }, &changes);
  REQUIRE(ids.size() == kEnrollments);
  std::set<std::string> distinct_tokens;
  for (const auto& c : changes) distinct_tokens.insert(c.declarations_token);
  REQUIRE(distinct_tokens.size() == 100);
  REQUIRE(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
  for (int i : {0, 1, 4242, kEnrollments - 1}) {
    const auto m = h.Manifest(enrollment(i));
    CHECK(m.changed_ms == 5000);
    CHECK(m.configurations.size() == 2);
    auto it = std::find_if(changes.begin(), changes.end(),
                           [&](const ddm::TokenChange& c) { return c.enrollment_id == enrollment(i); });
    REQUIRE(it != changes.end());
    CHECK(it->declarations_token == m.declarations_token);
  }
}

TEST_CASE("ddm manifest cache: one entry per set list, and every committed change is seen at once", "[ddm][cache]") {
  Db h;  // h.ds has no cache: the reference
  ddm::DeclarationStore cached(h.db.get(), {}, 1000);
  auto shared = [&](const std::string& e) {
    auto m = cached.SharedManifestOf(e);
    INFO(m.status().ToString());
    REQUIRE(m.ok());
    return *m;
  };
  auto same = [&](const std::string& e) {
    const ddm::Manifest ref = h.Manifest(e);
    const auto got = shared(e);
    CHECK(got->declarations_token == ref.declarations_token);
    for (Kind k : {Kind::kActivation, Kind::kConfiguration, Kind::kAsset, Kind::kManagement}) {
      REQUIRE(got->Of(k).size() == ref.Of(k).size());
      for (size_t i = 0; i < ref.Of(k).size(); ++i) {
        CHECK(got->Of(k)[i].identifier == ref.Of(k)[i].identifier);
        CHECK(got->Of(k)[i].server_token == ref.Of(k)[i].server_token);
      }
    }
  };
  h.Config("d1", R"({"v":1})");
  h.Config("d2", R"({"v":2})");
  h.SetAdd("A", "d1");
  h.SetAdd("B", "d2");
  h.Assign("e1", "A");
  h.Assign("e1", "B");
  h.Assign("e2", "B");
  h.Assign("e2", "A");  // the same list as e1, assigned in another order
  h.Assign("e3", "A");

  const auto first = shared("e1");
  CHECK(cached.cache_stats().misses == 1);
  CHECK(shared("e1") == first);  // the same object: a hit
  CHECK(shared("e2") == first);  // same set list, same entry
  CHECK(cached.cache_stats().hits == 2);
  CHECK(cached.cache_stats().entries == 1);
  same("e3");
  CHECK(cached.cache_stats().entries == 2);

  // Each kind of write, committed through another store on the same database.
  h.Config("d1", R"({"v":10})");
  same("e1");
  same("e3");
  h.Touch("d2");
  same("e1");
  h.Config("d3", R"({"v":3})");
  h.SetAdd("A", "d3");
  same("e1");
  same("e3");
  h.SetRemove("A", "d1");
  same("e1");
  same("e3");
  h.Delete("d3");
  same("e1");
  same("e3");
  h.Unassign("e1", "B");
  same("e1");  // now e3's list
  CHECK(shared("e1") == shared("e3"));
  // ManifestOf (a copy, with the record's change time) agrees.
  auto copy = cached.ManifestOf("e1");
  REQUIRE(copy.ok());
  CHECK(copy->declarations_token == h.Token("e1"));
  CHECK(copy->changed_ms == h.Manifest("e1").changed_ms);
}

TEST_CASE("ddm manifest cache: the budget bounds the cached items, oldest entries first", "[ddm][cache]") {
  Db h;
  ddm::DeclarationStore cached(h.db.get(), {}, 7);  // items + 1 per manifest
  for (int i = 0; i < 4; ++i) {
    const std::string d = "d" + std::to_string(i), set = "S" + std::to_string(i);
    h.Config(d, R"({"v":1})");
    h.Config(d + "x", R"({"v":2})");
    h.SetAdd(set, d);
    h.SetAdd(set, d + "x");
    h.Assign("e" + std::to_string(i), set);
  }
  h.Config("big", R"({"v":3})");
  for (int i = 0; i < 4; ++i) h.SetAdd("BIG", "d" + std::to_string(i)), h.SetAdd("BIG", "d" + std::to_string(i) + "x");
  h.SetAdd("BIG", "big");
  h.Assign("eb", "BIG");
  for (int i = 0; i < 4; ++i) REQUIRE(cached.SharedManifestOf("e" + std::to_string(i)).ok());
  auto s = cached.cache_stats();
  CHECK(s.entries == 2);  // 3 items each: two fit in 7
  CHECK(s.items == 6);
  REQUIRE(cached.SharedManifestOf("e3").ok());
  CHECK(cached.cache_stats().hits == 1);
  REQUIRE(cached.SharedManifestOf("e0").ok());  // evicted: a miss
  CHECK(cached.cache_stats().hits == 1);
  // A manifest over the whole budget (10 items) is served, never cached.
  auto big = cached.SharedManifestOf("eb");
  REQUIRE(big.ok());
  CHECK((*big)->configurations.size() == 9);
  CHECK(cached.cache_stats().items <= 7);
  REQUIRE(cached.SharedManifestOf("eb").ok());
  CHECK(cached.cache_stats().hits == 1);
}

TEST_CASE("ddm manifest cache: readers racing a writer never keep a stale manifest", "[ddm][cache]") {
  Db h;
  ddm::DeclarationStore cached(h.db.get(), {}, 100000);
  for (int i = 0; i < 20; ++i) h.Config("d" + std::to_string(i), R"({"v":0})");
  h.SetAdd("A", "d0");
  h.Assign("e1", "A");
  h.Assign("e2", "A");
  std::atomic<bool> stop{false};
  std::atomic<int> read_errors{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r)
    readers.emplace_back([&, r] {
      while (!stop.load()) {
        if (!cached.SharedManifestOf(r == 0 ? "e1" : "e2").ok()) ++read_errors;
      }
    });
  std::mt19937 rng(7);
  for (int step = 0; step < 300; ++step) {
    const std::string d = "d" + std::to_string(rng() % 20);
    switch (rng() % 3) {
      case 0: h.SetAdd("A", d); break;
      case 1: h.SetRemove("A", d); break;
      default: h.Config(d, R"({"v":)" + std::to_string(step) + "}"); break;
    }
    if (step % 50 == 49) {
      // Between writes nothing commits: a read now must match the store.
      auto got = cached.SharedManifestOf("e1");
      REQUIRE(got.ok());
      CHECK((*got)->declarations_token == h.Token("e1"));
    }
  }
  stop = true;
  for (auto& t : readers) t.join();
  CHECK(read_errors == 0);
  for (const char* e : {"e1", "e2"}) {
    auto got = cached.SharedManifestOf(e);
    REQUIRE(got.ok());
    CHECK((*got)->declarations_token == h.Token(e));
  }
  CHECK(cached.cache_stats().hits + cached.cache_stats().misses > 0);
}

TEST_CASE("ddm: a set member without its kind and ServerToken in the index is read from the declaration", "[ddm]") {
  Db h;
  h.Config("d1", R"({"v":1})");
  h.Put("com.apple.management.properties", "d2", R"({"v":2})");
  h.SetAdd("A", "d1");
  h.SetAdd("A", "d2");
  h.Assign("e1", "A");
  const ddm::Manifest ref = h.Manifest("e1");
  // As an index written before the value carried them: empty values.
  store::Batch b;
  for (const char* id : {"d1", "d2"}) b.Put(store::Cf::kDdm, std::string("sd\0A\0", 5) + id, "");
  REQUIRE(h.db->Write(b).ok());
  h.Reopen();
  const ddm::Manifest m = h.Manifest("e1");
  CHECK(m.declarations_token == ref.declarations_token);
  REQUIRE(m.management.size() == 1);
  CHECK(m.management[0].server_token == h.Get("d2").server_token);
  REQUIRE(m.configurations.size() == 1);
  // The next write of the declaration fills the value in again.
  h.Config("d1", R"({"v":10})");
  auto v = h.db->Get(store::Cf::kDdm, std::string("sd\0A\0d1", 7));
  REQUIRE(v.ok());
  REQUIRE(v->has_value());
  CHECK(**v == "1" + h.Get("d1").server_token);
}
