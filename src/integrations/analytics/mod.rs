//! Server-side AI analytics: every chat request, through any door, becomes an event in
//! PostHog's LLM-analytics shape (`$ai_generation`), sent in batches off the request path.
//!
//! The request path only hands its closed record to a bounded queue (`try_send`: never a
//! wait, never a failure; a full queue drops the event and counts it). One worker takes
//! events in batches (`batch_size`, or whatever came within `flush_interval_ms`), resolves
//! each end user's consent (what the request or the token said, else the user's stored
//! preference, else `require_consent`), and sends the batch with retries and backoff; a
//! batch that still fails is dropped and counted (`qm_analytics_events_total{outcome}`).
//! Without consent an event is dropped or, with `without_consent = "anonymous"`, sent
//! without the user, the request's ids or any content, and with no person profile. Prompts
//! and answers are sent only with `capture_content = true`.
//!
//! The provider is a [`Sink`]: PostHog's batch API (`posthog.rs`) or any HTTP collector that
//! takes Segment's batch shape (`http.rs`, for Segment or RudderStack).

pub mod consent;
mod event;
mod http;
mod posthog;

pub use consent::ConsentStore;
pub use event::Event;

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::store::{RequestLogRecord, Store};
use crate::usage::{Tap, TapContext};

/// What happens to an event of a user without consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WithoutConsent {
    /// Nothing is sent.
    #[default]
    Drop,
    /// An anonymous event: no user, no ids, no content, no person profile.
    Anonymous,
}

/// `[analytics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// `posthog` or `http` (a Segment-style collector); none: no analytics.
    pub provider: Option<String>,
    /// PostHog's host (`https://us.i.posthog.com`) or the collector's batch URL.
    pub url: Option<String>,
    /// The environment variable holding the project key (PostHog's `phc_...`, or the
    /// collector's write key).
    pub api_key_env: String,
    pub api_key: Option<SecretString>,
    /// Send prompts and answers (`$ai_input`, `$ai_output_choices`).
    pub capture_content: bool,
    /// Users who have not said count as not consenting.
    pub require_consent: bool,
    pub without_consent: WithoutConsent,
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    /// Attempts per batch before it is dropped.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub timeout_ms: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            provider: None,
            url: None,
            api_key_env: "POSTHOG_API_KEY".into(),
            api_key: None,
            capture_content: false,
            require_consent: false,
            without_consent: WithoutConsent::Drop,
            queue_capacity: 10_000,
            batch_size: 100,
            flush_interval_ms: 1000,
            max_attempts: 5,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            timeout_ms: 5000,
        }
    }
}

/// Why a batch was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth another attempt (network, 5xx, 429).
    #[error("{0}")]
    Retry(String),
    /// Refused for good (a 4xx): the batch is dropped.
    #[error("{0}")]
    Rejected(String),
}

/// An analytics provider.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    async fn send(&self, events: &[Event]) -> Result<(), SinkError>;
}

fn sink(config: &AnalyticsConfig, http: reqwest::Client) -> anyhow::Result<Option<Box<dyn Sink>>> {
    let Some(provider) = config.provider.as_deref() else {
        return Ok(None);
    };
    let url = config
        .url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("analytics.url is required with a provider"))?;
    let key = config
        .api_key
        .as_ref()
        .map(|k| k.expose_secret().to_string())
        .or_else(|| std::env::var(&config.api_key_env).ok())
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "analytics: no key (set {} or analytics.api_key)",
                config.api_key_env
            )
        })?;
    Ok(Some(match provider {
        "posthog" => Box::new(posthog::PostHog::new(&url, key, http)),
        "http" => Box::new(http::Collector::new(&url, key, http)),
        other => anyhow::bail!("analytics.provider `{other}`: expected posthog or http"),
    }))
}

enum Msg {
    Event(Box<Pending>),
    /// Send what is queued now, then answer.
    Flush(oneshot::Sender<()>),
}

/// A closed request waiting for the worker.
struct Pending {
    record: RequestLogRecord,
    context: TapContext,
}

/// The request path's handle: a bounded queue to the worker.
pub struct Analytics {
    tx: mpsc::Sender<Msg>,
    capture_content: bool,
}

impl Analytics {
    /// Starts the worker when a provider is configured.
    pub fn start(config: &AnalyticsConfig, store: &Store) -> anyhow::Result<Option<Arc<Self>>> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_millis(config.timeout_ms.max(100)))
            .build()?;
        let Some(sink) = sink(config, http)? else {
            return Ok(None);
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let worker = Worker {
            sink,
            consent: ConsentStore::new(store.clone()),
            config: config.clone(),
        };
        tokio::spawn(worker.run(rx));
        Ok(Some(Arc::new(Self {
            tx,
            capture_content: config.capture_content,
        })))
    }
}

