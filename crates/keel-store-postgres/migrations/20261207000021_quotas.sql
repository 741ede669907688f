-- Issue 23: quotas per shop, enforced where the rows are written, so concurrent writes can
-- never pass them: the trigger takes a transaction-scoped advisory lock per shop and quota
-- before counting (READ COMMITTED: the count then sees every write committed before the
-- lock was granted). A shop's own quota (`keel tenant quotas`) holds, else the deployment's
-- default (written by each node at start from KEEL_QUOTAS__*), else none. A refusal raises
-- `quota_exceeded:<quota>` (SQLSTATE P0001).
CREATE TABLE quota_defaults (
    quota text NOT NULL PRIMARY KEY,
    max   bigint NOT NULL CHECK (max >= 0)
);

CREATE TABLE tenant_quotas (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    quota     text NOT NULL,
    max       bigint NOT NULL CHECK (max >= 0),
    PRIMARY KEY (tenant_id, quota)
);

-- TG_ARGV[0]: the quota; TG_ARGV[1]: the counting statement (a constant of this migration).
CREATE FUNCTION keel_enforce_quota() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lim bigint;
    n bigint;
    existing boolean;
BEGIN
    -- An insert that will update an existing row (an upsert) is no new row.
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE tenant_id = $1 AND id = $2)', TG_TABLE_NAME)
        INTO existing USING NEW.tenant_id, NEW.id;
    IF existing THEN
        RETURN NEW;
    END IF;
    SELECT COALESCE(
        (SELECT max FROM tenant_quotas WHERE tenant_id = NEW.tenant_id AND quota = TG_ARGV[0]),
        (SELECT max FROM quota_defaults WHERE quota = TG_ARGV[0])) INTO lim;
    IF lim IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('keel.quota.' || TG_ARGV[0] || '.' || NEW.tenant_id::text, 0));
    EXECUTE TG_ARGV[1] INTO n USING NEW.tenant_id;
    IF n >= lim THEN
        RAISE EXCEPTION 'quota_exceeded:%', TG_ARGV[0] USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER products_quota BEFORE INSERT ON products FOR EACH ROW EXECUTE FUNCTION
    keel_enforce_quota('products', 'SELECT count(*) FROM products WHERE tenant_id = $1');
CREATE TRIGGER variants_quota BEFORE INSERT ON variants FOR EACH ROW EXECUTE FUNCTION
    keel_enforce_quota('variants', 'SELECT count(*) FROM variants WHERE tenant_id = $1');
CREATE TRIGGER stock_locations_quota BEFORE INSERT ON stock_locations FOR EACH ROW EXECUTE FUNCTION
    keel_enforce_quota('stock_locations', 'SELECT count(*) FROM stock_locations WHERE tenant_id = $1');
CREATE TRIGGER webhook_endpoints_quota BEFORE INSERT ON webhook_endpoints FOR EACH ROW EXECUTE FUNCTION
    keel_enforce_quota('webhook_endpoints', 'SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1');
CREATE TRIGGER api_keys_quota BEFORE INSERT ON api_keys FOR EACH ROW EXECUTE FUNCTION
    keel_enforce_quota('api_keys', 'SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL');
CREATE TRIGGER staff_users_quota BEFORE INSERT ON staff_users FOR EACH ROW EXECUTE FUNCTION
    keel_enforce_quota('staff_users', 'SELECT count(*) FROM staff_users WHERE tenant_id = $1 AND status <> ''disabled''');
CREATE TRIGGER open_carts_quota BEFORE INSERT ON carts FOR EACH ROW WHEN (NEW.status = 'open') EXECUTE FUNCTION
    keel_enforce_quota('open_carts', 'SELECT count(*) FROM carts WHERE tenant_id = $1 AND status = ''open''');

-- Open carts are counted on every cart created.
CREATE INDEX carts_open_by_tenant ON carts (tenant_id) WHERE status = 'open';
