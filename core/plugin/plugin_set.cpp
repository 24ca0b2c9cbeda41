#include "plugin/plugin_set.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <shared_mutex>

#include "automation/commands.h"
#include "automation/decisions.h"
#include "automation/host.h"
#include "ddm/service.h"
#include "log/log.h"
#include "orchard/plugin.h"
#include "plist/plist.h"

// The handles of <orchard/plugin.h>, defined by the host.
struct orchard_plugin_ref {
  std::string name;
  std::string ns;  // its key-value namespace (the consumer name)
  orchard::automation::HostReader* reader = nullptr;
  orchard::automation::KvWriter* writer = nullptr;
};

struct orchard_http_response {
  orchard::plugin::PluginHttpResponse* out = nullptr;
  size_t max_body = 0;
  bool responded = false;
  bool too_large = false;
};

struct orchard_run {
  orchard::plugin::PluginSet::Loaded* plugin = nullptr;
  const orchard::events::Event* event = nullptr;
  const std::string* trigger = nullptr;
  orchard::automation::HostReader* reader = nullptr;
  orchard::automation::Decisions* out = nullptr;
  size_t command_index = 0;
  std::map<std::string, std::optional<std::string>> kv;  // this run's writes
  std::deque<std::string> keep;                           // host-owned buffers handed out
  std::string error;
  bool host_failure = false;
};

