-- calmq SQLite schema, version 2: unique jobs, throttles, rate and concurrency limits,
-- fair lanes, bounded queues and cancellation.
--
-- A job with a rate, concurrency or fairness key is stored in state 'waiting' (reported as
-- ready) in its lane; the plain claim keeps reading state 'ready' only, so plain jobs pay
-- nothing for the lanes. All new columns are NULL for plain jobs.

ALTER TABLE jobs ADD COLUMN lane TEXT;
ALTER TABLE jobs ADD COLUMN rate_key TEXT;
ALTER TABLE jobs ADD COLUMN rate_limit INTEGER;
ALTER TABLE jobs ADD COLUMN rate_period INTEGER;
ALTER TABLE jobs ADD COLUMN conc_key TEXT;
ALTER TABLE jobs ADD COLUMN conc_limit INTEGER;

-- Head of a lane: its waiting jobs, highest priority first, FIFO within a priority.
CREATE INDEX jobs_lane ON jobs (queue, lane, state, priority DESC, seq) WHERE lane IS NOT NULL;
-- Running jobs of a concurrency key (slots held = live leases).
CREATE INDEX jobs_conc ON jobs (queue, conc_key, state, lease_deadline)
    WHERE conc_key IS NOT NULL;

-- Lanes with waiting jobs: claims serve them in turn order and move a served lane to the
-- back. blocked_until lets claims (and the idle probe) skip a lane over its limit until
-- its rate window reopens or a slot of its concurrency key is freed.
CREATE TABLE lanes (
    queue TEXT NOT NULL,
    lane TEXT NOT NULL,
    turn INTEGER NOT NULL,
    blocked_until INTEGER NOT NULL DEFAULT 0,
    conc_key TEXT,
    PRIMARY KEY (queue, lane)
) WITHOUT ROWID;
CREATE INDEX lanes_turn ON lanes (queue, blocked_until, turn);
CREATE INDEX lanes_conc ON lanes (queue, conc_key) WHERE conc_key IS NOT NULL;

-- Unique key -> the job holding it. Scope 'ttl' holds until expires_at; 'queued' and
-- 'active' hold while the job is in those states (checked against jobs at enqueue).
CREATE TABLE unique_keys (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (queue, key)
) WITHOUT ROWID;

-- Sliding-window logs of throttles (kind 't', enqueues) and rate limits (kind 'r', starts).
CREATE TABLE limit_events (
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    at INTEGER NOT NULL,
    until INTEGER NOT NULL, -- at + period: past it the event counts for nothing
    member TEXT NOT NULL
);
CREATE INDEX limit_events_window ON limit_events (queue, kind, key, at);
CREATE INDEX limit_events_until ON limit_events (queue, until);

-- Bounded queues: at most max_ready ready jobs; overflow 'reject' or 'drop_oldest'.
CREATE TABLE queue_limits (
    queue TEXT NOT NULL PRIMARY KEY,
    max_ready INTEGER NOT NULL,
    overflow TEXT NOT NULL
) WITHOUT ROWID;
