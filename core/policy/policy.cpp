#include "policy/policy.h"

#include <lua.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>

#include "automation/commands.h"
#include "ddm/service.h"
#include "policy/lua_plist.h"
#include "util/encoding.h"

// Binding discipline: a lua_CFunction below never has a C++ object with a
// destructor alive while it calls a Lua function that can raise (longjmp).
// C++ work happens in helpers that return before any such call; what they
// produce is kept in the Policy's scratch fields or the run's Frame, both
// owned outside Lua.

namespace orchard::policy {

using automation::ComplianceState;
using automation::ComplianceStatus;
using automation::RunError;
using automation::DeviceValue;
using automation::ResultValue;

namespace {
char kCtxMeta;          // registry key of the ctx metatable
char kPolicyMeta;       // registry key of the policy object's metatable
char kUncheckedMeta;    // marks a command built with {unchecked = true}
constexpr size_t kMaxKeyBytes = 512;
constexpr size_t kMaxValueBytes = 64 * 1024;
constexpr size_t kMaxCommandsPerRun = 1000;
constexpr size_t kMaxKvWritesPerRun = 10000;
constexpr size_t kMaxScan = 1000;
constexpr size_t kMaxDdmOpsPerRun = 1000;
constexpr int64_t kMinIntervalMs = 60 * 1000;

double Seconds(int64_t ms) { return static_cast<double>(ms) / 1000.0; }
}  // namespace

struct Policy::Frame {
  Policy* policy = nullptr;
  uint64_t serial = 0;
  const RunInput* in = nullptr;
  const events::Event* event = nullptr;      // null for schedule runs and loading
  const plist::Value* payload = nullptr;     // the event's payload
  const ScheduleInfo* schedule = nullptr;    // for schedule runs
  std::string enrollment_id;                 // the device this run is about ("" if none)
  std::vector<int> refs;                     // handlers to call
  bool result_arg = false;                   // handlers get (ctx, result)
  bool status_arg = false;                   // handlers get (ctx, event.payload) (on_status)
  automation::HostReader* host = nullptr;    // null while loading
  automation::Decisions decisions;
  size_t command_index = 0;
  std::map<std::string, ComplianceState> compliance;  // per device, as read or written in this run
  std::map<std::string, ComplianceState> compliance_read;  // as read from the host
  std::map<std::string, bool> compliance_dirty;
  std::map<std::string, std::optional<std::string>> kv;  // this run's writes
};

bool IsResultEvent(std::string_view type) {
  return type == events::type::kCommandAcknowledged || type == events::type::kCommandError ||
         type == events::type::kCommandFormatError || type == events::type::kCommandFailed;
}

bool ValidPolicyName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

// Parses "90", "90s", "15m", "6h", "1d12h", "2w" into milliseconds.
bool ParseDuration(const char* s, size_t n, int64_t* out_ms) {
  if (n == 0) return false;
  int64_t total = 0;
  size_t i = 0;
  bool any = false;
  while (i < n) {
    int64_t v = 0;
    size_t start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
      if (v > 1'000'000'000) return false;
      v = v * 10 + (s[i] - '0');
      ++i;
    }
    if (i == start) return false;
    int64_t unit = 1000;
    if (i < n) {
      switch (s[i]) {
        case 's': unit = 1000; break;
        case 'm': unit = 60 * 1000; break;
        case 'h': unit = 3600 * 1000; break;
        case 'd': unit = 86400 * 1000; break;
        case 'w': unit = 7 * 86400 * 1000LL; break;
        default: return false;
      }
      ++i;
    } else if (any) {
      return false;  // "1h30" is ambiguous
    }
    total += v * unit;
    if (total > 400LL * 86400 * 1000 * 10) return false;
    any = true;
  }
  *out_ms = total;
  return true;
}

// Compares dotted versions numerically ("17.10" > "17.9"); missing parts are
// 0; a non-numeric part compares as text.
int CompareVersions(const char* a, size_t na, const char* b, size_t nb) {
  size_t i = 0, j = 0;
  while (i < na || j < nb) {
    size_t ie = i, je = j;
    while (ie < na && a[ie] != '.') ++ie;
    while (je < nb && b[je] != '.') ++je;
    bool anum = ie > i, bnum = je > j;
    for (size_t k = i; k < ie; ++k) anum = anum && a[k] >= '0' && a[k] <= '9';
    for (size_t k = j; k < je; ++k) bnum = bnum && b[k] >= '0' && b[k] <= '9';
    if ((anum || ie == i) && (bnum || je == j)) {
      // numeric (an absent part is 0): compare without overflow
      size_t ia = i, jb = j;
      while (ia < ie && a[ia] == '0') ++ia;
      while (jb < je && b[jb] == '0') ++jb;
      size_t la = ie - ia, lb = je - jb;
      if (la != lb) return la < lb ? -1 : 1;
      int c = la ? std::memcmp(a + ia, b + jb, la) : 0;
      if (c) return c < 0 ? -1 : 1;
    } else {
      size_t la = ie - i, lb = je - j;
      int c = std::memcmp(a + i, b + j, std::min(la, lb));
      if (c) return c < 0 ? -1 : 1;
      if (la != lb) return la < lb ? -1 : 1;
    }
    i = ie < na ? ie + 1 : ie;
    j = je < nb ? je + 1 : je;
  }
  return 0;
}

namespace {

plist::Value Time(int64_t ms) { return plist::Value::Real(Seconds(ms)); }

plist::Value ComplianceValue(const ComplianceState& s) {
  plist::Value v;
  v.Set("status", plist::Value::String(automation::ComplianceStatusName(s.status)));
  v.Set("failing", plist::Value::Bool(automation::IsFailing(s.status)));
  if (s.since_ms) v.Set("since", Time(s.since_ms));
  if (s.first_failed_ms) v.Set("first_failed_at", Time(s.first_failed_ms));
  v.Set("attempts", plist::Value::Integer(s.attempts));
  v.Set("step", plist::Value::Integer(s.step));
  if (s.updated_ms) v.Set("updated_at", Time(s.updated_ms));
  if (!s.last_command_uuid.empty()) v.Set("last_command_uuid", plist::Value::String(s.last_command_uuid));
  if (!s.reason.empty()) v.Set("reason", plist::Value::String(s.reason));
  return v;
}

}  // namespace


struct Policy::Scratch {
  std::string error;
  std::string text;
  plist::Value value;
  bool flag = false;
};

// Static helpers with access to Policy internals, used by the C bindings.
struct PolicyAccess {
  static Policy* Of(lua_State* L) { return static_cast<Policy*>(Sandbox::From(L)->owner); }
  static Policy::Scratch& S(lua_State* L) { return *Of(L)->scratch_; }
  static Policy::Frame* CurrentFrame(lua_State* L) { return Of(L)->frame_; }

  // The current run's frame, checked against the ctx table at idx: a ctx kept
  // from an earlier run is dead.
  static Policy::Frame* CheckCtx(lua_State* L, int idx) {
    luaL_checktype(L, idx, LUA_TTABLE);
    Policy* p = Of(L);
    lua_getfield(L, idx, "_run");
    lua_Integer serial = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (p->frame_ == nullptr || serial == 0 || static_cast<uint64_t>(serial) != p->frame_->serial)
      luaL_error(L, "this ctx belongs to a handler run that has finished");
    return p->frame_;
  }
  static Policy::Frame* CheckHost(lua_State* L, int idx) {
    Policy::Frame* f = CheckCtx(L, idx);
    if (f->host == nullptr) luaL_error(L, "not available while the policy loads");
    return f;
  }

  // Raises the scratch error; a host failure cannot be caught by the script
  // (the run stops and is retried by the host).
  static int Raise(lua_State* L, bool host_failure = false) {
    if (host_failure) Sandbox::From(L)->set_fault(RunError::kHost);
    return luaL_error(L, "%s", S(L).error.c_str());
  }

  // ----- helpers: C++ work only, no Lua call that can raise -----

