-- Several replicas on one database (PostgreSQL only; SQLite serves one process).
--
-- Limits and budgets shared by every replica: per scope (`tenant:ID`, `key:ID`), limit kind
-- (`requests`, `tokens` per minute; `usd_day`, `usd_month`) and window (the minute, day or
-- month index), what is used: spent, plus what replicas hold leased (src/usage/lease.rs).
CREATE TABLE limit_counters (
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    used DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope, kind, window_start)
);
CREATE INDEX limit_counters_by_age ON limit_counters (updated_at);

-- The semantic cache's vectors for `cache.backend = "pgvector"`: every replica searches the
-- same index, filtered by tenant and parameter fingerprint in SQL. Rows go with their entry.
CREATE TABLE cache_vectors (
    entry_id TEXT PRIMARY KEY REFERENCES cache_entries(id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    embedding vector(384) NOT NULL
);
CREATE INDEX cache_vectors_hnsw ON cache_vectors USING hnsw (embedding vector_ip_ops)
    WITH (m = 16, ef_construction = 64);
CREATE INDEX cache_vectors_scope ON cache_vectors (tenant_id, fingerprint);
