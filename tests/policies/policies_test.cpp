// Every shipped policy (policies/*.lua) run through the admin test harness on
// its recorded events (tests/policies/*.events.jsonl), with its decisions
// checked: the examples are tested the way an admin would test their own.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "plist/plist.h"
#include "policy/harness.h"

using namespace orchard;
using plist::Value;

namespace {

struct Run {
  int status = 0;
  std::string err;
  std::vector<Value> rows;

  // Decisions of one kind (and, if given, one events line).
  std::vector<const Value*> Of(const std::string& kind, int64_t line = 0) const {
    std::vector<const Value*> out;
    for (const auto& r : rows)
      if (r.GetString("kind") == kind && (line == 0 || *r.Find("line")->AsInteger() == line)) out.push_back(&r);
    return out;
  }
  std::vector<std::string> Commands(int64_t line) const {
    std::vector<std::string> out;
    for (const Value* v : Of("command", line)) out.emplace_back(v->GetString("request_type"));
    return out;
  }
  std::string Status(int64_t line) const {
    auto c = Of("compliance", line);
    return c.empty() ? "" : std::string(c.back()->GetString("status"));
  }
};

Run Harness(const std::string& name) {
  const std::string root = ORCHARD_SOURCE_DIR;
  std::ifstream events(root + "/tests/policies/" + name + ".events.jsonl");
  REQUIRE(events.good());
  std::ostringstream out, err;
  Run r;
  r.status = policy::RunHarness(root + "/policies/" + name + ".lua", events, out, err);
  r.err = err.str();
  std::istringstream lines(out.str());
  std::string line;
  while (std::getline(lines, line)) {
    auto v = plist::ParseJson(line);
    REQUIRE(v.ok());
    r.rows.push_back(std::move(v.value()));
  }
  INFO(out.str() << r.err);
  REQUIRE(r.status == 0);
  REQUIRE(r.Of("error").empty());
  return r;
}

const Value& Cmd(const Value* row) { return *row->Find("command"); }

}  // namespace

TEST_CASE("policy min_os: below the floor escalates over two weeks, then recovers", "[policies]") {
  Run r = Harness("min_os");
  CHECK(r.Commands(2) == std::vector<std::string>{"DeviceInformation"});
  CHECK(Cmd(r.Of("command", 2)[0]).Find("Queries")->AsArray()->size() == 2);
  CHECK(r.Commands(3) == std::vector<std::string>{"ScheduleOSUpdate"});
  CHECK(r.Status(3) == "remediation_pending");
  CHECK(r.Commands(4).empty());  // day 3: the next step waits for day 7
  CHECK(r.Commands(5) == std::vector<std::string>{"ScheduleOSUpdate"});
  const Value* update = Cmd(r.Of("command", 5)[0]).Find("Updates");
  CHECK(update->AsArray()->at(0).GetString("InstallAction") == "InstallForceRestart");
  REQUIRE(r.Of("log", 6).size() == 1);
  CHECK(r.Of("log", 6)[0]->GetString("level") == "error");
  CHECK(r.Status(7) == "compliant");
  CHECK(r.Status(9) == "compliant");  // line 8 is a comment
  CHECK(r.Commands(9).empty());
}

TEST_CASE("policy passcode: profile at most three times, lock after three days", "[policies]") {
  Run r = Harness("passcode");
  CHECK(r.Commands(1) == std::vector<std::string>{"InstallProfile"});
  CHECK(r.Status(1) == "remediation_pending");
  // The profile is a real configuration profile with the passcode payload.
  const plist::Data* payload = Cmd(r.Of("command", 1)[0]).Find("Payload")->AsData();
  REQUIRE(payload);
  auto profile = plist::ParseXml(payload->bytes);
  REQUIRE(profile.ok());
  CHECK(profile->Find("PayloadContent")->AsArray()->at(0).GetString("PayloadType") ==
        "com.apple.mobiledevice.passwordpolicy");
  CHECK(r.Commands(2) == std::vector<std::string>{"InstallProfile"});
  CHECK(r.Commands(3) == std::vector<std::string>{"InstallProfile"});
  CHECK(r.Commands(4) == std::vector<std::string>{"DeviceLock"});  // capped at 3, and day 3 passed
  CHECK(r.Status(5) == "compliant");
}