  static bool AddHandler(lua_State* L, Policy::Handler::Kind kind, const char* key, size_t n, int ref) {
    Policy* p = Of(L);
    try {
      p->handlers_.push_back({kind, std::string(key, n), ref});
      if (kind == Policy::Handler::kEvent) p->info_.event_types.emplace(key, n);
      if (kind == Policy::Handler::kResult) p->info_.result_types.emplace(key, n);
      if (kind == Policy::Handler::kStatus) p->info_.status_items.emplace(key, n);
      return true;
    } catch (const std::exception& e) {
      S(L).error = e.what();
      return false;
    }
  }

  static bool AddSchedule(lua_State* L, int64_t interval, int64_t splay, bool per_device, const char* name,
                          size_t name_len, int ref) {
    Policy* p = Of(L);
    try {
      ScheduleInfo si;
      si.interval_ms = interval;
      si.splay_ms = splay;
      si.per_device = per_device;
      si.name = name ? std::string(name, name_len) : "every:" + std::to_string(interval / 1000) + "s";
      for (const auto& existing : p->info_.schedules) {
        if (existing.name == si.name) {
          S(L).error = "policy:every: a schedule named '" + si.name + "' already exists (give it a name)";
          return false;
        }
      }
      p->handlers_.push_back({Policy::Handler::kSchedule, si.name, ref});
      p->info_.schedules.push_back(std::move(si));
      return true;
    } catch (const std::exception& e) {
      S(L).error = e.what();
      return false;
    }
  }

  static bool SetMeta(lua_State* L, const char* field, const char* v, size_t n) {
    Policy* p = Of(L);
    try {
      std::string value(v, n);
      if (std::strcmp(field, "name") == 0) {
        if (!ValidPolicyName(value)) {
          S(L).error = "policy name '" + value + "' must be 1-64 letters, digits, '.', '_' or '-'";
          return false;
        }
        p->info_.name = std::move(value);
      } else if (std::strcmp(field, "description") == 0) {
        p->info_.description = std::move(value);
      } else {
        p->info_.version = std::move(value);
      }
      return true;
    } catch (const std::exception& e) {
      S(L).error = e.what();
      return false;
    }
  }

