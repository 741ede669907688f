-- A shop-wide policy: when set, staff without confirmed MFA may only enrol.
ALTER TABLE tenants ADD COLUMN require_staff_mfa INTEGER NOT NULL DEFAULT 0 CHECK (require_staff_mfa IN (0, 1));
