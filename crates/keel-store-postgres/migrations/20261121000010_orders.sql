-- Orders: pricing setup records (tax rates, shipping options, promotions) as typed JSON with
-- their unique keys and promotion usage counters, carts and orders as versioned aggregates
-- (JSON holding integer minor units only) with the columns lists and jobs query, per-shop
-- order numbers, promotion redemptions, and idempotency keys.
CREATE TABLE pricing_records (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    id          uuid        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('tax_rate', 'shipping_option', 'promotion')),
    key         text        NOT NULL,
    body        jsonb       NOT NULL,
    usage_limit bigint      CHECK (usage_limit > 0),
    times_used  bigint      NOT NULL DEFAULT 0,
    version     bigint      NOT NULL CHECK (version >= 1),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CHECK (times_used >= 0 AND (usage_limit IS NULL OR times_used <= usage_limit))
);

CREATE UNIQUE INDEX pricing_records_key ON pricing_records (tenant_id, kind, key);
CREATE INDEX pricing_records_by_kind ON pricing_records (tenant_id, kind, id);

CREATE TABLE pricing_settings (
    tenant_id          uuid    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    prices_include_tax boolean NOT NULL
);

CREATE TABLE promotion_redemptions (
    tenant_id    uuid        NOT NULL,
    order_id     uuid        NOT NULL,
    promotion_id uuid        NOT NULL,
    customer_key text        NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, order_id)
);

CREATE INDEX promotion_redemptions_by_customer ON promotion_redemptions (tenant_id, promotion_id, customer_key);

CREATE TABLE carts (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    id          uuid        NOT NULL,
    customer_id uuid,
    secret_hash text,
    status      text        NOT NULL CHECK (status IN ('open', 'converted')),
    body        jsonb       NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE order_counters (
    tenant_id   uuid   NOT NULL PRIMARY KEY REFERENCES tenants (id),
    next_number bigint NOT NULL
);

CREATE TABLE orders (
    tenant_id      uuid        NOT NULL REFERENCES tenants (id),
    id             uuid        NOT NULL,
    number         bigint      NOT NULL,
    status         text        NOT NULL,
    payment_status text        NOT NULL,
    currency       text        NOT NULL,
    customer_id    uuid,
    email          text,
    total          bigint      NOT NULL CHECK (total >= 0),
    body           jsonb       NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX orders_number_key ON orders (tenant_id, number);
CREATE INDEX orders_by_status ON orders (tenant_id, status, id);
CREATE INDEX orders_by_customer ON orders (tenant_id, customer_id, id);
CREATE INDEX orders_unpaid_expiry ON orders (status, expires_at);

-- An order's timeline reads its events by the order id in their payload.
CREATE INDEX outbox_events_by_order ON outbox_events (tenant_id, (payload ->> 'order_id'))
    WHERE event_type LIKE 'order.%';

-- Units of a reservation taken out of stock by fulfilment.
ALTER TABLE reservations ADD COLUMN fulfilled bigint NOT NULL DEFAULT 0 CHECK (fulfilled >= 0);

CREATE TABLE idempotency_keys (
    tenant_id       uuid        NOT NULL,
    scope           text        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    status          text        NOT NULL CHECK (status IN ('in_flight', 'done')),
    response_status bigint,
    response_body   text,
    locked_until    timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, scope, key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
