-- Issue 19: delivery claims read only what they take. Claims find the endpoints with pending
-- messages by skipping through `webhook_messages_pending` (one probe per such endpoint, never
-- one per message) and read an endpoint's due messages in delivery order (next attempt, then
-- id) from it; deliveries in flight are counted from an index of those alone; an endpoint's
-- message list pages by id. `webhook_messages_due` (status first, all shops mixed) and
-- migration 14's `webhook_messages_by_endpoint` (which kept every finished message between an
-- endpoint's pending ones) served the reads these replace.
DROP INDEX webhook_messages_by_endpoint;
DROP INDEX webhook_messages_due;
CREATE INDEX webhook_messages_pending
    ON webhook_messages (tenant_id, endpoint_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX webhook_messages_in_flight
    ON webhook_messages (tenant_id, endpoint_id, locked_until) WHERE status = 'delivering';
CREATE INDEX webhook_messages_of_endpoint ON webhook_messages (tenant_id, endpoint_id, id);
