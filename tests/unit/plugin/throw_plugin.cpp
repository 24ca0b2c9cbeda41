// A C++ test plugin through <orchard/plugin.hpp> whose OnEvent throws: the
// header must turn the exception into ORCHARD_ERR_INTERNAL with its message.
#include <stdexcept>

#include "orchard/plugin.hpp"

namespace {
class Thrower : public orchard::plugin::Plugin {
 public:
  orchard_status OnEvent(orchard::plugin::Run& run, const orchard::plugin::Event& ev) override {
    (void)run.KvPut("before", "throw");
    if (ev.type() == ORCHARD_EVENT_ENROLLMENT_ENROLLED) throw std::runtime_error("boom from the plugin");
    throw 42;  // not even a std::exception
  }
};
}  // namespace

ORCHARD_PLUGIN_DEFINE(Thrower, "thrower", "0.1", 1, ORCHARD_EVENT_ENROLLMENT_ENROLLED, ORCHARD_EVENT_COMMAND_ACKNOWLEDGED)
