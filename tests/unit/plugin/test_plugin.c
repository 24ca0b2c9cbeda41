/* The test plugin, in C99 (so the header is proven to be C): one source,
 * variants selected by compile definitions:
 *   TP_NAME        descriptor name (string literal)
 *   TP_MAJOR/MINOR declared ABI version (default: this header's)
 *   TP_NO_ENTRY    exports no entry symbol
 *   TP_FAIL        on_event always fails with ORCHARD_ERR_FAILED and a message
 *   TP_HOST_LIE    on_event returns ORCHARD_ERR_HOST though no host call failed
 *   TP_BAD_SCHEDULE a schedule every second (refused: under a minute)
 *   TP_ABI_10      declares ABI 1.0 with a 1.0-sized descriptor (no 1.1 fields)
 * The default variant calls every host function and records what it saw in
 * its key-value namespace, for the test to read back; it declares ABI 1.1
 * with a schedule and routes (on_http) that exercise kv_read, kv_scan,
 * kv_write, http_respond and http_header. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "orchard/plugin.h"

#ifndef TP_NAME
#define TP_NAME "full"
#endif
#ifndef TP_MAJOR
#define TP_MAJOR ORCHARD_PLUGIN_ABI_MAJOR
#endif
#ifndef TP_MINOR
#if defined(TP_ABI_10) || defined(TP_FAIL) || defined(TP_HOST_LIE)
#define TP_MINOR 0
#else
#define TP_MINOR 1
#endif
#endif

typedef struct state {
  const orchard_host_api* api;
  orchard_plugin_ref* self;
  char config[1024];
  size_t config_len;
} state;

static orchard_buf S(const char* s) {
  orchard_buf b;
  b.ptr = s;
  b.len = strlen(s);
  return b;
}

static orchard_buf B(const char* p, size_t n) {
  orchard_buf b;
  b.ptr = p;
  b.len = n;
  return b;
}

static orchard_status tp_init(orchard_plugin_ref* self, const orchard_host_api* api, orchard_buf config,
                              void** out) {
  state* st = (state*)calloc(1, sizeof(state));
  if (st == NULL) return ORCHARD_ERR_INTERNAL;
  st->api = api;
  st->self = self;
  st->config_len = config.len < sizeof(st->config) ? config.len : sizeof(st->config);
  memcpy(st->config, config.ptr, st->config_len);
  if (st->config_len >= 9 && memcmp(st->config, "{\"fail\":1", 9) == 0) {
    free(st);
    return ORCHARD_ERR_FAILED; /* a config that init refuses */
  }
  {
    char line[1100];
    int n = snprintf(line, sizeof line, "config: %.*s", (int)st->config_len, st->config);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof line) n = (int)(sizeof line - 1);
    api->log(self, ORCHARD_LOG_INFO, B(line, (size_t)n));
  }
  *out = st;
  return ORCHARD_OK;
}

static void tp_shutdown(void* p) { free(p); }

