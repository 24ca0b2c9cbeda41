// Property-list values in Lua (internal to the policy module).
//
//   string, integer, real, boolean -> Lua string, integer, float, boolean
//   array, dict                    -> tables (an empty array carries the
//                                     plist.array marker so it stays an array)
//   data                           -> userdata plist.data (#d, d:bytes(), d:base64(), d:hex())
//   date                           -> userdata plist.date (d.unix, tostring(d) is RFC 3339,
//                                     comparable with < and ==)
// Lua -> plist is the reverse; integers stay integers and floats stay reals.
#pragma once

#include <string>

#include "plist/plist.h"

struct lua_State;

namespace orchard::policy {

// Creates the data/date metatables and the global read-only `plist` library
// (plist.data, plist.date, plist.array, plist.dict, plist.json, plist.from_json).
// Called in protected mode while a sandbox opens.
void OpenPlistLibrary(lua_State* L);

// Pushes v. May raise a Lua memory error: v must outlive the call and the
// calling frames must hold no C++ objects with destructors.
void PushPlist(lua_State* L, const plist::Value& v);

// Converts the value at idx without raising. hint_array makes an empty
// table an array. On failure returns false and sets *error.
bool ToPlist(lua_State* L, int idx, plist::Value* out, std::string* error, bool hint_array = false);

}  // namespace orchard::policy
