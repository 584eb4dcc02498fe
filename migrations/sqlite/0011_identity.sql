-- End users (identity, #22): who made a request, kept with what it left behind, so usage
-- can be read by user and everything of a user found and deleted.
ALTER TABLE request_log ADD COLUMN user_id TEXT;
CREATE INDEX request_log_user ON request_log(tenant_id, user_id, created_at);
ALTER TABLE cache_entries ADD COLUMN user_id TEXT;
CREATE INDEX cache_entries_user ON cache_entries(tenant_id, user_id);
ALTER TABLE responses ADD COLUMN user_id TEXT;
-- A key issued to one end user (a personal key): its requests are that user's, and the
-- user's deletion revokes it.
ALTER TABLE api_keys ADD COLUMN user_id TEXT;
CREATE INDEX responses_user ON responses(tenant_id, user_id);

-- The audit log: appended only, each row chained to the previous by its hash.
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log(at);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

-- User deletions (DELETE /admin/users/{id}, and identity providers' user.deleted): one per
-- user, its steps' states, run by a durable job.
CREATE TABLE user_deletions (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    email         TEXT,
    requested_by  TEXT NOT NULL,
    requested_at  BIGINT NOT NULL,
    status        TEXT NOT NULL,
    finished_at   BIGINT,
    UNIQUE (tenant_id, user_id)
);
CREATE TABLE user_deletion_steps (
    deletion_id  TEXT NOT NULL REFERENCES user_deletions(id),
    step         TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    detail       TEXT,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (deletion_id, step)
);

-- Identity providers' webhook deliveries by id: a redelivery is acknowledged, not redone.
CREATE TABLE identity_webhooks (
    id           TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    received_at  BIGINT NOT NULL
);
