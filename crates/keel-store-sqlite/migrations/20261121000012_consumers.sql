-- Bus consumers: events each consumer processed (at most once), and parked poison events.
CREATE TABLE processed_events (
    consumer     TEXT    NOT NULL,
    event_id     BLOB    NOT NULL CHECK (length(event_id) = 16),
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
) STRICT;

CREATE TABLE dead_letters (
    id          BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    consumer    TEXT    NOT NULL,
    tenant_id   BLOB    NOT NULL,
    event_id    BLOB    NOT NULL,
    event_type  TEXT    NOT NULL,
    payload     TEXT    NOT NULL CHECK (json_valid(payload)),
    occurred_at INTEGER NOT NULL,
    error       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX dead_letters_by_tenant ON dead_letters (tenant_id, id);
