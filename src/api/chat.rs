//! `POST /v1/chat/completions` and `GET /v1/models`: OpenAI's wire format exactly, streamed or
//! not, with every request accounted for in the request log and metrics.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde_json::json;

use super::REQUEST_ID;
use super::extract::ApiJson;
use crate::auth::Principal;
use crate::cache::{Cache, CacheKeys, Controls, Hit, NewEntry, StoredAnswer};
use crate::embed::Priority;
use crate::error::ApiError;
use crate::providers::{ModelRoute, ProviderError};
use crate::route::{Decision, MODEL_HEADER, ROUTE_HEADER, TIER_HEADER};
use crate::server::AppState;
use crate::store::{RequestLogRecord, RequestLogWriter, now_ms};
use crate::types::{
    ChatChunk, ChatCompletion, ChatCompletionRequest, ChunkChoice, CompletionChoice, Delta,
    ModelObject, Usage, new_completion_id, unix_now,
};

pub async fn list_models(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut data: Vec<ModelObject> = state
        .models
        .iter()
        .map(|m| ModelObject {
            id: m.name.clone(),
            object: "model",
            created: state.started_at,
            owned_by: m.provider.name().to_string(),
        })
        .collect();
    if let Some(e) = &state.embedder {
        data.push(ModelObject {
            id: e.model_name.clone(),
            object: "model",
            created: state.started_at,
            owned_by: "quartermaster".into(),
        });
    }
    axum::Json(json!({"object": "list", "data": data}))
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    request
        .validate()
        .map_err(|(message, param)| ApiError::invalid(message, Some(param)))?;
    let grounding = Grounding::requested(&state, &headers, &mut request)?;
    let live = state.live.load_full();
    tier_hint(&live, &headers)?;
    if !live.is_alias(&request.model) && state.models.get(&request.model).is_none() {
        return Err(ApiError::ModelNotFound(request.model.clone()));
    }
    let request_id = headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // The cache first: a hit skips retrieval, routing, budgets and the upstream. A grounded
    // request is its own cache key space (its answer depends on the documents).
    let mut plan = match &grounding {
        Some(g) => CachePlan::new(&state, &principal, &headers, &g.keyed(&request))?,
        None => CachePlan::new(&state, &principal, &headers, &request)?,
    };
    if let Some(p) = plan.as_mut() {
        if let Some(hit) = p.lookup(&state).await {
            return Ok(serve_hit(
                &state, &principal, &request, hit, request_id, started,
            ));
        }
    }
    let query_vector = plan.as_ref().and_then(|p| p.vector.clone());
    let citations = match grounding {
        Some(g) => Some(
            g.apply(&principal.tenant.id, &mut request, query_vector.clone())
                .await?,
        ),
        None => None,
    };
    let decision = route_request(
        &state,
        &live,
        &request,
        &headers,
        query_vector.as_deref(),
        &principal.tenant.id,
    )
    .await?;
    let mut routes: Vec<ModelRoute> = decision
        .models
        .iter()
        .filter_map(|m| state.models.get(m).cloned())
        .collect();
    if routes.is_empty() {
        return Err(ApiError::ModelNotFound(request.model.clone()));
    }
    if principal.limited {
        routes.retain(|r| {
            state
                .billing
                .allowed_when_limited(&r.name, r.provider.name())
        });
        if routes.is_empty() {
            return Err(ApiError::PaymentRequired(format!(
                "tenant `{}` has an unpaid invoice past its grace period: model `{}` is unavailable until it is paid",
                principal.tenant.name, request.model
            )));
        }
    }
    // Budgets: reserve the worst case (prompt + max_tokens at the priciest candidate).
    let prompt_estimate = request.estimate_prompt_tokens();
    let max_out = u64::from(
        request
            .max_tokens
            .or(request.max_completion_tokens)
            .unwrap_or(DEFAULT_RESERVED_OUTPUT_TOKENS),
    );
    let scopes = crate::budget::Budgets::scopes(
        &live.limits,
        &principal.tenant.id,
        &principal.tenant.name,
        &principal.key_id,
    );
    let reservation = if scopes.is_empty() {
        None
    } else {
        let worst_usd = routes
            .iter()
            .map(|r| {
                let (pi, po) = live.price(&r.name);
                crate::budget::cost_usd(prompt_estimate, max_out, pi, po)
            })
            .fold(0.0, f64::max);
        state
            .budgets
            .admit(&scopes, prompt_estimate + max_out, worst_usd)
            .await?
    };
    metrics::counter!("qm_route_decisions_total", "tier" => decision.tier.clone().unwrap_or_else(|| "none".into()), "reason" => decision.reason)
        .increment(1);
    let mut ledger = Ledger::open(
        &state,
        &principal,
        &request,
        request_id,
        &routes[0].name,
        routes[0].provider.name(),
        started,
    );
    ledger.record.route_tier = decision.tier.clone();
    ledger.record.route_reason = Some(decision.reason);
    ledger.reservation = reservation;
    let attempts = Attempts {
        state: state.clone(),
        live: live.clone(),
        routes,
        started,
    };
    let cache_status = match &plan {
        Some(p) if p.looked_up => "miss",
        _ => "bypass",
    };
    let mut writer = plan.and_then(|p| p.writer(&state));
    if let Some(c) = &citations {
        // An answer given without any context is not cached: no document's change could
        // invalidate it once the answer exists.
        if c.chunks.is_empty() {
            writer = None;
        }
        if let Some(w) = writer.as_mut() {
            w.ground(c);
        }
    }
    let grounded_chunks = citations.as_ref().map(|c| c.chunks.len());
    let citations = citations.map(|c| c.json);
    let mut response = if request.is_stream() {
        stream_completion(
            state,
            attempts,
            request,
            prompt_estimate,
            ledger,
            writer,
            citations,
        )
        .await?
    } else {
        complete(
            attempts,
            request,
            prompt_estimate,
            ledger,
            writer,
            citations,
        )
        .await?
    };
    if let Some(n) = grounded_chunks {
        response
            .headers_mut()
            .insert(GROUNDED_HEADER, HeaderValue::from(n));
    }
    if let Ok(v) = HeaderValue::from_str(&decision.header_value()) {
        response.headers_mut().insert(ROUTE_HEADER, v);
    }
    response.headers_mut().insert(
        crate::cache::CACHE_HEADER,
        HeaderValue::from_static(cache_status),
    );
    Ok(response)
}

