-- Issue 19: an endpoint's due messages are read in delivery order (next attempt, then id)
-- straight from its index, so a claim reads as many index entries as it takes, whatever the
-- endpoint's backlog (without `id` the ties of one batch of events were sorted every time);
-- and a shop's deliveries in flight are counted from an index of those alone, not from all
-- of its messages.
DROP INDEX webhook_messages_by_endpoint;
CREATE INDEX webhook_messages_by_endpoint
    ON webhook_messages (tenant_id, endpoint_id, status, next_attempt_at, id);
CREATE INDEX webhook_messages_in_flight ON webhook_messages (tenant_id, locked_until)
    WHERE status = 'delivering';
