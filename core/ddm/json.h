// The DDM module's JSON (internal, not a public header): a strict RFC 8259
// parser into a small tree and the canonical writer the ServerToken and the
// stored status values depend on.
//
// Strict: the text must be well-formed UTF-8 (no overlong forms, no
// surrogates, at most U+10FFFF), \u escapes must not leave a lone surrogate,
// nesting is limited (never deeper than kMaxDepth, so hostile input cannot
// exhaust the stack), and duplicate object keys are refused or the last one
// wins, as the caller asks.
//
// Canonical form: no whitespace, object keys sorted bytewise, strings with
// only '"', '\\' and control characters escaped (\b \f \n \r \t, else \u00XX),
// integers exactly as written (any size: JSON has no integer range), other
// numbers in the shortest form that reads back as the same double, always
// with a '.' or an exponent ("2.0", not "2").
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace orchard::ddm::json {

// The deepest nesting any caller gets, whatever it asks for.
constexpr size_t kMaxDepth = 256;

enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

struct Member;

struct Value {
  Type type = Type::kNull;
  bool boolean = false;         // kBool
  std::string text;             // kNumber: its canonical text; kString: the decoded UTF-8
  std::vector<Value> elements;  // kArray
  std::vector<Member> members;  // kObject: each key once, in input order or sorted (ParseOptions)

  bool is(Type t) const { return type == t; }
  // The member named key (of an object), or nullptr.
  const Value* Find(std::string_view key) const;
};

struct Member {
  std::string key;
  Value value;
};

enum class Duplicates {
  kRefuse,    // a duplicate key is an error naming it
  kLastWins,  // the last value given for a key is kept
};

struct ParseOptions {
  // Arrays and objects nested deeper than this are refused (the outermost
  // counts 1; 0 refuses any); capped at kMaxDepth.
  size_t max_depth = kMaxDepth;
  Duplicates duplicates = Duplicates::kRefuse;
  // Objects' members sorted by key (bytewise) rather than in input order
  // (with kLastWins a key keeps the place of its first occurrence).
  bool sort_members = false;
  // An error inside the value of a member of the outermost object starts with
  // that member's key: "Payload: json: ...".
  bool label_top_members = false;
};

// The document's value, or InvalidArgument "json: <what> at offset <n>".
Result<Value> Parse(std::string_view text, const ParseOptions& options = {});

// The value in canonical form.
std::string Canonical(const Value& v);
void AppendCanonical(std::string* out, const Value& v);

// s (UTF-8) as a JSON string literal, escaped as in the canonical form.
std::string Quote(std::string_view s);
void AppendQuoted(std::string* out, std::string_view s);

// s for an error message: quoted, at most 40 bytes, anything but printable
// ASCII (and '"', '\\') as \xNN.
std::string Excerpt(std::string_view s);

}  // namespace orchard::ddm::json
