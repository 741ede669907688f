-- API keys: found by their public lookup part, proven by the SHA-256 of the whole key.
CREATE TABLE api_keys (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    id           uuid        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('secret', 'publishable')),
    name         text        NOT NULL,
    lookup       text        NOT NULL CONSTRAINT api_keys_lookup_key UNIQUE,
    secret_hash  bytea       NOT NULL CHECK (length(secret_hash) = 32),
    scopes       text        NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, id)
);
