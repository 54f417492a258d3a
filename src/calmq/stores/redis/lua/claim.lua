-- claim.lua: lease up to `limit` ready jobs, highest priority first, FIFO within a priority.
--
-- Due scheduled jobs are promoted first (bounded). A ready member whose job hash is missing
-- or corrupt (no state or payload) is dead-lettered with a reason and skipped, so one bad
-- record never blocks the queue. Each claimed job gets a fresh fencing token, attempt + 1
-- and a lease deadline. If ready jobs remain, the wake list is refilled so the next idle
-- worker wakes too (chained wake-ups).
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] ready (ZSET)
-- KEYS[3] scheduled (ZSET id -> run time ms)
-- KEYS[4] leases (ZSET id -> lease deadline ms)
-- KEYS[5] dead (ZSET id -> died ms)
-- KEYS[6] wake (LIST, at most one element)
-- KEYS[7] seq (integer counter)
-- KEYS[8] token (integer fencing counter)
-- KEYS[9] paused (any type; its existence pauses the queue)
-- ARGV[1] limit: most jobs to claim
-- ARGV[2] lease_ms
-- ARGV[3] promote_limit: most due scheduled jobs to promote first
-- ARGV[4] schema version for the minimal hash of a dead-lettered corrupt record
-- Returns: flat array: now_ms, next_due_ms ('' if nothing scheduled), lease_deadline_ms,
--          then 10 entries per claimed job: id, task, payload, token, attempt,
--          max_attempts, priority, enqueued_ms, run_at_ms, schema version
-- Errors: "calmq: foreign data in <key>" (a queue key of the wrong type), raised before
--         the first write

local tag, ready, scheduled, leases, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local wake, seq_key, token_key, paused = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local limit, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local promote_limit, version = tonumber(ARGV[3]), ARGV[4]

local function foreign(key, found, want)
  error({err = 'calmq: foreign data in ' .. key .. ' (a ' .. found .. ', expected a ' .. want .. ')'})
end

local function check_type(key, want)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= want then foreign(key, found, want) end
end

local function check_counter(key)
  check_type(key, 'string')
  local value = redis.call('GET', key)
  if value and not tonumber(value) then foreign(key, 'non-integer string', 'integer') end
end

-- Validate everything first: Redis does not roll back a script that fails half-way.
check_type(ready, 'zset')
check_type(scheduled, 'zset')
check_type(leases, 'zset')
check_type(dead, 'zset')
check_type(wake, 'list')
check_counter(seq_key)
check_counter(token_key)

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + lease_ms

local function next_due()
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  if #first == 0 then return '' end
  return first[2]
end

if redis.call('EXISTS', paused) == 1 then
  return {now, next_due(), deadline}
end

-- Promote due scheduled jobs with a new seq (they queue behind jobs already ready).
local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, promote_limit)
if #due > 0 then
  local seq = redis.call('INCRBY', seq_key, #due) - #due
  for _, id in ipairs(due) do
    seq = seq + 1
    local jk = tag .. ':job:' .. id
    local priority = 0
    -- A missing or foreign record is still moved: the loop below dead-letters it.
    if redis.call('TYPE', jk)['ok'] == 'hash' then
      priority = tonumber(redis.call('HGET', jk, 'priority')) or 0
      redis.call('HSET', jk, 'state', 'ready', 'seq', seq)
    end
    redis.call('ZADD', ready, -priority * 1e12 + seq, id)
  end
  -- The due jobs are exactly the lowest ranks (the script runs atomically).
  redis.call('ZREMRANGEBYRANK', scheduled, 0, #due - 1)
end

local out = {now, next_due(), deadline}
local popped = redis.call('ZPOPMIN', ready, limit)
for i = 1, #popped, 2 do
  local id = popped[i]
  local jk = tag .. ':job:' .. id
  local f = redis.pcall('HMGET', jk, 'state', 'payload', 'task', 'priority', 'attempt',
    'max_attempts', 'enq', 'run_at', 'v')
  if f.err or not f[1] or not f[2] then
    redis.call('ZADD', dead, now, id)
    -- A foreign-typed key is left as found; a missing or partial hash gets the reason.
    if not f.err then
      redis.call('HSET', jk, 'id', id, 'state', 'dead', 'error', 'job record missing or corrupt',
        'fin', now, 'token', '', 'v', f[9] or version)
    end
  else
    local token = redis.call('INCR', token_key)
    local attempt = (tonumber(f[5]) or 0) + 1
    redis.call('HSET', jk, 'state', 'running', 'token', token, 'attempt', attempt)
    redis.call('ZADD', leases, deadline, id)
    out[#out + 1] = id
    out[#out + 1] = f[3] or ''
    out[#out + 1] = f[2]
    out[#out + 1] = token
    out[#out + 1] = attempt
    out[#out + 1] = f[6] or 1
    out[#out + 1] = f[4] or 0
    out[#out + 1] = f[7] or now
    out[#out + 1] = f[8] or now
    out[#out + 1] = f[9] or version
  end
end

if redis.call('ZCARD', ready) > 0 and redis.call('LLEN', wake) == 0 then
  redis.call('RPUSH', wake, 1)
end
return out
