// orchardctl's subcommands: each turns parsed arguments into admin API calls
// and prints the answer, human-readable or (with --json) the server's JSON.
// Single-threaded; borrows the client and the output streams.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "ctl/args.h"
#include "ctl/client.h"

namespace orchard::ctl {

// Process exit codes.
constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;   // request failed, server error, or every id failed
constexpr int kExitUsage = 2;    // bad command line
constexpr int kExitPartial = 3;  // some ids failed (HTTP 207)

struct Context {
  AdminClient* client;  // borrowed
  bool json = false;    // print the server's JSON (pretty) instead of tables
  bool api_key_set = false;
  FILE* out = stdout;
  FILE* err = stderr;
};

struct CommandSpec {
  const char* name;
  const char* synopsis;  // arguments after the name, for usage lines
  const char* summary;   // one line for the command list
  const char* help;      // the details for "orchardctl CMD --help" (may be empty)
  std::vector<FlagSpec> flags;
  int (*run)(Context& ctx, const ParsedArgs& args);
};

// Every subcommand, in the order the help lists them.
const std::vector<CommandSpec>& Commands();
const CommandSpec* FindCommand(const std::string& name);

// Flags accepted before or after any subcommand.
const std::vector<FlagSpec>& GlobalFlags();

std::string CommandUsage(const CommandSpec& cmd);
std::string GeneralUsage();

}  // namespace orchard::ctl
