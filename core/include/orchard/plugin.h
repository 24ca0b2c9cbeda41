/* Orchard's plugin ABI: the one header a plugin (a shared object loaded by
 * orchardd) needs. Pure C (C99 and C++), no dependencies but <orchard/events.h>
 * for event type names. docs/plugin-abi.md is the guide; this header is the
 * contract.
 *
 * Shape
 *   A plugin exports one symbol, ORCHARD_PLUGIN_ENTRY ("orchard_plugin_init"),
 *   of type orchard_plugin_entry_fn. The host calls it once after dlopen with
 *   its host-API table; the plugin answers with a pointer to its descriptor
 *   (plugin-owned, normally a static, valid until the plugin is unloaded).
 *   The descriptor names the plugin, the ABI version it was built for, the
 *   event types it subscribes to and its hooks: init (its config section as
 *   JSON), on_event (one durable event), shutdown. Every hook is optional
 *   (NULL = not implemented).
 *
 * Versions
 *   orchard_host_api and orchard_plugin_descriptor (and orchard_event) start
 *   with their size and ABI version (major, minor) and only ever grow at the
 *   end. The rule the host applies when loading:
 *     - same major: required; another major is refused;
 *     - plugin minor <= host minor: loads (an older plugin on a newer host);
 *     - plugin minor >  host minor: refused, the message naming the ABI
 *       minor(s) the host lacks.
 *   A plugin built against a newer header may still run on an older host of
 *   the same major if it declares the older minor and checks each newer host
 *   function with ORCHARD_HOST_HAS(api, field) before calling it.
 *
 * Ownership
 *   Names say who owns memory: a *_host_owned buffer belongs to the host and
 *   stays valid until the hook call it was produced in returns (copy what you
 *   keep); *_plugin_owned memory belongs to the plugin. Buffers are
 *   {ptr, len}, not NUL-terminated unless stated; strings are UTF-8. The host
 *   copies every buffer a plugin passes in before the call returns.
 *
 * Errors
 *   Every hook and host function returns an orchard_status; nothing may
 *   unwind (no C++ exception, no longjmp) across this interface.
 *
 * Threading
 *   init and shutdown run once each, on one host thread, never concurrently
 *   with anything else of the plugin. on_event runs on the plugin's lanes
 *   (descriptor.lanes, default 2): at most one call per lane at a time, calls
 *   on different lanes concurrently. Every event of one device goes to the same
 *   lane, in order. An orchard_run handle is valid only inside the on_event
 *   call it was passed to, on that thread. on_http (ABI 1.1) runs on an HTTP
 *   worker, concurrently with on_event. Between init's return and the start of
 *   shutdown, the plugin's own threads may call log, kv_read, kv_scan and
 *   kv_write. Host functions are thread-safe. */
#ifndef ORCHARD_PLUGIN_H
#define ORCHARD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "orchard/events.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes. */
#define ORCHARD_PLUGIN_ABI_MAJOR 1
#define ORCHARD_PLUGIN_ABI_MINOR 2

/* The exported entry symbol's name. */
#define ORCHARD_PLUGIN_ENTRY "orchard_plugin_init"

/* Export macro for the entry symbol (plugins are built with hidden visibility
 * or not; this makes the entry visible either way). */
#if defined(__GNUC__) || defined(__clang__)
#define ORCHARD_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define ORCHARD_PLUGIN_EXPORT
#endif

/* Result of every hook and host function. Values are stable; new ones are
 * only added. */
typedef enum orchard_status {
  ORCHARD_OK = 0,
  ORCHARD_ERR_INVALID_ARGUMENT = 1, /* malformed input (bad plist, unknown RequestType, bad key) */
  ORCHARD_ERR_NOT_FOUND = 2,        /* no such key, device or result */
  ORCHARD_ERR_LIMIT = 3,            /* a per-run limit was reached (commands, kv writes, sizes) */
  ORCHARD_ERR_HOST = 4,             /* the host's storage failed: worth retrying */
  ORCHARD_ERR_FAILED = 5,           /* the plugin's own failure */
  ORCHARD_ERR_UNSUPPORTED = 6,      /* not available in this context or version */
  ORCHARD_ERR_INTERNAL = 7          /* an unexpected failure (e.g. a caught exception) */
} orchard_status;

