#include "plist/plist.h"

#include <catch2/catch.hpp>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "support/strict_utf8.h"
#include "support/fixtures.h"
#include "util/encoding.h"

using namespace orchard;
using namespace orchard::plist;
using namespace std::string_literals;

namespace {

std::string Wrap(std::string_view inner) {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">" +
         std::string(inner) + "</plist>\n";
}

Value MustXml(std::string_view body, const Limits& limits = {}) {
  Result<Value> r = ParseXml(body, limits);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return std::move(r).value();
}

Value MustJson(std::string_view body, const Limits& limits = {}) {
  Result<Value> r = ParseJson(body, limits);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return std::move(r).value();
}

// The error of a parse that must fail with InvalidArgument.
std::string XmlError(std::string_view body, const Limits& limits = {}) {
  Result<Value> r = ParseXml(body, limits);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kInvalidArgument);
  return r.status().message();
}

std::string JsonError(std::string_view body, const Limits& limits = {}) {
  Result<Value> r = ParseJson(body, limits);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kInvalidArgument);
  return r.status().message();
}

std::string Repeat(std::string_view s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

std::string Nested(std::string_view open, std::string_view close, size_t n,
                   std::string_view leaf = "") {
  return Repeat(open, n) + std::string(leaf) + Repeat(close, n);
}

// A value holding every type, including boundary values.
Value EveryType() {
  std::string all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes += static_cast<char>(i);
  Dict inner;
  inner.emplace_back("empty dict", Value::MakeDict());
  inner.emplace_back("empty array", Value::MakeArray());
  inner.emplace_back("list", Value::MakeArray({Value::Integer(1), Value::String("two"),
                                               Value::MakeArray({Value::Bool(false)})}));
  Dict d;
  d.emplace_back("zeta", Value::String("first key, not sorted"));
  d.emplace_back("string", Value::String("Grüße <&> \"quoted\" 'single' \t tab\r\nCRLF ✓ 😀"));
  d.emplace_back("empty string", Value::String(""));
  d.emplace_back("spaces", Value::String("   "));
  d.emplace_back("int max", Value::Integer(std::numeric_limits<int64_t>::max()));
  d.emplace_back("int min", Value::Integer(std::numeric_limits<int64_t>::min()));
  d.emplace_back("int neg", Value::Integer(-42));
  d.emplace_back("int zero", Value::Integer(0));
  d.emplace_back("real", Value::Real(0.1));
  d.emplace_back("real integral", Value::Real(3.0));
  d.emplace_back("real big", Value::Real(1.7976931348623157e308));
  d.emplace_back("real denormal", Value::Real(4.9406564584124654e-324));
  d.emplace_back("real negative", Value::Real(-123.456e-7));
  d.emplace_back("true", Value::Bool(true));
  d.emplace_back("false", Value::Bool(false));
  d.emplace_back("date", Value::DateValue(1795448520));
  d.emplace_back("date before epoch", Value::DateValue(-1));
  d.emplace_back("date min", Value::DateValue(std::numeric_limits<int64_t>::min()));
  d.emplace_back("date max", Value::DateValue(std::numeric_limits<int64_t>::max()));
  d.emplace_back("data", Value::DataValue(all_bytes));
  d.emplace_back("empty data", Value::DataValue(""));
  d.emplace_back("key <&> escaped", Value::MakeDict(std::move(inner)));
  d.emplace_back("", Value::String("empty key"));
  return Value::MakeDict(std::move(d));
}

std::filesystem::path FixtureDir() { return orchard::testing::FixturePath("devices"); }

// Reads a device fixture (tests/fixtures/devices); empty optional when it is missing.
std::optional<std::string> ReadFixture(const std::string& name) {
  std::filesystem::path p = FixtureDir() / name;
  std::ifstream f(p, std::ios::binary);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

#define REQUIRE_FIXTURE(var, name)                    \
  std::optional<std::string> var = ReadFixture(name); \
  INFO("device fixture " << (FixtureDir() / name));   \
  REQUIRE(var)

}  // namespace

// ---------------------------------------------------------------- Value

TEST_CASE("TypeName names every type", "[plist]") {
  CHECK(std::string(TypeName(Type::kString)) == "string");
  CHECK(std::string(TypeName(Type::kInteger)) == "integer");
  CHECK(std::string(TypeName(Type::kReal)) == "real");
  CHECK(std::string(TypeName(Type::kBool)) == "bool");
  CHECK(std::string(TypeName(Type::kDate)) == "date");
  CHECK(std::string(TypeName(Type::kData)) == "data");
  CHECK(std::string(TypeName(Type::kArray)) == "array");
  CHECK(std::string(TypeName(Type::kDict)) == "dict");
}

TEST_CASE("Value dict helpers find, set in place, erase and read typed fields", "[plist]") {
  Value v;
  CHECK(v.is(Type::kDict));
  v.Set("a", Value::String("x"));
  v.Set("b", Value::Integer(2));
  v.Set("flag", Value::Bool(true));
  v.Set("blob", Value::DataValue("\x01\x02"));
  Value& replaced = v.Set("a", Value::String("y"));
  CHECK(*replaced.AsString() == "y");
  REQUIRE(v.AsDict()->size() == 4);
  CHECK(v.AsDict()->front().first == "a");  // replaced in place, not appended
  CHECK(v.GetString("a") == "y");
  CHECK(v.GetString("b").empty());  // not a string
  CHECK(v.GetString("missing").empty());
  REQUIRE(v.GetData("blob"));
  CHECK(*v.GetData("blob") == "\x01\x02");
  CHECK(v.GetData("a") == nullptr);
  CHECK(v.GetBool("flag", false));
  CHECK(v.GetBool("a", true));
  CHECK_FALSE(v.GetBool("missing", false));
  REQUIRE(v.Find("b"));
  CHECK(*v.Find("b")->AsInteger() == 2);
  CHECK(v.Erase("b"));
  CHECK_FALSE(v.Erase("b"));
  CHECK(v.Find("b") == nullptr);

  Value s = Value::String("not a dict");
  CHECK(s.Find("a") == nullptr);
  CHECK_FALSE(s.Erase("a"));
  CHECK(s.GetString("a").empty());
}

TEST_CASE("Value copies deeply, including from non-const lvalues", "[plist]") {
  Value original = EveryType();
  Value copy(original);  // non-const lvalue: must pick the copy constructor
  CHECK(copy == original);
  copy.Set("zeta", Value::Integer(1));
  CHECK_FALSE(copy == original);
  Dict d;
  d.emplace_back("k", original);
  CHECK(d[0].second == original);
}

// ---------------------------------------------------------------- XML parsing

TEST_CASE("ParseXml reads every scalar type", "[plist][xml]") {
  Value v = MustXml(Wrap(
      "<dict><key>s</key><string>hello</string><key>i</key><integer>42</integer>"
      "<key>r</key><real>1.5</real><key>t</key><true/><key>f</key><false/>"
      "<key>d</key><date>2026-11-23T15:42:00Z</date><key>b</key><data>aGVsbG8=</data></dict>"));
  CHECK(v.GetString("s") == "hello");
  CHECK(*v.Find("i")->AsInteger() == 42);
  CHECK(*v.Find("r")->AsReal() == 1.5);
  CHECK(*v.Find("t")->AsBool() == true);
  CHECK(*v.Find("f")->AsBool() == false);
  CHECK(v.Find("d")->AsDate()->unix_seconds == 1795448520);
  CHECK(*v.GetData("b") == "hello");
  CHECK(v.Find("b")->AsString() == nullptr);  // data is not a string
}

TEST_CASE("ParseXml accepts a bare scalar root and an empty string", "[plist][xml]") {
  CHECK(*MustXml(Wrap("<string>x</string>")).AsString() == "x");
  CHECK(*MustXml(Wrap("<string/>")).AsString() == "");
  CHECK(*MustXml(Wrap("<string></string>")).AsString() == "");
  CHECK(*MustXml(Wrap("<true></true>")).AsBool());
}

TEST_CASE("ParseXml reads 64-bit, negative, signed and hex integers", "[plist][xml]") {
  auto i = [](std::string_view text) {
    return *MustXml(Wrap("<integer>" + std::string(text) + "</integer>")).AsInteger();
  };
  CHECK(i("9223372036854775807") == std::numeric_limits<int64_t>::max());
  CHECK(i("-9223372036854775808") == std::numeric_limits<int64_t>::min());
  CHECK(i("-17") == -17);
  CHECK(i("+17") == 17);
  CHECK(i("0") == 0);
  CHECK(i("-0") == 0);
  CHECK(i(" \n\t42\n") == 42);
  CHECK(i("0x7fffffffffffffff") == std::numeric_limits<int64_t>::max());
  CHECK(i("-0x10") == -16);
  CHECK(i("007") == 7);
}

TEST_CASE("ParseXml rejects integer overflow and garbage with a precise message", "[plist][xml]") {
  CHECK(XmlError(Wrap("<dict><key>Foo</key><integer>12x</integer></dict>")) ==
        "plist: <integer> at /dict/Foo: not a 64-bit integer: '12x'");
  CHECK(XmlError(Wrap("<dict><key>Foo</key><integer>9223372036854775808</integer></dict>")) ==
        "plist: <integer> at /dict/Foo: out of 64-bit integer range: '9223372036854775808'");
  CHECK(XmlError(Wrap("<integer>-9223372036854775809</integer>")) ==
        "plist: <integer> at /integer: out of 64-bit integer range: '-9223372036854775809'");
  CHECK(XmlError(Wrap("<integer>99999999999999999999999</integer>"))
            .find("out of 64-bit integer range") != std::string::npos);
  for (const char* bad :
       {"", " ", "1.5", "--1", "+-1", "1 2", "0x", "0xg", "1e3", "abc", "18446744073709551616x"}) {
    INFO(bad);
    CHECK(XmlError(Wrap("<integer>" + std::string(bad) + "</integer>"))
              .find("not a 64-bit integer") != std::string::npos);
  }
}

TEST_CASE("ParseXml reads reals including CFPropertyList special values", "[plist][xml]") {
  auto r = [](std::string_view text) {
    return *MustXml(Wrap("<real>" + std::string(text) + "</real>")).AsReal();
  };
  CHECK(r("1.5") == 1.5);
  CHECK(r("-2e10") == -2e10);
  CHECK(r("+.5") == 0.5);
  CHECK(r("7") == 7.0);
  CHECK(r(" 0.1 ") == 0.1);
  CHECK(r("4.9406564584124654e-324") == 4.9406564584124654e-324);
  CHECK(std::isnan(r("nan")));
  CHECK(std::isnan(r("NaN")));
  CHECK(r("+infinity") == std::numeric_limits<double>::infinity());
  CHECK(r("-infinity") == -std::numeric_limits<double>::infinity());
  CHECK(r("inf") == std::numeric_limits<double>::infinity());
  CHECK(r("-Inf") == -std::numeric_limits<double>::infinity());
  CHECK(XmlError(Wrap("<real>1e999</real>")) ==
        "plist: <real> at /real: out of double range: '1e999'");
  for (const char* bad : {"", "abc", "1.5.5", "0x1p3", "1e", "--1", "nan(1)", "infinit"}) {
    INFO(bad);
    CHECK(XmlError(Wrap("<real>" + std::string(bad) + "</real>")).find("not a real number") !=
          std::string::npos);
  }
}

TEST_CASE("ParseXml decodes base64 data containing spaces, newlines and tabs", "[plist][xml]") {
  Value v = MustXml(Wrap("<data>\n\taGVs\n\tbG8g\r\n  d29y bGQ=\n\t</data>"));
  CHECK(v.AsData()->bytes == "hello world");
  CHECK(MustXml(Wrap("<data/>")).AsData()->bytes.empty());
  CHECK(MustXml(Wrap("<data>AAEC/w==</data>")).AsData()->bytes ==
        std::string("\x00\x01\x02\xff", 4));
}

TEST_CASE("ParseXml rejects bad base64", "[plist][xml]") {
  CHECK(XmlError(Wrap("<dict><key>Token</key><data>aGV*bG8=</data></dict>")) ==
        "plist: <data> at /dict/Token: invalid base64: 'aGV*bG8='");
  CHECK(XmlError(Wrap("<data>a</data>")).find("invalid base64") != std::string::npos);
  CHECK(XmlError(Wrap("<data>aGVsbG8=x</data>")).find("invalid base64") != std::string::npos);
}

TEST_CASE("ParseXml reads ISO 8601 dates", "[plist][xml]") {
  auto d = [](std::string_view text) {
    return MustXml(Wrap("<date>" + std::string(text) + "</date>")).AsDate()->unix_seconds;
  };
  CHECK(d("2026-11-23T15:42:00Z") == 1795448520);
  CHECK(d("1970-01-01T00:00:00Z") == 0);
  CHECK(d("1969-12-31T23:59:59Z") == -1);
  CHECK(d("2024-02-29T12:00:00Z") == 1709208000);
  CHECK(d("0001-01-01T00:00:00Z") == -62135596800);
  CHECK(d(" 2026-11-23T15:42:00Z\n") == 1795448520);
  CHECK(d("2026-11-23T17:42:00+02:00") == 1795448520);
  CHECK(d("2026-11-23T15:42:00.999Z") == 1795448520);
}

TEST_CASE("ParseXml rejects malformed dates", "[plist][xml]") {
  CHECK(XmlError(Wrap("<dict><key>When</key><date>yesterday</date></dict>")) ==
        "plist: <date> at /dict/When: not an ISO 8601 date: 'yesterday'");
  for (const char* bad :
       {"", "2026-11-23", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2025-02-29T00:00:00Z",
        "2026-11-31T00:00:00Z", "2026-11-23T24:00:00Z", "2026-11-23T15:60:00Z",
        "2026-11-23T15:42:60Z", "2026-11-23T15:42:00", "2026-11-23 15:42:00Z", "26-11-23T15:42:00Z",
        "2026-11-23T15:42:00Zjunk", "2026-11-23T15:42:00.Z", "9999999999999-01-01T00:00:00Z",
        "999999999999-01-01T00:00:00Z"}) {
    INFO(bad);
    CHECK(XmlError(Wrap("<date>" + std::string(bad) + "</date>")).find("not an ISO 8601 date") !=
          std::string::npos);
  }
}

TEST_CASE("ParseXml decodes entities and CDATA", "[plist][xml]") {
  Value v = MustXml(Wrap(
      "<dict><key>a&amp;b</key><string>it&#39;s &lt;x&gt; &amp; &quot;y&quot; &#x41;&#233;</string>"
      "<key>c</key><string><![CDATA[<raw> & ]]>tail</string></dict>"));
  CHECK(v.GetString("a&b") == "it's <x> & \"y\" Aé");
  CHECK(v.GetString("c") == "<raw> & tail");
}

TEST_CASE("ParseXml preserves whitespace inside strings", "[plist][xml]") {
  CHECK(*MustXml(Wrap("<string>  a  b  </string>")).AsString() == "  a  b  ");
  CHECK(*MustXml(Wrap("<string> </string>")).AsString() == " ");
  CHECK(*MustXml(Wrap("<string>\n\t</string>")).AsString() == "\n\t");
  CHECK(*MustXml(Wrap("<string>line1\r\nline2</string>")).AsString() == "line1\nline2");
  CHECK(*MustXml(Wrap("<string>cr&#13;kept</string>")).AsString() == "cr\rkept");
}

TEST_CASE("ParseXml preserves dict key order", "[plist][xml]") {
  Value v =
      MustXml(Wrap("<dict><key>zeta</key><integer>1</integer><key>alpha</key><integer>2</integer>"
                   "<key>mid</key><integer>3</integer></dict>"));
  const Dict& d = *v.AsDict();
  REQUIRE(d.size() == 3);
  CHECK(d[0].first == "zeta");
  CHECK(d[1].first == "alpha");
  CHECK(d[2].first == "mid");
}

TEST_CASE("ParseXml keeps one entry per duplicate key, last value wins", "[plist][xml]") {
  Value v =
      MustXml(Wrap("<dict><key>a</key><integer>1</integer><key>b</key><integer>2</integer>"
                   "<key>a</key><integer>3</integer><key>a</key><integer>4</integer></dict>"));
  const Dict& d = *v.AsDict();
  REQUIRE(d.size() == 2);
  CHECK(d[0].first == "a");
  CHECK(*d[0].second.AsInteger() == 4);
  CHECK(d[1].first == "b");

  // Large dicts take the sort-based path.
  std::string body = "<dict>";
  for (int i = 0; i < 100; ++i) {
    body +=
        "<key>k" + std::to_string(i % 40) + "</key><integer>" + std::to_string(i) + "</integer>";
  }
  body += "</dict>";
  Value big = MustXml(Wrap(body));
  const Dict& bd = *big.AsDict();
  REQUIRE(bd.size() == 40);
  for (int k = 0; k < 40; ++k) {
    CHECK(bd[k].first == "k" + std::to_string(k));
    CHECK(*bd[k].second.AsInteger() == (k < 20 ? 80 + k : 40 + k));
  }
}

TEST_CASE("ParseXml reads nested and empty containers", "[plist][xml]") {
  Value v =
      MustXml(Wrap("<dict><key>a</key><array><dict/><dict></dict><array/><array>\n</array>"
                   "<array><string>x</string></array></array></dict>"));
  const Array& a = *v.Find("a")->AsArray();
  REQUIRE(a.size() == 5);
  CHECK(a[0] == Value::MakeDict());
  CHECK(a[1] == Value::MakeDict());
  CHECK(a[2] == Value::MakeArray());
  CHECK(a[3] == Value::MakeArray());
  CHECK(a[4] == Value::MakeArray({Value::String("x")}));
}

TEST_CASE("ParseXml tolerates declaration, DOCTYPE, comments and a UTF-8 BOM", "[plist][xml]") {
  const std::string doc =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
      "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
      "<!-- leading comment -->\n"
      "<plist version=\"1.0\">\n<!-- c --><dict>\n\t<!-- c --><key>k</key><!-- c -->"
      "<string>v<!-- inside -->w</string>\n</dict>\n</plist>\n<!-- trailing -->\n";
  CHECK(MustXml(doc).GetString("k") == "vw");
  CHECK(MustXml("\xEF\xBB\xBF" + doc).GetString("k") == "vw");
  CHECK(*MustXml("<plist><true/></plist>").AsBool());
}

TEST_CASE("ParseXml rejects an empty body", "[plist][xml]") {
  CHECK(XmlError("") == "plist: empty body");
  CHECK(XmlError(" \n\t ") == "plist: empty body");
}

TEST_CASE("ParseXml rejects every truncation of a valid document", "[plist][xml]") {
  const std::string doc = ToXml(EveryType());
  const size_t end = doc.rfind("</plist>") + std::string("</plist>").size();
  for (size_t n = 0; n < end; ++n) {
    Result<Value> r = ParseXml(std::string_view(doc).substr(0, n));
    INFO("prefix of " << n << " bytes");
    CHECK_FALSE(r.ok());
  }
  CHECK(ParseXml(std::string_view(doc).substr(0, end)).ok());
}

TEST_CASE("ParseXml reports not well-formed XML with an offset", "[plist][xml]") {
  std::string e = XmlError("<plist><dict><key>a</key><string>x</dict></plist>");
  CHECK(e.rfind("plist: not well-formed XML at offset ", 0) == 0);
  CHECK(e.find("mismatch") != std::string::npos);
  CHECK(XmlError("<plist><string>a</string>").rfind("plist: not well-formed XML at offset", 0) ==
        0);
  CHECK(XmlError("not xml at all").find("plist:") == 0);
  CHECK(XmlError("<plist><string>a\0b</string></plist>"s) == "plist: NUL byte at offset 16");
}

TEST_CASE("ParseXml rejects a wrong root element and a wrong number of values", "[plist][xml]") {
  CHECK(XmlError("<dict><key>a</key><true/></dict>") ==
        "plist: root element is <dict>, expected <plist>");
  CHECK(XmlError("<plist></plist>") == "plist: <plist> is empty");
  CHECK(XmlError("<plist>\n  \n</plist>") == "plist: <plist> is empty");
  CHECK(XmlError("<plist><true/><false/></plist>") ==
        "plist: <plist> holds more than one value (second is <false>)");
  CHECK(XmlError("<plist>hello</plist>") == "plist: unexpected text 'hello' in <plist>");
  CHECK(XmlError("<?xml version=\"1.0\"?>") ==
        "plist: not well-formed XML at offset 21: No document element found");
}

TEST_CASE("ParseXml rejects a key without a value and a value without a key", "[plist][xml]") {
  CHECK(XmlError(Wrap("<dict><key>Foo</key></dict>")) ==
        "plist: <key> 'Foo' has no value in <dict> at /dict");
  CHECK(XmlError(Wrap("<dict><key>A</key><key>B</key><true/></dict>")) ==
        "plist: <key> 'A' has no value in <dict> at /dict");
  CHECK(XmlError(Wrap("<dict><key>a</key><dict><string>x</string></dict></dict>")) ==
        "plist: <string> without a preceding <key> in <dict> at /dict/a");
  CHECK(XmlError(Wrap("<dict><key><b/></key><true/></dict>")) ==
        "plist: unexpected element <b> inside <key> at /dict/?");
}

TEST_CASE("ParseXml rejects unknown elements with their path", "[plist][xml]") {
  CHECK(XmlError(Wrap("<dict><key>Bar</key><foo/></dict>")) ==
        "plist: unexpected element <foo> at /dict/Bar");
  CHECK(XmlError(Wrap("<array><true/><array><string>x</string><nope/></array></array>")) ==
        "plist: unexpected element <nope> at /array/1/1");
  CHECK(XmlError(Wrap("<key>k</key>")) == "plist: unexpected element <key> at /key");
  CHECK(XmlError(Wrap("<dict><key>s</key><string>a<b>x</b></string></dict>")) ==
        "plist: unexpected element <b> inside <string> at /dict/s");
}

TEST_CASE("ParseXml rejects stray text in containers and content in booleans", "[plist][xml]") {
  CHECK(XmlError(Wrap("<dict>junk<key>a</key><true/></dict>")) ==
        "plist: unexpected text 'junk' in <dict> at /dict");
  CHECK(XmlError(Wrap("<array><true/>junk</array>")) ==
        "plist: unexpected text 'junk' in <array> at /array");
  CHECK(XmlError(Wrap("<dict><key>t</key><true>yes</true></dict>")) ==
        "plist: <true> at /dict/t: must be empty: 'yes'");
}

TEST_CASE("ParseXml rejects an oversized body as TooLarge", "[plist][xml]") {
  Limits limits;
  limits.max_bytes = 100;
  std::string body = Wrap("<string>" + std::string(200, 'x') + "</string>");
  Result<Value> r = ParseXml(body, limits);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kTooLarge);
  CHECK(r.status().message() ==
        "plist: body of " + std::to_string(body.size()) + " bytes exceeds limit of 100");
  limits.max_bytes = body.size();
  CHECK(ParseXml(body, limits).ok());
}

