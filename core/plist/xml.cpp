// XML plist codec. Parsing uses pugixml (iterative, non-validating, no entity expansion
// beyond the predefined and numeric ones); the DOM is then converted by a recursive walk
// whose depth is checked before each descent.
#include <algorithm>
#include <charconv>
#include <cstring>
#include <pugixml.hpp>
#include <vector>

#include "plist/plist.h"
#include "plist/plist_internal.h"
#include "util/utf8.h"
#include "util/encoding.h"

namespace orchard::plist {
namespace {

using internal::IsXmlSpace;

// Whitespace-only text is kept (parse_ws_pcdata) so that <string> </string> is " ".
constexpr unsigned kParseOptions =
    pugi::parse_cdata | pugi::parse_escapes | pugi::parse_eol | pugi::parse_ws_pcdata;

constexpr std::string_view kHeader =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
    "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
    "<plist version=\"1.0\">\n";
constexpr std::string_view kFooter = "</plist>\n";

bool NameIs(pugi::xml_node n, const char* s) { return std::strcmp(n.name(), s) == 0; }

bool IsText(pugi::xml_node n) {
  return n.type() == pugi::node_pcdata || n.type() == pugi::node_cdata;
}

bool IsBlank(const char* s) {
  for (; *s; ++s) {
    if (!IsXmlSpace(*s)) return false;
  }
  return true;
}

// Concatenated character data of an element (ignores nested elements; only for messages).
std::string TextForMessage(pugi::xml_node n) {
  std::string s;
  for (pugi::xml_node c = n.first_child(); c; c = c.next_sibling()) {
    if (IsText(c)) s += c.value();
  }
  return s;
}

std::string PathSegment(std::string_view s) {
  constexpr size_t kMax = 64;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out += c < 0x20 || c == 0x7f ? '?' : static_cast<char>(c);
  }
  if (s.size() > kMax) out += "...";
  return out;
}

// Location of an element for error messages: the root value is "/<name>", a dict member
// adds "/<key>", an array element adds "/<index>". Only computed on failure.
std::string PathOf(pugi::xml_node n) {
  if (NameIs(n, "plist") && n.parent().type() == pugi::node_document) return "/plist";
  std::vector<std::string> segs;
  for (pugi::xml_node cur = n; cur; cur = cur.parent()) {
    pugi::xml_node p = cur.parent();
    if (!p || p.type() != pugi::node_element || NameIs(p, "plist")) {
      segs.push_back(cur.name());
      break;
    }
    if (NameIs(p, "dict")) {
      pugi::xml_node k = cur.previous_sibling();
      while (k && k.type() != pugi::node_element) k = k.previous_sibling();
      segs.push_back(k && NameIs(k, "key") ? PathSegment(TextForMessage(k)) : "?");
    } else if (NameIs(p, "array")) {
      size_t index = 0;
      for (pugi::xml_node s = cur.previous_sibling(); s; s = s.previous_sibling()) {
        if (s.type() == pugi::node_element) ++index;
      }
      segs.push_back(std::to_string(index));
    } else {
      segs.push_back(cur.name());
    }
  }
  std::string out;
  for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
    out += '/';
    out += *it;
  }
  return out;
}

class XmlToValue {
 public:
  explicit XmlToValue(int max_depth) : max_depth_(max_depth) {}

  // Converts the value element el; depth counts the arrays/dicts enclosing it.
  bool Convert(pugi::xml_node el, int depth, Value* out);
  const std::string& error() const { return error_; }

 private:
  bool Fail(std::string msg) {
    error_ = "plist: " + std::move(msg);
    return false;
  }
  bool ScalarFail(pugi::xml_node el, std::string_view what, std::string_view text) {
    return Fail("<" + std::string(el.name()) + "> at " + PathOf(el) + ": " + std::string(what) +
                ": " + internal::QuoteForError(text));
  }
  // The character data of el; fails when el contains an element.
  bool Text(pugi::xml_node el, std::string_view* view);
  bool ConvertDict(pugi::xml_node el, int depth, Value* out);
  bool ConvertArray(pugi::xml_node el, int depth, Value* out);
  bool CheckDepth(pugi::xml_node el, int depth) {
    if (depth + 1 <= max_depth_) return true;
    return Fail("nesting deeper than the limit of " + std::to_string(max_depth_) + " at " +
                PathOf(el));
  }

