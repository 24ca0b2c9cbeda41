// Test data checked into tests/fixtures (licences and origin: tests/fixtures/README.md).
// Every test reads its fixtures through here, never from outside the source tree, so the
// suite behaves the same in any clone. A missing fixture is a broken checkout: tests
// REQUIRE it rather than skip.
#pragma once

#include <string>

namespace orchard::testing {

// Absolute path of tests/fixtures/<relative> in the source tree, e.g.
// FixturePath("devices/Authenticate.1.plist").
inline std::string FixturePath(const std::string& relative) {
  return std::string(ORCHARD_SOURCE_DIR) + "/tests/fixtures/" + relative;
}

}  // namespace orchard::testing
