// JSON codec for plist values. Hand-written: a recursive-descent parser whose depth is
// checked before each descent, and a writer that builds one string.
//
// Tagged forms: a JSON object with exactly one member "$data" (base64 string) or "$date"
// (RFC 3339 string) is a <data> / <date>. A genuine one-member dict whose key is one of
// "$data", "$date", "$$data", "$$date", ... is written with one more leading '$' and read
// back with one less, so every Value round-trips, except strings that are not valid UTF-8
// (the writer replaces each stray byte with U+FFFD: JSON must be UTF-8).
#include <charconv>
#include <cmath>

#include "plist/plist.h"
#include "plist/plist_internal.h"
#include "util/encoding.h"
#include "util/utf8.h"

namespace orchard::plist {
namespace {

// True for "$data", "$date", "$$data", ...: keys that need one extra '$' when they are
// the only key of a dict, so they are not read back as tags.
bool IsTagLikeKey(std::string_view k) {
  size_t n = 0;
  while (n < k.size() && k[n] == '$') ++n;
  if (n == 0) return false;
  k.remove_prefix(n);
  return k == "data" || k == "date";
}

void AppendJsonString(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      uint32_t cp = 0;
      const size_t n = DecodeUtf8(s, i, &cp);
      if (n > 0) {
        i += n - 1;  // a well-formed sequence is copied as is
        continue;
      }
      out->append(s.data() + start, i - start);
      out->append("\xEF\xBF\xBD");  // U+FFFD for each byte that is not well-formed UTF-8
      start = i + 1;
      continue;
    }
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out->append(s.data() + start, i - start);
    start = i + 1;
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default: {
        char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        out->append(esc, sizeof esc);
      }
    }
  }
  out->append(s.data() + start, s.size() - start);
  out->push_back('"');
}

class JsonWriter {
 public:
  JsonWriter(bool pretty, std::string* out) : pretty_(pretty), out_(out) {}

  void Write(const Value& v, int indent) {
    switch (v.type()) {
      case Type::kString:
        AppendJsonString(out_, *v.AsString());
        return;
      case Type::kInteger: {
        char buf[24];
        auto [p, ec] = std::to_chars(buf, buf + sizeof buf, *v.AsInteger());
        out_->append(buf, p);
        return;
      }
      case Type::kReal: {
        double d = *v.AsReal();
        if (std::isfinite(d)) {
          internal::AppendReal(out_, d, /*force_fraction=*/true);
        } else {
          out_->append("null");
        }
        return;
      }
      case Type::kBool:
        out_->append(*v.AsBool() ? "true" : "false");
        return;
      case Type::kDate:
        out_->append(pretty_ ? "{\"$date\": \"" : "{\"$date\":\"");
        internal::AppendIsoDate(out_, v.AsDate()->unix_seconds);
        out_->append("\"}");
        return;
      case Type::kData:
        out_->append(pretty_ ? "{\"$data\": \"" : "{\"$data\":\"");
        internal::AppendBase64(out_, v.AsData()->bytes);
        out_->append("\"}");
        return;
      case Type::kArray: {
        const Array& a = *v.AsArray();
        if (a.empty()) {
          out_->append("[]");
          return;
        }
        out_->push_back('[');
        for (size_t i = 0; i < a.size(); ++i) {
          if (i) out_->push_back(',');
          Newline(indent + 1);
          Write(a[i], indent + 1);
        }
        Newline(indent);
        out_->push_back(']');
        return;
      }
      case Type::kDict: {
        const Dict& d = *v.AsDict();
        if (d.empty()) {
          out_->append("{}");
          return;
        }
        const bool escape_key = d.size() == 1 && IsTagLikeKey(d[0].first);
        out_->push_back('{');
        for (size_t i = 0; i < d.size(); ++i) {
          if (i) out_->push_back(',');
          Newline(indent + 1);
          if (escape_key) {
            AppendJsonString(out_, "$" + d[i].first);
          } else {
            AppendJsonString(out_, d[i].first);
          }
          out_->append(pretty_ ? ": " : ":");
          Write(d[i].second, indent + 1);
        }
        Newline(indent);
        out_->push_back('}');
        return;
      }
    }
  }

 private:
  void Newline(int indent) {
    if (!pretty_) return;
    out_->push_back('\n');
    out_->append(static_cast<size_t>(indent) * 2, ' ');
  }

