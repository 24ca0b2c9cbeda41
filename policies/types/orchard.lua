---@meta orchard

-- The Orchard policy API for lua-language-server (LuaCATS annotations).
-- Declarations only: the server never loads this file. The reference is
-- docs/lua-api.md; tests/unit/policy/stubs_test.cpp checks this file against
-- the engine (methods, fields, option keys, globals, mdm builders).

---A duration: "90" (seconds), or numbers with units s, m, h, d, w summed
---("90s", "15m", "6h", "1d12h", "2w"); or a number of seconds.
---@alias Duration string|number

---@alias ComplianceStatusName "unknown"|"compliant"|"non_compliant"|"remediation_pending"|"exempt"

---@alias ResultStatus "Acknowledged"|"Error"|"CommandFormatError"|"Failed"

---A value with a plist form (what ctx:put, plist.xml and plist.json accept).
---Tables: keys 1..n without holes (an array) or only string keys (a dict).
---@alias PlistValue string|integer|number|boolean|table|PlistData|PlistDate

-- ------------------------------------------------------------------ policy

---Metadata set with `policy { ... }` while the file loads.
---@class PolicyMeta
---@field name? string 1-64 bytes of A-Z a-z 0-9 . _ - (default: the file name without .lua)
---@field description? string at most 4096 bytes
---@field version? string at most 4096 bytes

---Options of policy:every.
---@class ScheduleOpts
---@field splay? Duration runs are spread over this window after each period start (0 to the interval; default 0)
---@field per_device? boolean true (default): one run per enrolled device channel; false: one run per period, with no device
---@field name? string 1-64 bytes (default "every:<interval in seconds>s"); names must be unique in a policy

---The policy object. Metadata, handlers and schedules can only be set while
---the file loads (its top-level code).
---@class Policy
---@field name string the policy's name
---@overload fun(meta: PolicyMeta): Policy
policy = {}

---Runs handler for every event of this type ("*": every event delivered to
---the policy). Handlers of one event run in registration order.
---@param event_type string 1-128 bytes, or "*"
---@param handler fun(ctx: Ctx, event: Event)
function policy:on(event_type, handler) end

---Runs handler for command results (command.acknowledged, command.error,
---command.format_error, command.failed) of this RequestType, or of any ("*").
---@param request_type string 1-128 bytes, or "*"
---@param handler fun(ctx: Ctx, result: Result)
function policy:on_result(request_type, handler) end

---Runs handler for ddm.status.changed events of a DDM status item: item
---exactly, every item under a prefix ending in "." ("softwareupdate."), or
---every item ("*").
---@param item string
---@param handler fun(ctx: Ctx, change: StatusChange)
function policy:on_status(item, handler) end

---What a ddm.status.changed event carries.
---@class StatusChange
---@field item string the dotted status item
---@field value any the reported value (nil when removed)
---@field previous any the value before (nil when absent)
---@field removed boolean

---Runs handler periodically (event type "schedule.tick").
---@param interval Duration at least 1 minute
---@param handler fun(ctx: Ctx, event: Event)
---@param opts? ScheduleOpts
function policy:every(interval, handler, opts) end

-- -------------------------------------------------------------- the run

---The event a run is about. schedule.tick events carry type, schedule,
---time, cursor and enrollment_id only.
---@class Event
---@field type string event type ("schedule.tick" for schedules)
---@field time number Unix seconds (the event's time; for schedules the run's clock)
---@field cursor string the trigger: event cursor ("0.1234") or schedule run id
---@field enrollment_id? string the device channel the event is about (nil if none)
---@field seq? integer event sequence number (not for schedule.tick)
---@field command_uuid? string for command events
---@field request_type? string for command events
---@field payload? table<string, any> the event's payload ({} when it has none; not for schedule.tick)
---@field schedule? string schedule name (schedule.tick only)

---The second argument of on_result handlers.
---@class Result
---@field status ResultStatus
---@field command_uuid string
---@field request_type string
---@field response table<string, any> the device's report (secrets removed); for "Failed": {reason = string, deliveries = integer}

---A command result as stored (ctx:last_result).
---@class StoredResult
---@field command_uuid string
---@field request_type string
---@field status string "Acknowledged", "Error", "CommandFormatError" or "Failed"
---@field received_at number Unix seconds
---@field enqueued_at number Unix seconds
---@field origin string who queued it: "api", "policy:<name>", "plugin:<name>"
---@field error_chain? table[] the report's ErrorChain (or the server's reason for "Failed")
---@field response? table<string, any> the device's report as received

