#include "json.h"

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace orchard_webhook {
namespace {

constexpr int kMaxDepth = 256;
constexpr size_t kMaxInput = size_t{64} << 20;

void AppendUtf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

constexpr char kReplacement[] = "\xEF\xBF\xBD";

// Length of the well-formed UTF-8 sequence starting at s[i] (RFC 3629: no
// overlongs, no surrogates, at most U+10FFFF), or 0 if there is none.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  auto cont = [&](size_t k) { return k < s.size() && (b(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xE0 && b(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(i + 1) >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xF0 && b(i + 1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(i + 1) >= 0x90) return 0;  // beyond U+10FFFF
    return 4;
  }
  return 0;
}

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  bool Document(JsonValue* out, std::string* error) {
    if (s_.size() > kMaxInput) return Fail(error, "input too large");
    Ws();
    if (!Value(out, 0)) return Fail(error, error_);
    Ws();
    if (i_ != s_.size()) return Fail(error, "trailing characters");
    return true;
  }

 private:
  bool Fail(std::string* error, const std::string& what) {
    if (error) *error = what + " at byte " + std::to_string(i_);
    return false;
  }
  bool Err(const char* what) {
    error_ = what;
    return false;
  }
  void Ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool Lit(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return Err("invalid literal");
    i_ += word.size();
    return true;
  }

  bool Value(JsonValue* v, int depth) {
    if (depth > kMaxDepth) return Err("nesting too deep");
    if (i_ >= s_.size()) return Err("unexpected end");
    switch (s_[i_]) {
      case '{':
        return Object(v, depth);
      case '[':
        return Array(v, depth);
      case '"':
        v->kind = JsonValue::Kind::kString;
        return String(&v->text);
      case 't':
        v->kind = JsonValue::Kind::kBool;
        v->boolean = true;
        return Lit("true");
      case 'f':
        v->kind = JsonValue::Kind::kBool;
        v->boolean = false;
        return Lit("false");
      case 'n':
        v->kind = JsonValue::Kind::kNull;
        return Lit("null");
      default:
        return Number(v);
    }
  }

  bool Object(JsonValue* v, int depth) {
    v->kind = JsonValue::Kind::kObject;
    ++i_;
    Ws();
    if (i_ < s_.size() && s_[i_] == '}') {
      ++i_;
      return true;
    }
    while (true) {
      Ws();
      if (i_ >= s_.size() || s_[i_] != '"') return Err("expected a member name");
      std::string key;
      if (!String(&key)) return false;
      Ws();
      if (i_ >= s_.size() || s_[i_] != ':') return Err("expected ':'");
      ++i_;
      Ws();
      JsonValue member;
      if (!Value(&member, depth + 1)) return false;
      v->object.emplace_back(std::move(key), std::move(member));
      Ws();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return true;
      }
      return Err("expected ',' or '}'");
    }
  }

  bool Array(JsonValue* v, int depth) {
    v->kind = JsonValue::Kind::kArray;
    ++i_;
    Ws();
    if (i_ < s_.size() && s_[i_] == ']') {
      ++i_;
      return true;
    }
    while (true) {
      Ws();
      JsonValue e;
      if (!Value(&e, depth + 1)) return false;
      v->array.push_back(std::move(e));
      Ws();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return true;
      }
      return Err("expected ',' or ']'");
    }
  }

  bool Hex4(uint32_t* out) {
    if (i_ + 4 > s_.size()) return Err("short \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_ + k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= uint32_t(c - 'A' + 10);
      else return Err("bad \\u escape");
    }
    i_ += 4;
    *out = v;
    return true;
  }

  bool String(std::string* out) {
    ++i_;  // opening quote
    while (true) {
      if (i_ >= s_.size()) return Err("unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return Err("control character in string");
      if (c == '\\') {
        if (++i_ >= s_.size()) return Err("unterminated escape");
        const char e = s_[i_++];
        switch (e) {
          case '"': out->push_back('"'); break;
          case '\\': out->push_back('\\'); break;
          case '/': out->push_back('/'); break;
          case 'b': out->push_back('\b'); break;
          case 'f': out->push_back('\f'); break;
          case 'n': out->push_back('\n'); break;
          case 'r': out->push_back('\r'); break;
          case 't': out->push_back('\t'); break;
          case 'u': {
            uint32_t cp;
            if (!Hex4(&cp)) return false;
            if (cp >= 0xD800 && cp <= 0xDBFF && s_.substr(i_, 2) == "\\u") {
              const size_t save = i_;
              i_ += 2;
              uint32_t lo;
              if (!Hex4(&lo)) return false;
              if (lo >= 0xDC00 && lo <= 0xDFFF) {
                AppendUtf8(out, 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00));
                break;
              }
              i_ = save;  // lone high surrogate; the next escape stands alone
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) out->append(kReplacement);
            else AppendUtf8(out, cp);
            break;
          }
          default:
            return Err("bad escape");
        }
        continue;
      }
      const size_t n = Utf8SequenceLength(s_, i_);
      if (n == 0) {
        out->append(kReplacement);
        ++i_;
      } else {
        out->append(s_.data() + i_, n);
        i_ += n;
      }
    }
  }

  bool Number(JsonValue* v) {
    const size_t start = i_;
    auto digits = [&] {
      const size_t d = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ > d;
    };
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ < s_.size() && s_[i_] == '0') {
      ++i_;
    } else if (!digits()) {
      return Err("unexpected character");
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (!digits()) return Err("bad number");
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (!digits()) return Err("bad number");
    }
    v->kind = JsonValue::Kind::kNumber;
    v->text.assign(s_.data() + start, i_ - start);
    return true;
  }

  std::string_view s_;
  size_t i_ = 0;
  std::string error_ = "malformed";
};

