-- Issue 22, the effects. A session is asked about again at an exact time (reconciliation
-- walks the due ones, so sessions that stay open cannot starve the rest), and a refund at the
-- provider is a task, retried with the same idempotency key until the provider answers.
ALTER TABLE payment_sessions ADD COLUMN next_check_at timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE payment_sessions ALTER COLUMN next_check_at DROP DEFAULT;
ALTER TABLE payment_sessions
    ADD CONSTRAINT payment_sessions_order_fkey FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id),
    ADD CONSTRAINT payment_sessions_amount_check CHECK (amount > 0),
    ADD CONSTRAINT payment_sessions_status_check CHECK (status IN ('open', 'succeeded', 'failed', 'canceled'));
DROP INDEX payment_sessions_unsettled;
CREATE INDEX payment_sessions_due ON payment_sessions (next_check_at, tenant_id, id)
    WHERE status IN ('open', 'failed');
-- One session without a final answer per order and provider: two requests racing to open a
-- session cannot both store one.
CREATE UNIQUE INDEX payment_sessions_one_open ON payment_sessions (tenant_id, order_id, provider)
    WHERE status IN ('open', 'failed');

CREATE TABLE payment_refunds (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    order_id        uuid        NOT NULL,
    provider        text        NOT NULL,
    payment_ref     text        NOT NULL,
    amount          bigint      NOT NULL CHECK (amount > 0),
    currency        text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    provider_ref    text,
    failure         text,
    attempts        bigint      NOT NULL CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id)
);

CREATE INDEX payment_refunds_due ON payment_refunds (next_attempt_at, tenant_id, id)
    WHERE status = 'pending';
CREATE INDEX payment_refunds_of_order ON payment_refunds (tenant_id, order_id, created_at);
