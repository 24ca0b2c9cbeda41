// The policy sandbox: known escapes refused, budgets and caps enforced (at
// load time and in handlers), and a stopped policy still works afterwards.
#include <catch2/catch.hpp>

#include <chrono>

#include "automation/host.h"
#include "policy/policy.h"

using namespace orchard;
using automation::RunError;

namespace {

policy::SandboxLimits Small() {
  policy::SandboxLimits l;
  l.instructions = 2'000'000;
  l.memory_bytes = 8u << 20;
  l.wall_ms = 3000;
  l.pattern_steps = 2'000'000;
  return l;
}

// Loads a policy whose handler for "test.event" runs body; returns the outcome.
struct Probe {
  std::unique_ptr<policy::Policy> p;
  automation::MemoryHost host;
  explicit Probe(const std::string& body, policy::SandboxLimits limits = Small()) {
    auto r = policy::Policy::Load("probe", "policy:on('test.event', function(ctx, event)\n" + body + "\nend)",
                                  "probe.lua", limits);
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    p = std::move(r.value());
  }
  automation::RunOutcome Run(automation::Decisions* d = nullptr) {
    automation::Decisions local;
    events::Event ev;
    ev.seq = 7;
    ev.type = "test.event";
    ev.enrollment_id = "DEV-1";
    policy::RunInput in{"policy:probe", "0.7", 1'700'000'000'000, false};
    return p->HandleEvent(in, ev, plist::Value(), &host, d ? d : &local);
  }
};

}  // namespace

TEST_CASE("sandbox: dangerous globals and libraries are absent", "[policy][sandbox]") {
  for (const char* expr : {"io", "debug", "package", "require", "dofile", "loadfile", "rawset",
                           "os.execute", "os.exit", "os.getenv", "os.remove", "os.rename", "os.tmpname",
                           "string.dump", "module", "setfenv", "loadstring", "collectgarbage('collect')"}) {
    INFO(expr);
    Probe probe("local ok, v = pcall(function() return " + std::string(expr) +
                " end)\nif ok and v ~= nil then error('reachable: ' .. tostring(v)) end");
    CHECK(probe.Run().ok());
  }
}

TEST_CASE("sandbox: binary chunks cannot be loaded", "[policy][sandbox]") {
  Probe probe(R"(
    local f, err = load("\27Lua\84\0\25\147\13\10\26\10")
    if f ~= nil then error('binary chunk loaded') end
    local g = load('return 1 + 1')
    if g() ~= 2 then error('text chunk did not load') end)");
  CHECK(probe.Run().ok());
}

TEST_CASE("sandbox: shared tables and the string metatable are read-only", "[policy][sandbox]") {
  for (const char* attempt : {"string.upper = function() return 'pwned' end",
                              "getmetatable('').__index = {}",
                              "getmetatable('').__index.upper = nil",
                              "setmetatable(_G, {})",
                              "table.insert = nil",
                              "math.pi = 3",
                              "os.time = function() return 0 end",
                              "mdm.DeviceInformation = nil",
                              "plist.data = nil",
                              "policy.on = nil",
                              "setmetatable(string, nil)",
                              "setmetatable({}, {__gc = function() while true do end end})"}) {
    INFO(attempt);
    Probe probe{std::string(attempt)};
    auto out = probe.Run();
    CHECK(out.error == RunError::kScript);
  }
  // And nothing changed for the next run.
  Probe probe("if ('x'):upper() ~= 'X' or math.pi < 3.14 then error('tampered') end");
  CHECK(probe.Run().ok());
}

TEST_CASE("sandbox: an endless loop is stopped, even inside pcall", "[policy][sandbox]") {
  Probe loop("while true do end");
  auto out = loop.Run();
  CHECK(out.error == RunError::kInstructions);

  Probe swallow("while true do pcall(function() while true do end end) end");
  out = swallow.Run();
  CHECK(out.error == RunError::kInstructions);

  Probe coro(R"(
    while true do
      local co = coroutine.create(function() while true do end end)
      coroutine.resume(co)
    end)");
  out = coro.Run();
  CHECK(out.error == RunError::kInstructions);

  // The policy is usable again afterwards.
  Probe again("local x = 0 for i = 1, 10 do x = x + i end");
  CHECK(again.Run().ok());
}

TEST_CASE("sandbox: a memory bomb hits the cap and the policy recovers", "[policy][sandbox]") {
  Probe bomb("local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 1000) .. i end");
  auto out = bomb.Run();
  CHECK(out.error == RunError::kMemory);
  Probe rep("local s = string.rep('x', 1 << 30)");
  CHECK(rep.Run().error == RunError::kMemory);
  Probe swallow("while true do pcall(string.rep, 'x', 1 << 30) end");
  CHECK(swallow.Run().error == RunError::kMemory);
  // Same policy object: a later run succeeds.
  auto first = bomb.p->memory_used();
  CHECK(first < Small().memory_bytes);
}

TEST_CASE("sandbox: budgets apply while loading", "[policy][sandbox]") {
  auto loop = policy::Policy::Load("p", "while true do end", "p.lua", Small());
  REQUIRE_FALSE(loop.ok());
  CHECK(loop.status().message().find("instruction") != std::string::npos);
  auto bomb = policy::Policy::Load("p", "local t = {} for i = 1, 1e9 do t[i] = {} end", "p.lua", Small());
  REQUIRE_FALSE(bomb.ok());
  CHECK(bomb.status().message().find("memory") != std::string::npos);
  auto syntax = policy::Policy::Load("p", "policy:on('x', function(ctx)\n  if then\nend)", "p.lua", Small());
  REQUIRE_FALSE(syntax.ok());
  CHECK(syntax.status().message().find("p.lua:2") != std::string::npos);
}

TEST_CASE("sandbox: the wall-clock deadline stops slow runs", "[policy][sandbox]") {
  auto limits = Small();
  limits.instructions = 1'000'000'000'000ULL;
  limits.wall_ms = 200;
  Probe slow("while true do local _ = {} end", limits);
  const auto start = std::chrono::steady_clock::now();
  auto out = slow.Run();
  CHECK(out.error == RunError::kTimeout);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
}

TEST_CASE("sandbox: policies cannot see each other", "[policy][sandbox]") {
  Probe a("shared_secret = 'a'\nstring.secret = 1");
  a.Run();
  Probe b("if shared_secret ~= nil or rawget(string, 'secret') ~= nil then error('leak') end");
  CHECK(b.Run().ok());
}
