// orchardctl: command-line client for orchardd's admin API.
#include <curl/curl.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "ctl/args.h"
#include "ctl/client.h"
#include "ctl/commands.h"

namespace {

using namespace orchard::ctl;

int UsageError(const std::string& message) {
  std::fprintf(stderr, "orchardctl: %s\nrun \"orchardctl --help\" for usage\n", message.c_str());
  return kExitUsage;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Finds the subcommand: the first argument that is neither a global flag nor
// a global flag's value. Removes it from args; "" if there is none.
orchard::Result<std::string> TakeCommand(std::vector<std::string>* args) {
  for (size_t i = 0; i < args->size(); ++i) {
    const std::string& a = (*args)[i];
    if (a == "--") return orchard::Status::InvalidArgument("\"--\" before the command");
    if (a.rfind("--", 0) == 0) {
      std::string name =
          a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
      const FlagSpec* spec = nullptr;
      for (const auto& s : GlobalFlags())
        if (s.name == name) spec = &s;
      if (!spec)
        return orchard::Status::InvalidArgument("unknown option --" + name +
                                                " (command options go after the command)");
      if (spec->takes_value && a.find('=') == std::string::npos) ++i;
      continue;
    }
    if (a.size() >= 2 && a[0] == '-')
      return orchard::Status::InvalidArgument("unknown option " + a);
    std::string cmd = a;
    args->erase(args->begin() + static_cast<long>(i));
    return cmd;
  }
  return std::string();
}

int Run(std::vector<std::string> args) {
  auto command_name = TakeCommand(&args);
  if (!command_name.ok()) return UsageError(command_name.status().message());
  if (command_name->empty()) {
    auto globals = ParseArgs(args, GlobalFlags());
    if (globals.ok() && globals->Has("help")) {
      std::fputs(GeneralUsage().c_str(), stdout);
      return kExitOk;
    }
    std::fputs(GeneralUsage().c_str(), stderr);
    return kExitUsage;
  }
  if (*command_name == "help") {
    // "help COMMAND": the first positional (global flags may come before or after).
    auto parsed = ParseArgs(args, GlobalFlags());
    if (!parsed.ok()) return UsageError(parsed.status().message());
    const std::vector<std::string>& words = parsed->positionals;
    const CommandSpec* cmd = words.empty() ? nullptr : FindCommand(words[0]);
    if (!words.empty() && !cmd) return UsageError("unknown command \"" + words[0] + "\"");
    std::fputs(cmd ? CommandUsage(*cmd).c_str() : GeneralUsage().c_str(), stdout);
    return kExitOk;
  }
  const CommandSpec* cmd = FindCommand(*command_name);
  if (!cmd) return UsageError("unknown command \"" + *command_name + "\"");

  std::vector<FlagSpec> specs = GlobalFlags();
  specs.insert(specs.end(), cmd->flags.begin(), cmd->flags.end());
  auto parsed = ParseArgs(args, specs);
  if (!parsed.ok()) {
    std::fprintf(stderr, "orchardctl %s: %s\nusage: orchardctl %s %s\n", cmd->name,
                 parsed.status().message().c_str(), cmd->name, cmd->synopsis);
    return kExitUsage;
  }
  if (parsed->Has("help")) {
    std::fputs(CommandUsage(*cmd).c_str(), stdout);
    return kExitOk;
  }

  ClientOptions options;
  options.base_url = parsed->Get("url", Env("ORCHARD_URL"));
  if (options.base_url.empty()) options.base_url = "http://127.0.0.1:9000";
  options.api_key = parsed->Get("api-key", Env("ORCHARD_API_KEY"));
  if (parsed->Has("api-key-file")) {
    std::ifstream f(parsed->Get("api-key-file"));
    if (!f) return UsageError("cannot read --api-key-file " + parsed->Get("api-key-file"));
    std::string line;
    std::getline(f, line);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    if (line.empty())
      return UsageError("--api-key-file " + parsed->Get("api-key-file") + " is empty");
    if (parsed->Has("api-key")) return UsageError("give --api-key or --api-key-file, not both");
    options.api_key = line;
  }
  options.ca_file = parsed->Get("cacert");
  if (parsed->Has("timeout")) {
    const std::string t = parsed->Get("timeout");
    char* end = nullptr;
    long secs = std::strtol(t.c_str(), &end, 10);
    if (t.empty() || *end != '\0' || secs < 1 || secs > 86400)
      return UsageError("--timeout must be a number of seconds from 1 to 86400");
    options.timeout_seconds = secs;
  }
  auto client = AdminClient::Create(options);
  if (!client.ok()) return UsageError(client.status().message());

  Context ctx;
  ctx.client = client->get();
  ctx.json = parsed->Has("json");
  ctx.api_key_set = !options.api_key.empty();
  return cmd->run(ctx, *parsed);
}

}  // namespace

int main(int argc, char** argv) {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    std::fputs("orchardctl: libcurl failed to initialise\n", stderr);
    return kExitFailed;
  }
  int rc = Run(std::vector<std::string>(argv + 1, argv + argc));
  std::fflush(stdout);
  curl_global_cleanup();
  return rc;
}