void AppendXmlEscaped(std::string* out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '&': out->append("&amp;"); break;
      case '<': out->append("&lt;"); break;
      case '>': out->append("&gt;"); break;
      case '\r': out->append("&#13;"); break;
      default: out->push_back(c);
    }
  }
}

// A single-member object {"$data": "..."} / {"$date": "..."}: the plist type
// it stands for, or nullptr.
const JsonValue* Tagged(const JsonValue& v, std::string_view tag) {
  if (v.kind != JsonValue::Kind::kObject || v.object.size() != 1) return nullptr;
  const auto& [k, m] = v.object.front();
  return k == tag && m.kind == JsonValue::Kind::kString ? &m : nullptr;
}

void WritePlist(const JsonValue& v, int indent, std::string* out) {
  out->append(static_cast<size_t>(indent), '\t');
  switch (v.kind) {
    case JsonValue::Kind::kNull:
      out->append("<string></string>\n");  // only reachable inside arrays
      return;
    case JsonValue::Kind::kBool:
      out->append(v.boolean ? "<true/>\n" : "<false/>\n");
      return;
    case JsonValue::Kind::kString:
      out->append("<string>");
      AppendXmlEscaped(out, v.text);
      out->append("</string>\n");
      return;
    case JsonValue::Kind::kNumber: {
      const bool real = v.text.find_first_of(".eE") != std::string::npos;
      if (!real) {
        out->append("<integer>").append(v.text).append("</integer>\n");
        return;
      }
      double d = 0;
      auto [p, ec] = std::from_chars(v.text.data(), v.text.data() + v.text.size(), d);
      char buf[64];
      auto r = std::to_chars(buf, buf + sizeof buf, d);
      out->append("<real>");
      if (ec == std::errc() && r.ec == std::errc()) out->append(buf, r.ptr);
      else out->append(v.text);
      out->append("</real>\n");
      (void)p;
      return;
    }
    case JsonValue::Kind::kArray:
      if (v.array.empty()) {
        out->append("<array/>\n");
        return;
      }
      out->append("<array>\n");
      for (const auto& e : v.array) WritePlist(e, indent + 1, out);
      out->append(static_cast<size_t>(indent), '\t');
      out->append("</array>\n");
      return;
    case JsonValue::Kind::kObject: {
      if (const JsonValue* d = Tagged(v, "$data")) {
        out->append("<data>").append(d->text).append("</data>\n");
        return;
      }
      if (const JsonValue* d = Tagged(v, "$date")) {
        out->append("<date>");
        AppendXmlEscaped(out, d->text);
        out->append("</date>\n");
        return;
      }
      size_t members = 0;
      for (const auto& m : v.object) members += m.second.kind != JsonValue::Kind::kNull;
      if (members == 0) {
        out->append("<dict/>\n");
        return;
      }
      out->append("<dict>\n");
      for (const auto& [k, m] : v.object) {
        if (m.kind == JsonValue::Kind::kNull) continue;
        out->append(static_cast<size_t>(indent + 1), '\t');
        out->append("<key>");
        AppendXmlEscaped(out, k);
        out->append("</key>\n");
        WritePlist(m, indent + 1, out);
      }
      out->append(static_cast<size_t>(indent), '\t');
      out->append("</dict>\n");
      return;
    }
  }
}

}  // namespace