TEST_CASE("ParseXml enforces the nesting depth limit", "[plist][xml]") {
  Limits limits;
  limits.max_depth = 4;
  CHECK(ParseXml(Wrap(Nested("<array>", "</array>", 4, "<data>AA==</data>")), limits).ok());
  std::string e = XmlError(Wrap(Nested("<array>", "</array>", 5)), limits);
  CHECK(e == "plist: nesting deeper than the limit of 4 at /array/0/0/0/0");
  CHECK(XmlError(Wrap("<dict><key>a</key>" + Nested("<dict><key>b</key>", "</dict>", 4, "<true/>") +
                      "</dict>"),
                 limits)
            .find("nesting deeper than the limit of 4 at /dict/a/b/b/b") != std::string::npos);
  // The default limit is 64.
  CHECK(ParseXml(Wrap(Nested("<array>", "</array>", 64))).ok());
  CHECK(XmlError(Wrap(Nested("<array>", "</array>", 65))).find("nesting deeper") !=
        std::string::npos);
}

TEST_CASE("ParseXml survives 100k nested arrays and dicts", "[plist][xml]") {
  const size_t n = 100000;
  CHECK(XmlError(Wrap(Nested("<array>", "</array>", n))).find("nesting deeper") !=
        std::string::npos);
  CHECK(XmlError(Wrap(Nested("<dict><key>k</key>", "</dict>", n, "<true/>")))
            .find("nesting deeper") != std::string::npos);
  CHECK(XmlError(Wrap(Repeat("<array>", n))).find("not well-formed") != std::string::npos);
  CHECK(XmlError("<!DOCTYPE plist [" + Repeat("<!ELEMENT ", n) + "]><plist/>").find("plist:") == 0);
  // A caller asking for unlimited depth is still protected by an internal cap.
  Limits huge;
  huge.max_depth = INT_MAX;
  CHECK(XmlError(Wrap(Nested("<array>", "</array>", n)), huge).find("nesting deeper") !=
        std::string::npos);
}

