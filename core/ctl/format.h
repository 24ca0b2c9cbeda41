// Human output helpers for orchardctl: aligned tables, key/value listings,
// cell text from JSON values, and parsing of time arguments.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "plist/plist.h"
#include "util/status.h"

namespace orchard::ctl {

// A table with a header row; columns separated by two spaces, the last one
// unpadded. Empty cells print as "-". Control characters in cells (device
// supplied text) are replaced by '?' so a name cannot drive the terminal.
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void AddRow(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }
  std::string Render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "key: value" lines with the values aligned, in the dict's order. Nested
// arrays/dicts are shown as compact JSON.
std::string RenderKeyValues(const plist::Value& dict);

// The text of a scalar at key ("" if absent): strings as-is, integers and
// reals in decimal, bools as true/false, anything else as compact JSON.
std::string Field(const plist::Value& dict, std::string_view key);
std::string ScalarText(const plist::Value& v);

// Replaces control characters (and DEL) with '?'.
std::string Printable(std::string_view text);

// Parses a time argument into Unix milliseconds: plain digits are already
// milliseconds; "2026-11-23", "2026-11-23T15:42:00Z" and RFC 3339 with
// fractions or offsets are absolute; "90s", "15m", "36h", "7d" mean that long
// before now_ms.
Result<int64_t> ParseTimeArg(std::string_view text, int64_t now_ms);

}  // namespace orchard::ctl
