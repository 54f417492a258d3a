-- heartbeat.lua: record a worker as alive until ttl_ms from now, replacing its last record.
--
-- Also drops up to ARGV[4] expired records (expiry <= now), so a registry whose workers
-- crashed empties itself with bounded work per call.
--
-- KEYS[1] info (HASH worker id -> WorkerInfo as msgspec JSON)
-- KEYS[2] seen (ZSET worker id -> expiry ms: time of the last heartbeat + its ttl_ms)
-- ARGV[1] worker id
-- ARGV[2] the WorkerInfo record (msgspec JSON)
-- ARGV[3] ttl_ms
-- ARGV[4] prune limit: most expired records this call drops
-- Returns: the new expiry (ms, server clock)
-- Errors: "calmq: foreign data in <key>" (a registry key of the wrong type) or
--         "calmq: heartbeat ttl_ms must be a number", raised before the first write

-- @include lib/foreign_type.lua
-- @include lib/now_ms.lua

local info, seen = KEYS[1], KEYS[2]
local bad = foreign_type({{info, 'hash'}, {seen, 'zset'}})
if bad then return redis.error_reply(bad) end
local ttl = tonumber(ARGV[3])
if not ttl then return redis.error_reply('calmq: heartbeat ttl_ms must be a number') end

local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', seen, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
if #expired > 0 then
  redis.call('ZREM', seen, unpack(expired))
  redis.call('HDEL', info, unpack(expired))
end
local expiry = now + ttl
redis.call('ZADD', seen, expiry, ARGV[1])
redis.call('HSET', info, ARGV[1], ARGV[2])
return expiry
