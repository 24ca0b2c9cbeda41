-- Profile drift: ProfileList must contain every expected profile; a missing
-- one is installed again (at most three times per failing streak).
policy { name = "profile-drift", description = "Expected profiles stay installed", version = "1.0" }

local function profile(id, uuid, content)
  return plist.xml { PayloadType = "Configuration", PayloadVersion = 1, PayloadIdentifier = id,
                     PayloadUUID = uuid, PayloadDisplayName = id, PayloadContent = content }
end

local EXPECTED = {
  ["com.example.orchard.wifi"] = profile("com.example.orchard.wifi", "1C2B3A49-5867-4E8F-9A0B-C1D2E3F40516", {
    { PayloadType = "com.apple.wifi.managed", PayloadVersion = 1, SSID_STR = "Example", EncryptionType = "WPA2",
      PayloadIdentifier = "com.example.orchard.wifi.1", PayloadUUID = "2D3C4B5A-6978-4F8E-9D0C-B1A2F3E4D5C6" } }),
}

policy:on_result("ProfileList", function(ctx, result)
  if result.status ~= "Acknowledged" then return end
  local present = {}
  for _, p in ipairs(result.response.ProfileList or {}) do present[p.PayloadIdentifier] = true end
  local missing = {}
  for id in pairs(EXPECTED) do if not present[id] then missing[#missing + 1] = id end end
  if #missing == 0 then ctx:compliant() return end
  table.sort(missing)
  ctx:noncompliant("missing profiles: " .. table.concat(missing, ", "))
  if ctx:attempt(3) then
    for _, id in ipairs(missing) do ctx:remediating(ctx:enqueue(mdm.InstallProfile { Payload = EXPECTED[id] })) end
  end
end)
