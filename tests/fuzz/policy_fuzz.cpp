// Fuzzes the policy sandbox: arbitrary text is loaded as a policy file and, if
// it loads, its handlers run on an event. Whatever the script does, the engine
// must return (a load error or a run outcome) within its budgets, never crash,
// hang or leak (ASan/LSan).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "automation/host.h"
#include "policy/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view src(reinterpret_cast<const char*>(data), size);
  orchard::policy::SandboxLimits limits;
  limits.instructions = 200000;
  limits.memory_bytes = 4u << 20;
  limits.wall_ms = 1000;
  limits.pattern_steps = 200000;
  auto p = orchard::policy::Policy::Load("fuzz", src, "fuzz.lua", limits);
  if (!p.ok()) return 0;
  orchard::automation::MemoryHost host;
  orchard::events::Event ev;
  ev.seq = 1;
  ev.type = "command.acknowledged";
  ev.enrollment_id = "DEV";
  ev.request_type = "SecurityInfo";
  orchard::plist::Value payload;
  payload.Set("Status", orchard::plist::Value::String("Acknowledged"));
  orchard::policy::RunInput in{"policy:fuzz", "0.1", 0, false};
  orchard::automation::Decisions d;
  (void)(*p)->HandleEvent(in, ev, payload, &host, &d);
  ev.type = "policy.run";
  (void)(*p)->HandleEvent(in, ev, payload, &host, &d);
  return 0;
}