  // Converts the table at idx (with RequestType rt unless it has one) into a
  // checked Command dict in S(L).value.
  static bool BuildCommand(lua_State* L, int idx, const char* rt, size_t rtlen, bool unchecked) {
    auto& s = S(L);
    try {
      plist::Value cmd;
      if (!ToPlist(L, idx, &cmd, &s.error)) {
        s.error = "command: " + s.error;
        return false;
      }
      if (!cmd.is(plist::Type::kDict)) {
        s.error = "a command must be a table of request keys";
        return false;
      }
      if (rt) cmd.Set("RequestType", plist::Value::String(std::string(rt, rtlen)));
      // Empty tables read as dicts; the schema says which keys are arrays, and
      // integral floats are integers where the schema wants one.
      if (const plist::Value* t = cmd.Find("RequestType"); t && t->AsString()) {
        if (const auto* schema = automation::FindCommandSchema(*t->AsString())) {
          for (const auto& k : schema->keys) {
            plist::Value* v = cmd.Find(k.key);
            if (!v) continue;
            if (k.type == plist::Type::kArray && v->is(plist::Type::kDict) && v->AsDict()->empty())
              *v = plist::Value::MakeArray();
            if (k.type == plist::Type::kInteger && v->AsReal() && std::floor(*v->AsReal()) == *v->AsReal() &&
                std::fabs(*v->AsReal()) < 9e15)
              *v = plist::Value::Integer(static_cast<int64_t>(*v->AsReal()));
          }
        }
      }
      Status st = automation::CheckCommand(cmd, unchecked);
      if (!st.ok()) {
        s.error = st.message();
        return false;
      }
      s.value = std::move(cmd);
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  static bool Enqueue(lua_State* L, Policy::Frame* f, const char* dev, size_t devlen, lua_Integer priority,
                      bool push) {
    auto& s = S(L);
    try {
      std::string device = dev ? std::string(dev, devlen) : f->enrollment_id;
      if (device.empty()) {
        s.error = "ctx:enqueue: this run is about no device; pass {device = id}";
        return false;
      }
      if (priority < 0 || priority > 255) {
        s.error = "ctx:enqueue: priority must be from 0 to 255";
        return false;
      }
      if (f->decisions.commands.size() >= kMaxCommandsPerRun) {
        Sandbox::From(L)->set_fault(RunError::kLimit);
        s.error = "a run may queue at most " + std::to_string(kMaxCommandsPerRun) + " commands";
        return false;
      }
      automation::CommandDecision c;
      c.enrollment_id = std::move(device);
      c.command_uuid = automation::DerivedCommandUuid(f->in->consumer, f->in->trigger, f->command_index++);
      c.request_type = std::string(s.value.GetString("RequestType"));
      c.plist = automation::CommandPlist(c.command_uuid, s.value);
      c.priority = static_cast<int>(priority);
      c.push = push;
      s.text = c.command_uuid;
      f->decisions.commands.push_back(std::move(c));
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  static bool Push(lua_State* L, Policy::Frame* f, const char* dev, size_t devlen) {
    auto& s = S(L);
    try {
      std::string device = dev ? std::string(dev, devlen) : f->enrollment_id;
      if (device.empty()) {
        s.error = "ctx:push: this run is about no device; pass a device id";
        return false;
      }
      f->decisions.pushes.push_back(std::move(device));
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  // S(L).flag = whether a device exists; S(L).value its table.
  static bool LoadDevice(lua_State* L, Policy::Frame* f, bool* host_failure) {
    auto& s = S(L);
    try {
      s.flag = false;
      if (f->enrollment_id.empty() || f->host == nullptr) return true;
      auto d = f->host->Device(f->enrollment_id);
      if (!d.ok()) {
        *host_failure = true;
        s.error = "reading the device: " + d.status().ToString();
        return false;
      }
      if (d->has_value()) {
        s.value = DeviceValue(**d);
        s.flag = true;
      }
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  static bool LastResult(lua_State* L, Policy::Frame* f, const char* rt, size_t rtlen, const char* dev,
                         size_t devlen, bool* host_failure) {
    auto& s = S(L);
    try {
      s.flag = false;
      std::string device = dev ? std::string(dev, devlen) : f->enrollment_id;
      if (device.empty()) return true;
      auto r = f->host->LastResult(device, std::string(rt, rtlen));
      if (!r.ok()) {
        *host_failure = true;
        s.error = "reading results: " + r.status().ToString();
        return false;
      }
      if (r->has_value()) {
        s.value = ResultValue(**r);
        s.flag = true;
      }
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  // ----- ddm.* (C++ work only) -----

  // The current run's frame for a ddm.* call; nullptr (s.error set) outside a handler.
  static Policy::Frame* DdmFrame(lua_State* L, const char* fn) {
    Policy::Frame* f = CurrentFrame(L);
    if (f == nullptr || f->host == nullptr) {
      try {
        S(L).error = std::string(fn) + ": only inside a handler (not while the policy loads)";
      } catch (const std::exception&) {
        S(L).error.clear();  // out of memory: the Lua error says little, but nothing unwinds
      }
      return nullptr;
    }
    return f;
  }

  // Checks the write (ddm::CheckOp: what the server would refuse it for) and
  // records it; s.error names the function and what is wrong.
  static bool DdmAdd(lua_State* L, Policy::Frame* f, const char* fn, automation::DdmOp::Kind kind, const char* a,
                     size_t na, const char* b, size_t nb) {
    auto& s = S(L);
    try {
      automation::DdmOp op{kind, std::string(a, na), std::string(b, nb)};
      std::vector<std::string> warnings;
      // The declaration's size is checked when the run commits, against the
      // server's limit (max_body_bytes); the rest here.
      ddm::Limits limits;
      limits.max_declaration_bytes = std::numeric_limits<size_t>::max();
      if (Status st = ddm::CheckOp(op, limits, &warnings); !st.ok()) {
        s.error = std::string(fn) + ": " + st.message();
        return false;
      }
      for (const auto& w : warnings)  // unknown payload keys: stored all the same
        if (f->decisions.logs.size() < 1000)
          f->decisions.logs.push_back({automation::LogLevel::kWarn, std::string(fn) + ": " + w});
      if (f->decisions.ddm.size() >= kMaxDdmOpsPerRun) {
        Sandbox::From(L)->set_fault(RunError::kLimit);
        s.error = "a run may make at most " + std::to_string(kMaxDdmOpsPerRun) + " ddm.* writes";
        return false;
      }
      f->decisions.ddm.push_back(std::move(op));
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  // The declaration table at idx as JSON, then DdmAdd.
  static bool DdmDeclaration(lua_State* L, Policy::Frame* f, int idx) {
    auto& s = S(L);
    try {
      plist::Value v;
      if (!ToPlist(L, idx, &v, &s.error)) {
        s.error = "ddm.put_declaration: " + s.error;
        return false;
      }
      // An empty Lua table converts to an array: Payload = {} is meant as an object.
      if (const plist::Value* payload = v.Find("Payload"))
        if (payload->AsArray() && payload->AsArray()->empty()) v.Set("Payload", plist::Value::MakeDict());
      const std::string json = plist::ToJson(v);
      return DdmAdd(L, f, "ddm.put_declaration", automation::DdmOp::Kind::kPutDeclaration, json.data(), json.size(),
                    "", 0);
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  // s.flag: a value (s.value); item false: a declaration's status.
  static bool DdmRead(lua_State* L, Policy::Frame* f, bool item, const char* id, size_t idn, const char* key,
                      size_t keyn, bool* host_failure) {
    auto& s = S(L);
    try {
      s.flag = false;
      auto r = item ? f->host->DdmStatus(std::string(id, idn), std::string(key, keyn))
                    : f->host->DdmDeclarationStatus(std::string(id, idn), std::string(key, keyn));
      if (!r.ok()) {
        if (r.status().code() == Code::kUnavailable || r.status().code() == Code::kInvalidArgument)
          return true;  // no DDM here, or an id that cannot exist: nothing reported
        *host_failure = true;
        s.error = "reading DDM status: " + r.status().ToString();
        return false;
      }
      if (r->has_value()) {
        s.value = std::move(**r);
        s.flag = true;
      }
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  // s.flag: a profile (s.value, data); else s.error says why there is none
  // (no device, profiles not configured), which is not a failure of the run.
  static bool RenewalProfile(lua_State* L, Policy::Frame* f, const char* dev, size_t devlen, bool* host_failure) {
    auto& s = S(L);
    try {
      s.flag = false;
      s.error.clear();
      std::string device = dev ? std::string(dev, devlen) : f->enrollment_id;
      if (device.empty()) {
        s.error = "this event is about no device";
        return true;
      }
      auto r = f->host->RenewalProfile(device);
      if (!r.ok()) {
        if (r.status().code() == Code::kUnavailable) {
          s.error = r.status().message();
          return true;
        }
        *host_failure = true;
        s.error = "making a renewal profile: " + r.status().ToString();
        return false;
      }
      if (!r->has_value()) {
        s.error = "no enrolled device " + device + " with a bound certificate";
        return true;
      }
      s.value = plist::Value::DataValue(std::move(**r));
      s.flag = true;
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  static bool CheckKey(lua_State* L, size_t n) {
    if (n == 0 || n > kMaxKeyBytes) {
      S(L).error = "store keys are 1 to " + std::to_string(kMaxKeyBytes) + " bytes";
      return false;
    }
    return true;
  }

  static bool KvGet(lua_State* L, Policy::Frame* f, const char* key, size_t n, bool* host_failure) {
    auto& s = S(L);
    try {
      s.flag = false;
      if (!CheckKey(L, n)) return false;
      std::string k(key, n);
      std::optional<std::string> json;
      if (auto it = f->kv.find(k); it != f->kv.end()) {
        json = it->second;
      } else {
        auto r = f->host->KvGet(f->in->consumer, k);
        if (!r.ok()) {
          *host_failure = true;
          s.error = "reading the store: " + r.status().ToString();
          return false;
        }
        json = std::move(r.value());
      }
      if (!json) return true;
      auto v = plist::ParseJson(*json);
      if (!v.ok()) {
        s.error = "stored value of '" + k + "' is unreadable: " + v.status().message();
        return false;
      }
      s.value = std::move(v.value());
      s.flag = true;
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  static bool KvPut(lua_State* L, Policy::Frame* f, const char* key, size_t n, int value_idx) {
    auto& s = S(L);
    try {
      if (!CheckKey(L, n)) return false;
      if (f->decisions.kv.size() >= kMaxKvWritesPerRun) {
        Sandbox::From(L)->set_fault(RunError::kLimit);
        s.error = "a run may write at most " + std::to_string(kMaxKvWritesPerRun) + " keys";
        return false;
      }
      std::optional<std::string> json;
      if (value_idx != 0) {
        plist::Value v;
        if (!ToPlist(L, value_idx, &v, &s.error)) {
          s.error = "ctx:put: " + s.error;
          return false;
        }
        json = plist::ToJson(v);
        if (json->size() > kMaxValueBytes) {
          s.error = "ctx:put: value of " + std::to_string(json->size()) + " bytes exceeds " +
                    std::to_string(kMaxValueBytes);
          return false;
        }
      }
      std::string k(key, n);
      f->kv[k] = json;
      f->decisions.kv.push_back({std::move(k), std::move(json)});
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  static bool KvScan(lua_State* L, Policy::Frame* f, const char* prefix, size_t n, const char* after,
                     size_t after_n, lua_Integer limit, bool* host_failure) {
    auto& s = S(L);
    try {
      if (limit < 1 || limit > static_cast<lua_Integer>(kMaxScan)) {
        s.error = "ctx:scan: limit must be from 1 to " + std::to_string(kMaxScan);
        return false;
      }
      std::string pre(prefix, n), aft(after ? std::string(after, after_n) : std::string());
      std::vector<std::pair<std::string, std::optional<std::string>>> pending(f->kv.begin(), f->kv.end());
      auto base = f->host->KvScan(f->in->consumer, pre, aft, static_cast<size_t>(limit) + pending.size());
      if (!base.ok()) {
        *host_failure = true;
        s.error = "reading the store: " + base.status().ToString();
        return false;
      }
      auto merged = automation::MergeScan(std::move(base.value()), pending, pre, aft, static_cast<size_t>(limit));
      plist::Value list = plist::Value::MakeArray();
      for (auto& [k, json] : merged) {
        plist::Value item;
        item.Set("key", plist::Value::String(k));
        auto v = plist::ParseJson(json);
        if (v.ok()) item.Set("value", std::move(v.value()));
        list.AsArray()->push_back(std::move(item));
      }
      s.value = std::move(list);
      return true;
    } catch (const std::exception& e) {
      s.error = e.what();
      return false;
    }
  }

  static ComplianceState* State(lua_State* L, Policy::Frame* f, const char* dev, size_t devlen,
                                bool* host_failure) {
    auto& s = S(L);
    try {
      std::string device = dev ? std::string(dev, devlen) : f->enrollment_id;
      if (device.empty()) {
        s.error = "compliance is per device: this run is about no device; pass {device = id}";
        return nullptr;
      }
      auto it = f->compliance.find(device);
      if (it != f->compliance.end()) return &it->second;
      auto r = f->host->Compliance(f->in->consumer, device);
      if (!r.ok()) {
        *host_failure = true;
        s.error = "reading compliance: " + r.status().ToString();
        return nullptr;
      }
      f->compliance_read[device] = r->value_or(ComplianceState{});
      return &(f->compliance[device] = r->value_or(ComplianceState{}));
    } catch (const std::exception& e) {
      s.error = e.what();
      return nullptr;
    }
  }

  static bool MarkDirty(lua_State* L, Policy::Frame* f, const char* dev, size_t devlen) {
    try {
      std::string device = dev ? std::string(dev, devlen) : f->enrollment_id;
      f->compliance[device].updated_ms = f->in->now_ms;
      f->compliance_dirty[device] = true;
      return true;
    } catch (const std::exception& e) {
      S(L).error = e.what();
      return false;
    }
  }

  static bool SetReason(lua_State* L, ComplianceState* st, const char* r, size_t n) {
    try {
      if (r) st->reason.assign(r, std::min<size_t>(n, 1024));
      return true;
    } catch (const std::exception& e) {
      S(L).error = e.what();
      return false;
    }
  }
  static bool SetLastCommand(lua_State* L, ComplianceState* st, const char* u, size_t n) {
    try {
      st->last_command_uuid.assign(u, std::min<size_t>(n, 128));
      return true;
    } catch (const std::exception& e) {
      S(L).error = e.what();
      return false;
    }
  }

  static bool Log(lua_State* L, automation::LogLevel level, const char* msg, size_t n) {
    Policy::Frame* f = CurrentFrame(L);
    try {
      if (f == nullptr) return true;
      if (f->decisions.logs.size() >= 1000) return true;  // a chatty loop: drop the rest
      f->decisions.logs.push_back({level, std::string(msg, std::min<size_t>(n, 4096))});
      return true;
    } catch (const std::exception& e) {
      S(L).error = e.what();
      return false;
    }
  }

  static bool ComplianceTable(lua_State* L, const ComplianceState& st) {
    try {
      S(L).value = ComplianceValue(st);
      return true;
    } catch (const std::exception& e) {
      S(L).error = e.what();
      return false;
    }
  }

  static bool HandlersAllowed(lua_State* L) { return Of(L)->loading_; }
  static const std::string& Name(lua_State* L) { return Of(L)->info_.name; }
};

namespace {
using PA = PolicyAccess;

// Optional string argument (nil/none -> nullptr).
const char* OptString(lua_State* L, int idx, size_t* n) {
  *n = 0;
  if (lua_isnoneornil(L, idx)) return nullptr;
  return luaL_checklstring(L, idx, n);
}

// The device a call is about: `device` at idx may be an enrollment id string
// or an options table with a `device` field (nil/none: the run's device). A
// string found stays on the stack (kept alive).
const char* OptDevice(lua_State* L, int idx, size_t* n) {
  *n = 0;
  if (idx == 0 || lua_isnoneornil(L, idx)) return nullptr;
  if (lua_type(L, idx) == LUA_TSTRING) return lua_tolstring(L, idx, n);
  if (!lua_istable(L, idx)) luaL_argexpected(L, false, idx, "device id or options table");
  if (lua_getfield(L, idx, "device") == LUA_TNIL) {
    lua_pop(L, 1);
    return nullptr;
  }
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "opts.device must be an enrollment id string");
  return lua_tolstring(L, -1, n);
}

int64_t DurationArg(lua_State* L, int idx, const char* what) {
  int64_t ms = 0;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, idx);
    if (!(n >= 0) || n > 1e10) luaL_error(L, "%s: not a valid number of seconds", what);
    return static_cast<int64_t>(n * 1000);
  }
  size_t n = 0;
  const char* s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : nullptr;
  if (s == nullptr || !ParseDuration(s, n, &ms))
    luaL_error(L, "%s: expected a duration like \"90s\", \"15m\", \"6h\", \"1d12h\" or seconds", what);
  return ms;
}

// ----- the policy object -----

int PolicyOn(lua_State* L, Policy::Handler::Kind kind) {
  luaL_checktype(L, 1, LUA_TTABLE);  // policy
  size_t n = 0;
  const char* key = luaL_checklstring(L, 2, &n);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (!PA::HandlersAllowed(L)) return luaL_error(L, "handlers can only be registered while the policy loads");
  if (n == 0 || n > 128) return luaL_error(L, "the event or request type must be 1-128 bytes");
  lua_settop(L, 3);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (!PA::AddHandler(L, kind, key, n, ref)) return PA::Raise(L);
  return 0;
}
int PolicyOnEvent(lua_State* L) { return PolicyOn(L, Policy::Handler::kEvent); }
int PolicyOnResult(lua_State* L) { return PolicyOn(L, Policy::Handler::kResult); }
// policy:on_status(item, fn): fn(ctx, change) for ddm.status.changed events of
// item ("a.b.c"; "a.b." for every item under a.b; "*" for all).
int PolicyOnStatus(lua_State* L) { return PolicyOn(L, Policy::Handler::kStatus); }

// ----- ddm.* -----

int DdmPutDeclaration(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  Policy::Frame* f = PA::DdmFrame(L, "ddm.put_declaration");
  if (f == nullptr || !PA::DdmDeclaration(L, f, 1)) return PA::Raise(L);
  return 0;
}

// ddm writes taking one (Identifier) or two strings.
int DdmWrite(lua_State* L, automation::DdmOp::Kind kind, const char* fn, int nargs) {
  size_t na = 0, nb = 0;
  const char* a = luaL_checklstring(L, 1, &na);
  const char* b = nargs == 2 ? luaL_checklstring(L, 2, &nb) : "";
  Policy::Frame* f = PA::DdmFrame(L, fn);
  if (f == nullptr || !PA::DdmAdd(L, f, fn, kind, a, na, b, nb)) return PA::Raise(L);
  return 0;
}
int DdmDeleteDeclaration(lua_State* L) {
  return DdmWrite(L, automation::DdmOp::Kind::kDeleteDeclaration, "ddm.delete_declaration", 1);
}
int DdmTouch(lua_State* L) { return DdmWrite(L, automation::DdmOp::Kind::kTouch, "ddm.touch", 1); }
int DdmSetAdd(lua_State* L) { return DdmWrite(L, automation::DdmOp::Kind::kSetAdd, "ddm.set_add", 2); }
int DdmSetRemove(lua_State* L) { return DdmWrite(L, automation::DdmOp::Kind::kSetRemove, "ddm.set_remove", 2); }
int DdmAssign(lua_State* L) { return DdmWrite(L, automation::DdmOp::Kind::kAssign, "ddm.assign", 2); }
int DdmUnassign(lua_State* L) { return DdmWrite(L, automation::DdmOp::Kind::kUnassign, "ddm.unassign", 2); }

int DdmReadFn(lua_State* L, bool item, const char* fn) {
  size_t n = 0, kn = 0;
  const char* id = luaL_checklstring(L, 1, &n);
  const char* key = luaL_checklstring(L, 2, &kn);
  Policy::Frame* f = PA::DdmFrame(L, fn);
  if (f == nullptr) return PA::Raise(L);
  bool host_failure = false;
  if (!PA::DdmRead(L, f, item, id, n, key, kn, &host_failure)) return PA::Raise(L, host_failure);
  if (!PA::S(L).flag) {
    lua_pushnil(L);
    return 1;
  }
  PushPlist(L, PA::S(L).value);
  return 1;
}
// ddm.status(enrollment_id, item) -> the latest reported value | nil
int DdmStatusFn(lua_State* L) { return DdmReadFn(L, true, "ddm.status"); }
// ddm.declaration_status(enrollment_id, identifier) -> {active, valid, server_token, current, reasons, ...} | nil
int DdmDeclarationStatusFn(lua_State* L) { return DdmReadFn(L, false, "ddm.declaration_status"); }

int PolicyEvery(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int64_t interval = DurationArg(L, 2, "policy:every");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (!PA::HandlersAllowed(L)) return luaL_error(L, "schedules can only be registered while the policy loads");
  if (interval < kMinIntervalMs) return luaL_error(L, "policy:every: the interval must be at least 1m");
  int64_t splay = 0;
  bool per_device = true;
  const char* name = nullptr;
  size_t name_len = 0;
  if (lua_istable(L, 4)) {
    if (lua_getfield(L, 4, "splay") != LUA_TNIL) splay = DurationArg(L, -1, "policy:every splay");
    lua_pop(L, 1);
    if (lua_getfield(L, 4, "per_device") != LUA_TNIL) per_device = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 4, "name") != LUA_TNIL) {
      name = luaL_checklstring(L, -1, &name_len);
      if (name_len == 0 || name_len > 64) return luaL_error(L, "policy:every: name must be 1-64 bytes");
    }
    // the name string stays on the stack
  }
  if (splay < 0 || splay > interval) return luaL_error(L, "policy:every: splay must not exceed the interval");
  lua_pushvalue(L, 3);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (!PA::AddSchedule(L, interval, splay, per_device, name, name_len, ref)) return PA::Raise(L);
  return 0;
}

// policy { name = ..., description = ..., version = ... }
int PolicyCall(lua_State* L) {
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!PA::HandlersAllowed(L)) return luaL_error(L, "policy metadata can only be set while the policy loads");
  for (const char* field : {"name", "description", "version"}) {
    if (lua_getfield(L, 2, field) != LUA_TNIL) {
      size_t n = 0;
      const char* v = luaL_checklstring(L, -1, &n);
      if (n > 4096) return luaL_error(L, "policy %s is too long", field);
      if (!PA::SetMeta(L, field, v, n)) return PA::Raise(L);
    }
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  return 1;
}

int PolicyIndex(lua_State* L) {
  const char* k = luaL_checkstring(L, 2);
  if (std::strcmp(k, "name") == 0) {
    const std::string& n = PA::Name(L);
    lua_pushlstring(L, n.data(), n.size());
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

// ----- mdm command builders -----

int BuildAndPush(lua_State* L, int table_idx, const char* rt, size_t rtlen, bool unchecked) {
  if (!PA::BuildCommand(L, table_idx, rt, rtlen, unchecked)) return PA::Raise(L);
  PushPlist(L, PA::S(L).value);
  if (unchecked) {  // ctx:enqueue honours the choice made here
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kUncheckedMeta);
    lua_setmetatable(L, -2);
  }
  return 1;
}

bool IsUnchecked(lua_State* L, int idx) {
  if (!lua_getmetatable(L, idx)) return false;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kUncheckedMeta);
  bool same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

int MdmBuilder(lua_State* L) {  // upvalue 1: RequestType
  size_t rtlen = 0;
  const char* rt = lua_tolstring(L, lua_upvalueindex(1), &rtlen);
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  return BuildAndPush(L, 1, rt, rtlen, false);
}

// mdm.command(RequestType, fields [, {unchecked = true}])
int MdmCommand(lua_State* L) {
  size_t rtlen = 0;
  const char* rt = luaL_checklstring(L, 1, &rtlen);
  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 1);
    lua_newtable(L);
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  bool unchecked = false;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "unchecked");
    unchecked = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  return BuildAndPush(L, 2, rt, rtlen, unchecked);
}

int MdmIndex(lua_State* L) {
  size_t n = 0;
  const char* k = luaL_checklstring(L, 2, &n);
  if (std::strcmp(k, "command") == 0) {
    lua_pushcfunction(L, MdmCommand);
    return 1;
  }
  if (automation::FindCommandSchema(std::string_view(k, n)) == nullptr)
    return luaL_error(L, "mdm.%s: unknown RequestType (see mdm.command for newer ones)", k);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, MdmBuilder, 1);
  return 1;
}

// ----- log, print, version, duration -----

int LogAt(lua_State* L, automation::LogLevel level) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; ++i) {
    if (i > 1) luaL_addchar(&b, ' ');
    luaL_tolstring(L, i, nullptr);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  size_t len = 0;
  const char* msg = lua_tolstring(L, -1, &len);
  if (!PA::Log(L, level, msg, len)) return PA::Raise(L);
  return 0;
}
int LogDebug(lua_State* L) { return LogAt(L, automation::LogLevel::kDebug); }
int LogInfo(lua_State* L) { return LogAt(L, automation::LogLevel::kInfo); }
int LogWarn(lua_State* L) { return LogAt(L, automation::LogLevel::kWarn); }
int LogError(lua_State* L) { return LogAt(L, automation::LogLevel::kError); }

int VersionCompare(lua_State* L) {
  size_t na = 0, nb = 0;
  const char* a = luaL_checklstring(L, 1, &na);
  const char* b = luaL_checklstring(L, 2, &nb);
  lua_pushinteger(L, CompareVersions(a, na, b, nb));
  return 1;
}
int VersionAtLeast(lua_State* L) {
  size_t na = 0, nb = 0;
  const char* a = luaL_checklstring(L, 1, &na);
  const char* b = luaL_checklstring(L, 2, &nb);
  lua_pushboolean(L, CompareVersions(a, na, b, nb) >= 0);
  return 1;
}
int Duration(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(DurationArg(L, 1, "duration")) / 1000.0);
  return 1;
}

// ----- ctx -----

int CtxEnqueue(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int opts = lua_istable(L, 3) ? 3 : 0;
  lua_Integer priority = 0;
  bool push = true, unchecked = false;
  if (opts) {
    if (lua_getfield(L, 3, "priority") != LUA_TNIL) priority = luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 3, "push") != LUA_TNIL) push = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 3, "unchecked") != LUA_TNIL) unchecked = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  size_t devlen = 0;
  const char* dev = OptDevice(L, opts, &devlen);
  unchecked = unchecked || IsUnchecked(L, 2);
  if (!PA::BuildCommand(L, 2, nullptr, 0, unchecked)) return PA::Raise(L);
  if (!PA::Enqueue(L, f, dev, devlen, priority, push)) return PA::Raise(L);
  const std::string& uuid = PA::S(L).text;
  lua_pushlstring(L, uuid.data(), uuid.size());
  return 1;
}

int CtxPush(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  size_t n = 0;
  const char* dev = OptString(L, 2, &n);
  if (!PA::Push(L, f, dev, n)) return PA::Raise(L);
  return 0;
}

int CtxLastResult(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  size_t rtlen = 0, devlen = 0;
  const char* rt = luaL_checklstring(L, 2, &rtlen);
  const char* dev = OptString(L, 3, &devlen);
  bool host_failure = false;
  if (!PA::LastResult(L, f, rt, rtlen, dev, devlen, &host_failure)) return PA::Raise(L, host_failure);
  if (!PA::S(L).flag) {
    lua_pushnil(L);
    return 1;
  }
  PushPlist(L, PA::S(L).value);
  return 1;
}

// ctx:renewal_profile([device]) -> data | nil, reason
int CtxRenewalProfile(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  size_t devlen = 0;
  const char* dev = OptString(L, 2, &devlen);
  bool host_failure = false;
  if (!PA::RenewalProfile(L, f, dev, devlen, &host_failure)) return PA::Raise(L, host_failure);
  if (!PA::S(L).flag) {
    lua_pushnil(L);
    lua_pushlstring(L, PA::S(L).error.data(), PA::S(L).error.size());
    return 2;
  }
  PushPlist(L, PA::S(L).value);
  return 1;
}

int CtxGet(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  size_t n = 0;
  const char* key = luaL_checklstring(L, 2, &n);
  bool host_failure = false;
  if (!PA::KvGet(L, f, key, n, &host_failure)) return PA::Raise(L, host_failure);
  if (!PA::S(L).flag) {
    lua_pushnil(L);
    return 1;
  }
  PushPlist(L, PA::S(L).value);
  return 1;
}

int CtxPut(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  size_t n = 0;
  const char* key = luaL_checklstring(L, 2, &n);
  luaL_checkany(L, 3);
  if (!PA::KvPut(L, f, key, n, lua_isnil(L, 3) ? 0 : 3)) return PA::Raise(L);
  return 0;
}

int CtxDelete(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  size_t n = 0;
  const char* key = luaL_checklstring(L, 2, &n);
  if (!PA::KvPut(L, f, key, n, 0)) return PA::Raise(L);
  return 0;
}

// ctx:scan(prefix [, {limit = 100, after = key}])
int CtxScan(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  size_t n = 0, after_n = 0;
  const char* prefix = luaL_optlstring(L, 2, "", &n);
  lua_Integer limit = 100;
  const char* after = nullptr;
  if (lua_istable(L, 3)) {
    if (lua_getfield(L, 3, "limit") != LUA_TNIL) limit = luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 3, "after") != LUA_TNIL) after = luaL_checklstring(L, -1, &after_n);
  }
  bool host_failure = false;
  if (!PA::KvScan(L, f, prefix, n, after, after_n, limit, &host_failure)) return PA::Raise(L, host_failure);
  PushPlist(L, PA::S(L).value);
  return 1;
}

// The compliance state for opts.device (or the run's device).
ComplianceState* CheckState(lua_State* L, Policy::Frame* f, int opts_idx, const char** dev, size_t* devlen) {
  *dev = OptDevice(L, opts_idx, devlen);
  bool host_failure = false;
  ComplianceState* st = PA::State(L, f, *dev, *devlen, &host_failure);
  if (st == nullptr) PA::Raise(L, host_failure);
  return st;
}

int CtxCompliance(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  const char* dev = nullptr;
  size_t devlen = 0;
  ComplianceState* st = CheckState(L, f, 2, &dev, &devlen);
  if (!PA::ComplianceTable(L, *st)) return PA::Raise(L);
  PushPlist(L, PA::S(L).value);
  return 1;
}

void SetStatus(ComplianceState* st, ComplianceStatus s, int64_t now) {
  if (st->status != s) st->since_ms = now;
  st->status = s;
}

// ctx:noncompliant(reason [, opts]) -> true when the device is newly failing.
int CtxNoncompliant(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  size_t rn = 0;
  const char* reason = luaL_optlstring(L, 2, "", &rn);
  const char* dev = nullptr;
  size_t devlen = 0;
  ComplianceState* st = CheckState(L, f, 3, &dev, &devlen);
  bool newly = false;
  if (st->status != ComplianceStatus::kExempt) {
    newly = !automation::IsFailing(st->status);
    if (newly) {
      SetStatus(st, ComplianceStatus::kNonCompliant, f->in->now_ms);
      st->first_failed_ms = f->in->now_ms;
      st->attempts = 0;
      st->step = 0;
    }
    if (!PA::SetReason(L, st, reason, rn) || !PA::MarkDirty(L, f, dev, devlen)) return PA::Raise(L);
  }
  lua_pushboolean(L, newly);
  return 1;
}

// ctx:compliant([opts]) -> true when the device was failing and now passes.
int CtxCompliant(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  const char* dev = nullptr;
  size_t devlen = 0;
  ComplianceState* st = CheckState(L, f, 2, &dev, &devlen);
  bool recovered = false;
  if (st->status != ComplianceStatus::kExempt) {
    recovered = automation::IsFailing(st->status);
    SetStatus(st, ComplianceStatus::kCompliant, f->in->now_ms);
    st->first_failed_ms = 0;
    st->attempts = 0;
    st->step = 0;
    if (!PA::SetReason(L, st, "", 0) || !PA::MarkDirty(L, f, dev, devlen)) return PA::Raise(L);
  }
  lua_pushboolean(L, recovered);
  return 1;
}

// ctx:remediating([command_uuid [, opts]]): a fix is on its way.
int CtxRemediating(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  size_t un = 0;
  const char* uuid = OptString(L, 2, &un);
  const char* dev = nullptr;
  size_t devlen = 0;
  ComplianceState* st = CheckState(L, f, 3, &dev, &devlen);
  if (st->status != ComplianceStatus::kExempt) {
    if (!automation::IsFailing(st->status)) {  // a failing streak starts here
      st->first_failed_ms = f->in->now_ms;
      st->attempts = 0;
      st->step = 0;
    }
    SetStatus(st, ComplianceStatus::kRemediationPending, f->in->now_ms);
    if (uuid && !PA::SetLastCommand(L, st, uuid, un)) return PA::Raise(L);
    if (!PA::MarkDirty(L, f, dev, devlen)) return PA::Raise(L);
  }
  return 0;
}

// ctx:exempt(reason [, opts]) and ctx:reset([opts]) (back to unknown).
int CtxExemptOrReset(lua_State* L, bool exempt) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  size_t rn = 0;
  const char* reason = exempt ? luaL_optlstring(L, 2, "", &rn) : "";
  int opts = exempt ? 3 : 2;
  const char* dev = nullptr;
  size_t devlen = 0;
  ComplianceState* st = CheckState(L, f, opts, &dev, &devlen);
  SetStatus(st, exempt ? ComplianceStatus::kExempt : ComplianceStatus::kUnknown, f->in->now_ms);
  st->first_failed_ms = 0;
  st->attempts = 0;
  st->step = 0;
  if (!PA::SetReason(L, st, reason, rn) || !PA::MarkDirty(L, f, dev, devlen)) return PA::Raise(L);
  return 0;
}
int CtxExempt(lua_State* L) { return CtxExemptOrReset(L, true); }
int CtxReset(lua_State* L) { return CtxExemptOrReset(L, false); }

// ctx:attempt(max [, opts]) -> true (and counts it) while fewer than max
// attempts were made in the current failing streak.
int CtxAttempt(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2);
  const char* dev = nullptr;
  size_t devlen = 0;
  ComplianceState* st = CheckState(L, f, 3, &dev, &devlen);
  if (st->attempts >= max) {
    lua_pushboolean(L, 0);
    return 1;
  }
  st->attempts += 1;
  if (!PA::MarkDirty(L, f, dev, devlen)) return PA::Raise(L);
  lua_pushboolean(L, 1);
  return 1;
}

// ctx:escalate({ {after = "0s", run = fn}, {after = "3d", run = fn}, ... } [, opts])
// While the device is failing, runs the next step once its delay (from the
// start of the failing streak) has passed; one step per call. Returns the
// step number run, or nil.
int CtxEscalate(lua_State* L) {
  Policy::Frame* f = PA::CheckHost(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  const char* dev = nullptr;
  size_t devlen = 0;
  ComplianceState* st = CheckState(L, f, 3, &dev, &devlen);
  if (!automation::IsFailing(st->status)) {
    lua_pushnil(L);
    return 1;
  }
  lua_Integer next = st->step + 1;
  if (lua_rawgeti(L, 2, next) != LUA_TTABLE) {
    lua_pushnil(L);  // the ladder is done
    return 1;
  }
  int step = lua_gettop(L);
  lua_getfield(L, step, "after");
  int64_t after = lua_isnil(L, -1) ? 0 : DurationArg(L, -1, "escalation step 'after'");
  lua_pop(L, 1);
  if (lua_getfield(L, step, "run") != LUA_TFUNCTION)
    return luaL_error(L, "escalation step %I has no run function", next);
  if (f->in->now_ms - st->first_failed_ms < after) {
    lua_pushnil(L);
    return 1;
  }
  st->step = next;
  if (!PA::MarkDirty(L, f, dev, devlen)) return PA::Raise(L);
  lua_pushvalue(L, 1);  // ctx
  lua_call(L, 1, 0);
  lua_pushinteger(L, next);
  return 1;
}

int CtxLog(lua_State* L) {
  PA::CheckCtx(L, 1);
  lua_remove(L, 1);
  return LogInfo(L);
}

// __index(ctx, key): the device is read on first use; methods otherwise.
int CtxIndex(lua_State* L) {
  if (lua_type(L, 2) == LUA_TSTRING && std::strcmp(lua_tostring(L, 2), "device") == 0) {
    Policy::Frame* f = PA::CheckCtx(L, 1);
    bool host_failure = false;
    if (!PA::LoadDevice(L, f, &host_failure)) return PA::Raise(L, host_failure);
    if (!PA::S(L).flag) {
      lua_pushnil(L);
      return 1;
    }
    PushPlist(L, PA::S(L).value);
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, "device");  // cached in the ctx (it has no __newindex)
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

void SetFn(lua_State* L, const char* name, lua_CFunction f) {
  lua_pushcfunction(L, f);
  lua_setfield(L, -2, name);
}

int OpenPolicyApi(lua_State* L) {
  OpenPlistLibrary(L);
  lua_getglobal(L, "plist");
  PushReadOnlyProxy(L);
  lua_setglobal(L, "plist");

  // policy object
  lua_newtable(L);  // methods
  SetFn(L, "on", PolicyOnEvent);
  SetFn(L, "on_result", PolicyOnResult);
  SetFn(L, "on_status", PolicyOnStatus);
  SetFn(L, "every", PolicyEvery);
  int methods = lua_gettop(L);
  lua_newtable(L);  // the object (empty: everything through the metatable)
  lua_newtable(L);  // metatable
  lua_pushvalue(L, methods);
  lua_pushcclosure(L, PolicyIndex, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, [](lua_State* Ls) -> int { return luaL_error(Ls, "the policy object is read-only"); });
  lua_setfield(L, -2, "__newindex");
  SetFn(L, "__call", PolicyCall);
  lua_pushliteral(L, "policy");
  lua_setfield(L, -2, "__metatable");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kPolicyMeta);
  lua_setmetatable(L, -2);
  lua_setglobal(L, "policy");
  lua_pop(L, 1);  // methods

  // mdm: builders looked up by RequestType
  lua_newtable(L);
  lua_newtable(L);
  SetFn(L, "__index", MdmIndex);
  lua_pushcfunction(L, [](lua_State* Ls) -> int { return luaL_error(Ls, "mdm is read-only"); });
  lua_setfield(L, -2, "__newindex");
  lua_pushliteral(L, "read-only");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_setglobal(L, "mdm");

  lua_newtable(L);
  SetFn(L, "debug", LogDebug);
  SetFn(L, "info", LogInfo);
  SetFn(L, "warn", LogWarn);
  SetFn(L, "error", LogError);
  PushReadOnlyProxy(L);
  lua_setglobal(L, "log");
  lua_pushcfunction(L, LogInfo);
  lua_setglobal(L, "print");

  lua_newtable(L);
  SetFn(L, "put_declaration", DdmPutDeclaration);
  SetFn(L, "delete_declaration", DdmDeleteDeclaration);
  SetFn(L, "touch", DdmTouch);
  SetFn(L, "set_add", DdmSetAdd);
  SetFn(L, "set_remove", DdmSetRemove);
  SetFn(L, "assign", DdmAssign);
  SetFn(L, "unassign", DdmUnassign);
  SetFn(L, "status", DdmStatusFn);
  SetFn(L, "declaration_status", DdmDeclarationStatusFn);
  PushReadOnlyProxy(L);
  lua_setglobal(L, "ddm");

  lua_newtable(L);
  SetFn(L, "compare", VersionCompare);
  SetFn(L, "at_least", VersionAtLeast);
  PushReadOnlyProxy(L);
  lua_setglobal(L, "version");
  lua_pushcfunction(L, Duration);
  lua_setglobal(L, "duration");

  // ctx metatable
  lua_newtable(L);
  lua_newtable(L);  // methods
  SetFn(L, "enqueue", CtxEnqueue);
  SetFn(L, "push", CtxPush);
  SetFn(L, "last_result", CtxLastResult);
  SetFn(L, "renewal_profile", CtxRenewalProfile);
  SetFn(L, "get", CtxGet);
  SetFn(L, "put", CtxPut);
  SetFn(L, "delete", CtxDelete);
  SetFn(L, "scan", CtxScan);
  SetFn(L, "compliance", CtxCompliance);
  SetFn(L, "compliant", CtxCompliant);
  SetFn(L, "noncompliant", CtxNoncompliant);
  SetFn(L, "remediating", CtxRemediating);
  SetFn(L, "exempt", CtxExempt);
  SetFn(L, "reset", CtxReset);
  SetFn(L, "attempt", CtxAttempt);
  SetFn(L, "escalate", CtxEscalate);
  SetFn(L, "log", CtxLog);
  lua_pushcclosure(L, CtxIndex, 1);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "ctx");
  lua_setfield(L, -2, "__metatable");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kCtxMeta);
  lua_newtable(L);
  lua_pushliteral(L, "mdm.command");
  lua_setfield(L, -2, "__name");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kUncheckedMeta);
  return 0;
}

// Runs the frame's handlers: argument 1 is the Frame (light userdata).
int Trampoline(lua_State* L) {
  auto* f = static_cast<Policy::Frame*>(lua_touserdata(L, 1));
  lua_settop(L, 0);
  const bool schedule = f->schedule != nullptr;
  // ctx (index 1)
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, static_cast<lua_Integer>(f->serial));
  lua_setfield(L, 1, "_run");
  const std::string& name = PA::Name(L);
  lua_pushlstring(L, name.data(), name.size());
  lua_setfield(L, 1, "policy");
  if (!f->enrollment_id.empty()) {
    lua_pushlstring(L, f->enrollment_id.data(), f->enrollment_id.size());
    lua_setfield(L, 1, "enrollment_id");
  }
  lua_pushnumber(L, Seconds(f->in->now_ms));
  lua_setfield(L, 1, "now");
  lua_pushboolean(L, f->in->dry_run);
  lua_setfield(L, 1, "dry_run");
  // event (index 2)
  lua_createtable(L, 0, 8);
  if (schedule) {
    lua_pushstring(L, events::type::kScheduleTick);
    lua_setfield(L, 2, "type");
    lua_pushlstring(L, f->schedule->name.data(), f->schedule->name.size());
    lua_setfield(L, 2, "schedule");
    lua_pushnumber(L, Seconds(f->in->now_ms));
    lua_setfield(L, 2, "time");
  } else {
    const events::Event* ev = f->event;
    lua_pushlstring(L, ev->type.data(), ev->type.size());
    lua_setfield(L, 2, "type");
    lua_pushinteger(L, static_cast<lua_Integer>(ev->seq));
    lua_setfield(L, 2, "seq");
    lua_pushnumber(L, Seconds(ev->time_ms));
    lua_setfield(L, 2, "time");
    if (!ev->command_uuid.empty()) {
      lua_pushlstring(L, ev->command_uuid.data(), ev->command_uuid.size());
      lua_setfield(L, 2, "command_uuid");
    }
    if (!ev->request_type.empty()) {
      lua_pushlstring(L, ev->request_type.data(), ev->request_type.size());
      lua_setfield(L, 2, "request_type");
    }
    PushPlist(L, *f->payload);
    lua_setfield(L, 2, "payload");
  }
  lua_pushlstring(L, f->in->trigger.data(), f->in->trigger.size());
  lua_setfield(L, 2, "cursor");
  if (!f->enrollment_id.empty()) {
    lua_pushlstring(L, f->enrollment_id.data(), f->enrollment_id.size());
    lua_setfield(L, 2, "enrollment_id");
  }
  lua_pushvalue(L, 2);
  lua_setfield(L, 1, "event");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kCtxMeta);
  lua_setmetatable(L, 1);
  // result (index 3) for on_result handlers
  if (f->result_arg) {
    lua_createtable(L, 0, 4);
    const events::Event* ev = f->event;
    const char* status = ev->type == events::type::kCommandAcknowledged ? "Acknowledged"
                         : ev->type == events::type::kCommandError      ? "Error"
                         : ev->type == events::type::kCommandFormatError ? "CommandFormatError"
                                                                         : "Failed";
    lua_pushstring(L, status);
    lua_setfield(L, 3, "status");
    lua_pushlstring(L, ev->command_uuid.data(), ev->command_uuid.size());
    lua_setfield(L, 3, "command_uuid");
    lua_pushlstring(L, ev->request_type.data(), ev->request_type.size());
    lua_setfield(L, 3, "request_type");
    lua_getfield(L, 2, "payload");
    lua_setfield(L, 3, "response");
  }
  for (size_t i = 0; i < f->refs.size(); ++i) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->refs[i]);
    lua_pushvalue(L, 1);
    if (f->status_arg) lua_getfield(L, 2, "payload");
    else lua_pushvalue(L, f->result_arg ? 3 : 2);
    lua_call(L, 2, 0);
  }
  return 0;
}

}  // namespace

Policy::Policy() : scratch_(std::make_unique<Scratch>()) {}
Policy::~Policy() = default;

Result<std::unique_ptr<Policy>> Policy::Load(const std::string& default_name, std::string_view source,
                                             const std::string& chunk_name, const SandboxLimits& limits) {
  if (!ValidPolicyName(default_name))
    return Status::InvalidArgument("policy name '" + default_name +
                                   "' must be 1-64 letters, digits, '.', '_' or '-'");
  std::unique_ptr<Policy> p(new Policy());
  p->info_.name = default_name;
  p->info_.source_sha256 = Sha256Hex(source);
  p->sandbox_ = Sandbox::Create(limits);
  if (!p->sandbox_) return Status::Internal("cannot create a Lua state");
  p->sandbox_->owner = p.get();
  lua_State* L = p->sandbox_->L();
  lua_pushcfunction(L, OpenPolicyApi);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    return Status::Internal("cannot open the policy API (memory cap too small?)");
  }
  const std::string chunk = "@" + chunk_name;
  int st = luaL_loadbufferx(L, source.data(), source.size(), chunk.c_str(), "t");
  if (st != LUA_OK) {
    std::string msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "cannot load the policy";
    lua_pop(L, 1);
    return Status::InvalidArgument(msg);
  }
  // Top-level code is a run of its own, under the same budgets.
  RunInput in{"policy:" + default_name, "load", NowMillis(), false};
  Frame f;
  f.policy = p.get();
  f.in = &in;
  p->loading_ = true;
  p->frame_ = &f;
  f.serial = ++p->run_serial_;
  p->sandbox_->BeginRun();
  automation::RunOutcome out = p->sandbox_->Call(0, 0);
  p->loading_ = false;
  p->frame_ = nullptr;
  if (!out.ok())
    return Status::InvalidArgument(std::string(automation::RunErrorName(out.error)) + ": " + out.message);
  p->load_logs_ = std::move(f.decisions.logs);
  return p;
}

