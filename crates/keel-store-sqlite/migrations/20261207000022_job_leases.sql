-- Issue 25: one node per scheduled job. A job's lease names the node that holds it and until
-- when; the holder renews it on an exact interval, and once it lapses any node may take it.
-- Every run is recorded with the node that ran it (pruned after the event retention).
CREATE TABLE job_leases (
    job         TEXT NOT NULL PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    acquired_at INTEGER NOT NULL,
    last_run_at INTEGER
) STRICT;

CREATE TABLE job_runs (
    id          BLOB NOT NULL PRIMARY KEY,
    job         TEXT NOT NULL,
    node        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    changed     INTEGER,
    error       TEXT
) STRICT;
CREATE INDEX job_runs_by_job ON job_runs (job, started_at);
CREATE INDEX job_runs_by_start ON job_runs (started_at);
