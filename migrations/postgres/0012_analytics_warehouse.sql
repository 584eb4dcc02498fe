-- Analytics consent and the warehouse export (#24).
-- An end user's stored analytics consent, used when neither their token nor the request
-- says: a row per user and tenant, replaced when the user changes their mind.
CREATE TABLE user_consent (
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    analytics  BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

-- The warehouse export (#24): the last day exported after it had closed.
CREATE TABLE warehouse_watermarks (
    name       TEXT PRIMARY KEY,
    day        BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
