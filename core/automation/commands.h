// MDM command construction for automation consumers: the request keys of all
// of Apple's RequestTypes (generated from Apple's schemas, see
// scripts/gen-command-schemas), checked before a command is queued, so a typo
// in a policy is an error at the line that made it instead of a
// CommandFormatError days later on a device.
//
// Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "plist/plist.h"
#include "util/status.h"

namespace orchard::automation {

struct CommandKey {
  const char* key;
  plist::Type type;
  bool required;
};

struct CommandSchema {
  const char* request_type;
  std::vector<CommandKey> keys;
};

// The schema of a RequestType, or nullptr if Apple's schemas do not know it.
const CommandSchema* FindCommandSchema(std::string_view request_type);
// Every known RequestType, sorted.
std::vector<std::string> KnownRequestTypes();

// Checks the Command dict (RequestType plus request keys) against its schema:
// known RequestType, no unknown keys, types match (an integer is accepted for
// a real), required keys present. unchecked skips the schema (RequestTypes or
// keys newer than the bundled schemas) but not the basic shape.
Status CheckCommand(const plist::Value& command, bool unchecked = false);

// The complete command plist {CommandUUID, Command} as XML.
std::string CommandPlist(const std::string& command_uuid, const plist::Value& command);

}  // namespace orchard::automation
