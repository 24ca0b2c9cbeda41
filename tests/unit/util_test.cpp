#include <catch2/catch.hpp>

#include "util/encoding.h"
#include "util/record.h"
#include "util/status.h"
#include "util/utf8.h"

using namespace orchard;

TEST_CASE("base64 round trip and whitespace", "[util]") {
  for (const std::string& s : std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    auto enc = Base64Encode(s);
    auto dec = Base64Decode(enc);
    REQUIRE(dec);
    CHECK(*dec == s);
  }
  CHECK(*Base64Decode("aGVs\n\tbG8=") == "hello");
  CHECK_FALSE(Base64Decode("aGV*bG8="));
  CHECK_FALSE(Base64Decode("a"));
  CHECK_FALSE(Base64Decode("aGVsbG8=x"));
}

TEST_CASE("hex, percent and uuid", "[util]") {
  CHECK(HexEncode("\x01\xab") == "01ab");
  CHECK(*HexDecode("01AB") == "\x01\xab");
  CHECK_FALSE(HexDecode("0g"));
  CHECK(*PercentDecode("a%2Fb%0A") == "a/b\n");
  CHECK_FALSE(PercentDecode("%2"));
  CHECK(*PercentDecode(PercentEncode("-----BEGIN x/+=\n")) == "-----BEGIN x/+=\n");
  auto u = NewUuid();
  CHECK(u.size() == 36);
  CHECK(u[14] == '4');
  CHECK(u != NewUuid());
}

TEST_CASE("secret comparison", "[util]") {
  CHECK(SecretEquals("key-1", "key-1"));
  CHECK_FALSE(SecretEquals("key-1", "key-2"));
  CHECK_FALSE(SecretEquals("key", "key-1"));
}

TEST_CASE("records grow at the end and detect truncation", "[util]") {
  RecordWriter w;
  w.PutString("abc");
  w.PutSigned(-5);
  w.PutVarint(300);
  w.PutBool(true);
  std::string data = w.Take();
  RecordReader r(data);
  CHECK(r.GetString() == "abc");
  CHECK(r.GetSigned() == -5);
  CHECK(r.GetVarint() == 300);
  CHECK(r.GetBool());
  CHECK(r.GetString().empty());  // a field added later reads as default
  CHECK_FALSE(r.corrupt());
  RecordReader t(std::string_view(data).substr(0, 2));
  t.GetString();
  CHECK(t.corrupt());
}

TEST_CASE("big-endian keys sort numerically", "[util]") {
  std::string a, b;
  PutBigEndian64(&a, 255);
  PutBigEndian64(&b, 256);
  CHECK(a < b);
  CHECK(GetBigEndian64(b) == 256);
  CHECK(FormatRfc3339(0) == "1970-01-01T00:00:00Z");
}

TEST_CASE("UTF-8: well-formed sequences decode, everything else is refused, and encoding round-trips", "[util]") {
  uint32_t cp = 0;
  CHECK(DecodeUtf8("A", 0, &cp) == 1);
  CHECK(cp == 0x41);
  CHECK(DecodeUtf8("\xC3\xA9", 0, &cp) == 2);  // U+00E9
  CHECK(cp == 0xE9);
  CHECK(DecodeUtf8("\xE2\x82\xAC", 0, &cp) == 3);  // U+20AC
  CHECK(cp == 0x20AC);
  CHECK(DecodeUtf8("\xF0\x9F\x8D\x8F", 0, &cp) == 4);  // U+1F34F
  CHECK(cp == 0x1F34F);
  CHECK(DecodeUtf8("\xF4\x8F\xBF\xBF", 0, &cp) == 4);  // U+10FFFF, the last
  // Table 3-7's exclusions: overlong forms, surrogates, beyond U+10FFFF, stray
  // continuation bytes, lead bytes that never occur, and truncation.
  for (const char* bad : {"\xC0\x80", "\xC1\xBF", "\xE0\x80\x80", "\xE0\x9F\xBF", "\xED\xA0\x80",
                          "\xED\xBF\xBF", "\xF0\x80\x80\x80", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80",
                          "\x80", "\xBF", "\xFE", "\xFF", "\xC3", "\xE2\x82", "\xF0\x9F\x8D", "\xC3\x41"}) {
    INFO(bad);
    CHECK(Utf8Length(bad, 0) == 0);
    CHECK_FALSE(IsValidUtf8(bad));
  }
  CHECK(IsValidUtf8(""));
  CHECK(IsValidUtf8("plain \xC3\xA9t\xC3\xA9 \xF0\x9F\x8D\x8F"));
  CHECK_FALSE(IsValidUtf8(std::string("ok\0then\xFF", 8)));
  CHECK(IsValidUtf8(std::string("nul \0 is a character", 20)));
  // Every scalar value encodes to a sequence that decodes back to it.
  for (uint32_t v = 0; v <= 0x10FFFF; v += (v < 0x1000 ? 1 : 97)) {
    if (v >= 0xD800 && v <= 0xDFFF) continue;
    std::string s;
    AppendUtf8(&s, v);
    uint32_t back = 0;
    REQUIRE(DecodeUtf8(s, 0, &back) == s.size());
    REQUIRE(back == v);
  }
}
