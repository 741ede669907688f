-- API keys: found by their public lookup part, proven by the SHA-256 of the whole key.
CREATE TABLE api_keys (
    tenant_id    BLOB    NOT NULL REFERENCES tenants (id),
    id           BLOB    NOT NULL CHECK (length(id) = 16),
    kind         TEXT    NOT NULL CHECK (kind IN ('secret', 'publishable')),
    name         TEXT    NOT NULL,
    lookup       TEXT    NOT NULL,
    secret_hash  BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    scopes       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX api_keys_lookup_key ON api_keys (lookup);