TEST_CASE("policy filevault: Macs only, profile when off or not escrowed", "[policies]") {
  Run r = Harness("filevault");
  CHECK(r.Commands(1) == std::vector<std::string>{"SecurityInfo"});
  CHECK(r.Commands(2).empty());  // not a Mac
  CHECK(r.Commands(3) == std::vector<std::string>{"InstallProfile"});
  CHECK(r.Of("compliance", 3)[0]->GetString("reason") == "FileVault is off");
  CHECK(r.Of("compliance", 4)[0]->GetString("reason") == "recovery key not escrowed");
  CHECK(r.Status(5) == "compliant");
  CHECK(r.Of("compliance", 6).empty());
}

TEST_CASE("policy identity_renewal: renew within 30 days with the host's renewal profile, retry daily, done when renewed",
          "[policies]") {
  Run r = Harness("identity_renewal");
  CHECK(r.Commands(1) == std::vector<std::string>{"InstallProfile"});
  // The profile is ctx:renewal_profile()'s (the harness answers fixed bytes; orchardd a signed one).
  const std::string* payload = Cmd(r.Of("command", 1)[0]).GetData("Payload");
  REQUIRE(payload);
  CHECK(*payload == "orchard harness renewal profile");
  CHECK(r.Status(1) == "remediation_pending");
  CHECK(r.Commands(2) == std::vector<std::string>{"InstallProfile"});  // daily retry
  CHECK(r.Commands(3).empty());  // 180 days left
  CHECK(r.Commands(4).empty());  // the push certificate is not this policy's business
  CHECK(r.Status(5) == "compliant");
  CHECK(r.Commands(6).empty());
  CHECK(r.Commands(7) == std::vector<std::string>{"InstallProfile"});
  CHECK(r.Status(8) == "compliant");  // replaced in place
  CHECK(r.Of("compliance", 9).empty());  // a refused takeover is not a renewal
}

TEST_CASE("policy stale_device: ask (which pushes), non-compliant after 30 days", "[policies]") {
  Run r = Harness("stale_device");
  CHECK(r.Of("push", 1).empty());  // the command's own push wakes the device: no second one
  CHECK(r.Commands(1) == std::vector<std::string>{"DeviceInformation"});
  CHECK(r.Of("command", 1)[0]->GetBool("push", false));
  CHECK(r.Of("compliance", 1).empty());
  CHECK(r.Status(2) == "non_compliant");
  CHECK(r.Status(3) == "compliant");
}

TEST_CASE("policy inventory: five queries for enrolled devices", "[policies]") {
  Run r = Harness("inventory");
  CHECK(r.Commands(1) == std::vector<std::string>{"DeviceInformation", "SecurityInfo", "InstalledApplicationList",
                                                  "ProfileList", "CertificateList"});
  CHECK(r.Commands(2).empty());  // unknown device
}

TEST_CASE("policy apps: one ask per app per day, never chained", "[policies]") {
  Run r = Harness("apps");
  auto first = r.Commands(1);
  std::sort(first.begin(), first.end());
  CHECK(first == std::vector<std::string>{"InstallApplication", "RemoveApplication"});
  CHECK(r.Status(1) == "non_compliant");
  CHECK(r.Commands(2).empty());  // same day: not asked again
  CHECK(r.Status(3) == "compliant");
  CHECK(r.Commands(3).empty());
}

TEST_CASE("policy profile_drift: a missing profile is installed again", "[policies]") {
  Run r = Harness("profile_drift");
  CHECK(r.Commands(1) == std::vector<std::string>{"InstallProfile"});
  CHECK(r.Status(1) == "remediation_pending");
  CHECK(r.Status(2) == "compliant");
}

TEST_CASE("policy enrollment_baseline: once per enrollment, DeviceConfigured last", "[policies]") {
  Run r = Harness("enrollment_baseline");
  CHECK(r.Commands(1) == std::vector<std::string>{"InstallProfile", "Settings", "DeviceConfigured"});
  CHECK(Cmd(r.Of("command", 1)[1]).Find("Settings")->AsArray()->at(0).GetString("DeviceName") == "ORCH-F2LX1234");
  CHECK(r.Commands(2) == std::vector<std::string>{"InstallProfile", "Settings"});
  CHECK(r.Commands(3).empty());  // a later TokenUpdate is not an enrollment
}

