-- release.lua: give leased jobs back to ready without spending an attempt (shutdown).
--
-- Each job returns with its original score (priority and seq), so it goes back to the front
-- of its priority; attempt is decremented and the token cleared.
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] leases (ZSET id -> lease deadline ms)
-- KEYS[3] ready (ZSET)
-- KEYS[4] wake (LIST, at most one element)
-- ARGV[1..] 2 per lease: id, token
-- Returns: number of leases that were ours (and so released)
-- Errors: "calmq: foreign data in <key>" (a queue key of the wrong type), raised before
--         the first write

local tag, leases, ready, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
for _, pair in ipairs({{leases, 'zset'}, {ready, 'zset'}, {wake, 'list'}}) do
  local found = redis.call('TYPE', pair[1])['ok']
  if found ~= 'none' and found ~= pair[2] then
    return redis.error_reply('calmq: foreign data in ' .. pair[1] .. ' (a ' .. found
      .. ', expected a ' .. pair[2] .. ')')
  end
end

local released = 0
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  local jk = tag .. ':job:' .. id
  local f = redis.pcall('HMGET', jk, 'token', 'state', 'attempt', 'priority', 'seq')
  if not f.err and f[1] == ARGV[i + 1] and f[2] == 'running' then
    local attempt = math.max((tonumber(f[3]) or 1) - 1, 0)
    redis.call('HSET', jk, 'state', 'ready', 'token', '', 'attempt', attempt)
    redis.call('ZREM', leases, id)
    redis.call('ZADD', ready, -(tonumber(f[4]) or 0) * 1e12 + (tonumber(f[5]) or 0), id)
    released = released + 1
  end
end
if released > 0 and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
return released
