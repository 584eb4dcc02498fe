//! The cache's part in one request: looking the question up (exact, then by meaning) before
//! anything else runs, and storing the finished answer afterwards, in the background.

use std::sync::Arc;
use std::time::Duration;

use super::ChatError;
use crate::auth::Principal;
use crate::cache::{Cache, CacheKeys, ControlText, Controls, Hit, NewEntry, StoredAnswer};
use crate::embed::{EmbedService, Priority};
use crate::store::Store;
use crate::telemetry::genai;
use crate::telemetry::trace::{Kind, Span};
use crate::types::ChatCompletionRequest;

/// The cache's keys and the client's controls for one request.
pub(super) struct CachePlan {
    cache: Arc<Cache>,
    tenant: String,
    /// The end user whose answer a write stores (found and deleted with the user).
    user: Option<String>,
    keys: CacheKeys,
    controls: Controls,
    /// The embedded query, once computed (reused by the router and the write).
    pub vector: Option<Vec<f32>>,
    pub looked_up: bool,
}

impl CachePlan {
    /// `None` when the cache is off, the client turned it off, or the request cannot be
    /// cached. A malformed cache header is an error even then.
    pub fn new(
        cache: Option<&Arc<Cache>>,
        principal: &Principal,
        text: &ControlText,
        request: &ChatCompletionRequest,
    ) -> Result<Option<Self>, ChatError> {
        let Some(cache) = cache else {
            return Ok(None);
        };
        let controls = Controls::parse(text, &cache.config).map_err(|e| ChatError::Invalid {
            message: e.to_string(),
            param: Some(e.header.to_string()),
        })?;
        if !controls.read && !controls.write {
            metrics::counter!("qm_cache_lookups_total", "result" => "bypass").increment(1);
            return Ok(None);
        }
        let keys = match crate::cache::cache_keys(&principal.tenant.id, request) {
            Ok(k) => k,
            Err(why) => {
                metrics::counter!("qm_cache_lookups_total", "result" => "not_cacheable", "why" => why.as_str())
                    .increment(1);
                return Ok(None);
            }
        };
        Ok(Some(Self {
            cache: cache.clone(),
            tenant: principal.tenant.id.clone(),
            user: principal.user.clone(),
            keys,
            controls,
            vector: None,
            looked_up: false,
        }))
    }

    fn semantic(&self, embedder: Option<&EmbedService>) -> bool {
        self.cache.config.semantic && embedder.is_some()
    }

    /// Exact, then semantic. A failing store or embedder is a miss, never an error, and
    /// neither is waited for past the lookup deadline.
    pub async fn lookup(
        &mut self,
        store: &Store,
        embedder: Option<&EmbedService>,
        trace: &Span,
    ) -> Option<Hit> {
        if !self.controls.read {
            metrics::counter!("qm_cache_lookups_total", "result" => "bypass").increment(1);
            return None;
        }
        // With the database known to be down, a lookup would only wait out the pool: skip
        // it (the answer is then not stored either).
        if store.check_up().is_err() {
            metrics::counter!("qm_cache_lookups_total", "result" => "skipped", "why" => "store_down").increment(1);
            self.controls.write = false;
            return None;
        }
        self.looked_up = true;
        let deadline = Duration::from_millis(self.cache.config.lookup_deadline_ms);
        match tokio::time::timeout(deadline, self.cache.lookup_exact(&self.tenant, &self.keys))
            .await
        {
            Ok(Ok(Some(hit))) => return Some(self.counted(hit)),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cache lookup failed; treating as a miss"),
            Err(_) => {
                metrics::counter!("qm_cache_lookups_total", "result" => "skipped", "why" => "store_deadline").increment(1);
                tracing::warn!("cache: the exact lookup missed its deadline; treating as a miss");
            }
        }
        if self.semantic(embedder) {
            let embedder = embedder?;
            let span = if trace.is_recording() {
                trace.child(
                    format!("embeddings {}", embedder.model_name),
                    Kind::Internal,
                )
            } else {
                Span::none()
            };
            if span.is_recording() {
                span.set(genai::OPERATION, "embeddings");
                span.set(genai::PROVIDER, "quartermaster.local");
                span.set(genai::REQUEST_MODEL, embedder.model_name.as_str());
            }
            let embedded = embedder.embed_for(
                &self.tenant,
                Priority::Interactive,
                vec![self.keys.query.clone()],
            );
            match tokio::time::timeout(deadline, embedded).await {
                Ok(Ok(mut e)) if !e.is_empty() => {
                    span.set(genai::INPUT_TOKENS, e[0].tokens as u64);
                    self.vector = Some(e.remove(0).vector)
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    span.error("embedding_failed", e.to_string());
                    tracing::warn!(error = %e, "cache: embedding failed; no semantic lookup")
                }
                Err(_) => {
                    span.error("timeout", "the embedding missed the lookup deadline");
                    metrics::counter!("qm_cache_lookups_total", "result" => "skipped", "why" => "embed_deadline").increment(1);
                    tracing::debug!(
                        "cache: the query's embedding missed its deadline; no semantic lookup"
                    );
                }
            }
            drop(span);
            if let Some(v) = &self.vector {
                match self
                    .cache
                    .lookup_semantic(&self.tenant, &self.keys, v, self.controls.threshold)
                    .await
                {
                    Ok(Some(hit)) => return Some(self.counted(hit)),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cache lookup failed; treating as a miss"),
                }
            }
        }
        metrics::counter!("qm_cache_lookups_total", "result" => "miss").increment(1);
        None
    }