/* Log levels for orchard_host_api.log. */
typedef enum orchard_log_level {
  ORCHARD_LOG_DEBUG = 0,
  ORCHARD_LOG_INFO = 1,
  ORCHARD_LOG_WARN = 2,
  ORCHARD_LOG_ERROR = 3
} orchard_log_level;

/* Bytes: {ptr, len}. ptr may be NULL when len is 0. */
typedef struct orchard_buf {
  const char* ptr;
  size_t len;
} orchard_buf;

/* Opaque handles. */
typedef struct orchard_plugin_ref orchard_plugin_ref; /* this plugin, as the host knows it (host-owned) */
typedef struct orchard_run orchard_run;               /* one on_event call (host-owned, valid during it) */
typedef struct orchard_http_response orchard_http_response; /* the answer of one on_http call (ABI 1.1) */

/* ABI 1.1: callbacks of kv_read and kv_scan. The buffers are host-owned and
 * valid during the callback only. An entry callback returns 0 to go on,
 * anything else to stop the scan. */
typedef void (*orchard_value_fn)(void* ctx, orchard_buf value_host_owned);
typedef int (*orchard_entry_fn)(void* ctx, orchard_buf key_host_owned, orchard_buf value_host_owned);

/* ABI 1.1: one write of kv_write: a put of value, or a delete when remove is
 * non-zero (value ignored). */
typedef struct orchard_kv_op {
  orchard_buf key;
  orchard_buf value;
  int32_t remove;
  int32_t reserved;
} orchard_kv_op;

/* ABI 1.1: one request to the plugin's routes (/plugins/<name>/...), already
 * authenticated with the admin API key. Host-owned, valid during on_http. */
typedef struct orchard_http_header {
  orchard_buf name;
  orchard_buf value;
} orchard_http_header;

typedef struct orchard_http_request {
  uint32_t size; /* sizeof the host's orchard_http_request */
  uint32_t reserved;
  orchard_buf method; /* "GET", "POST", ... */
  orchard_buf path;   /* percent-decoded, after "/plugins/<name>": "/" or "/devices/abc" */
  orchard_buf query;  /* the query without '?' ("" if none): name=value pairs joined by '&', each
                         percent-encoded, in no particular order, a repeated name once */
  orchard_buf body;
  const orchard_http_header* headers; /* as received, header_count of them */
  size_t header_count;
} orchard_http_request;

/* ABI 1.1: a timer, declared in the descriptor. The host delivers it as a
 * schedule.tick event to on_event (whatever event_types says), at least
 * once per period: periods start at multiples of interval_ms (UTC); per_device
 * = one tick per enrolled device channel (enrollment_id set), spread over
 * splay_ms, else one tick per period. The tick's payload_json is
 * {"schedule": name, "period": <period start, Unix ms>}. */
typedef struct orchard_schedule {
  const char* name;    /* NUL-terminated; letters, digits, '_', '-', '.'; 1..64 bytes; unique */
  int64_t interval_ms; /* at least 60000 */
  int64_t splay_ms;    /* 0 .. interval_ms */
  int32_t per_device;
  int32_t reserved;
} orchard_schedule;

/* One event of Orchard's durable event stream (docs/events.md lists the
 * types and payloads). Host-owned; every buffer is valid until on_event
 * returns. Empty buffers (len 0) for fields the event does not have. */
typedef struct orchard_event {
  uint32_t size; /* sizeof the host's orchard_event; fields beyond it are absent */
  uint32_t reserved;
  uint64_t seq;          /* position in the stream */
  int64_t time_ms;       /* when it was written, Unix milliseconds */
  int32_t lane;          /* the lane this call runs on (0 .. lanes-1) */
  int32_t reserved2;
  orchard_buf type;          /* e.g. "command.acknowledged" (ORCHARD_EVENT_* in events.h) */
  orchard_buf cursor;        /* the position as text "<partition>.<seq>"; same on redelivery */
  orchard_buf enrollment_id; /* the device channel, when the event is about one */
  orchard_buf command_uuid;  /* command events */
  orchard_buf request_type;  /* command events */
  orchard_buf payload_json;  /* event-specific data as JSON (secrets removed) */
  orchard_buf raw_plist;     /* command events with a device report: that report as an
                                XML plist (the payload rendered back; secrets removed) */
} orchard_event;

