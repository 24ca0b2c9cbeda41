// Helpers shared by the admin API's route handlers (internal to the api module):
// JSON answers and errors, path splitting, paging with opaque cursors and a
// byte budget. Thread-safe (pure functions; PageWriter is one per request).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "http/server.h"
#include "plist/plist.h"
#include "util/status.h"

namespace orchard::api {

http::Response Json(int status, const plist::Value& v);
http::Response Error(int status, const std::string& message);
// InvalidArgument 400, NotFound 404, TooLarge 413, AlreadyExists 409,
// Unavailable 503, ResourceExhausted 503 + Retry-After, else 500.
http::Response FromStatus(const Status& st);
std::vector<std::string> SplitPath(const std::string& path);
plist::Value Time(int64_t ms);  // RFC 3339, "" for 0
bool ParseInt(const std::string& s, int64_t* out);

// Shortens an item that alone does not fit a page: array and dict members are removed,
// strings are cut to 1 KiB (at a UTF-8 boundary), and "truncated" is set.
void Truncate(plist::Value* item);

// Opaque cursors: a kind byte (which listing) and the listing's position, base64url.
std::string EncodeCursor(char kind, std::string_view position);
Result<std::string> DecodeCursor(char kind, const std::string& cursor);

// Builds one page of a listing, {"<array>": [items], <fields>, "next_cursor": "..."},
// never longer than max_bytes: Add refuses an item that would overflow (the page ends
// there); the first item of a page is truncated if it alone is too big.
class PageWriter {
 public:
  // fields: members written after the array; late_reserve: bytes kept for members only
  // known at Finish (e.g. last_seq).
  PageWriter(size_t max_bytes, char kind, const std::string& array_key, plist::Value fields,
             size_t late_reserve = 0);
  // Adds item at listing position `position`. False when the page is full (nothing added).
  // An error when even the truncated item does not fit an empty page.
  Result<bool> Add(plist::Value item, std::string_view position);
  size_t count() const { return count_; }
  // more: whether next_cursor points after the last item ("" when the listing ended).
  // cursor: another next_cursor than the last item's (it must fit late_reserve).
  http::Response Finish(bool more, const plist::Value& late_fields = plist::Value(),
                        const std::string* cursor = nullptr) const;

 private:
  bool Fits(size_t item_bytes, size_t cursor_bytes) const;
  size_t max_bytes_;
  char kind_;
  size_t late_reserve_;
  std::string head_, fields_, items_, last_cursor_;
  size_t count_ = 0;
};

// Reads ?limit= (default def, 1..max) and ?cursor= of a listing of the given kind.
bool PageLimit(const http::Request& r, int64_t def, int64_t max, int64_t* out, http::Response* error);
bool PageCursor(const http::Request& r, char kind, std::string* position, http::Response* error);

}  // namespace orchard::api
