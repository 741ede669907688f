-- Tenants and the transactional outbox (same version and name as the SQLite migration).

CREATE TABLE tenants (
    id         uuid        PRIMARY KEY,
    slug       text        NOT NULL CONSTRAINT tenants_slug_key UNIQUE,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL
);

-- Written in the same transaction as the state change it describes (DESIGN.md §6).
CREATE TABLE outbox_events (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    id          uuid        NOT NULL,
    event_type  text        NOT NULL,
    payload     jsonb       NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