/// The cache's part in one request: its keys and the client's controls.
struct CachePlan {
    cache: Arc<Cache>,
    tenant: String,
    keys: CacheKeys,
    controls: Controls,
    /// The embedded query, once computed (reused by the router and the write).
    vector: Option<Vec<f32>>,
    looked_up: bool,
}

impl CachePlan {
    /// `None` when the cache is off, the client turned it off, or the request cannot be
    /// cached. A malformed cache header is a 400 even then.
    fn new(
        state: &AppState,
        principal: &Principal,
        headers: &HeaderMap,
        request: &ChatCompletionRequest,
    ) -> Result<Option<Self>, ApiError> {
        let Some(cache) = &state.cache else {
            return Ok(None);
        };
        let controls = Controls::from_headers(headers, &cache.config)?;
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
            keys,
            controls,
            vector: None,
            looked_up: false,
        }))
    }

    fn semantic(&self, state: &AppState) -> bool {
        self.cache.config.semantic && state.embedder.is_some()
    }

    /// Exact, then semantic. A failing store or embedder is a miss, never an error.
    async fn lookup(&mut self, state: &AppState) -> Option<Hit> {
        if !self.controls.read {
            metrics::counter!("qm_cache_lookups_total", "result" => "bypass").increment(1);
            return None;
        }
        // With the database known to be down, a lookup would only wait out the pool: skip
        // it (the answer is then not stored either).
        if state.store.check_up().is_err() {
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
        if self.semantic(state) {
            let embedder = state.embedder.as_ref()?;
            let embedded = embedder.embed_for(
                &self.tenant,
                Priority::Interactive,
                vec![self.keys.query.clone()],
            );
            match tokio::time::timeout(deadline, embedded).await {
                Ok(Ok(mut e)) if !e.is_empty() => self.vector = Some(e.remove(0).vector),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cache: embedding failed; no semantic lookup")
                }
                Err(_) => {
                    metrics::counter!("qm_cache_lookups_total", "result" => "skipped", "why" => "embed_deadline").increment(1);
                    tracing::debug!(
                        "cache: the query's embedding missed its deadline; no semantic lookup"
                    );
                }
            }
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
    fn writer(self, state: &AppState) -> Option<CacheWriter> {
        if !self.controls.write {
            return None;
        }
        let embedder = if self.semantic(state) && self.vector.is_none() {
            state.embedder.clone()
        } else {
            None
        };
        Some(CacheWriter {
            cache: self.cache,
            tenant: self.tenant,
            keys: self.keys,
            vector: self.vector,
            embedder,
            ttl_secs: self.controls.ttl_secs,
            tags: self.controls.tags,
            citations: None,
        })
    }
}

/// Stores a finished answer in the background (the client never waits for it).
struct CacheWriter {
    cache: Arc<Cache>,
    tenant: String,
    keys: CacheKeys,
    vector: Option<Vec<f32>>,
    /// Set when the query still has to be embedded (the lookup was skipped).
    embedder: Option<crate::embed::EmbedService>,
    ttl_secs: u64,
    tags: Vec<String>,
    citations: Option<serde_json::Value>,
}

impl CacheWriter {
    /// A grounded answer keeps its citations and is tagged with every cited document, so
    /// re-ingesting or deleting one of them removes it.
    fn ground(&mut self, grounded: &Citations) {
        self.citations = Some(grounded.json.clone());
        for doc in &grounded.documents {
            let tag = crate::rag::doc_tag(doc);
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
    }

    fn store(self, mut answer: StoredAnswer, cost_usd: f64) {
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
                keys: self.keys,
                vector,
                answer,
                cost_usd,
                ttl_secs: self.ttl_secs,
                tags: self.tags,
            };
            if let Err(e) = self.cache.insert(entry).await {
                tracing::warn!(error = %e, "cache write failed");
            }
        });
    }
}

