//! Retries and failover: each model of a decision in turn, with jittered backoff on the
//! same model while the request's retry budget lasts, honouring an upstream's Retry-After,
//! skipping models whose circuit is open. A 4xx other than 429 is the request's fault and
//! ends the attempts at once.

use std::time::{Duration, Instant};

use super::{Breakers, RoutingConfig, backoff};
use crate::providers::{ModelRoute, ProviderError};
use crate::telemetry::genai;
use crate::telemetry::trace::{Kind, Span};

/// Why no model answered.
#[derive(Debug)]
pub enum Exhausted {
    /// The last failure (or the first one that retrying cannot help).
    Upstream(ProviderError),
    /// Every model's circuit was open: none was tried.
    AllOpen,
}

/// The models a request may try, in order, under the routing policy.
pub struct Attempts<'a> {
    pub routes: Vec<ModelRoute>,
    pub config: &'a RoutingConfig,
    pub breakers: &'a Breakers,
    /// When the request arrived: the retry budget counts from it.
    pub started: Instant,
    /// The request's span: each attempt is a client span under it.
    pub trace: &'a Span,
}

fn retryable(e: &ProviderError) -> bool {
    match e {
        ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
        ProviderError::Timeout | ProviderError::Connection(_) | ProviderError::Protocol(_) => true,
        ProviderError::MidStream { .. } => true,
    }
}

/// Counts and logs one upstream failure.
pub fn note_upstream_error(route: &ModelRoute, e: &ProviderError) {
    metrics::counter!("qm_upstream_errors_total", "provider" => route.provider.name().to_string(), "kind" => e.kind())
        .increment(1);
    tracing::warn!(provider = route.provider.name(), model = %route.name, error = %e, "upstream failed");
}

impl Attempts<'_> {
    /// Calls `call` on each model in turn until one succeeds; returns its answer, its model
    /// and its attempt's span (still open: the caller ends it when the answer is done).
    pub async fn run<T, F, Fut>(&self, mut call: F) -> Result<(T, ModelRoute, Span), Exhausted>
    where
        F: FnMut(ModelRoute) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let cfg = self.config;
        let budget = Duration::from_millis(cfg.retry_budget_ms);
        let open_for = Duration::from_secs(cfg.breaker_open_secs);
        let breakers = self.breakers;
        let mut last: Option<ProviderError> = None;
        let spent = |extra: Duration| self.started.elapsed().saturating_add(extra) >= budget;
        'targets: for route in &self.routes {
            if !breakers.allow(&route.name) {
                metrics::counter!("qm_route_skipped_total", "model" => route.name.clone(), "why" => "circuit_open").increment(1);
                continue;
            }
            for attempt in 0..=cfg.max_retries_per_target {
                let span = self.attempt_span(route, attempt);
                let e = match call(route.clone()).await {
                    Ok(v) => {
                        breakers.success(&route.name);
                        return Ok((v, route.clone(), span));
                    }
                    Err(e) => e,
                };
                span.error(e.kind(), e.to_string());
                drop(span);
                note_upstream_error(route, &e);
                if e.credentials_refused() {
                    // This provider's key is refused: no retry can help; the next model may.
                    breakers.failure(&route.name, cfg.breaker_failures, open_for);
                    last = Some(e);
                    if spent(Duration::ZERO) {
                        break 'targets;
                    }
                    continue 'targets;
                }
                if !retryable(&e) {
                    breakers.success(&route.name); // it answered: the upstream is up
                    return Err(Exhausted::Upstream(e));
                }
                let opened = breakers.failure(&route.name, cfg.breaker_failures, open_for);
                // Honour the upstream's Retry-After when it is longer than our backoff (a day at
                // most: any longer ends the retries through the budget all the same).
                let mut wait = backoff(cfg, attempt + 1);
                if let ProviderError::Status {
                    retry_after_secs: Some(s),
                    ..
                } = &e
                {
                    wait = wait.max(Duration::from_secs((*s).min(86_400)));
                }
                last = Some(e);
                if spent(Duration::ZERO) {
                    break 'targets;
                }
                if attempt == cfg.max_retries_per_target || opened || breakers.is_open(&route.name)
                {
                    break; // next model
                }
                if spent(wait) {
                    break; // no time to wait here: try the next model
                }
                metrics::counter!("qm_upstream_retries_total", "model" => route.name.clone())
                    .increment(1);
                tokio::time::sleep(wait).await;
            }
        }
        Err(last.map_or(Exhausted::AllOpen, Exhausted::Upstream))
    }

    /// A GenAI client span for one call to an upstream (`chat {model}`).
    fn attempt_span(&self, route: &ModelRoute, attempt: u32) -> Span {
        if !self.trace.is_recording() {
            return Span::none();
        }
        let span = self
            .trace
            .child(format!("chat {}", route.upstream_model), Kind::Client);
        {
            span.set(genai::OPERATION, "chat");
            span.set(genai::PROVIDER, route.provider.protocol());
            span.set(genai::QM_PROVIDER, route.provider.name());
            span.set(genai::REQUEST_MODEL, route.upstream_model.as_str());
            span.set(genai::ATTEMPT, i64::from(attempt));
        }
        span
    }
}
