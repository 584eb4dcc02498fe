//! [`Pipeline::run`]: the steps of one request in order, each a short method.

use std::sync::Arc;

use super::answer;
use super::cache_step::{CachePlan, CacheWriter};
use super::grounding::{Citations, Grounding};
use super::routing;
use super::{
    CacheOutcome, ChatError, ChatRequest, ChatResponse, DEFAULT_RESERVED_OUTPUT_TOKENS, Meta,
    Pipeline,
};
use crate::auth::Principal;
use crate::cache::Hit;
use crate::error::ErrorCode;
use crate::providers::ModelRoute;
use crate::route::{Decision, Live};
use crate::telemetry::genai;
use crate::telemetry::trace::{Kind, Span};
use crate::types::ChatCompletionRequest;
use crate::usage::{Budgets, Ledger, LedgerOpen, Reservation};

impl Pipeline {
    /// Answers one request.
    pub async fn run(&self, req: ChatRequest) -> Result<ChatResponse, ChatError> {
        let ChatRequest {
            body: mut request,
            mut principal,
            controls,
            request_id,
            started,
            trace,
        } = req;
        request
            .validate()
            .map_err(|(message, param)| ChatError::Invalid {
                message,
                param: Some(param),
            })?;
        // The end user: the credential's, else what the request says (OpenAI's `user`).
        if principal.user.is_none() {
            principal.user = request
                .extra
                .get("user")
                .and_then(serde_json::Value::as_str)
                .filter(|u| !u.is_empty() && u.len() <= 256)
                .map(str::to_string);
        }
        let grounding = Grounding::requested(
            self.rag.as_ref(),
            controls.rag.as_deref(),
            controls.rag_top_k.as_deref(),
            &mut request,
        )?;
        if trace.is_recording() {
            trace.set(genai::OPERATION, "chat");
            trace.set(genai::REQUEST_MODEL, request.model.as_str());
            trace.set(genai::TENANT, principal.tenant.name.as_str());
        }
        let live = self.live.load_full();
        routing::tier_hint(&live, controls.tier.as_deref())?;
        match self.models.get(&request.model) {
            None if !live.is_alias(&request.model) => {
                return Err(ChatError::ModelNotFound(request.model.clone()));
            }
            Some(m) if !m.supports_tools && request.needs_tools() => {
                return Err(ChatError::Invalid {
                    message: format!(
                        "the model `{}` does not support tools (supports_tools = false); offer no tools, set tool_choice to none, or ask a model that does",
                        m.name
                    ),
                    param: Some("tools".into()),
                });
            }
            _ => {}
        }
        // The cache first: a hit skips retrieval, routing, budgets and the upstream. A
        // grounded request is its own cache key space (its answer depends on the documents).
        let keyed = grounding.as_ref().map(|g| g.keyed(&request));
        let mut plan = if controls.internal {
            None
        } else {
            CachePlan::new(
                self.cache.as_ref(),
                &principal,
                &controls.cache,
                keyed.as_ref().unwrap_or(&request),
            )?
        };
        if let Some(p) = plan.as_mut() {
            let span = trace.child("cache lookup", Kind::Internal);
            let hit = p.lookup(&self.store, self.embedder.as_ref(), &span).await;
            traced_lookup(&[&span, &trace], hit.as_ref(), p.looked_up);
            if let Some(hit) = hit {
                drop(span);
                self.maybe_reask(&request, &principal, &controls, keyed.is_some(), &hit);
                let at = (request_id, started);
                return Ok(self.replay(&request, &principal, &controls, at, hit, &trace));
            }
        } else {
            trace.set(genai::CACHE_RESULT, "bypass");
        }
        let query_vector = plan.as_ref().and_then(|p| p.vector.clone());
        let citations = match grounding {
            Some(g) => {
                let span = trace.child("retrieval", Kind::Internal);
                let found = g
                    .apply(&principal.tenant.id, &mut request, query_vector.clone())
                    .await;
                match &found {
                    Ok(c) => span.set(genai::RAG_CHUNKS, c.chunks.len() as u64),
                    Err(e) => span.error(e.error_code().name(), e.to_string()),
                }
                Some(found?)
            }
            None => None,
        };
        let decision = routing::decide(
            self,
            &live,
            &request,
            controls.tier.as_deref(),
            query_vector.as_deref(),
            &principal.tenant.id,
        )
        .await?;
        if trace.is_recording() {
            trace.set(genai::ROUTE_REASON, decision.reason);
            if let Some(tier) = &decision.tier {
                trace.set(genai::ROUTE_TIER, tier.as_str());
            }
        }
        let (routes, prompt_estimate, mut ledger) = self
            .admit(&live, &principal, &request, &decision, request_id, started)
            .await?;
        ledger.trace(&trace);
        self.tap(&mut ledger, &principal, &controls, &request);
        let cache = match &plan {
            Some(p) if p.looked_up => CacheOutcome::Miss,
            _ => CacheOutcome::Bypass,
        };
        let writer = self.cache_writer(plan, citations.as_ref());
        let meta = Meta {
            requested_model: request.model.clone(),
            answered_by: String::new(),
            route: Some(decision),
            cache,
            grounded: citations.as_ref().map(|c| c.chunks.len()),
            citations: citations.map(|c| c.json),
        };
        let run = answer::Run {
            pipeline: self,
            live,
            routes,
            started,
            prompt_estimate,
            ledger,
            writer,
            trace,
        };
        if request.is_stream() {
            answer::stream(run, request, meta).await
        } else {
            answer::whole(run, request, meta).await
        }
    }