/// Answers from the cache: the same wire format as a live answer, streamed or not. The
/// request costs nothing and is logged as a cache hit with what it saved.
fn serve_hit(
    state: &Arc<AppState>,
    principal: &Principal,
    request: &ChatCompletionRequest,
    hit: Hit,
    request_id: String,
    started: Instant,
) -> Response {
    let mut ledger = Ledger::open(
        state,
        principal,
        request,
        request_id,
        &hit.answer.model,
        "cache",
        started,
    );
    ledger.record.saved_usd = hit.cost_usd;
    ledger.record.route_reason = Some(match hit.kind {
        crate::cache::HitKind::Exact => "cache_exact",
        crate::cache::HitKind::Semantic => "cache_semantic",
    });
    let id = new_completion_id();
    let created = unix_now();
    let mut response = if request.is_stream() {
        let include_usage = request.include_usage();
        let chunk_chars = state
            .cache
            .as_ref()
            .map_or(24, |c| c.config.replay_chunk_chars);
        let answer = hit.answer.clone();
        let citations = hit.answer.citations.clone();
        let events = async_stream::stream! {
            let mut ledger = ledger;
            let chunk = |delta: Delta, finish: Option<String>| ChatChunk {
                id: id.clone(),
                object: "chat.completion.chunk".into(),
                created,
                model: answer.model.clone(),
                choices: vec![ChunkChoice { index: 0, delta, finish_reason: finish, extra: Default::default() }],
                usage: None,
                extra: Default::default(),
            };
            ledger.first_token();
            let role = Delta { role: Some("assistant".into()), content: Some(String::new()), extra: Default::default() };
            let mut first = chunk(role, None);
            if let Some(c) = citations {
                first.extra.insert("citations".into(), c);
            }
            yield Ok::<Event, Infallible>(Event::default().data(to_json(&first)));
            for piece in crate::cache::replay_pieces(&answer.content, chunk_chars) {
                let delta = Delta { role: None, content: Some(piece.to_string()), extra: Default::default() };
                yield Ok(Event::default().data(to_json(&chunk(delta, None))));
            }
            yield Ok(Event::default().data(to_json(&chunk(Delta::default(), Some(answer.finish_reason.clone())))));
            if include_usage {
                let mut last = chunk(Delta::default(), None);
                last.choices.clear();
                last.usage = Some(answer.usage);
                yield Ok(Event::default().data(to_json(&last)));
            }
            ledger.finish_cache_hit().await;
            yield Ok(Event::default().data("[DONE]"));
        };
        sse(events)
    } else {
        let completion = ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model: hit.answer.model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                message: hit.answer.message(),
                finish_reason: Some(hit.answer.finish_reason.clone()),
                extra: Default::default(),
            }],
            usage: Some(hit.answer.usage),
            extra: hit
                .answer
                .citations
                .clone()
                .map(|c| [("citations".to_string(), c)].into_iter().collect())
                .unwrap_or_default(),
        };
        let ledger_task = async move { ledger.finish_cache_hit().await };
        tokio::spawn(ledger_task);
        axum::Json(completion).into_response()
    };
    hit.set_headers(response.headers_mut());
    set_model_header(&mut response, &hit.answer.model);
    response
}

/// Output tokens reserved against budgets when the request sets no `max_tokens`.
const DEFAULT_RESERVED_OUTPUT_TOKENS: u32 = 1024;

/// The tier hint header, which must name a configured tier whatever the model (an unknown
/// tier is a 400, also when no tiers are configured at all). Checked before the cache: a
/// malformed header is never ignored.
fn tier_hint<'h>(
    live: &crate::route::Live,
    headers: &'h HeaderMap,
) -> Result<Option<&'h str>, ApiError> {
    let Some(v) = headers.get(TIER_HEADER) else {
        return Ok(None);
    };
    let bad = |m: String| ApiError::invalid(m, Some(TIER_HEADER.to_string()));
    let hint = v
        .to_str()
        .map_err(|_| bad(format!("{TIER_HEADER} must be a tier name")))?;
    if !live.tiers.contains_key(hint) {
        let known: Vec<&str> = live.tiers.keys().map(String::as_str).collect();
        return Err(bad(if known.is_empty() {
            format!("unknown tier `{hint}` in {TIER_HEADER}: no tiers are configured")
        } else {
            format!(
                "unknown tier `{hint}` in {TIER_HEADER}; configured tiers: {}",
                known.join(", ")
            )
        }));
    }
    Ok(Some(hint))
}

