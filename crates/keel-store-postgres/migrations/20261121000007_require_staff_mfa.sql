-- A shop-wide policy: when set, staff without confirmed MFA may only enrol.
ALTER TABLE tenants ADD COLUMN require_staff_mfa boolean NOT NULL DEFAULT false;