// ---------------------------------------------------------------- XML writing

TEST_CASE("ToXml writes Apple's format with tab indentation", "[plist][xml]") {
  Value v;
  v.Set("MessageType", Value::String("TokenUpdate"));
  v.Set("Count", Value::Integer(-3));
  v.Set("Ratio", Value::Real(0.5));
  v.Set("On", Value::Bool(true));
  v.Set("When", Value::DateValue(1795448520));
  v.Set("Token", Value::DataValue("hello"));
  v.Set("List", Value::MakeArray({Value::String("a"), Value::MakeDict(), Value::MakeArray()}));
  CHECK(ToXml(v) ==
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
        "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
        "<plist version=\"1.0\">\n"
        "<dict>\n"
        "\t<key>MessageType</key>\n"
        "\t<string>TokenUpdate</string>\n"
        "\t<key>Count</key>\n"
        "\t<integer>-3</integer>\n"
        "\t<key>Ratio</key>\n"
        "\t<real>0.5</real>\n"
        "\t<key>On</key>\n"
        "\t<true/>\n"
        "\t<key>When</key>\n"
        "\t<date>2026-11-23T15:42:00Z</date>\n"
        "\t<key>Token</key>\n"
        "\t<data>aGVsbG8=</data>\n"
        "\t<key>List</key>\n"
        "\t<array>\n"
        "\t\t<string>a</string>\n"
        "\t\t<dict/>\n"
        "\t\t<array/>\n"
        "\t</array>\n"
        "</dict>\n"
        "</plist>\n");
  CHECK(ToXml(Value::MakeDict()).find("<plist version=\"1.0\">\n<dict/>\n</plist>\n") !=
        std::string::npos);
}

