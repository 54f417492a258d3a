-- release.lua: give leased jobs back to ready without spending an attempt (shutdown).
--
-- Each job returns with its original score (priority and seq), so it goes back to the front
-- of its priority (in its lane ':lane:<lane>', when it has one); attempt is decremented and
-- the token cleared; its concurrency slot (':conc:<key>') is released. A job cancelled
-- while running (token "x:" .. ours) is finished as cancelled instead (not counted).
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] leases (ZSET id -> lease deadline ms)
-- KEYS[3] ready (ZSET)
-- KEYS[4] wake (LIST, at most one element)
-- KEYS[5] lanes (ZSET lane -> turn)
-- ARGV[1] completed_ttl_ms: how long a cancelled job is kept (0 = delete at once)
-- ARGV[2..] 2 per lease: id, token
-- Returns: number of leases that were ours (and so released)
-- Errors: "calmq: foreign data in <key>" (a queue key of the wrong type), raised before
--         the first write

-- @include lib/foreign_type.lua
-- @include lib/now_ms.lua

local tag, leases, ready, wake, lanes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ttl = tonumber(ARGV[1])
local bad = foreign_type({{leases, 'zset'}, {ready, 'zset'}, {wake, 'list'}, {lanes, 'zset'}})
if bad then return redis.error_reply(bad) end

local now = now_ms()
local released = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local jk = tag .. ':job:' .. id
  local f = redis.pcall('HMGET', jk, 'token', 'state', 'attempt', 'priority', 'seq', 'lane', 'ck')
  local ours = not f.err and f[1] == ARGV[i + 1] and f[2] == 'running'
  local cancelled = not f.err and f[1] == 'x:' .. ARGV[i + 1] and f[2] == 'running'
  if ours or cancelled then
    redis.call('ZREM', leases, id)
    if f[7] and f[7] ~= '' then redis.pcall('ZREM', tag .. ':conc:' .. f[7], id) end
  end
  if ours then
    local attempt = math.max((tonumber(f[3]) or 1) - 1, 0)
    local seq = tonumber(f[5]) or 0
    local score = -(tonumber(f[4]) or 0) * 1e12 + seq
    redis.call('HSET', jk, 'state', 'ready', 'token', '', 'attempt', attempt)
    if f[6] and f[6] ~= '' then
      redis.pcall('ZADD', tag .. ':lane:' .. f[6], score, id)
      redis.call('ZADD', lanes, 'NX', seq, f[6])
    else
      redis.call('ZADD', ready, score, id)
    end
    released = released + 1
  elseif cancelled then
    redis.call('HDEL', jk, 'payload', 'tb')
    redis.call('HSET', jk, 'state', 'cancelled', 'fin', now, 'token', '', 'error', 'cancelled')
    if ttl > 0 then redis.call('PEXPIRE', jk, ttl) else redis.call('DEL', jk) end
  end
end
if released > 0 and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
return released
