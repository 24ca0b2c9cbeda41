-- Inventory refresh: every six hours, spread over an hour so the fleet does
-- not answer at once, each device reports its information, security state,
-- apps, profiles and certificates (other policies react to the results).
policy { name = "inventory", description = "Inventory every 6 hours", version = "1.0" }

policy:every("6h", function(ctx)
  local d = ctx.device
  if not d or d.state ~= "enrolled" then return end
  ctx:enqueue(mdm.DeviceInformation {
    Queries = { "OSVersion", "BuildVersion", "ProductName", "SerialNumber", "DeviceName",
                "AvailableDeviceCapacity", "BatteryLevel", "IsSupervised" } })
  ctx:enqueue(mdm.SecurityInfo {})
  ctx:enqueue(mdm.InstalledApplicationList { ManagedAppsOnly = false })
  ctx:enqueue(mdm.ProfileList {})
  ctx:enqueue(mdm.CertificateList {})
end, { splay = "1h" })
