#include "policy/sandbox.h"

#include <lua.hpp>

#include <cstdlib>
#include <cstring>

namespace orchard::policy {
namespace {

constexpr int kHookInterval = 1000;  // instructions between hook calls

// Library tables exposed read-only (proxies over the real tables).
constexpr const char* kReadOnlyLibs[] = {"string", "table", "math", "utf8", "coroutine", "os"};
// Base functions that never enter the sandbox.
constexpr const char* kRemovedGlobals[] = {"dofile", "loadfile", "require", "rawset", "collectgarbage",
                                           "load", "print", "pcall", "xpcall"};

int ReadOnlyNewIndex(lua_State* L) {
  return luaL_error(L, "attempt to modify a read-only table (field '%s')",
                    lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

int ProxyPairs(lua_State* L) {
  // pairs(proxy) iterates the real table (the proxy's __index).
  if (!lua_getmetatable(L, 1)) return luaL_error(L, "not a proxy");
  lua_getfield(L, -1, "__index");
  lua_pushcfunction(L, [](lua_State* Ls) -> int {
    lua_settop(Ls, 2);
    if (lua_next(Ls, 1)) return 2;
    lua_pushnil(Ls);
    return 1;
  });
  lua_insert(L, -2);
  lua_pushnil(L);
  return 3;
}

// Replaces global `name` by a read-only proxy of it.
void MakeReadOnly(lua_State* L, const char* name) {
  lua_getglobal(L, name);
  PushReadOnlyProxy(L);
  lua_setglobal(L, name);
}

// After a protected call inside the script failed: a fault of the sandbox
// (budget, deadline, memory) must not be swallowed by the script, so it is
// raised again to the host's own protected call.
void PropagateFault(lua_State* L, int status) {
  Sandbox* sb = Sandbox::From(L);
  if (status == LUA_ERRMEM && sb->fault() == automation::RunError::kNone)
    sb->set_fault(automation::RunError::kMemory);
  if (sb->fault() != automation::RunError::kNone) lua_error(L);  // the error object is on top
}

int SafePcall(lua_State* L) {
  luaL_checkany(L, 1);
  int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  if (status != LUA_OK) {
    PropagateFault(L, status);
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, 1);
  return lua_gettop(L);
}

int SafeXpcall(lua_State* L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 1);  // function
  lua_copy(L, 2, 1);    // handler to slot 1
  lua_replace(L, 2);    // function to slot 2
  int status = lua_pcall(L, n - 2, LUA_MULTRET, 1);
  if (status != LUA_OK) {
    PropagateFault(L, status);
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_replace(L, 1);  // replace the handler with true
  return lua_gettop(L);
}

int SafeResume(lua_State* L) {
  lua_State* co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  int narg = lua_gettop(L) - 1;
  if (!lua_checkstack(co, narg)) return luaL_error(L, "too many arguments to resume");
  lua_xmove(L, co, narg);
  int nres = 0;
  int status = lua_resume(co, L, narg, &nres);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) return luaL_error(L, "too many results to resume");
    lua_pushboolean(L, 1);
    lua_xmove(co, L, nres);
    return nres + 1;
  }
  lua_xmove(co, L, 1);  // the error object
  PropagateFault(L, status);
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  return 2;
}

// load(chunk [, chunkname [, mode [, env]]]): text chunks only, in the
// sandbox's globals unless env is given.
int SafeLoad(lua_State* L) {
  size_t len = 0;
  const char* s = luaL_checklstring(L, 1, &len);
  const char* name = luaL_optstring(L, 2, "=(load)");
  int env = !lua_isnone(L, 4) ? 4 : 0;
  if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  if (env) {
    lua_pushvalue(L, env);
    if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
  }
  return 1;
}

// setmetatable without finalizers: a __gc function would run outside any
// handler's budget (during collection or when the policy is unloaded).
int SafeSetMetatable(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int t = lua_type(L, 2);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  if (t == LUA_TTABLE && lua_getfield(L, 2, "__gc") != LUA_TNIL)
    return luaL_error(L, "setmetatable: __gc metamethods are not allowed in policies");
  lua_settop(L, 2);
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
    return luaL_error(L, "cannot change a protected metatable");
  lua_setmetatable(L, 1);
  return 1;
}

int SafeCollectGarbage(lua_State* L) {
  const char* opt = luaL_optstring(L, 1, "count");
  if (std::strcmp(opt, "count") != 0)
    return luaL_error(L, "collectgarbage: only \"count\" is available in policies");
  int kb = lua_gc(L, LUA_GCCOUNT);
  int b = lua_gc(L, LUA_GCCOUNTB);
  lua_pushnumber(L, static_cast<lua_Number>(kb) + static_cast<lua_Number>(b) / 1024);
  return 1;
}

int OpenAll(lua_State* L) {
  luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
  luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
  luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
  luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
  luaL_requiref(L, LUA_COLIBNAME, luaopen_coroutine, 1);
  luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);  // not global: only a subset is exposed
  lua_settop(L, 0);

