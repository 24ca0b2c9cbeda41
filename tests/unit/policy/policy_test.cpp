// The policy API: metadata, handlers, ctx (enqueue, push, results, store,
// compliance, escalation), plist types in Lua, and what a run decides.
#include <catch2/catch.hpp>

#include <cstring>

#include "automation/commands.h"
#include "automation/host.h"
#include "policy/policy.h"

using namespace orchard;
using automation::ComplianceStatus;
using automation::RunError;
using plist::Value;

namespace {

std::unique_ptr<policy::Policy> Load(const std::string& src, const std::string& name = "test") {
  auto r = policy::Policy::Load(name, src, name + ".lua", {});
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return std::move(r.value());
}

events::Event Ev(const std::string& type, const std::string& id = "DEV-1", uint64_t seq = 42) {
  events::Event e;
  e.seq = seq;
  e.type = type;
  e.time_ms = 1'700'000'000'000;
  e.enrollment_id = id;
  return e;
}

struct Runner {
  std::unique_ptr<policy::Policy> p;
  automation::MemoryHost host;
  int64_t now_ms = 1'700'000'000'000;
  automation::Decisions last;

  automation::RunOutcome Handle(const events::Event& ev, const Value& payload = Value(), bool commit = true) {
    policy::RunInput in{"policy:" + p->info().name, "0." + std::to_string(ev.seq), now_ms, false};
    auto out = p->HandleEvent(in, ev, payload, &host, &last);
    if (out.ok() && commit) host.Commit(in.consumer, last);
    return out;
  }
};

}  // namespace

TEST_CASE("policy: metadata and registered handlers", "[policy]") {
  auto p = Load(R"(
    policy { name = "min-os", description = "Keep iOS current", version = "1.2" }
    policy:on("enrollment.enrolled", function(ctx) end)
    policy:on_result("DeviceInformation", function(ctx, r) end)
    policy:every("6h", function(ctx) end, { splay = "1h" })
  )");
  CHECK(p->info().name == "min-os");
  CHECK(p->info().description == "Keep iOS current");
  CHECK(p->info().version == "1.2");
  CHECK(p->Wants("enrollment.enrolled", ""));
  CHECK(p->Wants("command.acknowledged", "DeviceInformation"));
  CHECK_FALSE(p->Wants("command.acknowledged", "SecurityInfo"));
  CHECK_FALSE(p->Wants("device.idle", ""));
  REQUIRE(p->info().schedules.size() == 1);
  CHECK(p->info().schedules[0].interval_ms == 6 * 3600 * 1000);
  CHECK(p->info().schedules[0].splay_ms == 3600 * 1000);
  CHECK(p->info().schedules[0].per_device);
}

TEST_CASE("policy: bad names, late registration and bad schedules are refused", "[policy]") {
  CHECK_FALSE(policy::Policy::Load("x", "policy { name = 'bad name!' }", "x.lua", {}).ok());
  CHECK_FALSE(policy::Policy::Load("x", "policy:every('10s', function() end)", "x.lua", {}).ok());
  CHECK_FALSE(policy::Policy::Load("x", "policy:every('1h', function() end, {splay = '2h'})", "x.lua", {}).ok());
  CHECK_FALSE(policy::Policy::Load("bad/name", "", "x.lua", {}).ok());
  Runner r;
  r.p = Load("policy:on('a', function(ctx) policy:on('b', function() end) end)");
  auto out = r.Handle(Ev("a"));
  CHECK(out.error == RunError::kScript);
  CHECK(out.message.find("only be registered while the policy loads") != std::string::npos);
}

