-- Catalog: products with variants and exact prices (integer minor units per ISO 4217
-- currency), stock locations, inventory levels explained by an adjustment ledger, and
-- reservations. `reserved <= on_hand` is checked by the database as well as by the
-- conditional updates that maintain it.
CREATE TABLE products (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    id          uuid        NOT NULL,
    title       text        NOT NULL,
    handle      text        NOT NULL,
    description text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    options     jsonb       NOT NULL,
    metadata    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX products_handle_key ON products (tenant_id, handle);
-- Titles sort bytewise (as in SQLite), whatever the database's collation.
CREATE INDEX products_by_title ON products (tenant_id, title COLLATE "C", id);
CREATE INDEX products_by_status ON products (tenant_id, status, id);

CREATE TABLE variants (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    product_id    uuid        NOT NULL,
    sku           text        NOT NULL,
    title         text,
    option_values jsonb       NOT NULL,
    weight_grams  bigint      CHECK (weight_grams >= 0),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    version       bigint      NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, product_id) REFERENCES products (tenant_id, id)
);

CREATE UNIQUE INDEX variants_sku_key ON variants (tenant_id, sku);
CREATE INDEX variants_by_product ON variants (tenant_id, product_id, id);

CREATE TABLE variant_prices (
    tenant_id  uuid   NOT NULL,
    variant_id uuid   NOT NULL,
    currency   text   NOT NULL CHECK (length(currency) = 3),
    amount     bigint NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (tenant_id, variant_id, currency),
    FOREIGN KEY (tenant_id, variant_id) REFERENCES variants (tenant_id, id)
);

CREATE TABLE stock_locations (
    tenant_id  uuid        NOT NULL REFERENCES tenants (id),
    id         uuid        NOT NULL,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version    bigint      NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX stock_locations_name_key ON stock_locations (tenant_id, name);

CREATE TABLE inventory_levels (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    variant_id  uuid        NOT NULL,
    location_id uuid        NOT NULL,
    on_hand     bigint      NOT NULL,
    reserved    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CHECK (reserved >= 0 AND on_hand >= reserved AND on_hand <= 1000000000),
    FOREIGN KEY (tenant_id, variant_id) REFERENCES variants (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES stock_locations (tenant_id, id)
);

CREATE UNIQUE INDEX inventory_levels_key ON inventory_levels (tenant_id, variant_id, location_id);
CREATE INDEX inventory_levels_by_location ON inventory_levels (tenant_id, location_id);

-- The ledger outlives the variants and locations it mentions: no foreign keys.
CREATE TABLE inventory_adjustments (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    variant_id  uuid        NOT NULL,
    location_id uuid        NOT NULL,
    delta       bigint      NOT NULL CHECK (delta <> 0),
    reason      text        NOT NULL,
    note        text,
    actor       text        NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX inventory_adjustments_by_level ON inventory_adjustments (tenant_id, variant_id, location_id);

CREATE TABLE reservations (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    variant_id  uuid        NOT NULL,
    location_id uuid        NOT NULL,
    quantity    bigint      NOT NULL CHECK (quantity > 0),
    created_at  timestamptz NOT NULL,
    released_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE storefront_settings (
    tenant_id         uuid    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    show_stock_counts boolean NOT NULL
);
