-- Webhooks: the relay marks outbox events relayed; endpoints (secrets sealed under the master
-- key), messages (one per endpoint and event, the body exactly as signed) and every attempt.
ALTER TABLE outbox_events ADD COLUMN relayed_at INTEGER;
CREATE INDEX outbox_events_unrelayed ON outbox_events (occurred_at, id) WHERE relayed_at IS NULL;

CREATE TABLE webhook_endpoints (
    tenant_id       BLOB    NOT NULL REFERENCES tenants (id),
    id              BLOB    NOT NULL CHECK (length(id) = 16),
    url             TEXT    NOT NULL,
    description     TEXT    NOT NULL,
    event_types     TEXT    NOT NULL CHECK (json_valid(event_types)),
    enabled         INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    disabled_reason TEXT,
    secrets         TEXT    NOT NULL CHECK (json_valid(secrets)),
    failing_since   INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE TABLE webhook_messages (
    tenant_id       BLOB    NOT NULL,
    id              BLOB    NOT NULL CHECK (length(id) = 16),
    endpoint_id     BLOB    NOT NULL,
    event_id        BLOB    NOT NULL,
    event_type      TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivering', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX webhook_messages_once ON webhook_messages (tenant_id, endpoint_id, event_id);
CREATE INDEX webhook_messages_due ON webhook_messages (status, next_attempt_at);

CREATE TABLE webhook_attempts (
    tenant_id     BLOB    NOT NULL,
    id            BLOB    NOT NULL CHECK (length(id) = 16),
    message_id    BLOB    NOT NULL,
    endpoint_id   BLOB    NOT NULL,
    attempted_at  INTEGER NOT NULL,
    status_code   INTEGER,
    latency_ms    INTEGER NOT NULL,
    error         TEXT,
    response_body TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, message_id) REFERENCES webhook_messages (tenant_id, id)
) STRICT;

CREATE INDEX webhook_attempts_by_message ON webhook_attempts (tenant_id, message_id, id);
