-- Issue 23: quotas per shop, enforced where the rows are written, so concurrent writes can
-- never pass them (SQLite has one writer: the count and the insert are one step). A shop's
-- own quota (`keel tenant quotas`) holds, else the deployment's default (written by each
-- node at start from KEEL_QUOTAS__*), else none. A refusal aborts the write with
-- `quota_exceeded:<quota>`. An insert that will update an existing row (an upsert) is no new
-- row and is not counted.
CREATE TABLE quota_defaults (
    quota   TEXT    NOT NULL PRIMARY KEY,
    max     INTEGER NOT NULL CHECK (max >= 0)
) STRICT;

CREATE TABLE tenant_quotas (
    tenant_id BLOB    NOT NULL REFERENCES tenants (id),
    quota     TEXT    NOT NULL,
    max       INTEGER NOT NULL CHECK (max >= 0),
    PRIMARY KEY (tenant_id, quota)
) STRICT;

CREATE TRIGGER products_quota BEFORE INSERT ON products
WHEN NOT EXISTS (SELECT 1 FROM products WHERE tenant_id = NEW.tenant_id AND id = NEW.id) AND (SELECT count(*) FROM products WHERE tenant_id = NEW.tenant_id) >= COALESCE(
    (SELECT max FROM tenant_quotas WHERE tenant_id = NEW.tenant_id AND quota = 'products'),
    (SELECT max FROM quota_defaults WHERE quota = 'products'), 9223372036854775807)
BEGIN
    SELECT RAISE(ABORT, 'quota_exceeded:products');
END;

CREATE TRIGGER variants_quota BEFORE INSERT ON variants
WHEN NOT EXISTS (SELECT 1 FROM variants WHERE tenant_id = NEW.tenant_id AND id = NEW.id) AND (SELECT count(*) FROM variants WHERE tenant_id = NEW.tenant_id) >= COALESCE(
    (SELECT max FROM tenant_quotas WHERE tenant_id = NEW.tenant_id AND quota = 'variants'),
    (SELECT max FROM quota_defaults WHERE quota = 'variants'), 9223372036854775807)
BEGIN
    SELECT RAISE(ABORT, 'quota_exceeded:variants');
END;

CREATE TRIGGER stock_locations_quota BEFORE INSERT ON stock_locations
WHEN NOT EXISTS (SELECT 1 FROM stock_locations WHERE tenant_id = NEW.tenant_id AND id = NEW.id) AND (SELECT count(*) FROM stock_locations WHERE tenant_id = NEW.tenant_id) >= COALESCE(
    (SELECT max FROM tenant_quotas WHERE tenant_id = NEW.tenant_id AND quota = 'stock_locations'),
    (SELECT max FROM quota_defaults WHERE quota = 'stock_locations'), 9223372036854775807)
BEGIN
    SELECT RAISE(ABORT, 'quota_exceeded:stock_locations');
END;

CREATE TRIGGER webhook_endpoints_quota BEFORE INSERT ON webhook_endpoints
WHEN NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE tenant_id = NEW.tenant_id AND id = NEW.id) AND (SELECT count(*) FROM webhook_endpoints WHERE tenant_id = NEW.tenant_id) >= COALESCE(
    (SELECT max FROM tenant_quotas WHERE tenant_id = NEW.tenant_id AND quota = 'webhook_endpoints'),
    (SELECT max FROM quota_defaults WHERE quota = 'webhook_endpoints'), 9223372036854775807)
BEGIN
    SELECT RAISE(ABORT, 'quota_exceeded:webhook_endpoints');
END;

CREATE TRIGGER api_keys_quota BEFORE INSERT ON api_keys
WHEN NOT EXISTS (SELECT 1 FROM api_keys WHERE tenant_id = NEW.tenant_id AND id = NEW.id) AND (SELECT count(*) FROM api_keys WHERE tenant_id = NEW.tenant_id AND revoked_at IS NULL) >= COALESCE(
    (SELECT max FROM tenant_quotas WHERE tenant_id = NEW.tenant_id AND quota = 'api_keys'),
    (SELECT max FROM quota_defaults WHERE quota = 'api_keys'), 9223372036854775807)
BEGIN
    SELECT RAISE(ABORT, 'quota_exceeded:api_keys');
END;

CREATE TRIGGER staff_users_quota BEFORE INSERT ON staff_users
WHEN NOT EXISTS (SELECT 1 FROM staff_users WHERE tenant_id = NEW.tenant_id AND id = NEW.id) AND (SELECT count(*) FROM staff_users WHERE tenant_id = NEW.tenant_id AND status <> 'disabled') >= COALESCE(
    (SELECT max FROM tenant_quotas WHERE tenant_id = NEW.tenant_id AND quota = 'staff_users'),
    (SELECT max FROM quota_defaults WHERE quota = 'staff_users'), 9223372036854775807)
BEGIN
    SELECT RAISE(ABORT, 'quota_exceeded:staff_users');
END;

CREATE TRIGGER open_carts_quota BEFORE INSERT ON carts
WHEN NOT EXISTS (SELECT 1 FROM carts WHERE tenant_id = NEW.tenant_id AND id = NEW.id) AND NEW.status = 'open' AND (SELECT count(*) FROM carts WHERE tenant_id = NEW.tenant_id AND status = 'open') >= COALESCE(
    (SELECT max FROM tenant_quotas WHERE tenant_id = NEW.tenant_id AND quota = 'open_carts'),
    (SELECT max FROM quota_defaults WHERE quota = 'open_carts'), 9223372036854775807)
BEGIN
    SELECT RAISE(ABORT, 'quota_exceeded:open_carts');
END;

-- Open carts are counted on every cart created.
CREATE INDEX carts_open_by_tenant ON carts (tenant_id) WHERE status = 'open';
