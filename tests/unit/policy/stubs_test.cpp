// The editor stubs (policies/types/orchard.lua) against the engine, both ways:
// every method, field, option key, global and mdm builder the engine has is
// declared, and nothing declared is missing from the engine.
//
// Method and option-key lists come from the registration code itself
// (core/policy/policy.cpp, lua_plist.cpp), read as text; every name read
// there is then looked up in a real sandbox, so a reading that went wrong
// fails instead of comparing two empty lists. Fields come from tables real
// handlers receive, enumerated with pairs() inside the sandbox.
#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "automation/commands.h"
#include "automation/host.h"
#include "policy/policy.h"

using namespace orchard;

namespace {

using Names = std::set<std::string>;

std::string ReadSource(const std::string& relative) {
  std::ifstream in(std::string(ORCHARD_SOURCE_DIR) + "/" + relative, std::ios::binary);
  INFO(relative);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Join(const Names& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : " ") + n;
  return out;
}

// What the stub file declares.
struct Stubs {
  std::map<std::string, Names> fields;             // class -> ---@field names
  std::map<std::string, Names> methods;            // variable or class -> function names
  std::map<std::string, std::string> field_lines;  // "Class.field" -> the annotation line
  Names globals;                                   // global tables and functions
};

Stubs ParseStubs(const std::string& text) {
  static const std::regex kClass(R"(^---@class (\w+))");
  static const std::regex kField(R"(^---@field (\w+)\??\s)");
  static const std::regex kTable(R"(^(local )?(\w+) = \{\}\s*$)");
  static const std::regex kMethod(R"(^function (\w+)[.:](\w+)\()");
  static const std::regex kGlobalFn(R"(^function (\w+)\()");
  Stubs s;
  std::string cls;  // the class whose annotation block is open
  std::istringstream in(text);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, kClass)) {
      cls = m[1];
      s.fields[cls];
      continue;
    }
    if (std::regex_search(line, m, kField) && !cls.empty()) {
      s.fields[cls].insert(m[1]);
      s.field_lines[cls + "." + std::string(m[1])] = line;
      continue;
    }
    if (line.rfind("---", 0) == 0) continue;
    if (std::regex_search(line, m, kTable)) {
      // A table declared right after its class: its functions are that class's.
      if (m[1].length() == 0) s.globals.insert(m[2]);
      s.methods[m[2]];
    } else if (std::regex_search(line, m, kMethod)) {
      s.methods[m[1]].insert(m[2]);
    } else if (std::regex_search(line, m, kGlobalFn)) {
      s.globals.insert(m[1]);
    }
    cls.clear();
  }
  return s;
}

const Stubs& TheStubs() {
  static const Stubs s = ParseStubs(ReadSource("policies/types/orchard.lua"));
  return s;
}

// The body of the C++ function whose definition contains signature (up to the
// closing brace in column 0).
std::string Body(const std::string& src, const std::string& signature) {
  size_t at = src.find(signature);
  INFO(signature);
  REQUIRE(at != std::string::npos);
  size_t open = src.find('{', at);
  size_t close = src.find("\n}", open);
  REQUIRE(close != std::string::npos);
  return src.substr(open, close - open);
}

// Function names an Open* function registers, grouped by what receives them:
// SetFn(L, "x", ...) / lua_setfield(L, -2, "x") accumulate; lua_setglobal
// flushes them to that global, the ctx metatable's registration to "Ctx", and
// an __index table of a NewMeta type to that type ("PlistData").
std::map<std::string, Names> Registrations(const std::string& body) {
  static const std::regex kName(R"((?:SetFn\(L, |lua_setfield\(L, -2, )\"(\w+)\")");
  static const std::regex kGlobal(R"(lua_setglobal\(L, \"(\w+)\"\))");
  static const std::regex kMeta(R"(NewMeta\(L, &k(\w+)Meta)");
  std::map<std::string, Names> out;
  Names pending;
  std::string meta;
  auto flush = [&](const std::string& to) {
    if (!pending.empty()) out[to].insert(pending.begin(), pending.end());
    pending.clear();
  };
  std::istringstream in(body);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, kMeta)) meta = "Plist" + std::string(m[1]);
    if (std::regex_search(line, m, kName)) {
      const std::string name = m[1];
      if (name.rfind("__", 0) != 0)
        pending.insert(name);
      else if (name == "__index" && !meta.empty())
        flush(meta);
    }
    if (std::regex_search(line, m, kGlobal)) flush(m[1]);
    if (line.find("&kCtxMeta)") != std::string::npos &&
        line.find("lua_rawsetp") != std::string::npos)
      flush("Ctx");
  }
  return out;
}

