#include "plist/plist.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <numeric>

#include "plist/plist_internal.h"
#include "util/utf8.h"

namespace orchard::plist {

const char* TypeName(Type t) {
  switch (t) {
    case Type::kString:
      return "string";
    case Type::kInteger:
      return "integer";
    case Type::kReal:
      return "real";
    case Type::kBool:
      return "bool";
    case Type::kDate:
      return "date";
    case Type::kData:
      return "data";
    case Type::kArray:
      return "array";
    case Type::kDict:
      return "dict";
  }
  return "unknown";
}

const Value* Value::Find(std::string_view key) const {
  const Dict* d = AsDict();
  if (!d) return nullptr;
  for (const auto& [k, v] : *d) {
    if (k == key) return &v;
  }
  return nullptr;
}

Value* Value::Find(std::string_view key) {
  return const_cast<Value*>(static_cast<const Value*>(this)->Find(key));
}

Value& Value::Set(std::string key, Value v) {
  Dict* d = AsDict();
  if (!d) {
    // Precondition violated: rather than crash, the value becomes a dict.
    v_ = Dict{};
    d = AsDict();
  }
  for (auto& [k, existing] : *d) {
    if (k == key) {
      existing = std::move(v);
      return existing;
    }
  }
  d->emplace_back(std::move(key), std::move(v));
  return d->back().second;
}

bool Value::Erase(std::string_view key) {
  Dict* d = AsDict();
  if (!d) return false;
  auto it = std::find_if(d->begin(), d->end(), [&](const auto& kv) { return kv.first == key; });
  if (it == d->end()) return false;
  d->erase(it);
  return true;
}

std::string_view Value::GetString(std::string_view key) const {
  const Value* v = Find(key);
  const std::string* s = v ? v->AsString() : nullptr;
  return s ? std::string_view(*s) : std::string_view();
}

const std::string* Value::GetData(std::string_view key) const {
  const Value* v = Find(key);
  const Data* d = v ? v->AsData() : nullptr;
  return d ? &d->bytes : nullptr;
}

bool Value::GetBool(std::string_view key, bool fallback) const {
  const Value* v = Find(key);
  const bool* b = v ? v->AsBool() : nullptr;
  return b ? *b : fallback;
}

namespace internal {
namespace {

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian), valid for the whole
// int64 day range used here.
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void CivilFromDays(int64_t z, int64_t* y, int* m, int* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  *d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  *m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

bool IsLeap(int64_t y) { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

int DaysInMonth(int64_t y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m - 1];
}

void AppendPadded(std::string* out, uint64_t v, int width) {
  char buf[24];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  for (int n = static_cast<int>(p - buf); n < width; ++n) out->push_back('0');
  out->append(buf, p);
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Reads exactly n digits at s[*i].
bool ReadDigits(std::string_view s, size_t* i, int n, int* out) {
  if (*i + n > s.size()) return false;
  int v = 0;
  for (int k = 0; k < n; ++k) {
    char c = s[*i + k];
    if (!IsDigit(c)) return false;
    v = v * 10 + (c - '0');
  }
  *i += n;
  *out = v;
  return true;
}

bool Expect(std::string_view s, size_t* i, char c) {
  if (*i >= s.size() || s[*i] != c) return false;
  ++*i;
  return true;
}

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != b[i]) return false;
  }
  return true;
}

}  // namespace

void AppendIsoDate(std::string* out, int64_t t) {
  int64_t days = t / 86400;
  int64_t sod = t % 86400;
  if (sod < 0) {
    sod += 86400;
    --days;
  }
  int64_t y;
  int m, d;
  CivilFromDays(days, &y, &m, &d);
  if (y < 0) {
    out->push_back('-');
    AppendPadded(out, static_cast<uint64_t>(-y), 4);
  } else {
    AppendPadded(out, static_cast<uint64_t>(y), 4);
  }
  out->push_back('-');
  AppendPadded(out, m, 2);
  out->push_back('-');
  AppendPadded(out, d, 2);
  out->push_back('T');
  AppendPadded(out, sod / 3600, 2);
  out->push_back(':');
  AppendPadded(out, sod / 60 % 60, 2);
  out->push_back(':');
  AppendPadded(out, sod % 60, 2);
  out->push_back('Z');
}

