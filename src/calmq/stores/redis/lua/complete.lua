-- complete.lua: mark leased jobs succeeded, where the lease (token) is still ours.
--
-- With a completed TTL the hash is kept, stripped of payload, error and traceback, and
-- expires after the TTL so a late duplicate enqueue stays a no-op; with TTL 0 it is deleted.
-- The job's concurrency slot (':conc:<key>') and unique key (':uniq:<key>', unless scope
-- ttl) are released, and idle workers are woken when a slot was freed. A job cancelled
-- while running (token "x:" .. ours) is not ours any more: it is finished as cancelled.
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] leases (ZSET id -> lease deadline ms)
-- KEYS[3] wake (LIST, at most one element)
-- ARGV[1] completed_ttl_ms (0 = delete at once)
-- ARGV[2..] 2 per lease: id, token
-- Returns: array with 1 (completed) or 0 (not ours, nothing changed) per lease, in order
-- Errors: "calmq: foreign data in <key>" (leases or wake of the wrong type), raised before
--         any write

-- @include lib/foreign_type.lua
-- @include lib/now_ms.lua
-- @include lib/int_text.lua

local tag, leases, wake = KEYS[1], KEYS[2], KEYS[3]
local ttl = tonumber(ARGV[1])
local ttl_text = int_text(ttl)  -- once, not per job (see lib/int_text.lua)
local bad = foreign_type({{leases, 'zset'}, {wake, 'list'}})
if bad then return redis.error_reply(bad) end

local now = now_ms()
local now_text = int_text(now)
local out = {}
local freed = false
-- Ids to take out of leases with one ZREM at the end (one call per job costs more),
-- counted as they come (`#done` would search the table each time).
local done, done_count = {}, 0
-- Release what a finished job held: its concurrency slot and its unique key.
local function let_go(id, ck, uk)
  if ck and ck ~= '' then
    redis.pcall('ZREM', tag .. ':conc:' .. ck, id)
    freed = true
  end
  if uk and uk ~= '' then
    local key = tag .. ':uniq:' .. uk
    local value = redis.pcall('GET', key)
    if type(value) == 'string' and value ~= 'ttl:' .. id and string.sub(value, -#id - 1) == ':' .. id then
      redis.call('DEL', key)
    end
  end
end

for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local jk = tag .. ':job:' .. id
  local f = redis.pcall('HMGET', jk, 'token', 'state', 'ck', 'uk', 'error')
  if not f.err and f[1] == ARGV[i + 1] and f[2] == 'running' then
    out[i / 2] = 1
    done_count = done_count + 1
    done[done_count] = id
    let_go(id, f[3], f[4])
    if ttl > 0 then
      -- An empty payload reads as none; overwriting it saves an HDEL for the common job
      -- that never failed (a retried one also drops its last error and traceback).
      if f[5] then redis.call('HDEL', jk, 'tb', 'error') end
      redis.call('HSET', jk, 'state', 'succeeded', 'fin', now_text, 'token', '', 'payload', '')
      redis.call('PEXPIRE', jk, ttl_text)
    else
      redis.call('DEL', jk)
    end
  else
    out[i / 2] = 0
    if not f.err and f[1] == 'x:' .. ARGV[i + 1] and f[2] == 'running' then
      done_count = done_count + 1
      done[done_count] = id
      let_go(id, f[3], f[4])
      redis.call('HDEL', jk, 'payload', 'tb')
      redis.call('HSET', jk, 'state', 'cancelled', 'fin', now_text, 'token', '', 'error', 'cancelled')
      if ttl > 0 then redis.call('PEXPIRE', jk, ttl_text) else redis.call('DEL', jk) end
    end
  end
end
for from = 1, done_count, 4000 do  -- within Lua's unpack limit
  redis.call('ZREM', leases, unpack(done, from, math.min(from + 3999, done_count)))
end
if freed and redis.call('LLEN', wake) == 0 then
  redis.call('RPUSH', wake, 1)
end
return out
