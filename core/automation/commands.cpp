#include "automation/commands.h"

#include <algorithm>

namespace orchard::automation {
namespace {

const std::vector<CommandSchema>& Schemas() {
  static const std::vector<CommandSchema> kSchemas = {
#include "automation/command_schemas.inc"
  };
  return kSchemas;
}

bool TypeFits(plist::Type want, plist::Type got) {
  return want == got || (want == plist::Type::kReal && got == plist::Type::kInteger);
}

}  // namespace

const CommandSchema* FindCommandSchema(std::string_view rt) {
  const auto& all = Schemas();
  auto it = std::lower_bound(all.begin(), all.end(), rt,
                             [](const CommandSchema& s, std::string_view v) { return s.request_type < v; });
  return it != all.end() && it->request_type == rt ? &*it : nullptr;
}

std::vector<std::string> KnownRequestTypes() {
  std::vector<std::string> out;
  for (const auto& s : Schemas()) out.emplace_back(s.request_type);
  return out;
}

Status CheckCommand(const plist::Value& command, bool unchecked) {
  if (!command.is(plist::Type::kDict)) return Status::InvalidArgument("a command must be a table of request keys");
  const plist::Value* rt = command.Find("RequestType");
  if (!rt || !rt->AsString() || rt->AsString()->empty())
    return Status::InvalidArgument("the command has no RequestType");
  if (rt->AsString()->size() > 128) return Status::InvalidArgument("RequestType is too long");
  if (unchecked) return Status::Ok();
  const CommandSchema* schema = FindCommandSchema(*rt->AsString());
  if (!schema)
    return Status::InvalidArgument("unknown RequestType '" + *rt->AsString() +
                                   "' (not in Apple's schemas; use unchecked to send it anyway)");
  for (const auto& member : *command.AsDict()) {
    const std::string& key = member.first;  // (clang 14 cannot capture a structured binding)
    const plist::Value& value = member.second;
    if (key == "RequestType") continue;
    auto k = std::find_if(schema->keys.begin(), schema->keys.end(),
                          [&](const CommandKey& ck) { return key == ck.key; });
    if (k == schema->keys.end())
      return Status::InvalidArgument(*rt->AsString() + " has no request key '" + key + "'");
    if (!TypeFits(k->type, value.type()))
      return Status::InvalidArgument(*rt->AsString() + "." + key + " must be " + plist::TypeName(k->type) +
                                     ", not " + plist::TypeName(value.type()));
  }
  for (const auto& k : schema->keys) {
    if (k.required && command.Find(k.key) == nullptr)
      return Status::InvalidArgument(*rt->AsString() + " needs the key '" + k.key + "'");
  }
  return Status::Ok();
}

std::string CommandPlist(const std::string& command_uuid, const plist::Value& command) {
  plist::Value full;
  full.Set("CommandUUID", plist::Value::String(command_uuid));
  // RequestType first, as Apple's examples and other servers write it.
  plist::Dict ordered;
  if (const plist::Value* rt = command.Find("RequestType")) ordered.emplace_back("RequestType", *rt);
  for (const auto& [k, v] : *command.AsDict())
    if (k != "RequestType") ordered.emplace_back(k, v);
  full.Set("Command", plist::Value::MakeDict(std::move(ordered)));
  return plist::ToXml(full);
}

}  // namespace orchard::automation
