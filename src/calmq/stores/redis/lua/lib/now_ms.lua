-- lib/now_ms.lua: now_ms(), the server's clock in ms (Redis TIME: seconds and microseconds).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
