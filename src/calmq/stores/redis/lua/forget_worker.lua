-- forget_worker.lua: remove a worker's record from the registry at once (clean shutdown).
--
-- KEYS[1] info (HASH worker id -> WorkerInfo as msgspec JSON)
-- KEYS[2] seen (ZSET worker id -> expiry ms)
-- ARGV[1] worker id
-- Returns: 1 if a record was removed, 0 if there was none (forgetting is idempotent)
-- Errors: "calmq: foreign data in <key>" (a registry key of the wrong type), raised before
--         the first write

-- @include lib/foreign_type.lua

local info, seen = KEYS[1], KEYS[2]
local bad = foreign_type({{info, 'hash'}, {seen, 'zset'}})
if bad then return redis.error_reply(bad) end

local removed = redis.call('ZREM', seen, ARGV[1])
if redis.call('HDEL', info, ARGV[1]) == 1 then removed = 1 end
return removed
