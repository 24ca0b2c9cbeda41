-- Required and forbidden apps, from InstalledApplicationList. App lists lag
-- on iOS, so nothing is chained destructively: one install or removal per
-- app is asked at most once a day, and a removal never triggers an install.
policy { name = "apps", description = "Required and forbidden apps", version = "1.0" }

local REQUIRED = { ["com.example.vpn"] = { iTunesStoreID = 1234567890 } }
local FORBIDDEN = { ["com.example.game"] = true }
local DAY = duration("1d")

local function ask_once_a_day(ctx, app, cmd)
  local key = ctx.enrollment_id .. "/" .. app
  local last = ctx:get(key)
  if last and ctx.now - last < DAY then return end
  ctx:put(key, ctx.now)
  ctx:enqueue(cmd)
end

policy:on_result("InstalledApplicationList", function(ctx, result)
  if result.status ~= "Acknowledged" then return end
  local installed = {}
  for _, app in ipairs(result.response.InstalledApplicationList or {}) do installed[app.Identifier] = true end
  local missing, unwanted = {}, {}
  for id, source in pairs(REQUIRED) do
    if not installed[id] then missing[#missing + 1] = id; ask_once_a_day(ctx, id, mdm.InstallApplication(source)) end
  end
  for id in pairs(FORBIDDEN) do
    if installed[id] then unwanted[#unwanted + 1] = id; ask_once_a_day(ctx, id, mdm.RemoveApplication { Identifier = id }) end
  end
  if #missing + #unwanted == 0 then ctx:compliant() return end
  table.sort(missing); table.sort(unwanted)
  ctx:noncompliant("missing: " .. table.concat(missing, ",") .. "; unwanted: " .. table.concat(unwanted, ","))
end)
