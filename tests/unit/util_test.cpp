#include <catch2/catch.hpp>

#include "util/encoding.h"
#include "util/record.h"
#include "util/status.h"

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
