// event_counter: an Orchard plugin built out of tree against the installed SDK.
//
// For every event that names a device it counts the events of each type per
// device in its key-value namespace (key "count/<device>/<type>", value a
// decimal number) and logs the new count of enrollment.* events. When a device
// enrolls (enrollment.enrolled) it looks the device up and logs its serial
// number.
//
// Counting is exact despite at-least-once delivery: the kv writes of a run
// commit in the same transaction as the plugin's checkpoint, and a failed run
// commits nothing. Every event of one device arrives on the same lane, in
// order, so the read-modify-write of a device's counters never races.
#include <cstdlib>
#include <orchard/plugin.hpp>
#include <string>
#include <string_view>

namespace {

using orchard::plugin::Event;
using orchard::plugin::Run;

// The value of a top-level string member of a flat JSON object, or "" (enough
// for the host's device record; a real plugin would use a JSON library).
std::string JsonString(std::string_view json, std::string_view key) {
  const std::string needle = "\"" + std::string(key) + "\":\"";
  const size_t at = json.find(needle);
  if (at == std::string_view::npos) return "";
  const size_t start = at + needle.size();
  const size_t end = json.find('"', start);
  return end == std::string_view::npos ? "" : std::string(json.substr(start, end - start));
}

class EventCounter : public orchard::plugin::Plugin {
 public:
  orchard_status Init(std::string_view config_json) override {
    Log(ORCHARD_LOG_INFO, "event_counter ready, config " + std::string(config_json));
    return ORCHARD_OK;
  }

  orchard_status OnEvent(Run& run, const Event& ev) override {
    const std::string device(ev.enrollment_id());
    if (device.empty()) return ORCHARD_OK;  // not about a device
    const std::string type(ev.type());

    const std::string key = "count/" + device + "/" + type;
    std::string value;
    long long count = 0;
    orchard_status st = run.KvGet(key, &value);
    if (st == ORCHARD_OK) {
      count = std::strtoll(value.c_str(), nullptr, 10);
    } else if (st != ORCHARD_ERR_NOT_FOUND) {
      run.SetError("kv_get " + key + " failed");
      return st;  // retried by the host
    }
    ++count;
    st = run.KvPut(key, std::to_string(count));
    if (st != ORCHARD_OK) {
      run.SetError("kv_put " + key + " failed");
      return st;
    }

    if (type.rfind("enrollment.", 0) == 0)
      run.Log(ORCHARD_LOG_INFO,
              "device=" + device + " event=" + type + " count=" + std::to_string(count));
    if (type == ORCHARD_EVENT_ENROLLMENT_ENROLLED) {
      std::string json;
      if (run.Device("", &json) == ORCHARD_OK)
        run.Log(ORCHARD_LOG_INFO,
                "enrolled device=" + device + " serial=" + JsonString(json, "serial_number"));
    }
    return ORCHARD_OK;
  }
};

}  // namespace

// Name "event_counter", version 1.0.0, default lanes, every event type.
ORCHARD_PLUGIN_DEFINE(EventCounter, "event_counter", "1.0.0", 0, "*")
