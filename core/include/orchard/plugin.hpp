// C++ convenience layer over <orchard/plugin.h> for plugin authors (C++17 or
// later). Header-only; the plugin still speaks the C ABI, so it does not
// depend on the compiler or standard library Orchard was built with.
//
// Every boundary the host crosses (the entry point, init, on_event, shutdown)
// catches every exception and turns it into an error code: an exception
// never reaches the host. A caught exception in on_event is a failed run
// (ORCHARD_ERR_INTERNAL, its what() as the run's error), retried and then
// parked like any other failure.
//
// Usage:
//   class Hello : public orchard::plugin::Plugin {
//    public:
//     orchard_status OnEvent(orchard::plugin::Run& run, const orchard::plugin::Event& ev) override {
//       run.Log(ORCHARD_LOG_INFO, "saw " + std::string(ev.type()));
//       return ORCHARD_OK;
//     }
//   };
//   ORCHARD_PLUGIN_DEFINE(Hello, "hello", "1.0.0", 2, ORCHARD_EVENT_ENROLLMENT_ENROLLED)
//
// Thread-safety: one Plugin object per loaded plugin; OnEvent runs
// concurrently on different lanes (see plugin.h), so guard shared members.
#ifndef ORCHARD_PLUGIN_HPP
#define ORCHARD_PLUGIN_HPP

#include <exception>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "orchard/plugin.h"

namespace orchard::plugin {

inline orchard_buf Buf(std::string_view s) { return orchard_buf{s.data(), s.size()}; }
inline std::string_view View(orchard_buf b) { return b.len ? std::string_view(b.ptr, b.len) : std::string_view(); }

// Read-only view of an event (host-owned: valid during OnEvent only).
class Event {
 public:
  explicit Event(const orchard_event* e) : e_(e) {}
  uint64_t seq() const { return e_->seq; }
  int64_t time_ms() const { return e_->time_ms; }
  int lane() const { return e_->lane; }
  std::string_view type() const { return View(e_->type); }
  std::string_view cursor() const { return View(e_->cursor); }
  std::string_view enrollment_id() const { return View(e_->enrollment_id); }
  std::string_view command_uuid() const { return View(e_->command_uuid); }
  std::string_view request_type() const { return View(e_->request_type); }
  std::string_view payload_json() const { return View(e_->payload_json); }
  std::string_view raw_plist() const { return View(e_->raw_plist); }
  const orchard_event* raw() const { return e_; }

 private:
  const orchard_event* e_;
};

// The host calls of one on_event run. Outputs are copied into std::strings.
class Run {
 public:
  Run(const orchard_host_api* api, orchard_plugin_ref* self, orchard_run* run) : api_(api), self_(self), run_(run) {}

