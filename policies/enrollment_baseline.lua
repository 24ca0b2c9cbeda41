-- Enrollment baseline: on the first TokenUpdate of an enrollment only
-- (enrollment.enrolled), install the baseline profile, name the device after
-- its serial number and, if Setup Assistant is waiting, release it last.
policy { name = "enrollment-baseline", description = "Baseline for new devices", version = "1.0" }

local BASELINE = plist.xml {
  PayloadType = "Configuration", PayloadVersion = 1, PayloadDisplayName = "Baseline",
  PayloadIdentifier = "com.example.orchard.baseline",
  PayloadUUID = "9A8B7C6D-5E4F-4A3B-8C2D-1E0F9A8B7C6D",
  PayloadContent = { {
    PayloadType = "com.apple.applicationaccess", PayloadVersion = 1,
    PayloadIdentifier = "com.example.orchard.baseline.restrictions",
    PayloadUUID = "4B3A2918-0F7E-4D6C-9B5A-483726150F4E",
    allowAccountModification = false,
  } },
}

policy:on("enrollment.enrolled", function(ctx, event)
  local d = ctx.device
  if not d or d.type ~= "device" then return end  -- user channels get nothing here
  ctx:enqueue(mdm.InstallProfile { Payload = BASELINE })
  if d.serial_number then
    ctx:enqueue(mdm.Settings { Settings = { { Item = "DeviceName", DeviceName = "ORCH-" .. d.serial_number } } })
  end
  if event.payload.AwaitingConfiguration then ctx:enqueue(mdm.DeviceConfigured {}) end
end)
