//! Pushing notifications to open streams (`GET /v1/notifications/stream`) as they are
//! written. Each open stream has a doorbell, rung when its recipient has something new; on
//! PostgreSQL a trigger announces every inserted notification on `LISTEN`/`NOTIFY` when its
//! transaction commits, so a notification written through any replica reaches streams open
//! on every other one at once. The store is the truth: a hint only makes a stream read it
//! (and each stream also reads on a timer, so a lost hint costs latency, never a
//! notification). A stream reads back 5 s each time for transactions that commit after
//! later ones; a notice whose transaction commits more than 5 s after it was made (or made
//! on a replica whose clock is that far behind) is in the list but not pushed.
//!
//! A recipient is in the hub while it has a stream open: the last of its streams to close
//! takes it out, so streams opened for any number of users leave nothing behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
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

/// The doorbell of one stream of a recipient, in the hub while it lives: dropped with the
/// stream, it takes itself out, and its recipient with the last one.
struct Subscription {
    key: String,
    bell: Arc<Notify>,
}

impl Subscription {
    fn new(key: String) -> Self {
        let bell = Arc::new(Notify::new());
        let mut hub = hub().lock().expect("notification hub");
        let bells = hub.entry(key.clone()).or_default();
        bells.retain(|b| b.strong_count() > 0);
        bells.push(Arc::downgrade(&bell));
        Self { key, bell }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Nothing panics while holding the lock, but a drop must not panic: a poisoned map
        // is still whole.
        let mut hub = hub().lock().unwrap_or_else(PoisonError::into_inner);
        let own = Arc::downgrade(&self.bell);
        // Looked up under the lock: a stream of the same recipient opened meanwhile keeps
        // the entry.
        if let Some(bells) = hub.get_mut(&self.key) {
            bells.retain(|b| b.strong_count() > 0 && !b.ptr_eq(&own));
            if bells.is_empty() {
                hub.remove(&self.key);
            }
        }
    }
}

/// Where a stream resumed from a client's `Last-Event-ID` starts: the id is a creation time,
/// but any number may arrive, so it is kept between the epoch and now (one from the future
/// would otherwise hold back everything until then).
fn resume_at(since_ms: i64) -> i64 {
    since_ms.clamp(0, now_ms().max(0))
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

/// The recipient's notifications from `since_ms` on (kept between the epoch and now), as
/// they arrive, each once; reads the store when hinted and every `poll`.
pub fn stream(
    store: Store,
    tenant: String,
    user: String,
    since_ms: i64,
    poll: Duration,
) -> impl Stream<Item = Item> + Send {
    let subscription = Subscription::new(key(&tenant, &user));
    let since_ms = resume_at(since_ms);
    async_stream::stream! {
        let mut cursor = since_ms;
        let mut sent: HashMap<String, i64> = HashMap::new();
        loop {
            // Every page of the window (a burst, or a resume from long ago, is read whole
            // before the cursor moves on).
            let from = cursor.saturating_sub(LATE_COMMIT_MS);
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
                cursor = cursor.max(now_ms().saturating_sub(LATE_COMMIT_MS));
                let keep_from = cursor.saturating_sub(2 * LATE_COMMIT_MS);
                sent.retain(|_, at| *at >= keep_from);
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = subscription.bell.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::time::timeout;

    use super::*;

    /// How long a test waits for what should come at once.
    const WAIT: Duration = Duration::from_secs(5);

    fn in_hub(key: &str) -> bool {
        hub().lock().unwrap().contains_key(key)
    }

    /// Writes a notification `id` for `user` of tenant `t1`, made at `created_at`.
    async fn notify(store: &Store, user: &str, id: &str, created_at: i64) {
        crate::store::on_pool!(store, p => sqlx::query(crate::notify::INSERT_NOTIFICATION_SQL)
            .bind(id).bind("t1").bind(user).bind("test").bind("normal").bind("subject")
            .bind("body").bind(id).bind(created_at).execute(p).await.map(|_| ()))
        .unwrap();
    }

    #[tokio::test]
    async fn the_last_stream_of_a_recipient_takes_it_out_of_the_hub() {
        let keys: Vec<String> = (0..1_000)
            .map(|i| key("live-hub-test", &format!("u{i}")))
            .collect();
        let subscriptions: Vec<Subscription> =
            keys.iter().cloned().map(Subscription::new).collect();
        assert!(keys.iter().all(|k| in_hub(k)));
        drop(subscriptions);
        assert!(!keys.iter().any(|k| in_hub(k)));
        // Two streams of one recipient: the one left open keeps it, and still hears a ring.
        let both = key("live-hub-test", "both");
        let first = Subscription::new(both.clone());
        let second = Subscription::new(both.clone());
        drop(first);
        assert!(in_hub(&both));
        ring(&both);
        timeout(WAIT, second.bell.notified()).await.unwrap();
        drop(second);
        assert!(!in_hub(&both));
    }

    #[test]
    fn a_resume_point_is_kept_between_the_epoch_and_now() {
        assert_eq!(resume_at(i64::MIN), 0);
        assert_eq!(resume_at(-1), 0);
        assert_eq!(resume_at(1_000), 1_000);
        let before = now_ms();
        let at = resume_at(i64::MAX);
        assert!(before <= at && at <= now_ms(), "{at}");
    }

    #[tokio::test]
    async fn streams_leave_the_hub_and_resume_from_any_last_event_id() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("n.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let poll = Duration::from_millis(20);
        // Streams opened for made-up users and dropped (clients gone) leave nothing behind.
        for i in 0..100 {
            let user = format!("gone{i}");
            let s = stream(
                store.clone(),
                "live-stream-test".into(),
                user.clone(),
                0,
                poll,
            );
            assert!(in_hub(&key("live-stream-test", &user)));
            drop(s);
            assert!(!in_hub(&key("live-stream-test", &user)));
        }
        // A Last-Event-ID before the epoch reads from the beginning (without overflowing).
        notify(&store, "old", "n_old", 1_000).await;
        let mut old = Box::pin(stream(
            store.clone(),
            "t1".into(),
            "old".into(),
            i64::MIN,
            poll,
        ));
        let item = timeout(WAIT, old.next()).await.unwrap().unwrap();
        assert_eq!(item.id, "n_old");
        // One at the end of time reads from now on, not never.
        let mut new = Box::pin(stream(
            store.clone(),
            "t1".into(),
            "new".into(),
            i64::MAX,
            poll,
        ));
        notify(&store, "new", "n_new", now_ms()).await;
        let item = timeout(WAIT, new.next()).await.unwrap().unwrap();
        assert_eq!(item.id, "n_new");
    }
}
