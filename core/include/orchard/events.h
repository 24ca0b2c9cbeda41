/* Orchard's event catalogue: the type name of every event the server writes
 * to its durable event stream. Policies (Lua), plugins (C ABI) and the admin
 * API see these names; docs/events.md describes each one's fields and payload.
 *
 * Pure C, no dependencies: plugins include it as <orchard/events.h>.
 * Names are stable; new ones are only ever added. */
#ifndef ORCHARD_EVENTS_H
#define ORCHARD_EVENTS_H

/* Enrollment lifecycle (enrollment_id: the channel). */
#define ORCHARD_EVENT_ENROLLMENT_AUTHENTICATED "enrollment.authenticated" /* every Authenticate */
#define ORCHARD_EVENT_ENROLLMENT_ENROLLED "enrollment.enrolled"           /* first TokenUpdate of an enrollment only */
#define ORCHARD_EVENT_ENROLLMENT_TOKEN_UPDATED "enrollment.token_updated" /* every TokenUpdate */
#define ORCHARD_EVENT_ENROLLMENT_CHECKED_OUT "enrollment.checked_out"
#define ORCHARD_EVENT_ENROLLMENT_BLOCKED "enrollment.blocked"
#define ORCHARD_EVENT_ENROLLMENT_UNBLOCKED "enrollment.unblocked"
#define ORCHARD_EVENT_BOOTSTRAP_TOKEN_SET "enrollment.bootstrap_token_set"
/* An enrolled device Authenticated with another certificate: payload decision
 * (allowed / pending_approval / refused), reason, both certificate fingerprints. */
#define ORCHARD_EVENT_ENROLLMENT_REENROLL "enrollment.reenroll"

/* Commands (command_uuid, request_type set). */
#define ORCHARD_EVENT_COMMAND_ENQUEUED "command.enqueued"
#define ORCHARD_EVENT_COMMAND_DELETED "command.deleted" /* removed by an admin */
#define ORCHARD_EVENT_COMMAND_ACKNOWLEDGED "command.acknowledged"
#define ORCHARD_EVENT_COMMAND_ERROR "command.error"
#define ORCHARD_EVENT_COMMAND_FORMAT_ERROR "command.format_error"
#define ORCHARD_EVENT_COMMAND_NOT_NOW "command.not_now"
#define ORCHARD_EVENT_COMMAND_FAILED "command.failed" /* delivered too often without a report */
#define ORCHARD_EVENT_QUEUE_CLEARED "queue.cleared"   /* admin clear or re-Authenticate */

/* Device presence. */
#define ORCHARD_EVENT_DEVICE_IDLE "device.idle"     /* every Idle report: high volume */
#define ORCHARD_EVENT_DEVICE_SILENT "device.silent" /* no contact for device.silent_days */

/* Certificates. */
#define ORCHARD_EVENT_CERTIFICATE_EXPIRING "certificate.expiring" /* identity, push or device-reported */

/* Push (APNs). */
#define ORCHARD_EVENT_PUSH_UNREGISTERED "push.unregistered"
#define ORCHARD_EVENT_PUSH_REJECTED "push.rejected"
#define ORCHARD_EVENT_PUSH_CERTIFICATE_ERROR "push.certificate_error"
#define ORCHARD_EVENT_PUSH_CERTIFICATE_EXPIRING "push.certificate_expiring"

/* Automation. */
#define ORCHARD_EVENT_SCHEDULE_TICK "schedule.tick" /* request_type: "<consumer>/<schedule>" */
#define ORCHARD_EVENT_POLICY_RUN "policy.run"       /* request_type: "<consumer>"; run now */

/* Declarative Device Management (enrollment_id: the channel that reported;
 * docs/ddm.md). Written only when something changed. */
#define ORCHARD_EVENT_DDM_STATUS_CHANGED "ddm.status.changed"           /* {item, value, previous} */
#define ORCHARD_EVENT_DDM_DECLARATION_STATUS "ddm.declaration.status"   /* {identifier, kind, ...} */
#define ORCHARD_EVENT_DDM_STATUS_ERROR "ddm.status.error"               /* {status_item, reasons} */
#define ORCHARD_EVENT_DDM_CAPABILITIES_CHANGED "ddm.capabilities.changed"
#define ORCHARD_EVENT_DDM_SYNCED "ddm.synced" /* every declaration of the manifest reported current */

#endif /* ORCHARD_EVENTS_H */
