// string.find / match / gmatch / gsub on the budgeted matcher (pattern.h).
// Same behaviour as Lua 5.4's, except that a pattern that would take more
// matching steps than the run has left stops the run.
// C-style on purpose: these functions raise Lua errors (longjmp) and hold no
// C++ objects with destructors.
#include <lua.hpp>

#include <cstring>

#include "policy/pattern.h"
#include "policy/sandbox.h"

namespace orchard::policy {
namespace {

size_t StartIndex(lua_Integer pos, size_t len) {
  if (pos > 0) return static_cast<size_t>(pos);
  if (pos == 0) return 1;
  if (pos < -static_cast<lua_Integer>(len)) return 1;
  return len + static_cast<size_t>(pos) + 1;
}

// Raises the matcher's error (a budget exhaustion stops the whole run).
int RaisePatternError(lua_State* L, const MatchState* ms) {
  if (ms->error == PatternError::kTooComplex)
    Sandbox::From(L)->set_fault(automation::RunError::kInstructions);
  return luaL_error(L, "%s", ms->error_text ? ms->error_text : "pattern error");
}

void PushOneCapture(lua_State* L, const MatchState* ms, int i, const char* s, const char* e) {
  if (i >= ms->level) {
    if (i != 0) {
      luaL_error(L, "invalid capture index %%%d", i + 1);
      return;
    }
    lua_pushlstring(L, s, static_cast<size_t>(e - s));  // the whole match
    return;
  }
  ptrdiff_t l = ms->capture[i].len;
  if (l == kCapUnfinished) {
    luaL_error(L, "unfinished capture");
    return;
  }
  if (l == kCapPosition)
    lua_pushinteger(L, (ms->capture[i].init - ms->src_init) + 1);
  else
    lua_pushlstring(L, ms->capture[i].init, static_cast<size_t>(l));
}

int PushCaptures(lua_State* L, const MatchState* ms, const char* s, const char* e) {
  int n = (ms->level == 0 && s) ? 1 : ms->level;
  luaL_checkstack(L, n, "too many captures");
  for (int i = 0; i < n; ++i) PushOneCapture(L, ms, i, s, e);
  return n;
}

int FindAux(lua_State* L, bool find) {
  size_t ls = 0, lp = 0;
  const char* s = luaL_checklstring(L, 1, &ls);
  const char* p = luaL_checklstring(L, 2, &lp);
  size_t init = StartIndex(luaL_optinteger(L, 3, 1), ls) - 1;
  if (init > ls) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || PatternIsPlain(p, lp))) {
    const void* hit = memmem(s + init, ls - init, p, lp);
    if (hit) {
      const char* h = static_cast<const char*>(hit);
      lua_pushinteger(L, (h - s) + 1);
      lua_pushinteger(L, static_cast<lua_Integer>((h - s) + lp));
      return 2;
    }
    luaL_pushfail(L);
    return 1;
  }
  MatchState ms;
  PatternInit(&ms, s, ls, p, lp, Sandbox::From(L)->pattern_steps());
  const bool anchor = lp > 0 && *p == '^';
  if (anchor) {
    ++p;
    ms.p_end = p + lp - 1;
  }
  const char* s1 = s + init;
  do {
    PatternReset(&ms);
    const char* e = PatternMatch(&ms, s1, p);
    if (ms.error != PatternError::kNone) return RaisePatternError(L, &ms);
    if (e != nullptr) {
      if (find) {
        lua_pushinteger(L, (s1 - s) + 1);
        lua_pushinteger(L, e - s);
        return PushCaptures(L, &ms, nullptr, nullptr) + 2;
      }
      return PushCaptures(L, &ms, s1, e);
    }
  } while (s1++ < ms.src_end && !anchor);
  luaL_pushfail(L);
  return 1;
}

int StrFind(lua_State* L) { return FindAux(L, true); }
int StrMatch(lua_State* L) { return FindAux(L, false); }

// gmatch state, kept in a userdata (plain data: no finalizer needed).
struct GMatch {
  const char* src;
  const char* p;
  const char* lastmatch;
  MatchState ms;
};

int GMatchAux(lua_State* L) {
  auto* gm = static_cast<GMatch*>(lua_touserdata(L, lua_upvalueindex(3)));
  gm->ms.steps_left = Sandbox::From(L)->pattern_steps();  // the current run's budget
  for (const char* src = gm->src; src <= gm->ms.src_end; ++src) {
    PatternReset(&gm->ms);
    const char* e = PatternMatch(&gm->ms, src, gm->p);
    if (gm->ms.error != PatternError::kNone) return RaisePatternError(L, &gm->ms);
    if (e != nullptr && e != gm->lastmatch) {
      gm->src = gm->lastmatch = e;
      return PushCaptures(L, &gm->ms, src, e);
    }
  }
  return 0;
}