TEST_CASE("policy: enqueue builds a checked command with a UUID derived from the trigger", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:on("enrollment.enrolled", function(ctx, event)
      local a = ctx:enqueue(mdm.DeviceInformation { Queries = { "OSVersion", "SerialNumber" } })
      local b = ctx:enqueue({ RequestType = "SecurityInfo" }, { priority = 5, push = false })
      ctx:put("uuids", { a, b })
    end)
  )");
  REQUIRE(r.Handle(Ev("enrollment.enrolled")).ok());
  REQUIRE(r.last.commands.size() == 2);
  const auto& c = r.last.commands[0];
  CHECK(c.enrollment_id == "DEV-1");
  CHECK(c.request_type == "DeviceInformation");
  CHECK(c.command_uuid == automation::DerivedCommandUuid("policy:test", "0.42", 0));
  CHECK(c.push);
  auto parsed = plist::ParseXml(c.plist);
  REQUIRE(parsed.ok());
  CHECK(parsed->GetString("CommandUUID") == c.command_uuid);
  const Value* cmd = parsed->Find("Command");
  REQUIRE(cmd);
  CHECK(cmd->GetString("RequestType") == "DeviceInformation");
  REQUIRE(cmd->Find("Queries"));
  CHECK(cmd->Find("Queries")->AsArray()->size() == 2);
  CHECK(r.last.commands[1].priority == 5);
  CHECK_FALSE(r.last.commands[1].push);

  // The same trigger again (a replay) yields the same UUIDs.
  automation::Decisions first = r.last;
  REQUIRE(r.Handle(Ev("enrollment.enrolled")).ok());
  CHECK(r.last.commands[0].command_uuid == first.commands[0].command_uuid);
  CHECK(r.last.commands[1].command_uuid == first.commands[1].command_uuid);
  // Another event, other UUIDs.
  REQUIRE(r.Handle(Ev("enrollment.enrolled", "DEV-1", 43)).ok());
  CHECK(r.last.commands[0].command_uuid != first.commands[0].command_uuid);
}

TEST_CASE("policy: command typos fail at the line that made them", "[policy]") {
  Runner r;
  for (const char* body : {"mdm.DeviceInfo {}", "mdm.DeviceInformation { Querys = {} }",
                           "mdm.DeviceInformation { Queries = 'OSVersion' }", "mdm.DeviceInformation {}",
                           "ctx:enqueue({ RequestType = 'NoSuchThing' })", "ctx:enqueue({})",
                           "ctx:enqueue(mdm.RestartDevice {}, { priority = 300 })"}) {
    INFO(body);
    r.p = Load("policy:on('x', function(ctx)\n" + std::string(body) + "\nend)");
    auto out = r.Handle(Ev("x"));
    CHECK(out.error == RunError::kScript);
    CHECK(out.message.find("test.lua:2") != std::string::npos);
    CHECK(r.last.commands.empty());
  }
  // Newer RequestTypes can be sent unchecked.
  r.p = Load("policy:on('x', function(ctx) ctx:enqueue(mdm.command('FutureThing', {A = 1}, {unchecked = true})) end)");
  REQUIRE(r.Handle(Ev("x")).ok());
  CHECK(r.last.commands.size() == 1);
}

TEST_CASE("policy: an error commits nothing but keeps its log lines and traceback", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:on("x", function(ctx)
      log.info("about to fail")
      ctx:enqueue(mdm.DeviceInformation { Queries = { "OSVersion" } })
      ctx:put("k", "v")
      ctx:noncompliant("broken")
      local t = nil
      return t.field
    end)
  )");
  auto out = r.Handle(Ev("x"));
  CHECK(out.error == RunError::kScript);
  CHECK(out.message.find("test.lua:8") != std::string::npos);
  CHECK(out.message.find("stack traceback") != std::string::npos);
  CHECK_FALSE(r.last.HasEffects());
  REQUIRE(r.last.logs.size() == 1);
  CHECK(r.last.logs[0].message == "about to fail");
  CHECK(r.host.KvGet("policy:test", "k")->has_value() == false);
}

