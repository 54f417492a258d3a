-- calmq SQLite schema, version 1: jobs, queues, the paused set and the sequence counter.
--
-- Every job lives in one row; its state column says where it is, and the indexes below
-- turn each hot query (claim, promote, rescue, expiry sweep) into an index range scan.

CREATE TABLE queues (
    name TEXT NOT NULL PRIMARY KEY
) WITHOUT ROWID;

-- Reserved for pause/resume: a queue listed here yields nothing to claim.
CREATE TABLE paused (
    queue TEXT NOT NULL PRIMARY KEY,
    paused_at INTEGER NOT NULL
) WITHOUT ROWID;

-- One row: the last sequence number handed out. seq orders jobs FIFO within a priority;
-- a counter (not the rowid) lets promotion and replay give a job a NEW place in line
-- while release keeps the original one.
CREATE TABLE seq_counter (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO seq_counter (id, value) VALUES (1, 0);

-- No CHECK constraints on purpose: a foreign or corrupt row must be readable so that
-- claim can dead-letter it with a reason instead of failing the whole queue.
CREATE TABLE jobs (
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    task TEXT,
    payload BLOB,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 1,
    token TEXT,
    seq INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    lease_deadline INTEGER,
    finished_at INTEGER,
    error TEXT,
    traceback TEXT,
    v INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (queue, id)
);

-- claim: ready jobs of a queue, highest priority first, FIFO within a priority.
CREATE INDEX jobs_claim ON jobs (queue, state, priority DESC, seq);
-- promote_due and next_due_ms: scheduled jobs of a queue by due time.
CREATE INDEX jobs_due ON jobs (queue, state, run_at);
-- rescue_expired: running jobs of a queue by lease deadline.
CREATE INDEX jobs_lease ON jobs (queue, state, lease_deadline);
-- TTL sweep of succeeded/dead rows, and the dead list newest first.
CREATE INDEX jobs_finished ON jobs (queue, state, finished_at);