  // os: clock, date, difftime, time only.
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, LUA_OSLIBNAME);
  lua_newtable(L);
  for (const char* f : {"clock", "date", "difftime", "time"}) {
    lua_getfield(L, -2, f);
    lua_setfield(L, -2, f);
  }
  lua_setglobal(L, "os");
  lua_pop(L, 2);

  for (const char* g : kRemovedGlobals) {
    lua_pushnil(L);
    lua_setglobal(L, g);
  }
  lua_pushcfunction(L, SafeLoad);
  lua_setglobal(L, "load");
  lua_pushcfunction(L, SafePcall);
  lua_setglobal(L, "pcall");
  lua_pushcfunction(L, SafeXpcall);
  lua_setglobal(L, "xpcall");
  lua_pushcfunction(L, SafeCollectGarbage);
  lua_setglobal(L, "collectgarbage");
  lua_pushcfunction(L, SafeSetMetatable);
  lua_setglobal(L, "setmetatable");

  // coroutine.resume must not swallow sandbox faults either; coroutine.wrap
  // re-raises errors by itself.
  lua_getglobal(L, "coroutine");
  lua_pushcfunction(L, SafeResume);
  lua_setfield(L, -2, "resume");
  lua_pop(L, 1);

  // The string table is shared by every string (its metatable's __index):
  // change it in place, then lock the metatable.
  lua_getglobal(L, "string");
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  OpenBudgetedStringFunctions(L);
  lua_pop(L, 1);
  lua_pushliteral(L, "");
  if (lua_getmetatable(L, -1)) {
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);

  for (const char* lib : kReadOnlyLibs) MakeReadOnly(L, lib);

  // Drop the loaded-modules table's references to the real libraries' other
  // functions (io, package are never opened).
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  lua_setfield(L, -2, LUA_OSLIBNAME);
  lua_pop(L, 1);

  // The globals table itself cannot be given a new metatable.
  lua_pushglobaltable(L);
  lua_newtable(L);
  lua_pushliteral(L, "read-only");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
  return 0;
}

int Traceback(lua_State* L) {
  const char* msg = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : nullptr;
  if (msg == nullptr) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
      msg = lua_tostring(L, -1);
    } else {
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

}  // namespace

void PushReadOnlyProxy(lua_State* L) {
  lua_newtable(L);  // proxy
  lua_newtable(L);  // its metatable
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, ReadOnlyNewIndex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, ProxyPairs);
  lua_setfield(L, -2, "__pairs");
  lua_pushliteral(L, "read-only");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_remove(L, -2);  // the real table stays reachable through the proxy only
}

void* Sandbox::Alloc(void* ud, void* ptr, size_t osize, size_t nsize) {
  auto* sb = static_cast<Sandbox*>(ud);
  const size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    std::free(ptr);
    sb->used_ -= old;
    return nullptr;
  }
  if (nsize > old && sb->used_ - old + nsize > sb->limits_.memory_bytes) return nullptr;
  void* p = std::realloc(ptr, nsize);
  if (p == nullptr) return nullptr;
  sb->used_ = sb->used_ - old + nsize;
  return p;
}

