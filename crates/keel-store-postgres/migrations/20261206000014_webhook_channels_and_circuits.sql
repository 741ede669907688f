-- Issue 19: the account-notification channel (one endpoint per shop, for one-time secrets
-- that never enter the event log), a circuit per endpoint (failures in a row, paused until),
-- claims read one endpoint's due messages at a time, and retention finds finished messages.
ALTER TABLE webhook_endpoints
    ADD COLUMN channel text NOT NULL DEFAULT 'webhook' CHECK (channel IN ('webhook', 'account')),
    ADD COLUMN consecutive_failures bigint NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    ADD COLUMN paused_until timestamptz;

CREATE UNIQUE INDEX webhook_endpoints_one_account ON webhook_endpoints (tenant_id)
    WHERE channel = 'account';

CREATE INDEX webhook_messages_by_endpoint
    ON webhook_messages (tenant_id, endpoint_id, status, next_attempt_at);
CREATE INDEX webhook_messages_finished ON webhook_messages (next_attempt_at)
    WHERE status IN ('delivered', 'failed');