TEST_CASE("policy: device reports arrive as tables with plist types kept", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:on_result("DeviceInformation", function(ctx, result)
      local q = result.response.QueryResponses
      assert(result.status == "Acknowledged", result.status)
      assert(math.type(q.BatteryLevel) == "float", "real")
      assert(math.type(q.DeviceCapacity) == "integer", "integer")
      assert(q.IsSupervised == true)
      assert(#q.Token == 3 and q.Token:bytes() == "\1\2\3" and q.Token:hex() == "010203")
      assert(q.LastBackup.unix == 1700000000 and tostring(q.LastBackup) == "2023-11-14T22:13:20Z")
      assert(q.Empty ~= nil and #q.Empty == 0)
      ctx:put("echo", q)
    end)
  )");
  Value q;
  q.Set("BatteryLevel", Value::Real(1.0));
  q.Set("DeviceCapacity", Value::Integer(128));
  q.Set("IsSupervised", Value::Bool(true));
  q.Set("Token", Value::DataValue(std::string("\1\2\3", 3)));
  q.Set("LastBackup", Value::DateValue(1'700'000'000));
  q.Set("Empty", Value::MakeArray());
  Value report;
  report.Set("Status", Value::String("Acknowledged"));
  report.Set("QueryResponses", q);
  auto ev = Ev("command.acknowledged");
  ev.request_type = "DeviceInformation";
  ev.command_uuid = "C-1";
  auto out = r.Handle(ev, report);
  INFO(out.message);
  REQUIRE(out.ok());
  // Round trip through the store keeps the types.
  auto stored = r.host.KvGet("policy:test", "echo");
  REQUIRE(stored.ok());
  REQUIRE(stored->has_value());
  auto back = plist::ParseJson(**stored);
  REQUIRE(back.ok());
  // Lua tables have no key order: the stored dict has its keys sorted.
  REQUIRE(back->AsDict()->size() == q.AsDict()->size());
  for (const auto& [k, v] : *q.AsDict()) {
    INFO(k);
    REQUIRE(back->Find(k));
    CHECK(*back->Find(k) == v);
  }
}

TEST_CASE("policy: the key-value store sees the run's own writes", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:on("x", function(ctx)
      ctx:put("app/a", 1)
      ctx:put("app/b", { n = 2 })
      ctx:put("app/c", "three")
      ctx:put("other", true)
      ctx:delete("app/c")
      assert(ctx:get("app/a") == 1)
      assert(ctx:get("app/c") == nil)
      local items = ctx:scan("app/")
      assert(#items == 2 and items[1].key == "app/a" and items[2].value.n == 2)
      local page = ctx:scan("app/", { limit = 1, after = "app/a" })
      assert(#page == 1 and page[1].key == "app/b")
    end)
    policy:on("y", function(ctx)
      assert(ctx:get("app/b").n == 2)
      assert(#ctx:scan("") == 3)
    end)
  )");
  auto out = r.Handle(Ev("x"));
  INFO(out.message);
  REQUIRE(out.ok());
  out = r.Handle(Ev("y"));
  INFO(out.message);
  REQUIRE(out.ok());
}

TEST_CASE("policy: compliance edges, retry caps and escalation ladders", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:on("check", function(ctx, event)
      local ok = event.payload.ok
      if ok then
        ctx:put("recovered", ctx:compliant())
        return
      end
      ctx:put("newly", ctx:noncompliant("passcode missing"))
      if ctx:attempt(2) then
        local id = ctx:enqueue(mdm.DeviceLock {})
        ctx:remediating(id)
      end
      ctx:escalate({
        { after = "0s", run = function(c) c:put("step", 1) end },
        { after = "1d", run = function(c) c:put("step", 2) end },
      })
    end)
  )");
  Value bad;
  bad.Set("ok", Value::Bool(false));
  Value good;
  good.Set("ok", Value::Bool(true));
  auto get = [&](const char* k) {
    auto v = r.host.KvGet("policy:test", k);
    return v.ok() && v->has_value() ? **v : std::string("<none>");
  };
  auto state = [&] { return r.host.Compliance("policy:test", "DEV-1")->value_or(automation::ComplianceState{}); };

  REQUIRE(r.Handle(Ev("check"), bad).ok());
  CHECK(get("newly") == "true");
  CHECK(state().status == ComplianceStatus::kRemediationPending);
  CHECK(state().attempts == 1);
  CHECK(state().first_failed_ms == r.now_ms);
  CHECK(state().reason == "passcode missing");
  CHECK(get("step") == "1");
  CHECK(r.last.commands.size() == 1);
  CHECK(state().last_command_uuid == r.last.commands[0].command_uuid);

  r.now_ms += 3600 * 1000;
  REQUIRE(r.Handle(Ev("check", "DEV-1", 43), bad).ok());
  CHECK(get("newly") == "false");
  CHECK(state().attempts == 2);
  CHECK(get("step") == "1");  // the second step waits a day

  r.now_ms += 24 * 3600 * 1000;
  REQUIRE(r.Handle(Ev("check", "DEV-1", 44), bad).ok());
  CHECK(state().attempts == 2);  // capped
  CHECK(r.last.commands.empty());
  CHECK(get("step") == "2");

  REQUIRE(r.Handle(Ev("check", "DEV-1", 45), good).ok());
  CHECK(get("recovered") == "true");
  CHECK(state().status == ComplianceStatus::kCompliant);
  CHECK(state().attempts == 0);
  CHECK(state().first_failed_ms == 0);

  REQUIRE(r.Handle(Ev("check", "DEV-1", 46), good).ok());
  CHECK(get("recovered") == "false");
}

TEST_CASE("policy: exempt devices stay exempt", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:on("exempt", function(ctx) ctx:exempt("lab device") end)
    policy:on("fail", function(ctx) ctx:put("newly", ctx:noncompliant("x")) end)
    policy:on("reset", function(ctx) ctx:reset() end)
  )");
  REQUIRE(r.Handle(Ev("exempt")).ok());
  REQUIRE(r.Handle(Ev("fail")).ok());
  CHECK(r.host.Compliance("policy:test", "DEV-1")->value().status == ComplianceStatus::kExempt);
  CHECK(**r.host.KvGet("policy:test", "newly") == "false");
  REQUIRE(r.Handle(Ev("reset")).ok());
  REQUIRE(r.Handle(Ev("fail")).ok());
  CHECK(**r.host.KvGet("policy:test", "newly") == "true");
}

TEST_CASE("policy: a ctx kept from an earlier run is dead", "[policy]") {
  Runner r;
  r.p = Load(R"(
    local kept
    policy:on("a", function(ctx) kept = ctx end)
    policy:on("b", function(ctx) kept:put("k", 1) end)
  )");
  REQUIRE(r.Handle(Ev("a")).ok());
  auto out = r.Handle(Ev("b"));
  CHECK(out.error == RunError::kScript);
  CHECK(out.message.find("finished") != std::string::npos);
}

TEST_CASE("policy: the device, last results and helpers", "[policy]") {
  Runner r;
  store::Enrollment e;
  e.id = "DEV-1";
  e.udid = "DEV-1";
  e.os_version = "17.4.1";
  e.serial = "C02XYZ";
  e.push_magic = "secret-magic";
  e.unlock_token = "secret-unlock";
  r.host.PutDevice(e);
  store::CommandResult res;
  res.command_uuid = "C-9";
  res.request_type = "SecurityInfo";
  res.status = "Acknowledged";
  res.received_ms = 1'699'000'000'000;
  res.raw = plist::ToXml([] {
    Value v, s;
    s.Set("PasscodePresent", Value::Bool(false));
    v.Set("SecurityInfo", s);
    return v;
  }());
  r.host.PutResult("DEV-1", res);
  r.p = Load(R"(
    policy:on("x", function(ctx)
      local d = ctx.device
      assert(d.os_version == "17.4.1" and d.serial_number == "C02XYZ")
      for k, v in pairs(d) do assert(not tostring(v):find("secret"), k) end
      assert(ctx.device == d)  -- read once
      local sec = ctx:last_result("SecurityInfo")
      assert(sec.status == "Acknowledged" and sec.response.SecurityInfo.PasscodePresent == false)
      assert(ctx:last_result("DeviceInformation") == nil)
      assert(version.compare("17.10", "17.9") == 1 and version.compare("17.4", "17.4.0") == 0)
      assert(version.at_least(d.os_version, "17.4") and not version.at_least(d.os_version, "18"))
      assert(duration("1d12h") == 129600 and duration(30) == 30)
      assert(ctx.now == 1700000000)
      assert(ctx.event.type == "x" and ctx.event.cursor == "0.42" and ctx.enrollment_id == "DEV-1")
    end)
  )");
  auto out = r.Handle(Ev("x"));
  INFO(out.message);
  CHECK(out.ok());
}

TEST_CASE("policy: schedules run per device", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:every("6h", function(ctx)
      assert(ctx.event.type == "schedule.tick" and ctx.event.schedule == "inventory")
      ctx:enqueue(mdm.DeviceInformation { Queries = { "OSVersion" } })
    end, { splay = "1h", name = "inventory" })
  )");
  policy::RunInput in{"policy:test", "schedule:inventory:100:DEV-2", r.now_ms, false};
  auto out = r.p->RunSchedule(in, 0, "DEV-2", &r.host, &r.last);
  INFO(out.message);
  REQUIRE(out.ok());
  REQUIRE(r.last.commands.size() == 1);
  CHECK(r.last.commands[0].enrollment_id == "DEV-2");
}

TEST_CASE("policy: durations and versions parse strictly", "[policy]") {
  int64_t ms = 0;
  CHECK(policy::ParseDuration("90", 2, &ms));
  CHECK(ms == 90000);
  CHECK(policy::ParseDuration("1w2d3h4m5s", 10, &ms));
  CHECK(ms == ((7 + 2) * 86400 + 3 * 3600 + 4 * 60 + 5) * 1000LL);
  for (const char* bad : {"", "h", "1x", "1h30", "-5m", "99999999999d"})
    CHECK_FALSE(policy::ParseDuration(bad, std::strlen(bad), &ms));
  auto cmp = [](const char* a, const char* b) { return policy::CompareVersions(a, std::strlen(a), b, std::strlen(b)); };
  CHECK(cmp("17.4.1", "17.4") == 1);
  CHECK(cmp("9", "10") == -1);
  CHECK(cmp("10.15.7", "10.15.7") == 0);
  CHECK(cmp("18.0b2", "18.0") == 1);
  CHECK(cmp("", "0") == 0);
}

TEST_CASE("policy: every compliance method takes a device as a string or in an options table", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:on("x", function(ctx)
      ctx:noncompliant("a", "DEV-2")
      ctx:noncompliant("b", { device = "DEV-3" })
      assert(ctx:attempt(5, "DEV-2"))
      ctx:compliant("DEV-3")
      assert(ctx:compliance("DEV-2").attempts == 1)
      assert(ctx:compliance({ device = "DEV-3" }).status == "compliant")
      assert(ctx:compliance().status == "unknown")  -- the run's own device is untouched
    end)
  )");
  auto out = r.Handle(Ev("x"));
  INFO(out.message);
  REQUIRE(out.ok());
  CHECK(r.host.Compliance("policy:test", "DEV-2")->value().status == ComplianceStatus::kNonCompliant);
  CHECK(r.host.Compliance("policy:test", "DEV-3")->value().status == ComplianceStatus::kCompliant);
  CHECK_FALSE(r.host.Compliance("policy:test", "DEV-1")->has_value());
}

TEST_CASE("policy: remediating starts a failing streak afresh", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:on("x", function(ctx)
      assert(ctx:attempt(3))  -- counted while not failing
      ctx:remediating("U-1")
      local s = ctx:compliance()
      assert(s.status == "remediation_pending" and s.attempts == 0 and s.first_failed_at == ctx.now, s.attempts)
    end)
  )");
  auto out = r.Handle(Ev("x"));
  INFO(out.message);
  CHECK(out.ok());
}