  bool pretty_;
  std::string* out_;
};

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class JsonParser {
 public:
  JsonParser(std::string_view in, int max_depth, bool drop_nulls)
      : in_(in), max_depth_(max_depth), drop_nulls_(drop_nulls) {}

  bool ParseDocument(Value* out) {
    SkipWs();
    if (!ParseValue(0, out)) return false;
    SkipWs();
    if (pos_ != in_.size()) return Fail("trailing characters after the value", pos_);
    return true;
  }
  const std::string& error() const { return error_; }

 private:
  bool Fail(std::string what, size_t at) {
    error_ = "json: " + std::move(what) + " at offset " + std::to_string(at);
    return false;
  }
  bool AtEnd() const { return pos_ >= in_.size(); }
  char Peek() const { return pos_ < in_.size() ? in_[pos_] : '\0'; }
  void SkipWs() {
    while (pos_ < in_.size()) {
      char c = in_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }
  bool FailUnexpected() {
    if (AtEnd()) return Fail("unexpected end of input", pos_);
    return Fail("unexpected character " + internal::QuoteForError(in_.substr(pos_, 1)), pos_);
  }
  // With drop_nulls, consumes a null literal (a member or element left out).
  bool SkipNull() {
    if (!drop_nulls_ || in_.substr(pos_, 4) != "null") return false;
    pos_ += 4;
    return true;
  }
  bool DepthOk(int depth, size_t open) {
    if (depth + 1 <= max_depth_) return true;
    return Fail("nesting deeper than the limit of " + std::to_string(max_depth_), open);
  }

  // depth counts the arrays/dicts enclosing the value (tagged objects are leaves).
  bool ParseValue(int depth, Value* out) {
    switch (Peek()) {
      case '{':
        return ParseObject(depth, out);
      case '[':
        return ParseArray(depth, out);
      case '"': {
        std::string s;
        if (!ParseString(&s)) return false;
        *out = Value::String(std::move(s));
        return true;
      }
      case 't':
        if (in_.substr(pos_, 4) == "true") {
          pos_ += 4;
          *out = Value::Bool(true);
          return true;
        }
        return Fail("invalid literal", pos_);
      case 'f':
        if (in_.substr(pos_, 5) == "false") {
          pos_ += 5;
          *out = Value::Bool(false);
          return true;
        }
        return Fail("invalid literal", pos_);
      case 'n':
        if (in_.substr(pos_, 4) == "null")
          return Fail("null is not allowed (plists have no null)", pos_);
        return Fail("invalid literal", pos_);
      default:
        if (Peek() == '-' || (Peek() >= '0' && Peek() <= '9')) return ParseNumber(out);
        return FailUnexpected();
    }
  }

  bool ParseArray(int depth, Value* out) {
    const size_t open = pos_++;
    if (!DepthOk(depth, open)) return false;
    Array a;
    SkipWs();
    if (Peek() == ']') {
      ++pos_;
      *out = Value::MakeArray(std::move(a));
      return true;
    }
    while (true) {
      if (SkipNull()) {
        // left out
      } else {
        a.emplace_back();
        if (!ParseValue(depth + 1, &a.back())) return false;
      }
      SkipWs();
      if (Peek() == ',') {
        ++pos_;
        SkipWs();
        continue;
      }
      if (Peek() == ']') {
        ++pos_;
        break;
      }
      if (AtEnd()) return Fail("unexpected end of input in array", pos_);
      return Fail("expected ',' or ']'", pos_);
    }
    *out = Value::MakeArray(std::move(a));
    return true;
  }

  bool ParseObject(int depth, Value* out) {
    const size_t open = pos_++;
    // Depth is only enforced once the object is known to be a dict (or before descending),
    // so that a tagged {"$data": ...} leaf at the deepest level is accepted.
    bool depth_checked = false;
    auto check_depth = [&] {
      if (depth_checked) return true;
      depth_checked = true;
      return DepthOk(depth, open);
    };
    Dict d;
    size_t first_value_pos = 0;
    size_t members = 0;  // in the text, dropped nulls included
    SkipWs();
    if (Peek() == '}') {
      ++pos_;
    } else {
      while (true) {
        if (Peek() != '"') {
          if (AtEnd()) return Fail("unexpected end of input in object", pos_);
          return Fail("expected a string key", pos_);
        }
        std::string key;
        if (!ParseString(&key)) return false;
        SkipWs();
        if (Peek() != ':') return Fail("expected ':' after object key", pos_);
        ++pos_;
        SkipWs();
        if ((Peek() == '{' || Peek() == '[') && !check_depth()) return false;
        ++members;
        if (SkipNull()) {
          // left out
        } else {
          if (d.empty()) first_value_pos = pos_;
          d.emplace_back(std::move(key), Value());
          if (!ParseValue(depth + 1, &d.back().second)) return false;
        }
        SkipWs();
        if (Peek() == ',') {
          ++pos_;
          SkipWs();
          continue;
        }
        if (Peek() == '}') {
          ++pos_;
          break;
        }
        if (AtEnd()) return Fail("unexpected end of input in object", pos_);
        return Fail("expected ',' or '}'", pos_);
      }
    }
    if (members == 1 && d.size() == 1) {  // a tag is an object with that one member
      std::string& k = d[0].first;
      if (k == "$data" || k == "$date") {
        const std::string* s = d[0].second.AsString();
        if (!s) return Fail(k + " must hold a string", first_value_pos);
        if (k == "$data") {
          std::optional<std::string> bytes = Base64Decode(*s);
          if (!bytes) return Fail("invalid base64 in $data", first_value_pos);
          *out = Value::DataValue(std::move(*bytes));
        } else {
          int64_t secs = 0;
          if (!internal::ParseIsoDate(*s, &secs)) {
            return Fail("invalid RFC 3339 date in $date: " + internal::QuoteForError(*s),
                        first_value_pos);
          }
          *out = Value::DateValue(secs);
        }
        return true;
      }
      if (IsTagLikeKey(k)) k.erase(0, 1);  // "$$data" -> "$data"
    }
    if (!check_depth()) return false;
    internal::DedupeKeys(&d);
    *out = Value::MakeDict(std::move(d));
    return true;
  }

  bool ParseHex4(size_t at, uint32_t* out) {
    if (at + 4 > in_.size()) return false;
    uint32_t v = 0;
    for (size_t i = at; i < at + 4; ++i) {
      int h = HexDigit(in_[i]);
      if (h < 0) return false;
      v = v << 4 | static_cast<uint32_t>(h);
    }
    *out = v;
    return true;
  }

  bool ParseString(std::string* out) {
    const size_t open = pos_++;
    out->clear();
    while (true) {
      size_t i = pos_;
      while (i < in_.size()) {
        unsigned char c = static_cast<unsigned char>(in_[i]);
        if (c == '"' || c == '\\' || c < 0x20) break;
        ++i;
      }
      out->append(in_.data() + pos_, i - pos_);
      pos_ = i;
      if (AtEnd()) return Fail("unterminated string", open);
      const char c = in_[pos_];
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c != '\\') return Fail("unescaped control character in string", pos_);
      if (pos_ + 1 >= in_.size()) return Fail("unterminated string", open);
      const char e = in_[pos_ + 1];
      switch (e) {
        case '"':
          out->push_back('"');
          break;
        case '\\':
          out->push_back('\\');
          break;
        case '/':
          out->push_back('/');
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          if (!ParseHex4(pos_ + 2, &cp)) return Fail("invalid \\u escape", pos_);
          if (cp >= 0xDC00 && cp <= 0xDFFF) return Fail("unpaired low surrogate", pos_);
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo = 0;
            if (pos_ + 7 >= in_.size() || in_[pos_ + 6] != '\\' || in_[pos_ + 7] != 'u' ||
                !ParseHex4(pos_ + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
              return Fail("unpaired high surrogate", pos_);
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            pos_ += 6;
          }
          AppendUtf8(out, cp);
          pos_ += 4;  // the hex digits; the "\u" is skipped below
          break;
        }
        default:
          return Fail("invalid escape character " +
                          internal::QuoteForError(in_.substr(pos_ + 1, 1)) + " after backslash",
                      pos_);
      }
      pos_ += 2;
    }
  }

  bool ParseNumber(Value* out) {
    const size_t start = pos_;
    auto digits = [&] {
      size_t s = pos_;
      while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') ++pos_;
      return pos_ - s;
    };
    if (Peek() == '-') ++pos_;
    if (Peek() == '0') {
      ++pos_;
    } else if (digits() == 0) {
      return Fail("invalid number", start);
    }
    bool integral = true;
    if (Peek() == '.') {
      ++pos_;
      integral = false;
      if (digits() == 0) return Fail("invalid number: digits expected after '.'", start);
    }
    if (Peek() == 'e' || Peek() == 'E') {
      ++pos_;
      integral = false;
      if (Peek() == '+' || Peek() == '-') ++pos_;
      if (digits() == 0) return Fail("invalid number: digits expected in exponent", start);
    }
    const char* first = in_.data() + start;
    const char* last = in_.data() + pos_;
    if (integral) {
      int64_t i = 0;
      auto [p, ec] = std::from_chars(first, last, i);
      if (ec == std::errc() && p == last) {
        *out = Value::Integer(i);
        return true;
      }
      // Out of int64 range: falls through to a real, as documented.
    }
    double d = 0;
    auto [p, ec] = std::from_chars(first, last, d, std::chars_format::general);
    if (ec == std::errc::result_out_of_range) return Fail("number out of double range", start);
    if (ec != std::errc() || p != last) return Fail("invalid number", start);
    *out = Value::Real(d);
    return true;
  }

  std::string_view in_;
  size_t pos_ = 0;
  int max_depth_;
  bool drop_nulls_;
  std::string error_;
};

}  // namespace

std::string ToJson(const Value& v, bool pretty) {
  std::string out;
  out.reserve(512);
  JsonWriter(pretty, &out).Write(v, 0);
  return out;
}

Result<Value> ParseJson(std::string_view json, const Limits& limits) {
  if (json.size() > limits.max_bytes) {
    return Status::TooLarge("json: body of " + std::to_string(json.size()) +
                            " bytes exceeds limit of " + std::to_string(limits.max_bytes));
  }
  if (json.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return Status::InvalidArgument("json: empty body");
  }
  JsonParser parser(json, internal::EffectiveMaxDepth(limits), limits.drop_nulls);
  Value v;
  if (!parser.ParseDocument(&v)) return Status::InvalidArgument(parser.error());
  return v;
}

}  // namespace orchard::plist