---The enrollment (device channel) a run is about (ctx.device). Empty strings
---and unset times are absent. Secrets are never exposed: only has_* flags.
---@class Device
---@field id string enrollment id
---@field type "device"|"user"|"shared_ipad_user"|"user_enrollment_device"|"user_enrollment_user"
---@field parent_id? string the device channel of a user channel
---@field udid? string
---@field enrollment_id? string User Enrollment's EnrollmentID
---@field user_id? string
---@field user_short_name? string
---@field user_long_name? string
---@field enrollment_user_id? string
---@field topic? string
---@field serial_number? string
---@field model? string
---@field model_name? string
---@field os_version? string
---@field build_version? string
---@field product_name? string
---@field device_name? string
---@field imei? string
---@field meid? string
---@field state "authenticated"|"enrolled"|"checked_out"
---@field blocked boolean
---@field generation integer bumps on every Authenticate
---@field token_updates integer
---@field awaiting_configuration boolean
---@field authenticated_at? number Unix seconds
---@field enrolled_at? number Unix seconds
---@field last_seen_at? number Unix seconds
---@field checked_out_at? number Unix seconds
---@field has_push_token boolean
---@field has_unlock_token boolean
---@field has_bootstrap_token boolean

---The policy's compliance state for one device (ctx:compliance).
---@class ComplianceState
---@field status ComplianceStatusName
---@field failing boolean status is non_compliant or remediation_pending
---@field since? number Unix seconds: when status last changed
---@field first_failed_at? number Unix seconds: start of the current failing streak
---@field attempts integer ctx:attempt calls counted in this streak
---@field step integer escalation steps taken in this streak
---@field updated_at? number Unix seconds: last write
---@field last_command_uuid? string from ctx:remediating
---@field reason? string

