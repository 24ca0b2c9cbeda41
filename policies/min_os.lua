-- Minimum OS version: ask every device for its OS daily; one below the floor
-- gets an update scheduled, a forced install a week later, and is reported
-- after two weeks. Compliant again as soon as it reports a good version.
policy { name = "min-os", description = "iOS and iPadOS 17.6 or later", version = "1.0" }

local FLOOR = "17.6"

policy:every("1d", function(ctx)
  ctx:enqueue(mdm.DeviceInformation { Queries = { "OSVersion", "ProductName" } })
end, { splay = "2h", name = "os-check" })

policy:on_result("DeviceInformation", function(ctx, result)
  local q = result.response and result.response.QueryResponses
  if result.status ~= "Acknowledged" or not q or not q.OSVersion then return end
  if version.at_least(q.OSVersion, FLOOR) then
    if ctx:compliant() then log.info("back above the floor on", q.OSVersion) end
    return
  end
  if ctx:noncompliant("OS " .. q.OSVersion .. " is below " .. FLOOR) then
    log.warn(ctx.enrollment_id, "runs", q.OSVersion)
  end
  ctx:escalate({
    { after = "0s", run = function(c)
        c:remediating(c:enqueue(mdm.ScheduleOSUpdate { Updates = { { InstallAction = "InstallASAP" } } }))
      end },
    { after = "7d", run = function(c)
        c:remediating(c:enqueue(mdm.ScheduleOSUpdate { Updates = { { InstallAction = "InstallForceRestart" } } }))
      end },
    { after = "14d", run = function(c) log.error(c.enrollment_id, "is still below", FLOOR, "after 14 days") end },
  })
end)
