-- Staff users, one-time tokens, sessions with their refresh-token families, signing keys.
-- Secrets are never stored: tokens by SHA-256, passwords by argon2id, signing seeds sealed.

CREATE TABLE staff_users (
    tenant_id     uuid        NOT NULL REFERENCES tenants (id),
    id            uuid        NOT NULL,
    email         text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('owner', 'admin', 'staff', 'viewer')),
    status        text        NOT NULL CHECK (status IN ('invited', 'active', 'disabled')),
    password_hash text,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT staff_users_email_key UNIQUE (tenant_id, email)
);

CREATE TABLE one_time_tokens (
    hash       bytea       PRIMARY KEY CHECK (length(hash) = 32),
    tenant_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    purpose    text        NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    FOREIGN KEY (tenant_id, user_id) REFERENCES staff_users (tenant_id, id)
);

CREATE TABLE sessions (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL,
    user_id      uuid        NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES staff_users (tenant_id, id)
);

CREATE INDEX sessions_by_user ON sessions (tenant_id, user_id);

CREATE TABLE refresh_tokens (
    hash       bytea       PRIMARY KEY CHECK (length(hash) = 32),
    tenant_id  uuid        NOT NULL,
    session_id uuid        NOT NULL,
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id)
);

CREATE TABLE signing_keys (
    kid         text        PRIMARY KEY,
    sealed_seed bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    retired_at  timestamptz
);
