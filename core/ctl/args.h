// Command-line parsing for orchardctl: GNU-style long flags ("--name value" or
// "--name=value"), boolean flags, repeatable flags, positionals, and "--" to
// end flags. Pure functions over strings; thread-safe.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace orchard::ctl {

struct FlagSpec {
  std::string name;  // without the leading "--"
  bool takes_value = false;
  bool repeatable = false;
};

struct ParsedArgs {
  std::vector<std::string> positionals;
  std::map<std::string, std::vector<std::string>> flags;  // boolean flags hold one ""

  bool Has(std::string_view name) const { return flags.find(std::string(name)) != flags.end(); }
  // The (last) value of a flag, or fallback when absent.
  std::string Get(std::string_view name, const std::string& fallback = "") const;
  // Every value of a repeatable flag, in order.
  std::vector<std::string> All(std::string_view name) const;
};

// Parses args against specs. InvalidArgument names the offending flag:
// unknown flags, a missing value, a value given to a boolean flag, or a
// non-repeatable flag given twice.
Result<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                             const std::vector<FlagSpec>& specs);

// Splits "a,b,,c" into {"a","b","c"}.
std::vector<std::string> SplitList(std::string_view list);

}  // namespace orchard::ctl
