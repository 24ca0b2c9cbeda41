// plugins/inventory-export's logic without orchardd: flattening the fixture
// reports (tests/fixtures/devices, tests/fixtures/inventory), merging them into
// records, and the JSON and CSV it writes under hostile device strings.
// Records are checked with Orchard's own JSON parser (plist::ParseJson) and a
// strict UTF-8 check, independently of the plugin's code.
#include <catch2/catch.hpp>

#include <string>

#include "inventory.h"
#include "plist/plist.h"
#include "support/fixtures.h"
#include "support/orchardd_process.h"
#include "support/strict_utf8.h"

using namespace inventory_export;
using orchard::testing::FixturePath;
using orchard::testing::IsStrictUtf8;
using orchard::testing::ReadFile;

namespace {

Report Parse(const std::string& xml, Report::Source source) {
  Report r;
  std::string error;
  INFO(error);
  REQUIRE(ParseReport(xml, source, &r, &error));
  return r;
}

Report Fixture(const std::string& name, Report::Source source) {
  const std::string xml = ReadFile(FixturePath(name));
  REQUIRE_FALSE(xml.empty());
  return Parse(xml, source);
}

std::string Plist(const std::string& dict_body) {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>" + dict_body +
         "<key>Status</key><string>Acknowledged</string></dict></plist>";
}

std::string DeviceInfo(const std::string& query_body) {
  return Plist("<key>QueryResponses</key><dict>" + query_body + "</dict>");
}

// Valid JSON by an independent parser and strictly valid UTF-8.
void RequireValidJson(const std::string& json) {
  INFO(json.substr(0, 400));
  REQUIRE(IsStrictUtf8(json));
  auto parsed = orchard::plist::ParseJson(json);
  INFO((parsed.ok() ? std::string() : parsed.status().message()));
  REQUIRE(parsed.ok());
}

const Scalar& Field(const Fields& f, const std::string& key) {
  auto it = f.find(key);
  INFO("field " << key);
  REQUIRE(it != f.end());
  return it->second;
}

}  // namespace

TEST_CASE("inventory flattens the captured DeviceInformation report", "[inventory]") {
  Report r = Fixture("devices/DeviceInformation.1.plist", Report::Source::kDeviceInformation);
  CHECK(r.fields.size() == 2);
  CHECK(Field(r.fields, "HostName").text == "fruit.example.com");
  CHECK(Field(r.fields, "UDID").text == "66ADE930-5FDF-5EC4-8429-15640684C489");
  CHECK(Field(r.fields, "UDID").kind == Scalar::Kind::kString);
}

TEST_CASE("inventory flattens a full DeviceInformation report with dotted keys and types", "[inventory]") {
  Report r = Fixture("inventory/DeviceInformation.ipad.plist", Report::Source::kDeviceInformation);
  CHECK(Field(r.fields, "DeviceName").text == "Ana\xE2\x80\x99s iPad");
  CHECK(Field(r.fields, "SerialNumber").text == "DMPXK2ABCD12");
  CHECK(Field(r.fields, "OSVersion").text == "18.1");
  CHECK(Field(r.fields, "BatteryLevel").kind == Scalar::Kind::kNumber);
  CHECK(Field(r.fields, "BatteryLevel").text == "0.8100000023841858");
  CHECK(Field(r.fields, "CellularTechnology").text == "0");
  CHECK(Field(r.fields, "IsSupervised").kind == Scalar::Kind::kBool);
  CHECK(Field(r.fields, "IsSupervised").text == "true");
  CHECK(Field(r.fields, "IsActivationLockEnabled").text == "false");
  CHECK(Field(r.fields, "OSUpdateSettings.AutoCheckEnabled").text == "true");
  CHECK(Field(r.fields, "OSUpdateSettings.CatalogURL").text.empty());
  CHECK(Field(r.fields, "ServiceSubscriptions.0.Slot").text == "CTSubscriptionSlotOne");
  CHECK(Field(r.fields, "LastCloudBackupDate").text == "2026-11-30T22:14:05Z");
  // Only QueryResponses: not the report's envelope.
  CHECK(r.fields.count("CommandUUID") == 0);
  CHECK(r.fields.count("Status") == 0);
  CHECK_FALSE(r.fields_truncated);
}

