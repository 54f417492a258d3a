-- claim.lua: lease up to `limit` ready jobs, highest priority first, FIFO within a priority;
-- round-robin over lanes when the queue has jobs with rate, concurrency or fairness keys.
--
-- Due scheduled jobs are promoted first (bounded). A ready member whose job hash is missing
-- or corrupt (no state or payload) is dead-lettered with a reason and skipped, so one bad
-- record never blocks the queue. Each claimed job gets a fresh fencing token, attempt + 1
-- and a lease deadline. Tokens are reserved a block per pass (one INCRBY, not one INCR per
-- job) and the leases of a ZPOPMIN's jobs written with one ZADD: per-job redis.call()s are
-- most of a claim's server time. A token reserved for a record found corrupt is never
-- used; tokens need only be unique and increasing. If ready jobs remain, the wake list is
-- refilled so the next idle worker wakes too (chained wake-ups).
-- Lanes: with no lane the claim is the plain ZPOPMIN. Otherwise each pass takes one plain
-- job and the head of each of the first `lane_scan` lanes (turn order) that its limits
-- allow: a rate window ':rate:<key>' (ZSET "id:token" -> start ms, server clock) with
-- fewer than its limit in the last period, and a concurrency set ':conc:<key>' (ZSET id ->
-- lease deadline) with fewer live leases than its limit. A served lane moves to the back.
-- A blocked lane is skipped (its jobs stay queued, no attempt spent); the earliest moment a
-- rate window reopens is folded into next_due_ms.
--
-- KEYS[1] tag "{prefix:queue}"; per-job hashes are KEYS[1] .. ':job:' .. id
-- KEYS[2] ready (ZSET)
-- KEYS[3] scheduled (ZSET id -> run time ms)
-- KEYS[4] leases (ZSET id -> lease deadline ms)
-- KEYS[5] dead (ZSET id -> died ms)
-- KEYS[6] wake (LIST, at most one element)
-- KEYS[7] seq (integer counter; also hands out lane turns)
-- KEYS[8] token (integer fencing counter)
-- KEYS[9] paused (any type; its existence pauses the queue)
-- KEYS[10] lanes (ZSET lane -> turn)
-- ARGV[1] limit: most jobs to claim
-- ARGV[2] lease_ms
-- ARGV[3] promote_limit: most due scheduled jobs to promote first
-- ARGV[4] schema version for the minimal hash of a dead-lettered corrupt record
-- ARGV[5] lane_scan: most lanes visited by one claim
-- Returns: flat array: now_ms, next_due_ms ('' if nothing scheduled or rate-blocked),
--          lease_deadline_ms, then 10 entries per claimed job: id, task, payload, token,
--          attempt, max_attempts, priority, enqueued_ms, run_at_ms, schema version (1
--          for a hash without 'v')
-- Errors: "calmq: foreign data in <key>" (a queue key, lane, rate or concurrency key of
--         the wrong type, or a counter that is not an integer), raised before the first
--         write; the seq counter only when the claim uses it (due jobs or lanes)
--
-- Cost: a claim is mostly fixed cost (a claim of one job on an idle worker is the common
-- case), and every redis.call() counts, so the checks are the reads the claim needs anyway
-- (ZCARD ready gives how many to pop, LLEN wake whether to refill it, the first scheduled
-- member the next due time) and the token counter is checked by its INCRBY, the first write.

-- @include lib/foreign.lua
-- @include lib/check_type.lua
-- @include lib/check_counter.lua
-- @include lib/checked.lua
-- @include lib/now_ms.lua
-- @include lib/int_text.lua

local tag, ready, scheduled, leases, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local wake, seq_key, token_key, paused, lanes = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local limit, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local promote_limit, version, lane_scan = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])

local function lane_key(lane) return tag .. ':lane:' .. lane end

-- The lane's derived keys: its own ZSET and the rate/concurrency keys of its head job.
local function check_lane(lane, probe_id)
  check_type(lane_key(lane), 'zset')
  local id = probe_id or redis.call('ZRANGE', lane_key(lane), 0, 0)[1]
  if not id then return end
  local f = redis.pcall('HMGET', tag .. ':job:' .. id, 'rk', 'ck')
  if f.err then return end
  if f[1] and f[1] ~= '' then check_type(tag .. ':rate:' .. f[1], 'zset') end
  if f[2] and f[2] ~= '' then check_type(tag .. ':conc:' .. f[2], 'zset') end