TEST_CASE("policy: one event is one budget across its on and on_result phases", "[policy]") {
  policy::SandboxLimits limits;
  limits.instructions = 500'000;
  auto load = [&](const char* handlers) {
    auto p = policy::Policy::Load("b", std::string(R"(
      local function spin(n) local x = 0 for i = 1, n do x = x + i end return x end
    )") + handlers, "b.lua", limits);
    REQUIRE(p.ok());
    return std::move(p.value());
  };
  automation::MemoryHost host;
  auto ev = Ev("command.acknowledged");
  ev.request_type = "SecurityInfo";
  automation::Decisions d;
  policy::RunInput in{"policy:b", "0.1", 0, false};
  // Each phase alone fits the budget...
  auto on_only = load(R"(policy:on("command.acknowledged", function(ctx) spin(150000) end))");
  CHECK(on_only->HandleEvent(in, ev, Value(), &host, &d).ok());
  auto result_only = load(R"(policy:on_result("SecurityInfo", function(ctx) spin(150000) end))");
  CHECK(result_only->HandleEvent(in, ev, Value(), &host, &d).ok());
  // ... both together do not.
  auto both = load(R"(
    policy:on("command.acknowledged", function(ctx) spin(150000) end)
    policy:on_result("SecurityInfo", function(ctx) spin(150000) end))");
  CHECK(both->HandleEvent(in, ev, Value(), &host, &d).error == RunError::kInstructions);
}

TEST_CASE("policy: policy.run runs the on handlers and every per-device schedule", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:on("policy.run", function(ctx, event) ctx:put("args", event.payload.args) end)
    policy:every("1h", function(ctx) ctx:enqueue(mdm.SecurityInfo {}) end, { name = "a" })
    policy:every("1d", function(ctx) ctx:enqueue(mdm.ProfileList {}) end, { name = "b" })
    policy:every("1d", function(ctx) ctx:put("fleet", true) end, { name = "c", per_device = false })
  )");
  Value payload, args;
  args.Set("action", Value::String("go"));
  payload.Set("args", args);
  auto out = r.Handle(Ev("policy.run"), payload);
  INFO(out.message);
  REQUIRE(out.ok());
  REQUIRE(r.last.commands.size() == 2);
  CHECK(r.last.commands[0].request_type == "SecurityInfo");
  CHECK(r.last.commands[1].request_type == "ProfileList");
  CHECK(r.last.commands[0].command_uuid == automation::DerivedCommandUuid("policy:test", "0.42/a", 0));
  CHECK(r.last.commands[1].command_uuid == automation::DerivedCommandUuid("policy:test", "0.42/b", 0));
  CHECK(**r.host.KvGet("policy:test", "args") == R"({"action":"go"})");
  CHECK_FALSE(r.host.KvGet("policy:test", "fleet")->has_value());  // not per device
}

