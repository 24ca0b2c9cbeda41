#include <catch2/catch.hpp>

#include "automation/commands.h"
#include "automation/decisions.h"
#include "automation/host.h"

using namespace orchard;
using namespace orchard::automation;

TEST_CASE("derived command UUIDs are stable, distinct and UUID-shaped", "[automation]") {
  std::string a = DerivedCommandUuid("policy:x", "0.42", 0);
  CHECK(a == DerivedCommandUuid("policy:x", "0.42", 0));
  CHECK(a != DerivedCommandUuid("policy:x", "0.42", 1));
  CHECK(a != DerivedCommandUuid("policy:y", "0.42", 0));
  CHECK(a != DerivedCommandUuid("policy:x", "0.43", 0));
  // No ambiguity from concatenation.
  CHECK(DerivedCommandUuid("ab", "c", 0) != DerivedCommandUuid("a", "bc", 0));
  REQUIRE(a.size() == 36);
  CHECK(a[8] == '-');
  CHECK(a[14] == '8');  // version 8
  for (char c : a) CHECK((c == '-' || std::isdigit(c) || (c >= 'A' && c <= 'F')));
}

TEST_CASE("compliance state round-trips and rejects corrupt records", "[automation]") {
  ComplianceState s;
  s.status = ComplianceStatus::kRemediationPending;
  s.since_ms = 5;
  s.first_failed_ms = 4;
  s.attempts = 2;
  s.step = 1;
  s.updated_ms = 6;
  s.last_command_uuid = "U";
  s.reason = "why";
  auto back = ComplianceState::Decode(s.Encode());
  REQUIRE(back.ok());
  CHECK(back->status == s.status);
  CHECK(back->attempts == 2);
  CHECK(back->reason == "why");
  std::string bytes = s.Encode();
  CHECK_FALSE(ComplianceState::Decode(bytes.substr(0, bytes.size() - 2)).ok());
  CHECK_FALSE(ComplianceState::Decode("\x07").ok());
}

TEST_CASE("commands are checked against Apple's schemas", "[automation]") {
  CHECK(KnownRequestTypes().size() == 66);
  plist::Value c;
  c.Set("RequestType", plist::Value::String("DeviceInformation"));
  CHECK(CheckCommand(c).code() == Code::kInvalidArgument);  // Queries is required
  c.Set("Queries", plist::Value::MakeArray({plist::Value::String("OSVersion")}));
  CHECK(CheckCommand(c).ok());
  c.Set("Bogus", plist::Value::Bool(true));
  CHECK_FALSE(CheckCommand(c).ok());
  CHECK(CheckCommand(c, /*unchecked=*/true).ok());
  auto xml = CommandPlist("U-1", c);
  auto parsed = plist::ParseXml(xml);
  REQUIRE(parsed.ok());
  CHECK(parsed->GetString("CommandUUID") == "U-1");
  CHECK(parsed->Find("Command")->AsDict()->front().first == "RequestType");
}

TEST_CASE("the overlay shows pending writes over the base", "[automation]") {
  MemoryHost base;
  Decisions committed;
  committed.kv = {{"a", std::string("1")}, {"b", std::string("2")}, {"c", std::string("3")}};
  base.Commit("ns", committed);
  Overlay ov(&base);
  Decisions pending;
  pending.kv = {{"b", std::nullopt}, {"d", std::string("4")}, {"a", std::string("9")}};
  ov.Apply("ns", pending);
  CHECK(**ov.KvGet("ns", "a") == "9");
  CHECK_FALSE(ov.KvGet("ns", "b")->has_value());
  auto all = ov.KvScan("ns", "", "", 10);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 3);
  CHECK((*all)[0] == std::pair<std::string, std::string>{"a", "9"});
  CHECK((*all)[1].first == "c");
  CHECK((*all)[2].first == "d");
  auto page = ov.KvScan("ns", "", "a", 1);
  REQUIRE(page->size() == 1);
  CHECK((*page)[0].first == "c");
}