/* ABI 1.2: the Declarative Device Management writes of ddm_write
 * (docs/ddm.md). The values are fixed; new ones are only added. */
typedef enum orchard_ddm_op {
  ORCHARD_DDM_PUT_DECLARATION = 0,    /* a = the declaration JSON {Type, Identifier, Payload} */
  ORCHARD_DDM_DELETE_DECLARATION = 1, /* a = Identifier */
  ORCHARD_DDM_TOUCH = 2,              /* a = Identifier: a new revision (new ServerToken) */
  ORCHARD_DDM_SET_ADD = 3,            /* a = set, b = Identifier */
  ORCHARD_DDM_SET_REMOVE = 4,         /* a = set, b = Identifier */
  ORCHARD_DDM_ASSIGN = 5,             /* a = enrollment id, b = set */
  ORCHARD_DDM_UNASSIGN = 6            /* a = enrollment id, b = set */
} orchard_ddm_op;

/* Flags for the enqueue functions. */
#define ORCHARD_ENQUEUE_NO_PUSH 0x1u   /* queue without waking the device */
#define ORCHARD_ENQUEUE_UNCHECKED 0x2u /* skip the RequestType schema (newer than Orchard's); shape still checked */

/* Host functions, handed to the plugin's entry point. Host-owned, valid
 * until the plugin is unloaded. Functions taking an orchard_run* may only be
 * called inside on_event with the run it was given; their writes (commands,
 * pushes, kv) are decisions the host commits together with the plugin's
 * checkpoint after on_event returns ORCHARD_OK, and drops if it fails. */
