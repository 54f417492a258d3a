-- calmq SQLite schema, version 4: narrower lane and concurrency indexes (issue 5).
--
-- jobs_lane only serves the head of a lane (state 'waiting') and jobs_conc only counts the
-- live slots of a key (state 'running'), yet both indexed every row that ever had a lane
-- or a concurrency key, so each state change of such a job (enqueue, claim, complete)
-- rewrote their entries. Partial on the one state they look up, an index is touched only
-- when a job enters or leaves that state; the state column stays in the key so that the
-- planner keeps matching the lookups on all three equality columns.

DROP INDEX jobs_lane;
CREATE INDEX jobs_lane ON jobs (queue, lane, state, priority DESC, seq)
    WHERE state = 'waiting' AND lane IS NOT NULL;
DROP INDEX jobs_conc;
CREATE INDEX jobs_conc ON jobs (queue, conc_key, state, lease_deadline)
    WHERE state = 'running' AND conc_key IS NOT NULL;
