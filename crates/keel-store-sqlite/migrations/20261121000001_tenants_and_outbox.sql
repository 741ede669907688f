-- Tenants and the transactional outbox.
-- Ids are UUIDs stored as 16-byte BLOBs (byte order = UUIDv7 time order).
-- Timestamps are INTEGER microseconds since the Unix epoch, UTC (exact; both backends store µs).

CREATE TABLE tenants (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    slug       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- Named like PostgreSQL's constraint so both adapters report the same name on conflict.
CREATE UNIQUE INDEX tenants_slug_key ON tenants (slug);

-- Written in the same transaction as the state change it describes (DESIGN.md §6).
CREATE TABLE outbox_events (
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id),
    id          BLOB    NOT NULL CHECK (length(id) = 16),
    event_type  TEXT    NOT NULL,
    payload     TEXT    NOT NULL CHECK (json_valid(payload)),
    occurred_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;