TEST_CASE("inventory flattens SecurityInfo under the SecurityInfo prefix", "[inventory]") {
  Report mac = Fixture("inventory/SecurityInfo.mac.plist", Report::Source::kSecurityInfo);
  CHECK(Field(mac.fields, "SecurityInfo.FDE_Enabled").text == "true");
  CHECK(Field(mac.fields, "SecurityInfo.SystemIntegrityProtectionEnabled").text == "true");
  CHECK(Field(mac.fields, "SecurityInfo.FirewallSettings.FirewallEnabled").text == "true");
  CHECK(Field(mac.fields, "SecurityInfo.FirewallSettings.Applications.0.BundleID").text == "com.apple.ftp-proxy");
  CHECK(Field(mac.fields, "SecurityInfo.ManagementStatus.EnrolledViaDEP").text == "true");
  CHECK(Field(mac.fields, "SecurityInfo.SecureBoot.SecureBootLevel").text == "full");
  Report ipad = Fixture("inventory/SecurityInfo.ipad.plist", Report::Source::kSecurityInfo);
  CHECK(Field(ipad.fields, "SecurityInfo.PasscodePresent").text == "false");
  CHECK(Field(ipad.fields, "SecurityInfo.HardwareEncryptionCaps").text == "3");
  for (const auto& [k, v] : ipad.fields) CHECK(k.rfind("SecurityInfo.", 0) == 0);
}

TEST_CASE("inventory keeps the installed apps sorted with identifier, name and versions", "[inventory]") {
  Report r = Fixture("inventory/InstalledApplicationList.ipad.plist", Report::Source::kInstalledApplications);
  REQUIRE(r.apps.size() == 4);
  CHECK(r.app_count == 4);
  CHECK(r.apps[0].identifier == "com.apple.Keynote");
  CHECK(r.apps[1].identifier == "com.apple.Pages");
  CHECK(r.apps[1].name == "Pages");
  CHECK(r.apps[1].version == "7053.0.140");
  CHECK(r.apps[1].short_version == "14.2");
  CHECK(r.apps[2].name == "Field Notes \xE2\x80\x93 Lisboa");
  auto chunks = EncodeAppChunks(r.apps);
  REQUIRE(chunks.size() == 1);
  RequireValidJson(chunks[0]);
  std::vector<App> back;
  REQUIRE(DecodeAppChunk(chunks[0], &back));
  REQUIRE(back.size() == 4);
  CHECK(back[3].name == r.apps[3].name);
}

TEST_CASE("inventory bounds the app list and splits it into chunks under the kv limit", "[inventory]") {
  std::string items;
  for (int i = 0; i < 2500; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "com.example.app%05d", 2499 - i);
    items += "<dict><key>Identifier</key><string>" + std::string(id) + "</string><key>Name</key><string>" +
             std::string(300, 'n') + "</string><key>Version</key><string>1.0</string></dict>";
  }
  Report r = Parse(Plist("<key>InstalledApplicationList</key><array>" + items + "</array>"),
                   Report::Source::kInstalledApplications);
  CHECK(r.app_count == 2500);
  REQUIRE(r.apps.size() == kMaxApps);
  CHECK(r.apps.front().identifier == "com.example.app00000");
  CHECK(r.apps.back().identifier == "com.example.app01999");
  CHECK(r.apps[0].name.size() == kMaxAppStringBytes);
  auto chunks = EncodeAppChunks(r.apps);
  CHECK(chunks.size() > 1);
  size_t total = 0;
  for (const auto& c : chunks) {
    CHECK(c.size() <= kMaxChunkBytes);
    std::vector<App> part;
    REQUIRE(DecodeAppChunk(c, &part));
    total += part.size();
  }
  CHECK(total == kMaxApps);
}

