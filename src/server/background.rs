//! Background work the app owns: the job runner and its periodic scheduler, training the
//! router's classifier, and applying hot-reloaded config.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::AppState;
use crate::config::Config;

/// Starts the job runner and the periodic scheduler; the returned future ends once both
/// have stopped after shutdown.
pub(super) fn start_jobs(state: &Arc<AppState>) -> impl Future<Output = ()> + use<> {
    use crate::integrations::stripe::{self, EnforceJob, EventJob, MeterJob, ReminderJob};
    use crate::jobs::{HousekeepingJob, JOB_HOUSEKEEPING};
    let shutdown = state.shutdown.clone();
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    if !state.config.jobs.enabled {
        return futures::future::Either::Left(std::future::ready(()));
    }
    let queue = state.jobs.clone();
    let store = state.store.clone();
    let mut runner = crate::jobs::JobRunner::new(queue.clone());
    runner.register(
        stripe::JOB_EVENT,
        Arc::new(EventJob {
            store: store.clone(),
            queue: queue.clone(),
            billing: state.billing.clone(),
        }),
    );
    runner.register(
        stripe::JOB_REMIND,
        Arc::new(ReminderJob {
            store: store.clone(),
            queue: queue.clone(),
        }),
    );
    runner.register(
        stripe::JOB_ENFORCE,
        Arc::new(EnforceJob {
            store: store.clone(),
        }),
    );
    runner.register(
        stripe::JOB_METER,
        Arc::new(MeterJob {
            store: store.clone(),
            billing: state.billing.clone(),
        }),
    );
    runner.register(
        crate::integrations::identity::deletion::JOB,
        Arc::new(crate::integrations::identity::deletion::DeletionJob {
            store: store.clone(),
            cache: state.chat.cache.clone(),
            rag: state.chat.rag.clone(),
            config: state.config.identity.deletion.clone(),
            stripe_api: state.billing.api(),
            audit: state.audit.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(
                    state.config.identity.deletion.timeout_ms,
                ))
                .build()
                .expect("an HTTP client"),
            queue: queue.clone(),
        }),
    );
    if let Some(url) = &state.config.audit.forward_url {
        runner.register(
            crate::audit::JOB_FORWARD,
            Arc::new(crate::audit::ForwardJob {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("an HTTP client"),
                url: url.clone(),
                token: state
                    .config
                    .audit
                    .forward_token_env
                    .as_ref()
                    .and_then(|v| std::env::var(v).ok()),
            }),
        );
    }
    if !state.config.cms.sources.is_empty() {
        use crate::integrations::cms::{sync, webhook};
        runner.register(
            webhook::JOB_APPLY,
            Arc::new(sync::ApplyJob {
                store: store.clone(),
                rag: state.chat.rag.clone(),
                config: state.config.cms.clone(),
                queue: queue.clone(),
            }),
        );
        runner.register(
            sync::JOB_REVALIDATE,
            Arc::new(sync::RevalidateJob {
                config: state.config.cms.clone(),
                http: reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build()
                    .expect("an HTTP client"),
            }),
        );
    }
    if state.config.warehouse.dir.is_some() {
        runner.register(
            crate::integrations::warehouse::JOB,
            Arc::new(crate::integrations::warehouse::ExportJob {
                store: store.clone(),
                config: state.config.warehouse.clone(),
            }),
        );
    }
    {
        use crate::integrations::email::{digest::DigestJob, outbox::SendJob};
        runner.register(
            crate::notify::JOB_EMAIL,
            Arc::new(SendJob {
                store: store.clone(),
                provider: state.config.email.provider(),
                from: state.config.email.from.clone(),
                paused_until: Default::default(),
            }),
        );
        runner.register(
            crate::notify::JOB_DIGEST,
            Arc::new(DigestJob {
                store: store.clone(),
                queue: queue.clone(),
            }),
        );
    }
    runner.register(
        JOB_HOUSEKEEPING,
        Arc::new(HousekeepingJob {
            queue: queue.clone(),
            idempotency_ttl_secs: state.config.idempotency.ttl_secs,
            responses_retention_days: state.config.responses.retention_days,
        }),
    );
    let runner = runner.spawn(shutdown.clone(), grace);
    let billing = state.billing.clone();
    let warehouse = state.config.warehouse.clone();
    let digest_period = state
        .config
        .email
        .enabled()
        .then_some(state.config.notifications.digest_period_secs);
    let scheduler = tokio::spawn(async move {
        let mut tick = stripe::schedule_tick(&billing);
        if warehouse.dir.is_some() {
            tick = tick.min(Duration::from_secs(warehouse.interval_secs.clamp(1, 60)));
        }
        if let Some(period) = digest_period {
            tick = tick.min(Duration::from_secs(period.clamp(1, 60)));
        }
        loop {
            if let Err(e) = stripe::schedule_periodic(&queue, &billing).await {
                tracing::warn!(error = %e, "scheduling periodic jobs failed");
            }
            if let Err(e) = crate::integrations::warehouse::schedule(&queue, &warehouse).await {
                tracing::warn!(error = %e, "scheduling the warehouse export failed");
            }
            if let Some(period) = digest_period
                && let Err(e) = crate::integrations::email::digest::schedule(&queue, period).await
            {
                tracing::warn!(error = %e, "scheduling the digests failed");
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
pub(super) async fn train_classifier(state: Arc<AppState>) {
    let live = state.chat.live.load_full();
    if live.tiers.is_empty() {
        return;
    }
    let path = PathBuf::from(&live.routing.examples_path);
    let eval = live.routing.eval_path.as_ref().map(PathBuf::from);
    match build_classifier(state.chat.embedder.as_ref(), &path, eval.as_deref()).await {
        Ok(classifier) => {
            let stamp = crate::route::live::file_stamp(&path);
            state.chat.live.rcu(|current| {
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

/// Embeds the labeled examples and fits the classifier; scores it on `eval` when given.
pub async fn build_classifier(
    embedder: Option<&crate::embed::EmbedService>,
    path: &std::path::Path,
    eval: Option<&std::path::Path>,
) -> Result<Arc<crate::route::Classifier>, String> {
    let Some(embedder) = embedder else {
        return Err("embeddings are disabled".into());
    };
    let (features, labels) = embed_examples(embedder, path).await?;
    let mut classifier =
        tokio::task::spawn_blocking(move || crate::route::Classifier::train(&features, &labels))
            .await
            .map_err(|e| e.to_string())?;
    // The curve is for operators to read: an evaluation file that cannot be read costs the
    // curve, never the classifier.
    if let Some(eval) = eval {
        match embed_examples(embedder, eval).await {
            Ok((features, labels)) => {
                let scores: Vec<f32> = features.iter().map(|x| classifier.p_hard(x)).collect();
                let thresholds: Vec<f32> = (1..=9).map(|i| i as f32 / 10.0).collect();
                classifier.evaluation = Some(crate::route::classifier::evaluate(
                    &scores,
                    &labels,
                    &thresholds,
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %eval.display(), "routing.eval_path: no threshold curve")
            }
        }
    }
    Ok(Arc::new(classifier))
}

/// A labeled examples file's embeddings and labels (`true`: hard).
async fn embed_examples(
    embedder: &crate::embed::EmbedService,
    path: &std::path::Path,
) -> Result<(Vec<Vec<f32>>, Vec<bool>), String> {
    let examples = crate::route::classifier::load_examples(path)?;
    let mut features = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(32) {
        let texts = chunk.iter().map(|e| e.prompt.clone()).collect();
        let embedded = embedder.embed(texts).await.map_err(|e| e.to_string())?;
        features.extend(embedded.into_iter().map(|e| e.vector));
    }
    let labels = examples
        .iter()
        .map(|e| e.is_hard().unwrap_or(false))
        .collect();
    Ok((features, labels))
}

/// Swaps in a reloaded config's tiers, routing, prices and limits in one step (retraining
/// the classifier when its examples changed). Providers, models, the listener and the store
/// need a restart (a warning says so).
pub struct Reloader(pub Arc<AppState>);

#[async_trait::async_trait]
impl crate::config::reload::Reload for Reloader {
    async fn apply(&self, config: Config) -> Result<(), String> {
        apply(&self.0, config).await
    }

    /// Every reload, applied or refused, goes to the audit log with the file's SHA-256 (who
    /// changed routing or limits, and when, is an auditor's question too).
    fn reloaded(&self, path: &std::path::Path, outcome: &Result<(), String>) {
        use sha2::Digest;
        let sha256 = std::fs::read(path)
            .map(|b| hex::encode(sha2::Sha256::digest(&b)))
            .unwrap_or_default();
        let detail = match outcome {
            Ok(()) => serde_json::json!({"outcome": "applied", "sha256": sha256}),
            Err(e) => serde_json::json!({"outcome": "rejected", "sha256": sha256, "error": e}),
        };
        self.0.audit.record(crate::audit::Event::new(
            "system",
            "config.reload",
            Some(path.display().to_string()),
            detail,
        ));
    }
}

async fn apply(state: &AppState, config: Config) -> Result<(), String> {
    for (tier, t) in &config.tiers {
        for m in &t.models {
            if state.chat.models.get(m).is_none() {
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
    let mut next = config.live();
    let current = state.chat.live.load_full();
    let examples = PathBuf::from(&next.routing.examples_path);
    let stamp = crate::route::live::file_stamp(&examples);
    if current.trained_on.as_ref() == Some(&stamp) {
        next.classifier = current.classifier.clone();
        next.trained_on = current.trained_on.clone();
    } else if !next.tiers.is_empty() {
        let eval = next.routing.eval_path.as_ref().map(PathBuf::from);
        match build_classifier(state.chat.embedder.as_ref(), &examples, eval.as_deref()).await {
            Ok(c) => {
                next.classifier = Some(c);
                next.trained_on = Some(stamp);
            }
            Err(e) if state.chat.embedder.is_none() => {
                tracing::debug!(error = %e, "no classifier (embeddings disabled)")
            }
            Err(e) => return Err(format!("routing.examples_path: {e}")),
        }
    }
    state.chat.live.store(Arc::new(next));
    Ok(())
}
