-- Passcode compliance: SecurityInfo twice a day; a device without a compliant
-- passcode gets the passcode profile (at most three times per failing
-- streak), and is locked with a message after three days.
policy { name = "passcode", description = "A passcode of six or more characters", version = "1.0" }

local PROFILE = plist.xml {
  PayloadType = "Configuration", PayloadVersion = 1, PayloadDisplayName = "Passcode",
  PayloadIdentifier = "com.example.orchard.passcode",
  PayloadUUID = "5F0E4B5C-2E4B-4F7A-9A61-0C1D2E3F4A5B",
  PayloadContent = { {
    PayloadType = "com.apple.mobiledevice.passwordpolicy", PayloadVersion = 1,
    PayloadIdentifier = "com.example.orchard.passcode.policy",
    PayloadUUID = "8C2D1B7E-3A4F-4C5D-8E9F-1A2B3C4D5E6F",
    minLength = 6, allowSimple = false,
  } },
}

policy:every("12h", function(ctx) ctx:enqueue(mdm.SecurityInfo {}) end, { splay = "1h" })

policy:on_result("SecurityInfo", function(ctx, result)
  local s = result.response and result.response.SecurityInfo
  if not s then return end
  if s.PasscodePresent and s.PasscodeCompliant ~= false then
    ctx:compliant()
    return
  end
  ctx:noncompliant(s.PasscodePresent and "passcode does not meet the policy" or "no passcode")
  if ctx:attempt(3) then
    ctx:remediating(ctx:enqueue(mdm.InstallProfile { Payload = PROFILE }))
  end
  ctx:escalate({
    { after = "3d", run = function(c)
        c:enqueue(mdm.DeviceLock { Message = "Set a passcode to keep using this device." })
      end },
  })
end)
