-- Retrieval (pgvector store): documents and their chunks, written together in one
-- transaction. The HNSW index over `embedding` is created at start with the configured
-- m / ef_construction (its name carries them), so changing them rebuilds it.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE rag_documents (
    tenant_id     TEXT NOT NULL,
    id            TEXT NOT NULL,
    title         TEXT,
    source        TEXT,
    format        TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    metadata      JSONB NOT NULL DEFAULT '{}',
    chunk_count   INTEGER NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
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
    metadata      JSONB NOT NULL DEFAULT '{}',
    embedding     vector(384) NOT NULL,
    tsv           tsvector GENERATED ALWAYS AS (
                      setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A') ||
                      setweight(to_tsvector('english'::regconfig, coalesce(heading, '')), 'B') ||
                      to_tsvector('english'::regconfig, content)) STORED,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, document_id) REFERENCES rag_documents(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX rag_chunks_document ON rag_chunks(tenant_id, document_id);
CREATE INDEX rag_chunks_tsv ON rag_chunks USING gin(tsv);
