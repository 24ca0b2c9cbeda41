// UTF-8 per Unicode Table 3-7 (well-formed sequences only: no overlong forms,
// no surrogates, nothing above U+10FFFF), shared by every module that checks,
// escapes or decodes text from devices, admins, policies and plugins.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace orchard {

// Decodes the well-formed sequence starting at s[i]: its length (1-4), with
// *cp set; 0 when the bytes there are not one (cp untouched). Requires
// i < s.size().
size_t DecodeUtf8(std::string_view s, size_t i, uint32_t* cp);
// The length of the well-formed sequence at s[i] (1-4), 0 when none starts there.
inline size_t Utf8Length(std::string_view s, size_t i) {
  uint32_t cp = 0;
  return DecodeUtf8(s, i, &cp);
}
// Whether all of s is well-formed UTF-8.
bool IsValidUtf8(std::string_view s);
// Appends the UTF-8 encoding of cp (a scalar value: at most U+10FFFF, not a surrogate).
void AppendUtf8(std::string* out, uint32_t cp);

}  // namespace orchard
