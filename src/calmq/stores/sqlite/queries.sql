-- Every SQL statement of the SQLite store, one per "-- name: <query_name>" block.
-- Loaded once per store by calmq.stores.sqlite.queries; business code never builds SQL.
-- Lists of ids travel as one JSON array parameter read with json_each(:ids), so no
-- statement text depends on the number of items.

-- ---------------------------------------------------------------- connection set-up

-- name: get_journal_mode
PRAGMA journal_mode;

-- WAL: readers never block the writer and the writer never blocks readers, so an idle
-- worker polling an empty queue cannot stall producers (the incident calmq exists for).
-- name: set_journal_mode_wal
PRAGMA journal_mode = WAL;

-- NORMAL is durable against application crashes in WAL mode; only an OS crash or power
-- loss can lose the last commits. FULL would fsync every commit and cap throughput.
-- name: set_synchronous_normal
PRAGMA synchronous = NORMAL;

-- Read back to prove the busy timeout (set by sqlite3.connect(timeout=...)) is in force.
-- name: get_busy_timeout
PRAGMA busy_timeout;

-- Changes whenever ANOTHER connection commits to the file: a cheap cross-process
-- "something happened" signal for wait_for_work.
-- name: data_version
PRAGMA data_version;

-- Forces SQLite to read the header now, so "file is not a database" surfaces at open.
-- name: schema_probe
SELECT count(*) FROM sqlite_master;

-- ---------------------------------------------------------------- migrations

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS calmq_migrations (
    version INTEGER NOT NULL PRIMARY KEY,
    applied_at INTEGER NOT NULL
);

-- name: migrations_table_exists
SELECT EXISTS (
    SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'calmq_migrations'
);

-- name: applied_versions
SELECT version FROM calmq_migrations ORDER BY version;

-- name: record_migration
INSERT INTO calmq_migrations (version, applied_at) VALUES (:version, :applied_at);

-- ---------------------------------------------------------------- enqueue

-- Reserve :n sequence numbers; the caller uses (value - n, value].
-- name: reserve_seq
UPDATE seq_counter SET value = value + :n WHERE id = 1 RETURNING value;

-- name: bump_seq
UPDATE seq_counter SET value = value + :n WHERE id = 1;

-- Idempotent by (queue, id): an existing job is left untouched (rowcount 0).
-- name: insert_job
INSERT INTO jobs (
    queue, id, task, payload, state, priority, attempt, max_attempts, seq,
    enqueued_at, run_at, v
) VALUES (
    :queue, :id, :task, :payload, :state, :priority, 0, :max_attempts, :seq,
    :now, :run_at, :v
)
ON CONFLICT (queue, id) DO NOTHING;

-- A job with limits: the plain insert plus its lane and limit columns. State is 'waiting'
-- (in its lane) when it has a lane and is ready now.
-- name: insert_limited_job
INSERT INTO jobs (
    queue, id, task, payload, state, priority, attempt, max_attempts, seq,
    enqueued_at, run_at, v, lane, rate_key, rate_limit, rate_period, conc_key, conc_limit
) VALUES (
    :queue, :id, :task, :payload, :state, :priority, 0, :max_attempts, :seq,
    :now, :run_at, :v, :lane, :rate_key, :rate_limit, :rate_period, :conc_key, :conc_limit
)
ON CONFLICT (queue, id) DO NOTHING;

-- name: job_state
SELECT state FROM jobs WHERE queue = :queue AND id = :id;

-- name: register_queue
INSERT INTO queues (name) VALUES (:queue) ON CONFLICT (name) DO NOTHING;

-- ---------------------------------------------------------------- claim

