//! The PostgreSQL + pgvector retrieval store: chunks in `rag_chunks` with a `vector(384)`
//! column under an HNSW index (cosine), a generated `tsvector` under GIN for full text,
//! JSONB metadata, and the tenant in every WHERE clause.

use std::collections::HashMap;

use pgvector::Vector;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::bm25::terms;
use super::store::{
    ChunkRecord, ChunkStore, DocumentRecord, Filter, ScoredChunk, metadata_from_text,
};
use crate::store::StoreError;

/// HNSW settings of the pgvector index (`[rag.pgvector]`).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgVectorParams {
    pub m: u32,
    pub ef_construction: u32,
    /// `hnsw.ef_search` for every query (pgvector's default is 40).
    pub ef_search: u32,
}

impl Default for PgVectorParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 64,
            ef_search: 64,
        }
    }
}

pub struct PgVectorStore {
    pool: PgPool,
    params: PgVectorParams,
}

const CHUNK_COLUMNS: &str =
    "id, document_id, idx, title, heading, content, metadata::text AS metadata, repeats";

fn doc_from_row(r: &sqlx::postgres::PgRow) -> Result<DocumentRecord, sqlx::Error> {
    Ok(DocumentRecord {
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        source: r.try_get("source")?,
        format: r.try_get("format")?,
        content_hash: r.try_get("content_hash")?,
        metadata: metadata_from_text(&r.try_get::<String, _>("metadata")?),
        chunk_count: r.try_get::<i32, _>("chunk_count")? as usize,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn chunk_from_row(r: &sqlx::postgres::PgRow) -> Result<ScoredChunk, sqlx::Error> {
    Ok(ScoredChunk {
        chunk_id: r.try_get("id")?,
        document_id: r.try_get("document_id")?,
        index: r.try_get::<i32, _>("idx")? as usize,
        title: r.try_get("title")?,
        heading: r.try_get("heading")?,
        text: r.try_get("content")?,
        metadata: metadata_from_text(&r.try_get::<String, _>("metadata")?),
        repeats: r.try_get::<i32, _>("repeats")?.max(1) as usize,
        score: r.try_get::<f64, _>("score")? as f32,
    })
}

/// `AND metadata -> $n = $n+1::jsonb` per filter key, numbered from `first`: each key's
/// value must equal the filter's (the embedded store's semantics; no containment).
fn filter_clause(filter: &Filter, first: usize) -> String {
    (0..filter.0.len())
        .map(|i| {
            let n = first + 2 * i;
            format!(" AND metadata -> ${n} = ${}::jsonb", n + 1)
        })
        .collect()
}

const DOC_COLUMNS: &str = "id, title, source, format, content_hash, metadata::text AS metadata, chunk_count, created_at, updated_at";

impl PgVectorStore {
    /// Makes sure the HNSW index exists with the configured parameters (an index built with
    /// other parameters is dropped first).
    pub async fn open(pool: PgPool, params: PgVectorParams) -> Result<Self, StoreError> {
        let name = format!("rag_chunks_hnsw_m{}_ef{}", params.m, params.ef_construction);
        let existing: Vec<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'rag_chunks' AND indexname LIKE 'rag_chunks_hnsw_%'",
        )
        .fetch_all(&pool)
        .await?;
        for other in existing.iter().filter(|n| **n != name) {
            tracing::info!(index = %other, "dropping a pgvector index built with other parameters");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX IF EXISTS {other}")))
                .execute(&pool)
                .await?;
        }
        if !existing.contains(&name) {
            tracing::info!(index = %name, "building the pgvector HNSW index");
            let sql = format!(
                "CREATE INDEX IF NOT EXISTS {name} ON rag_chunks USING hnsw (embedding vector_cosine_ops) WITH (m = {}, ef_construction = {})",
                params.m, params.ef_construction
            );
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await {
                // Another replica may have created it at the same moment.
                let now: Option<String> = sqlx::query_scalar(
                    "SELECT indexname::text FROM pg_indexes WHERE indexname = $1",
                )
                .bind(&name)
                .fetch_optional(&pool)
                .await?;
                if now.is_none() {
                    return Err(e.into());
                }
            }
        }
        Ok(Self { pool, params })
    }
}

#[async_trait::async_trait]
impl ChunkStore for PgVectorStore {
    fn name(&self) -> &'static str {
        "pgvector"
    }

    async fn document(&self, tenant: &str, id: &str) -> Result<Option<DocumentRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOC_COLUMNS} FROM rag_documents WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(doc_from_row).transpose()?)
    }

    async fn chunk_vectors(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let rows: Vec<(String, Vector)> = sqlx::query_as(
            "SELECT content_hash, embedding FROM rag_chunks WHERE tenant_id = $1 AND document_id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(h, v)| (h, v.to_vec())).collect())
    }

    async fn put(
        &self,
        tenant: &str,
        doc: &DocumentRecord,
        chunks: Vec<ChunkRecord>,
    ) -> Result<(), StoreError> {
        let metadata = serde_json::Value::Object(doc.metadata.clone()).to_string();
        let mut tx = self.pool.begin().await?;
        // Writers of one document queue here; other documents are not held up.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{tenant}\u{1f}{}", doc.id))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM rag_chunks WHERE tenant_id = $1 AND document_id = $2")
            .bind(tenant)
            .bind(&doc.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO rag_documents (tenant_id, id, title, source, format, content_hash, metadata, chunk_count, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)
             ON CONFLICT (tenant_id, id) DO UPDATE SET title = excluded.title, source = excluded.source,
               format = excluded.format, content_hash = excluded.content_hash, metadata = excluded.metadata,
               chunk_count = excluded.chunk_count, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(&doc.id)
        .bind(&doc.title)
        .bind(&doc.source)
        .bind(&doc.format)
        .bind(&doc.content_hash)
        .bind(&metadata)
        .bind(doc.chunk_count as i32)
        .bind(doc.created_at)
        .bind(doc.updated_at)
        .execute(&mut *tx)
        .await?;
        for batch in chunks.chunks(500) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO rag_chunks (tenant_id, id, document_id, idx, title, heading, content, content_hash, tokens, metadata, embedding, repeats) ",
            );
            qb.push_values(batch, |mut b, c| {
                b.push_bind(tenant)
                    .push_bind(&c.id)
                    .push_bind(&doc.id)
                    .push_bind(c.index as i32)
                    .push_bind(&doc.title)
                    .push_bind(&c.heading)
                    .push_bind(&c.text)
                    .push_bind(&c.content_hash)
                    .push_bind(c.tokens as i32)
                    .push_bind(&metadata)
                    .push_unseparated("::jsonb")
                    .push_bind(Vector::from(c.embedding.clone()))
                    .push_bind(c.repeats as i32);
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM rag_documents WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn list(
        &self,
        tenant: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOC_COLUMNS} FROM rag_documents WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        )))
        .bind(tenant)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(doc_from_row).collect::<Result<_, _>>()?)
    }

    async fn vector_search(
        &self,
        tenant: &str,
        vector: &[f32],
        k: usize,
        filter: &Filter,
        exact: bool,
    ) -> Result<Vec<ScoredChunk>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if exact {
            sqlx::query("SELECT set_config('enable_indexscan', 'off', true)")
                .execute(&mut *tx)
                .await?;
        } else {
            // Iterative scans keep walking the graph until enough rows pass the tenant and
            // metadata filters (without them a selective filter returns too few rows).
            sqlx::query(
                "SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)",
            )
            .bind(self.params.ef_search.max(k as u32).to_string())
            .execute(&mut *tx)
            .await?;
        }
        let sql = format!(
            "SELECT * FROM (SELECT {CHUNK_COLUMNS}, (1 - (embedding <=> $1))::float8 AS score FROM rag_chunks
               WHERE tenant_id = $2{}
               ORDER BY embedding <=> $1 LIMIT $3) c ORDER BY score DESC",
            filter_clause(filter, 4)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(Vector::from(vector.to_vec()))
            .bind(tenant)
            .bind(k as i64);
        for (key, value) in &filter.0 {
            query = query.bind(key.clone()).bind(value.to_string());
        }
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows.iter().map(chunk_from_row).collect::<Result<_, _>>()?)
    }

    async fn text_search(
        &self,
        tenant: &str,
        query: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<ScoredChunk>, StoreError> {
        // Any term may match (websearch syntax would AND them): plain words joined by `|`.
        let mut words = terms(query);
        words.sort();
        words.dedup();
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let tsquery = words.join(" | ");
        let sql = format!(
            "SELECT {CHUNK_COLUMNS}, ts_rank_cd(tsv, q, 1)::float8 AS score
               FROM rag_chunks, to_tsquery('english', $1) q
              WHERE tenant_id = $2 AND tsv @@ q{}
              ORDER BY score DESC, id LIMIT $3",
            filter_clause(filter, 4)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tsquery)
            .bind(tenant)
            .bind(k as i64);
        for (key, value) in &filter.0 {
            query = query.bind(key.clone()).bind(value.to_string());
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(chunk_from_row).collect::<Result<_, _>>()?)
    }
}