bool ParseIsoDate(std::string_view s, int64_t* unix_seconds) {
  size_t i = 0;
  bool neg_year = false;
  if (i < s.size() && s[i] == '-') {
    neg_year = true;
    ++i;
  }
  // 4 to 12 year digits: enough for every int64 second count (year ~2.9e11).
  size_t start = i;
  int64_t year = 0;
  while (i < s.size() && IsDigit(s[i]) && i - start < 12) year = year * 10 + (s[i++] - '0');
  if (i - start < 4 || (i < s.size() && IsDigit(s[i]))) return false;
  if (neg_year) year = -year;
  int mon, day, hh, mm, ss;
  if (!Expect(s, &i, '-') || !ReadDigits(s, &i, 2, &mon) || !Expect(s, &i, '-') ||
      !ReadDigits(s, &i, 2, &day))
    return false;
  if (i >= s.size() || (s[i] != 'T' && s[i] != 't')) return false;
  ++i;
  if (!ReadDigits(s, &i, 2, &hh) || !Expect(s, &i, ':') || !ReadDigits(s, &i, 2, &mm) ||
      !Expect(s, &i, ':') || !ReadDigits(s, &i, 2, &ss))
    return false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    size_t f = i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    if (i == f) return false;
  }
  int offset = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int sign = s[i] == '-' ? -1 : 1;
    ++i;
    int oh, om;
    if (!ReadDigits(s, &i, 2, &oh) || !Expect(s, &i, ':') || !ReadDigits(s, &i, 2, &om))
      return false;
    if (oh > 23 || om > 59) return false;
    offset = sign * (oh * 3600 + om * 60);
  } else {
    return false;
  }
  if (i != s.size()) return false;
  if (mon < 1 || mon > 12 || day < 1 || day > DaysInMonth(year, mon) || hh > 23 || mm > 59 ||
      ss > 59)
    return false;
  __int128 secs = static_cast<__int128>(DaysFromCivil(year, mon, day)) * 86400 + hh * 3600 +
                  mm * 60 + ss - offset;
  if (secs < std::numeric_limits<int64_t>::min() || secs > std::numeric_limits<int64_t>::max())
    return false;
  *unix_seconds = static_cast<int64_t>(secs);
  return true;
}

void AppendReal(std::string* out, double d, bool force_fraction) {
  if (std::isnan(d)) {
    out->append("nan");
    return;
  }
  if (std::isinf(d)) {
    out->append(d < 0 ? "-infinity" : "+infinity");
    return;
  }
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, d);  // shortest exact round-trip form
  out->append(buf, p);
  if (force_fraction && std::find_if(buf, p, [](char c) { return c == '.' || c == 'e'; }) == p) {
    out->append(".0");
  }
}

int ParseInteger(std::string_view s, int64_t* out) {
  s = TrimXmlSpace(s);
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s.remove_prefix(2);
  }
  if (s.empty()) return 1;
  uint64_t mag = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, mag, base);  // unsigned: rejects any sign
  if (ec == std::errc::invalid_argument || p != end) return 1;
  constexpr uint64_t kMaxPos = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (ec == std::errc::result_out_of_range) return 2;
  if (neg) {
    if (mag > kMaxPos + 1) return 2;
    *out = mag == kMaxPos + 1 ? std::numeric_limits<int64_t>::min() : -static_cast<int64_t>(mag);
  } else {
    if (mag > kMaxPos) return 2;
    *out = static_cast<int64_t>(mag);
  }
  return 0;
}

int ParseReal(std::string_view s, double* out) {
  s = TrimXmlSpace(s);
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (EqualsNoCase(s, "nan")) {
    *out = std::numeric_limits<double>::quiet_NaN();
    return 0;
  }
  if (EqualsNoCase(s, "inf") || EqualsNoCase(s, "infinity")) {
    *out = neg ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
    return 0;
  }
  if (s.empty() || !(IsDigit(s[0]) || s[0] == '.')) return 1;
  double d = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, d, std::chars_format::general);
  if (ec == std::errc::invalid_argument || p != end) return 1;
  if (ec == std::errc::result_out_of_range) return 2;
  *out = neg ? -d : d;
  return 0;
}

void AppendBase64(std::string* out, std::string_view in) {
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const size_t start = out->size();
  out->resize(start + (in.size() + 2) / 3 * 4);
  char* p = out->data() + start;
  const auto* b = reinterpret_cast<const unsigned char*>(in.data());
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t n = uint32_t(b[i]) << 16 | uint32_t(b[i + 1]) << 8 | b[i + 2];
    *p++ = kB64[n >> 18];
    *p++ = kB64[(n >> 12) & 63];
    *p++ = kB64[(n >> 6) & 63];
    *p++ = kB64[n & 63];
  }
  if (const size_t rest = in.size() - i; rest > 0) {
    uint32_t n = uint32_t(b[i]) << 16 | (rest == 2 ? uint32_t(b[i + 1]) << 8 : 0);
    *p++ = kB64[n >> 18];
    *p++ = kB64[(n >> 12) & 63];
    *p++ = rest == 2 ? kB64[(n >> 6) & 63] : '=';
    *p++ = '=';
  }
}

