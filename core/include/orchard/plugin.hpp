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

  const orchard_host_api* api() const { return api_; }
  orchard_run* handle() const { return run_; }

 private:
  const orchard_host_api* api_;
  orchard_plugin_ref* self_;
  orchard_run* run_;
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
// then the subscribed event types (at least one; "*" = all).
#define ORCHARD_PLUGIN_DEFINE(Class, name, version, lanes, ...)                                         \
  namespace {                                                                                           \
  const char* const orchard_plugin_types_[] = {__VA_ARGS__};                                            \
  const orchard_plugin_descriptor orchard_plugin_descriptor_ = {                                        \
      sizeof(orchard_plugin_descriptor),                                                                \
      ORCHARD_PLUGIN_ABI_MAJOR,                                                                         \
      ORCHARD_PLUGIN_ABI_MINOR,                                                                         \
      name,                                                                                             \
      version,                                                                                          \
      orchard_plugin_types_,                                                                            \
      sizeof(orchard_plugin_types_) / sizeof(orchard_plugin_types_[0]),                                 \
      lanes,                                                                                            \
      0,                                                                                                \
      &::orchard::plugin::Glue<Class>::Init,                                                            \
      &::orchard::plugin::Glue<Class>::OnEvent,                                                         \
      &::orchard::plugin::Glue<Class>::Shutdown};                                                       \
  }                                                                                                     \
  extern "C" ORCHARD_PLUGIN_EXPORT orchard_status orchard_plugin_init(                                  \
      const orchard_host_api* api, const orchard_plugin_descriptor** out) {                             \
    if (api == nullptr || out == nullptr) return ORCHARD_ERR_INVALID_ARGUMENT;                          \
    *out = &orchard_plugin_descriptor_;                                                                 \
    return ORCHARD_OK;                                                                                  \
  }

#endif  // ORCHARD_PLUGIN_HPP
