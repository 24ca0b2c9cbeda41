// Skipping a test case honestly. Catch2 v2 has no skip, and a test body that returns
// early passes; ORCHARD_SKIP instead makes ctest report the test as "Skipped":
// the shared main (catch_main.cpp) exits with kSkipExitCode when a test skipped and
// nothing failed, and orchard_test (tests/CMakeLists.txt) sets SKIP_RETURN_CODE to it.
// Only for what a test cannot control (a tool not installed), never for project files.
#pragma once

namespace orchard::testing {

inline constexpr int kSkipExitCode = 77;

// Records that the running test case skipped. Thread-safe; defined in catch_main.cpp.
void NoteSkipped();

}  // namespace orchard::testing

// Use in a TEST_CASE body (it returns from the enclosing function).
#define ORCHARD_SKIP(reason)           \
  do {                                 \
    WARN("SKIPPED: " << reason);       \
    ::orchard::testing::NoteSkipped(); \
    return;                            \
  } while (0)