  int max_depth_;
  std::string scratch_;
  std::string error_;
};

bool XmlToValue::Text(pugi::xml_node el, std::string_view* view) {
  pugi::xml_node c = el.first_child();
  if (!c) {
    *view = {};
    return true;
  }
  if (!c.next_sibling() && IsText(c)) {
    *view = c.value();
    return true;
  }
  scratch_.clear();
  for (; c; c = c.next_sibling()) {
    if (IsText(c)) {
      scratch_ += c.value();
    } else if (c.type() == pugi::node_element) {
      return Fail("unexpected element <" + std::string(c.name()) + "> inside <" + el.name() +
                  "> at " + PathOf(el));
    }
  }
  *view = scratch_;
  return true;
}

bool XmlToValue::ConvertDict(pugi::xml_node el, int depth, Value* out) {
  if (!CheckDepth(el, depth)) return false;
  Dict dict;
  std::string key;
  pugi::xml_node key_el;
  for (pugi::xml_node c = el.first_child(); c; c = c.next_sibling()) {
    if (IsText(c)) {
      if (!IsBlank(c.value())) {
        return Fail("unexpected text " + internal::QuoteForError(c.value()) + " in <dict> at " +
                    PathOf(el));
      }
      continue;
    }
    if (c.type() != pugi::node_element) continue;
    if (!key_el) {
      if (!NameIs(c, "key")) {
        return Fail("<" + std::string(c.name()) + "> without a preceding <key> in <dict> at " +
                    PathOf(el));
      }
      std::string_view k;
      if (!Text(c, &k)) return false;
      key.assign(k);
      key_el = c;
      continue;
    }
    if (NameIs(c, "key")) {
      return Fail("<key> " + internal::QuoteForError(key) + " has no value in <dict> at " +
                  PathOf(el));
    }
    Value v;
    if (!Convert(c, depth + 1, &v)) return false;
    dict.emplace_back(std::move(key), std::move(v));
    key.clear();
    key_el = pugi::xml_node();
  }
  if (key_el) {
    return Fail("<key> " + internal::QuoteForError(key) + " has no value in <dict> at " +
                PathOf(el));
  }
  internal::DedupeKeys(&dict);
  *out = Value::MakeDict(std::move(dict));
  return true;
}

bool XmlToValue::ConvertArray(pugi::xml_node el, int depth, Value* out) {
  if (!CheckDepth(el, depth)) return false;
  Array arr;
  for (pugi::xml_node c = el.first_child(); c; c = c.next_sibling()) {
    if (IsText(c)) {
      if (!IsBlank(c.value())) {
        return Fail("unexpected text " + internal::QuoteForError(c.value()) + " in <array> at " +
                    PathOf(el));
      }
      continue;
    }
    if (c.type() != pugi::node_element) continue;
    arr.emplace_back();
    if (!Convert(c, depth + 1, &arr.back())) return false;
  }
  *out = Value::MakeArray(std::move(arr));
  return true;
}

bool XmlToValue::Convert(pugi::xml_node el, int depth, Value* out) {
  const char* name = el.name();
  std::string_view text;
  switch (name[0]) {
    case 'd':
      if (std::strcmp(name, "dict") == 0) return ConvertDict(el, depth, out);
      if (std::strcmp(name, "data") == 0) {
        if (!Text(el, &text)) return false;
        std::optional<std::string> bytes = Base64Decode(text);
        if (!bytes) return ScalarFail(el, "invalid base64", internal::TrimXmlSpace(text));
        *out = Value::DataValue(std::move(*bytes));
        return true;
      }
      if (std::strcmp(name, "date") == 0) {
        if (!Text(el, &text)) return false;
        int64_t secs = 0;
        if (!internal::ParseIsoDate(internal::TrimXmlSpace(text), &secs)) {
          return ScalarFail(el, "not an ISO 8601 date", text);
        }
        *out = Value::DateValue(secs);
        return true;
      }
      break;
    case 'a':
      if (std::strcmp(name, "array") == 0) return ConvertArray(el, depth, out);
      break;
    case 's':
      if (std::strcmp(name, "string") == 0) {
        if (!Text(el, &text)) return false;
        *out = Value::String(std::string(text));
        return true;
      }
      break;
    case 'i':
      if (std::strcmp(name, "integer") == 0) {
        if (!Text(el, &text)) return false;
        int64_t i = 0;
        switch (internal::ParseInteger(text, &i)) {
          case 0:
            *out = Value::Integer(i);
            return true;
          case 2:
            return ScalarFail(el, "out of 64-bit integer range", text);
          default:
            return ScalarFail(el, "not a 64-bit integer", text);
        }
      }
      break;
    case 'r':
      if (std::strcmp(name, "real") == 0) {
        if (!Text(el, &text)) return false;
        double d = 0;
        switch (internal::ParseReal(text, &d)) {
          case 0:
            *out = Value::Real(d);
            return true;
          case 2:
            return ScalarFail(el, "out of double range", text);
          default:
            return ScalarFail(el, "not a real number", text);
        }
      }
      break;
    case 't':
    case 'f': {
      bool is_true = std::strcmp(name, "true") == 0;
      if (!is_true && std::strcmp(name, "false") != 0) break;
      if (!Text(el, &text)) return false;
      if (!internal::TrimXmlSpace(text).empty()) return ScalarFail(el, "must be empty", text);
      *out = Value::Bool(is_true);
      return true;
    }
    default:
      break;
  }
  return Fail("unexpected element <" + std::string(name) + "> at " + PathOf(el));
}