/// The routing decision: an explicit model, or (for an alias) rules, then the classifier.
async fn route_request(
    state: &AppState,
    live: &crate::route::Live,
    request: &ChatCompletionRequest,
    headers: &HeaderMap,
    query_vector: Option<&[f32]>,
    tenant: &str,
) -> Result<Decision, ApiError> {
    let hint = tier_hint(live, headers)?;
    if !live.is_alias(&request.model) {
        return Ok(Decision {
            tier: None,
            reason: "explicit",
            p_hard: None,
            models: vec![request.model.clone()],
        });
    }
    if live.tiers.is_empty() {
        // No tiers configured: the alias means the built-in local model.
        let local = &state.config.local;
        if !local.enabled {
            return Err(ApiError::ModelNotFound(request.model.clone()));
        }
        return Ok(Decision {
            tier: None,
            reason: "no_tiers",
            p_hard: None,
            models: vec![local.model_name.clone()],
        });
    }
    let decide = |p| {
        crate::route::decide(&live.routing, &live.tiers, request, hint, p)
            .map_err(|m| ApiError::invalid(m, Some(TIER_HEADER.to_string())))
    };
    let first = decide(None)?;
    if first.reason != "default" {
        return Ok(first);
    }
    let (Some(classifier), Some(embedder)) = (&live.classifier, &state.embedder) else {
        return Ok(first);
    };
    // The cache embedded the last user message already: the classifier reads the same.
    if let Some(v) = query_vector {
        return decide(Some(classifier.p_hard(v)));
    }
    let text = crate::route::classifier_input(request);
    match embedder
        .embed_for(tenant, Priority::Interactive, vec![text])
        .await
    {
        Ok(mut e) if !e.is_empty() => {
            let p = classifier.p_hard(&e.remove(0).vector);
            decide(Some(p))
        }
        Ok(_) => Ok(first),
        Err(e) => {
            tracing::warn!(error = %e, "router: embedding failed; default tier");
            Ok(first)
        }
    }
}

/// The models a request may try, in order, under the routing policy.
struct Attempts {
    state: Arc<AppState>,
    live: Arc<crate::route::Live>,
    routes: Vec<ModelRoute>,
    started: Instant,
}

fn retryable(e: &ProviderError) -> bool {
    match e {
        ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
        ProviderError::Timeout | ProviderError::Connection(_) | ProviderError::Protocol(_) => true,
        ProviderError::MidStream { .. } => true,
    }
}

impl Attempts {
    /// Calls `call` on each model in turn: retries (timeouts, 5xx, 429) with jittered
    /// backoff within the request's retry budget, skips models whose circuit is open, fails
    /// over to the next model. A 4xx other than 429 is the request's fault: returned at once.
    async fn run<T, F, Fut>(&self, mut call: F) -> Result<(T, ModelRoute), ApiError>
    where
        F: FnMut(ModelRoute) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let cfg = &self.live.routing;
        let budget = Duration::from_millis(cfg.retry_budget_ms);
        let open_for = Duration::from_secs(cfg.breaker_open_secs);
        let breakers = &self.state.breakers;
        let mut last: Option<ApiError> = None;
        let spent = |extra: Duration| self.started.elapsed() + extra >= budget;
        'targets: for route in &self.routes {
            if !breakers.allow(&route.name) {
                metrics::counter!("qm_route_skipped_total", "model" => route.name.clone(), "why" => "circuit_open").increment(1);
                last.get_or_insert(ApiError::UpstreamUnavailable);
                continue;
            }
            for attempt in 0..=cfg.max_retries_per_target {
                let e = match call(route.clone()).await {
                    Ok(v) => {
                        breakers.success(&route.name);
                        return Ok((v, route.clone()));
                    }
                    Err(e) => e,
                };
                let api = provider_error(route, &e);
                if !retryable(&e) {
                    breakers.success(&route.name); // it answered: the upstream is up
                    return Err(api);
                }
                let opened = breakers.failure(&route.name, cfg.breaker_failures, open_for);
                last = Some(api);
                if spent(Duration::ZERO) {
                    break 'targets;
                }
                if attempt == cfg.max_retries_per_target || opened || breakers.is_open(&route.name)
                {
                    break; // next model
                }
                // Honour the upstream's Retry-After when it is longer than our backoff.
                let mut wait = crate::route::backoff(cfg, attempt + 1);
                if let ProviderError::Status {
                    retry_after_secs: Some(s),
                    ..
                } = &e
                {
                    wait = wait.max(Duration::from_secs(*s));
                }
                if spent(wait) {
                    break; // no time to wait here: try the next model
                }
                metrics::counter!("qm_upstream_retries_total", "model" => route.name.clone())
                    .increment(1);
                tokio::time::sleep(wait).await;
            }
        }
        Err(last.unwrap_or(ApiError::UpstreamUnavailable))
    }
}