TEST_CASE("ToXml escapes markup characters in keys and strings", "[plist][xml]") {
  Value v;
  v.Set("a<b>&c", Value::String("x < y && y > z\r"));
  std::string xml = ToXml(v);
  CHECK(xml.find("<key>a&lt;b&gt;&amp;c</key>") != std::string::npos);
  CHECK(xml.find("<string>x &lt; y &amp;&amp; y &gt; z&#13;</string>") != std::string::npos);
  CHECK(MustXml(xml) == v);
}

TEST_CASE("ToXml writes reals that parse back exactly", "[plist][xml]") {
  for (double d :
       {0.1, 1.0 / 3.0, -0.0, 1e300, 5e-324, 123456789.123456789, -1.5e-10, 9007199254740993.0,
        std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
    Value back = MustXml(ToXml(Value::Real(d)));
    REQUIRE(back.AsReal());
    CHECK(*back.AsReal() == d);
    CHECK(std::signbit(*back.AsReal()) == std::signbit(d));
  }
  CHECK(
      ToXml(Value::Real(std::numeric_limits<double>::infinity())).find("<real>+infinity</real>") !=
      std::string::npos);
  Value nan = MustXml(ToXml(Value::Real(std::nan(""))));
  CHECK(std::isnan(*nan.AsReal()));
}

TEST_CASE("ParseXml(ToXml(v)) == v for every type", "[plist][xml]") {
  Value v = EveryType();
  CHECK(MustXml(ToXml(v)) == v);
  for (const auto& [key, value] : *v.AsDict()) {
    INFO(key);
    CHECK(MustXml(ToXml(value)) == value);
  }
  // Dates across the whole int64 range.
  for (int64_t s : {int64_t{0}, int64_t{-62135596800}, int64_t{-62135596801}, int64_t{253402300799},
                    int64_t{253402300800}, std::numeric_limits<int64_t>::min(),
                    std::numeric_limits<int64_t>::max()}) {
    INFO(s);
    CHECK(MustXml(ToXml(Value::DateValue(s))).AsDate()->unix_seconds == s);
  }
}

TEST_CASE("Serialized data is standard padded base64 for every length", "[plist][xml][json]") {
  std::string bytes;
  for (int n = 0; n < 8; ++n) {
    INFO(n);
    std::string b64 = Base64Encode(bytes);
    CHECK(ToXml(Value::DataValue(bytes)).find("<data>" + b64 + "</data>") != std::string::npos);
    CHECK(ToJson(Value::DataValue(bytes)) == "{\"$data\":\"" + b64 + "\"}");
    bytes += static_cast<char>(0xF0 + n);
  }
}

// ---------------------------------------------------------------- JSON writing

TEST_CASE("ToJson writes compact JSON with tagged data and date", "[plist][json]") {
  Value v;
  v.Set("s", Value::String("x"));
  v.Set("i", Value::Integer(-7));
  v.Set("r", Value::Real(2.5));
  v.Set("whole", Value::Real(3.0));
  v.Set("b", Value::Bool(false));
  v.Set("d", Value::DateValue(1795448520));
  v.Set("bytes", Value::DataValue("hello"));
  v.Set("a", Value::MakeArray({Value::Integer(1), Value::MakeArray(), Value::MakeDict()}));
  CHECK(ToJson(v) ==
        R"({"s":"x","i":-7,"r":2.5,"whole":3.0,"b":false,"d":{"$date":"2026-11-23T15:42:00Z"},)"
        R"("bytes":{"$data":"aGVsbG8="},"a":[1,[],{}]})");
}

TEST_CASE("ToJson pretty output uses 2-space indentation", "[plist][json]") {
  Value v;
  v.Set("a", Value::Integer(1));
  v.Set("list", Value::MakeArray({Value::Bool(true), Value::DataValue("hi")}));
  v.Set("empty", Value::MakeDict());
  CHECK(ToJson(v, true) ==
        "{\n"
        "  \"a\": 1,\n"
        "  \"list\": [\n"
        "    true,\n"
        "    {\"$data\": \"aGk=\"}\n"
        "  ],\n"
        "  \"empty\": {}\n"
        "}");
}

TEST_CASE("ToJson escapes control characters and keeps UTF-8 as-is", "[plist][json]") {
  CHECK(ToJson(Value::String("q\"b\\s/\b\f\n\r\t\x01\x1f\x7f é😀")) ==
        "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f é😀\"");
  CHECK(ToJson(Value::String(std::string("a\0b", 3))) == "\"a\\u0000b\"");
}

TEST_CASE("ToJson writes non-finite reals as null and integral reals with a fraction",
          "[plist][json]") {
  CHECK(ToJson(Value::Real(std::numeric_limits<double>::infinity())) == "null");
  CHECK(ToJson(Value::Real(std::nan(""))) == "null");
  CHECK(ToJson(Value::Real(1.0)) == "1.0");
  CHECK(ToJson(Value::Real(-0.0)) == "-0.0");
  CHECK(ToJson(Value::Real(1e300)) == "1e+300");
  CHECK(ToJson(Value::Real(0.1)) == "0.1");
}

// ---------------------------------------------------------------- JSON parsing

TEST_CASE("ParseJson maps numbers to integers or reals", "[plist][json]") {
  CHECK(*MustJson("42").AsInteger() == 42);
  CHECK(*MustJson("-9223372036854775808").AsInteger() == std::numeric_limits<int64_t>::min());
  CHECK(*MustJson("9223372036854775807").AsInteger() == std::numeric_limits<int64_t>::max());
  CHECK(*MustJson("9223372036854775808").AsReal() == 9223372036854775808.0);
  CHECK(*MustJson("1.0").AsReal() == 1.0);
  CHECK(*MustJson("-0").AsInteger() == 0);
  CHECK(*MustJson("1e3").AsReal() == 1000.0);
  CHECK(*MustJson("-2.5E-3").AsReal() == -0.0025);
  CHECK(*MustJson(" \n\t\"s\" \r\n").AsString() == "s");
  CHECK(*MustJson("true").AsBool());
  CHECK_FALSE(*MustJson("false").AsBool());
  CHECK(JsonError("1e999") == "json: number out of double range at offset 0");
}

TEST_CASE("ParseJson decodes escapes and surrogate pairs", "[plist][json]") {
  CHECK(*MustJson(R"("a\"b\\c\/d\b\f\n\r\t")").AsString() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(*MustJson(R"("\u0041\u00e9\u20AC")").AsString() == "Aé€");
  CHECK(*MustJson(R"("\ud83d\ude00")").AsString() == "😀");
  CHECK(*MustJson(R"("\u0000")").AsString() == std::string(1, '\0'));
  CHECK(*MustJson("\"raw é😀\"").AsString() == "raw é😀");
  CHECK(JsonError(R"("\ud83d")") == "json: unpaired high surrogate at offset 1");
  CHECK(JsonError(R"("\ud83dx")") == "json: unpaired high surrogate at offset 1");
  CHECK(JsonError(R"("\ud83d\u0041")") == "json: unpaired high surrogate at offset 1");
  CHECK(JsonError(R"("\ude00")") == "json: unpaired low surrogate at offset 1");
  CHECK(JsonError(R"("\u12G4")") == "json: invalid \\u escape at offset 1");
  CHECK(JsonError(R"("ab\x")") == "json: invalid escape character 'x' after backslash at offset 3");
  CHECK(JsonError("\"a\nb\"") == "json: unescaped control character in string at offset 2");
  CHECK(JsonError("\"abc") == "json: unterminated string at offset 0");
}

TEST_CASE("ParseJson reads tagged data and date", "[plist][json]") {
  Value v = MustJson(R"({"t": {"$data": "aGVs bG8="}, "d": {"$date": "2026-11-23T15:42:00Z"}})");
  CHECK(*v.GetData("t") == "hello");
  CHECK(v.Find("d")->AsDate()->unix_seconds == 1795448520);
  CHECK(MustJson(R"({"$date":"2026-11-23T16:42:00+01:00"})").AsDate()->unix_seconds == 1795448520);
  CHECK(JsonError(R"({"$data": "***"})") == "json: invalid base64 in $data at offset 10");
  CHECK(JsonError(R"({"$date": "tomorrow"})") ==
        "json: invalid RFC 3339 date in $date: 'tomorrow' at offset 10");
  CHECK(JsonError(R"({"$data": 5})") == "json: $data must hold a string at offset 10");
  // With more than one member these keys are ordinary.
  Value plain = MustJson(R"({"$data": "aGk=", "x": 1})");
  CHECK(plain.GetString("$data") == "aGk=");
}

TEST_CASE("Dicts whose only key looks like a tag round-trip through JSON", "[plist][json]") {
  for (const char* key : {"$data", "$date", "$$data", "$$$date"}) {
    INFO(key);
    Value v;
    v.Set(key, Value::String("aGk="));
    std::string json = ToJson(v);
    CHECK(json == "{\"$" + std::string(key) + "\":\"aGk=\"}");
    CHECK(MustJson(json) == v);
  }
  Value two;
  two.Set("$data", Value::String("x"));
  two.Set("$date", Value::Integer(1));
  CHECK(ToJson(two) == R"({"$data":"x","$date":1})");
  CHECK(MustJson(ToJson(two)) == two);
  Value other;
  other.Set("$dollar", Value::Integer(1));
  CHECK(ToJson(other) == R"({"$dollar":1})");
}

TEST_CASE("ParseJson rejects null, trailing garbage and malformed documents", "[plist][json]") {
  CHECK(JsonError("null") == "json: null is not allowed (plists have no null) at offset 0");
  CHECK(JsonError(R"({"a": null})") ==
        "json: null is not allowed (plists have no null) at offset 6");
  CHECK(JsonError("{} x") == "json: trailing characters after the value at offset 3");
  CHECK(JsonError("1 2") == "json: trailing characters after the value at offset 2");
  CHECK(JsonError("") == "json: empty body");
  CHECK(JsonError("  ") == "json: empty body");
  CHECK(JsonError("[1,]") == "json: unexpected character ']' at offset 3");
  CHECK(JsonError("[1 2]") == "json: expected ',' or ']' at offset 3");
  CHECK(JsonError("{\"a\" 1}") == "json: expected ':' after object key at offset 5");
  CHECK(JsonError("{a:1}") == "json: expected a string key at offset 1");
  CHECK(JsonError("{\"a\":1,}") == "json: expected a string key at offset 7");
  CHECK(JsonError("{\"a\":1") == "json: unexpected end of input in object at offset 6");
  CHECK(JsonError("[") == "json: unexpected end of input at offset 1");
  CHECK(JsonError("tru") == "json: invalid literal at offset 0");
  CHECK(JsonError("01") == "json: trailing characters after the value at offset 1");
  CHECK(JsonError("-") == "json: invalid number at offset 0");
  CHECK(JsonError("1.") == "json: invalid number: digits expected after '.' at offset 0");
  CHECK(JsonError("1e+") == "json: invalid number: digits expected in exponent at offset 0");
  CHECK(JsonError("+1") == "json: unexpected character '+' at offset 0");
  CHECK(JsonError("'a'") == "json: unexpected character '\\x27' at offset 0");
  CHECK(JsonError("NaN") == "json: unexpected character 'N' at offset 0");
}

TEST_CASE("ParseJson keeps one entry per duplicate key, last value wins", "[plist][json]") {
  Value v = MustJson(R"({"a":1,"b":2,"a":3})");
  REQUIRE(v.AsDict()->size() == 2);
  CHECK(v.AsDict()->at(0).first == "a");
  CHECK(*v.Find("a")->AsInteger() == 3);
}

TEST_CASE("ParseJson enforces size and depth limits", "[plist][json]") {
  Limits limits;
  limits.max_bytes = 10;
  Result<Value> r = ParseJson("[1,2,3,4,5,6]", limits);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kTooLarge);
  CHECK(r.status().message() == "json: body of 13 bytes exceeds limit of 10");

  limits = Limits{};
  limits.max_depth = 3;
  CHECK(ParseJson("[[[1]]]", limits).ok());
  CHECK(ParseJson(R"([[{"a":{"$data":"AA=="}}]])", limits).ok());  // tagged leaf is no container
  CHECK(ParseJson(R"([[[{"$date":"2026-11-23T15:42:00Z"}]]])", limits).ok());
  CHECK(JsonError("[[[[1]]]]", limits) == "json: nesting deeper than the limit of 3 at offset 3");
  CHECK(JsonError(R"([[[{}]]])", limits) == "json: nesting deeper than the limit of 3 at offset 3");
  CHECK(JsonError(R"([[[{"a":1,"b":2}]]])", limits) ==
        "json: nesting deeper than the limit of 3 at offset 3");

  const size_t n = 100000;
  CHECK(JsonError(Nested("[", "]", n)).find("nesting deeper") != std::string::npos);
  CHECK(JsonError(Repeat("[", n)).find("nesting deeper") != std::string::npos);
  CHECK(JsonError(Nested("{\"a\":", "}", n, "1")).find("nesting deeper") != std::string::npos);
  Limits huge;
  huge.max_depth = INT_MAX;
  CHECK(JsonError(Nested("[", "]", n), huge).find("nesting deeper") != std::string::npos);
}

TEST_CASE("ParseJson(ToJson(v)) == v for every type, compact and pretty", "[plist][json]") {
  Value v = EveryType();
  CHECK(MustJson(ToJson(v)) == v);
  CHECK(MustJson(ToJson(v, true)) == v);
  Value with_nul = Value::MakeArray({Value::String(std::string("a\0b", 3))});
  CHECK(MustJson(ToJson(with_nul)) == with_nul);
  for (int64_t s : {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()}) {
    CHECK(MustJson(ToJson(Value::DateValue(s))).AsDate()->unix_seconds == s);
  }
}

// ---------------------------------------------------------------- real device plists

TEST_CASE("Device fixture TokenUpdate parses with token and unlock token", "[plist][fixtures]") {
  REQUIRE_FIXTURE(body, "TokenUpdate.1.plist");
  Value v = MustXml(*body);
  CHECK(v.GetString("MessageType") == "TokenUpdate");
  CHECK(v.GetString("UDID") == "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69");
  CHECK(v.GetString("PushMagic") == "CEFDF0BD-E342-4A27-8742-E930EA116B0A");
  CHECK(v.GetString("Topic") == "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9");
  CHECK_FALSE(v.GetBool("AwaitingConfiguration", true));
  REQUIRE(v.GetData("Token"));
  CHECK(v.GetData("Token")->size() == 32);
  CHECK(HexEncode(*v.GetData("Token")) ==
        "47e8eec062c2f729ec1703c1b3e18f1971d85f00be76445d34080baa701b5f51");
  REQUIRE(v.GetData("UnlockToken"));
  CHECK(v.GetData("UnlockToken")->substr(0, 4) == "DATA");
  CHECK(v.GetData("UnlockToken")->size() > 1000);
  const Dict& d = *v.AsDict();
  REQUIRE(d.size() == 7);
  CHECK(d.front().first == "AwaitingConfiguration");
  CHECK(d.back().first == "UnlockToken");
}

TEST_CASE("Device fixture Authenticate parses", "[plist][fixtures]") {
  REQUIRE_FIXTURE(body, "Authenticate.1.plist");
  Value v = MustXml(*body);
  CHECK(v.GetString("MessageType") == "Authenticate");
  CHECK(v.GetString("SerialNumber") == "F5JM992LF193");
  CHECK(v.GetString("OSVersion") == "9.3.5");
  CHECK(v.GetString("ProductName") == "iPad2,5");
  CHECK(v.GetString("UDID") == "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69");
}

TEST_CASE("Device fixture DeviceInformation parses with nested query responses",
          "[plist][fixtures]") {
  REQUIRE_FIXTURE(body, "DeviceInformation.1.plist");
  Value v = MustXml(*body);
  CHECK(v.GetString("Status") == "Acknowledged");
  CHECK(v.GetString("RequestType") == "DeviceInformation");
  CHECK(v.GetString("CommandUUID") == "76eda240-5488-4989-8339-f2ae160113c4");
  const Value* q = v.Find("QueryResponses");
  REQUIRE(q);
  CHECK(q->GetString("HostName") == "fruit.example.com");
  CHECK(q->GetString("UDID") == "66ADE930-5FDF-5EC4-8429-15640684C489");
}

TEST_CASE("Every device fixture round-trips through XML and JSON", "[plist][fixtures]") {
  INFO("device fixtures directory " << FixtureDir());
  REQUIRE(std::filesystem::is_directory(FixtureDir()));
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(FixtureDir())) {
    if (entry.path().extension() != ".plist") continue;
    INFO(entry.path());
    std::optional<std::string> body = ReadFixture(entry.path().filename().string());
    REQUIRE(body);
    Value v = MustXml(*body);
    CHECK(MustXml(ToXml(v)) == v);
    CHECK(MustJson(ToJson(v)) == v);
    CHECK(MustJson(ToJson(v, true)) == v);
    ++count;
  }
  CHECK(count >= 3);
}

