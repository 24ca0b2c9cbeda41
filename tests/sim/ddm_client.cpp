#include "sim/ddm_client.h"

#include <set>

#include "plist/plist.h"

namespace orchard::sim {
namespace {

const char* const kKinds[][2] = {{"Activations", "activation"},
                                 {"Configurations", "configuration"},
                                 {"Assets", "asset"},
                                 {"Management", "management"}};

std::string TokenOf(const std::string& tokens_response) {
  auto v = plist::ParseJson(tokens_response);
  if (!v.ok()) return {};
  const plist::Value* st = v->Find("SyncTokens");
  return st != nullptr ? std::string(st->GetString("DeclarationsToken")) : std::string();
}

}  // namespace

Result<HttpResponse> DdmClient::Call(const std::string& endpoint, const std::string* data) {
  plist::Value m;
  m.Set("MessageType", plist::Value::String("DeclarativeManagement"));
  m.Set("UDID", plist::Value::String(device_->udid()));
  m.Set("Endpoint", plist::Value::String(endpoint));
  if (data != nullptr) m.Set("Data", plist::Value::DataValue(*data));
  return device_->CheckIn(m);
}

Result<DdmSyncStats> DdmClient::Sync(const std::string& data) {
  DdmSyncStats stats;
  std::string token;
  if (!data.empty()) {
    token = TokenOf(data);
  } else {
    auto r = Call("tokens");
    ++stats.requests;
    if (!r.ok()) return r.status();
    if (r->status != 200) return Status::Unavailable("tokens answered " + std::to_string(r->status));
    token = TokenOf(r->body);
  }
  if (token.empty()) return Status::InvalidArgument("no DeclarationsToken in the TokensResponse");
  if (token == token_) return stats;
  stats.changed = true;

  auto items = Call("declaration-items");
  ++stats.requests;
  if (!items.ok()) return items.status();
  if (items->status != 200) return Status::Unavailable("declaration-items answered " + std::to_string(items->status));
  stats.manifest_fetched = true;
  auto manifest = plist::ParseJson(items->body);
  if (!manifest.ok()) return Status::InvalidArgument("declaration-items is not JSON: " + manifest.status().message());
  const plist::Value* decls = manifest->Find("Declarations");
  if (decls == nullptr || !decls->is(plist::Type::kDict)) return Status::InvalidArgument("no Declarations");
  const std::string listed_token(manifest->GetString("DeclarationsToken"));

  std::map<std::string, HeldDeclaration> next;
  for (const auto& [key, kind] : kKinds) {
    const plist::Value* arr = decls->Find(key);
    if (arr == nullptr || arr->AsArray() == nullptr) return Status::InvalidArgument(std::string("no ") + key + " array");
    for (const auto& item : *arr->AsArray()) {
      const std::string id(item.GetString("Identifier"));
      const std::string st(item.GetString("ServerToken"));
      auto held = held_.find(id);
      if (held != held_.end() && held->second.server_token == st && held->second.kind == kind) {
        next[id] = held->second;
        continue;
      }
      auto d = Call(std::string("declaration/") + kind + "/" + id);
      ++stats.requests;
      if (!d.ok()) return d.status();
      if (d->status == 404) continue;  // gone meanwhile: dropped
      if (d->status != 200) return Status::Unavailable("declaration answered " + std::to_string(d->status));
      ++stats.fetched;
      next[id] = HeldDeclaration{kind, st, d->body};
    }
  }
  for (const auto& [id, ignored] : held_)
    if (!next.count(id)) ++stats.dropped;
  held_ = std::move(next);

  const std::string items_json = R"({"management":{"declarations":)" + DeclarationsStatusJson() + "}}";
  auto reported = Report(items_json);
  ++stats.requests;
  if (!reported.ok()) return reported.status();
  if (*reported != 200) return Status::Unavailable("status answered " + std::to_string(*reported));
  token_ = listed_token.empty() ? token : listed_token;
  return stats;
}

std::string DdmClient::DeclarationsStatusJson() const {
  plist::Value out;
  for (const char* plural : {"activations", "configurations", "assets", "management"}) {
    plist::Value arr = plist::Value::MakeArray();
    for (const auto& [id, d] : held_) {
      const std::string p = d.kind == "management" ? "management" : d.kind + "s";
      if (p != plural) continue;
      plist::Value s;
      s.Set("identifier", plist::Value::String(id));
      s.Set("server-token", plist::Value::String(d.server_token));
      s.Set("active", plist::Value::Bool(d.kind != "management"));
      s.Set("valid", plist::Value::String("valid"));
      arr.AsArray()->push_back(std::move(s));
    }
    out.Set(plural, std::move(arr));
  }
  return plist::ToJson(out);
}

Result<long> DdmClient::Report(const std::string& items_json, bool full) {
  const std::string body =
      R"({"StatusItems":)" + items_json + R"(,"Errors":[],"FullReport":)" + (full ? "true" : "false") + "}";
  auto r = Call("status", &body);
  if (!r.ok()) return r.status();
  return r->status;
}

}  // namespace orchard::sim