bool Policy::Wants(std::string_view type, std::string_view request_type) const {
  if (info_.event_types.count(std::string(type)) || info_.event_types.count("*")) return true;
  if (type == events::type::kDdmStatusChanged && !info_.status_items.empty()) return true;
  if (IsResultEvent(type))
    return info_.result_types.count(std::string(request_type)) || info_.result_types.count("*");
  return false;
}

automation::RunOutcome Policy::Run(Frame* f, bool fresh_budget) {
  f->policy = this;
  lua_State* L = sandbox_->L();
  if (!lua_checkstack(L, 4)) return {RunError::kMemory, "Lua stack exhausted"};
  if (fresh_budget) sandbox_->BeginRun();
  f->serial = ++run_serial_;
  frame_ = f;
  lua_pushcfunction(L, Trampoline);
  lua_pushlightuserdata(L, f);
  automation::RunOutcome out = sandbox_->Call(1, 0);
  frame_ = nullptr;
  return out;
}

namespace {
// Moves a successful run's decisions out (compliance writes from the final
// state of every device it touched); a failed run keeps only its log lines.
void Finish(Policy::Frame& f, const automation::RunOutcome& out, automation::Decisions* decisions) {
  if (!out.ok()) {
    decisions->logs = std::move(f.decisions.logs);
    return;
  }
  // Only states that really changed are written (a device confirmed
  // compliant again is not a decision worth a write or an audit record).
  auto same = [](const ComplianceState& a, const ComplianceState& b) {
    return a.status == b.status && a.first_failed_ms == b.first_failed_ms && a.attempts == b.attempts &&
           a.step == b.step && a.last_command_uuid == b.last_command_uuid && a.reason == b.reason;
  };
  for (const auto& [device, dirty] : f.compliance_dirty) {
    if (!dirty) continue;
    auto before = f.compliance_read.find(device);
    const ComplianceState& after = f.compliance[device];
    if (before != f.compliance_read.end() && same(before->second, after)) continue;
    f.decisions.compliance.push_back({device, after});
  }
  *decisions = std::move(f.decisions);
}
}  // namespace