void DedupeKeys(Dict* d) {
  const size_t n = d->size();
  if (n < 2) return;
  std::vector<char> drop;
  if (n <= 16) {
    for (size_t i = 1; i < n; ++i) {
      for (size_t j = 0; j < i; ++j) {
        if (!drop.empty() && drop[j]) continue;
        if ((*d)[j].first == (*d)[i].first) {
          if (drop.empty()) drop.assign(n, 0);
          (*d)[j].second = std::move((*d)[i].second);
          drop[i] = 1;
          break;
        }
      }
    }
  } else {
    std::vector<size_t> idx(n);
    std::iota(idx.begin(), idx.end(), size_t{0});
    std::stable_sort(idx.begin(), idx.end(),
                     [d](size_t a, size_t b) { return (*d)[a].first < (*d)[b].first; });
    for (size_t g = 0; g < n;) {
      size_t e = g + 1;
      while (e < n && (*d)[idx[e]].first == (*d)[idx[g]].first) ++e;
      if (e - g > 1) {
        if (drop.empty()) drop.assign(n, 0);
        (*d)[idx[g]].second = std::move((*d)[idx[e - 1]].second);
        for (size_t k = g + 1; k < e; ++k) drop[idx[k]] = 1;
      }
      g = e;
    }
  }
  if (drop.empty()) return;
  size_t w = 0;
  for (size_t r = 0; r < n; ++r) {
    if (drop[r]) continue;
    if (w != r) (*d)[w] = std::move((*d)[r]);
    ++w;
  }
  d->erase(d->begin() + static_cast<std::ptrdiff_t>(w), d->end());
}

std::string CodePointName(uint32_t cp) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string digits;
  for (uint32_t v = cp; v; v >>= 4) digits.insert(digits.begin(), kHex[v & 15]);
  while (digits.size() < 4) digits.insert(digits.begin(), '0');
  return "U+" + digits;
}

std::string QuoteForError(std::string_view s) {
  constexpr size_t kMax = 40;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '\'' || c == '\\') {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += s.size() > kMax ? "'..." : "'";
  return out;
}

std::string_view TrimXmlSpace(std::string_view s) {
  while (!s.empty() && IsXmlSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsXmlSpace(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace internal
}  // namespace orchard::plist

namespace orchard::plist {
namespace {

// One path segment for a message: control and non-ASCII bytes as \xNN, at most 64 bytes.
std::string SegmentForError(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < 64; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '\\') {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 64) out += "...";
  return out;
}

class StringChecker {
 public:
  Status Check(const Value& v) {
    switch (v.type()) {
      case Type::kString:
        return CheckText(*v.AsString(), "string");
      case Type::kArray: {
        const Array& a = *v.AsArray();
        for (size_t i = 0; i < a.size(); ++i) {
          path_.push_back(std::to_string(i));
          Status st = Check(a[i]);
          path_.pop_back();
          if (!st.ok()) return st;
        }
        return Status::Ok();
      }
      case Type::kDict:
        for (const auto& [k, e] : *v.AsDict()) {
          path_.push_back(SegmentForError(k));
          Status st = CheckText(k, "key");
          if (st.ok()) st = Check(e);
          path_.pop_back();
          if (!st.ok()) return st;
        }
        return Status::Ok();
      default:
        return Status::Ok();
    }
  }

 private:
  std::string Path() const {
    if (path_.empty()) return "/";
    std::string out;
    for (const auto& s : path_) out += "/" + s;
    return out;
  }
  Status CheckText(std::string_view s, const char* what) {
    for (size_t i = 0; i < s.size();) {
      uint32_t cp = 0;
      const size_t n = DecodeUtf8(s, i, &cp);
      if (n == 0) {
        return Status::InvalidArgument(std::string(what) + " at " + Path() +
                                       " is not valid UTF-8 (byte " + std::to_string(i) + ")");
      }
      if (!internal::IsXmlChar(cp)) {
        return Status::InvalidArgument(std::string(what) + " at " + Path() + " contains " +
                                       internal::CodePointName(cp) +
                                       ", which XML 1.0 does not allow (byte " +
                                       std::to_string(i) + ")");
      }
      i += n;
    }
    return Status::Ok();
  }

  std::vector<std::string> path_;
};

}  // namespace

Status CheckXmlStrings(const Value& v) { return StringChecker().Check(v); }

}  // namespace orchard::plist