typedef struct orchard_host_api {
  uint32_t size; /* sizeof the host's table: use ORCHARD_HOST_HAS before calling a field */
  uint16_t abi_major;
  uint16_t abi_minor;

  /* ABI 1.0 */

  /* Logs a line through Orchard's logger, tagged with the plugin's name. */
  void (*log)(orchard_plugin_ref* self, orchard_log_level level, orchard_buf message);

  /* Queues a command for enrollment_id (empty: the event's device) built from
   * request_type and fields_json (a JSON object of the request keys; the plist
   * JSON mapping: {"$data": base64} for data, {"$date": text} for dates;
   * empty = no keys). Checked against Apple's schema unless
   * ORCHARD_ENQUEUE_UNCHECKED. The CommandUUID is assigned by the host,
   * derived from (plugin, event, index), so a redelivered event queues the same
   * command, not a second one; it is written to *command_uuid_host_owned
   * (may be NULL). priority 0..255. */
  orchard_status (*enqueue)(orchard_run* run, orchard_buf enrollment_id, orchard_buf request_type,
                            orchard_buf fields_json, int32_t priority, uint32_t flags,
                            orchard_buf* command_uuid_host_owned);

  /* Same, from a raw plist (an XML plist): either the Command dict itself
   * (RequestType and request keys) or a full command {Command: {...}} whose
   * CommandUUID, if any, is replaced by the derived one. */
  orchard_status (*enqueue_plist)(orchard_run* run, orchard_buf enrollment_id, orchard_buf command_plist,
                                  int32_t priority, uint32_t flags, orchard_buf* command_uuid_host_owned);

  /* Wakes a device (APNs push) without queueing a command. */
  orchard_status (*push)(orchard_run* run, orchard_buf enrollment_id);

  /* The plugin's own key-value namespace (kept in Orchard's database).
   * Keys 1..512 bytes, values up to 64 KiB (any bytes). A get sees the
   * run's own earlier puts. ORCHARD_ERR_NOT_FOUND when absent. */
  orchard_status (*kv_get)(orchard_run* run, orchard_buf key, orchard_buf* value_host_owned);
  orchard_status (*kv_put)(orchard_run* run, orchard_buf key, orchard_buf value);
  orchard_status (*kv_delete)(orchard_run* run, orchard_buf key);

  /* A device's enrollment record as a JSON object (id, type, udid,
   * serial_number, model, os_version, state, blocked, last_seen_at, ...; no
   * secrets). enrollment_id empty: the event's device. */
  orchard_status (*device)(orchard_run* run, orchard_buf enrollment_id, orchard_buf* json_host_owned);

  /* The newest stored result of a command of request_type for a device, as a
   * JSON object {command_uuid, request_type, status, received_at, enqueued_at,
   * origin, error_chain?, response?}; *raw_plist_host_owned (may be NULL) gets
   * the device's report as stored (the XML plist it sent). */
  orchard_status (*last_result)(orchard_run* run, orchard_buf enrollment_id, orchard_buf request_type,
                                orchard_buf* json_host_owned, orchard_buf* raw_plist_host_owned);

  /* Attaches a message to the run's failure: shown as the consumer's last
   * error and in the parked event when on_event returns an error. */
  void (*set_error)(orchard_run* run, orchard_buf message);

  /* ABI 1.1 */

  /* The plugin's namespace outside a run (its HTTP handler, its own
   * threads): committed values only (a run's writes are visible once the run
   * is committed). kv_read calls fn once with the value; ORCHARD_ERR_NOT_FOUND
   * when absent. */
  orchard_status (*kv_read)(orchard_plugin_ref* self, orchard_buf key, orchard_value_fn fn, void* ctx);
  /* Keys starting with prefix and greater than after (empty = from the
   * first), in byte order, at most limit (1..10000) calls of fn. */
  orchard_status (*kv_scan)(orchard_plugin_ref* self, orchard_buf prefix, orchard_buf after, size_t limit,
                            orchard_entry_fn fn, void* ctx);
  /* Writes count (1..10000) keys outside a run, atomically; durable when it
   * returns ORCHARD_OK. Not tied to any event: for state the plugin's own
   * threads keep (e.g. removing an outbox entry once delivered). Same key and
   * value limits as kv_put, at most 16 MiB in all (ORCHARD_ERR_LIMIT). Inside
   * on_event use kv_put: kv_write there is not part of the run (it is written
   * even if the run fails, and a run's own kv_get does not see it). */
  orchard_status (*kv_write)(orchard_plugin_ref* self, const orchard_kv_op* ops, size_t count);

  /* The answer of an on_http call (only inside it, with the response it was
   * given): status 100..599; content_type and body are copied; a later call
   * replaces an earlier one. Headers are added with http_header (names are
   * tokens, values without CR, LF or NUL; at most 32). */
  orchard_status (*http_respond)(orchard_http_response* response, int32_t status, orchard_buf content_type,
                                 orchard_buf body);
  orchard_status (*http_header)(orchard_http_response* response, orchard_buf name, orchard_buf value);

  /* ABI 1.2 */

  /* A Declarative Device Management write (orchard_ddm_op), a decision like
   * enqueue: the run's writes apply in call order when it commits, each
   * seeing the ones before, together with the DeclarationsTokens they change
   * and the DeclarativeManagement sync commands (then pushes) those need, in
   * the plugin's transaction. Declarations are owned by "plugin:<name>".
   * Checked at the call like the admin API checks them:
   * ORCHARD_ERR_INVALID_ARGUMENT (the reason via the run's error) for a bad
   * declaration, Identifier (1..64 printable bytes, no '/'), set name (1..64
   * letters, digits, '.', '_', '-') or enrollment id; ORCHARD_ERR_LIMIT beyond
   * 1000 writes per run. A write that is well-formed but cannot apply at the
   * commit (set_add of a missing declaration) is skipped and shown refused in
   * the decision record; the run's other decisions stand. b is ignored by the
   * one-argument ops. */
  orchard_status (*ddm_write)(orchard_run* run, orchard_ddm_op op, orchard_buf a, orchard_buf b);

  /* The latest value a channel reported for a DDM status item (dotted name,
   * e.g. "device.operating-system.version") as JSON (a string, number, bool,
   * array or object); ORCHARD_ERR_NOT_FOUND when never reported. enrollment_id
   * empty: the event's device. Committed state (not this run's writes). */
  orchard_status (*ddm_status)(orchard_run* run, orchard_buf enrollment_id, orchard_buf item,
                               orchard_buf* json_host_owned);
  /* A declaration's reported status as a JSON object {identifier, kind,
   * server_token, active, valid, current, reasons: [{code, description}]};
   * ORCHARD_ERR_NOT_FOUND when the channel never reported it. */
  orchard_status (*ddm_declaration_status)(orchard_run* run, orchard_buf enrollment_id, orchard_buf identifier,
                                           orchard_buf* json_host_owned);

  /* New functions are added here, at the end, with a new minor. */
} orchard_host_api;

