// References between declarations (internal to the ddm module): an
// activation's StandardConfigurations name configurations, and a
// configuration's *AssetReference* keys name assets. A set should carry what
// its members reference, or devices given the set get a declaration that
// cannot apply (docs/ddm.md, "References").
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ddm/declarations.h"
#include "util/status.h"

namespace orchard::ddm {

struct Reference {
  std::string identifier;  // what is referenced
  Kind kind;               // the kind it must have
};

// What d references (from its payload_json), in payload order, each once.
std::vector<Reference> ReferencesOf(const Declaration& d);

// The references members of `set` make that the set does not satisfy (the
// referenced declaration is not in the set, or is of another kind), as
// messages naming the set, the member and the reference, each once, in member
// and payload order. Reads through store (which may be a view with pending
// writes); scans at most 10000 members of the set.
Result<std::vector<std::string>> UnsatisfiedReferences(DeclarationStore& store, std::string_view set);

// At most max of problems, then one line saying how many were left out.
std::vector<std::string> Capped(std::vector<std::string> problems, std::string_view set, size_t max = 20);

}  // namespace orchard::ddm