// ---------------------------------------------------------------- clean data for devices

namespace {


std::string TextError(std::string_view xml) {
  Status st = CheckXmlText(xml);
  return st.ok() ? std::string("(accepted)") : st.message();
}

}  // namespace

TEST_CASE("ToJson replaces bytes that are not well-formed UTF-8 with U+FFFD", "[plist][json]") {
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(ToJson(Value::String("a\xff" "b")) == "\"a" + fffd + "b\"");
  CHECK(ToJson(Value::String("\x80")) == "\"" + fffd + "\"");                      // stray continuation
  CHECK(ToJson(Value::String("\xC0\xAF")) == "\"" + fffd + fffd + "\"");           // overlong '/'
  CHECK(ToJson(Value::String("\xED\xA0\x80")) == "\"" + fffd + fffd + fffd + "\"");  // surrogate D800
  CHECK(ToJson(Value::String("\xF4\x90\x80\x80")) == "\"" + fffd + fffd + fffd + fffd + "\"");
  CHECK(ToJson(Value::String("end\xE2\x82")) == "\"end" + fffd + fffd + "\"");     // truncated
  // Well-formed text is untouched, at every length of sequence.
  CHECK(ToJson(Value::String("é€😀\xEF\xBF\xBF")) == "\"é€😀\xEF\xBF\xBF\"");
  // Keys too, and nested everywhere; the result is strict UTF-8 JSON.
  Value v;
  v.Set("Device\xfe" "Name", Value::String("x\x01\xc3"));
  Value arr = Value::MakeArray({Value::String("\xe0\x80\x80"), Value::String("ok")});
  v.Set("list", arr);
  const std::string json = ToJson(v, /*pretty=*/true);
  CHECK(testing::IsStrictUtf8(json));
  CHECK(json.find("\"Device" + fffd + "Name\"") != std::string::npos);
  CHECK(json.find("\"x\\u0001" + fffd + "\"") != std::string::npos);
  auto back = ParseJson(json);
  REQUIRE(back.ok());
  CHECK(back->GetString("list").empty());
}

