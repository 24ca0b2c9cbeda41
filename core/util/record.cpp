#include "util/record.h"

namespace orchard {

void RecordWriter::PutVarint(uint64_t v) {
  while (v >= 0x80) {
    buf_.push_back(char((v & 0x7F) | 0x80));
    v >>= 7;
  }
  buf_.push_back(char(v));
}

void RecordWriter::PutSigned(int64_t v) {
  PutVarint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
}

void RecordWriter::PutString(std::string_view s) {
  PutVarint(s.size());
  buf_.append(s.data(), s.size());
}

bool RecordReader::ReadVarint(uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift <= 63; shift += 7) {
    if (in_.empty()) {
      if (shift) corrupt_ = true;
      return false;
    }
    uint8_t b = uint8_t(in_[0]);
    in_.remove_prefix(1);
    result |= uint64_t(b & 0x7F) << shift;
    if (!(b & 0x80)) {
      *v = result;
      return true;
    }
  }
  corrupt_ = true;
  return false;
}

uint64_t RecordReader::GetVarint() {
  uint64_t v = 0;
  if (corrupt_ || !ReadVarint(&v)) return 0;
  return v;
}

int64_t RecordReader::GetSigned() {
  uint64_t u = GetVarint();
  return static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1));
}

void RecordReader::SkipString() {
  uint64_t n = 0;
  if (corrupt_ || !ReadVarint(&n)) return;
  if (n > in_.size()) {
    corrupt_ = true;
    return;
  }
  in_.remove_prefix(n);
}

std::string RecordReader::GetString() {
  uint64_t n = 0;
  if (corrupt_ || !ReadVarint(&n)) return {};
  if (n > in_.size()) {
    corrupt_ = true;
    return {};
  }
  std::string s(in_.substr(0, n));
  in_.remove_prefix(n);
  return s;
}

}  // namespace orchard
