-- Issue 19: who holds an unpaid order, as the caps at checkout count it (a guest's buyer key
-- and the client address, pseudonymised; customers count by customer_id), and carts found by
-- their last change for the idle-cart retention.
ALTER TABLE orders ADD COLUMN email_key TEXT;
ALTER TABLE orders ADD COLUMN client_key TEXT;

CREATE INDEX orders_unpaid_by_customer ON orders (tenant_id, customer_id, expires_at)
    WHERE status = 'pending_payment';
CREATE INDEX orders_unpaid_by_email ON orders (tenant_id, email_key, expires_at)
    WHERE status = 'pending_payment';
CREATE INDEX orders_unpaid_by_client ON orders (tenant_id, client_key, expires_at)
    WHERE status = 'pending_payment';

CREATE INDEX carts_by_last_change ON carts (updated_at);
