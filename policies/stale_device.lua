-- Stale devices: a device silent for the configured days (device.silent) is
-- asked for its information (queueing it pushes the device); silent for 30
-- days or more, it is non-compliant until it answers again.
policy { name = "stale-device", description = "Devices that stop checking in", version = "1.0" }

policy:on("device.silent", function(ctx, event)
  ctx:enqueue(mdm.DeviceInformation { Queries = { "OSVersion", "DeviceName" } })
  local days = event.payload.days_silent or 0
  if days >= 30 then
    if ctx:noncompliant("silent for " .. days .. " days") then
      log.warn(ctx.enrollment_id, "has been silent for", days, "days")
    end
  end
end)

policy:on_result("DeviceInformation", function(ctx, result)
  if result.status == "Acknowledged" and ctx:compliant() then log.info(ctx.enrollment_id, "is back") end
end)
