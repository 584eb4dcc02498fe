-- The operator console (#25): operators' TOTP enrolment (the second factor of the brief's
-- §13) and console sessions, shared by every replica.
CREATE TABLE operator_mfa (
    actor        TEXT PRIMARY KEY,
    secret       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    confirmed_at BIGINT,
    -- The last 30 s step a code was accepted for: a code is good once.
    last_step    BIGINT NOT NULL DEFAULT 0,
    -- Wrong codes in a row, and the lock they earn (guessing is slowed for every replica).
    failures     BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE operator_sessions (
    token_hash TEXT PRIMARY KEY,
    actor      TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX operator_sessions_actor ON operator_sessions(actor);
