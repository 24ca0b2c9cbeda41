// The installed plugin SDK end to end: `cmake --install` of this build tree into
// a temporary prefix, the prefix moved elsewhere (it must be relocatable),
// examples/plugin-out-of-tree copied out of the source tree and built against
// the moved prefix alone (find_package(Orchard) through CMAKE_PREFIX_PATH),
// orchard-plugin.pc checked with pkg-config, then the built plugin loaded by the
// real orchardd and seen counting a device's enrollment events in its kv
// namespace.
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "plist/plist.h"
#include "support/fixtures.h"
#include "support/orchardd_process.h"

namespace {

namespace fs = std::filesystem;
using orchard::testing::HttpCall;
using orchard::testing::OrchardProcess;
using orchard::testing::ReadFile;
using orchard::testing::WriteFile;

constexpr char kApiKey[] = "0123456789abcdef0123";
constexpr char kUdid[] = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69";
constexpr char kSerial[] = "F5JM992LF193";
constexpr char kCheckinType[] = "Content-Type: application/x-apple-aspen-mdm-checkin";

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct ShRun {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

// Runs a shell command line, stdin from /dev/null, stderr merged into out.
ShRun Sh(const std::string& cmd) {
  ShRun r;
  FILE* p = popen(("(" + cmd + ") 2>&1 </dev/null").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

#define REQUIRE_SH(run)             \
  do {                              \
    INFO("output:\n" << (run).out); \
    REQUIRE((run).exit_code == 0);  \
  } while (0)

template <class F>
bool WaitFor(F cond, std::chrono::seconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

struct TempDir {
  std::string path = orchard::testing::MakeTempDir("orchard-sdk-it");
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("the installed SDK builds examples/plugin-out-of-tree and orchardd loads and runs it",
          "[integration][plugin][sdk]") {
  TempDir tmp;
  const std::string cmake = ShellQuote(ORCHARD_CMAKE_COMMAND);

  // 1. Install from this build tree, then move the prefix: nothing may point back
  // to the build or the install location.
  const std::string installed = tmp.path + "/installed";
  REQUIRE_SH(Sh(cmake + " --install " + ShellQuote(ORCHARD_BINARY_DIR) + " --prefix " +
                ShellQuote(installed)));
  const std::string prefix = tmp.path + "/moved";
  fs::rename(installed, prefix);
  const std::string cmake_dir = prefix + "/" ORCHARD_INSTALL_LIBDIR "/cmake/Orchard";
  const std::string pc_dir = prefix + "/" ORCHARD_INSTALL_LIBDIR "/pkgconfig";
  for (const char* f :
       {"include/orchard/plugin.h", "include/orchard/plugin.hpp", "include/orchard/events.h"})
    CHECK(fs::is_regular_file(prefix + "/" + f));
  // Only the public headers: no internal header of core/.
  size_t headers = 0;
  for (const auto& e : fs::recursive_directory_iterator(prefix + "/include"))
    headers += e.is_regular_file();
  CHECK(headers == 3);
  CHECK(fs::is_regular_file(prefix + "/bin/orchardd"));
  CHECK(fs::is_regular_file(prefix + "/bin/orchardctl"));
  for (const auto& e : fs::directory_iterator(cmake_dir)) {
    const std::string text = ReadFile(e.path().string());
    INFO(e.path());
    CHECK(text.find(ORCHARD_BINARY_DIR) == std::string::npos);
    CHECK(text.find(ORCHARD_SOURCE_DIR) == std::string::npos);
    CHECK(text.find(installed) == std::string::npos);
  }
  const std::string pc = ReadFile(pc_dir + "/orchard-plugin.pc");
  REQUIRE(!pc.empty());
  CHECK(pc.find(installed) == std::string::npos);
  CHECK(pc.find(ORCHARD_SOURCE_DIR) == std::string::npos);

  // 2. pkg-config finds the moved prefix's headers, and a strict C99 file
  // compiles with just its Cflags.
  const std::string pkgconfig = "PKG_CONFIG_PATH=" + ShellQuote(pc_dir) + " pkg-config ";
  ShRun version = Sh(pkgconfig + "--modversion orchard-plugin");
  REQUIRE_SH(version);
  CHECK(version.out == std::string(ORCHARD_VERSION) + "\n");
  ShRun cflags = Sh(pkgconfig + "--cflags orchard-plugin");
  REQUIRE_SH(cflags);
  REQUIRE(cflags.out.rfind("-I", 0) == 0);
  std::string include_dir = cflags.out.substr(2);
  include_dir.erase(include_dir.find_last_not_of(" \n") + 1);
  CHECK(fs::equivalent(include_dir, prefix + "/include"));
  REQUIRE(WriteFile(tmp.path + "/c99.c",
                    "#include <orchard/plugin.h>\n"
                    "int abi_major(void) { return ORCHARD_PLUGIN_ABI_MAJOR; }\n"));
  REQUIRE_SH(Sh(ShellQuote(ORCHARD_C_COMPILER) + " -std=c99 -pedantic -Werror -fsyntax-only " +
                "-I" + ShellQuote(include_dir) + " " + ShellQuote(tmp.path + "/c99.c")));

  // 3. The example, copied out of the source tree, configured and built against
  // the moved prefix alone.
  const std::string src = tmp.path + "/src";
  fs::copy(std::string(ORCHARD_SOURCE_DIR) + "/examples/plugin-out-of-tree", src,
           fs::copy_options::recursive);
  const std::string build = tmp.path + "/build";
  std::string launcher;
  if (std::string(ORCHARD_CCACHE).size() > 0)
    launcher = " -DCMAKE_CXX_COMPILER_LAUNCHER=" + ShellQuote(ORCHARD_CCACHE);
  REQUIRE_SH(Sh(cmake + " -S " + ShellQuote(src) + " -B " + ShellQuote(build) +
                " -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=" + ShellQuote(prefix) +
                launcher));
  // find_package(Orchard) found the moved prefix, not some other installation.
  CHECK(ReadFile(build + "/CMakeCache.txt").find("Orchard_DIR:PATH=" + cmake_dir + "\n") !=
        std::string::npos);
  REQUIRE_SH(Sh(cmake + " --build " + ShellQuote(build)));
  const std::string so = build + "/event_counter.so";
  REQUIRE(fs::is_regular_file(so));

  // 4. The real orchardd loads it from plugin.dir and the plugin acts.
  const std::string plugins = tmp.path + "/plugins";
  fs::create_directory(plugins);
  REQUIRE(chmod(plugins.c_str(), 0755) == 0);
  fs::copy_file(so, plugins + "/event_counter.so");
  REQUIRE(chmod((plugins + "/event_counter.so").c_str(), 0644) == 0);
  OrchardProcess server(tmp.path + "/data",
                        {"--insecure-dev", "--api-key", kApiKey, "--plugin-dir", plugins});
  struct LogCleanup {
    std::string path;
    ~LogCleanup() {
      std::error_code ec;
      fs::remove(path, ec);
    }
  } log_cleanup{server.log_path()};
  const bool started = server.Start();
  INFO("orchardd log:\n" << ReadFile(server.log_path()));
  REQUIRE(started);
  const std::string key = std::string("X-API-Key: ") + kApiKey;

  auto status = HttpCall("GET", server.url() + "/v1/plugins/event_counter", "", {key});
  REQUIRE(status.status == 200);
  auto plugin = orchard::plist::ParseJson(status.body);
  REQUIRE(plugin.ok());
  CHECK(plugin->GetString("status") == "loaded");
  CHECK(plugin->GetString("version") == "1.0.0");
  CHECK(plugin->GetString("file") == plugins + "/event_counter.so");

  // A device enrolls: the plugin counts each event type for it in its kv
  // namespace, logs the enrollment events with their count and the serial
  // number it read back through the host's device call.
  auto checkin = [&](const char* fixture) {
    return HttpCall("PUT", server.url() + "/mdm",
                    ReadFile(orchard::testing::FixturePath(std::string("devices/") + fixture)),
                    {kCheckinType});
  };
  REQUIRE(checkin("Authenticate.1.plist").status == 200);
  REQUIRE(checkin("TokenUpdate.1.plist").status == 200);
  const std::string line = std::string("event=plugin_log plugin=event_counter message=\"");
  auto logged = [&](const std::string& message) {
    return ReadFile(server.log_path()).find(line + message + "\"") != std::string::npos;
  };
  CHECK(WaitFor(
      [&] { return logged("enrolled device=" + std::string(kUdid) + " serial=" + kSerial); }));
  CHECK(WaitFor([&] {
    return logged("device=" + std::string(kUdid) + " event=enrollment.authenticated count=1");
  }));
  CHECK(WaitFor([&] {
    return logged("device=" + std::string(kUdid) + " event=enrollment.token_updated count=1");
  }));
  // A second TokenUpdate: the count read back from the kv namespace goes to 2.
  REQUIRE(checkin("TokenUpdate.1.plist").status == 200);
  CHECK(WaitFor([&] {
    return logged("device=" + std::string(kUdid) + " event=enrollment.token_updated count=2");
  }));

  status = HttpCall("GET", server.url() + "/v1/plugins/event_counter", "", {key});
  REQUIRE(status.status == 200);
  plugin = orchard::plist::ParseJson(status.body);
  REQUIRE(plugin.ok());
  const orchard::plist::Value* handled = plugin->Find("handled");
  REQUIRE(handled);
  REQUIRE(handled->AsInteger());
  CHECK(*handled->AsInteger() >= 4);
  const orchard::plist::Value* errors = plugin->Find("errors");
  REQUIRE(errors);
  REQUIRE(errors->AsInteger());
  CHECK(*errors->AsInteger() == 0);
  CHECK(server.Stop() == 0);
}