    /// Admission: the candidate models, the budget reservation, the ledger opened for the
    /// first candidate with the routing decision.
    async fn admit(
        &self,
        live: &Arc<Live>,
        principal: &Principal,
        request: &ChatCompletionRequest,
        decision: &Decision,
        request_id: String,
        started: std::time::Instant,
    ) -> Result<(Vec<ModelRoute>, u64, Ledger), ChatError> {
        let routes = self.candidates(decision, principal, request)?;
        let prompt_estimate = request.estimate_prompt_tokens();
        let reservation = self
            .reserve(live, principal, &routes, request, prompt_estimate)
            .await?;
        metrics::counter!("qm_route_decisions_total", "tier" => decision.tier.clone().unwrap_or_else(|| "none".into()), "reason" => decision.reason)
            .increment(1);
        let mut ledger = Ledger::open(
            &self.request_log,
            LedgerOpen {
                request_id,
                tenant_id: &principal.tenant.id,
                key_id: &principal.key_id,
                stream: request.is_stream(),
                model: &routes[0].name,
                provider: routes[0].provider.name(),
                started,
                user: principal.user.as_deref(),
            },
        );
        ledger.record.route_tier = decision.tier.clone();
        ledger.record.route_reason = Some(decision.reason);
        ledger.reservation = reservation;
        Ok((routes, prompt_estimate, ledger))
    }

