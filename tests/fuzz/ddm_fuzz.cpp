// libFuzzer target for what devices and admins send to DDM: every input is
// parsed as a StatusReport (core/ddm/status.h) and as an uploaded declaration
// (core/ddm/declarations.h) with small limits. Whatever parses must hold the
// invariants: status item names non-empty, values canonical JSON that
// CanonicalJson leaves unchanged; a declaration's ServerToken is 64 hex
// characters and does not change when its canonical payload is parsed again.
// Any violation abort()s so libFuzzer records the input.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ddm/declarations.h"
#include "ddm/status.h"

using namespace orchard::ddm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  StatusLimits sl;
  sl.max_report_bytes = 64 * 1024;
  sl.max_depth = 16;
  sl.max_items = 256;
  sl.max_value_bytes = 8 * 1024;
  auto report = ParseStatusReport(in, sl);
  if (report.ok()) {
    for (const auto& [name, value] : report->items) {
      if (name.empty()) std::abort();
      auto canon = CanonicalJson(value, 64);
      if (!canon.ok() || *canon != value) std::abort();
    }
  }
  Limits dl;
  dl.max_declaration_bytes = 64 * 1024;
  dl.max_depth = 16;
  auto d = ParseDeclaration(in, dl);
  if (d.ok()) {
    if (d->server_token.size() != 64 || d->server_token != ServerTokenOf(*d)) std::abort();
    auto again = ParseDeclaration(DeviceJson(*d), dl);
    if (!again.ok() || again->server_token != d->server_token || again->payload_json != d->payload_json) std::abort();
  }
  return 0;
}
