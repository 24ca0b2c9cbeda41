// libFuzzer target for the device message decoders: check-in messages and
// command reports. Any input must give a value or a Status, never a crash; a
// decoded message must resolve to a non-empty enrollment id under its device.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/messages.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  orchard::plist::Limits limits{64 * 1024, 32};
  auto checkin = orchard::protocol::DecodeCheckin(body, limits);
  if (checkin.ok()) {
    const auto& ids = checkin->ids;
    if (ids.id.empty() || ids.device_id.empty() || ids.id.rfind(ids.device_id, 0) != 0) abort();
    if (checkin->message_type.empty()) abort();
    (void)orchard::protocol::WithoutSecrets(checkin->body);
  }
  auto report = orchard::protocol::DecodeReport(body, limits);
  if (report.ok()) {
    if (report->ids.id.empty() || report->status.empty()) abort();
    if (report->status != "Idle" && report->command_uuid.empty()) abort();
  }
  return 0;
}