async fn complete(
    attempts: Attempts,
    request: ChatCompletionRequest,
    prompt_estimate: u64,
    mut ledger: Ledger,
    cache: Option<CacheWriter>,
    citations: Option<serde_json::Value>,
) -> Result<Response, ApiError> {
    let client_model = request.model.clone();
    let result = attempts
        .run(|route| {
            let mut upstream_request = request.clone();
            upstream_request.model = route.upstream_model.clone();
            async move { route.provider.complete(upstream_request).await }
        })
        .await;
    match result {
        Ok((mut completion, route)) => {
            ledger.use_route(&route, attempts.live.price(&route.name));
            completion.id = new_completion_id();
            if completion.created == 0 {
                completion.created = unix_now();
            }
            if completion.model.is_empty() {
                completion.model = client_model;
            }
            let usage = completion.usage.unwrap_or_else(|| {
                let out: usize = completion
                    .choices
                    .iter()
                    .map(|c| c.message.to_string().len())
                    .sum();
                Usage {
                    prompt_tokens: prompt_estimate,
                    completion_tokens: (out as u64).div_ceil(4),
                    total_tokens: prompt_estimate + (out as u64).div_ceil(4),
                }
            });
            ledger.finish_ok(usage).await;
            if let (Some(writer), [choice]) = (cache, completion.choices.as_slice()) {
                if StoredAnswer::cacheable(choice.finish_reason.as_deref(), &choice.message) {
                    let mut message_extra = choice.message.as_object().cloned().unwrap_or_default();
                    let content = message_extra
                        .remove("content")
                        .and_then(|c| c.as_str().map(str::to_string))
                        .unwrap_or_default();
                    message_extra.remove("role");
                    let answer = StoredAnswer {
                        model: completion.model.clone(),
                        content,
                        finish_reason: choice.finish_reason.clone().unwrap_or_default(),
                        usage,
                        message_extra,
                        citations: None,
                    };
                    writer.store(answer, ledger.record.cost_usd);
                }
            }
            if let Some(c) = citations {
                completion.extra.insert("citations".into(), c);
            }
            let mut response = axum::Json(completion).into_response();
            set_model_header(&mut response, &route.name);
            Ok(response)
        }
        Err(api) => {
            ledger.finish_err(&api).await;
            Err(api)
        }
    }
}

fn set_model_header(response: &mut Response, model: &str) {
    if let Ok(v) = HeaderValue::from_str(model) {
        response.headers_mut().insert(MODEL_HEADER, v);
    }
}

