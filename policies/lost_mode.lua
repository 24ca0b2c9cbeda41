-- Lost mode, driven by an admin: `orchardctl policy run lost-mode --device ID
-- --arg action=lost` locks the device in lost mode, locates it and plays a
-- sound; `action=approve-erase` allows erasing it once it has been lost for
-- 14 days; `action=found` ends lost mode.
policy { name = "lost-mode", description = "Lost devices, with erase on approval", version = "1.0" }

local ERASE_AFTER = duration("14d")

policy:on("policy.run", function(ctx, event)
  local action = (event.payload.args or {}).action
  local key = ctx.enrollment_id
  local state = ctx:get(key) or {}
  if action == "lost" then
    ctx:enqueue(mdm.EnableLostMode { Message = "This device is lost. Please call +1 555 0100.",
                                     PhoneNumber = "+15550100" })
    ctx:enqueue(mdm.DeviceLocation {})
    ctx:enqueue(mdm.PlayLostModeSound {})
    ctx:put(key, { since = ctx.now })
  elseif action == "approve-erase" and state.since then
    state.erase_approved = true
    ctx:put(key, state)
  elseif action == "found" then
    ctx:enqueue(mdm.DisableLostMode {})
    ctx:delete(key)
  end
end)

policy:every("1d", function(ctx)
  local state = ctx:get(ctx.enrollment_id)
  if state and state.erase_approved and not state.erased and ctx.now - state.since >= ERASE_AFTER then
    ctx:enqueue(mdm.EraseDevice {})
    state.erased = true
    ctx:put(ctx.enrollment_id, state)
  end
end)
