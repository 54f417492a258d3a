-- rescue_expired.lua: take back jobs whose lease deadline passed (their worker was lost).
--
-- Each expired job loses its token; it goes back to ready with its original score, or to
-- dead when that was its last allowed attempt. A job with a lane goes back to its lane
-- ':lane:<lane>'; its concurrency slot ':conc:<key>' is released. A job cancelled while
-- running (token "x:...") ends as cancelled. Also deletes up to `limit` dead jobs older
-- than the dead-letter TTL.
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] leases (ZSET id -> lease deadline ms)
-- KEYS[3] ready (ZSET)
-- KEYS[4] dead (ZSET id -> died ms)
-- KEYS[5] wake (LIST, at most one element)
-- KEYS[6] lanes (ZSET lane -> turn)
-- ARGV[1] limit
-- ARGV[2] dead_ttl_ms
-- ARGV[3] schema version for the minimal hash of a dead-lettered corrupt record
-- ARGV[4] completed_ttl_ms: how long a cancelled job is kept (0 = delete at once)
-- Returns: flat array: number of requeued ids, the requeued ids, then the dead-lettered ids
-- Errors: "calmq: foreign data in <key>" (a queue key of the wrong type), raised before
--         the first write

-- @include lib/foreign_type.lua
-- @include lib/now_ms.lua

local tag, leases, ready, dead, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lanes = KEYS[6]
local limit, dead_ttl, version = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local completed_ttl = tonumber(ARGV[4]) or 0
local bad = foreign_type({{leases, 'zset'}, {ready, 'zset'}, {dead, 'zset'}, {wake, 'list'},
    {lanes, 'zset'}})
if bad then return redis.error_reply(bad) end

local now = now_ms()
local requeued, buried = {}, {}
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  local jk = tag .. ':job:' .. id
  local f = redis.pcall('HMGET', jk, 'state', 'attempt', 'max_attempts', 'priority', 'seq',
    'lane', 'ck', 'token')
  if not f.err and f[7] and f[7] ~= '' then redis.pcall('ZREM', tag .. ':conc:' .. f[7], id) end
  if not f.err and f[1] and f[8] and string.sub(f[8], 1, 2) == 'x:' then
    redis.call('HDEL', jk, 'payload', 'tb')
    redis.call('HSET', jk, 'state', 'cancelled', 'fin', now, 'token', '', 'error', 'cancelled')
    if completed_ttl > 0 then redis.call('PEXPIRE', jk, completed_ttl) else redis.call('DEL', jk) end
  elseif f.err or not f[1] then
    -- Missing or foreign record: dead-letter it with a reason (a foreign key is left as is).
    if not f.err then
      redis.call('HSET', jk, 'id', id, 'state', 'dead', 'error', 'job record missing or corrupt',
        'fin', now, 'token', '', 'v', version)
    end
    redis.call('ZADD', dead, now, id)
    buried[#buried + 1] = id
  else
    local attempt, max_attempts = tonumber(f[2]) or 1, tonumber(f[3]) or 1
    local reason = 'lease expired on attempt ' .. attempt .. ' of ' .. max_attempts
      .. ': the worker was lost (crashed, killed or partitioned)'
    if attempt >= max_attempts then
      redis.call('HSET', jk, 'state', 'dead', 'token', '', 'error', reason, 'fin', now)
      redis.call('HDEL', jk, 'tb')
      redis.call('ZADD', dead, now, id)
      buried[#buried + 1] = id
    else
      redis.call('HSET', jk, 'state', 'ready', 'token', '', 'error', reason)
      redis.call('HDEL', jk, 'tb')
      local seq = tonumber(f[5]) or 0
      local score = -(tonumber(f[4]) or 0) * 1e12 + seq
      if f[6] and f[6] ~= '' then
        redis.pcall('ZADD', tag .. ':lane:' .. f[6], score, id)
        redis.call('ZADD', lanes, 'NX', seq, f[6])
      else
        redis.call('ZADD', ready, score, id)
      end
      requeued[#requeued + 1] = id
    end
  end
end
-- The expired leases are exactly the lowest ranks (the script runs atomically).
if #expired > 0 then redis.call('ZREMRANGEBYRANK', leases, 0, #expired - 1) end
if #requeued > 0 and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end

-- Forget dead jobs past the dead-letter TTL (oldest first, bounded).
local old = redis.call('ZRANGEBYSCORE', dead, '-inf', now - dead_ttl, 'LIMIT', 0, limit)
for _, id in ipairs(old) do redis.call('DEL', tag .. ':job:' .. id) end
if #old > 0 then redis.call('ZREMRANGEBYRANK', dead, 0, #old - 1) end

local out = {#requeued}
for _, id in ipairs(requeued) do out[#out + 1] = id end
for _, id in ipairs(buried) do out[#out + 1] = id end
return out