async fn stream_completion(
    state: Arc<AppState>,
    attempts: Attempts,
    request: ChatCompletionRequest,
    prompt_estimate: u64,
    mut ledger: Ledger,
    cache: Option<CacheWriter>,
    citations: Option<serde_json::Value>,
) -> Result<Response, ApiError> {
    let include_usage = request.include_usage();
    let client_model = request.model.clone();
    // Until the first chunk arrives nothing has reached the client, so a failure is still
    // retried or failed over; after it, failures are SSE error events.
    let result = attempts
        .run(|route| {
            let mut upstream_request = request.clone();
            upstream_request.model = route.upstream_model.clone();
            async move {
                let mut s = route.provider.stream(upstream_request).await?;
                match s.next().await {
                    Some(Ok(first)) => Ok((first, s)),
                    Some(Err(e)) => Err(e),
                    None => Err(ProviderError::Connection(
                        "the upstream closed the stream before the first chunk".into(),
                    )),
                }
            }
        })
        .await;
    let ((first, mut upstream), route) = match result {
        Ok(v) => v,
        Err(api) => {
            ledger.finish_err(&api).await;
            return Err(api);
        }
    };
    ledger.use_route(&route, attempts.live.price(&route.name));
    let answered_by = route.name.clone();
    let id = new_completion_id();
    let created = unix_now();
    let grace_over = state.grace_over.clone();

    let events = async_stream::stream! {
        // `ledger` moves in here: if the client goes away, the stream is dropped mid-way
        // and the ledger's drop records the request as abandoned. Dropping `upstream` with
        // it cancels the upstream request.
        let mut ledger = ledger;
        let mut usage: Option<Usage> = None;
        let mut finished = false;
        let mut completion_chars = 0usize;
        let mut model = client_model;
        // The answer assembled for the cache; abandoned if anything but text arrives.
        let mut cache = cache;
        let mut content = String::new();
        let mut finish_reason: Option<String> = None;
        let mut pending = Some(Ok(first));
        // Citations ride on the first chunk the client sees.
        let mut citations = citations;
        loop {
            let item = if let Some(item) = pending.take() {
                Some(item)
            } else {
                tokio::select! {
                    biased;
                    _ = grace_over.cancelled() => {
                        let err = ApiError::Overloaded { message: "the server is shutting down".into(), retry_after_secs: 1 };
                        ledger.finish_err(&err).await;
                        yield Ok::<Event, Infallible>(error_event(&err));
                        return;
                    }
                    item = upstream.next() => item,
                }
            };
            let Some(item) = item else { break };
            match item {
                Ok(mut chunk) => {
                    if let Some(u) = chunk.usage.take() {
                        usage = Some(u);
                    }
                    if !chunk.model.is_empty() {
                        model = chunk.model.clone();
                    }
                    if chunk.choices.is_empty() {
                        continue; // the upstream's usage chunk: re-sent below if asked for
                    }
                    for choice in &chunk.choices {
                        completion_chars += choice.delta.content.as_ref().map_or(0, |c| c.len());
                        finished |= choice.finish_reason.is_some();
                        if cache.is_some() {
                            let text_only = choice.index == 0
                                && choice.delta.extra.values().all(serde_json::Value::is_null);
                            if text_only {
                                content.push_str(choice.delta.content.as_deref().unwrap_or(""));
                                if choice.finish_reason.is_some() {
                                    finish_reason.clone_from(&choice.finish_reason);
                                }
                            } else {
                                cache = None;
                            }
                        }
                    }
                    ledger.first_token();
                    chunk.id = id.clone();
                    chunk.created = created;
                    chunk.model = model.clone();
                    if let Some(c) = citations.take() {
                        chunk.extra.insert("citations".into(), c);
                    }
                    yield Ok(Event::default().data(to_json(&chunk)));
                }
                Err(e) => {
                    let err = provider_error(&route, &e);
                    ledger.finish_err(&err).await;
                    yield Ok(error_event(&err));
                    return;
                }
            }
        }
        if !finished {
            let err = provider_error(&route, &ProviderError::Connection("the upstream closed the stream before it finished".into()));
            ledger.finish_err(&err).await;
            yield Ok(error_event(&err));
            return;
        }
        let usage = usage.unwrap_or_else(|| {
            let out = (completion_chars as u64).div_ceil(4);
            Usage { prompt_tokens: prompt_estimate, completion_tokens: out, total_tokens: prompt_estimate + out }
        });
        if include_usage {
            let chunk = ChatChunk {
                id: id.clone(),
                object: "chat.completion.chunk".into(),
                created,
                model: model.clone(),
                choices: vec![],
                usage: Some(usage),
                extra: Default::default(),
            };
            yield Ok(Event::default().data(to_json(&chunk)));
        }
        ledger.finish_ok(usage).await;
        if let Some(writer) = cache {
            if matches!(finish_reason.as_deref(), Some("stop") | Some("length")) {
                let answer = StoredAnswer {
                    model: model.clone(),
                    content,
                    finish_reason: finish_reason.unwrap_or_default(),
                    usage,
                    message_extra: Default::default(),
                    citations: None,
                };
                writer.store(answer, ledger.record.cost_usd);
            }
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    let mut response = sse(events);
    set_model_header(&mut response, &answered_by);
    Ok(response)
}

fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    // Stop proxies such as nginx from buffering the stream.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    response
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("wire types serialize")
}

fn error_event(err: &ApiError) -> Event {
    Event::default().data(err.to_json())
}

/// Maps a provider failure to the client-facing error, counting it by kind.
fn provider_error(route: &ModelRoute, e: &ProviderError) -> ApiError {
    metrics::counter!("qm_upstream_errors_total", "provider" => route.provider.name().to_string(), "kind" => e.kind())
        .increment(1);
    tracing::warn!(provider = route.provider.name(), model = %route.name, error = %e, "upstream failed");
    match e {
        ProviderError::Status {
            status,
            message,
            code,
            ..
        } if (400..500).contains(status) => ApiError::Upstream {
            status: *status,
            message: message.clone(),
            code: code.clone(),
        },
        ProviderError::Status { status, .. } => ApiError::Upstream {
            status: 502,
            message: format!("the upstream provider failed (status {status})"),
            code: Some("upstream_error".into()),
        },
        ProviderError::MidStream { message, code } => ApiError::Upstream {
            status: 502,
            message: message.clone(),
            code: code.clone(),
        },
        ProviderError::Timeout => ApiError::UpstreamTimeout,
        ProviderError::Connection(_) | ProviderError::Protocol(_) => ApiError::UpstreamUnavailable,
    }
}

/// Accounts for one chat request exactly once: on success, on error, or (through `Drop`)
/// when the client disconnects and the response future or stream is dropped.
struct Ledger {
    writer: RequestLogWriter,
    record: RequestLogRecord,
    started: Instant,
    done: bool,
    /// Budget reservation: settled with the real cost, or released.
    reservation: Option<crate::budget::Reservation>,
    /// (input, output) USD per million tokens of the model that answered.
    price: (f64, f64),
}

impl Ledger {
    /// A ledger for a request answered by `model` of `provider` (until `use_route` says
    /// otherwise): no reservation, no route, nothing spent or saved yet.
    fn open(
        state: &AppState,
        principal: &Principal,
        request: &ChatCompletionRequest,
        request_id: String,
        model: &str,
        provider: &str,
        started: Instant,
    ) -> Self {
        Ledger {
            writer: state.request_log.clone(),
            record: RequestLogRecord {
                request_id,
                tenant_id: Some(principal.tenant.id.clone()),
                key_id: Some(principal.key_id.clone()),
                model: model.to_string(),
                provider: Some(provider.to_string()),
                stream: request.is_stream(),
                status: "ok",
                http_status: 200,
                error_code: None,
                tokens_in: 0,
                tokens_out: 0,
                latency_ms: 0.0,
                ttft_ms: None,
                created_at: now_ms(),
                cost_usd: 0.0,
                saved_usd: 0.0,
                route_tier: None,
                route_reason: None,
            },
            started,
            done: false,
            reservation: None,
            price: (0.0, 0.0),
        }
    }

    fn use_route(&mut self, route: &ModelRoute, price: (f64, f64)) {
        self.record.model = route.name.clone();
        self.record.provider = Some(route.provider.name().to_string());
        self.price = price;
    }

    fn first_token(&mut self) {
        if self.record.ttft_ms.is_none() {
            let ttft = self.started.elapsed();
            self.record.ttft_ms = Some(ttft.as_secs_f64() * 1e3);
            ModelMetrics::of(&self.record.model)
                .ttft()
                .record(ttft.as_secs_f64());
        }
    }

    fn close(&mut self, status: &'static str) -> RequestLogRecord {
        self.done = true;
        let elapsed = self.started.elapsed();
        self.record.status = status;
        self.record.latency_ms = elapsed.as_secs_f64() * 1e3;
        let m = ModelMetrics::of(&self.record.model);
        m.requests(status).increment(1);
        m.duration(self.record.stream).record(elapsed.as_secs_f64());
        m.tokens(false).increment(self.record.tokens_in);
        m.tokens(true).increment(self.record.tokens_out);
        self.record.clone()
    }

    async fn finish_ok(&mut self, usage: Usage) {
        self.record.tokens_in = usage.prompt_tokens;
        self.record.tokens_out = usage.completion_tokens;
        let cost = crate::budget::cost_usd(
            usage.prompt_tokens,
            usage.completion_tokens,
            self.price.0,
            self.price.1,
        );
        self.record.cost_usd = cost;
        if let Some(r) = self.reservation.take() {
            r.settle(
                usage
                    .total_tokens
                    .max(usage.prompt_tokens + usage.completion_tokens),
                cost,
            );
        }
        let record = self.close("ok");
        self.writer.send(record).await;
    }

    async fn finish_cache_hit(&mut self) {
        let record = self.close("cache_hit");
        self.writer.send(record).await;
    }

    async fn finish_err(&mut self, err: &ApiError) {
        self.record.http_status = err.status().as_u16();
        self.record.error_code = Some(err.code().to_string());
        let record = self.close("error");
        self.writer.send(record).await;
    }
}

/// A model's chat metrics, each registered on first use and kept: a label set written out
/// for every metric of every request costs a registry lookup and a copy of each label string.
struct ModelMetrics {
    name: String,
    /// `qm_chat_requests_total` by status, in the order of [`ModelMetrics::STATUSES`].
    requests: [OnceLock<metrics::Counter>; 4],
    /// `qm_chat_request_duration_seconds`, not streamed and streamed.
    duration: [OnceLock<metrics::Histogram>; 2],
    tokens: [OnceLock<metrics::Counter>; 2],
    ttft: OnceLock<metrics::Histogram>,
}

/// Models whose handles are kept. Configured models are few; a cache hit is accounted to the
/// model name the upstream reported, which an upstream could vary: past this many, handles
/// are looked up per request as before instead of kept forever.
const MAX_KEPT_MODELS: usize = 256;

impl ModelMetrics {
    const STATUSES: [&'static str; 4] = ["ok", "error", "cache_hit", "client_disconnected"];

    fn of(model: &str) -> Arc<ModelMetrics> {
        static MODELS: super::Kept<ModelMetrics> = super::Kept::new(MAX_KEPT_MODELS);
        MODELS.get(model, || ModelMetrics {
            name: model.to_string(),
            requests: Default::default(),
            duration: Default::default(),
            tokens: Default::default(),
            ttft: OnceLock::new(),
        })
    }

    fn requests(&self, status: &'static str) -> metrics::Counter {
        let model = || self.name.clone();
        match Self::STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.requests[i]
                .get_or_init(|| metrics::counter!("qm_chat_requests_total", "model" => model(), "status" => status))
                .clone(),
            None => metrics::counter!("qm_chat_requests_total", "model" => model(), "status" => status),
        }
    }

    fn duration(&self, stream: bool) -> &metrics::Histogram {
        self.duration[usize::from(stream)].get_or_init(|| {
            let stream = if stream { "true" } else { "false" };
            metrics::histogram!("qm_chat_request_duration_seconds", "model" => self.name.clone(), "stream" => stream)
        })
    }

    fn tokens(&self, output: bool) -> &metrics::Counter {
        self.tokens[usize::from(output)].get_or_init(|| {
            let direction = if output { "output" } else { "input" };
            metrics::counter!("qm_tokens_total", "model" => self.name.clone(), "direction" => direction)
        })
    }

    fn ttft(&self) -> &metrics::Histogram {
        self.ttft.get_or_init(
            || metrics::histogram!("qm_time_to_first_token_seconds", "model" => self.name.clone()),
        )
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if !self.done {
            self.record.http_status = 499; // nginx's "client closed request"
            self.record.error_code = Some("client_disconnected".into());
            let record = self.close("client_disconnected");
            tracing::info!(request_id = %record.request_id, "client disconnected before the response finished");
            self.writer.send_detached(record);
        }
    }
}

/// Response header: how many retrieved chunks a grounded answer was given.
pub const GROUNDED_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-quartermaster-grounded");
/// Request header turning grounding on (`on`) or off (`off`) whatever the model name.
pub const RAG_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-quartermaster-rag");
/// Request header: chunks to retrieve for a grounded request (default
/// `rag.grounding.top_k`).
pub const RAG_TOP_K_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-quartermaster-rag-top-k");

/// A request that asked for grounding: by the model prefix (`rag/...`) or the header.
struct Grounding {
    rag: Arc<crate::rag::Rag>,
    query: String,
    top_k: usize,
}

/// What grounding put into the prompt.
struct Citations {
    json: serde_json::Value,
    documents: Vec<String>,
    chunks: Vec<String>,
}

impl Grounding {
    /// Strips the model prefix; `None` when the request is not grounded.
    fn requested(
        state: &AppState,
        headers: &HeaderMap,
        request: &mut ChatCompletionRequest,
    ) -> Result<Option<Self>, ApiError> {
        let header = match headers.get(RAG_HEADER).map(|v| v.to_str().unwrap_or("")) {
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
                return Err(ApiError::invalid(
                    format!("{RAG_HEADER} must be `on` or `off`, not `{v}`"),
                    Some(RAG_HEADER.to_string()),
                ));
            }
        };
        let prefix = state
            .rag
            .as_ref()
            .map(|r| r.config.grounding.model_prefix.clone())
            .unwrap_or_else(|| crate::rag::GroundingConfig::default().model_prefix);
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
        let Some(rag) = state.rag.clone() else {
            return Err(ApiError::invalid(
                "grounding was requested but retrieval is disabled on this gateway",
                Some("model".to_string()),
            ));
        };
        let top_k = match headers.get(RAG_TOP_K_HEADER) {
            None => rag.config.grounding.top_k,
            Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()) {
                Some(k) if (1..=rag.config.retrieval.max_top_k).contains(&k) => k,
                _ => {
                    return Err(ApiError::invalid(
                        format!(
                            "{RAG_TOP_K_HEADER} must be a number from 1 to {}",
                            rag.config.retrieval.max_top_k
                        ),
                        Some(RAG_TOP_K_HEADER.to_string()),
                    ));
                }
            },
        };
        let Some(query) = crate::rag::last_user_text(request) else {
            return Err(ApiError::invalid(
                "a grounded request needs a user message with text to retrieve for",
                Some("messages".to_string()),
            ));
        };
        Ok(Some(Self { rag, query, top_k }))
    }

    /// The request as the cache keys it: marked as grounded (with its retrieval settings).
    fn keyed(&self, request: &ChatCompletionRequest) -> ChatCompletionRequest {
        let mut keyed = request.clone();
        keyed.extra.insert(
            "quartermaster_grounding".into(),
            json!({ "top_k": self.top_k, "mode": self.rag.config.retrieval.mode }),
        );
        keyed
    }

    /// Retrieves and puts the context into the request.
    async fn apply(
        self,
        tenant: &str,
        request: &mut ChatCompletionRequest,
        vector: Option<Vec<f32>>,
    ) -> Result<Citations, ApiError> {
        let hits = self
            .rag
            .retrieve(
                tenant,
                &crate::rag::Query {
                    text: self.query,
                    top_k: self.top_k,
                    filter: Default::default(),
                    mode: self.rag.config.retrieval.mode,
                },
                vector,
            )
            .await?;
        let json = self.rag.ground(request, &hits)?;
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
        })
    }
}