#if defined(TP_FAIL) || defined(TP_HOST_LIE)
static orchard_status tp_on_event(void* p, orchard_run* run, const orchard_event* ev) {
  state* st = (state*)p;
  (void)ev;
  st->api->kv_put(run, S("never"), S("committed"));
  st->api->set_error(run, S("deliberate failure"));
#ifdef TP_HOST_LIE
  return ORCHARD_ERR_HOST;
#else
  return ORCHARD_ERR_FAILED;
#endif
}
#else
static orchard_status tp_on_event(void* p, orchard_run* run, const orchard_event* ev) {
  state* st = (state*)p;
  const orchard_host_api* api = st->api;
  orchard_buf v, raw, uuid;
  orchard_status rc;
  char num[32];
  long count = 0;

  api->log(st->self, ORCHARD_LOG_INFO, ev->type);
  if (ev->type.len == strlen(ORCHARD_EVENT_SCHEDULE_TICK) &&
      memcmp(ev->type.ptr, ORCHARD_EVENT_SCHEDULE_TICK, ev->type.len) == 0)
    return api->kv_put(run, S("tick"), ev->payload_json);
  /* counter: get (absent at first), put */
  rc = api->kv_get(run, S("count"), &v);
  if (rc == ORCHARD_OK && v.len < sizeof(num)) {
    memcpy(num, v.ptr, v.len);
    num[v.len] = 0;
    count = strtol(num, NULL, 10);
  } else if (rc != ORCHARD_ERR_NOT_FOUND) {
    return rc;
  }
  snprintf(num, sizeof num, "%ld", count + 1);
  if ((rc = api->kv_put(run, S("count"), S(num))) != ORCHARD_OK) return rc;
  /* a get sees this run's own put */
  if (api->kv_get(run, S("count"), &v) != ORCHARD_OK || v.len != strlen(num)) return ORCHARD_ERR_FAILED;
  api->kv_put(run, S("cursor"), ev->cursor);
  api->kv_put(run, S("type"), ev->type);
  api->kv_put(run, S("config"), B(st->config, st->config_len));
  api->kv_put(run, S("tmp"), S("x"));
  api->kv_delete(run, S("tmp"));
  if (api->kv_get(run, S("tmp"), &v) != ORCHARD_ERR_NOT_FOUND) return ORCHARD_ERR_FAILED;
  if (api->kv_put(run, S(""), S("x")) != ORCHARD_ERR_INVALID_ARGUMENT) return ORCHARD_ERR_FAILED;

  rc = api->device(run, B(NULL, 0), &v);
  if (rc == ORCHARD_OK) api->kv_put(run, S("device"), v);
  else if (rc == ORCHARD_ERR_NOT_FOUND) api->kv_put(run, S("device"), S("none"));
  else return rc;

  rc = api->last_result(run, B(NULL, 0), S("DeviceInformation"), &v, &raw);
  if (rc == ORCHARD_OK) {
    api->kv_put(run, S("last_result"), v);
    api->kv_put(run, S("last_result_raw"), raw);
  } else if (rc == ORCHARD_ERR_NOT_FOUND) {
    api->kv_put(run, S("last_result"), S("none"));
  } else {
    return rc;
  }

  if (ev->raw_plist.len > 0) api->kv_put(run, S("raw_plist"), ev->raw_plist);
  if (ev->payload_json.len > 0) api->kv_put(run, S("payload"), ev->payload_json);

  if (ev->type.len == strlen(ORCHARD_EVENT_ENROLLMENT_ENROLLED) &&
      memcmp(ev->type.ptr, ORCHARD_EVENT_ENROLLMENT_ENROLLED, ev->type.len) == 0) {
    rc = api->enqueue(run, B(NULL, 0), S("DeviceInformation"), S("{\"Queries\":[\"SerialNumber\"]}"), 5, 0, &uuid);
    if (rc != ORCHARD_OK) return rc;
    api->kv_put(run, S("uuid1"), uuid);
    rc = api->enqueue_plist(run, B(NULL, 0),
                            S("<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>RequestType</key>"
                              "<string>SecurityInfo</string></dict></plist>"),
                            0, ORCHARD_ENQUEUE_NO_PUSH, &uuid);
    if (rc != ORCHARD_OK) return rc;
    api->kv_put(run, S("uuid2"), uuid);
    /* refused: an unknown request key, a RequestType Apple does not have, a bad plist */
    if (api->enqueue(run, B(NULL, 0), S("DeviceInformation"), S("{\"Querys\":[]}"), 0, 0, NULL) ==
            ORCHARD_ERR_INVALID_ARGUMENT &&
        api->enqueue(run, B(NULL, 0), S("NoSuchRequest"), B(NULL, 0), 0, 0, NULL) == ORCHARD_ERR_INVALID_ARGUMENT &&
        api->enqueue_plist(run, B(NULL, 0), S("<plist><dict>"), 0, 0, NULL) == ORCHARD_ERR_INVALID_ARGUMENT)
      api->kv_put(run, S("bad_enqueue"), S("refused"));
    if ((rc = api->push(run, B(NULL, 0))) != ORCHARD_OK) return rc;
  }
  return ORCHARD_OK;
}
#endif