---Options of ctx:enqueue.
---@class EnqueueOpts
---@field priority? integer 0-255 (default 0)
---@field push? boolean wake the device after the commit (default true)
---@field device? string enrollment id (default: the run's device)
---@field unchecked? boolean skip Apple's schema (the basic shape is still checked)

---Which device a compliance method is about (default: the run's device).
---@class DeviceOpts
---@field device? string enrollment id

---Options of ctx:scan.
---@class ScanOpts
---@field limit? integer 1-1000 (default 100)
---@field after? string only keys greater than this

---An item of ctx:scan.
---@class ScanItem
---@field key string
---@field value any the stored value

---A step of ctx:escalate.
---@class EscalationStep
---@field after? Duration delay from the start of the failing streak (default 0)
---@field run fun(ctx: Ctx)

---The context of one handler run. Valid only during that run.
---@class Ctx
---@field event Event
---@field enrollment_id? string the device channel this run is about (nil if none)
---@field policy string the policy's name
---@field now number Unix seconds (float) of this run
---@field dry_run boolean the policy runs in dry-run mode (nothing is applied)
---@field device? Device read on first use; nil when the run is about no device or it is unknown
local Ctx = {}

---Queues a command (checked against Apple's schema) for the run's device or
---opts.device. Returns its CommandUUID, derived from the trigger.
---@param command CommandTable|table<string, any> a table with RequestType and request keys
---@param opts? EnqueueOpts
---@return string command_uuid
function Ctx:enqueue(command, opts) end

---Wakes a device (the run's, or device_id) without a command.
---@param device_id? string
function Ctx:push(device_id) end

---The newest stored result of a RequestType for the run's device (or device_id).
---@param request_type string
---@param device_id? string
---@return StoredResult|nil
function Ctx:last_result(request_type, device_id) end

---A fresh signed enrollment profile renewing the identity of the run's device
---(or device_id), for mdm.InstallProfile { Payload = ... }; nil and the reason
---when none can be made (no push certificate, unknown device, ...).
---@param device_id? string
---@return PlistData|nil profile
---@return string|nil reason
function Ctx:renewal_profile(device_id) end

---Reads a key of the policy's store (nil if absent).
---@param key string 1-512 bytes
---@return any
function Ctx:get(key) end

---Writes a key of the policy's store (nil deletes). At most 64 KiB as JSON.
---@param key string 1-512 bytes
---@param value PlistValue|nil
function Ctx:put(key, value) end

---Deletes a key of the policy's store.
---@param key string 1-512 bytes
function Ctx:delete(key) end

---Keys starting with prefix, in key order.
---@param prefix? string default ""
---@param opts? ScanOpts
---@return ScanItem[]
function Ctx:scan(prefix, opts) end

---The compliance state of the run's device, or of another one.
---@param device? string|DeviceOpts
---@return ComplianceState
function Ctx:compliance(device) end

---Marks the device compliant (not if exempt). True when it was failing.
---@param opts? DeviceOpts
---@return boolean recovered
function Ctx:compliant(opts) end

---Marks the device failing (not if exempt). True when it was not failing.
---@param reason? string at most 1024 bytes kept (default "")
---@param opts? DeviceOpts
---@return boolean newly_failing
function Ctx:noncompliant(reason, opts) end

---Marks a fix as under way (status remediation_pending; not if exempt).
---@param command_uuid? string kept as last_command_uuid
---@param opts? DeviceOpts
function Ctx:remediating(command_uuid, opts) end

---Exempts the device: compliance changes are ignored until ctx:reset.
---@param reason? string
---@param opts? DeviceOpts
function Ctx:exempt(reason, opts) end

---Back to "unknown" (ends an exemption or a streak).
---@param opts? DeviceOpts
function Ctx:reset(opts) end

---Counts a remediation attempt: true (and counted) while fewer than max
---were counted in the current streak, else false.
---@param max integer
---@param opts? DeviceOpts
---@return boolean
function Ctx:attempt(max, opts) end

---While failing, runs the next step once its delay has passed (at most one
---step per call). Returns the step number run, or nil.
---@param steps EscalationStep[]
---@param opts? DeviceOpts
---@return integer|nil step
function Ctx:escalate(steps, opts) end

---Logs at info level (like log.info).
---@param ... any
function Ctx:log(...) end

-- ---------------------------------------------------------------- mdm

---A command as built by mdm.<RequestType> or mdm.command.
---@class CommandTable
---@field RequestType string
---@field [string] any

---Options of mdm.command.
---@class CommandOpts
---@field unchecked? boolean send a RequestType or keys newer than the bundled schemas

---Command builders named by RequestType, checked against Apple's schemas
---(core/automation/command_schemas.inc): unknown keys, wrong types and
---missing required keys are errors at the line that builds the command.
---@class Mdm
---@field AccountConfiguration fun(fields?: {SkipPrimarySetupAccountCreation?: boolean, SetPrimarySetupAccountAsRegularUser?: boolean, PrimaryAccountFullName?: string, PrimaryAccountUserName?: string, DontAutoPopulatePrimaryAccountInfo?: boolean, LockPrimaryAccountInfo?: boolean, AutoSetupAdminAccounts?: any[], ManagedLocalUserShortName?: string}): CommandTable
---@field ActivationLockBypassCode fun(fields?: {}): CommandTable
---@field ActiveNSExtensions fun(fields?: {FilterExtensionPoints?: any[]}): CommandTable
---@field ApplyRedemptionCode fun(fields: {Identifier: string, RedemptionCode: string}): CommandTable
---@field AvailableOSUpdates fun(fields?: {}): CommandTable
---@field CertificateList fun(fields?: {ManagedOnly?: boolean}): CommandTable
---@field ClearActivationLockBypassCode fun(fields?: {}): CommandTable
---@field ClearPasscode fun(fields: {UnlockToken: PlistData}): CommandTable
---@field ClearRestrictionsPassword fun(fields?: {}): CommandTable
---@field ContentCachingInformation fun(fields?: {}): CommandTable
---@field DeclarativeManagement fun(fields?: {Data?: PlistData}): CommandTable
---@field DeleteUser fun(fields?: {UserName?: string, ForceDeletion?: boolean, DeleteAllUsers?: boolean}): CommandTable
---@field DeviceConfigured fun(fields?: {}): CommandTable
---@field DeviceInformation fun(fields: {Queries: any[], DeviceAttestationNonce?: PlistData}): CommandTable
---@field DeviceLocation fun(fields?: {}): CommandTable
---@field DeviceLock fun(fields?: {Message?: string, PhoneNumber?: string, PIN?: string}): CommandTable
---@field DisableLostMode fun(fields?: {}): CommandTable
---@field DisableRemoteDesktop fun(fields?: {}): CommandTable
---@field EnableLostMode fun(fields?: {Message?: string, PhoneNumber?: string, Footnote?: string}): CommandTable
---@field EnableRemoteDesktop fun(fields?: {}): CommandTable
---@field EraseDevice fun(fields?: {PreserveDataPlan?: boolean, DisallowProximitySetup?: boolean, PIN?: string, ObliterationBehavior?: string, ReturnToService?: table}): CommandTable
---@field InstallApplication fun(fields?: {iTunesStoreID?: integer, Identifier?: string, Options?: table, ManifestURL?: string, ManagementFlags?: integer, Configuration?: table, Attributes?: table, ChangeManagementState?: string, InstallAsManaged?: boolean, iOSApp?: boolean}): CommandTable
---@field InstallEnterpriseApplication fun(fields?: {Manifest?: table, ManifestURL?: string, ManifestURLPinningCerts?: any[], PinningRevocationCheckRequired?: boolean, InstallAsManaged?: boolean, ManagementFlags?: integer, Configuration?: table, ChangeManagementState?: string, iOSApp?: boolean}): CommandTable
---@field InstallMedia fun(fields: {iTunesStoreID?: integer, MediaURL?: string, MediaType: string, PersistentID?: string, Kind?: string, Version?: string, Author?: string, Title?: string}): CommandTable
---@field InstallProfile fun(fields: {Payload: PlistData}): CommandTable
---@field InstallProvisioningProfile fun(fields: {ProvisioningProfile: PlistData}): CommandTable
---@field InstalledApplicationList fun(fields?: {Identifiers?: any[], ManagedAppsOnly?: boolean, Items?: any[]}): CommandTable
---@field InviteToProgram fun(fields: {ProgramID: string, InvitationURL: string}): CommandTable
---@field LOMDeviceRequest fun(fields: {RequestList: any[]}): CommandTable
---@field LOMSetupRequest fun(fields?: {}): CommandTable
---@field LogOutUser fun(fields?: {}): CommandTable
---@field ManagedApplicationAttributes fun(fields: {Identifiers: any[]}): CommandTable
---@field ManagedApplicationConfiguration fun(fields: {Identifiers: any[]}): CommandTable
---@field ManagedApplicationFeedback fun(fields: {Identifiers: any[], DeleteFeedback?: boolean}): CommandTable
---@field ManagedApplicationList fun(fields?: {Identifiers?: any[]}): CommandTable
---@field ManagedMediaList fun(fields?: {}): CommandTable
---@field NSExtensionMappings fun(fields?: {}): CommandTable
---@field OSUpdateStatus fun(fields?: {}): CommandTable
---@field PlayLostModeSound fun(fields?: {}): CommandTable
---@field ProfileList fun(fields?: {ManagedOnly?: boolean}): CommandTable
---@field ProvisioningProfileList fun(fields?: {ManagedOnly?: boolean}): CommandTable
---@field RefreshCellularPlans fun(fields: {eSIMServerURL: string}): CommandTable
---@field RemoveApplication fun(fields: {Identifier: string}): CommandTable
---@field RemoveMedia fun(fields: {MediaType: string, iTunesStoreID?: string, PersistentID?: string}): CommandTable
---@field RemoveProfile fun(fields: {Identifier: string}): CommandTable
---@field RemoveProvisioningProfile fun(fields: {UUID: string}): CommandTable
---@field RequestMirroring fun(fields?: {DestinationName?: string, DestinationDeviceID?: string, ScanTime?: integer, Password?: string}): CommandTable
---@field RequestUnlockToken fun(fields?: {}): CommandTable
---@field RestartDevice fun(fields?: {RebuildKernelCache?: boolean, KextPaths?: any[], NotifyUser?: boolean}): CommandTable
---@field Restrictions fun(fields?: {ProfileRestrictions?: boolean}): CommandTable
---@field RotateFileVaultKey fun(fields: {KeyType: string, FileVaultUnlock: table, NewCertificate?: PlistData, ReplyEncryptionCertificate?: PlistData}): CommandTable
---@field ScheduleOSUpdate fun(fields: {Updates: any[]}): CommandTable
---@field ScheduleOSUpdateScan fun(fields?: {Force?: boolean}): CommandTable
---@field SecurityInfo fun(fields?: {}): CommandTable
---@field SetAutoAdminPassword fun(fields: {GUID: string, passwordHash: PlistData}): CommandTable
---@field SetFirmwarePassword fun(fields: {CurrentPassword?: string, NewPassword: string, AllowOroms?: boolean}): CommandTable
---@field SetRecoveryLock fun(fields: {CurrentPassword?: string, NewPassword: string}): CommandTable
---@field Settings fun(fields: {Settings: any[]}): CommandTable
---@field ShutDownDevice fun(fields?: {}): CommandTable
---@field StopMirroring fun(fields?: {}): CommandTable
---@field UnlockUserAccount fun(fields: {UserName: string}): CommandTable
---@field UserConfigured fun(fields?: {}): CommandTable
---@field UserList fun(fields?: {}): CommandTable
---@field ValidateApplications fun(fields?: {Identifiers?: any[]}): CommandTable
---@field VerifyFirmwarePassword fun(fields: {Password: string}): CommandTable
---@field VerifyRecoveryLock fun(fields: {Password: string}): CommandTable

mdm = {}

---Builds a command of any RequestType.
---@param request_type string
---@param fields? table<string, any>
---@param opts? CommandOpts
---@return CommandTable
function mdm.command(request_type, fields, opts) end

-- -------------------------------------------------------------- ddm

---A declaration for ddm.put_declaration (ServerToken is computed by Orchard).
---@class DeclarationTable
---@field Type string com.apple.{activation,configuration,asset,management}.<...>
---@field Identifier string at most 64 printable bytes, no "/"
---@field Payload table the declaration's payload ({} is an empty object)

---A declaration's status as a device last reported it.
---@class DeclarationStatus
---@field identifier string
---@field kind "activation"|"configuration"|"asset"|"management"
---@field server_token string the ServerToken the device reported
---@field active boolean
---@field valid string "valid", "invalid", "unknown", ...
---@field current boolean the reported ServerToken is the manifest's current one
---@field reasons {code: string, description: string}[]

---Declarative Device Management: writes commit with the run (in call order,
---each seeing the ones before), with the tokens and sync commands they cause.
---@class Ddm
ddm = {}

---Creates or replaces a declaration owned by this policy (checked at the call).
---@param declaration DeclarationTable
function ddm.put_declaration(declaration) end

---@param identifier string
function ddm.delete_declaration(identifier) end

---A new revision (new ServerToken): devices fetch it again.
---@param identifier string
function ddm.touch(identifier) end

---@param set string 1-64 letters, digits, '.', '_', '-'
---@param identifier string
function ddm.set_add(set, identifier) end

---@param set string
---@param identifier string
function ddm.set_remove(set, identifier) end

---@param enrollment_id string
---@param set string
function ddm.assign(enrollment_id, set) end

---@param enrollment_id string
---@param set string
function ddm.unassign(enrollment_id, set) end

---The latest value the channel reported for a status item, or nil.
---@param enrollment_id string
---@param item string e.g. "device.operating-system.version"
---@return any
function ddm.status(enrollment_id, item) end

---@param enrollment_id string
---@param identifier string
---@return DeclarationStatus|nil
function ddm.declaration_status(enrollment_id, identifier) end

-- -------------------------------------------------------------- plist

---Bytes (plist <data>).
---@class PlistData
---@operator len: integer
local PlistData = {}

---@return string
function PlistData:bytes() end

---@return string
function PlistData:base64() end

---@return string lower-case hex
function PlistData:hex() end

---A date (plist <date>), whole seconds. tostring gives RFC 3339 UTC;
---dates compare with ==, < and <=.
---@class PlistDate
---@field unix integer Unix seconds

---@class Plist
plist = {}

---@param bytes string
---@return PlistData
function plist.data(bytes) end

---@param value string|number RFC 3339 UTC text ("2026-12-01T10:00:00Z") or Unix seconds
---@return PlistDate
function plist.date(value) end

---Marks a table (or a new one) as an array, so an empty one stays an array.
---@generic T: table
---@param t? T
---@return T
function plist.array(t) end

---Marks a table (or a new one) as a dict.
---@generic T: table
---@param t? T
---@return T
function plist.dict(t) end

---Encodes a value as an XML plist (e.g. a profile for InstallProfile).
---@param value PlistValue
---@return PlistData
function plist.xml(value) end

---Encodes a value as JSON (data as {"$data": base64}, dates as {"$date": RFC 3339}).
---@param value PlistValue
---@return string
function plist.json(value) end

---Parses an XML plist or JSON (text starting with { or [).
---@param text string|PlistData
---@return any
function plist.parse(text) end

-- ----------------------------------------------------- log, version, duration

---Log lines of a run (at most 1000 per run, 4096 bytes each); arguments are
---joined with spaces.
---@class Log
log = {}

---@param ... any
function log.debug(...) end

---@param ... any
function log.info(...) end

---@param ... any
function log.warn(...) end

---@param ... any
function log.error(...) end

---Same as log.info.
---@param ... any
function print(...) end

---Dotted version numbers ("17.10" > "17.9").
---@class Version
version = {}

---@param a string
---@param b string
---@return -1|0|1
function version.compare(a, b) end

---@param a string
---@param b string
---@return boolean # a >= b
function version.at_least(a, b) end

---Seconds in a duration ("1d12h" -> 129600.0).
---@param d Duration
---@return number seconds
function duration(d) end