-- Read-only probe run before taking the write lock: an idle worker polling an empty
-- queue never takes the write lock at all. Takes a JSON array of queue names.
-- A lane counts only when it is not blocked by its rate or concurrency limit, so an idle
-- worker does not spin on a lane that cannot be served yet.
-- name: claimable
SELECT EXISTS (
    SELECT 1 FROM json_each(:queues) AS q
    WHERE NOT EXISTS (SELECT 1 FROM paused WHERE paused.queue = q.value)
      AND (
        EXISTS (SELECT 1 FROM jobs WHERE queue = q.value AND state = 'ready')
        OR EXISTS (
            SELECT 1 FROM jobs
            WHERE queue = q.value AND state = 'scheduled' AND run_at <= :now
        )
        OR EXISTS (SELECT 1 FROM lanes WHERE queue = q.value AND blocked_until <= :now)
      )
);

-- name: is_paused
SELECT EXISTS (SELECT 1 FROM paused WHERE queue = :queue);

-- What a claim needs to know first, in one statement: paused? any lanes?
-- name: claim_flags
SELECT EXISTS (SELECT 1 FROM paused WHERE queue = :queue),
       EXISTS (SELECT 1 FROM lanes WHERE queue = :queue);

-- Due scheduled jobs become ready with a NEW seq (behind the jobs already ready), in
-- due order. The seq base is read once; the caller then bumps the counter by rowcount.
-- name: promote_due
UPDATE jobs SET state = CASE WHEN lane IS NULL THEN 'ready' ELSE 'waiting' END,
    seq = due.base + due.rn
FROM (
    SELECT rowid AS rid,
           row_number() OVER (ORDER BY run_at, seq) AS rn,
           (SELECT value FROM seq_counter WHERE id = 1) AS base
    FROM jobs
    WHERE queue = :queue AND state = 'scheduled' AND run_at <= :now
    ORDER BY run_at, seq
    LIMIT :limit
) AS due
WHERE jobs.rowid = due.rid
RETURNING lane, conc_key, seq;

-- One statement: select-and-lease in a single write, never read-then-write.
-- name: claim_ready
UPDATE jobs
SET state = 'running', token = :token, attempt = attempt + 1, lease_deadline = :deadline
WHERE rowid IN (
    SELECT rowid FROM jobs
    WHERE queue = :queue AND state = 'ready'
    ORDER BY priority DESC, seq
    LIMIT :limit
)
RETURNING rowid, id, task, payload, attempt, max_attempts, priority, enqueued_at,
          run_at, seq, v;

-- name: dead_letter_row
UPDATE jobs
SET state = 'dead', token = NULL, lease_deadline = NULL, finished_at = :now,
    error = :error
WHERE rowid = :rowid;

-- name: next_due
SELECT min(run_at) FROM jobs WHERE queue = :queue AND state = 'scheduled';

-- With lanes: the next scheduled job, or the next lane whose rate window reopens (or whose
-- earliest concurrency lease ends), whichever is first.
-- name: next_due_with_lanes
SELECT min(t) FROM (
    SELECT min(run_at) AS t FROM jobs WHERE queue = :queue AND state = 'scheduled'
    UNION ALL
    SELECT min(blocked_until) FROM lanes WHERE queue = :queue AND blocked_until > :now
);

-- name: next_due_any
SELECT min(t) FROM (
    SELECT min(run_at) AS t FROM jobs
    WHERE state = 'scheduled' AND queue IN (SELECT value FROM json_each(:queues))
    UNION ALL
    SELECT min(blocked_until) FROM lanes
    WHERE blocked_until > :now AND queue IN (SELECT value FROM json_each(:queues))
);

-- ---------------------------------------------------------------- leases (fenced)

-- name: extend_lease
UPDATE jobs SET lease_deadline = :deadline
WHERE queue = :queue AND id = :id AND token = :token AND state = 'running';

-- Payload and error are dropped: the row only remembers the id for idempotent enqueue.
-- name: complete_job
UPDATE jobs
SET state = 'succeeded', finished_at = :now, payload = X'', error = NULL,
    traceback = NULL, token = NULL, lease_deadline = NULL
