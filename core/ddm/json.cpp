#include "ddm/json.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <numeric>
#include <utility>

#include "util/utf8.h"

namespace orchard::ddm::json {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// Recursive descent over the text; recursion is bounded by max_depth (at most
// kMaxDepth). Never throws on input.
class Parser {
 public:
  Parser(std::string_view in, const ParseOptions& options)
      : in_(in), options_(options), max_depth_(std::min(options.max_depth, kMaxDepth)) {}

  bool Document(Value* out) {
    SkipWs();
    if (AtEnd()) return Fail("empty document", pos_);
    if (!ParseValue(0, out)) return false;
    SkipWs();
    if (!AtEnd()) return Fail("trailing characters after the value", pos_);
    return true;
  }

  const std::string& error() const { return error_; }

 private:
  bool Fail(std::string what, size_t at) {
    error_ = "json: " + std::move(what) + " at offset " + std::to_string(at);
    return false;
  }
  char Peek() const { return pos_ < in_.size() ? in_[pos_] : '\0'; }
  bool AtEnd() const { return pos_ >= in_.size(); }
  void SkipWs() {
    while (pos_ < in_.size() && (in_[pos_] == ' ' || in_[pos_] == '\t' || in_[pos_] == '\n' || in_[pos_] == '\r'))
      ++pos_;
  }
  // depth: the containers around the one opening here.
  bool Enter(size_t depth) {
    if (depth >= max_depth_) return Fail("nesting deeper than the limit of " + std::to_string(max_depth_), pos_);
    ++pos_;
    SkipWs();
    return true;
  }

  bool ParseValue(size_t depth, Value* out) {
    const char c = Peek();
    if (c == '{') {
      out->type = Type::kObject;
      return Enter(depth) && Members(depth, &out->members);
    }
    if (c == '[') {
      out->type = Type::kArray;
      return Enter(depth) && Elements(depth, &out->elements);
    }
    if (c == '"') {
      out->type = Type::kString;
      return String(&out->text);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      out->type = Type::kNumber;
      return Number(&out->text);
    }
    for (const std::string_view lit : {"true", "false", "null"}) {
      if (in_.substr(pos_, lit.size()) == lit) {
        pos_ += lit.size();
        out->type = lit == "null" ? Type::kNull : Type::kBool;
        out->boolean = lit == "true";
        return true;
      }
    }
    if (AtEnd()) return Fail("unexpected end of input", pos_);
    return Fail("unexpected character " + Excerpt(in_.substr(pos_, 1)), pos_);
  }

  // After '[': the elements up to and including ']'.
  bool Elements(size_t depth, std::vector<Value>* out) {
    if (Peek() == ']') {
      ++pos_;
      return true;
    }
    while (true) {
      out->emplace_back();
      if (!ParseValue(depth + 1, &out->back())) return false;
      SkipWs();
      if (Peek() == ',') {
        ++pos_;
        SkipWs();
        continue;
      }
      if (Peek() == ']') {
        ++pos_;
        return true;
      }
      if (AtEnd()) return Fail("unexpected end of input in array", pos_);
      return Fail("expected ',' or ']'", pos_);
    }
  }

  // After '{': the members up to and including '}'.
  bool Members(size_t depth, std::vector<Member>* out) {
    if (Peek() == '}') {
      ++pos_;
      return true;
    }
    std::vector<size_t> offsets;
    while (true) {
      if (Peek() != '"') {
        if (AtEnd()) return Fail("unexpected end of input in object", pos_);
        return Fail("expected a string key", pos_);
      }
      offsets.push_back(pos_);
      Member m;
      if (!String(&m.key)) return false;
      SkipWs();
      if (Peek() != ':') return Fail("expected ':' after object key", pos_);
      ++pos_;
      SkipWs();
      if (!ParseValue(depth + 1, &m.value)) {
        if (options_.label_top_members && depth == 0) error_ = KeyLabel(m.key) + ": " + error_;
        return false;
      }
      out->push_back(std::move(m));
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
    return Dedupe(offsets, out);
  }

  // Duplicate keys (refused, or the last value kept at the first one's place),
  // then the order.
  bool Dedupe(const std::vector<size_t>& offsets, std::vector<Member>* members) {
    std::vector<Member>& ms = *members;
    std::vector<size_t> order(ms.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return ms[a].key != ms[b].key ? ms[a].key < ms[b].key : a < b; });
    std::vector<char> keep(ms.size(), 1);
    size_t dups = 0;
    for (size_t i = 1, first = order.empty() ? 0 : order[0]; i < order.size(); ++i) {
      if (ms[order[i]].key != ms[first].key) {
        first = order[i];
        continue;
      }
      if (options_.duplicates == Duplicates::kRefuse)
        return Fail("duplicate key " + Excerpt(ms[order[i]].key), offsets[order[i]]);
      ms[first].value = std::move(ms[order[i]].value);
      keep[order[i]] = 0;
      ++dups;
    }
    if (dups == 0 && !options_.sort_members) return true;
    std::vector<Member> out;
    out.reserve(ms.size() - dups);
    if (options_.sort_members) {
      for (size_t i : order)
        if (keep[i]) out.push_back(std::move(ms[i]));
    } else {
      for (size_t i = 0; i < ms.size(); ++i)
        if (keep[i]) out.push_back(std::move(ms[i]));
    }
    ms = std::move(out);
    return true;
  }