TEST_CASE("policy: pairs() lists the read-only libraries", "[policy]") {
  Runner r;
  r.p = Load(R"(
    policy:on("x", function(ctx)
      for _, lib in ipairs({ plist, log, version, string, table }) do
        local n = 0
        for _ in pairs(lib) do n = n + 1 end
        assert(n > 0)
      end
    end)
  )");
  auto out = r.Handle(Ev("x"));
  INFO(out.message);
  CHECK(out.ok());
}

TEST_CASE("policy: confirming an unchanged compliance state writes nothing", "[policy]") {
  Runner r;
  r.p = Load("policy:on('ok', function(ctx) ctx:compliant() end)");
  REQUIRE(r.Handle(Ev("ok")).ok());
  CHECK(r.last.compliance.size() == 1);  // unknown -> compliant
  r.now_ms += 1000;
  REQUIRE(r.Handle(Ev("ok", "DEV-1", 43)).ok());
  CHECK(r.last.compliance.empty());      // compliant -> compliant: no write, no record
  CHECK_FALSE(r.last.HasEffects());
}

TEST_CASE("policy ddm: writes become decisions in call order, checked at the call", "[policy][ddm]") {
  Runner r;
  r.p = Load(R"(
    policy:on("ddm.status.changed", function(ctx, ev)
      ddm.put_declaration {
        Type = "com.apple.configuration.softwareupdate.enforcement.specific",
        Identifier = "min-os.cfg",
        Payload = { TargetOSVersion = "26.1", TargetLocalDateTime = "2026-12-15T18:00:00" },
      }
      ddm.put_declaration { Type = "com.apple.configuration.x", Identifier = "empty", Payload = {} }
      ddm.set_add("min-os.ios", "min-os.cfg")
      ddm.assign(ctx.enrollment_id, "min-os.ios")
      ddm.unassign(ctx.enrollment_id, "old-set")
      ddm.set_remove("old-set", "old.cfg")
      ddm.touch("min-os.cfg")
      ddm.delete_declaration("old.cfg")
    end)
  )");
  REQUIRE(r.Handle(Ev("ddm.status.changed")).ok());
  using K = automation::DdmOp::Kind;
  const auto& ops = r.last.ddm;
  REQUIRE(ops.size() == 8);
  CHECK(ops[0].kind == K::kPutDeclaration);
  auto decl = plist::ParseJson(ops[0].a).value();
  CHECK(decl.GetString("Identifier") == "min-os.cfg");
  CHECK(decl.Find("Payload")->GetString("TargetOSVersion") == "26.1");
  CHECK(plist::ParseJson(ops[1].a)->Find("Payload")->is(plist::Type::kDict));  // {} is an object here
  CHECK((ops[2].kind == K::kSetAdd && ops[2].a == "min-os.ios" && ops[2].b == "min-os.cfg"));
  CHECK((ops[3].kind == K::kAssign && ops[3].a == "DEV-1" && ops[3].b == "min-os.ios"));
  CHECK((ops[4].kind == K::kUnassign && ops[5].kind == K::kSetRemove));
  CHECK((ops[6].kind == K::kTouch && ops[6].a == "min-os.cfg"));
  CHECK((ops[7].kind == K::kDeleteDeclaration && ops[7].a == "old.cfg"));
  CHECK(r.last.HasEffects());
}