end

-- Validate everything first: Redis does not roll back a script that fails half-way.
local ready_count = checked('ZCARD', ready, 'zset')
checked('ZCARD', leases, 'zset')
checked('ZCARD', dead, 'zset')
local wake_idle = checked('LLEN', wake, 'list') == 0
local lane_count = checked('ZCARD', lanes, 'zset')

local now = now_ms()
local deadline = now + lease_ms
local deadline_text = int_text(deadline)  -- every lease of this claim (see lib/int_text.lua)

-- The earliest scheduled job: its run time is the reply's next_due_ms, and it says whether
-- anything is due at all (usually not: no ZRANGEBYSCORE then).
local first = checked('ZRANGE', scheduled, 'zset', 0, 0, 'WITHSCORES')

if redis.call('EXISTS', paused) == 1 then
  return {now, first[2] or '', deadline}
end

local due, due_lanes, laned = {}, {}, lane_count > 0
if first[2] and tonumber(first[2]) <= now then
  due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, promote_limit)
end
for _, id in ipairs(due) do
  local f = redis.pcall('HGET', tag .. ':job:' .. id, 'lane')
  if type(f) == 'string' and f ~= '' then
    due_lanes[id] = f
    laned = true
    check_lane(f, id)
  end
end
if lane_count > 0 then
  for _, lane in ipairs(redis.call('ZRANGE', lanes, 0, lane_scan - 1)) do check_lane(lane, nil) end
end
-- Promotion and lane turns take seq numbers; lanes reserve tokens one job at a time, after
-- writes: those counters are checked now. Without lanes, the token counter is checked by
-- its one INCRBY, the first write.
if #due > 0 or laned then check_counter(seq_key) end
if laned then check_counter(token_key) end

local token_next, token_last = 1, 0
local function reserve_tokens(n)
  token_last = checked('INCRBY', token_key, 'string', n)
  token_next = token_last - n + 1
end

