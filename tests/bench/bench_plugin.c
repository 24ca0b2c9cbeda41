/* The plugin of bench_automation's "plugin" handler: the "native" consumer's
 * work through the C ABI. For each acknowledged DeviceInformation it writes one
 * key (so each delivery is observable as a committed decision, as for
 * native); everything else it ignores. */
#include <stdlib.h>
#include <string.h>

#include "orchard/plugin.h"

typedef struct bench_state {
  const orchard_host_api* api;
} bench_state;

static orchard_status bench_init(orchard_plugin_ref* self, const orchard_host_api* api, orchard_buf config,
                                 void** out) {
  bench_state* st = (bench_state*)calloc(1, sizeof(bench_state));
  (void)self;
  (void)config;
  if (st == NULL) return ORCHARD_ERR_INTERNAL;
  st->api = api;
  *out = st;
  return ORCHARD_OK;
}

static orchard_status bench_on_event(void* p, orchard_run* run, const orchard_event* ev) {
  const bench_state* st = (const bench_state*)p;
  char key[600];
  orchard_buf k;
  if (ev->request_type.len != 17 || memcmp(ev->request_type.ptr, "DeviceInformation", 17) != 0) return ORCHARD_OK;
  if (ev->enrollment_id.len > 500) return ORCHARD_ERR_INVALID_ARGUMENT;
  memcpy(key, "seen/", 5);
  memcpy(key + 5, ev->enrollment_id.ptr, ev->enrollment_id.len);
  k.ptr = key;
  k.len = 5 + ev->enrollment_id.len;
  return st->api->kv_put(run, k, ev->command_uuid);
}

static void bench_shutdown(void* p) { free(p); }

static const char* const kTypes[] = {ORCHARD_EVENT_COMMAND_ACKNOWLEDGED};

static const orchard_plugin_descriptor kDescriptor = {
    sizeof(orchard_plugin_descriptor), ORCHARD_PLUGIN_ABI_MAJOR, 0, "bench", "1", kTypes, 1, 0, 0,
    bench_init, bench_on_event, bench_shutdown, NULL, 0, NULL};

ORCHARD_PLUGIN_EXPORT orchard_status orchard_plugin_init(const orchard_host_api* api,
                                                         const orchard_plugin_descriptor** out) {
  if (api == NULL || out == NULL) return ORCHARD_ERR_INVALID_ARGUMENT;
  *out = &kDescriptor;
  return ORCHARD_OK;
}
