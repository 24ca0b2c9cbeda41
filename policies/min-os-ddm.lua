-- Minimum OS by Declarative Device Management: every device subscribes to its
-- OS and software-update status; one reporting a version below its platform's
-- floor gets a softwareupdate.enforcement.specific declaration (install by the
-- deadline) and is remediation_pending until it reports the floor, when the
-- declaration is unassigned again. Failed installs climb a ladder: warnings,
-- then an error and the failures in the reason. Devices too old for the
-- declaration (below iOS 17 / macOS 14) get ScheduleOSUpdate instead.
policy { name = "min-os-ddm", description = "OS 26.1 or later, enforced by declaration", version = "1.0" }

-- Per reported device.operating-system.family: floor, deadline (device-local
-- time, no zone: TargetLocalDateTime), the first version that can apply the
-- declaration, and the DDM set the declaration goes in.
local PLATFORMS = {
  iOS    = { floor = "26.1", deadline = "2026-12-15T18:00:00", ddm_min = "17.0", set = "min-os-ddm.ios" },
  iPadOS = { floor = "26.1", deadline = "2026-12-15T18:00:00", ddm_min = "17.0", set = "min-os-ddm.ipados" },
  macOS  = { floor = "26.1", deadline = "2026-12-15T18:00:00", ddm_min = "14.0", set = "min-os-ddm.macos" },
}
local DEFAULT_FAMILY = "iOS"  -- when neither the family nor the product name tells
local MAX_FAILURES = 3        -- failed installs before the device is reported

