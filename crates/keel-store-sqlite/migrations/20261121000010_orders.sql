-- Orders: pricing setup records (tax rates, shipping options, promotions) as typed JSON with
-- their unique keys and promotion usage counters, carts and orders as versioned aggregates
-- (JSON holding integer minor units only) with the columns lists and jobs query, per-shop
-- order numbers, promotion redemptions, and idempotency keys.
CREATE TABLE pricing_records (
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id),
    id          BLOB    NOT NULL CHECK (length(id) = 16),
    kind        TEXT    NOT NULL CHECK (kind IN ('tax_rate', 'shipping_option', 'promotion')),
    key         TEXT    NOT NULL,
    body        TEXT    NOT NULL CHECK (json_valid(body)),
    usage_limit INTEGER CHECK (usage_limit > 0),
    times_used  INTEGER NOT NULL DEFAULT 0,
    version     INTEGER NOT NULL CHECK (version >= 1),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CHECK (times_used >= 0 AND (usage_limit IS NULL OR times_used <= usage_limit))
) STRICT;

CREATE UNIQUE INDEX pricing_records_key ON pricing_records (tenant_id, kind, key);
CREATE INDEX pricing_records_by_kind ON pricing_records (tenant_id, kind, id);

CREATE TABLE pricing_settings (
    tenant_id          BLOB    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    prices_include_tax INTEGER NOT NULL CHECK (prices_include_tax IN (0, 1))
) STRICT;

CREATE TABLE promotion_redemptions (
    tenant_id    BLOB    NOT NULL,
    order_id     BLOB    NOT NULL CHECK (length(order_id) = 16),
    promotion_id BLOB    NOT NULL,
    customer_key TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, order_id)
) STRICT;

CREATE INDEX promotion_redemptions_by_customer ON promotion_redemptions (tenant_id, promotion_id, customer_key);

CREATE TABLE carts (
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id),
    id          BLOB    NOT NULL CHECK (length(id) = 16),
    customer_id BLOB,
    secret_hash TEXT,
    status      TEXT    NOT NULL CHECK (status IN ('open', 'converted')),
    body        TEXT    NOT NULL CHECK (json_valid(body)),
    version     INTEGER NOT NULL CHECK (version >= 1),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE TABLE order_counters (
    tenant_id   BLOB    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    next_number INTEGER NOT NULL
) STRICT;

CREATE TABLE orders (
    tenant_id      BLOB    NOT NULL REFERENCES tenants (id),
    id             BLOB    NOT NULL CHECK (length(id) = 16),
    number         INTEGER NOT NULL,
    status         TEXT    NOT NULL,
    payment_status TEXT    NOT NULL,
    currency       TEXT    NOT NULL,
    customer_id    BLOB,
    email          TEXT,
    total          INTEGER NOT NULL CHECK (total >= 0),
    body           TEXT    NOT NULL CHECK (json_valid(body)),
    version        INTEGER NOT NULL CHECK (version >= 1),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX orders_number_key ON orders (tenant_id, number);
CREATE INDEX orders_by_status ON orders (tenant_id, status, id);
CREATE INDEX orders_by_customer ON orders (tenant_id, customer_id, id);
CREATE INDEX orders_unpaid_expiry ON orders (status, expires_at);

-- An order's timeline reads its events by the order id in their payload.
CREATE INDEX outbox_events_by_order ON outbox_events (tenant_id, json_extract(payload, '$.order_id'))
    WHERE event_type LIKE 'order.%';

-- Units of a reservation taken out of stock by fulfilment.
ALTER TABLE reservations ADD COLUMN fulfilled INTEGER NOT NULL DEFAULT 0 CHECK (fulfilled >= 0);

CREATE TABLE idempotency_keys (
    tenant_id       BLOB    NOT NULL,
    scope           TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    request_hash    BLOB    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('in_flight', 'done')),
    response_status INTEGER,
    response_body   TEXT,
    locked_until    INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, scope, key)
) STRICT;

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