WHERE queue = :queue AND id = :id AND token = :token AND state = 'running'
RETURNING conc_key;

-- name: delete_running
DELETE FROM jobs
WHERE queue = :queue AND id = :id AND token = :token AND state = 'running'
RETURNING conc_key;

-- name: fail_retry
UPDATE jobs
SET state = 'scheduled', run_at = :run_at, token = NULL, lease_deadline = NULL,
    error = :error, traceback = :traceback
WHERE queue = :queue AND id = :id AND token = :token AND state = 'running'
RETURNING conc_key;

-- name: fail_dead
UPDATE jobs
SET state = 'dead', finished_at = :now, token = NULL, lease_deadline = NULL,
    error = :error, traceback = :traceback
WHERE queue = :queue AND id = :id AND token = :token AND state = 'running'
RETURNING conc_key;

-- Back to ready (or its lane) with the ORIGINAL seq (front of its priority); the attempt
-- is refunded.
-- name: release_job
UPDATE jobs
SET state = CASE WHEN lane IS NULL THEN 'ready' ELSE 'waiting' END, token = NULL,
    lease_deadline = NULL, attempt = max(attempt - 1, 0)
WHERE queue = :queue AND id = :id AND token = :token AND state = 'running'
RETURNING lane, conc_key, seq;

-- A cancelled running job: its token was prefixed 'x:' by cancel, so the worker's own
-- complete/fail/release (with the old token) missed; finish it as cancelled.
-- name: finish_cancelled
UPDATE jobs
SET state = 'cancelled', finished_at = :now, payload = X'', token = NULL,
    lease_deadline = NULL, error = 'cancelled'
WHERE queue = :queue AND id = :id AND token = 'x:' || :token AND state = 'running'
RETURNING conc_key;

-- ---------------------------------------------------------------- maintenance

-- Expired leases of cancelled running jobs end as cancelled (never retried).
-- name: rescue_cancelled
UPDATE jobs
SET state = 'cancelled', finished_at = :now, payload = X'', token = NULL,
    lease_deadline = NULL, error = 'cancelled'
WHERE rowid IN (
    SELECT rowid FROM jobs
    WHERE queue = :queue AND state = 'running' AND lease_deadline <= :now
      AND token LIKE 'x:%'
    ORDER BY lease_deadline
    LIMIT :limit
)
RETURNING id, conc_key;

-- name: rescue_to_dead
UPDATE jobs
SET state = 'dead', token = NULL, lease_deadline = NULL, finished_at = :now,
    error = 'lease expired on attempt ' || attempt || ' of ' || max_attempts
            || ': the worker was lost (crashed, killed or partitioned)'
WHERE rowid IN (
    SELECT rowid FROM jobs
    WHERE queue = :queue AND state = 'running' AND lease_deadline <= :now
      AND attempt >= max_attempts
    ORDER BY lease_deadline
    LIMIT :limit
)
RETURNING id, conc_key;

-- Back to ready (or its lane) with the original seq: the job lost its worker, not its place.
-- name: rescue_to_ready
UPDATE jobs
SET state = CASE WHEN lane IS NULL THEN 'ready' ELSE 'waiting' END, token = NULL,
    lease_deadline = NULL,
    error = 'lease expired on attempt ' || attempt || ' of ' || max_attempts
            || ': the worker was lost (crashed, killed or partitioned)'
WHERE rowid IN (
    SELECT rowid FROM jobs
    WHERE queue = :queue AND state = 'running' AND lease_deadline <= :now
      AND attempt < max_attempts
    ORDER BY lease_deadline
    LIMIT :limit
)
RETURNING id, lane, conc_key, seq;

-- Bounded TTL sweep of succeeded or dead rows.
-- name: sweep_finished
DELETE FROM jobs
WHERE rowid IN (
    SELECT rowid FROM jobs
    WHERE queue = :queue AND state = :state AND finished_at <= :cutoff
    LIMIT :limit
);