// String literals compared against a key inside a function body.
Names Literals(const std::string& body, const std::regex& re) {
  Names out;
  for (auto it = std::sregex_iterator(body.begin(), body.end(), re); it != std::sregex_iterator();
       ++it)
    out.insert((*it)[1]);
  return out;
}

// Loads source as a policy and runs its handlers on one command result event
// for a fully populated device (and its schedule, if any); returns the log
// lines the runs wrote.
std::vector<std::string> RunProbe(const std::string& source) {
  auto loaded = policy::Policy::Load("probe", source, "probe.lua", {});
  INFO(loaded.status().ToString());
  REQUIRE(loaded.ok());
  policy::Policy& p = **loaded;
  automation::MemoryHost host;

  store::Enrollment e;
  e.id = "DEV-1";
  e.type = store::EnrollmentType::kUser;
  for (std::string* s : {&e.parent_id,
                         &e.udid,
                         &e.enrollment_id,
                         &e.user_id,
                         &e.user_short_name,
                         &e.user_long_name,
                         &e.enrollment_user_id,
                         &e.topic,
                         &e.serial,
                         &e.model,
                         &e.model_name,
                         &e.os_version,
                         &e.build_version,
                         &e.product_name,
                         &e.device_name,
                         &e.imei,
                         &e.meid,
                         &e.push_token,
                         &e.push_magic,
                         &e.unlock_token,
                         &e.bootstrap_token,
                         &e.cert_sha256})
    *s = "x";
  e.state = store::EnrollmentState::kEnrolled;
  e.generation = e.token_updates = e.session = 1;
  e.authenticated_ms = e.enrolled_ms = e.last_seen_ms = e.checked_out_ms = 1'700'000'000'000;
  e.awaiting_configuration = e.blocked = true;
  host.PutDevice(e);

  store::CommandResult r;
  r.command_uuid = "C-1";
  r.request_type = "SecurityInfo";
  r.status = "Error";
  r.raw = plist::ToXml([] {
    plist::Value v;
    v.Set("Status", plist::Value::String("Error"));
    return v;
  }());
  r.error_chain = R"([{"ErrorCode": 1, "ErrorDomain": "X"}])";
  r.enqueued_ms = r.received_ms = 1'700'000'000'000;
  r.origin = "api";
  host.PutResult("DEV-1", r);

  std::vector<std::string> lines;
  auto collect = [&](const automation::RunOutcome& out, const automation::Decisions& d) {
    INFO(out.message);
    REQUIRE(out.ok());
    for (const auto& l : d.logs) lines.push_back(l.message);
  };
  events::Event ev;
  ev.seq = 9;
  ev.type = "command.error";
  ev.time_ms = 1'700'000'000'000;
  ev.enrollment_id = "DEV-1";
  ev.command_uuid = "C-1";
  ev.request_type = "SecurityInfo";
  plist::Value payload;
  payload.Set("Status", plist::Value::String("Error"));
  policy::RunInput in{"policy:probe", "0.9", 1'700'000'000'000, false};
  automation::Decisions d;
  collect(p.HandleEvent(in, ev, payload, &host, &d), d);
  if (!p.info().schedules.empty()) {
    policy::RunInput tick{"policy:probe", "schedule:1", 1'700'000'000'000, false};
    collect(p.RunSchedule(tick, 0, "DEV-1", &host, &d), d);
  }
  return lines;
}

// The log lines "<label> <word> <word>..." of a probe, as label -> words.
std::map<std::string, Names> Words(const std::vector<std::string>& lines) {
  std::map<std::string, Names> out;
  for (const auto& l : lines) {
    std::istringstream in(l);
    std::string label, w;
    in >> label;
    out[label];
    while (in >> w) out[label].insert(w);
  }
  return out;
}

// Checks that every name is a function in the sandbox, read through expr
// ("ctx", "plist.data('x')", ...), and that a made-up name is not.
void RequireFunctions(const std::string& expr, const Names& names) {
  std::string list;
  for (const auto& n : names) list += "'" + n + "', ";
  list += "'no_such_name_at_all'";
  const std::string source = R"(
    policy:on("command.error", function(ctx)
      local target = )" + expr +
                             R"(
      local out = {}
      for _, n in ipairs({ )" +
                             list + R"( }) do
        local ok, v = pcall(function() return target[n] end)  -- mdm raises on unknown names
        if ok and type(v) == "function" then out[#out + 1] = n end
      end
      log.info("functions", table.concat(out, " "))
    end))";
  auto words = Words(RunProbe(source));
  INFO(expr);
  CHECK(Join(words["functions"]) == Join(names));
}

}  // namespace

