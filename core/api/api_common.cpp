#include "api/api_common.h"

#include <charconv>

#include "util/encoding.h"

namespace orchard::api {
using plist::Value;
namespace {
constexpr size_t kTruncatedStringBytes = 1024;
}  // namespace

// Shortens an item that alone does not fit a page: array and dict members are removed,
// strings are cut to kTruncatedStringBytes (at a UTF-8 boundary), and "truncated" is set.
void Truncate(Value* item) {
  plist::Dict* d = item->AsDict();
  if (!d) return;
  plist::Dict out;
  for (auto& [k, v] : *d) {
    if (v.is(plist::Type::kArray) || v.is(plist::Type::kDict)) continue;
    if (const std::string* str = v.AsString(); str && str->size() > kTruncatedStringBytes) {
      size_t n = kTruncatedStringBytes;
      while (n > 0 && (static_cast<unsigned char>((*str)[n]) & 0xC0) == 0x80) --n;
      out.emplace_back(k, Value::String(str->substr(0, n)));
      continue;
    }
    out.emplace_back(k, std::move(v));
  }
  out.emplace_back("truncated", Value::Bool(true));
  *item = Value::MakeDict(std::move(out));
}

http::Response Json(int status, const Value& v) {
  return http::Response{status, "application/json", plist::ToJson(v) + "\n", {}};
}

http::Response Error(int status, const std::string& message) {
  Value v;
  v.Set("error", Value::String(message));
  return Json(status, v);
}

http::Response FromStatus(const Status& st) {
  switch (st.code()) {
    case Code::kInvalidArgument: return Error(400, st.message());
    case Code::kNotFound: return Error(404, st.message());
    case Code::kTooLarge: return Error(413, st.message());
    case Code::kAlreadyExists:
    case Code::kFailedPrecondition: return Error(409, st.message());
    case Code::kUnavailable: return Error(503, st.message());
    case Code::kResourceExhausted: {  // disk full: writes work again once space returns
      auto resp = Error(503, st.message());
      resp.headers.emplace_back("Retry-After", "30");
      return resp;
    }
    default: return Error(500, st.message());
  }
}

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) {
      auto dec = PercentDecode(std::string_view(path).substr(i, j - i));
      parts.push_back(dec ? *dec : path.substr(i, j - i));
    }
    i = j + 1;
  }
  return parts;
}

Value Time(int64_t ms) { return ms ? Value::String(FormatRfc3339(ms)) : Value::String(""); }

bool ParseInt(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

// ---- paging

// Opaque cursors: a kind byte (which listing) and the listing's position, as base64url
// without padding, so a cursor is always plain ASCII whatever the ids hold.
std::string EncodeCursor(char kind, std::string_view position) {
  std::string b = Base64Encode(std::string(1, kind) + std::string(position));
  while (!b.empty() && b.back() == '=') b.pop_back();
  for (char& c : b) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return b;
}

Result<std::string> DecodeCursor(char kind, const std::string& cursor) {
  std::string b = cursor;
  for (char& c : b) {
    if (c == '+' || c == '/' || c == '=') return Status::InvalidArgument("cursor is not one this server issued");
    c = c == '-' ? '+' : c == '_' ? '/' : c;
  }
  while (b.size() % 4) b.push_back('=');
  auto raw = Base64Decode(b);
  if (!raw || raw->empty()) return Status::InvalidArgument("cursor is not one this server issued");
  if ((*raw)[0] != kind) return Status::InvalidArgument("cursor belongs to another listing");
  return raw->substr(1);
}

PageWriter::PageWriter(size_t max_bytes, char kind, const std::string& array_key, Value fields,
                       size_t late_reserve)
    : max_bytes_(max_bytes), kind_(kind), late_reserve_(late_reserve) {
  head_ = "{" + plist::ToJson(Value::String(array_key)) + ":[";
  for (const auto& [k, v] : *fields.AsDict())
    fields_ += "," + plist::ToJson(Value::String(k)) + ":" + plist::ToJson(v);
}

Result<bool> PageWriter::Add(Value item, std::string_view position) {
  std::string json = plist::ToJson(item);
  const std::string cursor = EncodeCursor(kind_, position);
  if (!Fits(json.size(), cursor.size())) {
    if (count_ > 0) return false;
    Truncate(&item);
    json = plist::ToJson(item);
    if (!Fits(json.size(), cursor.size()))
      return Status::Internal("one item is larger than api.max_response_bytes (" + std::to_string(max_bytes_) +
                              ") even truncated");
  }
  if (count_++) items_.push_back(',');
  items_ += json;
  last_cursor_ = cursor;
  return true;
}

http::Response PageWriter::Finish(bool more, const Value& late_fields, const std::string* cursor) const {
  std::string body = head_ + items_ + "]" + fields_;
  for (const auto& [k, v] : *late_fields.AsDict())
    body += "," + plist::ToJson(Value::String(k)) + ":" + plist::ToJson(v);
  const std::string& next = cursor ? *cursor : more ? last_cursor_ : std::string();
  body += ",\"next_cursor\":" + plist::ToJson(Value::String(next)) + "}\n";
  return http::Response{200, "application/json", std::move(body), {}};
}

bool PageWriter::Fits(size_t item_bytes, size_t cursor_bytes) const {
  const size_t total = head_.size() + items_.size() + (count_ ? 1 : 0) + item_bytes + 1 + fields_.size() +
                       late_reserve_ + 16 /* ,"next_cursor": */ + cursor_bytes + 2 /* quotes */ + 2 /* }\n */;
  return total <= max_bytes_;
}

// Reads the page size parameter: default def, 1..max.
bool PageLimit(const http::Request& r, int64_t def, int64_t max, int64_t* out, http::Response* error) {
  *out = def;
  if (r.HasParam("limit") && (!ParseInt(r.Param("limit"), out) || *out < 1 || *out > max)) {
    *error = Error(400, "limit must be an integer from 1 to " + std::to_string(max));
    return false;
  }
  return true;
}

// Reads ?cursor= of a listing of the given kind into *position ("" without one).
bool PageCursor(const http::Request& r, char kind, std::string* position, http::Response* error) {
  position->clear();
  if (!r.HasParam("cursor") || r.Param("cursor").empty()) return true;
  auto pos = DecodeCursor(kind, r.Param("cursor"));
  if (!pos.ok()) {
    *error = Error(400, pos.status().message());
    return false;
  }
  *position = std::move(pos.value());
  return true;
}


}  // namespace orchard::api