TEST_CASE("policy command_retry: backoff from the schedule, cap, reset on success", "[policies]") {
  Run r = Harness("command_retry");
  CHECK(r.Of("store", 1).size() == 1);
  CHECK(r.Commands(2).empty());                                      // 5 min: not due yet
  CHECK(r.Commands(3) == std::vector<std::string>{"SecurityInfo"});  // 20 min: due
  CHECK(r.Commands(4).empty());                                      // already sent
  CHECK(r.Of("compliance").size() == 1);  // only the fourth failure flags the device
  CHECK(r.Status(7) == "non_compliant");
  CHECK(r.Of("store", 8).size() == 1);    // success clears the retry state
  CHECK(r.Of("store", 9).empty());        // EraseDevice is never retried
}

TEST_CASE("policy lost_mode: lock, locate, erase only when approved and 14 days lost", "[policies]") {
  Run r = Harness("lost_mode");
  CHECK(r.Commands(1) == std::vector<std::string>{"EnableLostMode", "DeviceLocation", "PlayLostModeSound"});
  CHECK(r.Commands(2).empty());
  CHECK(r.Commands(4).empty());  // approved, but lost for 9 days only
  CHECK(r.Commands(5) == std::vector<std::string>{"EraseDevice"});
  CHECK(r.Commands(6).empty());  // once
  CHECK(r.Commands(7) == std::vector<std::string>{"DisableLostMode"});
}

namespace {

// Every row of one events line.
size_t Rows(const Run& r, int64_t line) {
  size_t n = 0;
  for (const auto& row : r.rows)
    if (*row.Find("line")->AsInteger() == line) ++n;
  return n;
}
// The ops of a line's ddm decisions, in order.
std::vector<std::string> DdmOps(const Run& r, int64_t line) {
  std::vector<std::string> out;
  for (const Value* v : r.Of("ddm", line)) out.emplace_back(v->GetString("op"));
  return out;
}
// The declaration a line puts with that Identifier (nullptr when none).
const Value* Declared(const Run& r, int64_t line, const std::string& identifier) {
  for (const Value* v : r.Of("ddm", line))
    if (v->GetString("op") == "put_declaration" && v->Find("declaration")->GetString("Identifier") == identifier)
      return v->Find("declaration");
  return nullptr;
}
// "op set identifier" of a line's set_add/set_remove rows, "op enrollment set" of assign/unassign.
std::vector<std::string> DdmArgs(const Run& r, int64_t line) {
  std::vector<std::string> out;
  for (const Value* v : r.Of("ddm", line)) {
    const std::string op(v->GetString("op"));
    if (op == "set_add" || op == "set_remove")
      out.push_back(op + " " + std::string(v->GetString("set")) + " " + std::string(v->GetString("identifier")));
    if (op == "assign" || op == "unassign")
      out.push_back(op + " " + std::string(v->GetString("enrollment_id")) + " " + std::string(v->GetString("set")));
  }
  return out;
}
std::vector<std::string> LogLevels(const Run& r, int64_t line) {
  std::vector<std::string> out;
  for (const Value* v : r.Of("log", line)) out.emplace_back(v->GetString("level"));
  return out;
}
std::string Reason(const Run& r, int64_t line) {
  auto c = r.Of("compliance", line);
  return c.empty() ? "" : std::string(c.back()->GetString("reason"));
}
int64_t Step(const Run& r, int64_t line) {
  auto c = r.Of("compliance", line);
  return c.empty() ? -1 : *c.back()->Find("step")->AsInteger();
}

}  // namespace

