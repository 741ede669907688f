-- MFA enrolments, backup codes and one-time tokens for customers as well as staff: as in
-- `sessions`, `owner_kind` says which table `user_id` refers to. SQLite cannot drop a foreign
-- key, so the three tables are rebuilt with their rows (all of them staff's until now).
-- `staff_mfa` becomes `mfa_enrolments`, since it no longer holds only staff.
CREATE TABLE mfa_enrolments (
    tenant_id      BLOB    NOT NULL,
    owner_kind     TEXT    NOT NULL CHECK (owner_kind IN ('staff', 'customer')),
    user_id        BLOB    NOT NULL,
    sealed_secret  BLOB    NOT NULL,
    created_at     INTEGER NOT NULL,
    confirmed_at   INTEGER,
    last_used_step INTEGER,
    PRIMARY KEY (tenant_id, owner_kind, user_id)
) STRICT;

INSERT INTO mfa_enrolments (tenant_id, owner_kind, user_id, sealed_secret, created_at, confirmed_at, last_used_step)
SELECT tenant_id, 'staff', user_id, sealed_secret, created_at, confirmed_at, last_used_step FROM staff_mfa;

DROP TABLE staff_mfa;

CREATE TABLE backup_codes_v2 (
    tenant_id  BLOB    NOT NULL,
    owner_kind TEXT    NOT NULL CHECK (owner_kind IN ('staff', 'customer')),
    user_id    BLOB    NOT NULL,
    code_hash  BLOB    NOT NULL CHECK (length(code_hash) = 32),
    used_at    INTEGER,
    PRIMARY KEY (tenant_id, owner_kind, user_id, code_hash)
) STRICT;

INSERT INTO backup_codes_v2 (tenant_id, owner_kind, user_id, code_hash, used_at)
SELECT tenant_id, 'staff', user_id, code_hash, used_at FROM backup_codes;

DROP TABLE backup_codes;
ALTER TABLE backup_codes_v2 RENAME TO backup_codes;

CREATE TABLE one_time_tokens_v2 (
    hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    tenant_id  BLOB    NOT NULL,
    owner_kind TEXT    NOT NULL CHECK (owner_kind IN ('staff', 'customer')),
    user_id    BLOB    NOT NULL,
    purpose    TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    failures   INTEGER NOT NULL DEFAULT 0
) STRICT;

INSERT INTO one_time_tokens_v2 (hash, tenant_id, owner_kind, user_id, purpose, expires_at, used_at, failures)
SELECT hash, tenant_id, 'staff', user_id, purpose, expires_at, used_at, failures FROM one_time_tokens;

DROP TABLE one_time_tokens;
ALTER TABLE one_time_tokens_v2 RENAME TO one_time_tokens;
