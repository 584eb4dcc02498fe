//! Building and running the gateway: shared state, the HTTP server on a given listener, and
//! an orderly shutdown (stop accepting, let streams finish within the grace period, drain
//! the request log, close the store).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod http;

pub use http::{BodyTimedOut, DeadlineBody, is_body_timeout};

use crate::auth::KeyVerifier;
use crate::config::Config;
use crate::embed::EmbedService;
use crate::providers::ModelRegistry;
use crate::store::{RequestLogWriter, Store};
use crate::telemetry;

/// Everything a request handler may use. Immutable after start.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub keys: KeyVerifier,
    /// Failed authentications per client address.
    pub failed_auth: crate::auth::FailedAuthLimiter,
    pub models: ModelRegistry,
    pub request_log: RequestLogWriter,
    /// The local embedder; `None` when disabled in config.
    pub embedder: Option<EmbedService>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Cancelled when shutdown begins (readiness turns false).
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace period is over: open streams end with an error event.
    pub grace_over: CancellationToken,
    pub started_at: i64,
    /// The durable job queue.
    pub jobs: crate::jobs::JobQueue,
    pub billing: Arc<crate::billing::Billing>,
    /// SHA-256 of the admin key; `None` disables the admin API.
    pub admin_key: Option<[u8; 32]>,
    /// Tiers, prices, thresholds, limits and the router's classifier: swapped whole on
    /// reload.
    pub live: arc_swap::ArcSwap<crate::route::Live>,
    pub budgets: Arc<crate::budget::Budgets>,
    pub breakers: crate::route::Breakers,
    /// The response cache; `None` when disabled in config.
    pub cache: Option<Arc<crate::cache::Cache>>,
    /// Documents and retrieval; `None` when disabled in config (or with no embedder).
    pub rag: Option<Arc<crate::rag::Rag>>,
}

/// A built gateway, ready to serve.
pub struct App {
    pub state: Arc<AppState>,
    log_task: JoinHandle<()>,
    /// Watched for changes (and re-read on SIGHUP) when set.
    config_path: Option<PathBuf>,
}

