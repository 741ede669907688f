-- Bus consumers: events each consumer processed (at most once), and parked poison events.
CREATE TABLE processed_events (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE dead_letters (
    id          uuid        NOT NULL PRIMARY KEY,
    consumer    text        NOT NULL,
    tenant_id   uuid        NOT NULL,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    payload     jsonb       NOT NULL,
    occurred_at timestamptz NOT NULL,
    error       text        NOT NULL,
    attempts    bigint      NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE INDEX dead_letters_by_tenant ON dead_letters (tenant_id, id);