TEST_CASE("inventory merges reports into one record with per-source timestamps", "[inventory]") {
  Record rec;
  rec.enrollment_id = "00008030-0011223344556677";
  REQUIRE(Merge(&rec, Fixture("inventory/DeviceInformation.ipad.plist", Report::Source::kDeviceInformation),
                1764641700000));
  REQUIRE(Merge(&rec, Fixture("inventory/SecurityInfo.mac.plist", Report::Source::kSecurityInfo), 1764641701000));
  CHECK(rec.times.at("device_information_at") == "2025-12-02T02:15:00.000Z");
  CHECK(rec.times.at("security_info_at") == "2025-12-02T02:15:01.000Z");
  CHECK(rec.fields.count("SecurityInfo.FirewallSettings.FirewallEnabled") == 1);

  // A partial DeviceInformation keeps what it does not mention.
  REQUIRE(Merge(&rec, Parse(DeviceInfo("<key>OSVersion</key><string>18.2</string>"), Report::Source::kDeviceInformation),
                1764641702000));
  CHECK(rec.fields.at("OSVersion").text == "18.2");
  CHECK(rec.fields.at("SerialNumber").text == "DMPXK2ABCD12");
  // SecurityInfo replaces every SecurityInfo field (the iPad has no firewall).
  REQUIRE(Merge(&rec, Fixture("inventory/SecurityInfo.ipad.plist", Report::Source::kSecurityInfo), 1764641703000));
  CHECK(rec.fields.count("SecurityInfo.FirewallSettings.FirewallEnabled") == 0);
  CHECK(rec.fields.at("SecurityInfo.PasscodePresent").text == "false");
  CHECK(rec.fields.at("OSVersion").text == "18.2");
  // An older report of a source is refused; the same one again is harmless.
  CHECK_FALSE(Merge(&rec, Parse(DeviceInfo("<key>OSVersion</key><string>17.0</string>"),
                                Report::Source::kDeviceInformation),
                    1764641701500));
  CHECK(rec.fields.at("OSVersion").text == "18.2");
  CHECK(Merge(&rec, Parse(DeviceInfo("<key>OSVersion</key><string>18.2</string>"), Report::Source::kDeviceInformation),
              1764641702000));
  // Apps: count and kept.
  REQUIRE(Merge(&rec, Fixture("inventory/InstalledApplicationList.ipad.plist", Report::Source::kInstalledApplications),
                1764641704000));
  CHECK(rec.app_count == 4);
  CHECK(rec.apps_kept == 4);

  // The stored form round-trips and is valid JSON.
  rec.app_chunks = 1;
  const std::string json = EncodeRecord(rec);
  RequireValidJson(json);
  Record back;
  REQUIRE(DecodeRecord(json, &back));
  CHECK(back.enrollment_id == rec.enrollment_id);
  CHECK(back.times == rec.times);
  CHECK(back.fields == rec.fields);
  CHECK(back.app_count == 4);
  CHECK(back.app_chunks == 1);
  auto v = orchard::plist::ParseJson(json);
  REQUIRE(v.ok());
  CHECK(v->Find("fields")->Find("BatteryLevel")->AsReal() != nullptr);
  REQUIRE(v->Find("fields")->Find("IsSupervised")->AsBool() != nullptr);
  CHECK(*v->Find("fields")->Find("IsSupervised")->AsBool());
}

TEST_CASE("inventory JSON stays valid with invalid UTF-8, control characters and huge strings", "[inventory]") {
  const std::string bad = std::string("a\xFF") + "b\xC0\x80" + "c\xED\xA0\x80" + "d\xF4\x90\x80\x80" + "e\xE2\x82";
  const std::string huge(10 * 1024 * 1024, 'x');
  Report r = Parse(DeviceInfo("<key>DeviceName</key><string>" + bad + "</string>"
                              "<key>Controls</key><string>&#1;&#31;\t\n&#127;&#x2028;\"\\</string>"
                              "<key>Huge</key><string>" + huge + "</string>"
                              "<key>Bad\xFFKey</key><string>v</string>"
                              "<key>NaN</key><real>nan</real>"
                              "<key>Big</key><integer>123456789012345678901234567890</integer>"),
                   Report::Source::kDeviceInformation);
  CHECK(Field(r.fields, "Huge").text.size() == kMaxStringBytes);
  CHECK(Field(r.fields, "NaN").kind == Scalar::Kind::kString);
  CHECK(Field(r.fields, "Big").kind == Scalar::Kind::kNumber);
  for (const auto& [k, v] : r.fields) {
    CHECK(IsStrictUtf8(k));
    CHECK(IsStrictUtf8(v.text));
  }
  CHECK(Field(r.fields, "DeviceName").text.find("\xEF\xBF\xBD") != std::string::npos);
  Record rec;
  rec.enrollment_id = std::string("id\xFE\x01");
  REQUIRE(Merge(&rec, r, 1));
  const std::string json = EncodeRecord(rec);
  RequireValidJson(json);
  CHECK(json.find("\\u0001") != std::string::npos);
  CHECK(json.find("\\u001f") != std::string::npos);
  CHECK(json.find("\\u2028") != std::string::npos);
  auto v = orchard::plist::ParseJson(json);
  REQUIRE(v.ok());
  CHECK(v->Find("fields")->GetString("Controls") == "\x01\x1F\t\n\x7F\xE2\x80\xA8\"\\");

  // Direct: every byte value, alone and in pairs.
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  RequireValidJson("[" + JsonString(all) + "," + JsonString(all + all.substr(128)) + "]");
  CHECK(SanitizeUtf8("\xE2\x82\xAC") == "\xE2\x82\xAC");
  CHECK(SanitizeUtf8("\xF0\x9F\x98\x80") == "\xF0\x9F\x98\x80");
  CHECK(Bounded("\xE2\x82\xAC\xE2\x82\xAC", 4) == "\xE2\x82\xAC");
}