TEST_CASE("CheckXmlText refuses what a device parser cannot read, naming what and where",
          "[plist][xml][strict]") {
  auto doc = [](std::string_view inner) {
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
           "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
           "<plist version=\"1.0\">\n<dict><key>K</key><string>" +
           std::string(inner) + "</string></dict></plist>\n";
  };
  CHECK(TextError(doc("a&#0;b")).find("character reference '&#0;' to U+0000") != std::string::npos);
  CHECK(TextError(doc("a&#0;b")).find("at line 4 (byte offset ") != std::string::npos);
  CHECK(TextError(doc("&#x1;")).find("'&#x1;' to U+0001") != std::string::npos);
  CHECK(TextError(doc("&#xFFFE;")).find("U+FFFE") != std::string::npos);
  CHECK(TextError(doc("&#xffff;")).find("U+FFFF") != std::string::npos);
  CHECK(TextError(doc("&#xD800;")).find("U+D800") != std::string::npos);
  CHECK(TextError(doc("&#1114112;")).find("above U+10FFFF") != std::string::npos);
  CHECK(TextError(doc("&#99999999999999;")).find("above U+10FFFF") != std::string::npos);
  CHECK(TextError(doc("&#x;")).find("malformed character reference") != std::string::npos);
  CHECK(TextError(doc("&#12a;")).find("malformed character reference") != std::string::npos);
  CHECK(TextError(doc("raw\x01")).find("character U+0001, which XML 1.0 does not allow") !=
        std::string::npos);
  CHECK(TextError(doc("raw\x7f ok\x1f")).find("U+001F") != std::string::npos);
  CHECK(TextError(doc("\xEF\xBF\xBE")).find("U+FFFE") != std::string::npos);
  CHECK(TextError(doc("bad \xff")).find("invalid UTF-8 (byte 0xff)") != std::string::npos);
  CHECK(TextError(doc("\xED\xA0\x80")).find("invalid UTF-8 (byte 0xed)") != std::string::npos);
  CHECK(TextError(doc("\xC0\xAF")).find("invalid UTF-8") != std::string::npos);
  CHECK(TextError(doc("&xxe;")).find("undefined entity reference '&xxe;'") != std::string::npos);
  CHECK(TextError(doc("a & b")).find("'&' that does not start a reference") != std::string::npos);
  CHECK(TextError(doc("a &amp")).find("'&' that does not start a reference") != std::string::npos);
  // Entity declarations: in an internal subset, or anywhere else.
  const std::string xxe =
      "<?xml version=\"1.0\"?>\n<!DOCTYPE plist [ <!ENTITY xxe SYSTEM \"file:///etc/passwd\"> ]>\n"
      "<plist><string>&xxe;</string></plist>";
  CHECK(TextError(xxe).find("internal DTD subset") != std::string::npos);
  CHECK(TextError(xxe).find("line 2") != std::string::npos);
  CHECK(TextError("<plist><!ENTITY a \"b\"><string/></plist>").find("markup declaration '<!ENTITY'") !=
        std::string::npos);
  CHECK(TextError("<!DOCTYPE plist PUBLIC \"x\" \"y\"\n[<!ENTITY a \"b\">]><plist/>").find("internal DTD subset") !=
        std::string::npos);
  // A bad character inside a comment, CDATA or the DOCTYPE is still refused.
  CHECK(TextError("<!-- \x02 --><plist/>").find("U+0002") != std::string::npos);
  CHECK(TextError("<plist><string><![CDATA[\x0b]]></string></plist>").find("U+000B") != std::string::npos);
  CHECK(TextError("<!DOCTYPE plist PUBLIC \"\xff\" \"y\"><plist/>").find("invalid UTF-8") != std::string::npos);
}