TEST_CASE("policy ddm: an invalid declaration or name raises at the call and the run decides nothing",
          "[policy][ddm]") {
  Runner r;
  r.p = Load(R"(
    policy:on("a", function(ctx) ddm.set_add("ok", "x") ; ddm.put_declaration { Type = "com.apple.configuration.x", Identifier = "a/b", Payload = {} } end)
    policy:on("b", function(ctx) ddm.put_declaration { Type = "org.example.thing", Identifier = "x", Payload = {} } end)
    policy:on("c", function(ctx) ddm.put_declaration { Type = "com.apple.configuration.x", Identifier = "x" } end)
    policy:on("d", function(ctx) ddm.set_add("bad set name", "x") end)
    policy:on("e", function(ctx) ddm.assign("", "s") end)
    policy:on("f", function(ctx) local ok, err = pcall(ddm.put_declaration, { Type = 1 }) ; log.info(tostring(ok), err) end)
  )");
  auto a = r.Handle(Ev("a"));
  CHECK(a.error == RunError::kScript);
  CHECK(a.message.find("Identifier") != std::string::npos);
  CHECK(r.last.ddm.empty());
  auto b = r.Handle(Ev("b"));
  CHECK(b.message.find("Type") != std::string::npos);
  auto c = r.Handle(Ev("c"));
  CHECK(c.message.find("Payload") != std::string::npos);
  auto d = r.Handle(Ev("d"));
  CHECK(d.message.find("ddm.set_add: set \"bad set name\": 1 to 64 letters") != std::string::npos);
  auto e = r.Handle(Ev("e"));
  CHECK(e.message.find("ddm.assign: enrollment id: must not be empty") != std::string::npos);
  // A script may catch a refused call.
  REQUIRE(r.Handle(Ev("f")).ok());
  REQUIRE(r.last.logs.size() == 1);
  CHECK(r.last.logs[0].message.rfind("false ddm.put_declaration:", 0) == 0);
  CHECK(r.last.ddm.empty());
}

