#include "policy/lua_plist.h"

#include <lua.hpp>

#include <cmath>
#include <cstring>
#include <ctime>
#include <map>

#include "policy/sandbox.h"


namespace orchard::policy {
namespace {

// Registry keys (light userdata addresses: looking them up never allocates).
char kDataMeta, kDateMeta, kArrayMeta, kDictMeta;

constexpr int kMaxDepth = 64;

struct DataBox {
  size_t len;
  // bytes follow
  const char* bytes() const { return reinterpret_cast<const char*>(this + 1); }
  char* bytes() { return reinterpret_cast<char*>(this + 1); }
};

void PushData(lua_State* L, const char* p, size_t n) {
  auto* box = static_cast<DataBox*>(lua_newuserdatauv(L, sizeof(DataBox) + n, 0));
  box->len = n;
  if (n) std::memcpy(box->bytes(), p, n);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kDataMeta);
  lua_setmetatable(L, -2);
}

void PushDate(lua_State* L, int64_t unix_seconds) {
  auto* d = static_cast<int64_t*>(lua_newuserdatauv(L, sizeof(int64_t), 0));
  *d = unix_seconds;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kDateMeta);
  lua_setmetatable(L, -2);
}

bool HasMeta(lua_State* L, int idx, const void* key) {
  if (!lua_getmetatable(L, idx)) return false;
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  bool same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

DataBox* CheckData(lua_State* L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !HasMeta(L, idx, &kDataMeta))
    luaL_typeerror(L, idx, "plist.data");
  return static_cast<DataBox*>(lua_touserdata(L, idx));
}

int64_t* CheckDate(lua_State* L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !HasMeta(L, idx, &kDateMeta))
    luaL_typeerror(L, idx, "plist.date");
  return static_cast<int64_t*>(lua_touserdata(L, idx));
}

// --- data methods ---
int DataLen(lua_State* L) {
  lua_pushinteger(L, static_cast<lua_Integer>(CheckData(L, 1)->len));
  return 1;
}
int DataBytes(lua_State* L) {
  DataBox* b = CheckData(L, 1);
  lua_pushlstring(L, b->bytes(), b->len);
  return 1;
}
int DataEq(lua_State* L) {
  DataBox* a = CheckData(L, 1);
  DataBox* b = CheckData(L, 2);
  lua_pushboolean(L, a->len == b->len && std::memcmp(a->bytes(), b->bytes(), a->len) == 0);
  return 1;
}
int DataToString(lua_State* L) {
  lua_pushfstring(L, "plist.data(%I bytes)", static_cast<lua_Integer>(CheckData(L, 1)->len));
  return 1;
}
// Encodings are written straight into a Lua buffer (no C++ string can leak
// if the allocation fails).
int DataHex(lua_State* L) {
  DataBox* b = CheckData(L, 1);
  static constexpr char kHex[] = "0123456789abcdef";
  luaL_Buffer buf;
  char* dst = luaL_buffinitsize(L, &buf, b->len * 2);
  for (size_t i = 0; i < b->len; ++i) {
    auto c = static_cast<unsigned char>(b->bytes()[i]);
    dst[2 * i] = kHex[c >> 4];
    dst[2 * i + 1] = kHex[c & 15];
  }
  luaL_pushresultsize(&buf, b->len * 2);
  return 1;
}
int DataBase64(lua_State* L) {
  DataBox* b = CheckData(L, 1);
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const size_t out_len = (b->len + 2) / 3 * 4;
  luaL_Buffer buf;
  char* dst = luaL_buffinitsize(L, &buf, out_len);
  const auto* in = reinterpret_cast<const unsigned char*>(b->bytes());
  size_t o = 0;
  for (size_t i = 0; i < b->len; i += 3) {
    uint32_t v = uint32_t(in[i]) << 16;
    if (i + 1 < b->len) v |= uint32_t(in[i + 1]) << 8;
    if (i + 2 < b->len) v |= in[i + 2];
    dst[o++] = kB64[(v >> 18) & 63];
    dst[o++] = kB64[(v >> 12) & 63];
    dst[o++] = i + 1 < b->len ? kB64[(v >> 6) & 63] : '=';
    dst[o++] = i + 2 < b->len ? kB64[v & 63] : '=';
  }
  luaL_pushresultsize(&buf, out_len);
  return 1;
}

