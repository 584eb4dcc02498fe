//! Grounding: a request that asks for it (the `rag/` model prefix, or the
//! `x-quartermaster-rag: on` control) gets the chunks retrieved for its last user message
//! put into its prompt, and its answer carries them as citations.

use std::sync::Arc;

use serde_json::json;

use super::ChatError;
use crate::rag::{GroundingConfig, Query, Rag};
use crate::types::ChatCompletionRequest;

/// Control: `on` or `off` whatever the model name.
pub const RAG_HEADER: &str = "x-quartermaster-rag";
/// Control: chunks to retrieve for a grounded request (default `rag.grounding.top_k`).
pub const RAG_TOP_K_HEADER: &str = "x-quartermaster-rag-top-k";

/// A request that asked for grounding.
pub(super) struct Grounding {
    rag: Arc<Rag>,
    query: String,
    top_k: usize,
}

/// What grounding put into the prompt.
pub(super) struct Citations {
    pub json: serde_json::Value,
    pub documents: Vec<String>,
    pub chunks: Vec<String>,
    /// Taken before retrieval: the chunks were read after it.
    pub read_at: i64,
}

fn invalid(message: String, param: &str) -> ChatError {
    ChatError::Invalid {
        message,
        param: Some(param.to_string()),
    }
}

impl Grounding {
    /// Strips the model prefix; `None` when the request is not grounded.
    pub fn requested(
        rag: Option<&Arc<Rag>>,
        header: Option<&str>,
        top_k: Option<&str>,
        request: &mut ChatCompletionRequest,
    ) -> Result<Option<Self>, ChatError> {
        let header = match header {
            None => None,
            Some(v)
                if v.eq_ignore_ascii_case("on") || v == "1" || v.eq_ignore_ascii_case("true") =>
            {
                Some(true)
            }
            Some(v)
                if v.eq_ignore_ascii_case("off") || v == "0" || v.eq_ignore_ascii_case("false") =>
            {
                Some(false)
            }
            Some(v) => {
                return Err(invalid(
                    format!("{RAG_HEADER} must be `on` or `off`, not `{v}`"),
                    RAG_HEADER,
                ));
            }
        };
        let prefix = rag
            .map(|r| r.config.grounding.model_prefix.clone())
            .unwrap_or_else(|| GroundingConfig::default().model_prefix);
        let by_model = match request.model.strip_prefix(prefix.as_str()) {
            Some(rest) if !rest.is_empty() => {
                request.model = rest.to_string();
                true
            }
            _ => false,
        };
        if !header.unwrap_or(by_model) {
            return Ok(None);
        }
        let Some(rag) = rag.cloned() else {
            return Err(invalid(
                "grounding was requested but retrieval is disabled on this gateway".into(),
                "model",
            ));
        };
        let top_k = match top_k {
            None => rag.config.grounding.top_k,
            Some(v) => match v.trim().parse::<usize>().ok() {
                Some(k) if (1..=rag.config.retrieval.max_top_k).contains(&k) => k,
                _ => {
                    return Err(invalid(
                        format!(
                            "{RAG_TOP_K_HEADER} must be a number from 1 to {}",
                            rag.config.retrieval.max_top_k
                        ),
                        RAG_TOP_K_HEADER,
                    ));
                }
            },
        };
        let Some(query) = crate::rag::last_user_text(request) else {
            return Err(invalid(
                "a grounded request needs a user message with text to retrieve for".into(),
                "messages",
            ));
        };
        Ok(Some(Self { rag, query, top_k }))
    }

    /// The request as the cache keys it: marked as grounded (with its retrieval settings).
    pub fn keyed(&self, request: &ChatCompletionRequest) -> ChatCompletionRequest {
        let mut keyed = request.clone();
        keyed.extra.insert(
            "quartermaster_grounding".into(),
            json!({ "top_k": self.top_k, "mode": self.rag.config.retrieval.mode }),
        );
        keyed
    }

    /// Retrieves and puts the context into the request.
    pub async fn apply(
        self,
        tenant: &str,
        request: &mut ChatCompletionRequest,
        vector: Option<Vec<f32>>,
    ) -> Result<Citations, ChatError> {
        let read_at = crate::clock::now_ms();
        let hits = self
            .rag
            .retrieve(
                tenant,
                &Query {
                    text: self.query,
                    top_k: self.top_k,
                    filter: Default::default(),
                    mode: self.rag.config.retrieval.mode,
                },
                vector,
            )
            .await
            .map_err(ChatError::Rag)?;
        let json = self.rag.ground(request, &hits).map_err(ChatError::Rag)?;
        // The prompt now holds the context: a client's own-protocol body no longer says it.
        request.native = None;
        let placed = json.as_array().map_or(0, Vec::len);
        let mut documents: Vec<String> = Vec::new();
        for h in hits.iter().take(placed) {
            if !documents.contains(&h.chunk.document_id) {
                documents.push(h.chunk.document_id.clone());
            }
        }
        metrics::counter!("qm_rag_grounded_requests_total").increment(1);
        Ok(Citations {
            json,
            documents,
            chunks: hits
                .into_iter()
                .take(placed)
                .map(|h| h.chunk.chunk_id)
                .collect(),
            read_at,
        })
    }
}
