#include "ctl/args.h"

namespace orchard::ctl {

std::string ParsedArgs::Get(std::string_view name, const std::string& fallback) const {
  auto it = flags.find(std::string(name));
  return it == flags.end() || it->second.empty() ? fallback : it->second.back();
}

std::vector<std::string> ParsedArgs::All(std::string_view name) const {
  auto it = flags.find(std::string(name));
  return it == flags.end() ? std::vector<std::string>{} : it->second;
}

Result<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                             const std::vector<FlagSpec>& specs) {
  ParsedArgs out;
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (flags_done || a.size() < 2 || a.rfind("--", 0) != 0) {
      if (!flags_done && a.size() >= 2 && a[0] == '-' && a[1] != '-')
        return Status::InvalidArgument("unknown option " + a + " (options are spelled --name)");
      out.positionals.push_back(a);
      continue;
    }
    if (a == "--") {
      flags_done = true;
      continue;
    }
    std::string name = a.substr(2);
    std::string value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      inline_value = true;
    }
    const FlagSpec* spec = nullptr;
    for (const auto& s : specs)
      if (s.name == name) spec = &s;
    if (!spec) return Status::InvalidArgument("unknown option --" + name);
    if (spec->takes_value && !inline_value) {
      if (i + 1 >= args.size()) return Status::InvalidArgument("--" + name + " needs a value");
      value = args[++i];
    }
    if (!spec->takes_value && inline_value)
      return Status::InvalidArgument("--" + name + " takes no value");
    auto& slot = out.flags[name];
    if (!slot.empty() && !spec->repeatable)
      return Status::InvalidArgument("--" + name + " given more than once");
    slot.push_back(value);
  }
  return out;
}

std::vector<std::string> SplitList(std::string_view list) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= list.size()) {
    size_t j = list.find(',', i);
    if (j == std::string_view::npos) j = list.size();
    if (j > i) out.emplace_back(list.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

}  // namespace orchard::ctl