void AppendEscaped(std::string* out, std::string_view s) {
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    std::string_view rep;
    switch (s[i]) {
      case '&':
        rep = "&amp;";
        break;
      case '<':
        rep = "&lt;";
        break;
      case '>':
        rep = "&gt;";
        break;
      case '\r':
        rep = "&#13;";
        break;  // would otherwise be normalized away by XML readers
      default:
        continue;
    }
    out->append(s.data() + start, i - start);
    out->append(rep);
    start = i + 1;
  }
  out->append(s.data() + start, s.size() - start);
}

void WriteXml(const Value& v, int indent, std::string* out) {
  out->append(static_cast<size_t>(indent), '\t');
  switch (v.type()) {
    case Type::kString:
      out->append("<string>");
      AppendEscaped(out, *v.AsString());
      out->append("</string>\n");
      return;
    case Type::kInteger: {
      char buf[24];
      auto [p, ec] = std::to_chars(buf, buf + sizeof buf, *v.AsInteger());
      out->append("<integer>");
      out->append(buf, p);
      out->append("</integer>\n");
      return;
    }
    case Type::kReal:
      out->append("<real>");
      internal::AppendReal(out, *v.AsReal(), /*force_fraction=*/false);
      out->append("</real>\n");
      return;
    case Type::kBool:
      out->append(*v.AsBool() ? "<true/>\n" : "<false/>\n");
      return;
    case Type::kDate:
      out->append("<date>");
      internal::AppendIsoDate(out, v.AsDate()->unix_seconds);
      out->append("</date>\n");
      return;
    case Type::kData:
      out->append("<data>");
      internal::AppendBase64(out, v.AsData()->bytes);
      out->append("</data>\n");
      return;
    case Type::kArray: {
      const Array& a = *v.AsArray();
      if (a.empty()) {
        out->append("<array/>\n");
        return;
      }
      out->append("<array>\n");
      for (const Value& e : a) WriteXml(e, indent + 1, out);
      out->append(static_cast<size_t>(indent), '\t');
      out->append("</array>\n");
      return;
    }
    case Type::kDict: {
      const Dict& d = *v.AsDict();
      if (d.empty()) {
        out->append("<dict/>\n");
        return;
      }
      out->append("<dict>\n");
      for (const auto& [k, e] : d) {
        out->append(static_cast<size_t>(indent + 1), '\t');
        out->append("<key>");
        AppendEscaped(out, k);
        out->append("</key>\n");
        WriteXml(e, indent + 1, out);
      }
      out->append(static_cast<size_t>(indent), '\t');
      out->append("</dict>\n");
      return;
    }
  }
}

}  // namespace

namespace {

// Scanner behind CheckXmlText: one forward pass over the bytes.
class XmlTextChecker {
 public:
  explicit XmlTextChecker(std::string_view xml) : s_(xml) {}

  Status Run() {
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") i_ = 3;
    while (i_ < s_.size()) {
      const char c = s_[i_];
      if (c == '<') {
        Status st = Markup();
        if (!st.ok()) return st;
      } else if (c == '&') {
        Status st = Reference();
        if (!st.ok()) return st;
      } else {
        Status st = Char();
        if (!st.ok()) return st;
      }
    }
    return Status::Ok();
  }

