-- FileVault (macOS): SecurityInfo daily on Macs; FileVault off, or no
-- personal recovery key escrowed, installs the profile that enforces
-- FileVault and escrows the key to Orchard (at most three times per streak).
policy { name = "filevault", description = "FileVault on, recovery key escrowed", version = "1.0" }

local PROFILE = plist.xml {
  PayloadType = "Configuration", PayloadVersion = 1, PayloadDisplayName = "FileVault",
  PayloadIdentifier = "com.example.orchard.filevault",
  PayloadUUID = "0B8F6C2A-6D1E-4B3A-9F2C-7E5D4C3B2A19",
  PayloadContent = {
    { PayloadType = "com.apple.MCX.FileVault2", PayloadVersion = 1, Enable = "On", Defer = true,
      PayloadIdentifier = "com.example.orchard.filevault.enable",
      PayloadUUID = "3E1A9B7C-5D2F-4A6E-8B0C-1F2E3D4C5B6A" },
    { PayloadType = "com.apple.security.FDERecoveryKeyEscrow", PayloadVersion = 1,
      Location = "Your organisation's device management",
      PayloadIdentifier = "com.example.orchard.filevault.escrow",
      PayloadUUID = "7A6B5C4D-3E2F-4A1B-9C8D-0E1F2A3B4C5D" },
  },
}

policy:every("1d", function(ctx)
  local d = ctx.device
  if d and d.type == "device" and (d.model or ""):find("Mac") then ctx:enqueue(mdm.SecurityInfo {}) end
end, { splay = "2h" })

policy:on_result("SecurityInfo", function(ctx, result)
  local s = result.response and result.response.SecurityInfo
  if not s or s.FDE_Enabled == nil then return end  -- not a Mac
  if s.FDE_Enabled and s.FDE_HasPersonalRecoveryKey then
    ctx:compliant()
    return
  end
  ctx:noncompliant(s.FDE_Enabled and "recovery key not escrowed" or "FileVault is off")
  if ctx:attempt(3) then ctx:remediating(ctx:enqueue(mdm.InstallProfile { Payload = PROFILE })) end
end)
