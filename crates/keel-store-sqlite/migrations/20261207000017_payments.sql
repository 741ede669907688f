-- Issue 22: payments through a provider. A shop's settings per provider (secrets sealed with
-- the master key), the payment sessions made for orders, and the provider events seen (each
-- stored once: a repeated webhook finds its row).
CREATE TABLE payment_providers (
    tenant_id       BLOB    NOT NULL REFERENCES tenants (id),
    provider        TEXT    NOT NULL,
    enabled         INTEGER NOT NULL,
    capture         TEXT    NOT NULL,
    secret_key      BLOB    NOT NULL,
    webhook_secrets BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, provider)
) STRICT;

CREATE TABLE payment_sessions (
    tenant_id    BLOB    NOT NULL REFERENCES tenants (id),
    id           BLOB    NOT NULL CHECK (length(id) = 16),
    order_id     BLOB    NOT NULL,
    provider     TEXT    NOT NULL,
    provider_ref TEXT    NOT NULL,
    amount       INTEGER NOT NULL,
    currency     TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX payment_sessions_by_ref ON payment_sessions (tenant_id, provider, provider_ref);
CREATE INDEX payment_sessions_of_order ON payment_sessions (tenant_id, order_id, created_at);
CREATE INDEX payment_sessions_unsettled ON payment_sessions (created_at, tenant_id, id)
    WHERE status IN ('open', 'failed');

CREATE TABLE payment_events (
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id),
    provider    TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, provider, event_id)
) STRICT;
