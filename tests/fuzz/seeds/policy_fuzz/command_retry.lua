-- Command failures: a query that ends in Error (or never gets an answer and
-- is failed by the queue) is retried with backoff by the hourly schedule,
-- at most three times; after that the device is flagged.
policy { name = "command-retry", description = "Retry failed queries with backoff", version = "1.0" }

local RETRY = { DeviceInformation = { Queries = { "OSVersion" } }, SecurityInfo = {}, ProfileList = {},
                InstalledApplicationList = {}, CertificateList = {} }
local BACKOFF = { duration("15m"), duration("2h"), duration("12h") }

policy:on_result("*", function(ctx, result)
  local rt = result.request_type
  if not RETRY[rt] then return end
  local key = ctx.enrollment_id .. "/" .. rt
  if result.status == "Acknowledged" then ctx:delete(key) return end
  local r = ctx:get(key) or { n = 0 }
  if r.n >= #BACKOFF then
    ctx:noncompliant(rt .. " failed " .. (r.n + 1) .. " times")
    return
  end
  ctx:put(key, { n = r.n + 1, due = ctx.now + BACKOFF[r.n + 1] })
end)

policy:every("1h", function(ctx)
  for _, item in ipairs(ctx:scan(ctx.enrollment_id .. "/")) do
    local rt = item.key:match("/(%a+)$")
    if item.value.due and item.value.due <= ctx.now and not item.value.sent then
      ctx:enqueue(mdm.command(rt, RETRY[rt]))
      item.value.sent = true
      ctx:put(item.key, item.value)
    end
  end
end, { splay = "10m" })