const JsonValue* JsonValue::Find(std::string_view key) const {
  if (kind != Kind::kObject) return nullptr;
  for (const auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

bool ParseJson(std::string_view in, JsonValue* out, std::string* error) {
  *out = JsonValue();
  Parser p(in);
  return p.Document(out, error);
}

void AppendJsonString(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t n = Utf8SequenceLength(s, i);
      if (n == 0) {
        out->append(kReplacement);
        ++i;
      } else {
        out->append(s.data() + i, n);
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      default:
        if (c < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 0xF]);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out->push_back('"');
}

void AppendJson(std::string* out, const JsonValue& v) {
  switch (v.kind) {
    case JsonValue::Kind::kNull: out->append("null"); return;
    case JsonValue::Kind::kBool: out->append(v.boolean ? "true" : "false"); return;
    case JsonValue::Kind::kNumber: out->append(v.text); return;
    case JsonValue::Kind::kString: AppendJsonString(out, v.text); return;
    case JsonValue::Kind::kArray:
      out->push_back('[');
      for (size_t i = 0; i < v.array.size(); ++i) {
        if (i) out->push_back(',');
        AppendJson(out, v.array[i]);
      }
      out->push_back(']');
      return;
    case JsonValue::Kind::kObject:
      out->push_back('{');
      for (size_t i = 0; i < v.object.size(); ++i) {
        if (i) out->push_back(',');
        AppendJsonString(out, v.object[i].first);
        out->push_back(':');
        AppendJson(out, v.object[i].second);
      }
      out->push_back('}');
      return;
  }
}

std::string Base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t n = b(i) << 16 | b(i + 1) << 8 | b(i + 2);
    out.push_back(kAlphabet[n >> 18]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(kAlphabet[(n >> 6) & 63]);
    out.push_back(kAlphabet[n & 63]);
  }
  if (const size_t rest = bytes.size() - i; rest > 0) {
    const uint32_t n = b(i) << 16 | (rest == 2 ? b(i + 1) << 8 : 0);
    out.push_back(kAlphabet[n >> 18]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string PlistXmlFromJson(const JsonValue& v) {
  std::string out =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
      "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
      "<plist version=\"1.0\">\n";
  WritePlist(v, 0, &out);
  out.append("</plist>\n");
  return out;
}

std::string Rfc3339Millis(int64_t unix_ms) {
  int64_t secs = unix_ms / 1000;
  int64_t ms = unix_ms % 1000;
  if (ms < 0) {
    ms += 1000;
    --secs;
  }
  const time_t t = static_cast<time_t>(secs);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[96];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::string Hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    out.push_back(kHex[static_cast<unsigned char>(c) >> 4]);
    out.push_back(kHex[static_cast<unsigned char>(c) & 0xF]);
  }
  return out;
}

}  // namespace orchard_webhook
