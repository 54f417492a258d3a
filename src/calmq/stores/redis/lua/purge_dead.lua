-- purge_dead.lua: delete dead jobs for good.
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] dead (ZSET id -> died ms)
-- ARGV[1] limit: with no ids, purge the `limit` oldest dead jobs
-- ARGV[2..] job ids to purge (ids not in dead are skipped)
-- Returns: number of jobs deleted
-- Errors: "calmq: foreign data in <key>" (dead of the wrong type), raised before any write

-- @include lib/foreign_type.lua

local tag, dead = KEYS[1], KEYS[2]
local bad = foreign_type({{dead, 'zset'}})
if bad then return redis.error_reply(bad) end

local ids = {}
if #ARGV > 1 then
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', dead, 0, tonumber(ARGV[1]) - 1)
end
local purged = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', dead, id) == 1 then
    redis.call('DEL', tag .. ':job:' .. id)
    purged = purged + 1
  end
end
return purged
