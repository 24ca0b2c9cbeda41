#include "ddm/references.h"

#include <algorithm>
#include <map>
#include <set>

#include "plist/plist.h"

namespace orchard::ddm {
namespace {

constexpr size_t kMaxMembers = 10000;

void AddOnce(std::vector<Reference>* out, std::set<std::string>* seen, const std::string& id, Kind kind) {
  if (!id.empty() && seen->insert(id).second) out->push_back({id, kind});
}

// Every string under a key whose name contains "AssetReference" (a value, or
// the items of an array), anywhere in the payload.
void AssetReferences(const plist::Value& v, bool under_reference, std::vector<Reference>* out,
                     std::set<std::string>* seen) {
  if (const std::string* s = v.AsString()) {
    if (under_reference) AddOnce(out, seen, *s, Kind::kAsset);
    return;
  }
  if (const plist::Array* a = v.AsArray()) {
    for (const auto& item : *a) AssetReferences(item, under_reference, out, seen);
    return;
  }
  if (const plist::Dict* d = v.AsDict()) {
    for (const auto& [key, value] : *d)
      AssetReferences(value, key.find("AssetReference") != std::string::npos, out, seen);
  }
}

const char* Article(Kind k) { return k == Kind::kActivation || k == Kind::kAsset ? "an " : "a "; }

}  // namespace

std::vector<Reference> ReferencesOf(const Declaration& d) {
  std::vector<Reference> out;
  if (d.kind != Kind::kActivation && d.kind != Kind::kConfiguration) return out;
  plist::Limits lim;
  lim.drop_nulls = true;
  auto payload = plist::ParseJson(d.payload_json.empty() ? "{}" : d.payload_json, lim);
  if (!payload.ok()) return out;  // stored payloads are valid JSON; nothing to say otherwise
  std::set<std::string> seen;
  if (d.kind == Kind::kActivation) {
    if (const plist::Value* list = payload->Find("StandardConfigurations"))
      if (const plist::Array* a = list->AsArray())
        for (const auto& item : *a)
          if (const std::string* s = item.AsString()) AddOnce(&out, &seen, *s, Kind::kConfiguration);
    return out;
  }
  AssetReferences(*payload, false, &out, &seen);
  return out;
}

std::vector<std::string> Capped(std::vector<std::string> problems, std::string_view set, size_t max) {
  if (problems.size() <= max) return problems;
  const size_t left_out = problems.size() - max;
  problems.resize(max);
  problems.push_back("set " + std::string(set) + ": " + std::to_string(left_out) + " more");
  return problems;
}

Result<std::vector<std::string>> UnsatisfiedReferences(DeclarationStore& store, std::string_view set) {
  std::vector<std::string> members;
  std::string after;
  while (members.size() < kMaxMembers) {
    auto page = store.SetDeclarations(set, after, 1000);
    if (!page.ok()) return page.status();
    members.insert(members.end(), page->items.begin(), page->items.end());
    if (page->next.empty()) break;
    after = page->next;
  }
  std::map<std::string, std::optional<Kind>> kinds;  // member -> its kind (nullopt: missing)
  std::vector<Declaration> referring;
  for (const auto& id : members) {
    auto d = store.Get(id);
    if (!d.ok()) return d.status();
    if (!d->has_value()) {
      kinds[id] = std::nullopt;
      continue;
    }
    kinds[id] = (*d)->kind;
    if ((*d)->kind == Kind::kActivation || (*d)->kind == Kind::kConfiguration) referring.push_back(std::move(**d));
  }
  std::vector<std::string> out;
  for (const auto& d : referring) {
    for (const auto& ref : ReferencesOf(d)) {
      auto it = kinds.find(ref.identifier);
      std::string problem;
      if (it == kinds.end() || !it->second) {
        problem = "the set does not carry it";
      } else if (*it->second != ref.kind) {
        problem = std::string("it is ") + Article(*it->second) + KindName(*it->second);
      } else {
        continue;
      }
      out.push_back("set " + std::string(set) + ": " + KindName(d.kind) + " " + d.identifier + " references " +
                    KindName(ref.kind) + " " + ref.identifier + ", but " + problem);
    }
  }
  return out;
}

}  // namespace orchard::ddm
