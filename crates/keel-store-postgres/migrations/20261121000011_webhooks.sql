-- Webhooks: the relay marks outbox events relayed; endpoints (secrets sealed under the master
-- key), messages (one per endpoint and event, the body exactly as signed) and every attempt.
ALTER TABLE outbox_events ADD COLUMN relayed_at timestamptz;
CREATE INDEX outbox_events_unrelayed ON outbox_events (occurred_at, id) WHERE relayed_at IS NULL;

CREATE TABLE webhook_endpoints (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id),
    id              uuid        NOT NULL,
    url             text        NOT NULL,
    description     text        NOT NULL,
    event_types     jsonb       NOT NULL,
    enabled         boolean     NOT NULL,
    disabled_reason text,
    secrets         jsonb       NOT NULL,
    failing_since   timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE webhook_messages (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    endpoint_id     uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    body            text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'delivering', 'delivered', 'failed')),
    attempts        bigint      NOT NULL CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, id)
);

CREATE UNIQUE INDEX webhook_messages_once ON webhook_messages (tenant_id, endpoint_id, event_id);
CREATE INDEX webhook_messages_due ON webhook_messages (status, next_attempt_at);

CREATE TABLE webhook_attempts (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    message_id    uuid        NOT NULL,
    endpoint_id   uuid        NOT NULL,
    attempted_at  timestamptz NOT NULL,
    status_code   bigint,
    latency_ms    bigint      NOT NULL,
    error         text,
    response_body text,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, message_id) REFERENCES webhook_messages (tenant_id, id)
);

CREATE INDEX webhook_attempts_by_message ON webhook_attempts (tenant_id, message_id, id);