#if !defined(TP_FAIL) && !defined(TP_HOST_LIE) && !defined(TP_ABI_10)
/* ---- ABI 1.1: routes ---- */
static int eq(orchard_buf b, const char* s) { return b.len == strlen(s) && memcmp(b.ptr, s, b.len) == 0; }
static int starts(orchard_buf b, const char* s) { return b.len >= strlen(s) && memcmp(b.ptr, s, strlen(s)) == 0; }

typedef struct text {
  char data[4096];
  size_t len;
  int calls;
} text;

static void on_value(void* ctx, orchard_buf v) {
  text* t = (text*)ctx;
  t->len = v.len < sizeof t->data ? v.len : sizeof t->data;
  memcpy(t->data, v.ptr, t->len);
  t->calls++;
}

static int on_entry(void* ctx, orchard_buf k, orchard_buf v) {
  text* t = (text*)ctx;
  (void)v;
  if (t->len + k.len + 1 > sizeof t->data) return 1;
  memcpy(t->data + t->len, k.ptr, k.len);
  t->len += k.len;
  t->data[t->len++] = '\n';
  t->calls++;
  return t->calls >= 2; /* stops after two keys: the callback can end a scan */
}

static orchard_status tp_on_http(void* p, const orchard_http_request* req, orchard_http_response* resp) {
  state* st = (state*)p;
  const orchard_host_api* api = st->api;
  text t;
  orchard_status rc;
  memset(&t, 0, sizeof t);
  if (eq(req->path, "/fail")) return ORCHARD_ERR_FAILED;
  if (eq(req->path, "/bad")) return ORCHARD_ERR_INVALID_ARGUMENT;
  if (eq(req->path, "/empty")) return ORCHARD_OK;
  if (eq(req->path, "/auth")) { /* the admin credentials must not reach the plugin */
    size_t i;
    for (i = 0; i < req->header_count; ++i) {
      orchard_buf n = req->headers[i].name;
      if ((n.len == 13 && strncasecmp(n.ptr, "authorization", 13) == 0) ||
          (n.len == 9 && strncasecmp(n.ptr, "x-api-key", 9) == 0))
        return api->http_respond(resp, 200, S("text/plain"), S("credentials seen"));
    }
    return api->http_respond(resp, 200, S("text/plain"), S("no credentials"));
  }
  if (starts(req->path, "/kv/")) { /* GET /kv/<key>: the committed value */
    orchard_buf key = B(req->path.ptr + 4, req->path.len - 4);
    rc = api->kv_read(st->self, key, on_value, &t);
    if (rc != ORCHARD_OK) return rc;
    return api->http_respond(resp, 200, S("application/octet-stream"), B(t.data, t.len));
  }
  if (eq(req->path, "/scan")) { /* the first two keys after "a" with prefix "w" */
    rc = api->kv_scan(st->self, S("w"), S("w0"), 100, on_entry, &t);
    if (rc != ORCHARD_OK) return rc;
    return api->http_respond(resp, 200, S("text/plain"), B(t.data, t.len));
  }
  if (eq(req->path, "/write") && eq(req->method, "POST")) {
    orchard_kv_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].key = S("w1");
    ops[0].value = req->body;
    ops[1].key = S("w2");
    ops[1].value = S("two");
    ops[2].key = S("w3");
    ops[2].remove = 1;
    if ((rc = api->kv_write(st->self, ops, 3)) != ORCHARD_OK) return rc;
    /* refused: an empty key, no ops */
    ops[0].key = S("");
    if (api->kv_write(st->self, ops, 1) != ORCHARD_ERR_INVALID_ARGUMENT) return ORCHARD_ERR_FAILED;
    if (api->kv_write(st->self, ops, 0) != ORCHARD_ERR_INVALID_ARGUMENT) return ORCHARD_ERR_FAILED;
    return api->http_respond(resp, 201, S("text/plain"), S("written"));
  }
  if (eq(req->path, "/headers")) {
    /* framing headers and CR/LF are refused; a plain one is sent */
    if (api->http_header(resp, S("Content-Length"), S("5")) != ORCHARD_ERR_INVALID_ARGUMENT ||
        api->http_header(resp, S("X-Evil"), S("a\r\nSet-Cookie: x")) != ORCHARD_ERR_INVALID_ARGUMENT ||
        api->http_header(resp, S("Bad Name"), S("x")) != ORCHARD_ERR_INVALID_ARGUMENT ||
        api->http_respond(resp, 700, S("text/plain"), S("x")) != ORCHARD_ERR_INVALID_ARGUMENT)
      return ORCHARD_ERR_FAILED;
    if ((rc = api->http_header(resp, S("X-Tp"), S("yes"))) != ORCHARD_OK) return rc;
    return api->http_respond(resp, 200, S("text/plain"), req->query);
  }
  if (eq(req->path, "/big")) { /* 5000 bytes: over the limit the test sets */
    static char big[5000];
    memset(big, 'b', sizeof big);
    rc = api->http_respond(resp, 200, S("text/plain"), B(big, sizeof big));
    return rc == ORCHARD_ERR_LIMIT ? ORCHARD_OK : ORCHARD_ERR_FAILED;
  }
  if (eq(req->path, "/block")) {
    /* holds the call until the test writes "release" (at most ~10 s) */
    orchard_kv_op op;
    long spins;
    memset(&op, 0, sizeof op);
    op.key = S("entered");
    op.value = S("1");
    if ((rc = api->kv_write(st->self, &op, 1)) != ORCHARD_OK) return rc;
    for (spins = 0; spins < 10000000L; ++spins) {
      if (api->kv_read(st->self, S("release"), on_value, &t) == ORCHARD_OK) break;
    }
    return api->http_respond(resp, 200, S("text/plain"), S("released"));
  }
  return ORCHARD_ERR_NOT_FOUND;
}

