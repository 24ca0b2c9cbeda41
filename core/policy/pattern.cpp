#include "policy/pattern.h"

#include <cctype>
#include <cstring>

namespace orchard::policy {
namespace {

constexpr char kEsc = '%';
constexpr int kMaxDepth = 200;  // recursion (Lua's matcher uses the same bound)
constexpr const char kSpecials[] = "^$*+?.([%-";

inline int UChar(char c) { return static_cast<unsigned char>(c); }

const char* Fail(MatchState* ms, PatternError e, const char* text) {
  if (ms->error == PatternError::kNone) {
    ms->error = e;
    ms->error_text = text;
  }
  return nullptr;
}

inline bool Step(MatchState* ms) {
  if (ms->error != PatternError::kNone) return false;
  if (*ms->steps_left == 0) {
    Fail(ms, PatternError::kTooComplex, "pattern too complex: the matching step budget is exhausted");
    return false;
  }
  --*ms->steps_left;
  return true;
}

// The end of the single-character class starting at p.
const char* ClassEnd(MatchState* ms, const char* p) {
  char c = *p++;
  if (c == kEsc) {
    if (p >= ms->p_end) return Fail(ms, PatternError::kMalformed, "malformed pattern (ends with '%')");
    return p + 1;
  }
  if (c == '[') {
    if (p < ms->p_end && *p == '^') ++p;
    // The first character of a set is taken literally, so "[]]" is a set of ']'.
    for (;;) {
      if (p >= ms->p_end) return Fail(ms, PatternError::kMalformed, "malformed pattern (missing ']')");
      char cc = *p++;
      if (cc == kEsc) {
        if (p >= ms->p_end)
          return Fail(ms, PatternError::kMalformed, "malformed pattern (missing ']')");
        ++p;
      }
      if (p >= ms->p_end) return Fail(ms, PatternError::kMalformed, "malformed pattern (missing ']')");
      if (*p == ']') return p + 1;
    }
  }
  return p;
}

bool MatchClass(int c, int cl) {
  bool res;
  switch (std::tolower(cl)) {
    case 'a': res = std::isalpha(c); break;
    case 'c': res = std::iscntrl(c); break;
    case 'd': res = std::isdigit(c); break;
    case 'g': res = std::isgraph(c); break;
    case 'l': res = std::islower(c); break;
    case 'p': res = std::ispunct(c); break;
    case 's': res = std::isspace(c); break;
    case 'u': res = std::isupper(c); break;
    case 'w': res = std::isalnum(c); break;
    case 'x': res = std::isxdigit(c); break;
    default: return cl == c;
  }
  if (std::isupper(cl)) res = !res;
  return res;
}

// p points at '[', ec at the closing ']'.
bool MatchBracketClass(int c, const char* p, const char* ec) {
  bool sig = true;
  if (*(p + 1) == '^') {
    sig = false;
    ++p;
  }
  while (++p < ec) {
    if (*p == kEsc) {
      ++p;
      if (MatchClass(c, UChar(*p))) return sig;
    } else if (*(p + 1) == '-' && p + 2 < ec) {
      p += 2;
      if (UChar(*(p - 2)) <= c && c <= UChar(*p)) return sig;
    } else if (UChar(*p) == c) {
      return sig;
    }
  }
  return !sig;
}

bool SingleMatch(MatchState* ms, const char* s, const char* p, const char* ep) {
  if (s >= ms->src_end) return false;
  int c = UChar(*s);
  switch (*p) {
    case '.': return true;
    case kEsc: return MatchClass(c, UChar(*(p + 1)));
    case '[': return MatchBracketClass(c, p, ep - 1);
    default: return UChar(*p) == c;
  }
}

const char* DoMatch(MatchState* ms, const char* s, const char* p);

const char* MatchBalance(MatchState* ms, const char* s, const char* p) {
  if (p + 1 >= ms->p_end)
    return Fail(ms, PatternError::kMalformed, "malformed pattern (missing arguments to '%b')");
  if (s >= ms->src_end || *s != *p) return nullptr;
  const char b = *p, e = *(p + 1);
  int open = 1;
  while (++s < ms->src_end) {
    if (!Step(ms)) return nullptr;
    if (*s == e) {
      if (--open == 0) return s + 1;
    } else if (*s == b) {
      ++open;
    }
  }
  return nullptr;
}

const char* MaxExpand(MatchState* ms, const char* s, const char* p, const char* ep) {
  ptrdiff_t i = 0;
  while (SingleMatch(ms, s + i, p, ep)) {
    if (!Step(ms)) return nullptr;
    ++i;
  }
  while (i >= 0) {  // try the longest first
    const char* res = DoMatch(ms, s + i, ep + 1);
    if (res) return res;
    if (ms->error != PatternError::kNone) return nullptr;
    --i;
  }
  return nullptr;
}

const char* MinExpand(MatchState* ms, const char* s, const char* p, const char* ep) {
  for (;;) {
    const char* res = DoMatch(ms, s, ep + 1);
    if (res) return res;
    if (ms->error != PatternError::kNone) return nullptr;
    if (!SingleMatch(ms, s, p, ep)) return nullptr;
    ++s;
  }
}

const char* StartCapture(MatchState* ms, const char* s, const char* p, ptrdiff_t what) {
  if (ms->level >= kMaxCaptures) return Fail(ms, PatternError::kMalformed, "too many captures");
  ms->capture[ms->level].init = s;
  ms->capture[ms->level].len = what;
  ++ms->level;
  const char* res = DoMatch(ms, s, p);
  if (!res) --ms->level;
  return res;
}

const char* EndCapture(MatchState* ms, const char* s, const char* p) {
  int l = -1;
  for (int i = ms->level - 1; i >= 0; --i) {
    if (ms->capture[i].len == kCapUnfinished) {
      l = i;
      break;
    }
  }
  if (l < 0) return Fail(ms, PatternError::kMalformed, "invalid pattern capture");
  ms->capture[l].len = s - ms->capture[l].init;
  const char* res = DoMatch(ms, s, p);
  if (!res) ms->capture[l].len = kCapUnfinished;
  return res;
}

const char* MatchCapture(MatchState* ms, const char* s, int c) {
  int l = c - '1';
  if (l < 0 || l >= ms->level || ms->capture[l].len == kCapUnfinished)
    return Fail(ms, PatternError::kMalformed, "invalid capture index in pattern");
  ptrdiff_t len = ms->capture[l].len;
  if (len < 0) return nullptr;  // a position capture matches no text
  if (ms->src_end - s >= len && std::memcmp(ms->capture[l].init, s, static_cast<size_t>(len)) == 0)
    return s + len;
  return nullptr;
}

const char* DoMatch(MatchState* ms, const char* s, const char* p) {
  if (!Step(ms)) return nullptr;
  if (++ms->depth > kMaxDepth)
    return Fail(ms, PatternError::kTooComplex, "pattern too complex: nested too deeply");
  const char* result = nullptr;
  for (;;) {
    if (p >= ms->p_end) {
      result = s;
      break;
    }
    bool plain_item = false;
    switch (*p) {
      case '(':
        if (p + 1 < ms->p_end && *(p + 1) == ')') result = StartCapture(ms, s, p + 2, kCapPosition);
        else result = StartCapture(ms, s, p + 1, kCapUnfinished);
        break;
      case ')':
        result = EndCapture(ms, s, p + 1);
        break;
      case '$':
        if (p + 1 == ms->p_end) {
          result = s == ms->src_end ? s : nullptr;
          break;
        }
        plain_item = true;
        break;
      case kEsc:
        if (p + 1 < ms->p_end && *(p + 1) == 'b') {
          const char* r = MatchBalance(ms, s, p + 2);
          if (r) {
            s = r;
            p += 4;
            continue;
          }
          result = nullptr;
          break;
        }
        if (p + 1 < ms->p_end && *(p + 1) == 'f') {
          p += 2;
          if (p >= ms->p_end || *p != '[') {
            result = Fail(ms, PatternError::kMalformed, "missing '[' after '%f' in pattern");
            break;
          }
          const char* ep = ClassEnd(ms, p);
          if (!ep) break;
          int prev = s == ms->src_init ? 0 : UChar(*(s - 1));
          int cur = s < ms->src_end ? UChar(*s) : 0;
          if (!MatchBracketClass(prev, p, ep - 1) && MatchBracketClass(cur, p, ep - 1)) {
            p = ep;
            continue;
          }
          result = nullptr;
          break;
        }
        if (p + 1 < ms->p_end && std::isdigit(UChar(*(p + 1)))) {
          s = MatchCapture(ms, s, UChar(*(p + 1)));
          if (s) {
            p += 2;
            continue;
          }
          result = nullptr;
          break;
        }
        plain_item = true;
        break;
      default:
        plain_item = true;
        break;
    }
    if (!plain_item) break;
    const char* ep = ClassEnd(ms, p);
    if (!ep) {
      result = nullptr;
      break;
    }
    const char epc = ep < ms->p_end ? *ep : '\0';
    if (!SingleMatch(ms, s, p, ep)) {
      if (epc == '*' || epc == '?' || epc == '-') {  // accept the empty match
        p = ep + 1;
        if (!Step(ms)) {
          result = nullptr;
          break;
        }
        continue;
      }
      result = nullptr;
      break;
    }
    if (epc == '?') {
      const char* r = DoMatch(ms, s + 1, ep + 1);
      if (r) {
        result = r;
        break;
      }
      if (ms->error != PatternError::kNone) break;
      p = ep + 1;
      continue;
    }
    if (epc == '+') {
      result = MaxExpand(ms, s + 1, p, ep);
      break;
    }
    if (epc == '*') {
      result = MaxExpand(ms, s, p, ep);
      break;
    }
    if (epc == '-') {
      result = MinExpand(ms, s, p, ep);
      break;
    }
    ++s;
    p = ep;
    if (!Step(ms)) {
      result = nullptr;
      break;
    }
  }
  --ms->depth;
  return ms->error == PatternError::kNone ? result : nullptr;
}

}  // namespace

void PatternInit(MatchState* ms, const char* s, size_t ls, const char* p, size_t lp,
                 uint64_t* steps_left) {
  ms->src_init = s;
  ms->src_end = s + ls;
  ms->p_end = p + lp;
  ms->steps_left = steps_left;
  ms->level = 0;
  ms->depth = 0;
  ms->error = PatternError::kNone;
  ms->error_text = nullptr;
}

const char* PatternMatch(MatchState* ms, const char* s, const char* p) { return DoMatch(ms, s, p); }

bool PatternIsPlain(const char* p, size_t lp) {
  for (size_t i = 0; i < lp; ++i)
    if (std::strchr(kSpecials, p[i]) != nullptr && p[i] != '\0') return false;
  return true;
}

}  // namespace orchard::policy
