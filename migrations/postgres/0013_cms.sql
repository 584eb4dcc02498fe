-- CMS webhooks (#23): each delivery stored once by the sender's delivery id; the job that
-- applies a document reads its latest revision from here.
CREATE TABLE cms_events (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    doc_id      TEXT NOT NULL,
    revision    TEXT NOT NULL,
    operation   TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX cms_events_document ON cms_events(source, tenant_id, doc_id, revision);
