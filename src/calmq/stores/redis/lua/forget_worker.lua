-- forget_worker.lua: remove a worker's record from the registry at once (clean shutdown).
--
-- KEYS[1] info (HASH worker id -> WorkerInfo as msgspec JSON)
-- KEYS[2] seen (ZSET worker id -> expiry ms)
-- ARGV[1] worker id
-- Returns: 1 if a record was removed, 0 if there was none (forgetting is idempotent)
-- Errors: "calmq: foreign data in <key>" (a registry key of the wrong type), raised before
--         the first write

local info, seen = KEYS[1], KEYS[2]
for _, pair in ipairs({{info, 'hash'}, {seen, 'zset'}}) do
  local found = redis.call('TYPE', pair[1])['ok']
  if found ~= 'none' and found ~= pair[2] then
    return redis.error_reply('calmq: foreign data in ' .. pair[1] .. ' (a ' .. found
      .. ', expected a ' .. pair[2] .. ')')
  end
end

local removed = redis.call('ZREM', seen, ARGV[1])
if redis.call('HDEL', info, ARGV[1]) == 1 then removed = 1 end
return removed