  void Log(orchard_log_level level, std::string_view message) const {
    if (ORCHARD_HOST_HAS(api_, log)) api_->log(self_, level, Buf(message));
  }
  // device "" = the event's device; fields_json: a JSON object of request keys ("" = none).
  orchard_status Enqueue(std::string_view device, std::string_view request_type, std::string_view fields_json,
                         int priority = 0, unsigned flags = 0, std::string* command_uuid = nullptr) const {
    if (!ORCHARD_HOST_HAS(api_, enqueue)) return ORCHARD_ERR_UNSUPPORTED;
    orchard_buf uuid{nullptr, 0};
    orchard_status st = api_->enqueue(run_, Buf(device), Buf(request_type), Buf(fields_json), priority, flags, &uuid);
    if (st == ORCHARD_OK && command_uuid) command_uuid->assign(View(uuid));
    return st;
  }
  orchard_status EnqueuePlist(std::string_view device, std::string_view plist, int priority = 0, unsigned flags = 0,
                              std::string* command_uuid = nullptr) const {
    if (!ORCHARD_HOST_HAS(api_, enqueue_plist)) return ORCHARD_ERR_UNSUPPORTED;
    orchard_buf uuid{nullptr, 0};
    orchard_status st = api_->enqueue_plist(run_, Buf(device), Buf(plist), priority, flags, &uuid);
    if (st == ORCHARD_OK && command_uuid) command_uuid->assign(View(uuid));
    return st;
  }
  orchard_status Push(std::string_view device) const {
    if (!ORCHARD_HOST_HAS(api_, push)) return ORCHARD_ERR_UNSUPPORTED;
    return api_->push(run_, Buf(device));
  }
  // ORCHARD_ERR_NOT_FOUND when the key is absent.
  orchard_status KvGet(std::string_view key, std::string* value) const {
    if (!ORCHARD_HOST_HAS(api_, kv_get)) return ORCHARD_ERR_UNSUPPORTED;
    orchard_buf v{nullptr, 0};
    orchard_status st = api_->kv_get(run_, Buf(key), &v);
    if (st == ORCHARD_OK && value) value->assign(View(v));
    return st;
  }
  orchard_status KvPut(std::string_view key, std::string_view value) const {
    if (!ORCHARD_HOST_HAS(api_, kv_put)) return ORCHARD_ERR_UNSUPPORTED;
    return api_->kv_put(run_, Buf(key), Buf(value));
  }
  orchard_status KvDelete(std::string_view key) const {
    if (!ORCHARD_HOST_HAS(api_, kv_delete)) return ORCHARD_ERR_UNSUPPORTED;
    return api_->kv_delete(run_, Buf(key));
  }
  orchard_status Device(std::string_view device, std::string* json) const {
    if (!ORCHARD_HOST_HAS(api_, device)) return ORCHARD_ERR_UNSUPPORTED;
    orchard_buf v{nullptr, 0};
    orchard_status st = api_->device(run_, Buf(device), &v);
    if (st == ORCHARD_OK && json) json->assign(View(v));
    return st;
  }
  orchard_status LastResult(std::string_view device, std::string_view request_type, std::string* json,
                            std::string* raw_plist = nullptr) const {
    if (!ORCHARD_HOST_HAS(api_, last_result)) return ORCHARD_ERR_UNSUPPORTED;
    orchard_buf j{nullptr, 0}, raw{nullptr, 0};
    orchard_status st = api_->last_result(run_, Buf(device), Buf(request_type), &j, &raw);
    if (st == ORCHARD_OK) {
      if (json) json->assign(View(j));
      if (raw_plist) raw_plist->assign(View(raw));
    }
    return st;
  }
  void SetError(std::string_view message) const {
    if (ORCHARD_HOST_HAS(api_, set_error)) api_->set_error(run_, Buf(message));
  }
  // ABI 1.2: Declarative Device Management (see orchard_host_api.ddm_write).
  orchard_status DdmWrite(orchard_ddm_op op, std::string_view a, std::string_view b = {}) const {
    if (!ORCHARD_HOST_HAS(api_, ddm_write)) return ORCHARD_ERR_UNSUPPORTED;
    return api_->ddm_write(run_, op, Buf(a), Buf(b));
  }
  // ORCHARD_ERR_NOT_FOUND when the channel never reported the item.
  orchard_status DdmStatus(std::string_view device, std::string_view item, std::string* json) const {
    if (!ORCHARD_HOST_HAS(api_, ddm_status)) return ORCHARD_ERR_UNSUPPORTED;
    orchard_buf v{nullptr, 0};
    orchard_status st = api_->ddm_status(run_, Buf(device), Buf(item), &v);
    if (st == ORCHARD_OK && json) json->assign(View(v));
    return st;
  }
  orchard_status DdmDeclarationStatus(std::string_view device, std::string_view identifier,
                                      std::string* json) const {
    if (!ORCHARD_HOST_HAS(api_, ddm_declaration_status)) return ORCHARD_ERR_UNSUPPORTED;
    orchard_buf v{nullptr, 0};
    orchard_status st = api_->ddm_declaration_status(run_, Buf(device), Buf(identifier), &v);
    if (st == ORCHARD_OK && json) json->assign(View(v));
    return st;
  }

