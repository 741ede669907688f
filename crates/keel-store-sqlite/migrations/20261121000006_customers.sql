-- Customers (shoppers) of a tenant, and sessions owned by a staff user or a customer.
CREATE TABLE customers (
    tenant_id     BLOB    NOT NULL REFERENCES tenants (id),
    id            BLOB    NOT NULL CHECK (length(id) = 16),
    email         TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX customers_email_key ON customers (tenant_id, email);

-- `owner_kind` says which table `user_id` refers to. SQLite cannot drop a foreign key, so
-- sessions and refresh tokens are rebuilt (rows copied, the staff ones marked 'staff').
CREATE TABLE sessions_v2 (
    tenant_id    BLOB    NOT NULL,
    id           BLOB    NOT NULL CHECK (length(id) = 16),
    owner_kind   TEXT    NOT NULL CHECK (owner_kind IN ('staff', 'customer')),
    user_id      BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    PRIMARY KEY (tenant_id, id)
) STRICT;

INSERT INTO sessions_v2 (tenant_id, id, owner_kind, user_id, created_at, last_used_at, expires_at, revoked_at)
SELECT tenant_id, id, 'staff', user_id, created_at, last_used_at, expires_at, revoked_at FROM sessions;

CREATE TABLE refresh_tokens_v2 (
    hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    tenant_id  BLOB    NOT NULL,
    session_id BLOB    NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions_v2 (tenant_id, id)
) STRICT;

INSERT INTO refresh_tokens_v2 (hash, tenant_id, session_id, issued_at, expires_at, used_at)
SELECT hash, tenant_id, session_id, issued_at, expires_at, used_at FROM refresh_tokens;

DROP TABLE refresh_tokens;
DROP TABLE sessions;
ALTER TABLE sessions_v2 RENAME TO sessions;
ALTER TABLE refresh_tokens_v2 RENAME TO refresh_tokens;

CREATE INDEX sessions_by_owner ON sessions (tenant_id, owner_kind, user_id);
