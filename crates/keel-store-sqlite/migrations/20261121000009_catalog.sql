-- Catalog: products with variants and exact prices (integer minor units per ISO 4217
-- currency), stock locations, inventory levels explained by an adjustment ledger, and
-- reservations. `reserved <= on_hand` is checked by the database as well as by the
-- conditional updates that maintain it.
CREATE TABLE products (
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id),
    id          BLOB    NOT NULL CHECK (length(id) = 16),
    title       TEXT    NOT NULL,
    handle      TEXT    NOT NULL,
    description TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    options     TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX products_handle_key ON products (tenant_id, handle);
CREATE INDEX products_by_title ON products (tenant_id, title, id);
CREATE INDEX products_by_status ON products (tenant_id, status, id);

CREATE TABLE variants (
    tenant_id     BLOB    NOT NULL,
    id            BLOB    NOT NULL CHECK (length(id) = 16),
    product_id    BLOB    NOT NULL,
    sku           TEXT    NOT NULL,
    title         TEXT,
    option_values TEXT    NOT NULL,
    weight_grams  INTEGER CHECK (weight_grams >= 0),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, product_id) REFERENCES products (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX variants_sku_key ON variants (tenant_id, sku);
CREATE INDEX variants_by_product ON variants (tenant_id, product_id, id);

CREATE TABLE variant_prices (
    tenant_id  BLOB    NOT NULL,
    variant_id BLOB    NOT NULL,
    currency   TEXT    NOT NULL CHECK (length(currency) = 3),
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (tenant_id, variant_id, currency),
    FOREIGN KEY (tenant_id, variant_id) REFERENCES variants (tenant_id, id)
) STRICT;

CREATE TABLE stock_locations (
    tenant_id  BLOB    NOT NULL REFERENCES tenants (id),
    id         BLOB    NOT NULL CHECK (length(id) = 16),
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX stock_locations_name_key ON stock_locations (tenant_id, name);

CREATE TABLE inventory_levels (
    tenant_id   BLOB    NOT NULL,
    id          BLOB    NOT NULL CHECK (length(id) = 16),
    variant_id  BLOB    NOT NULL,
    location_id BLOB    NOT NULL,
    on_hand     INTEGER NOT NULL,
    reserved    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CHECK (reserved >= 0 AND on_hand >= reserved AND on_hand <= 1000000000),
    FOREIGN KEY (tenant_id, variant_id) REFERENCES variants (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES stock_locations (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX inventory_levels_key ON inventory_levels (tenant_id, variant_id, location_id);
CREATE INDEX inventory_levels_by_location ON inventory_levels (tenant_id, location_id);

-- The ledger outlives the variants and locations it mentions: no foreign keys.
CREATE TABLE inventory_adjustments (
    tenant_id   BLOB    NOT NULL,
    id          BLOB    NOT NULL CHECK (length(id) = 16),
    variant_id  BLOB    NOT NULL,
    location_id BLOB    NOT NULL,
    delta       INTEGER NOT NULL CHECK (delta <> 0),
    reason      TEXT    NOT NULL,
    note        TEXT,
    actor       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE INDEX inventory_adjustments_by_level ON inventory_adjustments (tenant_id, variant_id, location_id);

CREATE TABLE reservations (
    tenant_id   BLOB    NOT NULL,
    id          BLOB    NOT NULL CHECK (length(id) = 16),
    variant_id  BLOB    NOT NULL,
    location_id BLOB    NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    created_at  INTEGER NOT NULL,
    released_at INTEGER,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE TABLE storefront_settings (
    tenant_id         BLOB    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    show_stock_counts INTEGER NOT NULL CHECK (show_stock_counts IN (0, 1))
) STRICT;
