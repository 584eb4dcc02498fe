-- Tenants, API keys (hashes only) and the request log.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    key_prefix  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

CREATE TABLE request_log (
    id            TEXT PRIMARY KEY,
    request_id    TEXT NOT NULL,
    tenant_id     TEXT,
    key_id        TEXT,
    model         TEXT NOT NULL,
    provider      TEXT,
    stream        BOOLEAN NOT NULL,
    status        TEXT NOT NULL,
    http_status   INTEGER NOT NULL,
    error_code    TEXT,
    tokens_in     BIGINT NOT NULL,
    tokens_out    BIGINT NOT NULL,
    latency_ms    DOUBLE PRECISION NOT NULL,
    ttft_ms       DOUBLE PRECISION,
    created_at    BIGINT NOT NULL
);
CREATE INDEX request_log_tenant_time ON request_log(tenant_id, created_at);
