-- A chunk that occurs several times in one document (boilerplate, repeated paragraphs) is
-- stored once, with its count: thousands of identical vectors degrade an HNSW graph.
ALTER TABLE rag_chunks ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1;
