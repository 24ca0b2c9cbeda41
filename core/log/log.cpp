#include "log/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>

#include "util/utf8.h"

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

constexpr char kHex[] = "0123456789abcdef";

void AppendHexByte(std::string* out, unsigned char c) {
  const char esc[4] = {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
  out->append(esc, 4);
}

// Well-formed characters that still must not reach a log raw: C1 controls
// (U+0080..U+009F), LRM/RLM, the line/paragraph separators, the bidi
// embeddings/overrides (U+202A..U+202E) and isolates (U+2066..U+2069).
bool DangerousCodePoint(std::string_view s, size_t i, size_t n) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  const auto b1 = static_cast<unsigned char>(s[i + 1]);
  if (n == 2) return b0 == 0xC2 && b1 <= 0x9F;
  if (n == 3 && b0 == 0xE2) {
    const auto b2 = static_cast<unsigned char>(s[i + 2]);
    if (b1 == 0x80) return b2 == 0x8E || b2 == 0x8F || (b2 >= 0xA8 && b2 <= 0xAE);
    if (b1 == 0x81) return b2 >= 0xA6 && b2 <= 0xA9;
  }
  return false;
}

// True if c is printable ASCII that passes through unchanged (quoted: also
// not '"' or '\\').
bool PlainAscii(unsigned char c, bool quoted) {
  if (c < 0x20 || c >= 0x7F) return false;
  return !quoted || (c != '"' && c != '\\');
}

void Escape(std::string* out, std::string_view s, bool quoted) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (PlainAscii(c, quoted)) {
      size_t j = i + 1;
      while (j < s.size() && PlainAscii(static_cast<unsigned char>(s[j]), quoted)) ++j;
      out->append(s.data() + i, j - i);
      i = j;
      continue;
    }
    if (c >= 0x80) {
      const size_t n = Utf8Length(s, i);
      if (n != 0 && !DangerousCodePoint(s, i, n)) {
        out->append(s.data() + i, n);
      } else if (n != 0) {
        for (size_t k = 0; k < n; ++k) AppendHexByte(out, static_cast<unsigned char>(s[i + k]));
      } else {
        AppendHexByte(out, c);
        i += 1;
        continue;
      }
      i += n;
      continue;
    }
    switch (c) {
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      default: AppendHexByte(out, c);
    }
    ++i;
  }
}

// Does s need Escape (unquoted)? Fast path: printable ASCII only.
bool NeedsEscape(std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7F) return true;
  }
  return false;
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

void AppendEscaped(std::string* out, std::string_view text) { Escape(out, text, false); }

std::string Quote(std::string_view value, size_t max_bytes) {
  const bool cut = value.size() > max_bytes;
  if (cut) value = value.substr(0, max_bytes);
  bool plain = !value.empty() && !cut;
  for (size_t i = 0; plain && i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c == ' ' || c == '=' || !PlainAscii(c, true)) plain = false;
  }
  if (plain) return std::string(value);
  std::string out;
  out.reserve(value.size() + 8);
  out += '"';
  Escape(&out, value, true);
  if (cut) out += "...";
  out += '"';
  return out;
}

void Write(const char* module, Level level, std::string_view message) {
  auto l = Logger();
  auto spd = ToSpd(level);
  if (!l->should_log(spd)) return;
  if (!NeedsEscape(message)) {
    l->log(spd, "module={} {}", module, message);
    return;
  }
  std::string escaped;
  escaped.reserve(message.size() + 16);
  AppendEscaped(&escaped, message);
  l->log(spd, "module={} {}", module, escaped);
}

}  // namespace orchard::log
