//! Re-asking a share of semantic hits (`cache.reask_share`): the same request goes upstream in
//! the background, through the whole pipeline with the cache off (so it is routed, charged and
//! logged like any request, under its own `reask_...` request id, but neither counted as a
//! cache bypass nor told to analytics), and the fresh answer is
//! compared with the one the cache served. Agreeing answers (cosine of their embeddings at
//! least `cache.reask_agreement`) make a "right" verdict, others a "wrong" one, recorded as
//! feedback from `reask`: the tenant's false-hit estimate then rests on a random sample of its
//! hits, not only on the users who complain. A re-ask verdict never demotes an entry (a fresh
//! answer can differ for reasons of its own); the application's thumbs-down does.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use tokio::sync::Semaphore;

use super::{ChatBody, ChatRequest, Controls, Pipeline};
use crate::auth::Principal;
use crate::cache::{ControlText, Hit, HitKind, feedback::Source};
use crate::embed::Priority;
use crate::telemetry::trace::Span;
use crate::types::ChatCompletionRequest;

/// Re-asks in flight at once; past it a sampled hit is skipped (and counted).
const MAX_IN_FLIGHT: usize = 4;

/// The pipeline's handle on itself for background re-asks, and their bound.
pub struct Reasker {
    me: OnceLock<Weak<Pipeline>>,
    slots: Arc<Semaphore>,
}

impl Default for Reasker {
    fn default() -> Self {
        Self {
            me: OnceLock::new(),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

impl Reasker {
    /// Lets the pipeline spawn re-asks of itself (once it lives in an `Arc`).
    pub fn bind(pipeline: &Arc<Pipeline>) {
        let _ = pipeline.reask.me.set(Arc::downgrade(pipeline));
    }
}

impl Pipeline {
    /// On a semantic hit: with probability `cache.reask_share`, re-asks it in the background.
    pub(super) fn maybe_reask(
        &self,
        request: &ChatCompletionRequest,
        principal: &Principal,
        controls: &Controls,
        grounded: bool,
        hit: &Hit,
    ) {
        let Some(cache) = self.cache.clone() else {
            return;
        };
        let share = cache.config.reask_share;
        if hit.kind != HitKind::Semantic || share <= 0.0 || rand::random::<f64>() >= share {
            return;
        }
        let Some(me) = self.reask.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let Ok(permit) = self.reask.slots.clone().try_acquire_owned() else {
            metrics::counter!("qm_cache_reasks_total", "result" => "skipped_busy").increment(1);
            return;
        };
        let mut body = request.clone();
        body.stream = Some(false);
        body.stream_options = None;
        // The model's grounding prefix is gone from `request` by now: a grounded hit is
        // re-asked grounded through the header instead.
        let controls = Controls {
            cache: ControlText {
                mode: Some("off".into()),
                ..Default::default()
            },
            rag: if grounded {
                Some("on".into())
            } else {
                controls.rag.clone()
            },
            internal: true,
            ..controls.clone()
        };
        let principal = principal.clone();
        let (entry, served) = (hit.entry_id.clone(), hit.answer.content.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tenant = principal.tenant.id.clone();
            let request_id = format!("reask_{}", uuid::Uuid::now_v7().simple());
            let asked = me.run(ChatRequest {
                body,
                principal,
                controls,
                request_id: request_id.clone(),
                started: Instant::now(),
                trace: Span::none(),
            });
            let fresh = match asked.await {
                Ok(r) => match r.body {
                    ChatBody::Whole(c) => c
                        .choices
                        .first()
                        .and_then(|c| c.message.get("content"))
                        .and_then(|c| c.as_str())
                        .map(str::to_string),
                    ChatBody::Stream(_) => None,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "cache re-ask failed upstream");
                    None
                }
            };
            let Some(fresh) = fresh else {
                metrics::counter!("qm_cache_reasks_total", "result" => "failed").increment(1);
                return;
            };
            let Some(agreement) = me.agreement(&tenant, &served, &fresh).await else {
                metrics::counter!("qm_cache_reasks_total", "result" => "failed").increment(1);
                return;
            };
            let agree = agreement >= cache.config.reask_agreement;
            let recorded = cache
                .feedback(&tenant, &entry, Some(&request_id), agree, Source::Reask)
                .await;
            let result = match recorded {
                Ok(true) if agree => "agreed",
                Ok(true) => "disagreed",
                // The entry went (evicted, invalidated) while the re-ask ran.
                Ok(false) => "gone",
                Err(e) => {
                    tracing::warn!(error = %e, "cache re-ask verdict not recorded");
                    "failed"
                }
            };
            metrics::counter!("qm_cache_reasks_total", "result" => result).increment(1);
            tracing::debug!(%entry, agreement, agree, "cache re-ask compared");
        });
    }

    /// The cosine similarity of two answers' embeddings (`None` without an embedder).
    async fn agreement(&self, tenant: &str, a: &str, b: &str) -> Option<f32> {
        if a.trim() == b.trim() {
            return Some(1.0);
        }
        let embedder = self.embedder.as_ref()?;
        let e = embedder
            .embed_for(tenant, Priority::Bulk, vec![a.to_string(), b.to_string()])
            .await
            .ok()?;
        let (x, y) = (&e.first()?.vector, &e.get(1)?.vector);
        Some(x.iter().zip(y).map(|(p, q)| p * q).sum())
    }
}