  const orchard_host_api* api() const { return api_; }
  orchard_run* handle() const { return run_; }

 private:
  const orchard_host_api* api_;
  orchard_plugin_ref* self_;
  orchard_run* run_;
};

// An on_http request (ABI 1.1; host-owned: valid during OnHttp only).
class HttpRequest {
 public:
  explicit HttpRequest(const orchard_http_request* r) : r_(r) {}
  std::string_view method() const { return View(r_->method); }
  std::string_view path() const { return View(r_->path); }
  std::string_view query() const { return View(r_->query); }
  std::string_view body() const { return View(r_->body); }
  // The first header of this name (ASCII case-insensitive), "" if none.
  std::string_view Header(std::string_view name) const {
    for (size_t i = 0; i < r_->header_count; ++i) {
      std::string_view n = View(r_->headers[i].name);
      if (n.size() != name.size()) continue;
      bool same = true;
      for (size_t k = 0; k < n.size() && same; ++k) {
        char a = n[k], b = name[k];
        if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z') b = static_cast<char>(b - 'A' + 'a');
        same = a == b;
      }
      if (same) return View(r_->headers[i].value);
    }
    return {};
  }
  // A query parameter, percent-decoded ('+' = space), "" if absent.
  std::string Param(std::string_view key) const {
    std::string_view q = query();
    while (!q.empty()) {
      size_t amp = q.find('&');
      std::string_view pair = q.substr(0, amp);
      q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
      size_t eq = pair.find('=');
      if (Decode(pair.substr(0, eq)) != key) continue;
      return eq == std::string_view::npos ? std::string() : Decode(pair.substr(eq + 1));
    }
    return {};
  }
  const orchard_http_request* raw() const { return r_; }

 private:
  static int Hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static std::string Decode(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '+') {
        out += ' ';
      } else if (s[i] == '%' && i + 2 < s.size() && Hex(s[i + 1]) >= 0 && Hex(s[i + 2]) >= 0) {
        out += static_cast<char>(Hex(s[i + 1]) * 16 + Hex(s[i + 2]));
        i += 2;
      } else {
        out += s[i];
      }
    }
    return out;
  }
  const orchard_http_request* r_;
};

// The answer of an on_http call (ABI 1.1).
class HttpResponse {
 public:
  HttpResponse(const orchard_host_api* api, orchard_http_response* r) : api_(api), r_(r) {}
  orchard_status Respond(int status, std::string_view content_type, std::string_view body) const {
    if (!ORCHARD_HOST_HAS(api_, http_respond)) return ORCHARD_ERR_UNSUPPORTED;
    return api_->http_respond(r_, status, Buf(content_type), Buf(body));
  }
  orchard_status Header(std::string_view name, std::string_view value) const {
    if (!ORCHARD_HOST_HAS(api_, http_header)) return ORCHARD_ERR_UNSUPPORTED;
    return api_->http_header(r_, Buf(name), Buf(value));
  }

 private:
  const orchard_host_api* api_;
  orchard_http_response* r_;
};

// Derive from this; one instance per loaded plugin (created at init).
class Plugin {
 public:
  virtual ~Plugin() = default;
  // The config section as a JSON object ("{}" if none). An error refuses the plugin.
  virtual orchard_status Init(std::string_view config_json) {
    (void)config_json;
    return ORCHARD_OK;
  }
  virtual orchard_status OnEvent(Run& run, const Event& event) = 0;
  virtual void Shutdown() {}
  // ABI 1.1 (ORCHARD_PLUGIN_DEFINE_1_1): requests to /plugins/<name>/...
  virtual orchard_status OnHttp(const HttpRequest& request, HttpResponse& response) {
    (void)request;
    (void)response;
    return ORCHARD_ERR_NOT_FOUND;
  }

