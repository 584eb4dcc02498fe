-- Feedback on cache hits (POST /v1/cache/feedback, and the background audit of a share of
-- semantic hits): whether the answer served was right for the question asked. A wrong
-- semantic hit demotes its entry (no longer served by meaning; exact hits stay); the
-- tenant's false-hit estimate is wrong hits over semantic hits served.
CREATE TABLE cache_feedback (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    entry_id    TEXT NOT NULL,
    request_id  TEXT,
    correct     BOOLEAN NOT NULL,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX cache_feedback_tenant_time ON cache_feedback(tenant_id, created_at);
-- One verdict per request (a later one replaces it).
CREATE UNIQUE INDEX cache_feedback_request ON cache_feedback(tenant_id, request_id);
ALTER TABLE cache_entries ADD COLUMN demoted_at BIGINT;
