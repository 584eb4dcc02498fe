//! Building and running the gateway: the shared state handlers see (`api::AppState`), the HTTP server on a
//! given listener (`http.rs`), background work (`background.rs`), and an orderly shutdown
//! (stop accepting, let streams finish within the grace period, drain the request log,
//! close the store).

mod background;
mod http;

pub use crate::api::{AppState, Chat};
pub use background::{Reloader, build_classifier};

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{FailedAuthLimiter, KeyVerifier};
use crate::chat::Pipeline;
use crate::config::Config;
use crate::embed::EmbedService;
use crate::providers::ModelRegistry;
use crate::store::{RequestLogWriter, Store};
use crate::telemetry;

/// A built gateway, ready to serve.
pub struct App {
    pub state: Arc<AppState>,
    log_task: JoinHandle<()>,
    /// Watched for changes (and re-read on SIGHUP) when set.
    config_path: Option<PathBuf>,
    /// The OTLP trace exporter, flushed at shutdown.
    trace_exporter: Option<telemetry::otlp::Exporter>,
}

/// The response cache, when enabled (exact-only without embeddings).
async fn open_cache(
    config: &Config,
    store: &Store,
    embeddings: bool,
) -> anyhow::Result<Option<Arc<crate::cache::Cache>>> {
    if !config.cache.enabled {
        return Ok(None);
    }
    if config.cache.semantic && !embeddings {
        tracing::warn!("cache: embeddings are disabled, so the cache is exact-only");
    }
    let mut cache = crate::cache::Cache::new(config.cache.clone(), store.clone()).await?;
    if config.cache.verifier == crate::cache::VerifierMode::Cross
        && config.cache.semantic
        && embeddings
    {
        let dir = config.embeddings.model_dir.clone();
        let started = std::time::Instant::now();
        let cross =
            tokio::task::spawn_blocking(move || crate::cache::CrossVerifier::load(&dir)).await??;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "cache: cross-encoder verifier loaded"
        );
        cache = cache.with_cross(Arc::new(cross));
    }
    Ok(Some(Arc::new(cache)))
}

/// Documents and retrieval, when enabled (they need embeddings).
async fn open_rag(
    config: &Config,
    store: &Store,
    embedder: Option<&EmbedService>,
    cache: Option<&Arc<crate::cache::Cache>>,
) -> anyhow::Result<Option<Arc<crate::rag::Rag>>> {
    match (embedder, config.rag.enabled) {
        (Some(e), true) => Ok(Some(Arc::new(
            crate::rag::Rag::open(
                config.rag.clone(),
                store,
                e.clone(),
                &config.embeddings,
                cache.cloned(),
            )
            .await?,
        ))),
        (None, true) => {
            tracing::warn!("rag: embeddings are disabled, so documents and retrieval are off");
            Ok(None)
        }
        _ => Ok(None),
    }
}