#ifdef TP_BAD_SCHEDULE
static const orchard_schedule kSchedules[] = {{"too-often", 1000, 0, 0, 0}};
#else
static const orchard_schedule kSchedules[] = {{"hourly", 3600000, 60000, 0, 0}};
#endif
#endif

static const char* const kTypes[] = {ORCHARD_EVENT_ENROLLMENT_ENROLLED, ORCHARD_EVENT_COMMAND_ACKNOWLEDGED};

static const orchard_plugin_descriptor kDescriptor = {
#ifdef TP_ABI_10
    offsetof(orchard_plugin_descriptor, schedules), /* as a plugin built against the 1.0 header */
#else
    sizeof(orchard_plugin_descriptor),
#endif
    TP_MAJOR,
    TP_MINOR,
    TP_NAME,
    "1.2.3",
    kTypes,
    2,
    0,
    0,
    tp_init,
    tp_on_event,
    tp_shutdown,
#if !defined(TP_FAIL) && !defined(TP_HOST_LIE) && !defined(TP_ABI_10)
    kSchedules,
    1,
    tp_on_http,
#else
    NULL,
    0,
    NULL,
#endif
};

#ifdef TP_NO_ENTRY
ORCHARD_PLUGIN_EXPORT orchard_status orchard_plugin_start(const orchard_host_api* api,
                                                          const orchard_plugin_descriptor** out) {
#else
ORCHARD_PLUGIN_EXPORT orchard_status orchard_plugin_init(const orchard_host_api* api,
                                                         const orchard_plugin_descriptor** out) {
#endif
  if (api == NULL || out == NULL) return ORCHARD_ERR_INVALID_ARGUMENT;
  if (api->abi_major != ORCHARD_PLUGIN_ABI_MAJOR) return ORCHARD_ERR_UNSUPPORTED;
  if (!ORCHARD_HOST_HAS(api, set_error)) return ORCHARD_ERR_UNSUPPORTED;
  *out = &kDescriptor;
  return ORCHARD_OK;
}