void Sandbox::Hook(lua_State* L, lua_Debug*) {
  Sandbox* sb = From(L);
  if (sb->fault_ != automation::RunError::kNone) {
    luaL_error(L, "policy stopped: %s", automation::RunErrorName(sb->fault_));
    return;
  }
  if (sb->instructions_left_ <= static_cast<uint64_t>(kHookInterval)) {
    sb->instructions_left_ = 0;
    sb->fault_ = automation::RunError::kInstructions;
    luaL_error(L, "instruction budget of %I exhausted",
               static_cast<lua_Integer>(sb->limits_.instructions));
    return;
  }
  sb->instructions_left_ -= kHookInterval;
  if (std::chrono::steady_clock::now() > sb->deadline_) {
    sb->fault_ = automation::RunError::kTimeout;
    luaL_error(L, "deadline of %I ms passed", static_cast<lua_Integer>(sb->limits_.wall_ms));
  }
}

std::unique_ptr<Sandbox> Sandbox::Create(const SandboxLimits& limits) {
  std::unique_ptr<Sandbox> sb(new Sandbox(limits));
  sb->L_ = lua_newstate(&Sandbox::Alloc, sb.get());
  if (sb->L_ == nullptr) return nullptr;
  *static_cast<Sandbox**>(lua_getextraspace(sb->L_)) = sb.get();
  lua_atpanic(sb->L_, [](lua_State* L) -> int {
    // Unreachable by design (every call into Lua is protected); never continue
    // in an unknown state.
    std::abort();
  });
  sb->BeginRun();
  lua_State* L = sb->L_;
  lua_pushcfunction(L, OpenAll);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) return nullptr;
  lua_sethook(L, &Sandbox::Hook, LUA_MASKCOUNT, kHookInterval);
  return sb;
}

Sandbox::~Sandbox() {
  if (L_) lua_close(L_);
}

Sandbox* Sandbox::From(lua_State* L) { return *static_cast<Sandbox**>(lua_getextraspace(L)); }

void Sandbox::BeginRun() {
  instructions_left_ = limits_.instructions;
  pattern_steps_left_ = limits_.pattern_steps;
  deadline_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(limits_.wall_ms);
  fault_ = automation::RunError::kNone;
}

automation::RunOutcome Sandbox::Call(int nargs, int nresults) {
  lua_State* L = L_;
  const int fn = lua_gettop(L) - nargs;
  if (!lua_checkstack(L, 2)) return {automation::RunError::kMemory, "Lua stack exhausted"};
  lua_pushcfunction(L, Traceback);
  lua_insert(L, fn);
  const int status = lua_pcall(L, nargs, nresults, fn);
  lua_remove(L, fn);
  if (status == LUA_OK && fault_ == automation::RunError::kNone) return {};
  automation::RunOutcome out;
  if (fault_ != automation::RunError::kNone) out.error = fault_;
  else if (status == LUA_ERRMEM) out.error = automation::RunError::kMemory;
  else out.error = automation::RunError::kScript;
  if (status != LUA_OK) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      size_t n = 0;
      const char* m = lua_tolstring(L, -1, &n);
      out.message.assign(m, n);
    } else {
      out.message = out.error == automation::RunError::kMemory
                        ? "memory cap of " + std::to_string(limits_.memory_bytes) + " bytes reached"
                        : "error object is not a string";
    }
    lua_pop(L, 1);
  } else {
    lua_pop(L, nresults > 0 ? nresults : 0);
    out.message = automation::RunErrorName(fault_);
  }
  if (out.error == automation::RunError::kMemory)
    out.message = "memory cap of " + std::to_string(limits_.memory_bytes) + " bytes reached";
  // Give garbage of the failed run back before the next one.
  lua_gc(L, LUA_GCCOLLECT);
  return out;
}

}  // namespace orchard::policy
