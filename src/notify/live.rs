//! Pushing notifications to open streams (`GET /v1/notifications/stream`) as they are
//! written. Each open stream has a doorbell, rung when its recipient has something new; on
//! PostgreSQL a trigger announces every inserted notification on `LISTEN`/`NOTIFY` when its
//! transaction commits, so a notification written through any replica reaches streams open
//! on every other one at once. The store is the truth: a hint only makes a stream read it
//! (and each stream also reads on a timer, so a lost hint costs latency, never a
//! notification). A stream reads back 5 s each time for transactions that commit after
//! later ones; a notice whose transaction commits more than 5 s after it was made (or made
//! on a replica whose clock is that far behind) is in the list but not pushed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::Stream;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::inbox::{self, Item};
use crate::clock::now_ms;
use crate::store::{Pool, Store};

pub const CHANNEL: &str = "qm_notifications";
/// How far back each read looks for transactions that committed after later ones.
const LATE_COMMIT_MS: i64 = 5_000;

/// Each recipient's open streams in this process, each with its own doorbell (a hint to a
/// stream busy reading is kept for it: `Notify` stores one permit).
type Hub = Mutex<HashMap<String, Vec<Weak<Notify>>>>;

fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(Default::default)
}

fn key(tenant: &str, user: &str) -> String {
    format!("{tenant} {user}")
}

/// A doorbell for one stream of `key` (dropped with the stream).
fn subscribe(key: &str) -> Arc<Notify> {
    let bell = Arc::new(Notify::new());
    let mut hub = hub().lock().expect("notification hub");
    let bells = hub.entry(key.to_string()).or_default();
    bells.retain(|b| b.strong_count() > 0);
    bells.push(Arc::downgrade(&bell));
    bell
}

fn ring(key: &str) {
    let mut hub = hub().lock().expect("notification hub");
    if let Some(bells) = hub.get_mut(key) {
        bells.retain(|b| match b.upgrade() {
            Some(bell) => {
                bell.notify_one();
                true
            }
            None => false,
        });
        if bells.is_empty() {
            hub.remove(key);
        }
    }
}

/// Tells this process's streams of a recipient that it has something new.
pub fn wake(tenant: &str, user: &str) {
    ring(&key(tenant, user));
}

/// Forwards the other replicas' announcements to this process's streams until `shutdown`
/// (PostgreSQL only; reconnects as needed).
pub async fn listen(store: Store, shutdown: CancellationToken) {
    let Pool::Postgres(pool) = store.pool() else {
        return;
    };
    loop {
        let mut listener = match PgListener::connect_with(pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "notifications: cannot listen yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::debug!(error = %e, "notifications: LISTEN failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            let note = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match note {
                Ok(Some(n)) => ring(n.payload()),
                Ok(None) | Err(_) => break, // reconnect; streams' timers cover the gap
            }
        }
    }
}

/// The recipient's notifications from `since_ms` on, as they arrive, each once; reads the
/// store when hinted and every `poll`.
pub fn stream(
    store: Store,
    tenant: String,
    user: String,
    since_ms: i64,
    poll: Duration,
) -> impl Stream<Item = Item> + Send {
    let bell = subscribe(&key(&tenant, &user));
    async_stream::stream! {
        let mut cursor = since_ms;
        let mut sent: HashMap<String, i64> = HashMap::new();
        loop {
            // Every page of the window (a burst, or a resume from long ago, is read whole
            // before the cursor moves on).
            let from = cursor - LATE_COMMIT_MS;
            let mut after = String::new();
            let mut complete = true;
            loop {
                match inbox::since(&store, &tenant, &user, from, &after).await {
                    Ok(items) => {
                        let full = items.len() == inbox::SINCE_PAGE;
                        for item in items {
                            after = item.id.clone();
                            if item.created_at < since_ms || sent.contains_key(&item.id) {
                                continue;
                            }
                            cursor = cursor.max(item.created_at);
                            sent.insert(item.id.clone(), item.created_at);
                            yield item;
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "notification stream: read failed");
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                cursor = cursor.max(now_ms() - LATE_COMMIT_MS);
                sent.retain(|_, at| *at >= cursor - 2 * LATE_COMMIT_MS);
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = bell.notified() => {}
            }
        }
    }
}