-- ---------------------------------------------------------------- dead letters

-- name: replay_dead_all
UPDATE jobs
SET state = CASE WHEN lane IS NULL THEN 'ready' ELSE 'waiting' END, attempt = 0,
    token = NULL, lease_deadline = NULL, finished_at = NULL, run_at = :now,
    seq = d.base + d.rn
FROM (
    SELECT rowid AS rid,
           row_number() OVER (ORDER BY seq) AS rn,
           (SELECT value FROM seq_counter WHERE id = 1) AS base
    FROM jobs
    WHERE queue = :queue AND state = 'dead'
    ORDER BY seq
    LIMIT :limit
) AS d
WHERE jobs.rowid = d.rid
RETURNING lane, conc_key, seq;

-- CROSS JOIN fixes the join order: one primary-key lookup per requested id instead of
-- a scan of every dead job of the queue.
-- name: replay_dead_ids
UPDATE jobs
SET state = CASE WHEN lane IS NULL THEN 'ready' ELSE 'waiting' END, attempt = 0,
    token = NULL, lease_deadline = NULL, finished_at = NULL, run_at = :now,
    seq = d.base + d.rn
FROM (
    SELECT jobs.rowid AS rid,
           row_number() OVER (ORDER BY seq) AS rn,
           (SELECT value FROM seq_counter WHERE id = 1) AS base
    FROM json_each(:ids) AS wanted CROSS JOIN jobs
    WHERE jobs.queue = :queue AND jobs.id = wanted.value AND jobs.state = 'dead'
    ORDER BY seq
) AS d
WHERE jobs.rowid = d.rid
RETURNING lane, conc_key, seq;

-- name: purge_dead_all
DELETE FROM jobs
WHERE rowid IN (
    SELECT rowid FROM jobs WHERE queue = :queue AND state = 'dead' LIMIT :limit
);

-- name: purge_dead_ids
DELETE FROM jobs
WHERE rowid IN (
    SELECT jobs.rowid FROM json_each(:ids) AS wanted CROSS JOIN jobs
    WHERE jobs.queue = :queue AND jobs.id = wanted.value AND jobs.state = 'dead'
);

-- ---------------------------------------------------------------- admin reads

-- name: get_job
SELECT id, queue, task, state, payload, priority, attempt, max_attempts, enqueued_at,
       run_at, finished_at, error, traceback, v
FROM jobs WHERE queue = :queue AND id = :id;

-- name: list_ready
SELECT id, queue, task, state, payload, priority, attempt, max_attempts, enqueued_at,
       run_at, finished_at, error, traceback, v
FROM jobs WHERE queue = :queue AND state IN ('ready', 'waiting')
ORDER BY priority DESC, seq LIMIT :limit OFFSET :offset;

-- name: list_scheduled
SELECT id, queue, task, state, payload, priority, attempt, max_attempts, enqueued_at,
       run_at, finished_at, error, traceback, v
FROM jobs WHERE queue = :queue AND state = 'scheduled'
ORDER BY run_at, seq LIMIT :limit OFFSET :offset;

-- name: list_running
SELECT id, queue, task, state, payload, priority, attempt, max_attempts, enqueued_at,
       run_at, finished_at, error, traceback, v
FROM jobs WHERE queue = :queue AND state = 'running'
ORDER BY lease_deadline, seq LIMIT :limit OFFSET :offset;

-- Newest first: also used for succeeded and cancelled rows (by finish time).
-- name: list_finished
SELECT id, queue, task, state, payload, priority, attempt, max_attempts, enqueued_at,
       run_at, finished_at, error, traceback, v
FROM jobs WHERE queue = :queue AND state = :state
ORDER BY finished_at DESC, seq DESC LIMIT :limit OFFSET :offset;

-- name: count_states
SELECT state, count(*) FROM jobs WHERE queue = :queue GROUP BY state;

