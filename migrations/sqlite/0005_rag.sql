-- Retrieval (embedded store): documents and their chunks. A document and its chunks are
-- written in one transaction; the vectors and the BM25 index live in memory, rebuilt from
-- these rows at start.
CREATE TABLE rag_documents (
    tenant_id     TEXT NOT NULL,
    id            TEXT NOT NULL,
    title         TEXT,
    source        TEXT,
    format        TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}',
    chunk_count   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE rag_chunks (
    tenant_id     TEXT NOT NULL,
    id            TEXT NOT NULL,
    document_id   TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    title         TEXT,
    heading       TEXT,
    content       TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    tokens        INTEGER NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}',
    embedding     BLOB NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, document_id) REFERENCES rag_documents(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX rag_chunks_document ON rag_chunks(tenant_id, document_id);
