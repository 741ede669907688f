-- Issue 23: each shop's own rate limits. A `ceiling` is the operator's (`keel tenant limits`)
-- and replaces the configured default for the shop; an `override` is the owner's
-- (`PATCH /v1/admin/settings`) and holds while it stays within the ceiling.
CREATE TABLE tenant_limits (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    scope text NOT NULL CHECK (scope IN ('ceiling', 'override')),
    policy text NOT NULL,
    interval_ms bigint NOT NULL CHECK (interval_ms > 0),
    burst bigint NOT NULL CHECK (burst > 0),
    PRIMARY KEY (tenant_id, scope, policy)
);
