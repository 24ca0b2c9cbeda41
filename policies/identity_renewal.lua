-- MDM identity certificate renewal: when a device's identity certificate
-- comes within 30 days of expiry, send it a fresh enrollment profile and
-- retry daily (at most five times) until the device uses the new certificate.
--
-- ctx:renewal_profile() makes a signed enrollment profile for this device
-- whose SCEP challenge is one-time, bound to the device and marked as the
-- renewal of its current certificate: the certificate the device then gets
-- replaces the old one in place (queue, results, compliance and inventory
-- stay; docs/enrollment.md). It returns nil and a reason when profiles cannot
-- be made (no push certificate yet, ...): the policy then logs and waits for
-- the next daily round.
policy { name = "identity-renewal", description = "Renew identities 30 days ahead", version = "2.0" }

local function renew(ctx)
  if not ctx:attempt(5) then return end
  local profile, why = ctx:renewal_profile()
  if not profile then
    ctx:log("cannot renew yet: " .. why)
    return
  end
  ctx:remediating(ctx:enqueue(mdm.InstallProfile { Payload = profile }))
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

-- The renewed identity: replaced in place (enrollment.reenroll, reason
-- "renewed"), or a re-Authenticate with a certificate Orchard issued for it.
policy:on("enrollment.reenroll", function(ctx, event)
  if event.payload.decision == "allowed" then ctx:compliant() end
end)
policy:on("enrollment.authenticated", function(ctx) ctx:compliant() end)