TEST_CASE("policy ddm: writes are refused while the policy loads", "[policy][ddm]") {
  auto loaded = policy::Policy::Load("x", "ddm.set_add('s', 'x')", "x.lua", {});
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().message().find("only inside a handler") != std::string::npos);
}

TEST_CASE("policy ddm: on_status matches items exactly, by prefix or all, and reads status", "[policy][ddm]") {
  Runner r;
  r.p = Load(R"(
    policy:on_status("device.operating-system.version", function(ctx, s)
      log.info("os", s.item, s.value, tostring(s.previous))
    end)
    policy:on_status("softwareupdate.", function(ctx, s) log.info("su", s.item, tostring(s.value)) end)
    policy:on("ddm.declaration.status", function(ctx, ev)
      local st = ddm.declaration_status(ctx.enrollment_id, ev.payload.identifier)
      log.info("decl", tostring(st and st.valid), tostring(ddm.status(ctx.enrollment_id, "device.operating-system.version")))
    end)
  )");
  CHECK(r.p->Wants("ddm.status.changed", ""));
  CHECK(r.p->info().status_items.count("softwareupdate."));
  Value os;
  os.Set("item", Value::String("device.operating-system.version"));
  os.Set("value", Value::String("26.0"));
  REQUIRE(r.Handle(Ev("ddm.status.changed"), os).ok());
  REQUIRE(r.last.logs.size() == 1);
  CHECK(r.last.logs[0].message == "os device.operating-system.version 26.0 nil");
  Value su;
  su.Set("item", Value::String("softwareupdate.install-state"));
  su.Set("value", Value::String("downloading"));
  REQUIRE(r.Handle(Ev("ddm.status.changed"), su).ok());
  REQUIRE(r.last.logs.size() == 1);
  CHECK(r.last.logs[0].message == "su softwareupdate.install-state downloading");
  Value other;
  other.Set("item", Value::String("softwareupdate"));  // not under "softwareupdate."
  REQUIRE(r.Handle(Ev("ddm.status.changed"), other).ok());
  CHECK(r.last.logs.empty());
  Value passcode;
  passcode.Set("item", Value::String("passcode.is-compliant"));
  REQUIRE(r.Handle(Ev("ddm.status.changed"), passcode).ok());
  CHECK(r.last.logs.empty());

  // Reads see what the host has (the server: what the device reported).
  r.host.PutDdmStatus("DEV-1", "device.operating-system.version", Value::String("26.1"));
  Value st;
  st.Set("identifier", Value::String("min-os.cfg"));
  st.Set("valid", Value::String("valid"));
  r.host.PutDdmDeclarationStatus("DEV-1", "min-os.cfg", st);
  Value ev;
  ev.Set("identifier", Value::String("min-os.cfg"));
  REQUIRE(r.Handle(Ev("ddm.declaration.status"), ev).ok());
  REQUIRE(r.last.logs.size() == 1);
  CHECK(r.last.logs[0].message == "decl valid 26.1");
  ev.Set("identifier", Value::String("unknown"));
  REQUIRE(r.Handle(Ev("ddm.declaration.status", "DEV-2"), ev).ok());
  CHECK(r.last.logs[0].message == "decl nil nil");
}

TEST_CASE("policy ddm: an unknown payload key is a warning in the run's log, the write stands", "[policy][ddm]") {
  Runner r;
  r.p = Load(R"(
    policy:on("a", function(ctx)
      ddm.put_declaration { Type = "com.apple.configuration.passcode.settings", Identifier = "pc",
                            Payload = { RequirePasscode = true, NoSuchKey = 1 } }
    end)
  )");
  REQUIRE(r.Handle(Ev("a")).ok());
  CHECK(r.last.ddm.size() == 1);
  REQUIRE(r.last.logs.size() == 1);
  CHECK(r.last.logs[0].level == automation::LogLevel::kWarn);
  CHECK(r.last.logs[0].message.find("ddm.put_declaration: Payload.NoSuchKey") == 0);
}
