-- Staff users, one-time tokens, sessions with their refresh-token families, signing keys.
-- Secrets are never stored: tokens by SHA-256, passwords by argon2id, signing seeds sealed.

CREATE TABLE staff_users (
    tenant_id     BLOB    NOT NULL REFERENCES tenants (id),
    id            BLOB    NOT NULL CHECK (length(id) = 16),
    email         TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'staff', 'viewer')),
    status        TEXT    NOT NULL CHECK (status IN ('invited', 'active', 'disabled')),
    password_hash TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX staff_users_email_key ON staff_users (tenant_id, email);

CREATE TABLE one_time_tokens (
    hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    tenant_id  BLOB    NOT NULL,
    user_id    BLOB    NOT NULL,
    purpose    TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    FOREIGN KEY (tenant_id, user_id) REFERENCES staff_users (tenant_id, id)
) STRICT;

CREATE TABLE sessions (
    tenant_id    BLOB    NOT NULL,
    id           BLOB    NOT NULL CHECK (length(id) = 16),
    user_id      BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES staff_users (tenant_id, id)
) STRICT;

CREATE INDEX sessions_by_user ON sessions (tenant_id, user_id);

CREATE TABLE refresh_tokens (
    hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    tenant_id  BLOB    NOT NULL,
    session_id BLOB    NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id)
) STRICT;

CREATE TABLE signing_keys (
    kid         TEXT    NOT NULL PRIMARY KEY,
    sealed_seed BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
) STRICT;