namespace orchard::plugin {
namespace {
constexpr const char* kLog = "plugin";
constexpr size_t kMaxKeyBytes = 512;
constexpr size_t kMaxValueBytes = 64 * 1024;
constexpr size_t kMaxCommandsPerRun = 1000;
constexpr size_t kMaxKvWritesPerRun = 10000;
constexpr size_t kMaxErrorBytes = 4096;
constexpr size_t kMaxEventTypes = 256;
constexpr size_t kMaxSchedules = 16;
constexpr int64_t kMinScheduleMs = 60 * 1000;
constexpr int64_t kMaxScheduleMs = 366LL * 24 * 3600 * 1000;
constexpr size_t kMaxScanLimit = 10000;
constexpr size_t kMaxWriteOps = 10000;
constexpr size_t kMaxWriteBytes = 16 << 20;
constexpr size_t kMaxHttpHeaders = 32;
// The descriptor's size as of ABI 1.0 (through shutdown): a 1.0 plugin's is this small.
constexpr uint32_t kDescriptorSize10 = offsetof(orchard_plugin_descriptor, schedules);
namespace fs = std::filesystem;

// What each minor of the current major added (index = minor), for the
// message refusing a plugin that needs a newer minor.
constexpr const char* kMinorAdded[] = {
    "host: log, enqueue, enqueue_plist, push, kv_get, kv_put, kv_delete, device, last_result, set_error; "
    "descriptor: name, version, event_types, lanes, init, on_event, shutdown",
    "host: kv_read, kv_scan, kv_write, http_respond, http_header; descriptor: schedules, schedule_count, on_http",
    "host: ddm_write, ddm_status, ddm_declaration_status",
};
// The descriptor's size as of ABI 1.1 (through on_http).
constexpr uint32_t kDescriptorSize11 =
    offsetof(orchard_plugin_descriptor, on_http) + sizeof(orchard_plugin_descriptor::on_http);
constexpr uint16_t kHostMinor = ORCHARD_PLUGIN_ABI_MINOR;
static_assert(sizeof(kMinorAdded) / sizeof(kMinorAdded[0]) == kHostMinor + 1, "one entry per minor");

bool ValidName(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// A C string from the plugin, at most max bytes (nullopt: missing or too long).
std::optional<std::string> CString(const char* s, size_t max) {
  if (s == nullptr) return std::nullopt;
  size_t n = strnlen(s, max + 1);
  if (n > max) return std::nullopt;
  return std::string(s, n);
}

bool ReadBuf(orchard_buf b, std::string* out) {
  if (b.len > 0 && b.ptr == nullptr) return false;
  out->assign(b.len ? b.ptr : "", b.len);
  return true;
}

orchard_buf Out(orchard_run* run, std::string s) {
  run->keep.push_back(std::move(s));
  return orchard_buf{run->keep.back().data(), run->keep.back().size()};
}

orchard_status Fail(orchard_run* run, orchard_status st, std::string message) {
  run->error = std::move(message);
  return st;
}

bool ValidScheduleName(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

bool IsAddressed(std::string_view type) {
  return type == events::type::kScheduleTick || type == events::type::kPolicyRun;
}

const char* StatusName(int st) {
  switch (st) {
    case ORCHARD_OK: return "ok";
    case ORCHARD_ERR_INVALID_ARGUMENT: return "invalid_argument";
    case ORCHARD_ERR_NOT_FOUND: return "not_found";
    case ORCHARD_ERR_LIMIT: return "limit";
    case ORCHARD_ERR_HOST: return "host";
    case ORCHARD_ERR_FAILED: return "failed";
    case ORCHARD_ERR_UNSUPPORTED: return "unsupported";
    case ORCHARD_ERR_INTERNAL: return "internal";
  }
  return "unknown";
}
}  // namespace

const char* LoadErrorName(LoadError e) {
  switch (e) {
    case LoadError::kNone: return "none";
    case LoadError::kNotRegularFile: return "not_regular_file";
    case LoadError::kInsecureFile: return "insecure_file";
    case LoadError::kOpen: return "open_failed";
    case LoadError::kNoEntry: return "no_entry_symbol";
    case LoadError::kEntryFailed: return "entry_failed";
    case LoadError::kBadDescriptor: return "bad_descriptor";
    case LoadError::kAbiMajor: return "abi_major";
    case LoadError::kAbiMinor: return "abi_minor";
    case LoadError::kDuplicate: return "duplicate_name";
    case LoadError::kInitFailed: return "init_failed";
    case LoadError::kRegister: return "register_failed";
  }
  return "unknown";
}

const char* PluginStateName(PluginState s) {
  switch (s) {
    case PluginState::kLoaded: return "loaded";
    case PluginState::kRefused: return "refused";
    case PluginState::kError: return "error";
  }
  return "unknown";
}

// One loaded plugin: the library, its descriptor and state, and the
// consumer the runner drives.
class PluginSet::Loaded : public automation::Consumer {
 public:
  Loaded(void* dl, const orchard_plugin_descriptor* desc, std::string name, int lanes,
         std::vector<std::string> types, std::vector<automation::ScheduleInfo> schedules, bool http,
         const PluginSetDeps& deps)
      : dl_(dl), desc_(desc), consumer_(ConsumerName(name)), lanes_(lanes), schedules_(std::move(schedules)),
        http_(http) {
    ref_.name = std::move(name);
    ref_.ns = consumer_;
    ref_.reader = deps.reader;
    ref_.writer = deps.kv_writer;
    for (auto& t : types) {
      if (t == "*") all_ = true;
      types_.insert(std::move(t));
    }
  }
  ~Loaded() override { Close(); }

  const std::string& name() const override { return consumer_; }
  int lanes() const override { return lanes_; }
  bool StartAtHead() const override { return true; }

  bool Wants(const events::Event& ev) const override {
    if (closed_ || desc_->on_event == nullptr) return false;
    if (IsAddressed(ev.type)) {
      // Addressed to one consumer by request_type ("<consumer>" or "<consumer>/<schedule>").
      if (ev.request_type.compare(0, consumer_.size(), consumer_) != 0) return false;
      if (ev.request_type.size() != consumer_.size() && ev.request_type[consumer_.size()] != '/') return false;
      // Its own timers reach it whatever it subscribed to.
      if (ev.type == events::type::kScheduleTick && !schedules_.empty()) return true;
    }
    return all_ || types_.count(ev.type) > 0;
  }
  bool WantsType(std::string_view type) const override {
    if (closed_ || desc_->on_event == nullptr) return false;
    if (type == events::type::kScheduleTick && !schedules_.empty()) return true;
    return all_ || types_.count(std::string(type)) > 0;
  }

  automation::RunOutcome Handle(int lane, const events::Event& ev, const std::string& trigger,
                                automation::HostReader* reader, automation::Decisions* out,
                                bool* dry_run) override {
    out->Clear();
    *dry_run = false;
    if (closed_) return {automation::RunError::kPlugin, "plugin unloaded"};
    if (desc_->on_event == nullptr) return {};
    orchard_run run;
    run.plugin = this;
    run.event = &ev;
    run.trigger = &trigger;
    run.reader = reader;
    run.out = out;
    std::string raw;
    if (ev.type.rfind("command.", 0) == 0 && !ev.payload_json.empty()) {
      auto payload = plist::ParseJson(ev.payload_json);
      if (payload.ok() && payload->is(plist::Type::kDict)) raw = plist::ToXml(*payload);
    }
    orchard_event e{};
    e.size = sizeof(orchard_event);
    e.seq = ev.seq;
    e.time_ms = ev.time_ms;
    e.lane = lane;
    auto buf = [](const std::string& s) { return orchard_buf{s.data(), s.size()}; };
    e.type = buf(ev.type);
    e.cursor = buf(trigger);
    e.enrollment_id = buf(ev.enrollment_id);
    e.command_uuid = buf(ev.command_uuid);
    e.request_type = buf(ev.request_type);
    e.payload_json = buf(ev.payload_json);
    e.raw_plist = buf(raw);
    const orchard_status st = desc_->on_event(state_, &run, &e);
    if (st == ORCHARD_OK) return {};
    out->Clear();
    automation::RunOutcome o;
    // ORCHARD_ERR_HOST is only a host failure if a host call really failed;
    // otherwise a plugin could hold its lane forever.
    o.error = (st == ORCHARD_ERR_HOST && run.host_failure) ? automation::RunError::kHost
                                                            : automation::RunError::kPlugin;
    o.message = std::string("on_event returned ") + StatusName(st);
    if (!run.error.empty()) o.message += ": " + run.error;
    return o;
  }

  // Calls init; on failure the message says why.
  orchard_status Init(const orchard_host_api* api, const std::string& config, std::string* message) {
    if (desc_->init == nullptr) return ORCHARD_OK;
    void* state = nullptr;
    orchard_status st = desc_->init(&ref_, api, orchard_buf{config.data(), config.size()}, &state);
    if (st != ORCHARD_OK) {
      *message = std::string("init returned ") + StatusName(st);
      return st;
    }
    state_ = state;
    initialized_ = true;
    return ORCHARD_OK;
  }

  // Calls on_http (at most one call at a time; none once closing).
  PluginHttpResponse Http(const PluginHttpRequest& req, size_t max_body) {
    PluginHttpResponse out;
    std::shared_lock life(life_mu_, std::try_to_lock);
    if (!life.owns_lock() || closed_ || !http_ || desc_->on_http == nullptr) {
      out.status = life.owns_lock() ? 404 : 503;
      out.content_type = "text/plain";
      out.body = out.status == 404 ? "plugin " + ref_.name + " has no routes\n" : "plugin is stopping\n";
      return out;
    }
    std::unique_lock one(http_mu_, std::try_to_lock);
    if (!one.owns_lock()) {
      out.status = 503;
      out.content_type = "text/plain";
      out.body = "plugin " + ref_.name + " is answering another request; retry\n";
      out.headers.emplace_back("Retry-After", "1");
      return out;
    }
    std::vector<orchard_http_header> headers;
    headers.reserve(req.headers.size());
    auto buf = [](const std::string& s) { return orchard_buf{s.data(), s.size()}; };
    for (const auto& [n, v] : req.headers) headers.push_back(orchard_http_header{buf(n), buf(v)});
    orchard_http_request r{};
    r.size = sizeof(orchard_http_request);
    r.method = buf(req.method);
    r.path = buf(req.path);
    r.query = buf(req.query);
    r.body = buf(req.body);
    r.headers = headers.data();
    r.header_count = headers.size();
    orchard_http_response resp;
    resp.out = &out;
    resp.max_body = max_body;
    const auto start = std::chrono::steady_clock::now();
    const orchard_status st = desc_->on_http(state_, &r, &resp);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    if (ms > 250)
      log::Warn(kLog, "event=plugin_http_slow plugin={} path={} ms={} detail=\"on_http holds an HTTP worker\"",
                ref_.name, log::Quote(req.path), ms);
    if (resp.too_large && !resp.responded) {
      out = PluginHttpResponse{};
      out.status = 500;
      out.content_type = "text/plain";
      out.body = "plugin " + ref_.name + ": response exceeds api.max_response_bytes (" + std::to_string(max_body) +
                 ")\n";
      return out;
    }
    if (resp.responded) return out;
    out = PluginHttpResponse{};
    out.content_type = "text/plain";
    switch (st) {
      case ORCHARD_OK: out.status = 204; out.content_type.clear(); break;
      case ORCHARD_ERR_NOT_FOUND: out.status = 404; out.body = "no such route: " + req.path + "\n"; break;
      case ORCHARD_ERR_INVALID_ARGUMENT: out.status = 400; out.body = "bad request\n"; break;
      default:
        out.status = 500;
        out.body = std::string("plugin ") + ref_.name + " failed: " + StatusName(st) + "\n";
        log::Warn(kLog, "event=plugin_http_failed plugin={} path={} status={}", ref_.name, log::Quote(req.path),
                  StatusName(st));
    }
    return out;
  }

  const std::vector<automation::ScheduleInfo>& schedules() const { return schedules_; }

  // Calls shutdown (if init succeeded) and unloads the library. Idempotent;
  // the runner must no longer call Handle.
  void Close() {
    std::unique_lock life(life_mu_);  // waits for an on_http call in progress
    if (closed_.exchange(true)) return;
    if (initialized_ && desc_->shutdown) desc_->shutdown(state_);
    initialized_ = false;
    if (dl_) dlclose(dl_);
    dl_ = nullptr;
  }

  const std::string& plugin_name() const { return ref_.name; }
  orchard_plugin_ref* ref() { return &ref_; }

 private:
  void* dl_;
  const orchard_plugin_descriptor* desc_;
  orchard_plugin_ref ref_;
  std::string consumer_;
  int lanes_;
  std::vector<automation::ScheduleInfo> schedules_;
  bool http_;
  std::shared_mutex life_mu_;  // on_http calls (shared) vs Close (exclusive)
  std::mutex http_mu_;         // one on_http call at a time
  bool all_ = false;
  std::set<std::string, std::less<>> types_;
  void* state_ = nullptr;
  bool initialized_ = false;
  std::atomic<bool> closed_{false};
};

namespace {
// ---- The host functions (every one catches everything: no exception may
// unwind through the plugin's frames). ----

std::string DeviceOf(orchard_run* run, const std::string& given) {
  return given.empty() ? run->event->enrollment_id : given;
}

void HostLog(orchard_plugin_ref* self, orchard_log_level level, orchard_buf message) {
  try {
    std::string m;
    if (!ReadBuf(message, &m)) return;
    log::Level l = level <= ORCHARD_LOG_DEBUG  ? log::Level::kDebug
                   : level == ORCHARD_LOG_INFO ? log::Level::kInfo
                   : level == ORCHARD_LOG_WARN ? log::Level::kWarn
                                               : log::Level::kError;
    if (!log::Enabled(l)) return;
    log::Write(kLog, l,
               fmt::format("event=plugin_log plugin={} message={}", self ? log::Quote(self->name) : "?",
                           log::Quote(m, 4096)));
  } catch (...) {
  }
}

orchard_status AddCommand(orchard_run* run, const std::string& device_given, plist::Value cmd, int32_t priority,
                          uint32_t flags, orchard_buf* uuid_out) {
  const std::string device = DeviceOf(run, device_given);
  if (device.empty()) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "enqueue: this event is about no device; pass one");
  if (priority < 0 || priority > 255) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "enqueue: priority must be 0..255");
  if (run->out->commands.size() >= kMaxCommandsPerRun)
    return Fail(run, ORCHARD_ERR_LIMIT, "a run may queue at most " + std::to_string(kMaxCommandsPerRun) + " commands");
  Status st = automation::CheckCommand(cmd, (flags & ORCHARD_ENQUEUE_UNCHECKED) != 0);
  if (!st.ok()) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "enqueue: " + st.message());
  automation::CommandDecision c;
  c.enrollment_id = device;
  c.command_uuid =
      automation::DerivedCommandUuid(run->plugin->name(), *run->trigger, run->command_index++);
  c.request_type = std::string(cmd.GetString("RequestType"));
  c.plist = automation::CommandPlist(c.command_uuid, cmd);
  c.priority = priority;
  c.push = (flags & ORCHARD_ENQUEUE_NO_PUSH) == 0;
  if (uuid_out) *uuid_out = Out(run, c.command_uuid);
  run->out->commands.push_back(std::move(c));
  return ORCHARD_OK;
}

orchard_status HostEnqueue(orchard_run* run, orchard_buf device, orchard_buf request_type, orchard_buf fields_json,
                           int32_t priority, uint32_t flags, orchard_buf* uuid_out) {
  if (run == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    std::string dev, rt, fields;
    if (!ReadBuf(device, &dev) || !ReadBuf(request_type, &rt) || !ReadBuf(fields_json, &fields))
      return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "enqueue: a buffer has len > 0 and no ptr");
    if (rt.empty()) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "enqueue: request_type is empty");
    plist::Value cmd = plist::Value::MakeDict();
    if (!fields.empty()) {
      auto parsed = plist::ParseJson(fields);
      if (!parsed.ok()) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "enqueue: fields: " + parsed.status().message());
      if (!parsed->is(plist::Type::kDict))
        return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "enqueue: fields must be a JSON object");
      cmd = std::move(parsed.value());
    }
    cmd.Set("RequestType", plist::Value::String(rt));
    return AddCommand(run, dev, std::move(cmd), priority, flags, uuid_out);
  } catch (const std::exception& e) {
    return Fail(run, ORCHARD_ERR_INTERNAL, e.what());
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status HostEnqueuePlist(orchard_run* run, orchard_buf device, orchard_buf command_plist, int32_t priority,
                                uint32_t flags, orchard_buf* uuid_out) {
  if (run == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    std::string dev, xml;
    if (!ReadBuf(device, &dev) || !ReadBuf(command_plist, &xml))
      return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "enqueue_plist: a buffer has len > 0 and no ptr");
    auto parsed = plist::ParseXml(xml);
    if (!parsed.ok()) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "enqueue_plist: " + parsed.status().message());
    plist::Value root = std::move(parsed.value());
    if (!root.is(plist::Type::kDict))
      return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "enqueue_plist: the plist must be a dict");
    if (const plist::Value* inner = root.Find("Command"); inner && inner->is(plist::Type::kDict)) {
      plist::Value cmd = *inner;
      return AddCommand(run, dev, std::move(cmd), priority, flags, uuid_out);
    }
    return AddCommand(run, dev, std::move(root), priority, flags, uuid_out);
  } catch (const std::exception& e) {
    return Fail(run, ORCHARD_ERR_INTERNAL, e.what());
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status HostPush(orchard_run* run, orchard_buf device) {
  if (run == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    std::string dev;
    if (!ReadBuf(device, &dev)) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "push: bad buffer");
    dev = DeviceOf(run, dev);
    if (dev.empty()) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "push: this event is about no device; pass one");
    run->out->pushes.push_back(std::move(dev));
    return ORCHARD_OK;
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status CheckKey(orchard_run* run, orchard_buf key, std::string* k) {
  if (!ReadBuf(key, k)) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "kv: bad key buffer");
  if (k->empty() || k->size() > kMaxKeyBytes)
    return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "kv: keys are 1 to " + std::to_string(kMaxKeyBytes) + " bytes");
  return ORCHARD_OK;
}