// --- date methods ---
int DateIndex(lua_State* L) {
  int64_t* d = CheckDate(L, 1);
  const char* k = luaL_checkstring(L, 2);
  if (std::strcmp(k, "unix") == 0) {
    lua_pushinteger(L, *d);
    return 1;
  }
  lua_pushnil(L);
  return 1;
}
int DateToString(lua_State* L) {
  int64_t* d = CheckDate(L, 1);
  char buf[40];
  time_t t = static_cast<time_t>(*d);
  struct tm tm;
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    return luaL_error(L, "date out of range");
  lua_pushstring(L, buf);
  return 1;
}
int DateEq(lua_State* L) {
  lua_pushboolean(L, *CheckDate(L, 1) == *CheckDate(L, 2));
  return 1;
}
int DateLt(lua_State* L) {
  lua_pushboolean(L, *CheckDate(L, 1) < *CheckDate(L, 2));
  return 1;
}
int DateLe(lua_State* L) {
  lua_pushboolean(L, *CheckDate(L, 1) <= *CheckDate(L, 2));
  return 1;
}

// --- the plist library ---
int LibData(lua_State* L) {
  size_t n = 0;
  const char* s = luaL_checklstring(L, 1, &n);
  PushData(L, s, n);
  return 1;
}

bool ParseRfc3339(const char* s, int64_t* out) {
  struct tm tm{};
  const char* end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (end == nullptr) return false;
  if (*end == '.') {  // fractions are dropped (plist dates carry seconds)
    ++end;
    while (*end >= '0' && *end <= '9') ++end;
  }
  if (std::strcmp(end, "Z") != 0 && *end != '\0') return false;
  *out = static_cast<int64_t>(timegm(&tm));
  return true;
}

int LibDate(lua_State* L) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    int64_t t = 0;
    if (!ParseRfc3339(lua_tostring(L, 1), &t))
      return luaL_error(L, "plist.date: expected RFC 3339 UTC text like 2026-12-01T10:00:00Z");
    PushDate(L, t);
    return 1;
  }
  lua_Number n = luaL_checknumber(L, 1);
  if (!std::isfinite(n)) return luaL_error(L, "plist.date: not a finite time");
  PushDate(L, static_cast<int64_t>(std::floor(n)));
  return 1;
}

int Mark(lua_State* L, const void* key) {
  if (lua_isnoneornil(L, 1)) lua_newtable(L);
  else luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getmetatable(L, 1)) return luaL_error(L, "table already has a metatable");
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  lua_setmetatable(L, 1);
  return 1;
}
int LibArray(lua_State* L) { return Mark(L, &kArrayMeta); }
int LibDict(lua_State* L) { return Mark(L, &kDictMeta); }

// C++ work for plist.xml / plist.json / plist.parse (no raising Lua calls).
bool Encode(lua_State* L, int idx, bool xml, std::string* out, std::string* error) {
  try {
    plist::Value v;
    if (!ToPlist(L, idx, &v, error)) return false;
    *out = xml ? plist::ToXml(v) : plist::ToJson(v);
    return true;
  } catch (const std::exception& e) {
    *error = e.what();
    return false;
  }
}

bool Decode(const char* s, size_t n, Sandbox* sb, plist::Value* out) {
  try {
    std::string_view text(s, n);
    size_t first = text.find_first_not_of(" \t\r\n");
    bool json = first != std::string_view::npos && (text[first] == '{' || text[first] == '[');
    auto v = json ? plist::ParseJson(text) : plist::ParseXml(text);
    if (!v.ok()) {
      sb->scratch_error = v.status().message();
      return false;
    }
    *out = std::move(v.value());
    return true;
  } catch (const std::exception& e) {
    sb->scratch_error = e.what();
    return false;
  }
}

// plist.xml(table) -> data (an XML plist, e.g. a profile for InstallProfile)
int LibXml(lua_State* L) {
  luaL_checkany(L, 1);
  Sandbox* sb = Sandbox::From(L);
  if (!Encode(L, 1, true, &sb->scratch, &sb->scratch_error))
    return luaL_error(L, "plist.xml: %s", sb->scratch_error.c_str());
  PushData(L, sb->scratch.data(), sb->scratch.size());
  return 1;
}

// plist.json(value) -> string
int LibJson(lua_State* L) {
  luaL_checkany(L, 1);
  Sandbox* sb = Sandbox::From(L);
  if (!Encode(L, 1, false, &sb->scratch, &sb->scratch_error))
    return luaL_error(L, "plist.json: %s", sb->scratch_error.c_str());
  lua_pushlstring(L, sb->scratch.data(), sb->scratch.size());
  return 1;
}