 private:
  Status Fail(const std::string& what, size_t at) const {
    size_t line = 1;
    for (size_t k = 0; k < at && k < s_.size(); ++k) line += s_[k] == '\n';
    return Status::InvalidArgument("plist: " + what + " at line " + std::to_string(line) +
                                   " (byte offset " + std::to_string(at) + ")");
  }
  bool At(std::string_view lit) const { return s_.substr(i_, lit.size()) == lit; }

  // One character of text; advances past it.
  Status Char() {
    uint32_t cp = 0;
    const size_t n = DecodeUtf8(s_, i_, &cp);
    if (n == 0) {
      static constexpr char kHex[] = "0123456789abcdef";
      const unsigned char b = static_cast<unsigned char>(s_[i_]);
      return Fail(std::string("invalid UTF-8 (byte 0x") + kHex[b >> 4] + kHex[b & 15] + ")", i_);
    }
    if (!internal::IsXmlChar(cp))
      return Fail("character " + internal::CodePointName(cp) + ", which XML 1.0 does not allow", i_);
    i_ += n;
    return Status::Ok();
  }

  // Characters up to and past the terminator (comment, CDATA, processing instruction).
  // Unterminated: checks to the end and leaves the error to the parser.
  Status SkipTo(std::string_view end) {
    const size_t e = s_.find(end, i_);
    const size_t stop = e == std::string_view::npos ? s_.size() : e;
    while (i_ < stop) {
      Status st = Char();
      if (!st.ok()) return st;
    }
    if (e != std::string_view::npos) i_ = e + end.size();
    return Status::Ok();
  }

  Status Markup() {
    if (At("<!--")) {
      i_ += 4;
      return SkipTo("-->");
    }
    if (At("<![CDATA[")) {
      i_ += 9;
      return SkipTo("]]>");
    }
    if (At("<?")) {
      i_ += 2;
      return SkipTo("?>");
    }
    if (At("<!DOCTYPE")) return Doctype();
    if (At("<!")) {
      std::string_view name = s_.substr(i_, 10);
      return Fail("markup declaration " + internal::QuoteForError(name.substr(0, name.find_first_of(" \t\r\n"))) +
                      " (entity and other declarations are not allowed)",
                  i_);
    }
    ++i_;
    return Status::Ok();
  }

  // <!DOCTYPE name PUBLIC "pubid" "system"> is fine; an internal subset [...] is not.
  Status Doctype() {
    const size_t start = i_;
    i_ += 9;
    while (i_ < s_.size()) {
      const char c = s_[i_];
      if (c == '>') {
        ++i_;
        return Status::Ok();
      }
      if (c == '[')
        return Fail("internal DTD subset in <!DOCTYPE> (declarations such as <!ENTITY are not allowed)", i_);
      if (c == '"' || c == '\'') {
        const size_t e = s_.find(c, i_ + 1);
        ++i_;
        const size_t stop = e == std::string_view::npos ? s_.size() : e;
        while (i_ < stop) {
          Status st = Char();
          if (!st.ok()) return st;
        }
        if (e != std::string_view::npos) i_ = e + 1;
        continue;
      }
      Status st = Char();
      if (!st.ok()) return st;
    }
    return Fail("unterminated <!DOCTYPE>", start);
  }

