// Prometheus text-format metrics: HTTP requests by route and status, a latency
// histogram per route, and gauges supplied by callbacks at scrape time (queue
// depth, enrollments by state, ...).
// Thread-safety: all methods are safe for concurrent use.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace orchard::http {

class Metrics {
 public:
  // route is a fixed label (e.g. "mdm_checkin", "api_enqueue"), not the raw path.
  void ObserveRequest(std::string_view route, int status, double seconds);
  // Adds a named counter increment (e.g. "orchard_device_messages_total{type=\"Idle\"}").
  void Increment(const std::string& series, uint64_t delta = 1);
  // Registers a callback that appends complete exposition lines (with # HELP/TYPE).
  void AddCollector(std::function<void(std::string* out)> collector);
  std::string Render() const;

  static constexpr std::array<double, 12> kBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                      0.01,   0.025,   0.05,   0.1,   0.5,    2.5};

 private:
  struct Histogram {
    std::array<uint64_t, kBuckets.size()> buckets{};
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, Histogram> latency_;
  std::map<std::string, uint64_t> counters_;
  std::vector<std::function<void(std::string*)>> collectors_;
};

}  // namespace orchard::http
