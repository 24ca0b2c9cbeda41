// The Lua sandbox under every policy (internal to the policy module).
//
// A Sandbox owns one lua_State with:
//   - an allocator that refuses to grow past a memory cap (LUA_ERRMEM);
//   - a count hook that charges an instruction budget and checks a wall-clock
//     deadline, raising an error when either runs out;
//   - an allow-listed environment: base functions without dofile/loadfile/
//     require/rawset/collectgarbage beyond "count", load() for text chunks only,
//     table, string (without dump; find/match/gmatch/gsub replaced by the
//     step-budgeted matcher of pattern.h), math, utf8, coroutine and os.time/
//     clock/date/difftime. Library tables are read-only proxies and the string
//     metatable is locked, so a script cannot change what its other handlers
//     (or, through shared metatables, anything else) see.
// Each policy has its own Sandbox, so policies cannot see each other at all.
//
// Lua errors longjmp: code that calls Lua functions able to raise must not
// have C++ objects with destructors alive in the frames being unwound.
//
// Thread-compatible: one thread at a time per Sandbox.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "automation/decisions.h"
#include "plist/plist.h"

struct lua_State;
struct lua_Debug;

namespace orchard::policy {

struct SandboxLimits {
  uint64_t instructions = 5'000'000;   // per run (loading a file is a run too)
  size_t memory_bytes = 32u << 20;     // the whole state of one policy
  int64_t wall_ms = 2000;              // per run
  uint64_t pattern_steps = 5'000'000;  // matcher steps per run
};

class Sandbox {
 public:
  // Creates the state; nullptr only if the first allocations fail.
  static std::unique_ptr<Sandbox> Create(const SandboxLimits& limits);
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  lua_State* L() const { return L_; }
  // The Sandbox that owns L (any thread of it).
  static Sandbox* From(lua_State* L);

  // Starts a run: resets the budgets and the deadline, clears the fault.
  void BeginRun();
  // Why the current run was stopped by the sandbox (kNone: it was not).
  automation::RunError fault() const { return fault_; }
  void set_fault(automation::RunError f) { fault_ = f; }
  uint64_t* pattern_steps() { return &pattern_steps_left_; }
  size_t memory_used() const { return used_; }
  const SandboxLimits& limits() const { return limits_; }

  // Calls the function at the top of the stack (below it: nargs arguments)
  // under the budgets, with a traceback on error. Returns the outcome; on
  // success nresults values are left on the stack.
  automation::RunOutcome Call(int nargs, int nresults);

  // Opaque owner data (the Policy).
  void* owner = nullptr;
  // Text a C binding hands to Lua, owned here so a Lua error while pushing
  // it cannot leak it (see the longjmp rule above).
  std::string scratch;
  std::string scratch_error;
  plist::Value scratch_value;

 private:
  explicit Sandbox(const SandboxLimits& limits) : limits_(limits) {}
  static void* Alloc(void* ud, void* ptr, size_t osize, size_t nsize);
  static void Hook(lua_State* L, lua_Debug* ar);
  void OpenLibraries();

  SandboxLimits limits_;
  lua_State* L_ = nullptr;
  size_t used_ = 0;
  uint64_t instructions_left_ = 0;
  uint64_t pattern_steps_left_ = 0;
  std::chrono::steady_clock::time_point deadline_{};
  automation::RunError fault_ = automation::RunError::kNone;
};

// Replaces the table on top of the stack by a read-only proxy of it (writes
// raise; pairs() iterates the real table; the metatable is locked).
void PushReadOnlyProxy(lua_State* L);

// Registers the budgeted string.find/match/gmatch/gsub into the table at the
// top of the stack (lua_string.cpp).
void OpenBudgetedStringFunctions(lua_State* L);

}  // namespace orchard::policy