-- name: list_queues
SELECT name FROM queues ORDER BY name;

-- ---------------------------------------------------------------- lanes (limits, fairness)

-- A lane joins at the back of the round robin (its turn is a fresh seq).
-- name: add_lane
INSERT INTO lanes (queue, lane, turn, blocked_until, conc_key)
VALUES (:queue, :lane, :turn, 0, :conc_key)
ON CONFLICT (queue, lane) DO NOTHING;

-- name: open_lanes
SELECT lane FROM lanes
WHERE queue = :queue AND blocked_until <= :now
ORDER BY turn LIMIT :limit;

-- Up to :n head jobs of each lane of the JSON array :lanes, skipping the first :skip of
-- each (a claim that used up what it fetched asks for the next ones): lane by lane in the
-- array's order, then the lane's order (highest priority first, FIFO). One index range
-- scan per lane, with no write: the claim decides in memory, then writes once.
-- name: lane_heads
SELECT l.value, j.rowid, j.id, j.rate_key, j.rate_limit, j.rate_period, j.conc_key,
       j.conc_limit
FROM json_each(:lanes) AS l CROSS JOIN jobs AS j
WHERE j.rowid IN (
    SELECT rowid FROM jobs
    WHERE queue = :queue AND lane = l.value AND state = 'waiting'
    ORDER BY priority DESC, seq
    LIMIT :n OFFSET :skip
)
ORDER BY l.key, j.priority DESC, j.seq;

-- How many plain ready jobs a claim could take (at most :limit).
-- name: count_claimable_plain
SELECT count(*) FROM (
    SELECT 1 FROM jobs WHERE queue = :queue AND state = 'ready' LIMIT :limit
);

-- Lease the lane jobs a claim chose (rowids as a JSON array), in one statement.
-- name: claim_rows
UPDATE jobs
SET state = 'running', token = :token, attempt = attempt + 1, lease_deadline = :deadline
WHERE rowid IN (SELECT value FROM json_each(:rowids)) AND state = 'waiting'
RETURNING rowid, id, task, payload, attempt, max_attempts, priority, enqueued_at,
          run_at, seq, v;

-- Where a claim left each lane it visited, from a JSON array of [lane, turn, blocked_until]:
-- a served lane goes to the back of the round robin (turn = a fresh seq; NULL: not served,
-- turn kept), a blocked one waits until blocked_until (0: open).
-- name: update_lanes
UPDATE lanes
SET turn = coalesce(json_extract(u.value, '$[1]'), turn),
    blocked_until = json_extract(u.value, '$[2]')
FROM json_each(:updates) AS u
WHERE lanes.queue = :queue AND lanes.lane = json_extract(u.value, '$[0]')
  -- Without this the planner visits every lane of the queue once per update (measured:
  -- 0.9 s per claim with 30,000 lanes, holding the write lock); with it, a primary-key
  -- lookup per updated lane.
  AND lanes.lane IN (SELECT json_extract(value, '$[0]') FROM json_each(:updates));

-- Lanes a claim found empty (a JSON array of names).
-- name: drop_lanes
DELETE FROM lanes WHERE queue = :queue AND lane IN (SELECT value FROM json_each(:lanes));

-- A slot of a concurrency key was freed: its lanes may be served again.
-- name: unblock_conc
UPDATE lanes SET blocked_until = 0
WHERE queue = :queue AND conc_key = :conc_key AND blocked_until > 0;

-- Slots held: running jobs of the key whose lease is still live (a crashed worker's
-- slot comes back when its lease expires, even before rescue_expired runs).
-- name: count_conc
SELECT count(*), min(lease_deadline) FROM jobs
WHERE queue = :queue AND conc_key = :conc_key AND state = 'running'
  AND lease_deadline > :now;

-- ---------------------------------------------------------------- limit windows

-- name: window_prune
DELETE FROM limit_events
WHERE queue = :queue AND kind = :kind AND key = :key AND at <= :cutoff;

