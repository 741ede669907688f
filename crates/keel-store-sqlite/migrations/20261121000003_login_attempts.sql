-- Login attempts for exact brute-force limits. Keys are SHA-256 digests (no personal data).
-- An attempt's rows are deleted when it succeeds; failed ones stay until pruned.
CREATE TABLE login_attempts (
    attempt_id   BLOB    NOT NULL CHECK (length(attempt_id) = 16),
    throttle_key BLOB    NOT NULL CHECK (length(throttle_key) = 32),
    attempted_at INTEGER NOT NULL,
    PRIMARY KEY (throttle_key, attempted_at, attempt_id)
) STRICT;

CREATE INDEX login_attempts_by_attempt ON login_attempts (attempt_id);