// plist.parse(text or data) -> value (XML plist or JSON)
int LibParse(lua_State* L) {
  size_t n = 0;
  const char* s = nullptr;
  if (lua_type(L, 1) == LUA_TUSERDATA) {
    DataBox* b = CheckData(L, 1);
    s = b->bytes();
    n = b->len;
  } else {
    s = luaL_checklstring(L, 1, &n);
  }
  Sandbox* sb = Sandbox::From(L);
  // Kept in the sandbox's owner-side scratch while it is pushed.
  static_assert(sizeof(plist::Value) > 0);
  plist::Value* slot = &sb->scratch_value;
  if (!Decode(s, n, sb, slot)) return luaL_error(L, "plist.parse: %s", sb->scratch_error.c_str());
  PushPlist(L, *slot);
  return 1;
}

void NewMeta(lua_State* L, const void* key, const char* name) {
  lua_newtable(L);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__metatable");
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

}  // namespace

void OpenPlistLibrary(lua_State* L) {
  NewMeta(L, &kArrayMeta, "plist.array");
  NewMeta(L, &kDictMeta, "plist.dict");

  NewMeta(L, &kDataMeta, "plist.data");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kDataMeta);
  lua_pushcfunction(L, DataLen);
  lua_setfield(L, -2, "__len");
  lua_pushcfunction(L, DataEq);
  lua_setfield(L, -2, "__eq");
  lua_pushcfunction(L, DataToString);
  lua_setfield(L, -2, "__tostring");
  lua_newtable(L);
  lua_pushcfunction(L, DataBytes);
  lua_setfield(L, -2, "bytes");
  lua_pushcfunction(L, DataBase64);
  lua_setfield(L, -2, "base64");
  lua_pushcfunction(L, DataHex);
  lua_setfield(L, -2, "hex");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  NewMeta(L, &kDateMeta, "plist.date");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kDateMeta);
  lua_pushcfunction(L, DateIndex);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, DateToString);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, DateEq);
  lua_setfield(L, -2, "__eq");
  lua_pushcfunction(L, DateLt);
  lua_setfield(L, -2, "__lt");
  lua_pushcfunction(L, DateLe);
  lua_setfield(L, -2, "__le");
  lua_pop(L, 1);

  lua_newtable(L);
  lua_pushcfunction(L, LibData);
  lua_setfield(L, -2, "data");
  lua_pushcfunction(L, LibDate);
  lua_setfield(L, -2, "date");
  lua_pushcfunction(L, LibArray);
  lua_setfield(L, -2, "array");
  lua_pushcfunction(L, LibDict);
  lua_setfield(L, -2, "dict");
  lua_pushcfunction(L, LibXml);
  lua_setfield(L, -2, "xml");
  lua_pushcfunction(L, LibJson);
  lua_setfield(L, -2, "json");
  lua_pushcfunction(L, LibParse);
  lua_setfield(L, -2, "parse");
  lua_setglobal(L, "plist");
}

void PushPlist(lua_State* L, const plist::Value& v) {
  luaL_checkstack(L, 3, "plist nested too deeply");
  switch (v.type()) {
    case plist::Type::kString: {
      const std::string* s = v.AsString();
      lua_pushlstring(L, s->data(), s->size());
      return;
    }
    case plist::Type::kInteger: lua_pushinteger(L, *v.AsInteger()); return;
    case plist::Type::kReal: lua_pushnumber(L, *v.AsReal()); return;
    case plist::Type::kBool: lua_pushboolean(L, *v.AsBool()); return;
    case plist::Type::kDate: PushDate(L, v.AsDate()->unix_seconds); return;
    case plist::Type::kData: {
      const std::string& b = v.AsData()->bytes;
      PushData(L, b.data(), b.size());
      return;
    }
    case plist::Type::kArray: {
      const plist::Array& a = *v.AsArray();
      lua_createtable(L, static_cast<int>(a.size()), 0);
      if (a.empty()) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &kArrayMeta);
        lua_setmetatable(L, -2);
      }
      lua_Integer i = 0;
      for (const plist::Value& child : a) {
        PushPlist(L, child);
        lua_rawseti(L, -2, ++i);
      }
      return;
    }
    case plist::Type::kDict: {
      const plist::Dict& d = *v.AsDict();
      lua_createtable(L, 0, static_cast<int>(d.size()));
      for (const auto& kv : d) {
        lua_pushlstring(L, kv.first.data(), kv.first.size());
        PushPlist(L, kv.second);
        lua_rawset(L, -3);
      }
      return;
    }
  }
}