TEST_CASE("lua stubs: the stub file is Lua 5.4 the sandbox loads", "[policy][stubs]") {
  auto loaded =
      policy::Policy::Load("stubs", ReadSource("policies/types/orchard.lua"), "orchard.lua", {});
  INFO(loaded.status().ToString());
  CHECK(loaded.ok());
}

TEST_CASE("lua stubs: every ctx method the engine registers is declared and vice versa",
          "[policy][stubs]") {
  auto regs =
      Registrations(Body(ReadSource("core/policy/policy.cpp"), "int OpenPolicyApi(lua_State* L)"));
  const Names& engine = regs["Ctx"];
  REQUIRE(engine.count("enqueue") == 1);  // the registration list was found
  RequireFunctions("ctx", engine);        // and each name really is a ctx method
  const auto& stubs = TheStubs();
  REQUIRE(stubs.methods.count("Ctx") == 1);
  CHECK(Join(stubs.methods.at("Ctx")) == Join(engine));
}

TEST_CASE("lua stubs: policy, log, version, plist, plist.data and ddm functions match the engine",
          "[policy][stubs]") {
  auto regs =
      Registrations(Body(ReadSource("core/policy/policy.cpp"), "int OpenPolicyApi(lua_State* L)"));
  auto plist_regs = Registrations(
      Body(ReadSource("core/policy/lua_plist.cpp"), "void OpenPlistLibrary(lua_State* L)"));
  regs.insert(plist_regs.begin(), plist_regs.end());
  // mdm resolves its names in __index: "command", then RequestTypes.
  regs["mdm"] = Literals(Body(ReadSource("core/policy/policy.cpp"), "int MdmIndex(lua_State* L)"),
                         std::regex(R"(strcmp\(k, \"(\w+)\"\))"));
  const std::map<std::string, std::string> read_through = {
      {"policy", "policy"}, {"log", "log"}, {"version", "version"},
      {"plist", "plist"},   {"mdm", "mdm"}, {"PlistData", "plist.data('x')"}, {"ddm", "ddm"}};
  const auto& stubs = TheStubs();
  for (const auto& [group, expr] : read_through) {
    INFO(group);
    REQUIRE_FALSE(regs[group].empty());
    RequireFunctions(expr, regs[group]);
    REQUIRE(stubs.methods.count(group) == 1);
    CHECK(Join(stubs.methods.at(group)) == Join(regs[group]));
  }
  // Fields read through __index functions.
  const std::string policy_cpp = ReadSource("core/policy/policy.cpp");
  CHECK(Join(TheStubs().fields.at("Policy")) ==
        Join(Literals(Body(policy_cpp, "int PolicyIndex(lua_State* L)"),
                      std::regex(R"(strcmp\(k, \"(\w+)\"\))"))));
  CHECK(Join(TheStubs().fields.at("PlistDate")) ==
        Join(Literals(Body(ReadSource("core/policy/lua_plist.cpp"), "int DateIndex(lua_State* L)"),
                      std::regex(R"(strcmp\(k, \"(\w+)\"\))"))));
}

