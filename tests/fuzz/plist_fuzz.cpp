// libFuzzer target for the plist codecs. Every input is parsed as XML and as JSON with
// small limits; whatever parses must survive serialization unchanged:
//   ParseXml(ToXml(v)) == v, ParseJson(ToJson(v)) == v (compact and pretty),
// plus the cross-format trips where the formats can represent the value.
// Any violation abort()s so libFuzzer records the input.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>

#include "plist/plist.h"
#include "support/strict_utf8.h"

using namespace orchard::plist;
using orchard::Result;

namespace {

// Structural equality in which NaN equals NaN and -0.0 differs from 0.0.
bool Same(const Value& a, const Value& b) {
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Type::kReal: {
      double x = *a.AsReal(), y = *b.AsReal();
      if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
      return x == y && std::signbit(x) == std::signbit(y);
    }
    case Type::kArray: {
      const Array &x = *a.AsArray(), &y = *b.AsArray();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!Same(x[i], y[i])) return false;
      }
      return true;
    }
    case Type::kDict: {
      const Dict &x = *a.AsDict(), &y = *b.AsDict();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (x[i].first != y[i].first || !Same(x[i].second, y[i].second)) return false;
      }
      return true;
    }
    default:
      return a == b;
  }
}

// True when every real is finite (JSON writes non-finite reals as null, which it rejects).
bool AllFinite(const Value& v) {
  if (const double* d = v.AsReal()) return std::isfinite(*d);
  if (const Array* a = v.AsArray()) {
    for (const Value& e : *a) {
      if (!AllFinite(e)) return false;
    }
  }
  if (const Dict* d = v.AsDict()) {
    for (const auto& [k, e] : *d) {
      if (!AllFinite(e)) return false;
    }
  }
  return true;
}

// True when every string and key is valid UTF-8 (ToJson replaces the bytes of
// any other with U+FFFD, so only these survive a JSON round trip unchanged).
bool AllUtf8(const Value& v) {
  if (const std::string* s = v.AsString()) return orchard::testing::IsStrictUtf8(*s);
  if (const Array* a = v.AsArray()) {
    for (const Value& e : *a) {
      if (!AllUtf8(e)) return false;
    }
  }
  if (const Dict* d = v.AsDict()) {
    for (const auto& [k, e] : *d) {
      if (!orchard::testing::IsStrictUtf8(k) || !AllUtf8(e)) return false;
    }
  }
  return true;
}

// True when no string or key holds a NUL byte (XML cannot carry one).
bool NoNul(const Value& v) {
  auto ok = [](std::string_view s) { return s.find('\0') == std::string_view::npos; };
  if (const std::string* s = v.AsString()) return ok(*s);
  if (const Array* a = v.AsArray()) {
    for (const Value& e : *a) {
      if (!NoNul(e)) return false;
    }
  }
  if (const Dict* d = v.AsDict()) {
    for (const auto& [k, e] : *d) {
      if (!ok(k) || !NoNul(e)) return false;
    }
  }
  return true;
}

[[noreturn]] void Die(const char* what, const orchard::Status* st = nullptr) {
  std::fprintf(stderr, "plist_fuzz: %s%s%s\n", what, st ? ": " : "",
               st ? st->ToString().c_str() : "");
  std::abort();
}

void CheckXmlTrip(const Value& v, const Limits& roomy) {
  const std::string xml = ToXml(v);
  Result<Value> back = ParseXml(xml, roomy);
  if (!back.ok()) Die("ToXml output does not parse", &back.status());
  if (!Same(*back, v)) Die("ParseXml(ToXml(v)) != v");
  if (ToXml(*back) != xml) Die("ToXml is not stable across a round trip");
}

void CheckJsonTrip(const Value& v, const Limits& roomy) {
  const std::string json = ToJson(v);
  if (!orchard::testing::IsStrictUtf8(json)) Die("ToJson wrote invalid UTF-8");
  Result<Value> back = ParseJson(json, roomy);
  if (!back.ok()) Die("ToJson output does not parse", &back.status());
  if (!AllUtf8(v)) {
    // Invalid UTF-8 became U+FFFD (so distinct keys may have merged into
    // one): what parses back is valid, and from then on the trip is exact.
    if (!AllUtf8(*back)) Die("ParseJson(ToJson(v)) holds invalid UTF-8");
    const std::string json2 = ToJson(*back);
    Result<Value> back2 = ParseJson(json2, roomy);
    if (!back2.ok()) Die("ToJson output does not parse", &back2.status());
    if (!Same(*back2, *back) || ToJson(*back2) != json2)
      Die("ToJson is not stable after replacing invalid UTF-8");
    return;
  }
  if (!Same(*back, v)) Die("ParseJson(ToJson(v)) != v");
  if (ToJson(*back) != json) Die("ToJson is not stable across a round trip");
  Result<Value> pretty = ParseJson(ToJson(v, /*pretty=*/true), roomy);
  if (!pretty.ok()) Die("pretty ToJson output does not parse", &pretty.status());
  if (!Same(*pretty, v)) Die("ParseJson(ToJson(v, true)) != v");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  Limits small;
  small.max_bytes = 64 * 1024;
  small.max_depth = 16;
  // Serialized output can be larger than the input; the depth limit stays the same.
  Limits roomy = small;
  roomy.max_bytes = std::numeric_limits<size_t>::max();

  Result<Value> x = ParseXml(in, small);
  if (x.ok()) {
    CheckXmlTrip(*x, roomy);
    if (AllFinite(*x)) CheckJsonTrip(*x, roomy);
  } else if (x.status().message().empty()) {
    Die("ParseXml failed without a message");
  }

  Result<Value> j = ParseJson(in, small);
  if (j.ok()) {
    if (!AllFinite(*j)) Die("ParseJson produced a non-finite real");
    CheckJsonTrip(*j, roomy);
    if (NoNul(*j)) CheckXmlTrip(*j, roomy);
  } else if (j.status().message().empty()) {
    Die("ParseJson failed without a message");
  }
  return 0;
}
