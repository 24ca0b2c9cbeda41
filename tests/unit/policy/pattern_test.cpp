// The budgeted pattern matcher against Lua's own string library: the same
// calls in a plain Lua state and in the sandbox must give the same results
// (or both fail), and pathological patterns must stop.
#include <catch2/catch.hpp>

#include <lua.hpp>

#include <chrono>
#include <random>
#include <string>

#include "policy/sandbox.h"

using namespace orchard;

namespace {

// Runs `code` (which returns one string) and gives "ok:<string>" or "error".
std::string RunPlain(lua_State* L, const std::string& code) {
  if (luaL_loadstring(L, code.c_str()) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    return "error";
  }
  std::string out = "ok:" + std::string(lua_tostring(L, -1) ? lua_tostring(L, -1) : "<nil>");
  lua_pop(L, 1);
  return out;
}

std::string RunSandboxed(policy::Sandbox* sb, const std::string& code) {
  lua_State* L = sb->L();
  sb->BeginRun();
  if (luaL_loadstring(L, code.c_str()) != LUA_OK) {
    lua_pop(L, 1);
    return "error";
  }
  auto out = sb->Call(0, 1);
  if (!out.ok()) return "error";
  std::string s = "ok:" + std::string(lua_tostring(L, -1) ? lua_tostring(L, -1) : "<nil>");
  lua_pop(L, 1);
  return s;
}

// Lua source that calls every function with (s, p) and serializes the results.
std::string Probe(const std::string& s, const std::string& p) {
  auto q = [](const std::string& x) {
    std::string r = "\"";
    for (unsigned char c : x) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\%03d", c);
      r += buf;
    }
    return r + "\"";
  };
  return "local s, p = " + q(s) + ", " + q(p) + R"(
    local out = {}
    local function res(ok, ...)
      -- error messages may be worded differently: compare only that it failed
      if not ok then out[#out+1] = 'fail|' return end
      for i = 1, select('#', ...) do out[#out+1] = tostring((select(i, ...))) end
      out[#out+1] = '|'
    end
    res(pcall(string.find, s, p))
    res(pcall(string.find, s, p, 2))
    res(pcall(string.find, s, p, -3))
    res(pcall(string.match, s, p))
    res(pcall(string.gsub, s, p, '<%0>'))
    res(pcall(string.gsub, s, p, function(a) return '[' .. tostring(a) .. ']' end, 2))
    res(pcall(string.gsub, s, p, {a = 'A'}))
    res(pcall(function()
      local t = {}
      for a, b in string.gmatch(s, p) do t[#t+1] = tostring(a) .. '/' .. tostring(b) end
      return table.concat(t, ';')
    end))
    return table.concat(out, ',')
  )";
}

}  // namespace

TEST_CASE("pattern matcher agrees with Lua on hand-picked patterns", "[policy][pattern]") {
  lua_State* plain = luaL_newstate();
  luaL_openlibs(plain);
  auto sb = policy::Sandbox::Create({});
  REQUIRE(sb);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"hello world", "o"},          {"hello world", "l+"},        {"hello world", "(h)(e)"},
      {"hello world", "^hello"},     {"hello world", "world$"},    {"hello world", "%w+"},
      {"17.4.1", "^(%d+)%.(%d+)"},   {"17.4.1", "(%d+)$"},         {"a,b,,c", "([^,]*)"},
      {"THE (quick) fox", "%((%a+)%)"}, {"f(a(b)c)d", "%b()"},     {"THE quick", "%f[%a]%a+"},
      {"aaa", "a-b"},                {"aaa", "a-"},                {"aaab", "a*b"},
      {"", ""},                      {"abc", ""},                  {"abc", "()"},
      {"abcabc", "(abc)%1"},         {"x=1, y=2", "(%w+)=(%w+)"},  {"[]]", "[]]"},
      {"a]b", "[^]]"},               {"a-b", "[a%-]+"},            {"a.b", "%."},
      {"abc", "%"},                  {"abc", "[a"},                {"abc", "(a"},
      {"abc", "a)"},                 {"abc", "%1"},                {"abc", "%b"},
      {"abc", "%f"},                 {"\0\1\2", "%c+"},            {"Ä ö", "[\x80-\xff]+"},
      {"key = value", "^(%S+)%s*=%s*(.-)%s*$"},                    {"aaa", "^a?a?a?aaa$"},
      {"hello", "l?"},               {"  trim  ", "^%s*(.-)%s*$"}, {"abc", "[%a-z]"},
      {"$100", "%$(%d+)"},           {"a$b", "a$b"},               {"^x", "^^x"},
  };
  for (const auto& [s, p] : cases) {
    INFO("subject=\"" << s << "\" pattern=\"" << p << "\"");
    CHECK(RunSandboxed(sb.get(), Probe(s, p)) == RunPlain(plain, Probe(s, p)));
  }
  lua_close(plain);
}

TEST_CASE("pattern matcher agrees with Lua on random patterns", "[policy][pattern]") {
  lua_State* plain = luaL_newstate();
  luaL_openlibs(plain);
  auto sb = policy::Sandbox::Create({});
  REQUIRE(sb);
  std::mt19937 rng(20261201);
  const std::string pattern_alphabet = "ab.%()[]^$*+-?dwsS1f";
  const std::string subject_alphabet = "ab ()1.";
  int compared = 0;
  for (int i = 0; i < 1500; ++i) {
    std::string s, p;
    for (int n = rng() % 10; n > 0; --n) s += subject_alphabet[rng() % subject_alphabet.size()];
    for (int n = 1 + rng() % 7; n > 0; --n) p += pattern_alphabet[rng() % pattern_alphabet.size()];
    INFO("subject=\"" << s << "\" pattern=\"" << p << "\"");
    CHECK(RunSandboxed(sb.get(), Probe(s, p)) == RunPlain(plain, Probe(s, p)));
    ++compared;
  }
  CHECK(compared == 1500);
  lua_close(plain);
}

TEST_CASE("a pathological pattern is stopped by the step budget", "[policy][pattern]") {
  auto sb = policy::Sandbox::Create({});
  REQUIRE(sb);
  lua_State* L = sb->L();
  sb->BeginRun();
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(luaL_loadstring(L, "return (string.rep('a', 40000)):find('.-.-.-.-b')") == LUA_OK);
  auto out = sb->Call(0, 1);
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(out.error == automation::RunError::kInstructions);
  CHECK(out.message.find("pattern too complex") != std::string::npos);
  CHECK(took < std::chrono::seconds(2));

  // The script cannot swallow the stop with pcall and carry on.
  sb->BeginRun();
  REQUIRE(luaL_loadstring(L, R"(
    local n = 0
    while true do
      pcall(string.find, string.rep('a', 40000), '.-.-.-.-b')
      n = n + 1
    end)") == LUA_OK);
  out = sb->Call(0, 0);
  CHECK_FALSE(out.ok());
}
