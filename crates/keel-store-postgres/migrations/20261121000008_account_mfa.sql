-- MFA enrolments, backup codes and one-time tokens for customers as well as staff: as in
-- `sessions`, `owner_kind` says which table `user_id` refers to, so the foreign keys to
-- `staff_users` go. `staff_mfa` becomes `mfa_enrolments`, since it no longer holds only staff.
ALTER TABLE staff_mfa RENAME TO mfa_enrolments;
ALTER TABLE mfa_enrolments DROP CONSTRAINT staff_mfa_tenant_id_user_id_fkey;
ALTER TABLE mfa_enrolments ADD COLUMN owner_kind text NOT NULL DEFAULT 'staff'
    CHECK (owner_kind IN ('staff', 'customer'));
ALTER TABLE mfa_enrolments ALTER COLUMN owner_kind DROP DEFAULT;
ALTER TABLE mfa_enrolments DROP CONSTRAINT staff_mfa_pkey;
ALTER TABLE mfa_enrolments ADD CONSTRAINT mfa_enrolments_pkey PRIMARY KEY (tenant_id, owner_kind, user_id);

ALTER TABLE backup_codes DROP CONSTRAINT backup_codes_tenant_id_user_id_fkey;
ALTER TABLE backup_codes ADD COLUMN owner_kind text NOT NULL DEFAULT 'staff'
    CHECK (owner_kind IN ('staff', 'customer'));
ALTER TABLE backup_codes ALTER COLUMN owner_kind DROP DEFAULT;
ALTER TABLE backup_codes DROP CONSTRAINT backup_codes_pkey;
ALTER TABLE backup_codes ADD PRIMARY KEY (tenant_id, owner_kind, user_id, code_hash);

ALTER TABLE one_time_tokens DROP CONSTRAINT one_time_tokens_tenant_id_user_id_fkey;
ALTER TABLE one_time_tokens ADD COLUMN owner_kind text NOT NULL DEFAULT 'staff'
    CHECK (owner_kind IN ('staff', 'customer'));
ALTER TABLE one_time_tokens ALTER COLUMN owner_kind DROP DEFAULT;
