-- When each cache tag was last invalidated (tenant '*': every tenant). An answer grounded on
-- sources read before then is not stored: a document changed while the answer was written.
CREATE TABLE cache_tag_invalidations (
    tenant_id TEXT NOT NULL,
    tag       TEXT NOT NULL,
    at        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, tag)
);
