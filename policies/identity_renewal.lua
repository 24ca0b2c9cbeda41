-- MDM identity certificate renewal: when a device's identity certificate
-- comes within 30 days of expiry, send it a fresh enrollment profile and
-- retry daily (at most five times) until the device re-authenticates with
-- the new certificate.
policy { name = "identity-renewal", description = "Renew identities 30 days ahead", version = "1.0" }

-- Your signed enrollment profile (what GET /mdm/enroll serves), as bytes.
local PROFILE = plist.data("replace with the enrollment profile")

local function renew(ctx)
  if ctx:attempt(5) then ctx:remediating(ctx:enqueue(mdm.InstallProfile { Payload = PROFILE })) end
end

policy:on("certificate.expiring", function(ctx, event)
  local p = event.payload
  if p.kind ~= "identity" or p.days_left > 30 then return end
  ctx:noncompliant("identity certificate expires " .. p.not_after)
  renew(ctx)
end)

policy:every("1d", function(ctx)
  if ctx:compliance().failing then renew(ctx) end
end, { splay = "4h" })

-- A renewed identity arrives with a new Authenticate.
policy:on("enrollment.authenticated", function(ctx) ctx:compliant() end)
