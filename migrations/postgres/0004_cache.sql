-- The response cache: one row per complete, successful answer. The row is written whole in
-- one transaction (with its tags), and its checksum is verified on every read.
CREATE TABLE cache_entries (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    exact_key    TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    query_text   TEXT NOT NULL,
    embedding    BYTEA,
    model        TEXT NOT NULL,
    response     TEXT NOT NULL,
    checksum     TEXT NOT NULL,
    cost_usd     DOUBLE PRECISION NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_hit_at  BIGINT NOT NULL,
    hits         BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX cache_entries_exact ON cache_entries(tenant_id, exact_key);
CREATE INDEX cache_entries_tenant_lru ON cache_entries(tenant_id, last_hit_at);
CREATE INDEX cache_entries_expiry ON cache_entries(expires_at);

CREATE TABLE cache_entry_tags (
    entry_id   TEXT NOT NULL REFERENCES cache_entries(id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL,
    tag        TEXT NOT NULL,
    PRIMARY KEY (entry_id, tag)
);
CREATE INDEX cache_entry_tags_tag ON cache_entry_tags(tenant_id, tag);
