#include "ctl/format.h"

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace orchard::ctl {
namespace {

// Display width in code points (UTF-8 continuation bytes do not count).
size_t Width(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

std::string Cell(const std::string& s) { return s.empty() ? "-" : Printable(s); }

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool ReadInt(std::string_view s, size_t pos, size_t len, int* out) {
  if (pos + len > s.size() || !AllDigits(s.substr(pos, len))) return false;
  auto [p, ec] = std::from_chars(s.data() + pos, s.data() + pos + len, *out);
  return ec == std::errc();
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool LeapYear(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

}  // namespace

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> widths(headers_.size(), 0);
  std::vector<std::vector<std::string>> all;
  all.push_back(headers_);
  for (const auto& r : rows_) {
    std::vector<std::string> cells;
    for (const auto& c : r) cells.push_back(Cell(c));
    all.push_back(std::move(cells));
  }
  for (const auto& r : all)
    for (size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], Width(r[i]));
  std::string out;
  for (const auto& r : all) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line.append(widths[i] - Width(r[i]) + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string Printable(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return out;
}

std::string ScalarText(const plist::Value& v) {
  if (auto s = v.AsString()) return *s;
  if (auto i = v.AsInteger()) return std::to_string(*i);
  if (auto b = v.AsBool()) return *b ? "true" : "false";
  if (auto r = v.AsReal()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", *r);
    return buf;
  }
  return plist::ToJson(v);
}

std::string Field(const plist::Value& dict, std::string_view key) {
  const plist::Value* v = dict.Find(key);
  return v ? ScalarText(*v) : "";
}

std::string RenderKeyValues(const plist::Value& dict) {
  const plist::Dict* d = dict.AsDict();
  if (!d) return Printable(ScalarText(dict)) + "\n";
  size_t width = 0;
  for (const auto& [k, v] : *d) width = std::max(width, Width(k));
  std::string out;
  for (const auto& [k, v] : *d) {
    out += Printable(k) + ":";
    out.append(width - Width(k) + 1, ' ');
    out += Cell(ScalarText(v)) + "\n";
  }
  return out;
}

Result<int64_t> ParseTimeArg(std::string_view s, int64_t now_ms) {
  const auto bad = [&] {
    return Status::InvalidArgument("\"" + std::string(s) +
                                   "\" is not a time: use RFC 3339 (2026-11-23T15:42:00Z), a date "
                                   "(2026-11-23), Unix milliseconds, or a duration ago (36h, 7d)");
  };
  if (AllDigits(s)) {
    int64_t ms = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), ms);
    if (ec != std::errc()) return bad();
    return ms;
  }
  if (s.size() >= 2 && AllDigits(s.substr(0, s.size() - 1))) {
    int64_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size() - 1, n);
    int64_t unit = 0;
    switch (s.back()) {
      case 's':
        unit = 1000;
        break;
      case 'm':
        unit = 60 * 1000;
        break;
      case 'h':
        unit = 3600 * 1000;
        break;
      case 'd':
        unit = 24 * 3600 * 1000;
        break;
      default:
        return bad();
    }
    if (ec != std::errc() || n > (int64_t{1} << 40)) return bad();
    return now_ms - n * unit;
  }
  // YYYY-MM-DD[(T|t| )HH:MM:SS[.fff][Z|z|(+|-)HH:MM]]
  int year, month, day, hour = 0, minute = 0, second = 0;
  if (!ReadInt(s, 0, 4, &year) || s.size() < 10 || s[4] != '-' || !ReadInt(s, 5, 2, &month) ||
      s[7] != '-' || !ReadInt(s, 8, 2, &day))
    return bad();
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12 || day < 1 ||
      day > kDays[month - 1] + (month == 2 && LeapYear(year) ? 1 : 0))
    return bad();
  int64_t offset_minutes = 0;
  int64_t millis = 0;
  if (s.size() > 10) {
    if (s[10] != 'T' && s[10] != 't' && s[10] != ' ') return bad();
    if (!ReadInt(s, 11, 2, &hour) || s.size() < 19 || s[13] != ':' || !ReadInt(s, 14, 2, &minute) ||
        s[16] != ':' || !ReadInt(s, 17, 2, &second))
      return bad();
    if (hour > 23 || minute > 59 || second > 60) return bad();
    size_t i = 19;
    if (i < s.size() && s[i] == '.') {
      size_t start = ++i;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
      if (i == start) return bad();
      std::string frac(s.substr(start, std::min<size_t>(3, i - start)));
      frac.resize(3, '0');
      millis = std::stoi(frac);
    }
    if (i >= s.size()) return bad();  // RFC 3339 requires a zone
    if (s[i] == 'Z' || s[i] == 'z') {
      ++i;
    } else if (s[i] == '+' || s[i] == '-') {
      int oh, om;
      if (!ReadInt(s, i + 1, 2, &oh) || i + 3 >= s.size() || s[i + 3] != ':' ||
          !ReadInt(s, i + 4, 2, &om) || oh > 23 || om > 59)
        return bad();
      offset_minutes = (s[i] == '+' ? 1 : -1) * (oh * 60 + om);
      i += 6;
    } else {
      return bad();
    }
    if (i != s.size()) return bad();
  }
  const int64_t days =
      DaysFromCivil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  const int64_t secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
  return secs * 1000 + millis;
}

}  // namespace orchard::ctl
