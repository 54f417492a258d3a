-- list_workers.lua: the live workers of the registry (expiry > now), after dropping up to
-- ARGV[1] expired records (expiry <= now). Writes nothing else.
--
-- An id in seen with no record in info (foreign tampering) is left out of the reply.
--
-- KEYS[1] info (HASH worker id -> WorkerInfo as msgspec JSON)
-- KEYS[2] seen (ZSET worker id -> expiry ms: time of the last heartbeat + its ttl_ms)
-- ARGV[1] prune limit: most expired records this call drops
-- Returns: {now, id, record, expiry, id, record, expiry, ...}: now and the live workers,
--          3 entries each, soonest expiry first (times in ms, server clock)
-- Errors: "calmq: foreign data in <key>" (a registry key of the wrong type), raised before
--         the first write

-- @include lib/foreign_type.lua
-- @include lib/now_ms.lua

local info, seen = KEYS[1], KEYS[2]
local bad = foreign_type({{info, 'hash'}, {seen, 'zset'}})
if bad then return redis.error_reply(bad) end

local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', seen, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #expired > 0 then
  redis.call('ZREM', seen, unpack(expired))
  redis.call('HDEL', info, unpack(expired))
end
local reply = {now}
local live = redis.call('ZRANGEBYSCORE', seen, '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  local record = redis.call('HGET', info, live[i])
  if record then
    reply[#reply + 1] = live[i]
    reply[#reply + 1] = record
    reply[#reply + 1] = math.floor(tonumber(live[i + 1]))
  end
end
return reply