int StrGmatch(lua_State* L) {
  size_t ls = 0, lp = 0;
  const char* s = luaL_checklstring(L, 1, &ls);
  const char* p = luaL_checklstring(L, 2, &lp);
  size_t init = StartIndex(luaL_optinteger(L, 3, 1), ls) - 1;
  if (init > ls) init = ls + 1;  // start after the end: no matches
  lua_settop(L, 2);
  auto* gm = static_cast<GMatch*>(lua_newuserdatauv(L, sizeof(GMatch), 0));
  PatternInit(&gm->ms, s, ls, p, lp, Sandbox::From(L)->pattern_steps());
  gm->src = s + init;
  gm->p = p;
  gm->lastmatch = nullptr;
  lua_pushcclosure(L, GMatchAux, 3);  // upvalues keep s and p alive
  return 1;
}

void AddString(MatchState* ms, luaL_Buffer* b, const char* s, const char* e) {
  size_t l = 0;
  lua_State* L = b->L;
  const char* news = lua_tolstring(L, 3, &l);
  const char* p;
  while ((p = static_cast<const char*>(std::memchr(news, '%', l))) != nullptr) {
    luaL_addlstring(b, news, static_cast<size_t>(p - news));
    ++p;
    if (*p == '%') {
      luaL_addchar(b, *p);
    } else if (*p == '0') {
      luaL_addlstring(b, s, static_cast<size_t>(e - s));
    } else if (*p >= '1' && *p <= '9') {
      PushOneCapture(L, ms, *p - '1', s, e);
      luaL_tolstring(L, -1, nullptr);
      lua_remove(L, -2);
      luaL_addvalue(b);
    } else {
      luaL_error(L, "invalid use of '%%' in replacement string");
      return;
    }
    l -= static_cast<size_t>(p + 1 - news);
    news = p + 1;
  }
  luaL_addlstring(b, news, l);
}

// Returns false when the original text is kept.
bool AddValue(MatchState* ms, luaL_Buffer* b, const char* s, const char* e, int tr) {
  lua_State* L = b->L;
  switch (tr) {
    case LUA_TFUNCTION: {
      lua_pushvalue(L, 3);
      int n = PushCaptures(L, ms, s, e);
      lua_call(L, n, 1);
      break;
    }
    case LUA_TTABLE:
      PushOneCapture(L, ms, 0, s, e);
      lua_gettable(L, 3);
      break;
    default:
      AddString(ms, b, s, e);
      return true;
  }
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    luaL_addlstring(b, s, static_cast<size_t>(e - s));
    return false;
  }
  if (!lua_isstring(L, -1)) {
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    return false;
  }
  luaL_addvalue(b);
  return true;
}

int StrGsub(lua_State* L) {
  size_t srcl = 0, lp = 0;
  const char* src = luaL_checklstring(L, 1, &srcl);
  const char* p = luaL_checklstring(L, 2, &lp);
  const char* lastmatch = nullptr;
  int tr = lua_type(L, 3);
  lua_Integer max_s = luaL_optinteger(L, 4, static_cast<lua_Integer>(srcl) + 1);
  const bool anchor = lp > 0 && *p == '^';
  lua_Integer n = 0;
  bool changed = false;
  luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE,
                   3, "string/function/table");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (anchor) {
    ++p;
    --lp;
  }
  MatchState ms;
  PatternInit(&ms, src, srcl, p, lp, Sandbox::From(L)->pattern_steps());
  while (n < max_s) {
    PatternReset(&ms);
    const char* e = PatternMatch(&ms, src, p);
    if (ms.error != PatternError::kNone) return RaisePatternError(L, &ms);
    if (e != nullptr && e != lastmatch) {
      ++n;
      changed = AddValue(&ms, &b, src, e, tr) | changed;
      src = lastmatch = e;
    } else if (src < ms.src_end) {
      luaL_addchar(&b, *src++);
    } else {
      break;
    }
    if (anchor) break;
  }
  if (!changed) {
    lua_pushvalue(L, 1);
  } else {
    luaL_addlstring(&b, src, static_cast<size_t>(ms.src_end - src));
    luaL_pushresult(&b);
  }
  lua_pushinteger(L, n);
  return 2;
}

}  // namespace

void OpenBudgetedStringFunctions(lua_State* L) {
  lua_pushcfunction(L, StrFind);
  lua_setfield(L, -2, "find");
  lua_pushcfunction(L, StrMatch);
  lua_setfield(L, -2, "match");
  lua_pushcfunction(L, StrGmatch);
  lua_setfield(L, -2, "gmatch");
  lua_pushcfunction(L, StrGsub);
  lua_setfield(L, -2, "gsub");
}

}  // namespace orchard::policy