for family, p in pairs(PLATFORMS) do
  assert(p.deadline:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d$"), family .. ": deadline must be YYYY-MM-DDTHH:MM:SS")
end

-- Status items are reported only when subscribed to (set-union with other
-- subscriptions on the device): every device channel gets this set.
local STATUS_SET = "min-os-ddm.status"
local SUBSCRIPTIONS = {
  Type = "com.apple.configuration.management.status-subscriptions",
  Identifier = "min-os-ddm.status",
  Payload = { StatusItems = {
    { Name = "device.operating-system.family" }, { Name = "device.operating-system.version" },
    { Name = "softwareupdate.install-state" }, { Name = "softwareupdate.pending-version" },
    { Name = "softwareupdate.failure-reason" },
  } },
}

local function activate(set, configuration)
  return { Type = "com.apple.activation.simple", Identifier = set .. ".activation",
           Payload = { StandardConfigurations = { configuration } } }
end

-- Puts the declarations and assigns the set (identical re-puts change nothing).
local function declare(ctx, set, configuration)
  local activation = activate(set, configuration.Identifier)
  ddm.put_declaration(configuration)
  ddm.put_declaration(activation)
  ddm.set_add(set, configuration.Identifier)
  ddm.set_add(set, activation.Identifier)
  ddm.assign(ctx.enrollment_id, set)
end

local function enforcement(p)
  return { Type = "com.apple.configuration.softwareupdate.enforcement.specific", Identifier = p.set .. ".update",
           Payload = { TargetOSVersion = p.floor, TargetLocalDateTime = p.deadline } }
end

-- Software update is system scope: device channels only (not user channels).
local function device_channel(ctx)
  local d = ctx.device
  return ctx.enrollment_id ~= nil and (d == nil or d.type == "device")
end

local function family_of(product)
  if not product then return nil end
  if product:find("Mac") then return "macOS" end
  if product:find("^iPad") then return "iPadOS" end
  if product:find("^iPhone") or product:find("^iPod") then return "iOS" end
end

local function platform(ctx)
  local family = ddm.status(ctx.enrollment_id, "device.operating-system.family")
  if family == nil then family = family_of(ctx.device and ctx.device.product_name) or DEFAULT_FAMILY end
  return PLATFORMS[family]  -- nil: a platform this policy does not manage (tvOS, watchOS, ...)
end

-- Failed installs of the pending update: the device's count, or the failed
-- install states seen (devices do not always send both).
local function failures(ctx)
  local reported = tonumber(ddm.status(ctx.enrollment_id, "softwareupdate.failure-reason.count")) or 0
  return math.max(reported, ctx:get(ctx.enrollment_id .. "/failed") or 0)
end

local function reason(ctx, p, v)
  local r = "OS " .. v .. " is below " .. p.floor
  local st = ddm.declaration_status(ctx.enrollment_id, p.set .. ".update")
  if st and st.valid == "invalid" then
    local codes = {}
    for _, x in ipairs(st.reasons or {}) do codes[#codes + 1] = x.code end
    r = r .. "; the device rejected the update declaration (" .. table.concat(codes, ", ") .. ")"
  end
  local n = failures(ctx)
  if n >= MAX_FAILURES then
    local why = ddm.status(ctx.enrollment_id, "softwareupdate.failure-reason.reason")
    r = r .. "; the update failed " .. n .. " times" .. (why and (" (" .. tostring(why) .. ")") or "")
  end
  return r
end

-- Devices without the declaration: ScheduleOSUpdate, deprecated in OS 26 and
-- removed in OS 27, still the only way below iOS 17 / macOS 14.
local function legacy(ctx, p, v)
  ctx:noncompliant("OS " .. v .. " is below " .. p.floor .. " and too old for declarative updates")
  if ctx:attempt(3) then
    log.warn(ctx.enrollment_id, "runs", v, "(no update declaration): ScheduleOSUpdate, deprecated since OS 26")
    ctx:remediating(ctx:enqueue(mdm.ScheduleOSUpdate { Updates = { { InstallAction = "InstallASAP" } } }))
  end
end

local function check(ctx, v, p)
  p = p or platform(ctx)
  if type(v) ~= "string" or not p or not device_channel(ctx) then return end
  local key = ctx.enrollment_id .. "/set"
  if version.at_least(v, p.floor) then
    if ctx:compliant() then log.info(ctx.enrollment_id, "reached", v) end
    local set = ctx:get(key)
    if set then
      ddm.unassign(ctx.enrollment_id, set)
      ctx:delete(key)
    end
    if ctx:get(ctx.enrollment_id .. "/failed") then ctx:delete(ctx.enrollment_id .. "/failed") end
  elseif not version.at_least(v, p.ddm_min) then
    legacy(ctx, p, v)
  else
    declare(ctx, p.set, enforcement(p))
    if ctx:get(key) ~= p.set then ctx:put(key, p.set) end
    if ctx:noncompliant(reason(ctx, p, v)) then log.warn(ctx.enrollment_id, "runs", v, "below", p.floor) end
    ctx:remediating()
  end
end

-- One step per failed install (all due at once: the count drives the ladder).
local LADDER = {}
for i = 1, MAX_FAILURES do
  LADDER[i] = { after = "0s", run = function(c)
    local why = ddm.status(c.enrollment_id, "softwareupdate.failure-reason.reason") or "no reason reported"
    if i < MAX_FAILURES then
      log.warn(c.enrollment_id, "software update failed (" .. i .. " of " .. MAX_FAILURES .. "):", why)
      return
    end
    log.error(c.enrollment_id, "software update failed", i, "times:", why)
    local v, p = ddm.status(c.enrollment_id, "device.operating-system.version"), platform(c)
    if v and p then c:noncompliant(reason(c, p, v)) end
  end }
end

local function failed(ctx)
  local n = failures(ctx)
  while ctx:compliance().step < n and ctx:escalate(LADDER) do end
end

local function subscribe(ctx)
  if device_channel(ctx) then declare(ctx, STATUS_SET, SUBSCRIPTIONS) end
end

policy:on("enrollment.enrolled", subscribe)

-- Daily: devices enrolled before the policy get the subscription, and a
-- changed floor or deadline reaches devices whose version did not change.
policy:every("1d", function(ctx)
  subscribe(ctx)
  check(ctx, ddm.status(ctx.enrollment_id, "device.operating-system.version"))
end, { splay = "2h", name = "recheck" })

policy:on_status("device.operating-system.version", function(ctx, change) check(ctx, change.value) end)

policy:on_status("softwareupdate.install-state", function(ctx, change)
  if not device_channel(ctx) or change.value == nil then return end
  local pending = ddm.status(ctx.enrollment_id, "softwareupdate.pending-version.os-version")
  local state = tostring(change.value)
  if pending and pending ~= "" then state = state .. " (" .. pending .. ")" end
  log.info(ctx.enrollment_id, "software update", state)
  if change.value == "failed" then
    ctx:put(ctx.enrollment_id .. "/failed", (ctx:get(ctx.enrollment_id .. "/failed") or 0) + 1)
    failed(ctx)
  end
end)

policy:on_status("softwareupdate.failure-reason.count", function(ctx, change)
  if device_channel(ctx) and (tonumber(change.value) or 0) > 0 then failed(ctx) end
end)

-- The device rejected (or now accepts) the update declaration: refresh the reason.
policy:on("ddm.declaration.status", function(ctx, event)
  local p = platform(ctx)
  if p and event.payload.identifier == p.set .. ".update" then
    check(ctx, ddm.status(ctx.enrollment_id, "device.operating-system.version"), p)
  end
end)

-- A DeviceInformation answer (any policy's): devices too old for DDM are
-- handled here; the others only when at the floor (DDM handles the rest).
policy:on_result("DeviceInformation", function(ctx, result)
  local q = result.response and result.response.QueryResponses
  if result.status ~= "Acknowledged" or not q or not q.OSVersion then return end
  local p = PLATFORMS[family_of(q.ProductName) or DEFAULT_FAMILY]
  if p and (version.at_least(q.OSVersion, p.floor) or not version.at_least(q.OSVersion, p.ddm_min)) then
    check(ctx, q.OSVersion, p)
  end
end)
