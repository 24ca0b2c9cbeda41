// Fuzzes the step-budgeted Lua pattern matcher (core/policy/pattern.h): any
// subject and pattern, malformed or pathological, must end in a match, no
// match, kMalformed or kTooComplex, within the budget, never a crash or a read
// out of bounds. Input: subject '\0' pattern.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "policy/pattern.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t cut = in.find('\0');
  std::string_view subject = in.substr(0, cut);
  std::string_view pattern = cut == std::string_view::npos ? std::string_view() : in.substr(cut + 1);
  uint64_t steps = 200000;
  orchard::policy::MatchState ms;
  orchard::policy::PatternInit(&ms, subject.data(), subject.size(), pattern.data(), pattern.size(), &steps);
  const char* p = pattern.data();
  const bool anchor = !pattern.empty() && *p == '^';
  if (anchor) ++p;
  const char* s = subject.data();
  do {
    orchard::policy::PatternReset(&ms);
    const char* e = orchard::policy::PatternMatch(&ms, s, p);
    if (ms.error != orchard::policy::PatternError::kNone) break;
    if (e != nullptr) {
      if (e < subject.data() || e > subject.data() + subject.size()) __builtin_trap();
      break;
    }
  } while (s++ < subject.data() + subject.size() && !anchor);
  return 0;
}
