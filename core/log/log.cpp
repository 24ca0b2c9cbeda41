#include "log/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>

namespace orchard::log {
namespace {

spdlog::level::level_enum ToSpd(Level l) {
  switch (l) {
    case Level::kDebug: return spdlog::level::debug;
    case Level::kInfo: return spdlog::level::info;
    case Level::kWarn: return spdlog::level::warn;
    case Level::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> Logger() {
  // spdlog keeps the registry; we create our single stderr logger once.
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_color_mt("orchard");
    l->set_pattern("ts=%Y-%m-%dT%H:%M:%S.%eZ level=%l %v", spdlog::pattern_time_type::utc);
    return l;
  }();
  return logger;
}

}  // namespace

void Configure(Level level) { Logger()->set_level(ToSpd(level)); }

Level ParseLevel(std::string_view name, bool* ok) {
  *ok = true;
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn") return Level::kWarn;
  if (name == "error") return Level::kError;
  *ok = false;
  return Level::kInfo;
}

bool Enabled(Level level) { return Logger()->should_log(ToSpd(level)); }

void Write(const char* module, Level level, std::string_view message) {
  auto l = Logger();
  auto spd = ToSpd(level);
  if (!l->should_log(spd)) return;
  l->log(spd, "module={} {}", module, message);
}

}  // namespace orchard::log