  // &name; or &#N; or &#xH; at i_.
  Status Reference() {
    const size_t start = i_;
    constexpr size_t kMaxRef = 16;  // longest reference looked for: bounds the search
    const size_t rel = s_.substr(start + 1, kMaxRef).find(';');
    if (rel == std::string_view::npos)
      return Fail("'&' that does not start a reference (write &amp;)", start);
    const size_t semi = start + 1 + rel;
    std::string_view body = s_.substr(start + 1, semi - start - 1);
    if (!body.empty() && body[0] == '#') {
      const bool hex = body.size() > 1 && body[1] == 'x';
      std::string_view digits = body.substr(hex ? 2 : 1);
      uint64_t v = 0;
      bool ok = !digits.empty();
      for (char d : digits) {
        int h = -1;
        if (d >= '0' && d <= '9') h = d - '0';
        else if (hex && d >= 'a' && d <= 'f') h = d - 'a' + 10;
        else if (hex && d >= 'A' && d <= 'F') h = d - 'A' + 10;
        if (h < 0) {
          ok = false;
          break;
        }
        v = v * (hex ? 16 : 10) + static_cast<uint64_t>(h);
        if (v > 0x10FFFF) v = 0x110000;  // saturate: out of range either way
      }
      if (!ok) return Fail("malformed character reference " + internal::QuoteForError(s_.substr(start, semi - start + 1)), start);
      if (!internal::IsXmlChar(static_cast<uint32_t>(v))) {
        std::string name = v > 0x10FFFF ? std::string("a code point above U+10FFFF")
                                        : internal::CodePointName(static_cast<uint32_t>(v));
        return Fail("character reference " + internal::QuoteForError(s_.substr(start, semi - start + 1)) +
                        " to " + name + ", which XML 1.0 does not allow",
                    start);
      }
    } else if (body != "lt" && body != "gt" && body != "amp" && body != "quot" && body != "apos") {
      return Fail("undefined entity reference " + internal::QuoteForError(s_.substr(start, semi - start + 1)) +
                      " (only &lt; &gt; &amp; &quot; &apos; and character references are allowed)",
                  start);
    }
    i_ = semi + 1;
    return Status::Ok();
  }

  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

Status CheckXmlText(std::string_view xml) { return XmlTextChecker(xml).Run(); }

Result<Value> ParseXml(std::string_view xml, const Limits& limits) {
  if (xml.size() > limits.max_bytes) {
    return Status::TooLarge("plist: body of " + std::to_string(xml.size()) +
                            " bytes exceeds limit of " + std::to_string(limits.max_bytes));
  }
  size_t bom = 0;
  if (xml.size() >= 3 && xml.substr(0, 3) == "\xEF\xBB\xBF") bom = 3;
  xml.remove_prefix(bom);
  if (internal::TrimXmlSpace(xml).empty()) return Status::InvalidArgument("plist: empty body");
  if (const void* nul = std::memchr(xml.data(), 0, xml.size())) {
    size_t off = static_cast<const char*>(nul) - xml.data() + bom;
    return Status::InvalidArgument("plist: NUL byte at offset " + std::to_string(off));
  }

  pugi::xml_document doc;
  pugi::xml_parse_result r =
      doc.load_buffer(xml.data(), xml.size(), kParseOptions, pugi::encoding_utf8);
  if (!r) {
    return Status::InvalidArgument("plist: not well-formed XML at offset " +
                                   std::to_string(static_cast<size_t>(r.offset) + bom) + ": " +
                                   r.description());
  }

  pugi::xml_node root;
  for (pugi::xml_node c = doc.first_child(); c; c = c.next_sibling()) {
    if (c.type() == pugi::node_element) {
      if (root) return Status::InvalidArgument("plist: more than one root element");
      root = c;
    } else if (IsText(c) && !IsBlank(c.value())) {
      return Status::InvalidArgument("plist: text outside the root element");
    }
  }
  if (!root) return Status::InvalidArgument("plist: no root element");
  if (!NameIs(root, "plist")) {
    return Status::InvalidArgument("plist: root element is <" + std::string(root.name()) +
                                   ">, expected <plist>");
  }
  pugi::xml_node value_el;
  for (pugi::xml_node c = root.first_child(); c; c = c.next_sibling()) {
    if (c.type() == pugi::node_element) {
      if (value_el) {
        return Status::InvalidArgument("plist: <plist> holds more than one value (second is <" +
                                       std::string(c.name()) + ">)");
      }
      value_el = c;
    } else if (IsText(c) && !IsBlank(c.value())) {
      return Status::InvalidArgument("plist: unexpected text " +
                                     internal::QuoteForError(c.value()) + " in <plist>");
    }
  }
  if (!value_el) return Status::InvalidArgument("plist: <plist> is empty");

  XmlToValue conv(internal::EffectiveMaxDepth(limits));
  Value v;
  if (!conv.Convert(value_el, 0, &v)) return Status::InvalidArgument(conv.error());
  return v;
}

std::string ToXml(const Value& v) {
  std::string out;
  out.reserve(4096);  // typical device message; grows geometrically beyond
  out.append(kHeader);
  WriteXml(v, 0, &out);
  out.append(kFooter);
  return out;
}

}  // namespace orchard::plist