TEST_CASE("CheckXmlText accepts what devices read", "[plist][xml][strict]") {
  CHECK(CheckXmlText(ToXml(EveryType())).ok());
  CHECK(CheckXmlText("\xEF\xBB\xBF<plist><string>&lt;&gt;&amp;&quot;&apos;&#9;&#xA;&#13;&#x10000;&#xE000;"
                     "&#xFFFD;&#x10FFFF;é😀\t\r\n</string></plist>")
            .ok());
  // '&' is literal in comments, CDATA and processing instructions; '>' may sit in a quoted DOCTYPE id.
  CHECK(CheckXmlText("<?xml version=\"1.0\"?><?pi a&b?><!-- R&D --><!DOCTYPE plist SYSTEM \"a>b\">"
                     "<plist><string><![CDATA[a & b <c>]]></string></plist>")
            .ok());
  Value odd;
  odd.Set("k&<>\"'", Value::String("\xF0\x9F\x98\x80 \xEF\xBF\xBD \x7f"));
  CHECK(CheckXmlText(ToXml(odd)).ok());
}

TEST_CASE("Every device fixture passes CheckXmlText", "[plist][fixtures][strict]") {
  if (!std::filesystem::is_directory(FixtureDir())) {
    WARN("skipped: device fixtures directory " << FixtureDir() << " not present");
    return;
  }
  for (const auto& entry : std::filesystem::directory_iterator(FixtureDir())) {
    if (entry.path().extension() != ".plist") continue;
    INFO(entry.path());
    auto body = ReadFixture(entry.path().filename().string());
    REQUIRE(body);
    CHECK(CheckXmlText(*body).ok());
  }
}