TEST_CASE("inventory records stay under the kv value limit with many fields", "[inventory]") {
  std::string body;
  for (int i = 0; i < 3000; ++i)
    body += "<key>K" + std::to_string(i) + "</key><string>" + std::string(200, '\x01') + "</string>";
  Report r = Parse(DeviceInfo(body), Report::Source::kDeviceInformation);
  CHECK(r.fields.size() == kMaxFieldsPerReport);
  CHECK(r.fields_truncated);
  Record rec;
  rec.enrollment_id = "X";
  REQUIRE(Merge(&rec, r, 1));
  const std::string json = EncodeRecord(rec);
  CHECK(json.size() <= kMaxRecordBytes);
  RequireValidJson(json);
  Record back;
  REQUIRE(DecodeRecord(json, &back));
  CHECK(back.fields_truncated);
  CHECK(back.fields.size() < rec.fields.size());

  // Deep nesting and long arrays are cut, not recursed into without bound.
  std::string deep;
  for (int i = 0; i < 50; ++i) deep += "<key>d</key><dict>";
  deep += "<key>leaf</key><string>x</string>";
  for (int i = 0; i < 50; ++i) deep += "</dict>";
  std::string arr = "<key>A</key><array>";
  for (int i = 0; i < 100; ++i) arr += "<integer>" + std::to_string(i) + "</integer>";
  arr += "</array>";
  Report d = Parse(DeviceInfo(deep + arr), Report::Source::kDeviceInformation);
  CHECK(d.fields_truncated);
  CHECK(d.fields.count("A.31") == 1);
  CHECK(d.fields.count("A.32") == 0);
  for (const auto& [k, v] : d.fields) CHECK(k.size() <= kMaxKeyBytes);
}

TEST_CASE("inventory refuses reports that are not the expected plist", "[inventory]") {
  Report r;
  std::string error;
  CHECK_FALSE(ParseReport("not xml <", Report::Source::kDeviceInformation, &r, &error));
  CHECK_FALSE(error.empty());
  CHECK_FALSE(ParseReport("<plist><array/></plist>", Report::Source::kDeviceInformation, &r, &error));
  CHECK_FALSE(ParseReport(Plist("<key>QueryResponses</key><array/>"), Report::Source::kDeviceInformation, &r, &error));
  CHECK(error == "no QueryResponses dict");
  CHECK_FALSE(ParseReport(Plist(""), Report::Source::kSecurityInfo, &r, &error));
  CHECK_FALSE(ParseReport(Plist(""), Report::Source::kInstalledApplications, &r, &error));
  CHECK_FALSE(ParseReport(Plist(""), Report::Source::kNone, &r, &error));
  // An external entity is never resolved (pugixml does not process DOCTYPE subsets).
  const std::string xxe = "<?xml version=\"1.0\"?><!DOCTYPE plist [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
                          "<plist><dict><key>QueryResponses</key><dict><key>DeviceName</key><string>&x;</string>"
                          "</dict></dict></plist>";
  if (ParseReport(xxe, Report::Source::kDeviceInformation, &r, &error)) {
    CHECK(r.fields["DeviceName"].text.find("root:") == std::string::npos);
  }
  CHECK(SourceOf("DeviceInformation") == Report::Source::kDeviceInformation);
  CHECK(SourceOf("ProfileList") == Report::Source::kNone);
}

TEST_CASE("inventory CSV fields follow RFC 4180 quoting", "[inventory][csv]") {
  CHECK(CsvField("plain") == "plain");
  CHECK(CsvField("") == "");
  CHECK(CsvField("a,b") == "\"a,b\"");
  CHECK(CsvField("say \"hi\"") == "\"say \"\"hi\"\"\"");
  CHECK(CsvField("two\nlines") == "\"two\nlines\"");
  CHECK(CsvField("cr\rlf") == "\"cr\rlf\"");
  CHECK(CsvField("bad\xFFutf8") == "bad\xEF\xBF\xBDutf8");
  CHECK(CsvField(std::string("nul\0bel\x07", 8)) == "nul\xEF\xBF\xBD" "bel\xEF\xBF\xBD");
  CHECK(IsStrictUtf8(CsvField("\xC0\x80\xED\xA0\x80")));
}