TEST_CASE("policy min-os-ddm: enforcement declaration below the floor, failures escalate, unassigned at the floor",
          "[policies]") {
  Run r = Harness("min-os-ddm");
  const std::vector<std::string> declare{"put_declaration", "put_declaration", "set_add", "set_add", "assign"};

  // Enrollment: the status subscription the policy needs, in its own set.
  CHECK(DdmOps(r, 2) == declare);
  const Value* sub = Declared(r, 2, "min-os-ddm.status");
  REQUIRE(sub);
  CHECK(sub->GetString("Type") == "com.apple.configuration.management.status-subscriptions");
  const auto* items = sub->Find("Payload")->Find("StatusItems")->AsArray();
  REQUIRE(items);
  std::vector<std::string> names;
  for (const auto& i : *items) names.emplace_back(i.GetString("Name"));
  CHECK(names == std::vector<std::string>{"device.operating-system.family", "device.operating-system.version",
                                          "softwareupdate.install-state", "softwareupdate.pending-version",
                                          "softwareupdate.failure-reason"});
  CHECK(DdmArgs(r, 2) == std::vector<std::string>{"set_add min-os-ddm.status min-os-ddm.status",
                                                  "set_add min-os-ddm.status min-os-ddm.status.activation",
                                                  "assign PHONE-1 min-os-ddm.status"});
  CHECK(r.Of("compliance", 2).empty());
  CHECK(Rows(r, 3) == 0);  // the family alone decides nothing

  // 26.0 < 26.1: the enforcement declaration and its activation in the iOS set, assigned; remediation pending.
  CHECK(DdmOps(r, 4) == declare);
  const Value* update = Declared(r, 4, "min-os-ddm.ios.update");
  REQUIRE(update);
  CHECK(update->GetString("Type") == "com.apple.configuration.softwareupdate.enforcement.specific");
  CHECK(update->Find("Payload")->GetString("TargetOSVersion") == "26.1");
  CHECK(update->Find("Payload")->GetString("TargetLocalDateTime") == "2026-12-15T18:00:00");
  CHECK(update->Find("ServerToken") == nullptr);  // computed by the server
  const Value* activation = Declared(r, 4, "min-os-ddm.ios.activation");
  REQUIRE(activation);
  CHECK(activation->GetString("Type") == "com.apple.activation.simple");
  const auto* configs = activation->Find("Payload")->Find("StandardConfigurations")->AsArray();
  REQUIRE(configs);
  REQUIRE(configs->size() == 1);
  CHECK(configs->at(0).AsString() != nullptr);
  CHECK(*configs->at(0).AsString() == "min-os-ddm.ios.update");
  CHECK(DdmArgs(r, 4) == std::vector<std::string>{"set_add min-os-ddm.ios min-os-ddm.ios.update",
                                                  "set_add min-os-ddm.ios min-os-ddm.ios.activation",
                                                  "assign PHONE-1 min-os-ddm.ios"});
  CHECK(r.Status(4) == "remediation_pending");
  CHECK(Reason(r, 4) == "OS 26.0 is below 26.1");
  // Install progress is logged, nothing else.
  CHECK(LogLevels(r, 5) == std::vector<std::string>{"info"});
  CHECK(r.Of("log", 5)[0]->GetString("message") == "PHONE-1 software update downloading");
  CHECK(Rows(r, 5) == 1);
  CHECK(r.Of("log", 6)[0]->GetString("message") == "PHONE-1 software update installing");
  CHECK(Rows(r, 6) == 1);
  // 26.1: compliant, the iOS set unassigned (the subscription stays).
  CHECK(r.Status(7) == "compliant");
  CHECK(DdmArgs(r, 7) == std::vector<std::string>{"unassign PHONE-1 min-os-ddm.ios"});
  CHECK(DdmOps(r, 7) == std::vector<std::string>{"unassign"});

  // PHONE-2: three failures climb the ladder, one step each.
  CHECK(r.Status(10) == "remediation_pending");
  CHECK(DdmArgs(r, 10).back() == "assign PHONE-2 min-os-ddm.ios");
  CHECK(Step(r, 11) == 1);
  CHECK(LogLevels(r, 11) == std::vector<std::string>{"warn"});
  CHECK(r.Of("compliance", 12).empty());  // the failed state of the same failure: no second step
  CHECK(LogLevels(r, 12) == std::vector<std::string>{"info"});
  CHECK(Step(r, 14) == 2);
  CHECK(LogLevels(r, 14) == std::vector<std::string>{"warn"});
  CHECK(Step(r, 15) == 3);
  CHECK(LogLevels(r, 15) == std::vector<std::string>{"error"});
  CHECK(r.Of("log", 15)[0]->GetString("message") == "PHONE-2 software update failed 3 times: Not enough free space");
  CHECK(Reason(r, 15) == "OS 26.0 is below 26.1; the update failed 3 times (Not enough free space)");
  CHECK(r.Status(15) == "remediation_pending");  // the declaration stays: the device installs at the deadline
  // The daily recheck: the same declarations again (no change on the server), no new step, reason kept.
  CHECK(DdmArgs(r, 17).back() == "assign PHONE-2 min-os-ddm.ios");
  CHECK(r.Of("compliance", 17).empty());
  CHECK(r.Of("log", 17).empty());
  CHECK(r.Of("store", 17).empty());

  // PHONE-3 at 26.2: compliant and nothing else.
  CHECK(r.Status(20) == "compliant");
  CHECK(Rows(r, 20) == 1);
  // MAC-1: the macOS set, from the product name.
  CHECK(DdmArgs(r, 22).back() == "assign MAC-1 min-os-ddm.macos");
  REQUIRE(Declared(r, 22, "min-os-ddm.macos.update"));
  CHECK(Declared(r, 22, "min-os-ddm.macos.update")->Find("Payload")->GetString("TargetOSVersion") == "26.1");
  CHECK(r.Status(22) == "remediation_pending");
  CHECK(Rows(r, 23) + Rows(r, 24) == 0);  // tvOS is not managed
  // Too old for the declaration: ScheduleOSUpdate (deprecated) from DeviceInformation; a newer device is left to DDM.
  CHECK(r.Commands(26) == std::vector<std::string>{"ScheduleOSUpdate"});
  CHECK(r.Status(26) == "remediation_pending");
  CHECK(Rows(r, 27) == 0);
}