  bool Hex4(size_t at, uint32_t* out) const {
    if (at + 4 > in_.size()) return false;
    uint32_t v = 0;
    for (size_t i = at; i < at + 4; ++i) {
      const char c = in_[i];
      int h = -1;
      if (c >= '0' && c <= '9') h = c - '0';
      else if (c >= 'a' && c <= 'f') h = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') h = c - 'A' + 10;
      if (h < 0) return false;
      v = v << 4 | static_cast<uint32_t>(h);
    }
    *out = v;
    return true;
  }

  bool String(std::string* out) {
    const size_t open = pos_++;
    while (true) {
      size_t i = pos_;
      while (i < in_.size()) {
        const unsigned char c = static_cast<unsigned char>(in_[i]);
        if (c == '"' || c == '\\' || c < 0x20) break;
        if (c >= 0x80) {
          const size_t n = Utf8Length(in_, i);
          if (n == 0) return Fail("invalid UTF-8 in string", i);
          i += n;
          continue;
        }
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
      switch (in_[pos_ + 1]) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!Hex4(pos_ + 2, &cp)) return Fail("invalid \\u escape", pos_);
          if (cp >= 0xDC00 && cp <= 0xDFFF) return Fail("unpaired low surrogate", pos_);
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo = 0;
            if (pos_ + 7 >= in_.size() || in_[pos_ + 6] != '\\' || in_[pos_ + 7] != 'u' || !Hex4(pos_ + 8, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
              return Fail("unpaired high surrogate", pos_);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            pos_ += 6;
          }
          AppendUtf8(out, cp);
          pos_ += 4;  // the hex digits; "\u" is skipped below
          break;
        }
        default:
          return Fail("invalid escape " + Excerpt(in_.substr(pos_, 2)), pos_);
      }
      pos_ += 2;
    }
  }

  // The number's canonical text.
  bool Number(std::string* out) {
    const size_t start = pos_;
    auto digits = [&] {
      const size_t s = pos_;
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
      if (digits() == 0) return Fail("invalid number: digits expected in the exponent", start);
    }
    const std::string_view text = in_.substr(start, pos_ - start);
    if (integral) {
      out->assign(text);
      return true;
    }
    double d = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), d, std::chars_format::general);
    if (ec == std::errc::result_out_of_range) return Fail("number out of range", start);
    if (ec != std::errc() || p != text.data() + text.size()) return Fail("invalid number", start);
    char buf[64];
    auto [end, ec2] = std::to_chars(buf, buf + sizeof buf, d);
    if (ec2 != std::errc()) return Fail("invalid number", start);
    out->assign(buf, end);
    if (out->find_first_of(".e") == std::string::npos) out->append(".0");
    return true;
  }

  // A key as it starts an error message: bare when alphanumeric.
  static std::string KeyLabel(const std::string& key) {
    const bool plain = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    });
    return plain ? key : Excerpt(key);
  }

  std::string_view in_;
  const ParseOptions& options_;
  size_t max_depth_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace

const Value* Value::Find(std::string_view key) const {
  for (const Member& m : members)
    if (m.key == key) return &m.value;
  return nullptr;
}

Result<Value> Parse(std::string_view text, const ParseOptions& options) {
  Parser p(text, options);
  Value v;
  if (!p.Document(&v)) return Status::InvalidArgument(p.error());
  return v;
}

void AppendCanonical(std::string* out, const Value& v) {
  switch (v.type) {
    case Type::kNull: out->append("null"); return;
    case Type::kBool: out->append(v.boolean ? "true" : "false"); return;
    case Type::kNumber: out->append(v.text); return;
    case Type::kString: AppendQuoted(out, v.text); return;
    case Type::kArray:
      out->push_back('[');
      for (size_t i = 0; i < v.elements.size(); ++i) {
        if (i) out->push_back(',');
        AppendCanonical(out, v.elements[i]);
      }
      out->push_back(']');
      return;
    case Type::kObject: {
      std::vector<const Member*> sorted(v.members.size());
      for (size_t i = 0; i < sorted.size(); ++i) sorted[i] = &v.members[i];
      std::stable_sort(sorted.begin(), sorted.end(), [](const Member* a, const Member* b) { return a->key < b->key; });
      out->push_back('{');
      for (size_t i = 0; i < sorted.size(); ++i) {
        if (i) out->push_back(',');
        AppendQuoted(out, sorted[i]->key);
        out->push_back(':');
        AppendCanonical(out, sorted[i]->value);
      }
      out->push_back('}');
      return;
    }
  }
}

std::string Canonical(const Value& v) {
  std::string out;
  AppendCanonical(&out, v);
  return out;
}

void AppendQuoted(std::string* out, std::string_view s) {
  out->push_back('"');
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20) {
          const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
          out->append(esc, sizeof esc);
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
}

std::string Quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  AppendQuoted(&out, s);
  return out;
}

std::string Excerpt(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out.append("\\x");
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  if (s.size() > 40) out.append("...");
  out.push_back('"');
  return out;
}

}  // namespace orchard::ddm::json
