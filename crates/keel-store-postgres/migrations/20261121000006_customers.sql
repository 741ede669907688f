-- Customers (shoppers) of a tenant, and sessions owned by a staff user or a customer.
CREATE TABLE customers (
    tenant_id     uuid        NOT NULL REFERENCES tenants (id),
    id            uuid        NOT NULL,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT customers_email_key UNIQUE (tenant_id, email)
);

-- `owner_kind` says which table `user_id` refers to.
ALTER TABLE sessions DROP CONSTRAINT sessions_tenant_id_user_id_fkey;
ALTER TABLE sessions ADD COLUMN owner_kind text NOT NULL DEFAULT 'staff'
    CHECK (owner_kind IN ('staff', 'customer'));
ALTER TABLE sessions ALTER COLUMN owner_kind DROP DEFAULT;
DROP INDEX sessions_by_user;
CREATE INDEX sessions_by_owner ON sessions (tenant_id, owner_kind, user_id);