orchard_status HostKvGet(orchard_run* run, orchard_buf key, orchard_buf* value_out) {
  if (run == nullptr || value_out == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    std::string k;
    if (orchard_status st = CheckKey(run, key, &k); st != ORCHARD_OK) return st;
    std::optional<std::string> v;
    if (auto it = run->kv.find(k); it != run->kv.end()) {
      v = it->second;
    } else {
      auto r = run->reader->KvGet(run->plugin->name(), k);
      if (!r.ok()) {
        run->host_failure = true;
        return Fail(run, ORCHARD_ERR_HOST, "kv_get: " + r.status().ToString());
      }
      v = std::move(r.value());
    }
    if (!v) return ORCHARD_ERR_NOT_FOUND;
    *value_out = Out(run, std::move(*v));
    return ORCHARD_OK;
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status KvWrite(orchard_run* run, orchard_buf key, std::optional<std::string> value) {
  std::string k;
  if (orchard_status st = CheckKey(run, key, &k); st != ORCHARD_OK) return st;
  if (value && value->size() > kMaxValueBytes)
    return Fail(run, ORCHARD_ERR_LIMIT, "kv_put: values are at most " + std::to_string(kMaxValueBytes) + " bytes");
  if (run->out->kv.size() >= kMaxKvWritesPerRun)
    return Fail(run, ORCHARD_ERR_LIMIT, "a run may write at most " + std::to_string(kMaxKvWritesPerRun) + " keys");
  run->kv[k] = value;
  run->out->kv.push_back({std::move(k), std::move(value)});
  return ORCHARD_OK;
}

orchard_status HostKvPut(orchard_run* run, orchard_buf key, orchard_buf value) {
  if (run == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    std::string v;
    if (!ReadBuf(value, &v)) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "kv_put: bad value buffer");
    return KvWrite(run, key, std::move(v));
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status HostKvDelete(orchard_run* run, orchard_buf key) {
  if (run == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    return KvWrite(run, key, std::nullopt);
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status HostDevice(orchard_run* run, orchard_buf device, orchard_buf* json_out) {
  if (run == nullptr || json_out == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    std::string dev;
    if (!ReadBuf(device, &dev)) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "device: bad buffer");
    dev = DeviceOf(run, dev);
    if (dev.empty()) return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "device: this event is about no device; pass one");
    auto d = run->reader->Device(dev);
    if (!d.ok()) {
      run->host_failure = true;
      return Fail(run, ORCHARD_ERR_HOST, "device: " + d.status().ToString());
    }
    if (!d->has_value()) return ORCHARD_ERR_NOT_FOUND;
    *json_out = Out(run, plist::ToJson(automation::DeviceValue(**d)));
    return ORCHARD_OK;
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status HostLastResult(orchard_run* run, orchard_buf device, orchard_buf request_type, orchard_buf* json_out,
                              orchard_buf* raw_out) {
  if (run == nullptr || json_out == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    std::string dev, rt;
    if (!ReadBuf(device, &dev) || !ReadBuf(request_type, &rt))
      return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "last_result: bad buffer");
    dev = DeviceOf(run, dev);
    if (dev.empty() || rt.empty())
      return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "last_result: needs a device and a request_type");
    auto r = run->reader->LastResult(dev, rt);
    if (!r.ok()) {
      run->host_failure = true;
      return Fail(run, ORCHARD_ERR_HOST, "last_result: " + r.status().ToString());
    }
    if (!r->has_value()) return ORCHARD_ERR_NOT_FOUND;
    *json_out = Out(run, plist::ToJson(automation::ResultValue(**r)));
    if (raw_out) *raw_out = Out(run, (*r)->raw);
    return ORCHARD_OK;
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

void HostSetError(orchard_run* run, orchard_buf message) {
  if (run == nullptr) return;
  try {
    std::string m;
    if (!ReadBuf(message, &m)) return;
    if (m.size() > kMaxErrorBytes) m.resize(kMaxErrorBytes);
    run->error = std::move(m);
  } catch (...) {
  }
}

// ---- ABI 1.1: the namespace outside runs, HTTP answers ----

bool RefKey(orchard_buf key, std::string* k) {
  return ReadBuf(key, k) && !k->empty() && k->size() <= kMaxKeyBytes;
}

orchard_status HostKvRead(orchard_plugin_ref* self, orchard_buf key, orchard_value_fn fn, void* ctx) {
  if (self == nullptr || fn == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  if (self->reader == nullptr) return ORCHARD_ERR_UNSUPPORTED;
  try {
    std::string k;
    if (!RefKey(key, &k)) return ORCHARD_ERR_INVALID_ARGUMENT;
    auto v = self->reader->KvGet(self->ns, k);
    if (!v.ok()) {
      log::Warn(kLog, "event=plugin_kv_failed plugin={} op=read error={}", self->name, log::Quote(v.status().ToString()));
      return ORCHARD_ERR_HOST;
    }
    if (!v->has_value()) return ORCHARD_ERR_NOT_FOUND;
    fn(ctx, orchard_buf{(*v)->data(), (*v)->size()});
    return ORCHARD_OK;
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status HostKvScan(orchard_plugin_ref* self, orchard_buf prefix, orchard_buf after, size_t limit,
                          orchard_entry_fn fn, void* ctx) {
  if (self == nullptr || fn == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  if (self->reader == nullptr) return ORCHARD_ERR_UNSUPPORTED;
  try {
    std::string pre, aft;
    if (!ReadBuf(prefix, &pre) || !ReadBuf(after, &aft) || pre.size() > kMaxKeyBytes || aft.size() > kMaxKeyBytes)
      return ORCHARD_ERR_INVALID_ARGUMENT;
    if (limit == 0 || limit > kMaxScanLimit) return ORCHARD_ERR_INVALID_ARGUMENT;
    auto page = self->reader->KvScan(self->ns, pre, aft, limit);
    if (!page.ok()) {
      log::Warn(kLog, "event=plugin_kv_failed plugin={} op=scan error={}", self->name,
                log::Quote(page.status().ToString()));
      return ORCHARD_ERR_HOST;
    }
    for (const auto& [k, v] : *page)
      if (fn(ctx, orchard_buf{k.data(), k.size()}, orchard_buf{v.data(), v.size()}) != 0) break;
    return ORCHARD_OK;
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status HostKvWrite(orchard_plugin_ref* self, const orchard_kv_op* ops, size_t count) {
  if (self == nullptr || (count > 0 && ops == nullptr)) return ORCHARD_ERR_INVALID_ARGUMENT;
  if (self->writer == nullptr) return ORCHARD_ERR_UNSUPPORTED;
  if (count == 0 || count > kMaxWriteOps) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    std::vector<automation::KvWrite> writes;
    writes.reserve(count);
    size_t bytes = 0;
    for (size_t i = 0; i < count; ++i) {
      automation::KvWrite w;
      if (!RefKey(ops[i].key, &w.key)) return ORCHARD_ERR_INVALID_ARGUMENT;
      if (ops[i].remove == 0) {
        std::string v;
        if (!ReadBuf(ops[i].value, &v)) return ORCHARD_ERR_INVALID_ARGUMENT;
        if (v.size() > kMaxValueBytes) return ORCHARD_ERR_LIMIT;
        bytes += v.size();
        w.value = std::move(v);
      }
      bytes += w.key.size();
      if (bytes > kMaxWriteBytes) return ORCHARD_ERR_LIMIT;
      writes.push_back(std::move(w));
    }
    Status st = self->writer->KvWriteNow(self->ns, writes);
    if (!st.ok()) {
      log::Warn(kLog, "event=plugin_kv_failed plugin={} op=write error={}", self->name, log::Quote(st.ToString()));
      return ORCHARD_ERR_HOST;
    }
    return ORCHARD_OK;
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

bool HeaderText(std::string_view v) {
  return std::none_of(v.begin(), v.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

bool Token(std::string_view n) {
  if (n.empty() || n.size() > 128) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
  });
}

orchard_status HostHttpRespond(orchard_http_response* resp, int32_t status, orchard_buf content_type,
                               orchard_buf body) {
  if (resp == nullptr || resp->out == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    std::string ct, b;
    if (status < 100 || status > 599 || !ReadBuf(content_type, &ct) || !ReadBuf(body, &b) || ct.size() > 256 ||
        !HeaderText(ct))
      return ORCHARD_ERR_INVALID_ARGUMENT;
    if (b.size() > resp->max_body) {
      resp->too_large = true;
      resp->responded = false;
      return ORCHARD_ERR_LIMIT;
    }
    resp->out->status = status;
    resp->out->content_type = std::move(ct);
    resp->out->body = std::move(b);
    resp->responded = true;
    resp->too_large = false;
    return ORCHARD_OK;
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status HostHttpHeader(orchard_http_response* resp, orchard_buf name, orchard_buf value) {
  if (resp == nullptr || resp->out == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    std::string n, v;
    if (!ReadBuf(name, &n) || !ReadBuf(value, &v) || !Token(n) || v.size() > 8192 || !HeaderText(v))
      return ORCHARD_ERR_INVALID_ARGUMENT;
    std::string lower = n;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    // Framing is the host's; the content type goes through http_respond.
    if (lower == "content-length" || lower == "transfer-encoding" || lower == "connection" ||
        lower == "content-type" || lower == "keep-alive" || lower == "upgrade")
      return ORCHARD_ERR_INVALID_ARGUMENT;
    if (resp->out->headers.size() >= kMaxHttpHeaders) return ORCHARD_ERR_LIMIT;
    resp->out->headers.emplace_back(std::move(n), std::move(v));
    return ORCHARD_OK;
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

// ---- ABI 1.2: Declarative Device Management ----

constexpr size_t kMaxDdmOpsPerRun = 1000;

orchard_status HostDdmWrite(orchard_run* run, orchard_ddm_op op, orchard_buf a, orchard_buf b) {
  if (run == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  try {
    using Kind = automation::DdmOp::Kind;
    automation::DdmOp d;
    switch (op) {
      case ORCHARD_DDM_PUT_DECLARATION: d.kind = Kind::kPutDeclaration; break;
      case ORCHARD_DDM_DELETE_DECLARATION: d.kind = Kind::kDeleteDeclaration; break;
      case ORCHARD_DDM_TOUCH: d.kind = Kind::kTouch; break;
      case ORCHARD_DDM_SET_ADD: d.kind = Kind::kSetAdd; break;
      case ORCHARD_DDM_SET_REMOVE: d.kind = Kind::kSetRemove; break;
      case ORCHARD_DDM_ASSIGN: d.kind = Kind::kAssign; break;
      case ORCHARD_DDM_UNASSIGN: d.kind = Kind::kUnassign; break;
      default:
        return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "ddm_write: unknown op " + std::to_string(static_cast<int>(op)));
    }
    const bool two = d.kind != Kind::kPutDeclaration && d.kind != Kind::kDeleteDeclaration && d.kind != Kind::kTouch;
    if (!ReadBuf(a, &d.a) || (two && !ReadBuf(b, &d.b)))
      return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, "ddm_write: bad buffer");
    const std::string name = std::string("ddm_write ") + automation::DdmOpName(d.kind);
    // The declaration's size is checked when the run commits, against the
    // server's limit (max_body_bytes): a refused write is recorded, the run stands.
    ddm::Limits limits;
    limits.max_declaration_bytes = std::numeric_limits<size_t>::max();
    if (Status st = ddm::CheckOp(d, limits); !st.ok())
      return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, name + ": " + st.message());
    if (run->out->ddm.size() >= kMaxDdmOpsPerRun)
      return Fail(run, ORCHARD_ERR_LIMIT, "a run may make at most " + std::to_string(kMaxDdmOpsPerRun) + " ddm writes");
    run->out->ddm.push_back(std::move(d));
    return ORCHARD_OK;
  } catch (const std::exception& e) {
    return Fail(run, ORCHARD_ERR_INTERNAL, e.what());
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

// ddm_status (item) and ddm_declaration_status (!item).
orchard_status DdmRead(orchard_run* run, bool item, orchard_buf device, orchard_buf key, orchard_buf* json_out) {
  if (run == nullptr || json_out == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;
  const char* name = item ? "ddm_status" : "ddm_declaration_status";
  try {
    std::string dev, k;
    if (!ReadBuf(device, &dev) || !ReadBuf(key, &k))
      return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, std::string(name) + ": bad buffer");
    dev = DeviceOf(run, dev);
    if (dev.empty() || k.empty())
      return Fail(run, ORCHARD_ERR_INVALID_ARGUMENT, std::string(name) + ": needs a device and a name");
    auto r = item ? run->reader->DdmStatus(dev, k) : run->reader->DdmDeclarationStatus(dev, k);
    if (!r.ok()) {
      const Code c = r.status().code();
      if (c == Code::kUnavailable) return Fail(run, ORCHARD_ERR_UNSUPPORTED, std::string(name) + ": " + r.status().message());
      if (c == Code::kInvalidArgument) return ORCHARD_ERR_NOT_FOUND;  // an id that cannot exist
      run->host_failure = true;
      return Fail(run, ORCHARD_ERR_HOST, std::string(name) + ": " + r.status().ToString());
    }
    if (!r->has_value()) return ORCHARD_ERR_NOT_FOUND;
    *json_out = Out(run, plist::ToJson(**r));
    return ORCHARD_OK;
  } catch (...) {
    return ORCHARD_ERR_INTERNAL;
  }
}

orchard_status HostDdmStatus(orchard_run* run, orchard_buf device, orchard_buf item, orchard_buf* json_out) {
  return DdmRead(run, true, device, item, json_out);
}

orchard_status HostDdmDeclarationStatus(orchard_run* run, orchard_buf device, orchard_buf identifier,
                                        orchard_buf* json_out) {
  return DdmRead(run, false, device, identifier, json_out);
}

const orchard_host_api kHostApi = {
    sizeof(orchard_host_api),
    ORCHARD_PLUGIN_ABI_MAJOR,
    ORCHARD_PLUGIN_ABI_MINOR,
    &HostLog,
    &HostEnqueue,
    &HostEnqueuePlist,
    &HostPush,
    &HostKvGet,
    &HostKvPut,
    &HostKvDelete,
    &HostDevice,
    &HostLastResult,
    &HostSetError,
    &HostKvRead,
    &HostKvScan,
    &HostKvWrite,
    &HostHttpRespond,
    &HostHttpHeader,
    &HostDdmWrite,
    &HostDdmStatus,
    &HostDdmDeclarationStatus,
};

std::string MissingMinors(uint16_t wanted) {
  return "this orchardd provides plugin ABI " + std::to_string(ORCHARD_PLUGIN_ABI_MAJOR) + "." +
         std::to_string(kHostMinor) + " and lacks what ABI " + std::to_string(ORCHARD_PLUGIN_ABI_MAJOR) + "." +
         std::to_string(kHostMinor + 1) +
         (wanted > kHostMinor + 1 ? " to " + std::to_string(ORCHARD_PLUGIN_ABI_MAJOR) + "." + std::to_string(wanted)
                                  : std::string()) +
         " added (upgrade orchardd or use a plugin build for ABI " + std::to_string(ORCHARD_PLUGIN_ABI_MAJOR) + "." +
         std::to_string(kHostMinor) + ")";
}
}  // namespace

PluginSet::PluginSet(const PluginSetOptions& options, automation::Runner* runner)
    : PluginSet(options, PluginSetDeps{runner, nullptr, nullptr, nullptr}) {}

PluginSet::PluginSet(const PluginSetOptions& options, const PluginSetDeps& deps)
    : options_(options), deps_(deps), runner_(deps.runner) {}

PluginSet::~PluginSet() { Stop(); }

Status PluginSet::Start() {
  if (options_.dir.empty()) return Status::Ok();
  struct stat st {};
  if (stat(options_.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status::InvalidArgument("plugin.dir " + options_.dir + " is not a readable directory");
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return Status::PermissionDenied("plugin.dir " + options_.dir +
                                    " is writable by group or others: anyone in them could replace a plugin");
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& de : fs::directory_iterator(options_.dir, ec))
    if (de.path().extension() == ".so") files.push_back(de.path().string());
  if (ec) return Status::Io("cannot list plugin.dir " + options_.dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  size_t loaded = 0;
  for (const auto& f : files)
    if (Load(f).ok()) ++loaded;
  log::Info(kLog, "event=plugins_loaded dir={} files={} loaded={}", log::Quote(options_.dir), files.size(), loaded);
  return Status::Ok();
}

Status PluginSet::Refuse(Entry* e, PluginState state, LoadError error, std::string message) {
  e->status.state = state;
  e->status.error = error;
  e->status.message = message;
  log::Error(kLog, "event=plugin_refused file={} error={} message={}", log::Quote(e->status.file), LoadErrorName(error),
             log::Quote(message, 2048));
  switch (error) {
    case LoadError::kInsecureFile: return Status::PermissionDenied(e->status.file + ": " + message);
    case LoadError::kNotRegularFile:
    case LoadError::kOpen: return Status::NotFound(e->status.file + ": " + message);
    case LoadError::kDuplicate: return Status::AlreadyExists(e->status.file + ": " + message);
    case LoadError::kInitFailed:
    case LoadError::kEntryFailed: return Status::Unavailable(e->status.file + ": " + message);
    default: return Status::InvalidArgument(e->status.file + ": " + message);
  }
}

Status PluginSet::Load(const std::string& path) {
  std::lock_guard lock(mu_);
  if (auto it = entries_.find(path); it != entries_.end() && it->second.loaded)
    return Status::AlreadyExists(path + " is already loaded");
  Entry& e = entries_[path];
  e = Entry{};
  e.status.file = path;
  e.status.name = fs::path(path).stem().string();

  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return Refuse(&e, PluginState::kRefused, LoadError::kNotRegularFile, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Refuse(&e, PluginState::kRefused, LoadError::kNotRegularFile, "not a regular file");
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    char mode[8];
    snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Refuse(&e, PluginState::kRefused, LoadError::kInsecureFile,
                  std::string("writable by group or others (mode ") + mode + "); chmod go-w it");
  }
  if (st.st_uid != 0 && st.st_uid != geteuid())
    return Refuse(&e, PluginState::kRefused, LoadError::kInsecureFile,
                  "owned by uid " + std::to_string(st.st_uid) + ", neither root nor the server's uid " +
                      std::to_string(geteuid()));

  void* dl = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (dl == nullptr) {
    const char* why = dlerror();
    return Refuse(&e, PluginState::kRefused, LoadError::kOpen, why ? why : "dlopen failed");
  }
  // From here on, every refusal closes the library.
  auto close = [&dl] {
    if (dl) dlclose(dl);
    dl = nullptr;
  };
  (void)dlerror();
  void* sym = dlsym(dl, ORCHARD_PLUGIN_ENTRY);
  if (sym == nullptr) {
    close();
    return Refuse(&e, PluginState::kRefused, LoadError::kNoEntry,
                  std::string("does not export ") + ORCHARD_PLUGIN_ENTRY + " (declare it extern \"C\" and visible)");
  }
  orchard_plugin_entry_fn entry;
  static_assert(sizeof(entry) == sizeof(sym));
  std::memcpy(&entry, &sym, sizeof(entry));
  const orchard_plugin_descriptor* desc = nullptr;
  const orchard_status est = entry(&kHostApi, &desc);
  if (est != ORCHARD_OK || desc == nullptr) {
    close();
    return Refuse(&e, PluginState::kError, LoadError::kEntryFailed,
                  std::string(ORCHARD_PLUGIN_ENTRY) + " returned " + StatusName(est) +
                      (desc == nullptr && est == ORCHARD_OK ? " without a descriptor" : ""));
  }
  // Version first: the size and fields mean what the declared ABI says.
  if (const uint32_t size = desc->size; size < offsetof(orchard_plugin_descriptor, name)) {
    close();
    return Refuse(&e, PluginState::kRefused, LoadError::kBadDescriptor,
                  "descriptor of " + std::to_string(size) + " bytes is too small to hold its version");
  }
  e.status.abi = std::to_string(desc->abi_major) + "." + std::to_string(desc->abi_minor);
  if (desc->abi_major != ORCHARD_PLUGIN_ABI_MAJOR) {
    close();
    return Refuse(&e, PluginState::kRefused, LoadError::kAbiMajor,
                  "built for plugin ABI " + e.status.abi + "; this orchardd speaks ABI " +
                      std::to_string(ORCHARD_PLUGIN_ABI_MAJOR) + ".x only (rebuild it against this release's headers)");
  }
  if (const uint16_t wanted = desc->abi_minor; wanted > kHostMinor) {
    close();  // desc is gone from here on
    return Refuse(&e, PluginState::kRefused, LoadError::kAbiMinor,
                  "needs plugin ABI " + e.status.abi + "; " + MissingMinors(wanted));
  }
  if (const uint32_t size = desc->size; size < kDescriptorSize10) {
    close();
    return Refuse(&e, PluginState::kRefused, LoadError::kBadDescriptor,
                  "descriptor of " + std::to_string(size) + " bytes is smaller than ABI 1.0's " +
                      std::to_string(kDescriptorSize10));
  }
  auto name = CString(desc->name, 64);
  if (!name || !ValidName(*name)) {
    close();
    return Refuse(&e, PluginState::kRefused, LoadError::kBadDescriptor,
                  "descriptor name must be 1 to 64 letters, digits, '_' or '-'");
  }
  e.status.name = *name;
  auto version = CString(desc->version, 64);
  if (!version) {
    close();
    return Refuse(&e, PluginState::kRefused, LoadError::kBadDescriptor, "descriptor version missing or over 64 bytes");
  }
  e.status.version = *version;
  if (desc->event_type_count > kMaxEventTypes || (desc->event_type_count > 0 && desc->event_types == nullptr)) {
    close();
    return Refuse(&e, PluginState::kRefused, LoadError::kBadDescriptor,
                  "descriptor event_types: at most " + std::to_string(kMaxEventTypes) + " names, not NULL");
  }
  std::vector<std::string> types;
  for (size_t i = 0; i < desc->event_type_count; ++i) {
    auto t = CString(desc->event_types[i], 128);
    if (!t || t->empty()) {
      close();
      return Refuse(&e, PluginState::kRefused, LoadError::kBadDescriptor,
                    "descriptor event_types[" + std::to_string(i) + "] is missing or over 128 bytes");
    }
    types.push_back(std::move(*t));
  }
  e.status.event_types = types;
  if (desc->lanes < 0 || desc->lanes > 16) {
    close();
    return Refuse(&e, PluginState::kRefused, LoadError::kBadDescriptor, "descriptor lanes must be 0 to 16");
  }
  e.status.lanes = desc->lanes ? desc->lanes : std::max(1, options_.default_lanes);
  // ABI 1.1 fields, only when the plugin declares 1.1 or later.
  std::vector<automation::ScheduleInfo> schedules;
  bool http = false;
  if (desc->abi_minor >= 1) {
    if (desc->size < kDescriptorSize11) {
      close();
      return Refuse(&e, PluginState::kRefused, LoadError::kBadDescriptor,
                    "declares ABI " + e.status.abi + " but its descriptor of " + std::to_string(desc->size) +
                        " bytes is smaller than ABI 1.1's " + std::to_string(kDescriptorSize11));
    }
    if (desc->schedule_count > kMaxSchedules || (desc->schedule_count > 0 && desc->schedules == nullptr)) {
      close();
      return Refuse(&e, PluginState::kRefused, LoadError::kBadDescriptor,
                    "descriptor schedules: at most " + std::to_string(kMaxSchedules) + ", not NULL");
    }
    std::set<std::string> seen;
    for (size_t i = 0; i < desc->schedule_count; ++i) {
      const orchard_schedule& sc = desc->schedules[i];
      auto sname = CString(sc.name, 64);
      std::string why;
      if (!sname || !ValidScheduleName(*sname)) why = "name must be 1 to 64 letters, digits, '_', '-' or '.'";
      else if (!seen.insert(*sname).second) why = "name '" + *sname + "' is used twice";
      else if (sc.interval_ms < kMinScheduleMs || sc.interval_ms > kMaxScheduleMs)
        why = "interval_ms must be 60000 (1 minute) to " + std::to_string(kMaxScheduleMs) + " (366 days)";
      else if (sc.splay_ms < 0 || sc.splay_ms > sc.interval_ms) why = "splay_ms must be 0 to interval_ms";
      if (!why.empty()) {
        close();
        return Refuse(&e, PluginState::kRefused, LoadError::kBadDescriptor,
                      "descriptor schedules[" + std::to_string(i) + "]: " + why);
      }
      schedules.push_back(automation::ScheduleInfo{*sname, sc.interval_ms, sc.splay_ms, sc.per_device != 0});
      e.status.schedules.push_back(*sname + " every " + std::to_string(sc.interval_ms) + "ms" +
                                   (sc.per_device ? " per device" : ""));
    }
    http = desc->on_http != nullptr;
  }
  e.status.http = http;
  for (const auto& [file, other] : entries_) {
    if (file != path && other.loaded && other.status.name == *name) {
      close();
      return Refuse(&e, PluginState::kRefused, LoadError::kDuplicate,
                    "plugin name '" + *name + "' is already loaded from " + file);
    }
  }
  auto loaded = std::make_shared<Loaded>(dl, desc, *name, e.status.lanes, types, schedules, http, deps_);
  dl = nullptr;  // owned by loaded now
  auto cfg = options_.configs.find(*name);
  const std::string config = cfg == options_.configs.end() ? "{}" : cfg->second;
  std::string why;
  if (loaded->Init(&kHostApi, config, &why) != ORCHARD_OK) {
    loaded->Close();
    return Refuse(&e, PluginState::kError, LoadError::kInitFailed, why);
  }
  Status reg = runner_->Register(loaded);
  if (!reg.ok()) {
    loaded->Close();
    return Refuse(&e, PluginState::kError, LoadError::kRegister, reg.message());
  }
  if (deps_.schedules && !loaded->schedules().empty())
    deps_.schedules->SetSchedules(loaded->name(), loaded->schedules());
  else if (!loaded->schedules().empty())
    log::Warn(kLog, "event=plugin_schedules_ignored plugin={} reason=no_scheduler", *name);
  e.loaded = std::move(loaded);
  e.status.state = PluginState::kLoaded;
  e.status.error = LoadError::kNone;
  e.status.message.clear();
  log::Info(kLog, "event=plugin_loaded plugin={} version={} file={} abi={} lanes={} event_types={}", *name,
            log::Quote(*version), log::Quote(path), e.status.abi, e.status.lanes, types.size());
  return Status::Ok();
}

void PluginSet::Stop() {
  std::lock_guard lock(mu_);
  for (auto& [file, e] : entries_) {
    if (!e.loaded) continue;
    if (deps_.schedules && !e.loaded->schedules().empty()) deps_.schedules->SetSchedules(e.loaded->name(), {});
    (void)runner_->Unregister(e.loaded->name(), false);  // waits for the runs in progress
    e.loaded->Close();
    log::Info(kLog, "event=plugin_unloaded plugin={}", e.loaded->plugin_name());
    e.loaded.reset();
  }
  entries_.clear();
}

std::vector<PluginStatus> PluginSet::List(size_t limit) {
  std::map<std::string, automation::ConsumerStatus> running;
  for (auto& s : runner_->Statuses()) running[s.name] = s;
  std::lock_guard lock(mu_);
  std::vector<PluginStatus> out;
  for (const auto& [file, e] : entries_) {
    if (out.size() >= limit) break;
    PluginStatus s = e.status;
    if (e.loaded) {
      auto it = running.find(e.loaded->name());
      if (it != running.end()) {
        s.handled = it->second.handled;
        s.errors = it->second.failed;
        s.parked = it->second.parked;
        s.last_error = it->second.last_error;
        s.lag_ms = it->second.lag_ms;
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

PluginHttpResponse PluginSet::Http(const std::string& name, const PluginHttpRequest& request, size_t max_body) {
  std::shared_ptr<Loaded> target;
  {
    std::lock_guard lock(mu_);
    for (auto& [file, e] : entries_)
      if (e.loaded && e.loaded->plugin_name() == name) target = e.loaded;
  }
  if (!target) {
    PluginHttpResponse out;
    out.status = 404;
    out.content_type = "text/plain";
    out.body = "no loaded plugin " + name + "\n";
    return out;
  }
  try {
    return target->Http(request, max_body);
  } catch (const std::exception& ex) {  // our own failure (allocation), never the plugin's: Glue catches there
    PluginHttpResponse out;
    out.status = 500;
    out.content_type = "text/plain";
    out.body = "plugin route failed\n";
    log::Error(kLog, "event=plugin_http_error plugin={} error={}", name, log::Quote(ex.what()));
    return out;
  }
}

std::shared_ptr<automation::Consumer> PluginSet::ConsumerOf(const std::string& name) {
  std::lock_guard lock(mu_);
  for (auto& [file, e] : entries_)
    if (e.loaded && e.loaded->plugin_name() == name) return e.loaded;
  return nullptr;
}

}  // namespace orchard::plugin