TEST_CASE("inventory CSV neutralises spreadsheet formulas", "[inventory][csv]") {
  CHECK(CsvField("=1+1") == "'=1+1");
  CHECK(CsvField("+1") == "'+1");
  CHECK(CsvField("-1+2") == "'-1+2");
  CHECK(CsvField("@SUM(A1)") == "'@SUM(A1)");
  CHECK(CsvField("\tx") == "'\tx");
  CHECK(CsvField("\r=x") == "\"'\r=x\"");
  CHECK(CsvField("=HYPERLINK(\"http://evil.example/\",\"x\")") == "\"'=HYPERLINK(\"\"http://evil.example/\"\",\"\"x\"\")\"");
  CHECK(CsvField("a=b") == "a=b");
  // A real number reported by the device (BatteryLevel -1 on iOS when unknown) stays a number;
  // the same text as a device-supplied string does not.
  CHECK(CsvField("-1", true) == "-1");
  CHECK(CsvField("-1", false) == "'-1");
  CHECK(CsvField("-1+1", true) == "'-1+1");
}

TEST_CASE("inventory CSV rows use the configured columns", "[inventory][csv]") {
  Record rec;
  rec.enrollment_id = "00008030-0011223344556677";
  REQUIRE(Merge(&rec, Fixture("inventory/DeviceInformation.ipad.plist", Report::Source::kDeviceInformation),
                1764641700000));
  REQUIRE(Merge(&rec, Fixture("inventory/SecurityInfo.ipad.plist", Report::Source::kSecurityInfo), 1764641700000));
  rec.fields["DeviceName"] = Scalar{Scalar::Kind::kString, "=cmd|' /C calc'!A0, \"x\""};
  std::vector<std::string> cols;
  std::string error;
  REQUIRE(ParseColumns(" serial_number, os_version ,device_name,passcode_present,battery_level,app_count,"
                       "security_info_at,OSUpdateSettings.AutoCheckEnabled,Missing.Key",
                       &cols, &error));
  CHECK(CsvHeader(cols) ==
        "serial_number,os_version,device_name,passcode_present,battery_level,app_count,security_info_at,"
        "OSUpdateSettings.AutoCheckEnabled,Missing.Key\r\n");
  CHECK(CsvRow(rec, cols) ==
        "DMPXK2ABCD12,18.1,\"'=cmd|' /C calc'!A0, \"\"x\"\"\",false,0.8100000023841858,,2025-12-02T02:15:00.000Z,"
        "true,\r\n");
  CHECK_FALSE(ParseColumns("", &cols, &error));
  CHECK_FALSE(ParseColumns("a,,b", &cols, &error));
  CHECK_FALSE(ParseColumns("a,a", &cols, &error));
  CHECK(error.find("twice") != std::string::npos);
  CHECK_FALSE(ParseColumns("serial number", &cols, &error));
  CHECK_FALSE(ParseColumns("=x", &cols, &error));
  for (const auto& c : DefaultColumns()) CHECK(ParseColumns(c, &cols, &error));
}

TEST_CASE("inventory small helpers", "[inventory]") {
  CHECK(Rfc3339(0) == "1970-01-01T00:00:00.000Z");
  CHECK(Rfc3339(1764641700123) == "2025-12-02T02:15:00.123Z");
  CHECK(PercentEncode("a b/c%\xFF") == "a%20b%2Fc%25%FF");
  CHECK(IsJsonNumber("0"));
  CHECK(IsJsonNumber("-1.5e+3"));
  CHECK_FALSE(IsJsonNumber("01"));
  CHECK_FALSE(IsJsonNumber("1."));
  CHECK_FALSE(IsJsonNumber("inf"));
  CHECK_FALSE(IsJsonNumber(""));
  Json j;
  CHECK(ParseJson(R"({"a":"x","b.c":"y","n":[1,true,null]})", &j));
  CHECK(j.Find("b.c")->text == "y");
  CHECK_FALSE(ParseJson("{\"a\":}", &j));
  CHECK_FALSE(ParseJson(std::string(100, '['), &j));
}