/* Whether the host's table has field f (so a plugin built against a newer
 * header can feature-test an older host of the same major). */
#define ORCHARD_HOST_HAS(api, f) \
  ((api) != NULL && (api)->size >= offsetof(orchard_host_api, f) + sizeof((api)->f) && (api)->f != NULL)

/* The plugin's self-description. Plugin-owned (normally static const), read
 * by the host right after the entry point returns and kept until unload. */
typedef struct orchard_plugin_descriptor {
  uint32_t size; /* sizeof(orchard_plugin_descriptor) as the plugin was built */
  uint16_t abi_major; /* ORCHARD_PLUGIN_ABI_MAJOR of the header built against */
  uint16_t abi_minor; /* the lowest minor whose host functions the plugin needs */

  /* ABI 1.0 */
  const char* name;    /* NUL-terminated; letters, digits, '_', '-'; 1..64 bytes */
  const char* version; /* NUL-terminated, free text (e.g. "1.2.0") */

  /* Event types delivered to on_event (ORCHARD_EVENT_* names; "*" = every
   * type; note device.idle is high volume). */
  const char* const* event_types;
  size_t event_type_count;

  int32_t lanes; /* parallel on_event lanes, 1..16; 0 = host default (2) */
  int32_t reserved;

  /* Called once after loading with the plugin's config section (a JSON
   * object, "{}" if none). *state_plugin_owned is handed back to every hook.
   * An error refuses the plugin. */
  orchard_status (*init)(orchard_plugin_ref* self, const orchard_host_api* api, orchard_buf config_json,
                         void** state_plugin_owned);

  /* Called for each subscribed event, at least once (after a crash or a
   * failed run an event is delivered again; the derived CommandUUIDs make a
   * repeated enqueue harmless). ORCHARD_OK commits the run's decisions; an
   * error drops them and the event is retried, then parked after the host's
   * automation.max_attempts; ORCHARD_ERR_HOST is retried with backoff without
   * counting as an attempt. */
  orchard_status (*on_event)(void* state, orchard_run* run, const orchard_event* event);

  /* Called once before unloading, after the last on_event returned. */
  void (*shutdown)(void* state);

  /* ABI 1.1 (read only when abi_minor >= 1) */

  /* Timers (see orchard_schedule); schedule_count 0..16. */
  const orchard_schedule* schedules;
  size_t schedule_count;

  /* Answers requests to /plugins/<name>/... on the admin API (same key as
   * the rest). Runs on an HTTP worker: answer from the plugin's state (kv_read,
   * kv_scan, memory), never wait on the network. At most one call per plugin
   * at a time (a request meanwhile gets 503 and Retry-After); never
   * concurrently with init or shutdown, but concurrently with on_event.
   * Answer with http_respond; ORCHARD_OK without it = 204.
   * ORCHARD_ERR_NOT_FOUND = 404, ORCHARD_ERR_INVALID_ARGUMENT = 400, any
   * other error = 500, unless http_respond was called (its answer is sent).
   * The body may not exceed the admin API's response limit
   * (api.max_response_bytes; 500 beyond it). NULL: the plugin has no routes
   * (404). */
  orchard_status (*on_http)(void* state, const orchard_http_request* request, orchard_http_response* response);

  /* New fields are added here, at the end, with a new minor. */
} orchard_plugin_descriptor;

/* The entry point: called once, after dlopen. Returns ORCHARD_OK and sets
 * *descriptor_plugin_owned, or an error (the plugin is refused). */
typedef orchard_status (*orchard_plugin_entry_fn)(const orchard_host_api* api,
                                                  const orchard_plugin_descriptor** descriptor_plugin_owned);

/* Declare it in the plugin as:
 *   ORCHARD_PLUGIN_EXPORT orchard_status orchard_plugin_init(
 *       const orchard_host_api* api, const orchard_plugin_descriptor** out); */
ORCHARD_PLUGIN_EXPORT orchard_status orchard_plugin_init(const orchard_host_api* api,
                                                         const orchard_plugin_descriptor** descriptor_plugin_owned);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ORCHARD_PLUGIN_H */
