// Small JSON and encoding helpers of the webhook plugin (self-contained: the
// plugin includes nothing of Orchard but <orchard/plugin.h>).
//
// Thread-safety: free functions without shared state; a JsonValue is a plain
// value (not synchronised).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace orchard_webhook {

// A parsed JSON value. Numbers keep their source text (so an integer and a
// real stay distinguishable, and nothing is rounded); objects keep member order.
struct JsonValue {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  std::string text;  // string contents (kString) or the number's text (kNumber)
  std::vector<JsonValue> array;
  std::vector<std::pair<std::string, JsonValue>> object;

  // The member named key of an object, or nullptr.
  const JsonValue* Find(std::string_view key) const;
};

// Parses one JSON document (RFC 8259; depth at most 256, input at most 64 MiB).
// False with *error set on malformed input. Strings are returned as UTF-8
// (invalid bytes and lone surrogates become U+FFFD).
bool ParseJson(std::string_view in, JsonValue* out, std::string* error);

// Appends s as a JSON string literal (with quotes). Output is valid UTF-8:
// every byte that is not part of a well-formed UTF-8 sequence becomes U+FFFD.
void AppendJsonString(std::string* out, std::string_view s);

// Appends v as compact JSON.
void AppendJson(std::string* out, const JsonValue& v);

// Standard base64 (RFC 4648, with padding).
std::string Base64(std::string_view bytes);

// Renders v (the plist JSON mapping Orchard uses for event payloads:
// {"$data": base64} is <data>, {"$date": RFC 3339} is <date>, numbers with a
// fraction or exponent are <real>) as an XML property list document, in the
// same layout as Orchard's own plist writer. Null members are left out.
std::string PlistXmlFromJson(const JsonValue& v);

// "2024-05-01T12:00:00.123Z" for a Unix time in milliseconds.
std::string Rfc3339Millis(int64_t unix_ms);

// Lowercase hex of bytes.
std::string Hex(std::string_view bytes);

}  // namespace orchard_webhook