impl App {
    /// Connects the store (applying migrations) and builds providers from config.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let models = ModelRegistry::build(&config.providers, &config.models, &config.local)?;
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
        let billing = Arc::new(crate::integrations::stripe::Billing::new(
            config.stripe.clone(),
            config.billing.clone(),
        ));
        let cache = open_cache(&config, &store, embedder.is_some()).await?;
        let rag = open_rag(&config, &store, embedder.as_ref(), cache.as_ref()).await?;
        let chat = Pipeline {
            models,
            live: arc_swap::ArcSwap::from_pointee(config.live()),
            breakers: crate::route::Breakers::default(),
            budgets: {
                let budgets = crate::usage::Budgets::new(store.clone());
                let log = request_log.clone();
                budgets.watch_unwritten(move || log.status().backlog);
                budgets
            },
            cache,
            rag,
            embedder,
            store: store.clone(),
            request_log: request_log.clone(),
            billing: billing.clone(),
            local_model: config
                .local
                .enabled
                .then(|| config.local.model_name.clone()),
            grace_over: CancellationToken::new(),
            analytics: crate::integrations::analytics::Analytics::start(&config.analytics, &store)?
                .map(|a| a as Arc<dyn crate::usage::Tap>),
            reask: Default::default(),
        };
        let response_saver = crate::store::ResponseSaver::spawn(store.clone());
        let jobs = crate::jobs::JobQueue::new(store.clone(), config.jobs.clone());
        let identities = Arc::new(crate::auth::identity::Identities::new(
            &config.auth.jwt,
            config.auth.authjs.as_ref(),
            &store,
            Duration::from_millis(config.auth.key_cache_ttl_ms.max(1000)),
            jobs.clone(),
        )?);
        let operator_keys = crate::auth::roles::operator_keys(&config.auth.operators)?;
        let audit = Arc::new(crate::audit::AuditLog::new(
            store.clone(),
            config.audit.forward_url.is_some().then(|| jobs.clone()),
        ));
        let trace_exporter = telemetry::otlp::start(&config.tracing);
        let state = AppState {
            chat: Arc::new(chat),
            jobs,
            billing,
            admin_key: crate::api::admin_key_hash(&config),
            keys: KeyVerifier::with_stale(
                store.clone(),
                Duration::from_millis(config.auth.key_cache_ttl_ms),
                Duration::from_secs(config.auth.stale_key_ttl_secs),
            ),
            failed_auth: FailedAuthLimiter::new(config.auth.failed_per_ip_per_minute),
            config: Arc::new(config),
            store,
            request_log,
            metrics: telemetry::metrics_handle(),
            shutdown: CancellationToken::new(),
            started_at: crate::clock::unix_now(),
            ui_streams: Default::default(),
            response_saver,
            identities,
            operator_keys,
            audit,
            tracer: trace_exporter
                .as_ref()
                .map(|e| e.tracer.clone())
                .unwrap_or_default(),
        };
        crate::chat::Reasker::bind(&state.chat);
        Ok(Self {
            state: Arc::new(state),
            log_task,
            config_path: None,
            trace_exporter,
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
            trace_exporter,
        } = self;
        let router = crate::api::router(state.clone());
        let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
        let (shutdown_token, grace_over) = (state.shutdown.clone(), state.chat.grace_over.clone());
        tracing::info!(addr = %listener.local_addr()?, store = state.store.backend(), models = state.chat.models.iter().count(), "quartermaster listening");

        crate::notify::configure(&state.config.notifications);
        tokio::spawn(crate::notify::live::listen(
            state.store.clone(),
            state.shutdown.clone(),
        ));
        let (alerts, alerts_rx) = tokio::sync::mpsc::unbounded_channel();
        state.chat.budgets.on_alert(
            state.config.notifications.budget_alert_percent.clone(),
            alerts,
        );
        tokio::spawn(crate::notify::budget_alerts(
            state.store.clone(),
            state.jobs.clone(),
            alerts_rx,
        ));
        let workers = background::start_jobs(&state);
        tokio::spawn(state.store.clone().watch_health(
            Duration::from_millis(state.config.database.health_interval_ms.max(50)),
            state.config.database.min_free_bytes,
            state.shutdown.clone(),
        ));
        if let Some(cache) = &state.chat.cache {
            tokio::spawn(cache.clone().run_upkeep(state.shutdown.clone()));
            tokio::spawn(cache.clone().run_sync(state.shutdown.clone()));
        }
        // Shared limit leases are given back when idle, and all of them once every request
        // has finished (`leases_done`, below).
        let leases_done = CancellationToken::new();
        let leases = state
            .chat
            .budgets
            .leases()
            .cloned()
            .map(|l| tokio::spawn(l.run(leases_done.clone())));
        tokio::spawn(background::train_classifier(state.clone()));
        if let Some(path) = config_path {
            tokio::spawn(crate::config::reload::watch(
                path,
                state.config.server.config_poll_secs,
                Reloader(state.clone()),
                state.shutdown.clone(),
            ));
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
        leases_done.cancel();
        // The cache's graphs, so the next start loads them instead of rebuilding them.
        if let Some(cache) = &state.chat.cache {
            cache.save_snapshot().await;
        }
        if let Some(rag) = &state.chat.rag {
            rag.save_snapshot().await;
        }
        // Analytics events still queued are sent (one attempt, a few seconds at most).
        if let Some(analytics) = &state.chat.analytics {
            analytics.flush(Duration::from_secs(3)).await;
        }
        if let Some(task) = leases
            && tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
        {
            tracing::warn!("shutdown: limit leases were not all given back");
        }
        let store = state.store.clone();
        drop(state);
        // Spans still queued (the last requests') are sent, a few seconds at most.
        if let Some(exporter) = trace_exporter {
            exporter.shutdown(Duration::from_secs(3)).await;
        }
        match tokio::time::timeout(Duration::from_secs(30), log_task).await {
            Ok(_) => tracing::info!("shutdown: request log drained"),
            Err(_) => tracing::error!("shutdown: request log writer did not finish in 30 s"),
        }
        store.close().await;
        Ok(())
    }
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