-- Without lanes every due job joins `ready`, so the ZPOPMIN below returns this many: their
-- tokens are reserved first, the first write (a foreign token counter fails it whole).
local to_pop = math.min(limit, ready_count + #due)
if not laned and to_pop > 0 then reserve_tokens(to_pop) end

-- Promote due scheduled jobs with a new seq (they queue behind jobs already ready).
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
    local lane = due_lanes[id]
    if lane then
      redis.call('ZADD', lane_key(lane), -priority * 1e12 + seq, id)
      redis.call('ZADD', lanes, 'NX', seq, lane)
    else
      redis.call('ZADD', ready, -priority * 1e12 + seq, id)
    end
  end
  -- The due jobs are exactly the lowest ranks (the script runs atomically).
  redis.call('ZREMRANGEBYRANK', scheduled, 0, #due - 1)
end

local out = {now, first[2] or '', deadline}
if #due > 0 then  -- promoted: the earliest scheduled job is another one now
  out[2] = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')[2] or ''
end
local claimed = 0

-- (deadline, id) pairs of jobs just delivered, written into leases with one ZADD before
-- anything else can fail: a job marked running without a lease would never be rescued.
local lease_pairs = {}
local function write_leases()
  local from = 1
  while from <= #lease_pairs do
    local to = math.min(from + 1999, #lease_pairs)  -- within Lua's unpack limit
    redis.call('ZADD', leases, unpack(lease_pairs, from, to))
    from = to + 1
  end
  lease_pairs = {}
end

-- Lease one job taken out of ready or its lane; returns its token, or nil after
-- dead-lettering a missing or corrupt record.
local function deliver(id, ck)
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
    return nil
  end
  if token_next > token_last then reserve_tokens(1) end
  local token = token_next
  token_next = token + 1
  local attempt = (tonumber(f[5]) or 0) + 1
  redis.call('HSET', jk, 'state', 'running', 'token', int_text(token), 'attempt', int_text(attempt))
  lease_pairs[#lease_pairs + 1] = deadline_text
  lease_pairs[#lease_pairs + 1] = id
  if ck and ck ~= '' then
    write_leases()
    redis.call('ZADD', tag .. ':conc:' .. ck, deadline_text, id)
  end
  -- Written at known places: `#out` searches the table on every use.
  local at = 3 + 10 * claimed
  out[at + 1], out[at + 2], out[at + 3], out[at + 4] = id, f[3] or '', f[2], token
  out[at + 5], out[at + 6], out[at + 7], out[at + 8] = attempt, f[6] or 1, f[4] or 0, f[7] or now
  out[at + 9] = f[8] or f[7] or now  -- no run_at: it ran when enqueued
  out[at + 10] = f[9] or '1'  -- no 'v': version 1
  claimed = claimed + 1
  return token
end

local function pop_plain(n)
  local popped = redis.call('ZPOPMIN', ready, n)
  if laned and #popped > 2 then reserve_tokens(#popped / 2) end
  for i = 1, #popped, 2 do deliver(popped[i], nil) end
  write_leases()
  return #popped / 2
end

local reopen = nil

-- Claim the head of a lane if its limits allow: 'ok', 'blocked' or 'empty'.
local function serve(lane)
  local lk = lane_key(lane)
  local head = redis.call('ZRANGE', lk, 0, 0)
  if #head == 0 then
    redis.call('ZREM', lanes, lane)
    return 'empty'
  end
  local id = head[1]
  local f = redis.pcall('HMGET', tag .. ':job:' .. id, 'rk', 'rl', 'rp', 'ck', 'cl')
  if f.err then f = {} end
  local rk, rl, rp, ck, cl = f[1] or '', tonumber(f[2]), tonumber(f[3]), f[4] or '', tonumber(f[5])
  local rate_key = tag .. ':rate:' .. rk
  if rk ~= '' and rl and rp then
    redis.call('ZREMRANGEBYSCORE', rate_key, '-inf', now - rp)
    if redis.call('ZCARD', rate_key) >= rl then
      local oldest = redis.call('ZRANGE', rate_key, 0, 0, 'WITHSCORES')
      local at = tonumber(oldest[2]) + rp
      if not reopen or at < reopen then reopen = at end
      return 'blocked'
    end
  end
  if ck ~= '' and cl then
    -- Only live leases hold a slot: a crashed worker's slot comes back when it expires.
    if redis.call('ZCOUNT', tag .. ':conc:' .. ck, '(' .. now, '+inf') >= cl then
      return 'blocked'
    end
  end
  redis.call('ZREM', lk, id)
  local token = deliver(id, ck)
  write_leases()
  if token and rk ~= '' and rl and rp then
    redis.call('ZADD', rate_key, now, id .. ':' .. token)
    redis.call('PEXPIRE', rate_key, rp)
  end
  if redis.call('ZCARD', lk) == 0 then
    redis.call('ZREM', lanes, lane)
  else
    redis.call('ZADD', lanes, redis.call('INCR', seq_key), lane)  -- to the back
  end
  return 'ok'
end

local more = false
if not laned then
  -- Jobs are left in `ready` exactly when it held more than the claim took.
  if to_pop > 0 then pop_plain(to_pop) end
  more = ready_count + #due > to_pop
else
  local active = redis.call('ZRANGE', lanes, 0, lane_scan - 1)
  local plain = true
  while claimed < limit and (plain or #active > 0) do
    if #active == 0 then
      pop_plain(limit - claimed)
      break
    end
    if plain and pop_plain(1) == 0 then plain = false end
    local still = {}
    for _, lane in ipairs(active) do
      if claimed >= limit then
        still[#still + 1] = lane
      elseif serve(lane) == 'ok' then
        still[#still + 1] = lane
      end
    end
    active = still
  end
  more = (claimed >= limit and #active > 0) or redis.call('ZCARD', ready) > 0
end

if reopen and (out[2] == '' or reopen < tonumber(out[2])) then out[2] = reopen end
-- Nothing above pushes to wake, so its length read at the start still holds.
if more and wake_idle then redis.call('RPUSH', wake, 1) end
return out
