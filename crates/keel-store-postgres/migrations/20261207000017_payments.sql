-- Issue 22: payments through a provider. A shop's settings per provider (secrets sealed with
-- the master key), the payment sessions made for orders, and the provider events seen (each
-- stored once: a repeated webhook finds its row).
CREATE TABLE payment_providers (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id),
    provider        text        NOT NULL,
    enabled         boolean     NOT NULL,
    capture         text        NOT NULL,
    secret_key      bytea       NOT NULL,
    webhook_secrets bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    version         bigint      NOT NULL,
    CONSTRAINT payment_providers_pkey PRIMARY KEY (tenant_id, provider)
);

CREATE TABLE payment_sessions (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    id           uuid        NOT NULL,
    order_id     uuid        NOT NULL,
    provider     text        NOT NULL,
    provider_ref text        NOT NULL,
    amount       bigint      NOT NULL,
    currency     text        NOT NULL,
    status       text        NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX payment_sessions_by_ref ON payment_sessions (tenant_id, provider, provider_ref);
CREATE INDEX payment_sessions_of_order ON payment_sessions (tenant_id, order_id, created_at);
CREATE INDEX payment_sessions_unsettled ON payment_sessions (created_at, tenant_id, id)
    WHERE status IN ('open', 'failed');

CREATE TABLE payment_events (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    provider    text        NOT NULL,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, provider, event_id)
);
