//! Retrieval: a query answered from the chunk store by vector search, full-text search or
//! both fused by reciprocal rank fusion. Apart from ingestion because it reads the store
//! only, on the interactive path.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::{Filter, Mode, Rag, RagError, RetrievalConfig, ScoredChunk, has_nul};
use crate::embed::Priority;

/// One retrieval request.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    pub top_k: usize,
    pub filter: Filter,
    pub mode: Mode,
}

/// A retrieved chunk with where it ranked.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    #[serde(flatten)]
    pub chunk: ScoredChunk,
    /// Rank (1-based) in the vector ranking, if it was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<usize>,
    /// Rank (1-based) in the full-text ranking, if it was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_rank: Option<usize>,
    /// Cosine similarity to the query, if the vector ranking found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
}

/// Reciprocal rank fusion of a vector and a text ranking.
pub fn fuse(
    vector: Vec<ScoredChunk>,
    text: Vec<ScoredChunk>,
    config: &RetrievalConfig,
    top_k: usize,
) -> Vec<Hit> {
    let mut by_id: HashMap<String, (Hit, f32)> = HashMap::new();
    for (rank, c) in vector.into_iter().enumerate() {
        let score = config.vector_weight / (config.rrf_k + rank as f32 + 1.0);
        let similarity = c.score;
        by_id.insert(
            c.chunk_id.clone(),
            (
                Hit {
                    chunk: c,
                    vector_rank: Some(rank + 1),
                    text_rank: None,
                    similarity: Some(similarity),
                },
                score,
            ),
        );
    }
    for (rank, c) in text.into_iter().enumerate() {
        let score = config.text_weight / (config.rrf_k + rank as f32 + 1.0);
        by_id
            .entry(c.chunk_id.clone())
            .and_modify(|(h, s)| {
                h.text_rank = Some(rank + 1);
                *s += score;
            })
            .or_insert((
                Hit {
                    chunk: c,
                    vector_rank: None,
                    text_rank: Some(rank + 1),
                    similarity: None,
                },
                score,
            ));
    }
    let mut hits: Vec<(Hit, f32)> = by_id.into_values().collect();
    hits.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| a.0.chunk.chunk_id.cmp(&b.0.chunk.chunk_id))
    });
    hits.into_iter()
        .take(top_k)
        .map(|(mut h, s)| {
            h.chunk.score = s;
            h
        })
        .collect()
}

impl Rag {
    /// Retrieves for a query; `vector` is the query's embedding if already computed.
    pub async fn retrieve(
        &self,
        tenant: &str,
        query: &Query,
        vector: Option<Vec<f32>>,
    ) -> Result<Vec<Hit>, RagError> {
        self.retrieve_with(tenant, query, vector, &self.config.retrieval)
            .await
    }

    /// [`Rag::retrieve`] with other fusion settings (evaluation compares several).
    pub async fn retrieve_with(
        &self,
        tenant: &str,
        query: &Query,
        vector: Option<Vec<f32>>,
        settings: &RetrievalConfig,
    ) -> Result<Vec<Hit>, RagError> {
        if has_nul(&Value::Object(query.filter.0.clone())) {
            return Err(RagError::Invalid(
                "the filter must not contain NUL characters".into(),
            ));
        }
        let candidates = settings.candidates.max(query.top_k);
        let vector_list = if query.mode == Mode::Text {
            Vec::new()
        } else {
            let v = match vector {
                Some(v) => v,
                None => self
                    .embed_for(tenant, Priority::Interactive, vec![query.text.clone()])
                    .await?
                    .pop()
                    .unwrap_or_default(),
            };
            let k = if query.mode == Mode::Vector {
                query.top_k
            } else {
                candidates
            };
            self.store
                .vector_search(tenant, &v, k, &query.filter, false)
                .await?
        };
        let text_list = if query.mode == Mode::Vector {
            Vec::new()
        } else {
            let k = if query.mode == Mode::Text {
                query.top_k
            } else {
                candidates
            };
            self.store
                .text_search(tenant, &query.text, k, &query.filter)
                .await?
        };
        Ok(match query.mode {
            Mode::Vector => vector_list
                .into_iter()
                .enumerate()
                .map(|(i, c)| Hit {
                    similarity: Some(c.score),
                    chunk: c,
                    vector_rank: Some(i + 1),
                    text_rank: None,
                })
                .collect(),
            Mode::Text => text_list
                .into_iter()
                .enumerate()
                .map(|(i, c)| Hit {
                    chunk: c,
                    vector_rank: None,
                    text_rank: Some(i + 1),
                    similarity: None,
                })
                .collect(),
            Mode::Hybrid => fuse(vector_list, text_list, settings, query.top_k),
        })
    }
}
