//! Usage accounting: every chat request is recorded exactly once in the request log (with
//! its tokens, cost, latency and time to first token) and in the per-model metrics, and its
//! budget reservation is settled or released (`limits.rs`: what a limit is; `budget.rs`:
//! admission and spend; `lease.rs`: the allowance shared across replicas; `alerts.rs`:
//! thresholds of a budget crossed).

mod alerts;
mod budget;
mod lease;
mod limits;
pub mod overview;

pub use alerts::BudgetAlert;
pub use budget::{Budgets, Price, Reservation, cost_usd};
pub use lease::Leases;
pub use limits::{BudgetError, Limits, LimitsConfig, Scope, budget_windows};

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::clock::now_ms;
use crate::error::ErrorCode;
use crate::store::{RequestLogRecord, RequestLogWriter};
use crate::telemetry::genai;
use crate::telemetry::trace::Span;
use crate::types::Usage;

/// Told of every request as it closes, whatever its outcome (server-side analytics);
/// implemented by an integration. Called on the request's own path: it must not block.
#[async_trait::async_trait]
pub trait Tap: Send + Sync {
    /// Whether the tap takes prompts and answers (`TapContext::input` / `output`).
    fn wants_content(&self) -> bool;

    fn closed(&self, record: &RequestLogRecord, context: TapContext);

    /// Sends what it holds, waiting at most `deadline` (at shutdown).
    async fn flush(&self, _deadline: std::time::Duration) {}
}

/// What a tap is told besides the request log's record.
#[derive(Debug, Default)]
pub struct TapContext {
    /// The end user's analytics consent as the request or their credential states it.
    pub consent: Option<bool>,
    /// The prompt's messages and the answer's text, only for a tap that wants content.
    pub input: Option<serde_json::Value>,
    pub output: Option<String>,
}

/// Who made a request and what it is, for its ledger.
pub struct LedgerOpen<'a> {
    pub request_id: String,
    pub tenant_id: &'a str,
    pub key_id: &'a str,
    pub stream: bool,
    pub model: &'a str,
    pub provider: &'a str,
    pub started: Instant,
    /// The end user, when known.
    pub user: Option<&'a str>,
}

/// Accounts for one chat request exactly once: on success, on error, or (through `Drop`)
/// when the client disconnects and the response future or stream is dropped.
pub struct Ledger {
    writer: RequestLogWriter,
    pub record: RequestLogRecord,
    started: Instant,
    done: bool,
    /// Budget reservation: settled with the real cost, or released.
    pub reservation: Option<Reservation>,
    /// The prices of the model that answered.
    price: Price,
    /// Told when the ledger closes (analytics).
    tap: Option<(Arc<dyn Tap>, TapContext)>,
    /// The request's span and the answering attempt's: given the outcome at close.
    spans: [Span; 2],
}

impl Ledger {
    /// A ledger for a request answered by `model` of `provider` (until `use_route` says
    /// otherwise): no reservation, no route, nothing spent or saved yet.
    pub fn open(writer: &RequestLogWriter, open: LedgerOpen<'_>) -> Self {
        Ledger {
            writer: writer.clone(),
            record: RequestLogRecord {
                request_id: open.request_id,
                tenant_id: Some(open.tenant_id.to_string()),
                key_id: Some(open.key_id.to_string()),
                model: open.model.to_string(),
                provider: Some(open.provider.to_string()),
                stream: open.stream,
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
                user_id: open.user.map(str::to_string),
            },
            started: open.started,
            done: false,
            reservation: None,
            price: Price::default(),
            tap: None,
            spans: Default::default(),
        }
    }

    /// The request's span, told the outcome when the ledger closes.
    pub fn trace(&mut self, request: &Span) {
        self.spans[0] = request.clone();
    }

    /// The span of the upstream attempt that answers: it ends when the ledger closes (a
    /// stream's, when the stream does).
    pub fn answered_in(&mut self, attempt: Span) {
        self.spans[1] = attempt;
    }

    /// Whether the request is traced (what only a trace needs can be skipped otherwise).
    pub fn traced(&self) -> bool {
        self.spans.iter().any(Span::is_recording)
    }

    /// The answer's finish reasons, on both spans.
    pub fn finish_reasons(&self, reasons: &[&str]) {
        if self.spans.iter().any(Span::is_recording) {
            let reasons: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
            for span in &self.spans {
                span.set(genai::FINISH_REASONS, reasons.clone());
            }
        }
    }

    /// Tells `tap` of this request when it closes.
    pub fn tap(&mut self, tap: Arc<dyn Tap>, context: TapContext) {
        self.tap = Some((tap, context));
    }

    /// Whether the answer's text is wanted (a tap that takes content).
    pub fn wants_output(&self) -> bool {
        self.tap.as_ref().is_some_and(|(_, c)| c.input.is_some())
    }

    /// The answer's text, for a tap that takes content.
    pub fn set_output(&mut self, text: String) {
        if let Some((_, c)) = self.tap.as_mut()
            && c.input.is_some()
        {
            c.output = Some(text);
        }
    }

    /// The model (and its provider and prices) that answers.
    pub fn use_model(&mut self, model: &str, provider: &str, price: Price) {
        self.record.model = model.to_string();
        self.record.provider = Some(provider.to_string());
        self.price = price;
    }

    pub fn first_token(&mut self) {
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
        if let Some((tap, context)) = self.tap.take() {
            tap.closed(&self.record, context);
        }
        if self.spans.iter().any(Span::is_recording) {
            self.annotate(status);
        }
        self.record.clone()
    }

    /// The outcome on the request's span and the answering attempt's; the attempt's ends.
    fn annotate(&mut self, status: &'static str) {
        let r = &self.record;
        let [request, attempt] = &self.spans;
        for span in [request, attempt] {
            span.set(genai::RESPONSE_MODEL, r.model.as_str());
            span.set(genai::INPUT_TOKENS, r.tokens_in);
            span.set(genai::OUTPUT_TOKENS, r.tokens_out);
        }
        request.set(genai::OUTCOME, status);
        if let Some(p) = &r.provider {
            request.set(genai::QM_PROVIDER, p.as_str());
        }
        if let Some(code) = &r.error_code {
            request.error(code, format!("{status}: {code}"));
            attempt.error(code, format!("{status}: {code}"));
        }
        self.spans[1] = Span::none();
    }

    /// A finished answer: priced at the answering model's prices, its reservation settled.
    pub async fn finish_ok(&mut self, usage: Usage) {
        self.record.tokens_in = usage.prompt_tokens;
        self.record.tokens_out = usage.completion_tokens;
        let cost = self.price.cost(&usage);
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

    /// An answer from the cache: it cost nothing; `saved_usd` says what it would have.
    pub async fn finish_cache_hit(&mut self) {
        let record = self.close("cache_hit");
        self.writer.send(record).await;
    }

    pub async fn finish_err(&mut self, err: &impl ErrorCode) {
        self.record.http_status = err.http_status();
        self.record.error_code = Some(err.error_code().name().to_string());
        let record = self.close("error");
        self.writer.send(record).await;
    }

    pub fn cost_usd(&self) -> f64 {
        self.record.cost_usd
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
        static MODELS: crate::telemetry::Kept<ModelMetrics> =
            crate::telemetry::Kept::new(MAX_KEPT_MODELS);
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
