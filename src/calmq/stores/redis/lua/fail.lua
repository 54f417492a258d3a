-- fail.lua: record a failed attempt of a leased job: schedule a retry or dead-letter it.
--
-- Acts only when the lease (token) is still ours; otherwise nothing changes ("stale"),
-- except that a job cancelled while running (token "x:" .. ours) is finished as cancelled.
-- The job's concurrency slot (':conc:<key>') is released (waking idle workers), and its
-- unique key (':uniq:<key>', unless scope ttl) when it dies.
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] leases (ZSET id -> lease deadline ms)
-- KEYS[3] scheduled (ZSET id -> run time ms)
-- KEYS[4] dead (ZSET id -> died ms)
-- KEYS[5] wake (LIST, at most one element)
-- ARGV[1] job id
-- ARGV[2] lease token
-- ARGV[3] error message (already truncated by the client)
-- ARGV[4] traceback ('' = none)
-- ARGV[5] retry_in_ms ('' = no retry: dead-letter the job)
-- ARGV[6] completed_ttl_ms: how long a cancelled job is kept (0 = delete at once)
-- Returns: "retry_scheduled", "dead" or "stale"
-- Errors: "calmq: foreign data in <key>" (a queue key of the wrong type), raised before
--         the first write

-- @include lib/foreign_type.lua
-- @include lib/now_ms.lua

local tag, leases, scheduled, dead, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, token, err, tb, retry_in = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local bad = foreign_type({{leases, 'zset'}, {scheduled, 'zset'}, {dead, 'zset'}, {wake, 'list'}})
if bad then return redis.error_reply(bad) end

local ttl = tonumber(ARGV[6]) or 0
local jk = tag .. ':job:' .. id
local f = redis.pcall('HMGET', jk, 'token', 'state', 'ck', 'uk')
if f.err or f[2] ~= 'running' or (f[1] ~= token and f[1] ~= 'x:' .. token) then
  return 'stale'
end

local now = now_ms()
redis.call('ZREM', leases, id)
if f[3] and f[3] ~= '' then
  redis.pcall('ZREM', tag .. ':conc:' .. f[3], id)
  if redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
end

local function drop_unique()
  if not f[4] or f[4] == '' then return end
  local key = tag .. ':uniq:' .. f[4]
  local value = redis.pcall('GET', key)
  if type(value) == 'string' and value ~= 'ttl:' .. id and string.sub(value, -#id - 1) == ':' .. id then
    redis.call('DEL', key)
  end
end

if f[1] ~= token then  -- cancelled while running
  drop_unique()
  redis.call('HDEL', jk, 'payload', 'tb')
  redis.call('HSET', jk, 'state', 'cancelled', 'fin', now, 'token', '', 'error', 'cancelled')
  if ttl > 0 then redis.call('PEXPIRE', jk, ttl) else redis.call('DEL', jk) end
  return 'stale'
end
redis.call('HSET', jk, 'token', '', 'error', err)
if tb == '' then redis.call('HDEL', jk, 'tb') else redis.call('HSET', jk, 'tb', tb) end

if retry_in == '' then
  drop_unique()
  redis.call('HSET', jk, 'state', 'dead', 'fin', now)
  redis.call('ZADD', dead, now, id)
  return 'dead'
end
local run_at = now + tonumber(retry_in)
redis.call('HSET', jk, 'state', 'scheduled', 'run_at', run_at)
redis.call('ZADD', scheduled, run_at, id)
-- An immediate retry is claimable now (claim promotes it): wake an idle worker.
if run_at <= now and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
return 'retry_scheduled'
