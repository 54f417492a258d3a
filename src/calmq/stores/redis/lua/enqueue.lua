-- enqueue.lua: store a batch of new jobs of one queue, idempotent by job id.
--
-- A job whose hash already exists is left untouched and reported with its current state.
-- A new job goes to `scheduled` when it has a future run time, else to `ready`, scored
-- -priority * 1e12 + seq (higher priority first, FIFO within a priority).
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] ready (ZSET id -> -priority * 1e12 + seq)
-- KEYS[3] scheduled (ZSET id -> run time ms)
-- KEYS[4] wake (LIST, at most one element)
-- KEYS[5] seq (integer counter)
-- ARGV[1] schema version stored in each new hash
-- ARGV[2..] 7 per job: id, task, payload, priority, max_attempts, delay_ms, run_at_ms ('' = none)
-- Returns: flat array, 2 entries per job in input order: created (1 or 0), state
-- Errors: "calmq: foreign data in <key>" (a queue key or job key of the wrong type), raised
--         before the first write

local tag, ready, scheduled, wake, seq_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local version = ARGV[1]
local PER_JOB = 7

local function foreign(key, found, want)
  error({err = 'calmq: foreign data in ' .. key .. ' (a ' .. found .. ', expected a ' .. want .. ')'})
end

local function check_type(key, want)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= want then foreign(key, found, want) end
  return found
end

local function check_counter(key)
  check_type(key, 'string')
  local value = redis.call('GET', key)
  if value and not tonumber(value) then foreign(key, 'non-integer string', 'integer') end
end

-- Validate everything first: Redis does not roll back a script that fails half-way.
check_type(ready, 'zset')
check_type(scheduled, 'zset')
check_type(wake, 'list')
check_counter(seq_key)
local n = (#ARGV - 1) / PER_JOB
local fresh = 0
for i = 0, n - 1 do
  if check_type(tag .. ':job:' .. ARGV[2 + i * PER_JOB], 'hash') == 'none' then
    fresh = fresh + 1
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- One INCRBY for the batch; a duplicate id inside the batch just leaves a gap in seq.
local seq = 0
if fresh > 0 then seq = redis.call('INCRBY', seq_key, fresh) - fresh end

local out = {}
local woke = false
for i = 0, n - 1 do
  local b = 2 + i * PER_JOB
  local id = ARGV[b]
  local jk = tag .. ':job:' .. id
  if redis.call('EXISTS', jk) == 1 then
    out[#out + 1] = 0
    out[#out + 1] = redis.call('HGET', jk, 'state') or ''
  else
    seq = seq + 1
    local priority = tonumber(ARGV[b + 3])
    local delay = tonumber(ARGV[b + 5])
    local at = tonumber(ARGV[b + 6])
    local run_at = now
    if delay > 0 then
      run_at = now + delay
    elseif at and at > now then
      run_at = at
    end
    local state = 'ready'
    if run_at > now then state = 'scheduled' end
    redis.call('HSET', jk, 'id', id, 'task', ARGV[b + 1], 'payload', ARGV[b + 2],
      'state', state, 'priority', priority, 'attempt', 0, 'max_attempts', ARGV[b + 4],
      'token', '', 'seq', seq, 'enq', now, 'run_at', run_at, 'v', version)
    if state == 'ready' then
      redis.call('ZADD', ready, -priority * 1e12 + seq, id)
      woke = true
    else
      redis.call('ZADD', scheduled, run_at, id)
    end
    out[#out + 1] = 1
    out[#out + 1] = state
  end
end

if woke and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
return out
