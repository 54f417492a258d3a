-- cancel.lua: cancel one job: remove it if queued, revoke its lease if running.
--
-- A ready (plain or in its lane ':lane:<lane>') or scheduled job is removed from its index
-- and kept as "cancelled" for completed_ttl (deleted at once with TTL 0); its unique key
-- (':uniq:<key>') is released. A running job keeps running, but its token becomes
-- "x:" .. token: extend_leases reports it lost, complete/fail/release are stale and finish
-- it as cancelled, or rescue_expired does once the lease expires (its concurrency slot is
-- held until then, as its code may still be running).
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] ready (ZSET)
-- KEYS[3] scheduled (ZSET id -> run time ms)
-- KEYS[4] lanes (ZSET lane -> turn)
-- ARGV[1] job id
-- ARGV[2] completed_ttl_ms (0 = delete at once)
-- Returns: "cancelled", "cancelling" or "not_cancellable" (unknown id, or finished)
-- Errors: "calmq: foreign data in <key>" (a queue key of the wrong type), raised before
--         the first write

-- @include lib/foreign_type.lua
-- @include lib/now_ms.lua

local tag, ready, scheduled, lanes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, ttl = ARGV[1], tonumber(ARGV[2])
local bad = foreign_type({{ready, 'zset'}, {scheduled, 'zset'}, {lanes, 'zset'}})
if bad then return redis.error_reply(bad) end

local jk = tag .. ':job:' .. id
local f = redis.pcall('HMGET', jk, 'state', 'token', 'lane', 'uk')
if f.err or not f[1] then return 'not_cancellable' end
local state = f[1]

if state == 'running' then
  if string.sub(f[2] or '', 1, 2) ~= 'x:' then redis.call('HSET', jk, 'token', 'x:' .. (f[2] or '')) end
  return 'cancelling'
end
if state ~= 'ready' and state ~= 'scheduled' then return 'not_cancellable' end

if state == 'scheduled' then
  redis.call('ZREM', scheduled, id)
elseif f[3] and f[3] ~= '' then
  local lk = tag .. ':lane:' .. f[3]
  redis.pcall('ZREM', lk, id)
  if redis.call('TYPE', lk)['ok'] == 'none' then redis.call('ZREM', lanes, f[3]) end
else
  redis.call('ZREM', ready, id)
end
if f[4] and f[4] ~= '' then
  local key = tag .. ':uniq:' .. f[4]
  local value = redis.pcall('GET', key)
  if type(value) == 'string' and value ~= 'ttl:' .. id and string.sub(value, -#id - 1) == ':' .. id then
    redis.call('DEL', key)
  end
end
local now = now_ms()
redis.call('HDEL', jk, 'payload', 'tb')
redis.call('HSET', jk, 'state', 'cancelled', 'fin', now, 'token', '', 'error', 'cancelled')
if ttl > 0 then redis.call('PEXPIRE', jk, ttl) else redis.call('DEL', jk) end
return 'cancelled'