-- name: window_count
SELECT count(*), min(at) FROM limit_events
WHERE queue = :queue AND kind = :kind AND key = :key AND at > :cutoff;

-- At least the number of events in the table, of any key: rowids are distinct integers,
-- so no more rows than the span of the lowest to the highest fit between them. Two
-- min/max lookups on the rowid b-tree, where counting a key's window steps through it.
-- name: window_bound
SELECT coalesce(
    (SELECT max(rowid) FROM limit_events) - (SELECT min(rowid) FROM limit_events) + 1, 0);

-- name: window_add
INSERT INTO limit_events (queue, kind, key, at, until, member)
VALUES (:queue, :kind, :key, :now, :now + :period, :member);

-- Rate events of one claim, one per job started: a JSON array of [key, period, member].
-- name: window_add_many
INSERT INTO limit_events (queue, kind, key, at, until, member)
SELECT :queue, :kind, json_extract(e.value, '$[0]'), :now,
       :now + json_extract(e.value, '$[1]'), json_extract(e.value, '$[2]')
FROM json_each(:events) AS e;

-- Events past their window, of keys nobody checks any more (bounded).
-- name: sweep_events
DELETE FROM limit_events
WHERE rowid IN (
    SELECT rowid FROM limit_events WHERE queue = :queue AND until <= :now LIMIT :limit
);

-- ---------------------------------------------------------------- unique keys

-- name: get_unique
SELECT u.job_id, u.scope, u.expires_at, j.state
FROM unique_keys AS u
LEFT JOIN jobs AS j ON j.queue = u.queue AND j.id = u.job_id
WHERE u.queue = :queue AND u.key = :key;

-- The enqueue fast path of a unique key, in one statement: take the key for :job_id unless
-- that id already exists or the key still holds for its current job (the same rules as
-- the check in controls.py: a 'ttl' key until expires_at, the others while their job is
-- pending, or running for 'active'). One row changed: the key was taken; none: "look closer"
-- (existing id, duplicate, replace), and nothing was written. No RETURNING: the change
-- count says it, and RETURNING cost more than the check itself.
-- name: claim_unique
INSERT INTO unique_keys (queue, key, job_id, scope, expires_at)
SELECT :queue, :key, :job_id, :scope, :expires_at
WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE queue = :queue AND id = :job_id)
ON CONFLICT (queue, key) DO UPDATE
SET job_id = excluded.job_id, scope = excluded.scope, expires_at = excluded.expires_at
WHERE NOT coalesce(
    CASE unique_keys.scope
        WHEN 'ttl' THEN unique_keys.expires_at > :now
        ELSE (
            SELECT j.state IN ('ready', 'scheduled', 'waiting')
                OR (j.state = 'running' AND unique_keys.scope = 'active')
            FROM jobs AS j
            WHERE j.queue = unique_keys.queue AND j.id = unique_keys.job_id
        )
    END, 0);

-- name: set_unique
INSERT INTO unique_keys (queue, key, job_id, scope, expires_at)
VALUES (:queue, :key, :job_id, :scope, :expires_at)
ON CONFLICT (queue, key) DO UPDATE
SET job_id = excluded.job_id, scope = excluded.scope, expires_at = excluded.expires_at;

-- Debounce: the pending job takes the new payload and run time.
-- name: replace_pending
UPDATE jobs
SET payload = :payload, run_at = :run_at,
    state = CASE WHEN :run_at > :now THEN 'scheduled'
                 WHEN lane IS NULL THEN 'ready' ELSE 'waiting' END
WHERE queue = :queue AND id = :id AND state IN ('ready', 'scheduled', 'waiting')
RETURNING state, lane, conc_key, seq;

-- The last key of the next :scan unique keys after :after (NULL: none left), and how many.
-- name: unique_sweep_span
SELECT max(key), count(*) FROM (
    SELECT key FROM unique_keys WHERE queue = :queue AND key > :after ORDER BY key LIMIT :scan
);