  // ABI 1.1: the plugin's committed key-value namespace outside a run (its
  // HTTP handler and its own threads). ORCHARD_ERR_NOT_FOUND when absent.
  orchard_status KvRead(std::string_view key, std::string* value) const {
    if (!ORCHARD_HOST_HAS(api_, kv_read)) return ORCHARD_ERR_UNSUPPORTED;
    return api_->kv_read(
        self_, Buf(key),
        [](void* ctx, orchard_buf v) {
          try {
            if (ctx) static_cast<std::string*>(ctx)->assign(View(v));
          } catch (...) {
          }
        },
        value);
  }
  // Calls fn(key, value) for up to limit keys with prefix after `after`, in
  // byte order; fn returns false to stop. An exception in fn stops the scan
  // and is reported as ORCHARD_ERR_INTERNAL.
  template <class Fn>
  orchard_status KvScan(std::string_view prefix, std::string_view after, size_t limit, Fn&& fn) const {
    if (!ORCHARD_HOST_HAS(api_, kv_scan)) return ORCHARD_ERR_UNSUPPORTED;
    struct Ctx {
      Fn* fn;
      bool threw;
    } ctx{&fn, false};
    orchard_status st = api_->kv_scan(
        self_, Buf(prefix), Buf(after), limit,
        [](void* c, orchard_buf k, orchard_buf v) -> int {
          Ctx* x = static_cast<Ctx*>(c);
          try {
            return (*x->fn)(View(k), View(v)) ? 0 : 1;
          } catch (...) {
            x->threw = true;
            return 1;
          }
        },
        &ctx);
    return ctx.threw ? ORCHARD_ERR_INTERNAL : st;
  }
  // Atomic, durable writes outside a run (remove = true: delete the key).
  struct KvOp {
    std::string key;
    std::string value;
    bool remove = false;
  };
  orchard_status KvWrite(const std::vector<KvOp>& ops) const {
    if (!ORCHARD_HOST_HAS(api_, kv_write)) return ORCHARD_ERR_UNSUPPORTED;
    std::vector<orchard_kv_op> raw;
    raw.reserve(ops.size());
    for (const auto& o : ops) raw.push_back(orchard_kv_op{Buf(o.key), Buf(o.value), o.remove ? 1 : 0, 0});
    return api_->kv_write(self_, raw.data(), raw.size());
  }

  // Logs outside a run (Init, Shutdown).
  void Log(orchard_log_level level, std::string_view message) const {
    if (ORCHARD_HOST_HAS(api_, log)) api_->log(self_, level, Buf(message));
  }
  const orchard_host_api* api() const { return api_; }
  orchard_plugin_ref* self() const { return self_; }

 private:
  template <class P>
  friend struct Glue;
  const orchard_host_api* api_ = nullptr;
  orchard_plugin_ref* self_ = nullptr;
};

// The C hooks for plugin class P; every one catches everything.
template <class P>
struct Glue {
  static orchard_status Init(orchard_plugin_ref* self, const orchard_host_api* api, orchard_buf config,
                             void** state) noexcept {
    try {
      std::unique_ptr<P> p(new P());
      p->api_ = api;
      p->self_ = self;
      orchard_status st = p->Init(View(config));
      if (st != ORCHARD_OK) return st;
      *state = p.release();
      return ORCHARD_OK;
    } catch (const std::bad_alloc&) {
      return ORCHARD_ERR_INTERNAL;
    } catch (...) {
      return ORCHARD_ERR_INTERNAL;
    }
  }
  static orchard_status OnEvent(void* state, orchard_run* run, const orchard_event* event) noexcept {
    P* p = static_cast<P*>(state);
    if (p == nullptr) return ORCHARD_ERR_INTERNAL;
    Run r(p->api_, p->self_, run);
    try {
      Event ev(event);
      return p->OnEvent(r, ev);
    } catch (const std::exception& e) {
      try {
        r.SetError(std::string("exception: ") + e.what());
      } catch (...) {
      }
      return ORCHARD_ERR_INTERNAL;
    } catch (...) {
      r.SetError("exception of unknown type");
      return ORCHARD_ERR_INTERNAL;
    }
  }
  static orchard_status OnHttp(void* state, const orchard_http_request* request,
                               orchard_http_response* response) noexcept {
    P* p = static_cast<P*>(state);
    if (p == nullptr || request == nullptr) return ORCHARD_ERR_INTERNAL;
    try {
      HttpRequest req(request);
      HttpResponse resp(p->api_, response);
      return p->OnHttp(req, resp);
    } catch (...) {
      return ORCHARD_ERR_INTERNAL;
    }
  }
  static void Shutdown(void* state) noexcept {
    P* p = static_cast<P*>(state);
    try {
      if (p) p->Shutdown();
    } catch (...) {
    }
    try {
      delete p;
    } catch (...) {
    }
  }
};

}  // namespace orchard::plugin

