-- extend_leases.lua: push lease deadlines to now + lease_ms for the leases still ours.
--
-- A lease is ours when the job hash holds the same token and state "running" (fencing).
-- A job with a concurrency key also pushes its slot's deadline (':conc:<key>' ZSET), since
-- only live leases hold a slot. A cancelled running job's token no longer matches: lost.
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] leases (ZSET id -> lease deadline ms)
-- ARGV[1] lease_ms
-- ARGV[2..] 2 per lease: id, token
-- Returns: array of the ids whose lease is no longer ours
-- Errors: "calmq: foreign data in <key>" (leases of the wrong type), raised before any write

-- @include lib/foreign_type.lua
-- @include lib/now_ms.lua
-- @include lib/int_text.lua

local tag, leases = KEYS[1], KEYS[2]
local bad = foreign_type({{leases, 'zset'}})
if bad then return redis.error_reply(bad) end

local deadline = int_text(now_ms() + tonumber(ARGV[1]))  -- one text for every lease
local lost = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  -- pcall: a foreign-typed job key means the lease is not ours, not a script failure.
  local f = redis.pcall('HMGET', KEYS[1] .. ':job:' .. id, 'token', 'state', 'ck')
  if not f.err and f[1] == ARGV[i + 1] and f[2] == 'running' then
    redis.call('ZADD', leases, 'XX', deadline, id)
    if f[3] and f[3] ~= '' then redis.pcall('ZADD', tag .. ':conc:' .. f[3], 'XX', deadline, id) end
  else
    lost[#lost + 1] = id
  end
end
return lost
