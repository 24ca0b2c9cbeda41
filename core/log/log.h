// Thin logging facade over spdlog, so that spdlog stays out of widely included
// headers. One named logger per module ("store", "protocol", ...). Messages are
// key=value fields, e.g. Info(kLog, "event=checkin type=Authenticate id={}", id).
// Never pass secrets (push magic, tokens, keys, API keys).
//
// Untrusted text (anything a client sent: MessageType, UDID, CommandUUID,
// serial, RequestType, paths, headers, error messages that quote them):
//   - Write escapes every control byte (\n, \r, \t, \x00 ... \x1f, \x7f), the
//     C1 controls, U+2028/U+2029, the bidi overrides and every byte of invalid
//     UTF-8 as \n, \r, \t or \xNN, so one call always logs exactly one line and
//     nothing reaches a terminal raw. This covers every call site.
//   - A value can still forge another field with a space, '=' or '"'
//     (serial="x level=error"): put untrusted values through Quote, e.g.
//       Warn(kLog, "event=refused udid={} reason={}", log::Quote(udid), log::Quote(why));
//     and do not add quotes around the placeholder yourself.
// Thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace orchard::log {

enum class Level { kDebug, kInfo, kWarn, kError };

// Sets the global level and optional JSON-less pattern; called once by main.
void Configure(Level level);
Level ParseLevel(std::string_view name, bool* ok);

// Logs one line; control bytes and invalid UTF-8 in message are escaped.
void Write(const char* module, Level level, std::string_view message);

// A key=value field value for untrusted text. Returned unchanged when it is a
// non-empty run of printable characters without space, '"', '=' or '\\';
// otherwise in double quotes, with '"' and '\\' backslash-escaped and control
// bytes / invalid UTF-8 escaped as in Write. Values longer than max_bytes are
// cut there and end in "..." inside the quotes.
std::string Quote(std::string_view value, size_t max_bytes = 512);

// Appends text to out with control bytes and invalid UTF-8 escaped as Write
// does (no quoting). Exposed for tests and for callers that build messages.
void AppendEscaped(std::string* out, std::string_view text);

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