TEST_CASE("CheckXmlStrings names the path of a string a device cannot read", "[plist][strict]") {
  CHECK(CheckXmlStrings(EveryType()).ok());
  Value cmd;
  cmd.Set("RequestType", Value::String("Settings"));
  cmd.Set("Items", Value::MakeArray({Value::String("ok"), Value::String(std::string("a\0b", 3))}));
  Value full;
  full.Set("Command", cmd);
  Status st = CheckXmlStrings(full);
  REQUIRE(!st.ok());
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(st.message() == "string at /Command/Items/1 contains U+0000, which XML 1.0 does not allow (byte 1)");

  Value bad_key;
  bad_key.Set("Ke\x01y", Value::Integer(1));
  CHECK(CheckXmlStrings(bad_key).message() ==
        "key at /Ke\\x01y contains U+0001, which XML 1.0 does not allow (byte 2)");
  CHECK(CheckXmlStrings(Value::String("\xED\xA0\x80")).message() == "string at / is not valid UTF-8 (byte 0)");
  CHECK(CheckXmlStrings(Value::String("ok\xEF\xBF\xBE")).message().find("U+FFFE") != std::string::npos);
  CHECK(CheckXmlStrings(Value::String("\t\n\r é 😀 \xEF\xBF\xBD")).ok());
  // JSON input: "\u0000" and "\uFFFE" parse, and are refused here.
  auto j = ParseJson(R"({"Command":{"RequestType":"X","Message":"a\u0000"}})");
  REQUIRE(j.ok());
  CHECK(CheckXmlStrings(*j).message().find("/Command/Message contains U+0000") != std::string::npos);
  auto j2 = ParseJson(R"({"k":"\uFFFE"})");
  REQUIRE(j2.ok());
  CHECK(!CheckXmlStrings(*j2).ok());
}

TEST_CASE("plist json: null is refused unless drop_nulls leaves it out as absent", "[plist][json]") {
  const std::string doc = R"({"item":"a","value":null,"list":[1,null,2],"nested":{"x":null},"$data":null})";
  CHECK_FALSE(plist::ParseJson(doc).ok());
  plist::Limits lim;
  lim.drop_nulls = true;
  auto v = plist::ParseJson(doc, lim);
  REQUIRE(v.ok());
  CHECK(v->GetString("item") == "a");
  CHECK(v->Find("value") == nullptr);
  REQUIRE(v->Find("list")->AsArray()->size() == 2);
  CHECK(*v->Find("list")->AsArray()->at(1).AsInteger() == 2);
  CHECK(v->Find("nested")->AsDict()->empty());
  CHECK(v->Find("$data") == nullptr);
  // An object with a dropped member besides "$data" is not a tag: a dict.
  auto two = plist::ParseJson(R"({"x":null,"$data":"AAE="})", lim);
  REQUIRE(two.ok());
  REQUIRE(two->AsDict() != nullptr);
  CHECK(two->GetString("$data") == "AAE=");
  auto date = plist::ParseJson(R"({"$date":"not a date","k":null})", lim);
  REQUIRE(date.ok());
  CHECK(date->GetString("$date") == "not a date");
  // A document that is null has no value to give.
  CHECK_FALSE(plist::ParseJson("null", lim).ok());
  CHECK_FALSE(plist::ParseJson(R"({"a":nul})", lim).ok());
}