impl App {
    /// Connects the store (applying migrations) and builds providers from config.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let models = ModelRegistry::from_config(&config)?;
        Self::build_with_models(config, models).await
    }

    /// As [`App::build`], with the model registry supplied (tests inject fakes here).
    pub async fn build_with_models(config: Config, models: ModelRegistry) -> anyhow::Result<Self> {
        let embedder = if config.embeddings.enabled {
            Some(EmbedService::start(&config.embeddings)?)
        } else {
            None
        };
        let store = Store::connect_with(
            config.database.url.expose_secret(),
            &config.database.connect_options(),
        )
        .await?;
        let (request_log, log_task) =
            RequestLogWriter::spawn(store.clone(), config.request_log.options(&store));
        let jobs = crate::jobs::JobQueue::new(store.clone(), config.jobs.clone());
        let billing = Arc::new(crate::billing::Billing::new(
            config.stripe.clone(),
            config.billing.clone(),
        ));
        let admin_key = crate::api::admin_key_hash(&config);
        let live = arc_swap::ArcSwap::from_pointee(crate::route::Live::from_config(&config));
        let budgets = crate::budget::Budgets::new(store.clone());
        let cache = if config.cache.enabled {
            if config.cache.semantic && embedder.is_none() {
                tracing::warn!("cache: embeddings are disabled, so the cache is exact-only");
            }
            Some(Arc::new(
                crate::cache::Cache::new(config.cache.clone(), store.clone()).await?,
            ))
        } else {
            None
        };
        let rag = match (&embedder, config.rag.enabled) {
            (Some(e), true) => Some(Arc::new(
                crate::rag::Rag::open(
                    config.rag.clone(),
                    &store,
                    e.clone(),
                    &config.embeddings,
                    cache.clone(),
                )
                .await?,
            )),
            (None, true) => {
                tracing::warn!("rag: embeddings are disabled, so documents and retrieval are off");
                None
            }
            _ => None,
        };
        let state = AppState {
            rag,
            cache,
            live,
            budgets,
            breakers: crate::route::Breakers::default(),
            jobs,
            billing,
            admin_key,
            keys: KeyVerifier::with_stale(
                store.clone(),
                Duration::from_millis(config.auth.key_cache_ttl_ms),
                Duration::from_secs(config.auth.stale_key_ttl_secs),
            ),
            failed_auth: crate::auth::FailedAuthLimiter::new(config.auth.failed_per_ip_per_minute),
            config: Arc::new(config),
            store,
            models,
            request_log,
            embedder,
            metrics: telemetry::metrics_handle(),
            shutdown: CancellationToken::new(),
            grace_over: CancellationToken::new(),
            started_at: crate::types::unix_now(),
        };
        Ok(Self {
            state: Arc::new(state),
            log_task,
            config_path: None,
        })
    }

    /// Hot-reloads tiers, prices, thresholds and limits from this file (on change and on
    /// SIGHUP).
    pub fn with_config_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_path = Some(path.into());
        self
    }

    pub fn router(&self) -> axum::Router {
        crate::api::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then shuts down in order.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            state,
            log_task,
            config_path,
        } = self;
        let router = crate::api::router(state.clone());
        let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
        let (shutdown_token, grace_over) = (state.shutdown.clone(), state.grace_over.clone());
        tracing::info!(addr = %listener.local_addr()?, store = state.store.backend(), models = state.models.iter().count(), "quartermaster listening");

        let workers = start_background(&state);
        tokio::spawn(state.store.clone().watch_health(
            Duration::from_millis(state.config.database.health_interval_ms.max(50)),
            state.config.database.min_free_bytes,
            state.shutdown.clone(),
        ));
        if let Some(cache) = &state.cache {
            tokio::spawn(cache.clone().run_upkeep(state.shutdown.clone()));
        }
        tokio::spawn(train_classifier(state.clone()));
        if let Some(path) = config_path {
            tokio::spawn(watch_config(state.clone(), path));
        }
        let signal = shutdown_token.clone();
        let header_timeout = Duration::from_secs(state.config.server.header_read_timeout_secs);
        let server = tokio::spawn(http::serve(listener, router, header_timeout, async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutdown: no new connections; letting requests finish"
            );
            signal.cancel();
        }));
        // After the grace period open streams are told to end; a little later we stop waiting.
        let watchdog = tokio::spawn(async move {
            shutdown_token.cancelled().await;
            tokio::time::sleep(grace).await;
            tracing::warn!("shutdown: grace period over; ending open streams");
            grace_over.cancel();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        tokio::select! {
            result = server => result??,
            _ = watchdog => tracing::warn!("shutdown: connections still open after the grace period; closing"),
        }

        // Jobs get the grace period to finish; a job cut off runs again after its lease.
        if tokio::time::timeout(grace + Duration::from_secs(1), workers)
            .await
            .is_err()
        {
            tracing::warn!("shutdown: background jobs did not stop in time");
        }
        // Handlers that saw a disconnect may still be handing their record over.
        tokio::task::yield_now().await;
        let store = state.store.clone();
        drop(state);
        match tokio::time::timeout(Duration::from_secs(30), log_task).await {
            Ok(_) => tracing::info!("shutdown: request log drained"),
            Err(_) => tracing::error!("shutdown: request log writer did not finish in 30 s"),
        }
        store.close().await;
        Ok(())
    }
}

