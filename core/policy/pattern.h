// Lua 5.4 string patterns with a step budget.
//
// Lua's own matcher backtracks without ever returning to the VM, so neither the
// instruction hook nor the memory cap can stop `("a"):rep(1e5):find(".-.-.-b")`.
// This is an independent implementation of the same pattern language (classes,
// sets, * + - ?, anchors, captures, position captures, %b, %f, back-references)
// that counts every matching step against a budget shared by the whole handler
// run, and fails with kTooComplex when it runs out.
//
// The state is plain data (no destructors): it is used from Lua C functions
// that may longjmp. Thread-compatible: one MatchState per call.
#pragma once

#include <cstddef>
#include <cstdint>

namespace orchard::policy {

inline constexpr int kMaxCaptures = 32;
inline constexpr ptrdiff_t kCapUnfinished = -1;
inline constexpr ptrdiff_t kCapPosition = -2;

enum class PatternError : int {
  kNone = 0,
  kMalformed,   // error_text says why
  kTooComplex,  // the step budget ran out
};

struct MatchState {
  const char* src_init;
  const char* src_end;
  const char* p_end;
  uint64_t* steps_left;  // shared budget, decremented per step
  int level;             // captures in use
  int depth;             // recursion depth
  PatternError error;
  const char* error_text;  // static string
  struct {
    const char* init;
    ptrdiff_t len;
  } capture[kMaxCaptures];
};

// Prepares ms for matching subject [s, s+ls) against pattern [p, p+lp).
void PatternInit(MatchState* ms, const char* s, size_t ls, const char* p, size_t lp,
                 uint64_t* steps_left);
// Resets captures before a match attempt at a new position.
inline void PatternReset(MatchState* ms) {
  ms->level = 0;
  ms->depth = 0;
}
// Tries to match pattern p (its end was given to PatternInit) at s. Returns
// the end of the match or nullptr (no match, or ms->error set).
const char* PatternMatch(MatchState* ms, const char* s, const char* p);
// True when the pattern has no magic characters (find may search plainly).
bool PatternIsPlain(const char* p, size_t lp);

}  // namespace orchard::policy
