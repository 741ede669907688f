-- TOTP MFA: the secret sealed under the master key, the last accepted time step (each step
-- is accepted once), and single-use backup codes stored as SHA-256.
CREATE TABLE staff_mfa (
    tenant_id      uuid        NOT NULL,
    user_id        uuid        NOT NULL,
    sealed_secret  bytea       NOT NULL,
    created_at     timestamptz NOT NULL,
    confirmed_at   timestamptz,
    last_used_step bigint,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES staff_users (tenant_id, id)
);

CREATE TABLE backup_codes (
    tenant_id uuid        NOT NULL,
    user_id   uuid        NOT NULL,
    code_hash bytea       NOT NULL CHECK (length(code_hash) = 32),
    used_at   timestamptz,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES staff_users (tenant_id, id)
);

-- Wrong codes presented with an MFA token; at the limit the token dies.
ALTER TABLE one_time_tokens ADD COLUMN failures integer NOT NULL DEFAULT 0;