/// Starts the job runner and the periodic scheduler; the returned future ends once both
/// have stopped after shutdown.
fn start_background(state: &Arc<AppState>) -> impl Future<Output = ()> + use<> {
    use crate::billing::{self, EnforceJob, EventJob, HousekeepingJob, MeterJob, ReminderJob};
    let shutdown = state.shutdown.clone();
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    if !state.config.jobs.enabled {
        return futures::future::Either::Left(std::future::ready(()));
    }
    let queue = state.jobs.clone();
    let store = state.store.clone();
    let mut runner = crate::jobs::JobRunner::new(queue.clone());
    runner.register(
        billing::JOB_EVENT,
        Arc::new(EventJob {
            store: store.clone(),
            queue: queue.clone(),
            billing: state.billing.clone(),
        }),
    );
    runner.register(
        billing::JOB_REMIND,
        Arc::new(ReminderJob {
            store: store.clone(),
        }),
    );
    runner.register(
        billing::JOB_ENFORCE,
        Arc::new(EnforceJob {
            store: store.clone(),
        }),
    );
    runner.register(
        billing::JOB_METER,
        Arc::new(MeterJob {
            store: store.clone(),
            billing: state.billing.clone(),
        }),
    );
    runner.register(
        billing::JOB_HOUSEKEEPING,
        Arc::new(HousekeepingJob {
            queue: queue.clone(),
            idempotency_ttl_secs: state.config.idempotency.ttl_secs,
        }),
    );
    let runner = runner.spawn(shutdown.clone(), grace);
    let billing = state.billing.clone();
    let scheduler = tokio::spawn(async move {
        let tick = billing::schedule_tick(&billing);
        loop {
            if let Err(e) = billing::schedule_periodic(&queue, &billing).await {
                tracing::warn!(error = %e, "scheduling periodic jobs failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
    });
    futures::future::Either::Right(async move {
        let _ = scheduler.await;
        let _ = runner.await;
    })
}

/// Trains the router's classifier from the examples file with the local embedder and
/// installs it. Without the embedder, routing uses its rules and the default tier.
async fn train_classifier(state: Arc<AppState>) {
    let live = state.live.load_full();
    if live.tiers.is_empty() {
        return;
    }
    let path = PathBuf::from(&live.routing.examples_path);
    match build_classifier(&state, &path).await {
        Ok(classifier) => {
            let stamp = crate::route::live::file_stamp(&path);
            state.live.rcu(|current| {
                let mut next = crate::route::Live::clone(current);
                next.classifier = Some(classifier.clone());
                next.trained_on = Some(stamp.clone());
                next
            });
            tracing::info!(examples = %path.display(), "router classifier trained");
        }
        Err(e) => {
            tracing::warn!(error = %e, "router classifier unavailable; routing by rules and the default tier")
        }
    }
}

/// Embeds the labeled examples and fits the classifier.
pub async fn build_classifier(
    state: &AppState,
    path: &std::path::Path,
) -> Result<Arc<crate::route::Classifier>, String> {
    let Some(embedder) = &state.embedder else {
        return Err("embeddings are disabled".into());
    };
    let examples = crate::route::classifier::load_examples(path)?;
    let mut features = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(32) {
        let texts = chunk.iter().map(|e| e.prompt.clone()).collect();
        let embedded = embedder.embed(texts).await.map_err(|e| e.to_string())?;
        features.extend(embedded.into_iter().map(|e| e.vector));
    }
    let labels: Vec<bool> = examples
        .iter()
        .map(|e| e.is_hard().unwrap_or(false))
        .collect();
    let classifier =
        tokio::task::spawn_blocking(move || crate::route::Classifier::train(&features, &labels))
            .await
            .map_err(|e| e.to_string())?;
    Ok(Arc::new(classifier))
}

/// Re-reads the config file when it changes (polled) or on SIGHUP.
async fn watch_config(state: Arc<AppState>, path: PathBuf) {
    let poll = state.config.server.config_poll_secs;
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last = crate::route::live::file_stamp(&path);
    loop {
        let hup_fired = async {
            #[cfg(unix)]
            if let Some(h) = hup.as_mut() {
                h.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        let tick = async {
            if poll == 0 {
                std::future::pending::<()>().await
            }
            tokio::time::sleep(Duration::from_secs(poll)).await
        };
        let forced = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = hup_fired => true,
            _ = tick => false,
        };
        let now = crate::route::live::file_stamp(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        match reload(&state, &path).await {
            Ok(()) => {
                metrics::counter!("qm_config_reloads_total", "outcome" => "applied").increment(1);
                tracing::info!(path = %path.display(), "config reloaded");
            }
            Err(e) => {
                metrics::counter!("qm_config_reloads_total", "outcome" => "rejected").increment(1);
                tracing::error!(path = %path.display(), error = %e, "config reload rejected; keeping the running config");
            }
        }
    }
}

/// Loads and validates the file, then swaps in its tiers, routing, prices and limits in one
/// step. Providers, models, the listener and the store need a restart (a warning says so).
pub async fn reload(state: &AppState, path: &std::path::Path) -> Result<(), String> {
    let config = Config::load(path, true).map_err(|e| e.to_string())?;
    for (tier, t) in &config.tiers {
        for m in &t.models {
            if state.models.get(m).is_none() {
                return Err(format!(
                    "tiers.{tier}: model `{m}` is not served by the running gateway (new models need a restart)"
                ));
            }
        }
    }
    let running: Vec<&String> = state.config.models.keys().collect();
    let wanted: Vec<&String> = config.models.keys().collect();
    if running != wanted || state.config.providers.len() != config.providers.len() {
        tracing::warn!("[models] / [providers] changed: those changes apply after a restart");
    }
    let mut next = crate::route::Live::from_config(&config);
    let current = state.live.load_full();
    let examples = PathBuf::from(&next.routing.examples_path);
    let stamp = crate::route::live::file_stamp(&examples);
    if current.trained_on.as_ref() == Some(&stamp) {
        next.classifier = current.classifier.clone();
        next.trained_on = current.trained_on.clone();
    } else if !next.tiers.is_empty() {
        match build_classifier(state, &examples).await {
            Ok(c) => {
                next.classifier = Some(c);
                next.trained_on = Some(stamp);
            }
            Err(e) if state.embedder.is_none() => {
                tracing::debug!(error = %e, "no classifier (embeddings disabled)")
            }
            Err(e) => return Err(format!("routing.examples_path: {e}")),
        }
    }
    state.live.store(Arc::new(next));
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called,
/// not when the future is first polled: a signal that arrives while the server is still
/// starting is not lost (nor fatal).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
    }
}
