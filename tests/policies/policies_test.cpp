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