    fn counted(&self, hit: Hit) -> Hit {
        metrics::counter!("qm_cache_lookups_total", "result" => "hit", "kind" => hit.kind.as_str())
            .increment(1);
        metrics::counter!("qm_cache_saved_usd_total").increment((hit.cost_usd * 1e6) as u64);
        self.cache.touch(hit.entry_id.clone());
        hit
    }

    /// What the answer path needs to store the answer, if the client allows writing.
    pub fn writer(self, embedder: Option<&EmbedService>) -> Option<CacheWriter> {
        if !self.controls.write {
            return None;
        }
        let embedder = if self.semantic(embedder) && self.vector.is_none() {
            embedder.cloned()
        } else {
            None
        };
        Some(CacheWriter {
            cache: self.cache,
            tenant: self.tenant,
            user: self.user,
            keys: self.keys,
            vector: self.vector,
            embedder,
            ttl_secs: self.controls.ttl_secs,
            tags: self.controls.tags,
            citations: None,
            sources_read_at: None,
        })
    }
}

/// Stores a finished answer in the background (the client never waits for it).
pub(super) struct CacheWriter {
    cache: Arc<Cache>,
    tenant: String,
    user: Option<String>,
    keys: CacheKeys,
    vector: Option<Vec<f32>>,
    /// Set when the query still has to be embedded (the lookup was skipped).
    embedder: Option<EmbedService>,
    ttl_secs: u64,
    tags: Vec<String>,
    citations: Option<serde_json::Value>,
    /// Set by [`CacheWriter::ground`]: the answer is grounded on sources read after this.
    sources_read_at: Option<i64>,
}

impl CacheWriter {
    /// A grounded answer keeps its citations and is tagged with every cited document, so
    /// re-ingesting or deleting one of them removes it.
    /// `read_at`: taken before retrieval; a document invalidated since may have changed under
    /// the answer, which is then not stored.
    pub fn ground(&mut self, citations: &serde_json::Value, documents: &[String], read_at: i64) {
        self.citations = Some(citations.clone());
        self.sources_read_at = Some(read_at);
        for doc in documents {
            let tag = crate::rag::doc_tag(doc);
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
    }

    pub fn store(self, mut answer: StoredAnswer, cost_usd: f64) {
        answer.citations = self.citations;
        tokio::spawn(async move {
            let mut vector = self.vector;
            if let (None, Some(e)) = (&vector, &self.embedder) {
                vector = e
                    .embed_for(&self.tenant, Priority::Bulk, vec![self.keys.query.clone()])
                    .await
                    .ok()
                    .and_then(|mut v| (!v.is_empty()).then(|| v.remove(0).vector));
            }
            let entry = NewEntry {
                tenant: self.tenant,
                user: self.user,
                keys: self.keys,
                vector,
                answer,
                cost_usd,
                ttl_secs: self.ttl_secs,
                tags: self.tags,
                sources_read_at: self.sources_read_at,
            };
            if let Err(e) = self.cache.insert(entry).await {
                tracing::warn!(error = %e, "cache write failed");
            }
        });
    }
}
