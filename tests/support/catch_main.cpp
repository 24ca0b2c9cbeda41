// The Catch2 main shared by every test binary. On top of Catch2's own:
//  - a test filter that matches no test case fails (exit 2, Catch2's `--warn NoTests`)
//    instead of passing with "No tests ran": a ctest entry whose name does not reach
//    the binary intact (e.g. split at ';') can no longer pass without running;
//  - a run in which a test skipped (ORCHARD_SKIP, support/skip.h) and nothing failed
//    exits with kSkipExitCode, which ctest reports as "Skipped".
#define CATCH_CONFIG_RUNNER
#include <atomic>
#include <catch2/catch.hpp>

#include "support/skip.h"

namespace orchard::testing {
namespace {

std::atomic<int>& SkipCount() {
  static std::atomic<int> count{0};
  return count;
}

}  // namespace

void NoteSkipped() { SkipCount().fetch_add(1); }

}  // namespace orchard::testing

int main(int argc, char* argv[]) {
  using orchard::testing::kSkipExitCode;
  Catch::Session session;
  int rc = session.applyCommandLine(argc, argv);
  if (rc != 0) return rc;
  Catch::ConfigData& config = session.configData();
  config.warnings =
      static_cast<Catch::WarnAbout::What>(config.warnings | Catch::WarnAbout::NoTests);
  rc = session.run();
  // Catch2 returns the number of failed assertions: keep a failure from reading as a skip.
  if (rc == kSkipExitCode) return kSkipExitCode + 1;
  if (rc == 0 && orchard::testing::SkipCount().load() > 0) return kSkipExitCode;
  return rc;
}
