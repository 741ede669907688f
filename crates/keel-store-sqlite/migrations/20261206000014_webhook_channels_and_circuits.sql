-- Issue 19: the account-notification channel (one endpoint per shop, for one-time secrets
-- that never enter the event log), a circuit per endpoint (failures in a row, paused until),
-- claims read one endpoint's due messages at a time, and retention finds finished messages.
ALTER TABLE webhook_endpoints ADD COLUMN channel TEXT NOT NULL DEFAULT 'webhook'
    CHECK (channel IN ('webhook', 'account'));
ALTER TABLE webhook_endpoints ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0
    CHECK (consecutive_failures >= 0);
ALTER TABLE webhook_endpoints ADD COLUMN paused_until INTEGER;

CREATE UNIQUE INDEX webhook_endpoints_one_account ON webhook_endpoints (tenant_id)
    WHERE channel = 'account';

CREATE INDEX webhook_messages_by_endpoint
    ON webhook_messages (tenant_id, endpoint_id, status, next_attempt_at);
CREATE INDEX webhook_messages_finished ON webhook_messages (next_attempt_at)
    WHERE status IN ('delivered', 'failed');
