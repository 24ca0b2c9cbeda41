-- Passcode by Declarative Device Management: every device channel gets a
-- passcode.settings declaration (with the status subscription it needs) at
-- enrollment, and daily for devices enrolled before the policy. Compliance
-- follows the device's passcode.is-compliant once it reports our settings
-- active: true is compliant, false is non-compliant (the device itself asks
-- the user for a new passcode).
policy { name = "passcode-ddm", description = "A passcode of six or more characters, by declaration", version = "1.0" }

local SET = "passcode-ddm"
local SETTINGS = {
  Type = "com.apple.configuration.passcode.settings", Identifier = "passcode-ddm.settings",
  -- The profile of passcode.lua as a declaration (allowSimple = false is RequireComplexPasscode).
  Payload = { RequirePasscode = true, MinimumLength = 6, RequireComplexPasscode = true },
}
local SUBSCRIPTIONS = {
  Type = "com.apple.configuration.management.status-subscriptions", Identifier = "passcode-ddm.status",
  Payload = { StatusItems = { { Name = "passcode.is-compliant" }, { Name = "passcode.is-present" } } },
}
local ACTIVATION = {
  Type = "com.apple.activation.simple", Identifier = "passcode-ddm.activation",
  Payload = { StandardConfigurations = { SETTINGS.Identifier, SUBSCRIPTIONS.Identifier } },
}

-- Passcode settings are system scope on iOS: device channels only.
local function device_channel(ctx)
  local d = ctx.device
  return ctx.enrollment_id ~= nil and (d == nil or d.type == "device")
end

local function assign(ctx)
  if not device_channel(ctx) then return end
  for _, d in ipairs({ SETTINGS, SUBSCRIPTIONS, ACTIVATION }) do
    ddm.put_declaration(d)  -- identical re-puts change nothing
    ddm.set_add(SET, d.Identifier)
  end
  ddm.assign(ctx.enrollment_id, SET)
end

-- passcode.is-compliant is also true on a device without passcode settings:
-- it counts only once the device reports our current settings active.
local function evaluate(ctx)
  if not device_channel(ctx) then return end
  local id = ctx.enrollment_id
  local st = ddm.declaration_status(id, SETTINGS.Identifier)
  if not st or not st.current then return end  -- not applied (or an older revision) yet
  if st.valid == "invalid" then
    local codes = {}
    for _, r in ipairs(st.reasons or {}) do codes[#codes + 1] = r.code end
    ctx:noncompliant("passcode settings rejected by the device (" .. table.concat(codes, ", ") .. ")")
    return
  end
  if not st.active then return end
  local compliant, present = ddm.status(id, "passcode.is-compliant"), ddm.status(id, "passcode.is-present")
  if compliant == true then
    if ctx:compliant() then log.info(id, "passcode compliant") end
  elseif compliant == false or present == false then
    ctx:noncompliant(present == false and "no passcode" or "passcode does not meet the policy")
  end
end

policy:on("enrollment.enrolled", assign)
policy:every("1d", assign, { splay = "1h", name = "assign" })
policy:on_status("passcode.", evaluate)
policy:on("ddm.declaration.status", function(ctx, event)
  if event.payload.identifier == SETTINGS.Identifier then evaluate(ctx) end
end)
