-- Durable jobs (with the dead-letter queue), Stripe events, billing state of tenants,
-- usage metering cursors, the notification outbox and idempotency keys.
ALTER TABLE tenants ADD COLUMN plan TEXT NOT NULL DEFAULT 'free';
-- active | past_due | limited (past due beyond the grace period: limited models only)
ALTER TABLE tenants ADD COLUMN billing_status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE tenants ADD COLUMN past_due_since BIGINT;
ALTER TABLE tenants ADD COLUMN credit_cents BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN stripe_customer_id TEXT;
ALTER TABLE tenants ADD COLUMN stripe_subscription_id TEXT;
CREATE INDEX tenants_stripe_customer ON tenants(stripe_customer_id);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    -- queued | running | done | dead
    status        TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    max_attempts  BIGINT NOT NULL,
    run_at        BIGINT NOT NULL,
    locked_by     TEXT,
    locked_until  BIGINT,
    last_error    TEXT,
    dedupe_key    TEXT UNIQUE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs(status, run_at);

CREATE TABLE stripe_events (
    id            TEXT PRIMARY KEY,
    type          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    processed_at  BIGINT,
    outcome       TEXT
);

CREATE TABLE meter_pushes (
    tenant_id     TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    window_end    BIGINT NOT NULL,
    tokens        BIGINT NOT NULL,
    identifier    TEXT NOT NULL,
    -- pending (recorded before the POST: retried as is, never re-windowed) | sent
    state         TEXT NOT NULL,
    pushed_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, window_start)
);

CREATE TABLE notifications (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    subject       TEXT NOT NULL,
    body          TEXT NOT NULL,
    dedupe_key    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL
);

CREATE TABLE idempotency_keys (
    tenant_id     TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    -- pending (the first request is running) | done (the response below is stored)
    state         TEXT NOT NULL,
    status_code   BIGINT,
    content_type  TEXT,
    body          BLOB,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);

-- When the row was written: usage metering reads windows of it.
ALTER TABLE request_log ADD COLUMN logged_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX request_log_tenant_logged ON request_log(tenant_id, logged_at);
