-- TOTP MFA: the secret sealed under the master key, the last accepted time step (each step
-- is accepted once), and single-use backup codes stored as SHA-256.
CREATE TABLE staff_mfa (
    tenant_id      BLOB    NOT NULL,
    user_id        BLOB    NOT NULL,
    sealed_secret  BLOB    NOT NULL,
    created_at     INTEGER NOT NULL,
    confirmed_at   INTEGER,
    last_used_step INTEGER,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES staff_users (tenant_id, id)
) STRICT;

CREATE TABLE backup_codes (
    tenant_id BLOB    NOT NULL,
    user_id   BLOB    NOT NULL,
    code_hash BLOB    NOT NULL CHECK (length(code_hash) = 32),
    used_at   INTEGER,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES staff_users (tenant_id, id)
) STRICT;

-- Wrong codes presented with an MFA token; at the limit the token dies.
ALTER TABLE one_time_tokens ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
