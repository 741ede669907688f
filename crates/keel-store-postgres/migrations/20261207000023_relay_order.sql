-- Issue 25: a stream resumes in the order events reached live subscribers, not in the order
-- they were created. The relay numbers the events it relays in commit order (one position
-- row, locked by each relay until it commits), and with a bus publishes them in that order
-- (`published`: every event up to it is on the bus). A resume reads the events numbered
-- after the client's last one.
ALTER TABLE outbox_events ADD COLUMN relay_seq bigint;
CREATE INDEX outbox_events_by_relay_seq ON outbox_events (tenant_id, relay_seq)
    WHERE relay_seq IS NOT NULL;
-- Numbered for a bus and not yet published: a handful of rows at any time, so the relay
-- without a bus (which sets both at once) never writes to this index.
CREATE INDEX outbox_events_to_publish ON outbox_events (relay_seq)
    WHERE relay_seq IS NOT NULL AND relayed_at IS NULL;

CREATE TABLE relay_position (
    id        smallint NOT NULL PRIMARY KEY CHECK (id = 1),
    assigned  bigint NOT NULL,
    published bigint NOT NULL
);
INSERT INTO relay_position (id, assigned, published) VALUES (1, 0, 0);
