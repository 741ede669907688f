-- Issue 22, the effects. A session is asked about again at an exact time (reconciliation
-- walks the due ones, so sessions that stay open cannot starve the rest), and a refund at the
-- provider is a task, retried with the same idempotency key until the provider answers.
ALTER TABLE payment_sessions ADD COLUMN next_check_at INTEGER NOT NULL DEFAULT 0;
DROP INDEX payment_sessions_unsettled;
CREATE INDEX payment_sessions_due ON payment_sessions (next_check_at, tenant_id, id)
    WHERE status IN ('open', 'failed');
-- One session without a final answer per order and provider: two requests racing to open a
-- session cannot both store one.
CREATE UNIQUE INDEX payment_sessions_one_open ON payment_sessions (tenant_id, order_id, provider)
    WHERE status IN ('open', 'failed');

CREATE TABLE payment_refunds (
    tenant_id       BLOB    NOT NULL,
    id              BLOB    NOT NULL CHECK (length(id) = 16),
    order_id        BLOB    NOT NULL,
    provider        TEXT    NOT NULL,
    payment_ref     TEXT    NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    provider_ref    TEXT,
    failure         TEXT,
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id)
) STRICT;

CREATE INDEX payment_refunds_due ON payment_refunds (next_attempt_at, tenant_id, id)
    WHERE status = 'pending';
CREATE INDEX payment_refunds_of_order ON payment_refunds (tenant_id, order_id, created_at);