TEST_CASE("policy passcode-ddm: settings declared at enrollment, compliance from passcode.is-compliant", "[policies]") {
  Run r = Harness("passcode-ddm");
  CHECK(DdmOps(r, 2) == std::vector<std::string>{"put_declaration", "set_add", "put_declaration", "set_add",
                                                 "put_declaration", "set_add", "assign"});
  const Value* settings = Declared(r, 2, "passcode-ddm.settings");
  REQUIRE(settings);
  CHECK(settings->GetString("Type") == "com.apple.configuration.passcode.settings");
  CHECK(settings->Find("Payload")->GetBool("RequirePasscode", false));
  CHECK(*settings->Find("Payload")->Find("MinimumLength")->AsInteger() == 6);
  const Value* activation = Declared(r, 2, "passcode-ddm.activation");
  REQUIRE(activation);
  CHECK(activation->Find("Payload")->Find("StandardConfigurations")->AsArray()->size() == 2);
  REQUIRE(Declared(r, 2, "passcode-ddm.status"));
  CHECK(DdmArgs(r, 2) == std::vector<std::string>{"set_add passcode-ddm passcode-ddm.settings",
                                                  "set_add passcode-ddm passcode-ddm.status",
                                                  "set_add passcode-ddm passcode-ddm.activation",
                                                  "assign PHONE-1 passcode-ddm"});
  // Before the device reports the settings active, is-compliant (true without settings) counts for nothing.
  CHECK(Rows(r, 3) + Rows(r, 4) + Rows(r, 5) == 0);
  CHECK(r.Status(6) == "non_compliant");
  CHECK(Reason(r, 6) == "no passcode");
  CHECK(Reason(r, 7) == "passcode does not meet the policy");
  CHECK(r.Status(8) == "compliant");
  CHECK(r.Status(10) == "non_compliant");
  CHECK(Reason(r, 10) == "passcode settings rejected by the device (Error.ConfigurationCannotBeApplied)");
  CHECK(DdmArgs(r, 12).back() == "assign PHONE-3 passcode-ddm");  // enrolled before the policy: the daily run
  CHECK(Rows(r, 13) + Rows(r, 14) + Rows(r, 16) == 0);  // an older revision, another policy's declaration
}
