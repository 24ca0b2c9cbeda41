// Property-list values and their XML and JSON codecs.
//
// Value is a tree of the eight plist types. Dicts keep insertion order so that a
// parsed plist re-serializes with its keys in the original order. Values own
// their children; copying deep-copies. Not thread-safe for concurrent mutation;
// concurrent reads of a const Value are safe.
//
// Parse() never throws and never crashes on hostile input: malformed, truncated,
// oversized or too deeply nested documents return InvalidArgument / TooLarge with
// a message naming what was wrong and where (element path or byte offset).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "util/status.h"

namespace orchard::plist {

enum class Type { kString, kInteger, kReal, kBool, kDate, kData, kArray, kDict };
const char* TypeName(Type t);

class Value;
using Array = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;

// A plist date: whole seconds since the Unix epoch (XML plists carry seconds).
struct Date {
  int64_t unix_seconds = 0;
  bool operator==(const Date&) const = default;
};
// Raw bytes (plist <data>), kept distinct from strings.
struct Data {
  std::string bytes;
  bool operator==(const Data&) const = default;
};

class Value {
 public:
  Value() : v_(Dict{}) {}  // an empty dict
  static Value String(std::string s) { return Value(std::move(s)); }
  static Value Integer(int64_t i) { return Value(i); }
  static Value Real(double d) { return Value(d); }
  static Value Bool(bool b) { return Value(b); }
  static Value DateValue(int64_t unix_seconds) { return Value(Date{unix_seconds}); }
  static Value DataValue(std::string bytes) { return Value(Data{std::move(bytes)}); }
  static Value MakeArray(Array a = {}) { return Value(std::move(a)); }
  static Value MakeDict(Dict d = {}) { return Value(std::move(d)); }

  Type type() const { return static_cast<Type>(v_.index()); }
  bool is(Type t) const { return type() == t; }

  // Typed accessors: nullptr when the value has another type.
  const std::string* AsString() const { return std::get_if<std::string>(&v_); }
  const int64_t* AsInteger() const { return std::get_if<int64_t>(&v_); }
  const double* AsReal() const { return std::get_if<double>(&v_); }
  const bool* AsBool() const { return std::get_if<bool>(&v_); }
  const Date* AsDate() const { return std::get_if<Date>(&v_); }
  const Data* AsData() const { return std::get_if<Data>(&v_); }
  const Array* AsArray() const { return std::get_if<Array>(&v_); }
  Array* AsArray() { return std::get_if<Array>(&v_); }
  const Dict* AsDict() const { return std::get_if<Dict>(&v_); }
  Dict* AsDict() { return std::get_if<Dict>(&v_); }

  // Dict helpers (return nullptr / no-op on non-dicts). Find is a linear scan.
  const Value* Find(std::string_view key) const;
  Value* Find(std::string_view key);
  // Inserts or replaces key; returns the stored value. Requires a dict.
  Value& Set(std::string key, Value v);
  bool Erase(std::string_view key);
  // Convenience: the string at key, or empty view if absent / not a string.
  std::string_view GetString(std::string_view key) const;
  // The bytes of <data> at key, or nullptr.
  const std::string* GetData(std::string_view key) const;
  // true/false at key, or fallback.
  bool GetBool(std::string_view key, bool fallback) const;

  bool operator==(const Value& o) const { return v_ == o.v_; }

 private:
  using Variant = std::variant<std::string, int64_t, double, bool, Date, Data, Array, Dict>;
  // Constrained so that copying a non-const Value picks the copy constructor.
  template <typename T, typename = std::enable_if_t<!std::is_same_v<std::remove_cvref_t<T>, Value>>>
  explicit Value(T&& v) : v_(std::forward<T>(v)) {}
  Variant v_;
};

struct Limits {
  size_t max_bytes = 8 * 1024 * 1024;  // whole document
  int max_depth = 64;                  // nested arrays/dicts
  // ParseJson: a dict member or array element whose value is null is left
  // out (as absent) instead of failing the parse; a null document still fails.
  bool drop_nulls = false;
};

// Parses an XML plist (with or without XML declaration / DOCTYPE). Lenient about text
// content (device reports are read as sent): use CheckXmlText first for a document that is
// to be handed to a device.
Result<Value> ParseXml(std::string_view xml, const Limits& limits = {});

// Checks that an XML document can be read by a device's strict XML 1.0 parser and means
// the same there as to ParseXml. InvalidArgument ("plist: ... at line L (byte offset N)")
// for: invalid UTF-8; a character XML 1.0 forbids (controls other than tab, LF and CR,
// U+FFFE, U+FFFF), raw or as a character reference (&#0;, &#x1;, &#xFFFE;, &#xD800;);
// an entity reference other than the five predefined ones, or a bare '&'; a DOCTYPE with
// an internal subset ('['); any other markup declaration such as <!ENTITY. The standard
// `<!DOCTYPE plist PUBLIC "..." "...">` line, comments, CDATA and processing instructions
// are fine. Does not check well-formedness (ParseXml does). Linear time, no allocation.
Status CheckXmlText(std::string_view xml);

// Checks that every string and dict key in v is valid UTF-8 made only of characters
// XML 1.0 allows (tab, LF, CR, U+0020..U+D7FF, U+E000..U+FFFD, U+10000..U+10FFFF), so
// ToXml(v) is a document a device can parse. InvalidArgument names the element path
// (e.g. "/Command/Message") and the byte offset inside the string.
Status CheckXmlStrings(const Value& v);
// Serializes as an XML plist (declaration, DOCTYPE, tab indentation). XML cannot carry
// NUL characters: a string or key containing one does not parse back.
std::string ToXml(const Value& v);

// JSON mapping: string, integer, real, bool, array and dict map directly;
// <data> is {"$data": "<base64>"} and <date> is {"$date": "<RFC 3339>"} so that
// JSON round-trips losslessly. A genuine one-key dict whose key is "$data"/"$date" (or
// that with more leading '$') is written with one extra '$' and read back with one less.
// Non-finite reals are written as null. The output is always valid UTF-8 (RFC 8259): in
// strings and keys, each byte that is not part of a well-formed UTF-8 sequence (stray
// continuation bytes, overlong forms, UTF-16 surrogates, code points above U+10FFFF) is
// written as U+FFFD, so such strings do not round-trip; control characters are escaped.
std::string ToJson(const Value& v, bool pretty = false);
// Parses JSON; integers without fraction/exponent that fit int64 become
// Integer, other numbers Real; null is rejected (plists have no null) unless
// limits.drop_nulls.
Result<Value> ParseJson(std::string_view json, const Limits& limits = {});

}  // namespace orchard::plist
