// log::Write escapes what a client could put in a log line; log::Quote makes
// an untrusted value one key=value field.
#include <catch2/catch.hpp>

#include <string>

#include "log/log.h"
#include "support/stderr_capture.h"

using namespace orchard;
using namespace std::string_literals;
using orchard::testing::StderrCapture;

namespace {

std::string Escaped(const std::string& s) {
  std::string out;
  log::AppendEscaped(&out, s);
  return out;
}

}  // namespace

TEST_CASE("log escaping turns control bytes and invalid UTF-8 into visible escapes", "[log]") {
  CHECK(Escaped("plain text=1 ok") == "plain text=1 ok");
  CHECK(Escaped("a\nb\rc\td") == R"(a\nb\rc\td)");
  CHECK(Escaped("nul\0end"s) == R"(nul\x00end)");
  CHECK(Escaped("\x1b[31mred\x7f") == R"(\x1b[31mred\x7f)");
  // Well-formed UTF-8 stays readable.
  CHECK(Escaped("Bj\xc3\xb6rn \xe2\x82\xac \xf0\x9f\x8d\x8e") == "Bj\xc3\xb6rn \xe2\x82\xac \xf0\x9f\x8d\x8e");
  // Invalid: stray continuation, truncated sequence, overlong, surrogate, > U+10FFFF, 0xff.
  CHECK(Escaped("\x80") == R"(\x80)");
  CHECK(Escaped("\xc3(") == R"(\xc3()");
  CHECK(Escaped("\xe2\x82") == R"(\xe2\x82)");
  CHECK(Escaped("\xc0\xaf") == R"(\xc0\xaf)");
  CHECK(Escaped("\xed\xa0\x80") == R"(\xed\xa0\x80)");
  CHECK(Escaped("\xf4\x90\x80\x80") == R"(\xf4\x90\x80\x80)");
  CHECK(Escaped("\xff\xfe") == R"(\xff\xfe)");
  // Well-formed but dangerous: C1 control (NEL), line separator, bidi override.
  CHECK(Escaped("\xc2\x85") == R"(\xc2\x85)");
  CHECK(Escaped("\xe2\x80\xa8") == R"(\xe2\x80\xa8)");
  CHECK(Escaped("\xe2\x80\xae") == R"(\xe2\x80\xae)");
  // Write does not escape quotes or backslashes (Quote does).
  CHECK(Escaped(R"(a"b\c)") == R"(a"b\c)");
}

TEST_CASE("log Quote makes an untrusted value a single key=value field", "[log]") {
  CHECK(log::Quote("00008030-001A2D3E0C41802E") == "00008030-001A2D3E0C41802E");
  CHECK(log::Quote("") == R"("")");
  CHECK(log::Quote("two words") == R"("two words")");
  CHECK(log::Quote("x level=error") == R"("x level=error")");
  CHECK(log::Quote("a=b") == R"("a=b")");
  CHECK(log::Quote(R"(say "hi")") == R"("say \"hi\"")");
  CHECK(log::Quote(R"(back\slash)") == R"("back\\slash")");
  CHECK(log::Quote("l1\nts=x level=error") == R"("l1\nts=x level=error")");
  CHECK(log::Quote("\x1b[31m\0\xff"s) == R"("\x1b[31m\x00\xff")");
  CHECK(log::Quote("caf\xc3\xa9") == "\"caf\xc3\xa9\"");
  CHECK(log::Quote("abcdef", 3) == R"("abc...")");
}

TEST_CASE("log Write puts a message with newlines and escapes on one escaped line", "[log]") {
  StderrCapture cap;
  REQUIRE(cap.ok());
  log::Configure(log::Level::kInfo);
  log::Warn("test", "event=probe udid={} serial={} type={}", log::Quote("AB\nts=0 level=error forged=1"),
            "S\x1b[31m\0N\xff"s, "Idle\r\nX");
  const std::string text = cap.Text();
  INFO(text);
  // Exactly one line.
  REQUIRE(text.size() > 1);
  CHECK(text.find('\n') == text.size() - 1);
  CHECK(text.find(R"(udid="AB\nts=0 level=error forged=1")") != std::string::npos);
  CHECK(text.find(R"(serial=S\x1b[31m\x00N\xff)") != std::string::npos);
  CHECK(text.find(R"(type=Idle\r\nX)") != std::string::npos);
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.find('\0') == std::string::npos);
  CHECK(text.find('\r') == std::string::npos);
}
