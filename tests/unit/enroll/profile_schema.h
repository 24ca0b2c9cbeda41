// A purpose-written reader for the few fields of Apple's profile payload
// schemas (tests/fixtures/apple-device-management/mdm/profiles/*.yaml) that the
// enrollment-profile tests check: each payload key's name, type, presence,
// rangelist, format and subkeys. Not a YAML parser: it relies on the layout of
// Apple's files (a list item "- key: NAME" whose fields sit two columns to the
// right of the dash; long text is indented further and ignored).
#pragma once

#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "plist/plist.h"

namespace orchard::testing {

struct SchemaKey {
  std::string name;
  std::string type;      // "<string>", "<integer>", ...
  std::string presence;  // "required" | "optional" | ""
  std::string format;    // a regular expression, or ""
  std::vector<std::string> rangelist;
  std::vector<SchemaKey> subkeys;
};

inline size_t Indent(const std::string& line) {
  size_t n = 0;
  while (n < line.size() && line[n] == ' ') ++n;
  return n;
}

inline std::string Unquote(std::string v) {
  while (!v.empty() && (v.back() == ' ' || v.back() == '\r')) v.pop_back();
  if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front()) v = v.substr(1, v.size() - 2);
  return v;
}

// The top-level payloadkeys of a schema file; empty when it cannot be read.
inline std::vector<SchemaKey> ReadPayloadKeys(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  size_t i = 0;
  while (i < lines.size() && lines[i] != "payloadkeys:") ++i;
  ++i;
  // Parses the list of "- key:" items whose dash is at column col, from lines[i].
  std::function<std::vector<SchemaKey>(size_t)> list = [&](size_t col) {
    std::vector<SchemaKey> out;
    while (i < lines.size()) {
      const std::string& l = lines[i];
      if (l.empty()) { ++i; continue; }
      const size_t ind = Indent(l);
      if (ind < col || (ind == col && l.compare(ind, 7, "- key: ") != 0)) break;
      if (ind > col) { ++i; continue; }
      SchemaKey k;
      k.name = Unquote(l.substr(ind + 7));
      ++i;
      const size_t field = col + 2;
      while (i < lines.size()) {
        const std::string& f = lines[i];
        if (f.empty()) { ++i; continue; }
        const size_t fi = Indent(f);
        if (fi < field) break;
        if (fi > field) { ++i; continue; }
        const std::string body = f.substr(fi);
        auto value = [&](const char* name) { return Unquote(body.substr(std::string(name).size())); };
        if (body.rfind("type: ", 0) == 0) k.type = value("type: ");
        else if (body.rfind("presence: ", 0) == 0) k.presence = value("presence: ");
        else if (body.rfind("format: ", 0) == 0) k.format = value("format: ");
        if (body == "rangelist:") {
          ++i;
          while (i < lines.size() && Indent(lines[i]) == field && lines[i].compare(field, 2, "- ") == 0) {
            k.rangelist.push_back(Unquote(lines[i].substr(field + 2)));
            ++i;
          }
          continue;
        }
        if (body == "subkeys:") {
          ++i;
          k.subkeys = list(field);
          continue;
        }
        ++i;
      }
      out.push_back(std::move(k));
    }
    return out;
  };
  return list(0);
}

inline bool TypeMatches(const std::string& schema_type, const plist::Value& v) {
  using plist::Type;
  if (schema_type == "<any>") return true;
  if (schema_type == "<string>") return v.is(Type::kString);
  if (schema_type == "<integer>") return v.is(Type::kInteger);
  if (schema_type == "<boolean>") return v.is(Type::kBool);
  if (schema_type == "<data>") return v.is(Type::kData);
  if (schema_type == "<array>") return v.is(Type::kArray);
  if (schema_type == "<dictionary>") return v.is(Type::kDict);
  if (schema_type == "<date>") return v.is(Type::kDate);
  if (schema_type == "<real>") return v.is(Type::kReal);
  return false;
}

inline std::string ScalarText(const plist::Value& v) {
  if (auto s = v.AsString()) return *s;
  if (auto n = v.AsInteger()) return std::to_string(*n);
  if (auto b = v.AsBool()) return *b ? "true" : "false";
  return "<non-scalar>";
}

// Checks value against one schema key (type, rangelist, format, subkeys);
// appends "path: problem" lines to problems.
inline void CheckValue(const SchemaKey& key, const plist::Value& v, const std::string& path,
                std::vector<std::string>* problems);

// Checks a dict against a key list: every required key present, no key the
// schemas do not name (unless the list has an ANY key), every value checked.
inline void CheckDict(const std::vector<SchemaKey>& keys, const plist::Value& dict, const std::string& path,
                      std::vector<std::string>* problems) {
  const plist::Dict* d = dict.AsDict();
  if (!d) {
    problems->push_back(path + ": not a dictionary");
    return;
  }
  bool any = false;
  for (const auto& k : keys) {
    if (k.name == "ANY") any = true;
    else if (k.presence == "required" && !dict.Find(k.name)) problems->push_back(path + "/" + k.name + ": required key missing");
  }
  for (const auto& [name, value] : *d) {
    const SchemaKey* k = nullptr;
    for (const auto& c : keys)
      if (c.name == name) k = &c;
    if (!k) {
      if (!any) problems->push_back(path + "/" + name + ": key not in Apple's schema");
      continue;
    }
    CheckValue(*k, value, path + "/" + name, problems);
  }
}

inline void CheckValue(const SchemaKey& key, const plist::Value& v, const std::string& path,
                       std::vector<std::string>* problems) {
  if (!key.type.empty() && !TypeMatches(key.type, v)) {
    problems->push_back(path + ": expected " + key.type + ", got " + plist::TypeName(v.type()));
    return;
  }
  if (!key.rangelist.empty() && !v.is(plist::Type::kArray) && !v.is(plist::Type::kDict)) {
    const std::string t = ScalarText(v);
    bool found = false;
    for (const auto& r : key.rangelist) found |= r == t;
    if (!found) problems->push_back(path + ": '" + t + "' is not in the schema's rangelist");
  }
  if (!key.format.empty() && v.AsString() && !std::regex_match(*v.AsString(), std::regex(key.format)))
    problems->push_back(path + ": '" + *v.AsString() + "' does not match " + key.format);
  if (v.is(plist::Type::kDict) && !key.subkeys.empty()) CheckDict(key.subkeys, v, path, problems);
  if (const plist::Array* a = v.AsArray(); a && key.subkeys.size() == 1) {
    for (size_t i = 0; i < a->size(); ++i) CheckValue(key.subkeys[0], (*a)[i], path + "[" + std::to_string(i) + "]", problems);
  }
}

}  // namespace orchard::testing