TEST_CASE("lua stubs: the globals the engine adds are the ones declared", "[policy][stubs]") {
  auto words = Words(RunProbe(R"(
    local base = {}
    for _, n in ipairs({ "_G", "_VERSION", "assert", "collectgarbage", "error", "getmetatable", "ipairs",
                         "load", "next", "pairs", "pcall", "rawequal", "rawget", "rawlen", "select",
                         "setmetatable", "tonumber", "tostring", "type", "warn", "xpcall", "string",
                         "table", "math", "utf8", "coroutine", "os" }) do base[n] = true end
    local added = {}
    for k in pairs(_G) do if not base[k] then added[#added + 1] = k end end
    policy:on("command.error", function(ctx) log.info("globals", table.concat(added, " ")) end)
  )"));
  REQUIRE(words["globals"].count("policy") == 1);
  CHECK(Join(words["globals"]) == Join(TheStubs().globals));
}

TEST_CASE(
    "lua stubs: the fields of ctx, events, results, devices and states match what handlers get",
    "[policy][stubs]") {
  auto words = Words(RunProbe(R"(
    local function keys(label, t)
      local out = {}
      for k in pairs(t) do if k:sub(1, 1) ~= "_" then out[#out + 1] = k end end
      log.info(label, table.concat(out, " "))
    end
    policy:on("command.error", function(ctx, event)
      assert(ctx.device)  -- read on first use, then a field of ctx
      keys("Ctx", ctx)
      keys("Event", event)
      keys("Device", ctx.device)
      keys("StoredResult", ctx:last_result("SecurityInfo"))
      ctx:noncompliant("why")
      ctx:remediating("C-2")
      keys("ComplianceState", ctx:compliance())
      ctx:put("k", 1)
      keys("ScanItem", ctx:scan("")[1])
    end)
    policy:on_result("*", function(ctx, result) keys("Result", result) end)
    policy:every("1h", function(ctx, event) keys("Event", event) end)
  )"));
  const auto& stubs = TheStubs();
  for (const char* cls :
       {"Ctx", "Event", "Device", "StoredResult", "ComplianceState", "ScanItem", "Result"}) {
    INFO(cls);
    REQUIRE(words.count(cls) == 1);
    CHECK(words[cls].size() >= 2);
    REQUIRE(stubs.fields.count(cls) == 1);
    CHECK(Join(stubs.fields.at(cls)) == Join(words[cls]));
  }
}

TEST_CASE("lua stubs: option tables declare the keys the engine reads", "[policy][stubs]") {
  const std::string src = ReadSource("core/policy/policy.cpp");
  // policy { ... } reads its fields in a loop: for (const char* field : {"name", ...})
  auto MetaFields = [](const std::string& body) {
    std::smatch m;
    REQUIRE(std::regex_search(body, m, std::regex(R"(for \(const char\* \w+ : \{([^}]*)\}\))")));
    const std::string list = m[1];
    return Literals(list, std::regex(R"(\"(\w+)\")"));
  };
  const std::regex getfield(R"(lua_getfield\(L, [\w-]+, \"(\w+)\"\))");
  auto keys = [&](const char* signature) {
    std::string body = Body(src, signature);
    Names n = Literals(body, getfield);
    if (body.find("OptDevice(") != std::string::npos) {
      Names d = Literals(Body(src, "const char* OptDevice(lua_State* L"), getfield);
      n.insert(d.begin(), d.end());
    }
    return n;
  };
  const std::map<std::string, Names> engine = {
      {"EnqueueOpts", keys("int CtxEnqueue(lua_State* L)")},
      {"DeviceOpts", keys("const char* OptDevice(lua_State* L")},
      {"ScanOpts", keys("int CtxScan(lua_State* L)")},
      {"ScheduleOpts", keys("int PolicyEvery(lua_State* L)")},
      {"EscalationStep", keys("int CtxEscalate(lua_State* L)")},
      {"CommandOpts", keys("int MdmCommand(lua_State* L)")},
      {"PolicyMeta", MetaFields(Body(src, "int PolicyCall(lua_State* L)"))},
  };
  const auto& stubs = TheStubs();
  for (const auto& [cls, names] : engine) {
    INFO(cls);
    CHECK_FALSE(names.empty());
    REQUIRE(stubs.fields.count(cls) == 1);
    CHECK(Join(stubs.fields.at(cls)) == Join(names));
  }
}

TEST_CASE("lua stubs: mdm builders are Apple's RequestTypes with their keys and types",
          "[policy][stubs]") {
  const auto& stubs = TheStubs();
  REQUIRE(stubs.fields.count("Mdm") == 1);
  Names known;
  for (const auto& rt : automation::KnownRequestTypes()) known.insert(rt);
  REQUIRE(known.size() > 50);
  CHECK(Join(stubs.fields.at("Mdm")) == Join(known));

  const std::map<plist::Type, std::string> lua_type = {
      {plist::Type::kString, "string"},  {plist::Type::kInteger, "integer"},
      {plist::Type::kReal, "number"},    {plist::Type::kBool, "boolean"},
      {plist::Type::kData, "PlistData"}, {plist::Type::kDate, "PlistDate"},
      {plist::Type::kArray, "any[]"},    {plist::Type::kDict, "table"}};
  for (const auto& rt : known) {
    const automation::CommandSchema* schema = automation::FindCommandSchema(rt);
    REQUIRE(schema);
    bool any_required = false;
    std::string keys;
    for (const auto& k : schema->keys) {
      any_required = any_required || k.required;
      keys += (keys.empty() ? "" : ", ") + std::string(k.key) + (k.required ? "" : "?") + ": " +
              lua_type.at(k.type);
    }
    const std::string want = "---@field " + rt + " fun(fields" + (any_required ? "" : "?") + ": {" +
                             keys + "}): CommandTable";
    auto it = stubs.field_lines.find("Mdm." + rt);
    REQUIRE(it != stubs.field_lines.end());
    CHECK(it->second == want);
  }
}
