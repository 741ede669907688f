-- Issue 25: one node per scheduled job. A job's lease names the node that holds it and until
-- when; the holder renews it on an exact interval, and once it lapses any node may take it.
-- Every run is recorded with the node that ran it (pruned after the event retention).
CREATE TABLE job_leases (
    job         text NOT NULL PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL,
    last_run_at timestamptz
);

CREATE TABLE job_runs (
    id          uuid NOT NULL PRIMARY KEY,
    job         text NOT NULL,
    node        text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    changed     bigint,
    error       text
);
CREATE INDEX job_runs_by_job ON job_runs (job, started_at);
CREATE INDEX job_runs_by_start ON job_runs (started_at);
