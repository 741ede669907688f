-- The retention job deletes relayed events and consumers' processed-event rows older than an
-- exact configured age; these indexes keep each pass from scanning the whole table.
CREATE INDEX outbox_events_relayed ON outbox_events (occurred_at) WHERE relayed_at IS NOT NULL;
CREATE INDEX processed_events_by_time ON processed_events (processed_at);
