/* A test plugin for the ABI 1.2 DDM host calls, in C99. On each
 * ddm.status.changed event it records what ddm_status and
 * ddm_declaration_status answer, checks that bad writes are refused at the
 * call, and when the device reports OS 26.0 declares an update with its
 * activation, adds both to a set and assigns the device (all in the run). */
#include <string.h>

#include "orchard/plugin.h"

static const orchard_host_api* g_api;

static orchard_buf S(const char* s) {
  orchard_buf b;
  b.ptr = s;
  b.len = strlen(s);
  return b;
}

static int eq(orchard_buf b, const char* s) { return b.len == strlen(s) && memcmp(b.ptr, s, b.len) == 0; }

static orchard_status on_event(void* state, orchard_run* run, const orchard_event* ev) {
  orchard_buf os, decl;
  orchard_buf none = {NULL, 0};
  orchard_status rc;
  (void)state;
  (void)ev;
  rc = g_api->ddm_status(run, none, S("device.operating-system.version"), &os);
  if (rc == ORCHARD_ERR_NOT_FOUND) os = S("none");
  else if (rc != ORCHARD_OK) return rc;
  if ((rc = g_api->kv_put(run, S("os"), os)) != ORCHARD_OK) return rc;
  rc = g_api->ddm_declaration_status(run, none, S("plug.update"), &decl);
  if (rc == ORCHARD_ERR_NOT_FOUND) decl = S("none");
  else if (rc != ORCHARD_OK) return rc;
  if ((rc = g_api->kv_put(run, S("decl"), decl)) != ORCHARD_OK) return rc;

  /* refused at the call: a Type outside com.apple.*, an Identifier with '/',
   * a bad set name, an empty enrollment id, an unknown op */
  if (g_api->ddm_write(run, ORCHARD_DDM_PUT_DECLARATION,
                       S("{\"Type\":\"org.example.x\",\"Identifier\":\"x\",\"Payload\":{}}"), none) ==
          ORCHARD_ERR_INVALID_ARGUMENT &&
      g_api->ddm_write(run, ORCHARD_DDM_TOUCH, S("a/b"), none) == ORCHARD_ERR_INVALID_ARGUMENT &&
      g_api->ddm_write(run, ORCHARD_DDM_SET_ADD, S("bad set"), S("x")) == ORCHARD_ERR_INVALID_ARGUMENT &&
      g_api->ddm_write(run, ORCHARD_DDM_ASSIGN, none, S("s")) == ORCHARD_ERR_INVALID_ARGUMENT &&
      g_api->ddm_write(run, (orchard_ddm_op)99, S("x"), S("y")) == ORCHARD_ERR_INVALID_ARGUMENT)
    g_api->kv_put(run, S("bad_writes"), S("refused"));

  if (eq(os, "\"26.0\"")) {
    if ((rc = g_api->ddm_write(run, ORCHARD_DDM_PUT_DECLARATION,
                               S("{\"Type\":\"com.apple.configuration.softwareupdate.enforcement.specific\","
                                 "\"Identifier\":\"plug.update\",\"Payload\":{\"TargetOSVersion\":\"26.1\","
                                 "\"TargetLocalDateTime\":\"2026-12-15T18:00:00\"}}"),
                               none)) != ORCHARD_OK)
      return rc;
    if ((rc = g_api->ddm_write(run, ORCHARD_DDM_PUT_DECLARATION,
                               S("{\"Type\":\"com.apple.activation.simple\",\"Identifier\":\"plug.activation\","
                                 "\"Payload\":{\"StandardConfigurations\":[\"plug.update\"]}}"),
                               none)) != ORCHARD_OK)
      return rc;
    if ((rc = g_api->ddm_write(run, ORCHARD_DDM_SET_ADD, S("plug.set"), S("plug.update"))) != ORCHARD_OK) return rc;
    if ((rc = g_api->ddm_write(run, ORCHARD_DDM_SET_ADD, S("plug.set"), S("plug.activation"))) != ORCHARD_OK)
      return rc;
    if ((rc = g_api->ddm_write(run, ORCHARD_DDM_ASSIGN, ev->enrollment_id, S("plug.set"))) != ORCHARD_OK) return rc;
  }
  return ORCHARD_OK;
}

static const char* const kTypes[] = {ORCHARD_EVENT_DDM_STATUS_CHANGED};

static const orchard_plugin_descriptor kDescriptor = {
    sizeof(orchard_plugin_descriptor),
    ORCHARD_PLUGIN_ABI_MAJOR,
    2, /* needs the ABI 1.2 host calls */
    "ddm",
    "1.0",
    kTypes,
    1,
    1,
    0,
    NULL,
    on_event,
    NULL,
    NULL,
    0,
    NULL,
};

ORCHARD_PLUGIN_EXPORT orchard_status orchard_plugin_init(const orchard_host_api* api,
                                                         const orchard_plugin_descriptor** out) {
  if (api == NULL || out == NULL) return ORCHARD_ERR_INVALID_ARGUMENT;
  if (!ORCHARD_HOST_HAS(api, ddm_declaration_status)) return ORCHARD_ERR_UNSUPPORTED;
  g_api = api;
  *out = &kDescriptor;
  return ORCHARD_OK;
}