#[async_trait::async_trait]
impl Tap for Analytics {
    /// Sends what is queued, waiting at most `deadline` (at shutdown).
    async fn flush(&self, deadline: Duration) {
        let (done, wait) = oneshot::channel();
        let asked = tokio::time::timeout(deadline, self.tx.send(Msg::Flush(done))).await;
        if matches!(asked, Ok(Ok(()))) {
            let _ = tokio::time::timeout(deadline, wait).await;
        }
    }

    fn wants_content(&self) -> bool {
        self.capture_content
    }

    fn closed(&self, record: &RequestLogRecord, context: TapContext) {
        let pending = Box::new(Pending {
            record: record.clone(),
            context,
        });
        match self.tx.try_send(Msg::Event(pending)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => count("dropped_queue_full", 1),
            Err(mpsc::error::TrySendError::Closed(_)) => count("dropped_closed", 1),
        }
    }
}

fn count(outcome: &'static str, n: usize) {
    metrics::counter!("qm_analytics_events_total", "outcome" => outcome).increment(n as u64);
}

struct Worker {
    sink: Box<dyn Sink>,
    consent: ConsentStore,
    config: AnalyticsConfig,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let interval = Duration::from_millis(self.config.flush_interval_ms.max(1));
        let size = self.config.batch_size.max(1);
        loop {
            // The first event opens a batch; the batch closes when full, or when the flush
            // interval has passed since, or on a flush request.
            let mut batch = Vec::with_capacity(size);
            let mut flushed = None;
            match rx.recv().await {
                None => return,
                Some(Msg::Flush(done)) => flushed = Some(done),
                Some(Msg::Event(p)) => batch.push(*p),
            }
            let deadline = tokio::time::Instant::now() + interval;
            while flushed.is_none() && batch.len() < size {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Err(_) => break,
                    Ok(None) => break,
                    Ok(Some(Msg::Flush(done))) => flushed = Some(done),
                    Ok(Some(Msg::Event(p))) => batch.push(*p),
                }
            }
            self.deliver(batch, flushed.is_some()).await;
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }

    /// Consent resolved, events built, the batch sent (retried unless `once`).
    async fn deliver(&self, batch: Vec<Pending>, once: bool) {
        let mut events = Vec::with_capacity(batch.len());
        for p in batch {
            let consent = self.consent_of(&p).await;
            match (consent, self.config.without_consent) {
                (true, _) => events.push(Event::generation(&p.record, p.context, false)),
                (false, WithoutConsent::Anonymous) => {
                    events.push(Event::generation(&p.record, TapContext::default(), true))
                }
                (false, WithoutConsent::Drop) => count("suppressed_no_consent", 1),
            }
        }
        if events.is_empty() {
            return;
        }
        let attempts = if once {
            1
        } else {
            self.config.max_attempts.max(1)
        };
        let mut backoff = Duration::from_millis(self.config.backoff_base_ms.max(1));
        for attempt in 1..=attempts {
            match self.sink.send(&events).await {
                Ok(()) => {
                    count("sent", events.len());
                    return;
                }
                Err(SinkError::Rejected(e)) => {
                    tracing::warn!(error = %e, events = events.len(), "analytics: batch refused; dropped");
                    count("dropped_rejected", events.len());
                    return;
                }
                Err(SinkError::Retry(e)) if attempt < attempts => {
                    tracing::debug!(error = %e, attempt, "analytics: batch not sent; retrying");
                    metrics::counter!("qm_analytics_retries_total").increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(self.config.backoff_max_ms));
                }
                Err(SinkError::Retry(e)) => {
                    tracing::warn!(error = %e, events = events.len(), "analytics: batch not sent after every attempt; dropped");
                    count("dropped_send_failed", events.len());
                }
            }
        }
    }

    /// Whether the event may name its user: a denial anywhere (the request, the token, the
    /// stored preference) wins; else a grant anywhere; else the default. Requests without an end user
    /// are the tenant's own and follow the default.
    async fn consent_of(&self, p: &Pending) -> bool {
        if p.context.consent == Some(false) {
            return false;
        }
        let stored = match (&p.record.tenant_id, &p.record.user_id) {
            (Some(tenant), Some(user)) => self.consent.get(tenant, user).await,
            _ => None,
        };
        match (stored, p.context.consent) {
            (Some(false), _) => false,
            (Some(true), _) | (None, Some(true)) => true,
            (None, _) => !self.config.require_consent,
        }
    }
}
