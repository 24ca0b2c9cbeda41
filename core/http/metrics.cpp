#include "http/metrics.h"

#include <fmt/format.h>

namespace orchard::http {

void Metrics::ObserveRequest(std::string_view route, int status, double seconds) {
  std::lock_guard lock(mu_);
  ++requests_[{std::string(route), status}];
  Histogram& h = latency_[std::string(route)];
  for (size_t i = 0; i < kBuckets.size(); ++i)
    if (seconds <= kBuckets[i]) ++h.buckets[i];
  ++h.count;
  h.sum += seconds;
}

void Metrics::Increment(const std::string& series, uint64_t delta) {
  std::lock_guard lock(mu_);
  counters_[series] += delta;
}

void Metrics::AddCollector(std::function<void(std::string*)> collector) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string Metrics::Render() const {
  std::string out;
  std::vector<std::function<void(std::string*)>> collectors;
  {
    std::lock_guard lock(mu_);
    out += "# HELP orchard_http_requests_total HTTP requests by route and status.\n";
    out += "# TYPE orchard_http_requests_total counter\n";
    for (const auto& [key, n] : requests_)
      out += fmt::format("orchard_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", key.first,
                         key.second, n);
    out += "# HELP orchard_http_request_duration_seconds HTTP request latency by route.\n";
    out += "# TYPE orchard_http_request_duration_seconds histogram\n";
    for (const auto& [route, h] : latency_) {
      for (size_t i = 0; i < kBuckets.size(); ++i)
        out += fmt::format("orchard_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{}\"}} {}\n",
                           route, kBuckets[i], h.buckets[i]);
      out += fmt::format("orchard_http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}\n",
                         route, h.count);
      out += fmt::format("orchard_http_request_duration_seconds_sum{{route=\"{}\"}} {}\n", route, h.sum);
      out += fmt::format("orchard_http_request_duration_seconds_count{{route=\"{}\"}} {}\n", route,
                         h.count);
    }
    std::string last_name;
    for (const auto& [series, n] : counters_) {
      std::string name = series.substr(0, series.find('{'));
      if (name != last_name) {
        out += "# TYPE " + name + " counter\n";
        last_name = name;
      }
      out += fmt::format("{} {}\n", series, n);
    }
    collectors = collectors_;
  }
  for (const auto& c : collectors) c(&out);
  return out;
}

}  // namespace orchard::http