// Defines the descriptor and the exported entry point for plugin class
// Class: name and version are string literals, lanes an int (0 = default),
// then the subscribed event types (at least one; "*" = all). Declares ABI
// 1.0, so the plugin also loads on 1.0 hosts (no OnHttp, no schedules).
#define ORCHARD_PLUGIN_DEFINE(Class, name, version, lanes, ...) \
  ORCHARD_PLUGIN_DESCRIPTOR_(Class, name, version, lanes, 0, nullptr, 0, nullptr, __VA_ARGS__)

// Same for a plugin using ABI 1.1: its OnHttp answers /plugins/<name>/...,
// and schedules (a const orchard_schedule array, or nullptr with count 0)
// are its timers. Needs a 1.1 host.
#define ORCHARD_PLUGIN_DEFINE_1_1(Class, name, version, lanes, schedules, schedule_count, ...)             \
  ORCHARD_PLUGIN_DESCRIPTOR_(Class, name, version, lanes, 1, schedules, schedule_count,                   \
                             &::orchard::plugin::Glue<Class>::OnHttp, __VA_ARGS__)

// The shared body of the two macros above (not for direct use).
#define ORCHARD_PLUGIN_DESCRIPTOR_(Class, name, version, lanes, minor, schedules, schedule_count, on_http, ...) \
  namespace {                                                                                           \
  const char* const orchard_plugin_types_[] = {__VA_ARGS__};                                            \
  const orchard_plugin_descriptor orchard_plugin_descriptor_ = {                                        \
      sizeof(orchard_plugin_descriptor),                                                                \
      ORCHARD_PLUGIN_ABI_MAJOR,                                                                         \
      minor,                                                                                            \
      name,                                                                                             \
      version,                                                                                          \
      orchard_plugin_types_,                                                                            \
      sizeof(orchard_plugin_types_) / sizeof(orchard_plugin_types_[0]),                                 \
      lanes,                                                                                            \
      0,                                                                                                \
      &::orchard::plugin::Glue<Class>::Init,                                                            \
      &::orchard::plugin::Glue<Class>::OnEvent,                                                         \
      &::orchard::plugin::Glue<Class>::Shutdown,                                                        \
      schedules,                                                                                        \
      schedule_count,                                                                                   \
      on_http};                                                                                         \
  }                                                                                                     \
  ORCHARD_PLUGIN_ENTRY_DEFINE_

#define ORCHARD_PLUGIN_ENTRY_DEFINE_                                                                    \
  extern "C" ORCHARD_PLUGIN_EXPORT orchard_status orchard_plugin_init(                                  \
      const orchard_host_api* api, const orchard_plugin_descriptor** out) {                             \
    if (api == nullptr || out == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;                          \
    *out = &orchard_plugin_descriptor_;                                                                 \
    return ORCHARD_OK;                                                                                  \
  }

#endif  // ORCHARD_PLUGIN_HPP
