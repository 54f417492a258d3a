-- enqueue.lua: store a batch of new jobs of one queue, idempotent by job id, applying the
-- controls a job carries (unique key, throttle) and the queue's bound on ready jobs.
--
-- A job whose hash already exists is left untouched and reported with its current state.
-- A new job goes to `scheduled` when it has a future run time, else to `ready` (or to its
-- lane when it has a rate, concurrency or fairness key), scored -priority * 1e12 + seq
-- (higher priority first, FIFO within a priority). In order, for each job: an existing id;
-- a unique key held by a pending (or, scope 'active', running; or, scope 'ttl', any) job:
-- kept, or replaced (payload swapped, run time now + delay: debounce); the throttle window
-- of its key (full: not stored); the queue bound for a job ready now (reject, or
-- dead-letter the oldest ready job with "dropped: queue full").
-- Derived keys (from KEYS[1]): job hashes ':job:<id>', unique keys ':uniq:<key>' (STRING
-- "<scope>:<job id>"), throttle windows ':throttle:<key>' (ZSET member -> ms), lanes
-- ':lane:<lane>' (ZSET id -> score).
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] ready (ZSET id -> -priority * 1e12 + seq)
-- KEYS[3] scheduled (ZSET id -> run time ms)
-- KEYS[4] wake (LIST, at most one element)
-- KEYS[5] seq (integer counter)
-- KEYS[6] lanes (ZSET lane -> turn: lanes with waiting jobs, in round-robin order)
-- KEYS[7] config (HASH max_ready, overflow; absent = unbounded)
-- KEYS[8] dead (ZSET id -> died ms)
-- ARGV[1] schema version stored in each new hash ('v'), unless 1: a hash without it is 1
-- ARGV[2..] per job 8 fields: id, task, payload, priority, max_attempts, delay_ms,
--           run_at_ms ('' = none), controls ('' = none, else one letter per control group
--           the job carries, in this order, each group's fields following in that order):
--           u: unique_key, unique_scope, unique_ttl_ms, unique_policy; t: throttle_key,
--           throttle_limit, throttle_period_ms; r: rate_key, rate_limit, rate_period_ms;
--           c: concurrency_key, concurrency_limit; l: lane
--         or the shared form, for jobs without controls that differ only in id and payload:
--           ARGV[2..9] a template job with id '' (no job has an empty id) and payload '',
--           whose task, priority, max_attempts, delay_ms and run_at_ms every job has, then
--           2 fields per job: id, payload (a sixth of the arguments to send and parse)
-- Returns: flat array, 4 entries per job in input order: created (1 or 0), state,
--          outcome (created|exists|duplicate|replaced|throttled|rejected), duplicate_of ('');
--          when every job was created, the short reply: their state (ready|scheduled) as
--          one string when they share it, else an array of the state of each
-- Errors: "calmq: foreign data in <key>" (a queue key, job key or derived key of the wrong
--         type), raised before the first write

-- @include lib/foreign.lua
-- @include lib/check_type.lua
-- @include lib/check_counter.lua
-- @include lib/checked.lua
-- @include lib/now_ms.lua
-- @include lib/int_text.lua

local tag, ready, scheduled, wake, seq_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lanes, config, dead = KEYS[6], KEYS[7], KEYS[8]
local version = ARGV[1]
local shared = ARGV[2] == ''

-- Where the fields of the job whose id is ARGV[b] are: the base its task, priority,
-- max_attempts, delay_ms and run_at_ms follow (at +1, +3, +4, +5, +6, as in the 8-field
-- form), and the index of its payload.
local function fields_at(b)
  if shared then return 2, b + 1 end
  return b, b + 2
end

-- Find where each job starts (8 fields, then the fields of the control groups it names).
-- Plain jobs are read straight from ARGV; only jobs with controls get a table, with the
-- values an absent group stood for when every group was sent ('' keys, '0' numbers), so
-- the job hashes stay as they were.
local starts, controls, i = {}, {}, 2
if shared then
  for b = 10, #ARGV, 2 do starts[#starts + 1] = b end
  i = #ARGV + 1
end
while i <= #ARGV do
  starts[#starts + 1] = i
  local flags = ARGV[i + 7]
  i = i + 8
  if flags ~= '' then
    local j = {uk = '', us = 'queued', ut = 0, up = 'keep', tk = '', tl = 0, tp = 0,
      rk = '', rl = '0', rp = '0', ck = '', cl = '0', lane = ''}
    if string.find(flags, 'u', 1, true) then
      j.uk, j.us, j.ut, j.up = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
      i = i + 4
    end
    if string.find(flags, 't', 1, true) then
      j.tk, j.tl, j.tp = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
      i = i + 3
    end
    if string.find(flags, 'r', 1, true) then
      j.rk, j.rl, j.rp = ARGV[i], ARGV[i + 1], ARGV[i + 2]
      i = i + 3
    end
    if string.find(flags, 'c', 1, true) then
      j.ck, j.cl = ARGV[i], ARGV[i + 1]
      i = i + 2
    end
    if string.find(flags, 'l', 1, true) then
      j.lane = ARGV[i]
      i = i + 1
    end
    controls[starts[#starts]] = j
  end
end

-- When the job whose fields are at ARGV[f] (see fields_at) runs: its delay from now, else
-- its run_at if that is later than now, else now.
local function run_time(f, now)
  local delay, at = tonumber(ARGV[f + 5]), tonumber(ARGV[f + 6])
  if delay > 0 then return now + delay end
  if at and at > now then return at end
  return now
end

-- Numbers go to Redis as text (lib/int_text.lua), made once and reused: now for every job,
-- a job's seq for its hash and its ready score (about a tenth of the bulk path's server
-- time). Every number written here is an integer (seq, clock and run times in ms).

-- The short reply for jobs that were all created, in these states (see Returns).
local function short_reply(states)
  local first = states[1]
  for k = 2, #states do
    if states[k] ~= first then return states end
  end
  return first or states  -- no jobs: an empty array
end

-- Write the hash of a new job from its fields at ARGV[f] and its payload ARGV[p] (numbers
-- kept as the text that arrived) with the given seq (text); `now_s` is int_text(now).
-- Returns its state: 'scheduled' when it runs later, else 'ready'. Fields at their defaults are left out and
-- every reader applies the default: attempt 0, an empty token, the key's id, and for a job
-- of priority 0 that runs now, its priority, run_at (= enq) and schema version (1). Each
-- field costs the bulk path about 0.2 µs per job in Redis (5 %).
local function store_job(jk, f, p, seq_s, now, now_s, run_at)
  local state, priority = 'ready', ARGV[f + 3]
  if run_at > now then state = 'scheduled' end
  if priority == '0' and run_at == now and version == '1' then
    redis.call('HSET', jk, 'task', ARGV[f + 1], 'payload', ARGV[p], 'state', state,
      'max_attempts', ARGV[f + 4], 'seq', seq_s, 'enq', now_s)
  else
    redis.call('HSET', jk, 'task', ARGV[f + 1], 'payload', ARGV[p], 'state', state,
      'max_attempts', ARGV[f + 4], 'seq', seq_s, 'enq', now_s, 'v', version,
      'priority', priority, 'run_at', int_text(run_at))
  end
  return state
end

local function lane_key(lane) return tag .. ':lane:' .. lane end

-- Put a ready job where claims find it: its lane (joining the round robin) or `ready`.
local function place(id, lane, score, turn)
  if lane and lane ~= '' then
    redis.call('ZADD', lane_key(lane), score, id)
    redis.call('ZADD', lanes, 'NX', turn, lane)
  else
    redis.call('ZADD', ready, score, id)
  end
end

-- Record what a new job's controls need: their fields in its hash (claims and completes
-- read them there) and its unique key. A throttle is the general path's own.
local function store_controls(jk, id, j)
  redis.call('HSET', jk, 'lane', j.lane, 'rk', j.rk, 'rl', j.rl, 'rp', j.rp, 'ck', j.ck,
    'cl', j.cl, 'uk', j.uk)
  if j.uk ~= '' then
    local uk = tag .. ':uniq:' .. j.uk
    redis.call('SET', uk, j.us .. ':' .. id)
    if j.us == 'ttl' then redis.call('PEXPIRE', uk, j.ut) end
  end
end

-- ZADD members (score, id, score, id, ...) within Lua's unpack limit.
local function zadd_all(key, members)
  for k = 1, #members, 1000 do
    redis.call('ZADD', key, unpack(members, k, math.min(k + 999, #members)))
  end
end

-- The plain path: no job carries controls and the queue has no bound (the common case).
-- The general path's results, and its checks of every key this path touches (lanes, dead
-- and the derived keys are not touched, so not checked), in fewer calls: the reads that
-- validate a key also fetch what is needed from it (HMGET config, LLEN wake), one EXISTS
-- covers every job key (TYPE per job only when some exist), the seq counter is checked by
-- its INCRBY (the first write: it fails whole, before anything changed), and the ready and
-- scheduled sets get one ZADD each. Returns nil, before any write, for a bounded queue.
local function enqueue_plain()
  if tonumber(checked('HMGET', config, 'hash', 'max_ready')[1]) then return nil end
  local idle = checked('LLEN', wake, 'list') == 0
  checked('ZCARD', ready, 'zset')
  local n, jks, later = #starts, {}, false
  for k, b in ipairs(starts) do
    jks[k] = tag .. ':job:' .. ARGV[b]
    local f = fields_at(b)
    later = later or ARGV[f + 5] ~= '0' or ARGV[f + 6] ~= ''
  end
  if later then check_type(scheduled, 'zset') end
  local fresh, prior = n, {}
  for k = 1, n, 500 do
    fresh = fresh - redis.call('EXISTS', unpack(jks, k, math.min(k + 499, n)))
  end
  if fresh < n then
    for k = 1, n do
      if check_type(jks[k], 'hash') == 'hash' then
        prior[k] = redis.call('HGET', jks[k], 'state') or ''
      end
    end
    fresh = n
    for _ in pairs(prior) do fresh = fresh - 1 end
  end
  -- Validated. A repeated id inside the batch is counted here too: it leaves a gap in seq.
  local seq = 0
  if fresh > 0 then seq = checked('INCRBY', seq_key, 'string', fresh) - fresh end
  local now = now_ms()
  local now_s = int_text(now)
  local made, ready_members, later_members, states, created, count = {}, {}, {}, {}, {}, 0
  for k, b in ipairs(starts) do
    local id = ARGV[b]
    local state = prior[k] or made[id]
    if not state then
      local f, p = fields_at(b)
      local run_at = now
      if later then run_at = run_time(f, now) end
      seq = seq + 1
      local seq_s = int_text(seq)
      state = store_job(jks[k], f, p, seq_s, now, now_s, run_at)
      if state == 'ready' then
        local priority = ARGV[f + 3]
        -- The score of priority 0 is the seq: its text is at hand.
        if priority == '0' then
          ready_members[#ready_members + 1] = seq_s
        else
          ready_members[#ready_members + 1] = -tonumber(priority) * 1e12 + seq
        end
        ready_members[#ready_members + 1] = id
      else
        later_members[#later_members + 1] = run_at
        later_members[#later_members + 1] = id
      end
      made[id] = state
      created[k], count = true, count + 1
    end
    states[k] = state
  end
  zadd_all(ready, ready_members)
  zadd_all(scheduled, later_members)
  if idle and #ready_members > 0 then redis.call('RPUSH', wake, 1) end
  if count == n then return short_reply(states) end
  local out = {}
  for k = 1, n do
    if created[k] then
      out[4 * k - 3], out[4 * k - 1] = 1, 'created'
    else
      out[4 * k - 3], out[4 * k - 1] = 0, 'exists'
    end
    out[4 * k - 2], out[4 * k] = states[k], ''
  end
  return out
end

-- One job (task.enqueue), plain (j = nil) or with controls but no throttle (a unique
-- key, a lane, or both): the general path's results and checks of the keys touched here,
-- without its tables and loops (a unique job: 12 Redis calls instead of 21). Returns nil,
-- before any write, for a bounded queue or a unique key that is set: the general path
-- decides (duplicate, replace, or a stale key to take over).
local function enqueue_one(j)
  if tonumber(checked('HMGET', config, 'hash', 'max_ready')[1]) then return nil end
  if j and j.uk ~= '' and checked('GET', tag .. ':uniq:' .. j.uk, 'string') then
    return nil
  end
  local idle = checked('LLEN', wake, 'list') == 0
  if j and j.lane ~= '' then
    checked('ZCARD', lane_key(j.lane), 'zset')
    checked('ZCARD', lanes, 'zset')
  else
    checked('ZCARD', ready, 'zset')  -- integer replies: cheaper than TYPE's status table
  end
  local id, delay, at = ARGV[2], tonumber(ARGV[7]), tonumber(ARGV[8])
  if delay > 0 or at then check_type(scheduled, 'zset') end
  local jk = tag .. ':job:' .. id
  if check_type(jk, 'hash') == 'hash' then
    return {0, redis.call('HGET', jk, 'state') or '', 'exists', ''}
  end
  local seq = checked('INCRBY', seq_key, 'string', 1)
  local now = now_ms()
  local run_at = run_time(2, now)
  local state = store_job(jk, 2, 4, int_text(seq), now, int_text(now), run_at)
  if j then store_controls(jk, id, j) end
  if state == 'ready' then
    place(id, j and j.lane, -tonumber(ARGV[5]) * 1e12 + seq, seq)
    if idle then redis.call('RPUSH', wake, 1) end
  else
    redis.call('ZADD', scheduled, run_at, id)
  end
  return state  -- the short reply
end

if next(controls) == nil then
  local out
  if #starts == 1 and not shared then out = enqueue_one(nil) else out = enqueue_plain() end
  if out then return out end
elseif #starts == 1 and controls[2].tk == '' then
  local out = enqueue_one(controls[2])
  if out then return out end
end

-- Validate everything first: Redis does not roll back a script that fails half-way.
check_type(ready, 'zset')
check_type(scheduled, 'zset')
check_type(wake, 'list')
check_counter(seq_key)
check_type(lanes, 'zset')
check_type(config, 'hash')
check_type(dead, 'zset')
local fresh = 0
for _, b in ipairs(starts) do
  if check_type(tag .. ':job:' .. ARGV[b], 'hash') == 'none' then fresh = fresh + 1 end
  local j = controls[b]
  if j and j.uk ~= '' then
    local uk = tag .. ':uniq:' .. j.uk
    if check_type(uk, 'string') == 'string' then
      local holder = string.match(redis.call('GET', uk), '^[a-z]+:(.*)$')
      if holder then
        local hk = tag .. ':job:' .. holder
        if check_type(hk, 'hash') == 'hash' then
          local lane = redis.call('HGET', hk, 'lane')
          if lane and lane ~= '' then check_type(lane_key(lane), 'zset') end
        end
      end
    end
  end
  if j and j.tk ~= '' then check_type(tag .. ':throttle:' .. j.tk, 'zset') end
  if j and j.lane ~= '' then check_type(lane_key(j.lane), 'zset') end
end

local now = now_ms()
local now_s = int_text(now)
-- One INCRBY for the batch; a duplicate id inside the batch just leaves a gap in seq.
local seq = 0
if fresh > 0 then seq = redis.call('INCRBY', seq_key, fresh) - fresh end

local max_ready, overflow = nil, nil
if redis.call('EXISTS', config) == 1 then
  local c = redis.call('HMGET', config, 'max_ready', 'overflow')
  max_ready, overflow = tonumber(c[1]), c[2]
end

local function unplace(id, lane)
  if lane and lane ~= '' then
    redis.call('ZREM', lane_key(lane), id)
    if redis.call('ZCARD', lane_key(lane)) == 0 then redis.call('ZREM', lanes, lane) end
  else
    redis.call('ZREM', ready, id)
  end
end

local function ready_count()
  local n = redis.call('ZCARD', ready)
  for _, lane in ipairs(redis.call('ZRANGE', lanes, 0, -1)) do
    n = n + redis.call('ZCARD', lane_key(lane))
  end
  return n
end

-- The oldest (lowest seq) of the front of `ready` and the head of each lane.
local function drop_oldest()
  local best, best_seq, best_lane = nil, nil, nil
  local function consider(key, lane)
    local head = redis.call('ZRANGE', key, 0, 0)
    if #head == 0 then return end
    local s = tonumber(redis.call('HGET', tag .. ':job:' .. head[1], 'seq')) or 0
    if not best_seq or s < best_seq then best, best_seq, best_lane = head[1], s, lane end
  end
  consider(ready, '')
  for _, lane in ipairs(redis.call('ZRANGE', lanes, 0, -1)) do consider(lane_key(lane), lane) end
  if not best then return false end
  unplace(best, best_lane)
  redis.call('HSET', tag .. ':job:' .. best, 'state', 'dead', 'error', 'dropped: queue full',
    'fin', now, 'token', '')
  redis.call('ZADD', dead, now, best)
  return true
end

local PENDING = {ready = true, scheduled = true}

-- A result when the unique key of `j` is held by another job, else nil.
local function check_unique(j, b)
  local uk = tag .. ':uniq:' .. j.uk
  local value = redis.call('GET', uk)
  if not value then return nil end
  local scope, holder = string.match(value, '^([a-z]+):(.*)$')
  if not holder then return nil end
  local hk = tag .. ':job:' .. holder
  local h = redis.call('HMGET', hk, 'state', 'lane', 'priority', 'seq')
  local state = h[1]
  local holds = scope == 'ttl' or (state and PENDING[state])
    or (scope == 'active' and state == 'running')
  if not holds then return nil end
  if j.up == 'replace' and state and PENDING[state] then
    local f, p = fields_at(b)
    local run_at = run_time(f, now)
    if state == 'scheduled' then redis.call('ZREM', scheduled, holder) else unplace(holder, h[2]) end
    local new_state = 'ready'
    if run_at > now then new_state = 'scheduled' end
    redis.call('HSET', hk, 'payload', ARGV[p], 'run_at', run_at, 'state', new_state)
    if new_state == 'scheduled' then
      redis.call('ZADD', scheduled, run_at, holder)
    else
      local s = tonumber(h[4]) or 0
      place(holder, h[2], -(tonumber(h[3]) or 0) * 1e12 + s, s)
    end
    return {0, new_state, 'replaced', holder}
  end
  return {0, state or 'succeeded', 'duplicate', holder}
end

local function throttled(j)
  local key = tag .. ':throttle:' .. j.tk
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - j.tp)
  return redis.call('ZCARD', key) >= j.tl
end

local out, states, all_created = {}, {}, true
local woke = false
for _, b in ipairs(starts) do
  local id, j = ARGV[b], controls[b]
  local jk = tag .. ':job:' .. id
  local result = nil
  if redis.call('EXISTS', jk) == 1 then
    result = {0, redis.call('HGET', jk, 'state') or '', 'exists', ''}
  end
  if not result and j and j.uk ~= '' then result = check_unique(j, b) end
  if not result and j and j.tk ~= '' and throttled(j) then
    result = {0, 'dropped', 'throttled', ''}
  end
  local f, p = fields_at(b)
  local run_at = run_time(f, now)
  if not result and max_ready and run_at <= now then
    local n = ready_count()
    if n >= max_ready then
      if overflow == 'drop_oldest' then
        while n >= max_ready and drop_oldest() do n = n - 1 end
      else
        result = {0, 'dropped', 'rejected', ''}
      end
    end
  end
  if not result then
    seq = seq + 1
    local priority = tonumber(ARGV[f + 3])
    local state = store_job(jk, f, p, int_text(seq), now, now_s, run_at)
    if j then
      store_controls(jk, id, j)
      if j.tk ~= '' then
        local key = tag .. ':throttle:' .. j.tk
        redis.call('ZADD', key, now, id)
        redis.call('PEXPIRE', key, j.tp)
      end
    end
    if state == 'ready' then
      place(id, j and j.lane, -priority * 1e12 + seq, seq)
      woke = true
    else
      redis.call('ZADD', scheduled, run_at, id)
    end
    out[#out + 1] = 1
    out[#out + 1] = state
    out[#out + 1] = 'created'
    out[#out + 1] = ''
    states[#states + 1] = state
  else
    for k = 1, 4 do out[#out + 1] = result[k] end
    all_created = false
  end
end

if woke and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
-- The short reply when every job was created, as on the plain path: less to send and to
-- decode for the common case of a job with controls.
if all_created then return short_reply(states) end
return out
