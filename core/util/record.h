// A compact, versionable binary encoding for stored records.
// Fields are written in a fixed order; readers tolerate records that end early
// (fields added later read as defaults), so records only ever grow at the end.
// Not thread-safe per instance; instances are cheap.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace orchard {

class RecordWriter {
 public:
  void PutVarint(uint64_t v);
  void PutSigned(int64_t v);  // zig-zag
  void PutBool(bool v) { PutVarint(v ? 1 : 0); }
  void PutString(std::string_view s);
  const std::string& data() const { return buf_; }
  std::string Take() { return std::move(buf_); }

 private:
  std::string buf_;
};

class RecordReader {
 public:
  explicit RecordReader(std::string_view in) : in_(in) {}
  // Each getter returns the default when the record has ended; a corrupt
  // record (truncated field) sets corrupt() and returns defaults from then on.
  uint64_t GetVarint();
  int64_t GetSigned();
  bool GetBool() { return GetVarint() != 0; }
  std::string GetString();
  // Skips a string field without copying it.
  void SkipString();
  bool corrupt() const { return corrupt_; }

 private:
  bool ReadVarint(uint64_t* v);
  std::string_view in_;
  bool corrupt_ = false;
};

}  // namespace orchard
