-- calmq SQLite schema, version 3: the worker registry.
--
-- One row per worker process, replaced by each heartbeat. info is the WorkerInfo record as
-- msgspec JSON; seen_at is the time of the last heartbeat and expires_at that time plus the
-- worker's ttl_ms (both in ms on this host's clock). Rows past expires_at are not listed
-- and are deleted a few at a time by later heartbeats and listings.

CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    info BLOB NOT NULL,
    seen_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX workers_expires ON workers (expires_at);