-- Unique keys that no longer hold (TTL passed, or the job left the states of its scope),
-- among the keys in (:after, :last]: a sweep visits a bounded span of keys per call, so
-- keys held by pending jobs are not all read again each time (that made every sweep cost
-- O(pending unique jobs)).
-- name: sweep_unique
DELETE FROM unique_keys
WHERE queue = :queue AND key IN (
    SELECT u.key FROM unique_keys AS u
    LEFT JOIN jobs AS j ON j.queue = u.queue AND j.id = u.job_id
    WHERE u.queue = :queue AND u.key > :after AND u.key <= :last AND (
        (u.scope = 'ttl' AND u.expires_at <= :now)
        OR (u.scope <> 'ttl' AND (j.state IS NULL
            OR j.state NOT IN ('ready', 'scheduled', 'waiting', 'running')))
    )
);

-- ---------------------------------------------------------------- queue controls

-- name: pause_queue
INSERT INTO paused (queue, paused_at) VALUES (:queue, :now) ON CONFLICT (queue) DO NOTHING;

-- name: resume_queue
DELETE FROM paused WHERE queue = :queue;

-- name: get_queue_limit
SELECT max_ready, overflow FROM queue_limits WHERE queue = :queue;

-- name: set_queue_limit
INSERT INTO queue_limits (queue, max_ready, overflow) VALUES (:queue, :max_ready, :overflow)
ON CONFLICT (queue) DO UPDATE SET max_ready = excluded.max_ready, overflow = excluded.overflow;

-- name: clear_queue_limit
DELETE FROM queue_limits WHERE queue = :queue;

-- name: count_ready
SELECT count(*) FROM jobs WHERE queue = :queue AND state IN ('ready', 'waiting');

-- The oldest ready job (lowest seq, plain or in a lane) makes room in a full queue.
-- name: drop_oldest_ready
UPDATE jobs
SET state = 'dead', finished_at = :now, token = NULL, lease_deadline = NULL,
    error = 'dropped: queue full'
WHERE rowid = (
    SELECT rowid FROM jobs WHERE queue = :queue AND state IN ('ready', 'waiting')
    ORDER BY seq LIMIT 1
)
RETURNING id;

-- name: cancel_queued
UPDATE jobs
SET state = 'cancelled', finished_at = :now, payload = X'', token = NULL,
    lease_deadline = NULL, error = 'cancelled'
WHERE queue = :queue AND id = :id AND state IN ('ready', 'scheduled', 'waiting');

-- Revoke the lease of a running job: its worker's token no longer matches.
-- name: cancel_running
UPDATE jobs
SET token = CASE WHEN token LIKE 'x:%' THEN token ELSE 'x:' || token END
WHERE queue = :queue AND id = :id AND state = 'running';

-- ---------------------------------------------------------------- worker registry

-- A heartbeat replaces the worker's row (one row per worker id).
-- name: record_worker
INSERT INTO workers (id, info, seen_at, expires_at)
VALUES (:id, :info, :now, :expires_at)
ON CONFLICT (id) DO UPDATE SET
    info = excluded.info, seen_at = excluded.seen_at, expires_at = excluded.expires_at;

-- name: live_workers
SELECT id, info, seen_at FROM workers WHERE expires_at > :now ORDER BY id;

-- Lets a listing skip the write lock when there is nothing to drop (the usual case).
-- name: any_expired_worker
SELECT EXISTS (SELECT 1 FROM workers WHERE expires_at <= :now);

-- At most :limit expired rows per call, so one call never holds the write lock for long.
-- name: drop_expired_workers
DELETE FROM workers WHERE id IN (
    SELECT id FROM workers WHERE expires_at <= :now ORDER BY expires_at LIMIT :limit
);

-- name: forget_worker
DELETE FROM workers WHERE id = :id;
