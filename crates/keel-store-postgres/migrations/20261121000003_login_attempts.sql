-- Login attempts for exact brute-force limits. Keys are SHA-256 digests (no personal data).
-- An attempt's rows are deleted when it succeeds; failed ones stay until pruned.
CREATE TABLE login_attempts (
    attempt_id   uuid        NOT NULL,
    throttle_key bytea       NOT NULL CHECK (length(throttle_key) = 32),
    attempted_at timestamptz NOT NULL,
    PRIMARY KEY (throttle_key, attempted_at, attempt_id)
);

CREATE INDEX login_attempts_by_attempt ON login_attempts (attempt_id);
