// Thin logging facade over spdlog, so that spdlog stays out of widely included
// headers. One named logger per module ("store", "protocol", ...). Messages are
// key=value fields, e.g. Info(kLog, "event=checkin type=Authenticate id={}", id).
// Never pass secrets (push magic, tokens, keys, API keys).
// Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

namespace orchard::log {

enum class Level { kDebug, kInfo, kWarn, kError };

// Sets the global level and optional JSON-less pattern; called once by main.
void Configure(Level level);
Level ParseLevel(std::string_view name, bool* ok);

void Write(const char* module, Level level, std::string_view message);

template <typename... Args>
void Debug(const char* module, fmt::format_string<Args...> f, Args&&... args) {
  Write(module, Level::kDebug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Info(const char* module, fmt::format_string<Args...> f, Args&&... args) {
  Write(module, Level::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Warn(const char* module, fmt::format_string<Args...> f, Args&&... args) {
  Write(module, Level::kWarn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Error(const char* module, fmt::format_string<Args...> f, Args&&... args) {
  Write(module, Level::kError, fmt::format(f, std::forward<Args>(args)...));
}

bool Enabled(Level level);

}  // namespace orchard::log
