-- complete.lua: mark leased jobs succeeded, where the lease (token) is still ours.
--
-- With a completed TTL the hash is kept, stripped of payload, error and traceback, and
-- expires after the TTL so a late duplicate enqueue stays a no-op; with TTL 0 it is deleted.
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] leases (ZSET id -> lease deadline ms)
-- ARGV[1] completed_ttl_ms (0 = delete at once)
-- ARGV[2..] 2 per lease: id, token
-- Returns: array with 1 (completed) or 0 (not ours, nothing changed) per lease, in order
-- Errors: "calmq: foreign data in <key>" (leases of the wrong type), raised before any write

local tag, leases = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[1])
local found = redis.call('TYPE', leases)['ok']
if found ~= 'none' and found ~= 'zset' then
  return redis.error_reply('calmq: foreign data in ' .. leases .. ' (a ' .. found .. ', expected a zset)')
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local jk = tag .. ':job:' .. id
  local f = redis.pcall('HMGET', jk, 'token', 'state')
  if not f.err and f[1] == ARGV[i + 1] and f[2] == 'running' then
    redis.call('ZREM', leases, id)
    if ttl > 0 then
      redis.call('HDEL', jk, 'payload', 'tb', 'error')
      redis.call('HSET', jk, 'state', 'succeeded', 'fin', now, 'token', '')
      redis.call('PEXPIRE', jk, ttl)
    else
      redis.call('DEL', jk)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
