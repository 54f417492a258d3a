-- promote_due.lua: move up to `limit` due scheduled jobs to ready, with a new seq.
--
-- A job with a lane goes to its lane ':lane:<lane>' (joining the round robin) instead.
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] scheduled (ZSET id -> run time ms)
-- KEYS[3] ready (ZSET)
-- KEYS[4] wake (LIST, at most one element)
-- KEYS[5] seq (integer counter)
-- KEYS[6] lanes (ZSET lane -> turn)
-- ARGV[1] limit
-- Returns: number of jobs moved
-- Errors: "calmq: foreign data in <key>" (a queue key of the wrong type), raised before
--         the first write

-- @include lib/foreign_type.lua
-- @include lib/now_ms.lua

local tag, scheduled, ready, wake, seq_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lanes = KEYS[6]
local bad = foreign_type({{scheduled, 'zset'}, {ready, 'zset'}, {wake, 'list'}, {seq_key, 'string'},
    {lanes, 'zset'}})
if bad then return redis.error_reply(bad) end
local current = redis.call('GET', seq_key)
if current and not tonumber(current) then
  return redis.error_reply('calmq: foreign data in ' .. seq_key .. ' (not an integer)')
end

local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #due == 0 then return 0 end
local seq = redis.call('INCRBY', seq_key, #due) - #due
for _, id in ipairs(due) do
  seq = seq + 1
  local jk = tag .. ':job:' .. id
  local priority, lane = 0, nil
  -- A missing or foreign record is still moved: claim dead-letters it with a reason.
  if redis.call('TYPE', jk)['ok'] == 'hash' then
    local f = redis.call('HMGET', jk, 'priority', 'lane')
    priority, lane = tonumber(f[1]) or 0, f[2]
    redis.call('HSET', jk, 'state', 'ready', 'seq', seq)
  end
  if lane and lane ~= '' then
    redis.pcall('ZADD', tag .. ':lane:' .. lane, -priority * 1e12 + seq, id)
    redis.call('ZADD', lanes, 'NX', seq, lane)
  else
    redis.call('ZADD', ready, -priority * 1e12 + seq, id)
  end
end
-- The due jobs are exactly the lowest ranks (the script runs atomically).
redis.call('ZREMRANGEBYRANK', scheduled, 0, #due - 1)
if redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
return #due
