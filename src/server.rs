//! Building and running the gateway: shared state, the HTTP server on a given listener, and
//! an orderly shutdown (stop accepting, let streams finish within the grace period, drain
//! the request log, close the store).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
}

/// A built gateway, ready to serve.
pub struct App {
    pub state: Arc<AppState>,
    log_task: JoinHandle<()>,
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
        let store = Store::connect(
            config.database.url.expose_secret(),
            config.database.max_connections,
        )
        .await?;
        let (request_log, log_task) = RequestLogWriter::spawn(
            store.clone(),
            config.request_log.channel_capacity,
            config.request_log.batch_size,
        );
        let jobs = crate::jobs::JobQueue::new(store.clone(), config.jobs.clone());
        let billing = Arc::new(crate::billing::Billing::new(
            config.stripe.clone(),
            config.billing.clone(),
        ));
        let admin_key = crate::api::admin_key_hash(&config);
        let state = AppState {
            jobs,
            billing,
            admin_key,
            keys: KeyVerifier::new(
                store.clone(),
                Duration::from_millis(config.auth.key_cache_ttl_ms),
            ),
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
        })
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
        let App { state, log_task } = self;
        let router = crate::api::router(state.clone());
        let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
        let (shutdown_token, grace_over) = (state.shutdown.clone(), state.grace_over.clone());
        tracing::info!(addr = %listener.local_addr()?, store = state.store.backend(), models = state.models.iter().count(), "quartermaster listening");

        let workers = start_background(&state);
        let signal = shutdown_token.clone();
        // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm holds each
        // one back until the client's delayed ACK (~40 ms per chunk).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutdown: no new connections; letting requests finish"
            );
            signal.cancel();
        });
        let server = tokio::spawn(async move { server.await });
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

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