namespace {

bool ToPlistAt(lua_State* L, int idx, plist::Value* out, std::string* error, bool hint_array, int depth);

bool TableToPlist(lua_State* L, int idx, plist::Value* out, std::string* error, bool hint_array,
                  int depth) {
  bool as_array = hint_array, as_dict = false;
  if (lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kArrayMeta);
    bool arr = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kDictMeta);
    bool dict = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (arr) as_array = true;
    else if (dict) as_dict = true, as_array = false;
  }
  // Classify by keys: 1..n integers = array; strings = dict.
  lua_Integer count = 0, max_int = 0;
  bool has_string = false, has_other = false;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    ++count;
    int kt = lua_type(L, -2);
    if (kt == LUA_TSTRING) {
      has_string = true;
    } else if (kt == LUA_TNUMBER && lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1) {
      max_int = std::max(max_int, lua_tointeger(L, -2));
    } else {
      has_other = true;
    }
    lua_pop(L, 1);
  }
  if (has_other) {
    *error = "a table key is neither a string nor a positive integer";
    return false;
  }
  if (count > 0) {
    if (has_string && max_int > 0) {
      *error = "a table mixes array items and named keys";
      return false;
    }
    as_array = !has_string && max_int == count && !as_dict;
    if (!has_string && !as_array) {
      *error = as_dict ? "a plist.dict has integer keys" : "an array table has holes";
      return false;
    }
  }
  if (as_array) {
    plist::Array arr;
    arr.reserve(static_cast<size_t>(count));
    for (lua_Integer i = 1; i <= count; ++i) {
      lua_rawgeti(L, idx, i);
      arr.emplace_back();
      bool ok = ToPlistAt(L, lua_gettop(L), &arr.back(), error, false, depth + 1);
      lua_pop(L, 1);
      if (!ok) {
        *error = "[" + std::to_string(i) + "]" + (error->empty() || (*error)[0] == '[' || (*error)[0] == '.' ? "" : ": ") + *error;
        return false;
      }
    }
    *out = plist::Value::MakeArray(std::move(arr));
    return true;
  }
  // A dict, with keys sorted so the result does not depend on table order.
  std::map<std::string, plist::Value> sorted;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    size_t n = 0;
    const char* k = lua_tolstring(L, -2, &n);  // a string key: no conversion
    plist::Value& slot = sorted[std::string(k, n)];
    if (!ToPlistAt(L, lua_gettop(L), &slot, error, false, depth + 1)) {
      *error = "." + std::string(k, n) + (error->empty() || (*error)[0] == '[' || (*error)[0] == '.' ? "" : ": ") + *error;
      lua_pop(L, 2);
      return false;
    }
    lua_pop(L, 1);
  }
  plist::Dict d;
  d.reserve(sorted.size());
  for (auto& [k, v] : sorted) d.emplace_back(k, std::move(v));
  *out = plist::Value::MakeDict(std::move(d));
  return true;
}

bool ToPlistAt(lua_State* L, int idx, plist::Value* out, std::string* error, bool hint_array, int depth) {
  if (depth > kMaxDepth) {
    *error = "nested deeper than " + std::to_string(kMaxDepth) + " levels (a cycle?)";
    return false;
  }
  if (!lua_checkstack(L, 4)) {
    *error = "Lua stack exhausted";
    return false;
  }
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t n = 0;
      const char* s = lua_tolstring(L, idx, &n);
      *out = plist::Value::String(std::string(s, n));
      return true;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        *out = plist::Value::Integer(lua_tointeger(L, idx));
      } else {
        double d = lua_tonumber(L, idx);
        if (!std::isfinite(d)) {
          *error = "a number is not finite (NaN or infinity)";
          return false;
        }
        *out = plist::Value::Real(d);
      }
      return true;
    case LUA_TBOOLEAN: *out = plist::Value::Bool(lua_toboolean(L, idx)); return true;
    case LUA_TUSERDATA:
      if (HasMeta(L, idx, &kDataMeta)) {
        auto* b = static_cast<DataBox*>(lua_touserdata(L, idx));
        *out = plist::Value::DataValue(std::string(b->bytes(), b->len));
        return true;
      }
      if (HasMeta(L, idx, &kDateMeta)) {
        *out = plist::Value::DateValue(*static_cast<int64_t*>(lua_touserdata(L, idx)));
        return true;
      }
      *error = "a userdata value has no plist form";
      return false;
    case LUA_TTABLE:
      return TableToPlist(L, idx, out, error, hint_array, depth);
    default:
      *error = std::string("a ") + lua_typename(L, lua_type(L, idx)) + " value has no plist form";
      return false;
  }
}

}  // namespace

bool ToPlist(lua_State* L, int idx, plist::Value* out, std::string* error, bool hint_array) {
  error->clear();
  try {
    return ToPlistAt(L, lua_absindex(L, idx), out, error, hint_array, 0);
  } catch (const std::exception& e) {
    *error = std::string("out of memory converting a value: ") + e.what();
    return false;
  }
}

}  // namespace orchard::policy
