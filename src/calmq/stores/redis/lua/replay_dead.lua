-- replay_dead.lua: put dead jobs back to ready with a fresh set of attempts.
--
-- Each replayed job gets attempt 0, a new seq (it queues behind ready jobs of its
-- priority) and keeps its last error for the record. A job with a lane goes back to its
-- lane ':lane:<lane>' (joining the round robin).
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] dead (ZSET id -> died ms)
-- KEYS[3] ready (ZSET)
-- KEYS[4] wake (LIST, at most one element)
-- KEYS[5] seq (integer counter)
-- KEYS[6] lanes (ZSET lane -> turn)
-- ARGV[1] limit: with no ids, replay the `limit` oldest dead jobs
-- ARGV[2..] job ids to replay (ids not in dead are skipped)
-- Returns: number of jobs replayed
-- Errors: "calmq: foreign data in <key>" (a queue key of the wrong type), raised before
--         the first write

-- @include lib/foreign_type.lua

local tag, dead, ready, wake, seq_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lanes = KEYS[6]
local bad = foreign_type({{dead, 'zset'}, {ready, 'zset'}, {wake, 'list'}, {seq_key, 'string'},
    {lanes, 'zset'}})
if bad then return redis.error_reply(bad) end
local current = redis.call('GET', seq_key)
if current and not tonumber(current) then
  return redis.error_reply('calmq: foreign data in ' .. seq_key .. ' (not an integer)')
end

local ids = {}
if #ARGV > 1 then
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', dead, 0, tonumber(ARGV[1]) - 1)
end

local replayed = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', dead, id) == 1 then
    local seq = redis.call('INCR', seq_key)
    local jk = tag .. ':job:' .. id
    local priority, lane = 0, nil
    -- A missing or foreign record is still moved: claim dead-letters it again, with a reason.
    if redis.call('TYPE', jk)['ok'] == 'hash' then
      local f = redis.call('HMGET', jk, 'priority', 'lane')
      priority, lane = tonumber(f[1]) or 0, f[2]
      redis.call('HSET', jk, 'state', 'ready', 'attempt', 0, 'seq', seq, 'token', '')
      redis.call('HDEL', jk, 'fin')
    end
    if lane and lane ~= '' then
      redis.pcall('ZADD', tag .. ':lane:' .. lane, -priority * 1e12 + seq, id)
      redis.call('ZADD', lanes, 'NX', seq, lane)
    else
      redis.call('ZADD', ready, -priority * 1e12 + seq, id)
    end
    replayed = replayed + 1
  end
end
if replayed > 0 and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
return replayed