    /// Hands the request to analytics when it closes, with the end user's consent as the
    /// credential and the request state it (a denial by either wins) and, for analytics
    /// that take content, the prompt.
    fn tap(
        &self,
        ledger: &mut Ledger,
        principal: &Principal,
        controls: &super::Controls,
        request: &ChatCompletionRequest,
    ) {
        let Some(tap) = &self.analytics else { return };
        if controls.internal {
            return;
        }
        let stated = controls
            .consent
            .as_deref()
            .and_then(crate::auth::parse_consent);
        let consent = match (principal.consent, stated) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (a, b) => a.or(b),
        };
        let input = tap
            .wants_content()
            .then(|| serde_json::to_value(&request.messages).unwrap_or_default());
        ledger.tap(
            tap.clone(),
            crate::usage::TapContext {
                consent,
                input,
                output: None,
            },
        );
    }

    /// A cache hit, replayed as the request asked (whole or streamed) and accounted for.
    fn replay(
        &self,
        request: &ChatCompletionRequest,
        principal: &Principal,
        controls: &super::Controls,
        (request_id, started): (String, std::time::Instant),
        hit: Hit,
        trace: &Span,
    ) -> ChatResponse {
        let mut ledger = Ledger::open(
            &self.request_log,
            LedgerOpen {
                request_id,
                tenant_id: &principal.tenant.id,
                key_id: &principal.key_id,
                stream: request.is_stream(),
                model: &hit.answer.model,
                provider: "cache",
                started,
                user: principal.user.as_deref(),
            },
        );
        ledger.trace(trace);
        self.tap(&mut ledger, principal, controls, request);
        let replay_chars = self
            .cache
            .as_ref()
            .map_or(24, |c| c.config.replay_chunk_chars);
        answer::replay(request, hit, ledger, replay_chars)
    }

    /// The decision's models that exist, less those that cannot call the tools the request
    /// offers and those a limited tenant may not use.
    fn candidates(
        &self,
        decision: &Decision,
        principal: &Principal,
        request: &ChatCompletionRequest,
    ) -> Result<Vec<ModelRoute>, ChatError> {
        let mut routes: Vec<_> = decision
            .models
            .iter()
            .filter_map(|m| self.models.get(m).cloned())
            .collect();
        if routes.is_empty() {
            return Err(ChatError::ModelNotFound(request.model.clone()));
        }
        if request.needs_tools() {
            routes.retain(|r| r.supports_tools);
            if routes.is_empty() {
                return Err(ChatError::Invalid {
                    message: format!(
                        "no model that `{}` routes to supports tools (supports_tools = false)",
                        request.model
                    ),
                    param: Some("tools".into()),
                });
            }
        }
        if principal.limited {
            routes.retain(|r| {
                self.billing
                    .allowed_when_limited(&r.name, r.provider.name())
            });
            if routes.is_empty() {
                return Err(ChatError::PaymentRequired(format!(
                    "tenant `{}` has an unpaid invoice past its grace period: model `{}` is unavailable until it is paid",
                    principal.tenant.name, request.model
                )));
            }
        }
        Ok(routes)
    }

    /// Budgets: reserves the worst case (prompt + max_tokens at the priciest candidate).
    async fn reserve(
        &self,
        live: &Arc<Live>,
        principal: &Principal,
        routes: &[ModelRoute],
        request: &ChatCompletionRequest,
        prompt_estimate: u64,
    ) -> Result<Option<Reservation>, ChatError> {
        let scopes = Budgets::scopes(
            &live.limits,
            &principal.tenant.id,
            &principal.tenant.name,
            &principal.key_id,
            principal.user.as_deref(),
        );
        if scopes.is_empty() {
            return Ok(None);
        }
        let max_out = u64::from(
            request
                .max_tokens
                .or(request.max_completion_tokens)
                .unwrap_or(DEFAULT_RESERVED_OUTPUT_TOKENS),
        );
        let worst_usd = routes
            .iter()
            .map(|r| live.price(&r.name).worst(prompt_estimate, max_out))
            .fold(0.0, f64::max);
        Ok(self
            .budgets
            .admit(&scopes, prompt_estimate + max_out, worst_usd)
            .await?)
    }

    /// The cache write-back for a miss, grounded answers marked with their documents.
    fn cache_writer(
        &self,
        plan: Option<CachePlan>,
        citations: Option<&Citations>,
    ) -> Option<CacheWriter> {
        let mut writer = plan.and_then(|p| p.writer(self.embedder.as_ref()));
        if let Some(c) = citations {
            // An answer given without any context is not cached: no document's change could
            // invalidate it once the answer exists.
            if c.chunks.is_empty() {
                writer = None;
            }
            if let Some(w) = writer.as_mut() {
                w.ground(&c.json, &c.documents, c.read_at);
            }
        }
        writer
    }
}

/// A cache lookup's outcome on its span and the request's.
fn traced_lookup(spans: &[&Span], hit: Option<&Hit>, looked_up: bool) {
    let result = match hit {
        Some(_) => "hit",
        None if looked_up => "miss",
        None => "bypass",
    };
    for span in spans.iter().filter(|s| s.is_recording()) {
        span.set(genai::CACHE_RESULT, result);
        if let Some(hit) = hit {
            span.set(genai::CACHE_KIND, hit.kind.as_str());
            span.set(genai::CACHE_SIMILARITY, f64::from(hit.similarity));
            span.set(genai::CACHE_ENTRY, hit.entry_id.as_str());
        }
    }
}
