-- Communications (#23): in-app notifications per end user, the email outbox, delivery
-- events and the suppression list, bookings from Cal.com, and where mail goes.
ALTER TABLE tenants ADD COLUMN contact_email TEXT;

-- '' is the tenant itself (what its API keys see); otherwise an end user.
ALTER TABLE notifications ADD COLUMN user_id TEXT NOT NULL DEFAULT '';
-- high (also emailed at once, and pushed) | normal | low (emailed in the digest)
ALTER TABLE notifications ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal';
ALTER TABLE notifications ADD COLUMN read_at BIGINT;
ALTER TABLE notifications ADD COLUMN digested_at BIGINT;
CREATE INDEX notifications_inbox ON notifications(tenant_id, user_id, read_at, id);
CREATE INDEX notifications_digest ON notifications(priority, digested_at, created_at);

-- End users' addresses (from their tokens' email claim, or set by an operator).
CREATE TABLE user_contacts (
    tenant_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    email       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

-- Every email, written in the transaction of the event that caused it, sent by a job.
CREATE TABLE email_outbox (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    to_addr       TEXT NOT NULL,
    template      TEXT NOT NULL,
    stream        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    html          TEXT NOT NULL,
    text          TEXT NOT NULL,
    dedupe_key    TEXT NOT NULL UNIQUE,
    -- queued | sent | rejected | suppressed | unsent (no provider configured)
    state         TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    provider      TEXT,
    provider_id   TEXT,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    sent_at       BIGINT
);
CREATE INDEX email_outbox_provider_id ON email_outbox(provider_id);

-- Delivery events from the providers' webhooks, once each.
CREATE TABLE email_events (
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    provider_id  TEXT,
    payload      TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);

-- Addresses no mail goes to (hard bounces, complaints, unsubscribes).
CREATE TABLE email_suppressions (
    address     TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    provider    TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Cal.com bookings per tenant, times in UTC with the attendee's zone kept.
CREATE TABLE bookings (
    tenant_id      TEXT NOT NULL,
    uid            TEXT NOT NULL,
    status         TEXT NOT NULL,
    title          TEXT NOT NULL,
    start_utc      TEXT NOT NULL,
    end_utc        TEXT NOT NULL,
    attendee_name  TEXT NOT NULL,
    attendee_email TEXT NOT NULL,
    attendee_tz    TEXT NOT NULL,
    organizer      TEXT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, uid)
);
CREATE TABLE cal_events (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    uid          TEXT NOT NULL,
    received_at  BIGINT NOT NULL
);

-- Every replica's live streams hear of a new notification when its transaction commits.
CREATE FUNCTION qm_notification_inserted() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('qm_notifications', NEW.tenant_id || ' ' || NEW.user_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER notifications_announce AFTER INSERT ON notifications
    FOR EACH ROW EXECUTE FUNCTION qm_notification_inserted();