automation::RunOutcome Policy::HandleEvent(const RunInput& in, const events::Event& event,
                                           const plist::Value& payload, automation::HostReader* host,
                                           automation::Decisions* out) {
  Frame f;
  f.in = &in;
  f.event = &event;
  f.payload = &payload;
  f.enrollment_id = event.enrollment_id;
  f.host = host;
  const bool result = IsResultEvent(event.type);
  for (const auto& h : handlers_) {
    if (h.kind == Handler::kEvent && (h.key == event.type || h.key == "*")) f.refs.push_back(h.ref);
  }
  std::vector<int> status_refs;
  if (event.type == events::type::kDdmStatusChanged && !info_.status_items.empty()) {
    const std::string_view item = payload.GetString("item");
    for (const auto& h : handlers_) {
      if (h.kind != Handler::kStatus) continue;
      const bool prefix = !h.key.empty() && h.key.back() == '.';
      if (h.key == "*" || h.key == item || (prefix && item.substr(0, h.key.size()) == h.key))
        status_refs.push_back(h.ref);
    }
  }
  std::vector<int> result_refs;
  if (result) {
    for (const auto& h : handlers_) {
      if (h.kind == Handler::kResult && (h.key == event.request_type || h.key == "*"))
        result_refs.push_back(h.ref);
    }
  }
  out->Clear();
  // One event is one run: one budget, one set of decisions, whatever phases it has.
  automation::RunOutcome o;
  bool fresh = true;
  if (!f.refs.empty()) {
    o = Run(&f, fresh);
    fresh = false;
  }
  if (o.ok() && !status_refs.empty()) {
    // on_status handlers get (ctx, {item, value, previous, removed}).
    f.refs = std::move(status_refs);
    f.status_arg = true;
    o = Run(&f, fresh);
    fresh = false;
    f.status_arg = false;
  }
  if (o.ok() && !result_refs.empty()) {
    // on_result handlers get (ctx, result).
    f.refs = std::move(result_refs);
    f.result_arg = true;
    o = Run(&f, fresh);
    fresh = false;
  }
  if (o.ok() && event.type == events::type::kPolicyRun && !event.enrollment_id.empty()) {
    // Run now: every per-device schedule as well, each with its own trigger
    // (so the CommandUUIDs it derives differ from the other phases').
    f.result_arg = false;
    for (size_t i = 0; i < info_.schedules.size() && o.ok(); ++i) {
      if (!info_.schedules[i].per_device) continue;
      RunInput sub = in;
      sub.trigger = in.trigger + "/" + info_.schedules[i].name;
      f.in = &sub;
      f.schedule = &info_.schedules[i];
      f.command_index = 0;
      f.refs.clear();
      for (const auto& h : handlers_)
        if (h.kind == Handler::kSchedule && h.key == info_.schedules[i].name) f.refs.push_back(h.ref);
      o = Run(&f, fresh);
      fresh = false;
      f.in = &in;
    }
  }
  Finish(f, o, out);
  return o;
}

automation::RunOutcome Policy::RunSchedule(const RunInput& in, size_t index, const std::string& enrollment_id,
                                           automation::HostReader* host, automation::Decisions* out) {
  out->Clear();
  if (index >= info_.schedules.size()) return {RunError::kScript, "no such schedule"};
  Frame f;
  f.in = &in;
  f.schedule = &info_.schedules[index];
  f.enrollment_id = enrollment_id;
  f.host = host;
  for (const auto& h : handlers_) {
    if (h.kind == Handler::kSchedule && h.key == f.schedule->name) f.refs.push_back(h.ref);
  }
  automation::RunOutcome o = Run(&f, true);
  Finish(f, o, out);
  return o;
}

size_t Policy::memory_used() const { return sandbox_->memory_used(); }

}  // namespace orchard::policy
