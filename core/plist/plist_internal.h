// Helpers shared by the XML and JSON codecs. Private to core/plist; not installed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "plist/plist.h"

namespace orchard::plist::internal {

// Recursion guard independent of Limits: a caller-supplied max_depth above this is clamped
// so that hostile input can never exhaust the stack.
inline constexpr int kHardMaxDepth = 1000;
inline int EffectiveMaxDepth(const Limits& l) {
  return l.max_depth < kHardMaxDepth ? l.max_depth : kHardMaxDepth;
}

// Appends "YYYY-MM-DDTHH:MM:SSZ" (UTC). Years outside 0000..9999 get more digits or a
// leading '-', so every int64 round-trips through ParseIsoDate.
void AppendIsoDate(std::string* out, int64_t unix_seconds);
// Parses an ISO 8601 / RFC 3339 timestamp: YYYY-MM-DD'T'HH:MM:SS[.fraction](Z|±HH:MM).
// 't'/'z' are accepted in lower case; the fraction is truncated. False when malformed,
// out of calendar range or not representable as int64 seconds.
bool ParseIsoDate(std::string_view s, int64_t* unix_seconds);

// Shortest text that parses back to exactly d. Non-finite values are written as
// "nan", "+infinity", "-infinity" (CFPropertyList spelling). With force_fraction an
// integral finite value gets ".0" appended so JSON readers see a real.
void AppendReal(std::string* out, double d, bool force_fraction);

// Parses a full decimal or 0x-hex integer with optional sign; surrounding XML whitespace
// allowed. Returns 0 on success, 1 when not an integer, 2 when out of int64 range.
int ParseInteger(std::string_view s, int64_t* out);
// Parses a real as CFPropertyList does (decimal/exponent, nan, [+-]inf[inity]).
// Returns 0 on success, 1 when not a number, 2 when out of double range.
int ParseReal(std::string_view s, double* out);

// Appends standard padded base64 of bytes (same output as Base64Encode, no temporary).
void AppendBase64(std::string* out, std::string_view bytes);

// Collapses duplicate keys in place: the first position is kept, the last value wins.
// O(n) for the common no-duplicate small case, O(n log n) otherwise.
void DedupeKeys(Dict* d);

// Quotes s for an error message: at most 40 bytes, non-printable bytes as \xNN.
std::string QuoteForError(std::string_view s);

// XML 1.0 "Char": #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
inline bool IsXmlChar(uint32_t cp) {
  return cp == 0x9 || cp == 0xA || cp == 0xD || (cp >= 0x20 && cp <= 0xD7FF) ||
         (cp >= 0xE000 && cp <= 0xFFFD) || (cp >= 0x10000 && cp <= 0x10FFFF);
}
// "U+0001" style name of a code point, for messages.
std::string CodePointName(uint32_t cp);

inline bool IsXmlSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
std::string_view TrimXmlSpace(std::string_view s);

}  // namespace orchard::plist::internal
