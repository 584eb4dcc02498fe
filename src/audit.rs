//! The audit log: every security-relevant action (admin API calls that change state, keys
//! created and revoked, failed authentications (at most one row per address a minute, with
//! the count), user deletions and their steps, config reloads) appended to `audit_log`.
//! Rows are never updated or deleted: the application has no statement that would, and the
//! database refuses (triggers). Each row carries the SHA-256 of the previous row's hash and
//! its own fields, so `quartermaster audit verify` detects an edited, removed or inserted
//! row. With `[audit] forward_url` every row is also sent to a SIEM's HTTP intake by a job
//! (retried, dead-lettered), off the request's path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::clock::now_ms;
use crate::store::{Pool, Store, StoreError, on_pool};

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The job that forwards a row to the SIEM.
pub const JOB_FORWARD: &str = "audit.forward";

/// `[audit]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A SIEM's HTTP intake: every row is POSTed to it as JSON, by a job.
    pub forward_url: Option<String>,
    /// The environment variable holding its bearer token.
    pub forward_token_env: Option<String>,
}

/// Sends one row to the SIEM (`[audit] forward_url`).
pub struct ForwardJob {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
}

#[async_trait::async_trait]
impl crate::jobs::JobHandler for ForwardJob {
    async fn run(&self, job: &crate::jobs::JobRow) -> Result<(), crate::jobs::JobError> {
        let row: Row = job.parse_payload()?;
        let mut req = self.http.post(&self.url).json(&row);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let r = req
            .send()
            .await
            .map_err(|e| crate::jobs::JobError::Retry(format!("SIEM: {e}")))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(crate::jobs::JobError::Retry(format!(
                "SIEM answered {}",
                r.status()
            )))
        }
    }
}

/// Appends the event `$e` (`&Event`) to the audit log `$audit` (`&AuditLog`) inside the
/// caller's transaction `$tx` (a `sqlx::Transaction` variable), chained to the last row, and
/// queues its SIEM forward in the same transaction: the action and its row commit together.
/// On PostgreSQL it takes the audit lock first; on SQLite the transaction must hold the write
/// lock already (`BEGIN IMMEDIATE`, or a write before). Evaluates to
/// `Result<Row, sqlx::Error>`; after the commit, call [`AuditLog::appended`].
#[macro_export]
macro_rules! audit_in_tx {
    ($audit:expr, $tx:ident, $e:expr) => {{
        let audit: &$crate::audit::AuditLog = $audit;
        let e: &$crate::audit::Event = $e;
        let conn = &mut *$tx;
        async move {
            if audit.on_postgres() {
                sqlx::query("SELECT pg_advisory_xact_lock(7310501)")
                    .execute(&mut *conn)
                    .await?;
            }
            let last: Option<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *conn)
                    .await?;
            let (seq, prev) = match last {
                Some((s, h)) => (s + 1, h),
                None => (1, $crate::audit::GENESIS.to_string()),
            };
            let at = $crate::clock::now_ms();
            let hash = $crate::audit::row_hash(&prev, seq, at, e);
            sqlx::query(
                "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(seq)
            .bind(at)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.target)
            .bind(e.detail.to_string())
            .bind(&prev)
            .bind(&hash)
            .execute(&mut *conn)
            .await?;
            let row = $crate::audit::Row {
                seq,
                at,
                actor: e.actor.clone(),
                action: e.action.clone(),
                target: e.target.clone(),
                detail: e.detail.clone(),
                prev_hash: prev,
                hash,
            };
            if let Some(attempts) = audit.forward_attempts() {
                let job = $crate::jobs::NewJob::new($crate::audit::JOB_FORWARD, &row);
                $crate::jobs::enqueue_job!(&mut *conn, &job, attempts)?;
            }
            Ok::<_, sqlx::Error>(row)
        }
        .await
    }};
}
pub use audit_in_tx;

/// One action, before it is appended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Who: `admin`, `operator:USER`, `key:ID`, `user:ID`, `address:IP`, `system`.
    pub actor: String,
    /// What: `key.create`, `key.revoke`, `auth.failed`, `cache.invalidate`, `job.redrive`,
    /// `user.delete`, `config.reload`, ...
    pub action: String,
    pub target: Option<String>,
    #[serde(default)]
    pub detail: Value,
}

impl Event {
    pub fn new(
        actor: impl Into<String>,
        action: &str,
        target: Option<String>,
        detail: Value,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.to_string(),
            target,
            detail,
        }
    }
}

/// A row as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of a row: SHA-256 over the previous hash and each field, length-prefixed (so no
/// two different rows hash alike by moving text between fields).
pub fn row_hash(prev: &str, seq: i64, at: i64, e: &Event) -> String {
    let detail = e.detail.to_string();
    let target = e.target.as_deref().unwrap_or("");
    let mut h = Sha256::new();
    for part in [
        prev.as_bytes(),
        seq.to_string().as_bytes(),
        at.to_string().as_bytes(),
        e.actor.as_bytes(),
        e.action.as_bytes(),
        target.as_bytes(),
        detail.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

type RowTuple = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
);

fn from_tuple(t: RowTuple) -> Row {
    let (seq, at, actor, action, target, detail, prev_hash, hash) = t;
    Row {
        seq,
        at,
        actor,
        action,
        target,
        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
        prev_hash,
        hash,
    }
}

/// Filters for reading the log.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Rows after this sequence number (paging oldest first).
    pub after: Option<i64>,
    /// Rows before this sequence number (paging newest first).
    pub before: Option<i64>,
    /// `asc` (default: oldest first) or `desc` (newest first).
    #[schemars(extend("enum" = ["asc", "desc"]))]
    pub order: Option<String>,
    pub limit: Option<i64>,
    /// `json` (default) or `jsonl`.
    #[schemars(extend("enum" = ["json", "jsonl"]))]
    pub format: Option<String>,
}

/// Appends to the log; remembers which addresses failed recently (for the rate limit).
pub struct AuditLog {
    store: Store,
    /// Address -> (minute, failures this minute).
    failures: Mutex<HashMap<IpAddr, (i64, u64)>>,
    /// Enqueues the SIEM forward of each row, when configured.
    forward: Option<crate::jobs::JobQueue>,
}

impl AuditLog {
    pub fn new(store: Store, forward: Option<crate::jobs::JobQueue>) -> Self {
        Self {
            store,
            failures: Mutex::new(HashMap::new()),
            forward,
        }
    }

    /// Appends one row, chained to the last; returns it.
    pub async fn append(&self, e: Event) -> Result<Row, StoreError> {
        // Two replicas (or tasks) appending at once: PostgreSQL serialises them with an
        // advisory lock; SQLite has one writer, and a lost race on the sequence is retried.
        for attempt in 0..5 {
            match self.try_append(&e).await {
                Ok(row) => {
                    self.appended();
                    return Ok(row);
                }
                Err(StoreError::Db(sqlx::Error::Database(db)))
                    if db.is_unique_violation() && attempt < 4 =>
                {
                    continue;
                }
                Err(err) => return Err(err),
            }
        }
        unreachable!("returns within the attempts")
    }

    /// Whether the store is PostgreSQL (then [`audit_in_tx!`] takes the audit lock).
    pub fn on_postgres(&self) -> bool {
        matches!(self.store.pool(), Pool::Postgres(_))
    }

    /// The attempts of the SIEM forward's job, when rows are forwarded.
    pub fn forward_attempts(&self) -> Option<i64> {
        self.forward.as_ref().map(|q| q.default_attempts())
    }

    /// After a transaction holding [`audit_in_tx!`] committed: wakes the forward's worker.
    pub fn appended(&self) {
        if let Some(q) = &self.forward {
            q.wake();
        }
    }

    async fn try_append(&self, e: &Event) -> Result<Row, StoreError> {
        // SQLite: the write lock from the start (a transaction that reads first and then
        // writes fails at once if another connection wrote in between).
        let begin = if self.on_postgres() {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        };
        let row: Result<Row, sqlx::Error> = on_pool!(&self.store, p => async {
            let mut tx = p.begin_with(sqlx::AssertSqlSafe(begin)).await?;
            let row = audit_in_tx!(self, tx, e)?;
            tx.commit().await?;
            Ok(row)
        }.await);
        Ok(self.store.observe(row.map_err(StoreError::from))?)
    }

    /// Appends and waits, so the row is written before the caller answers, but a failure is
    /// only logged: for actions already committed, where failing the caller would invite it
    /// to do the action again.
    pub async fn append_logged(&self, e: Event) {
        if let Err(err) = self.append(e).await {
            tracing::error!(error = %err, "audit row not written");
        }
    }

    /// Appends without waiting (and without failing the caller): for actions on the request
    /// path. A row that cannot be written is logged.
    pub fn record(self: &std::sync::Arc<Self>, e: Event) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(err) = this.append(e).await {
                tracing::error!(error = %err, "audit row not written");
            }
        });
    }

    /// A failed authentication from `address`: the first of each minute is written (with
    /// how many came the minute before from that address), the rest only counted.
    pub fn failed_auth(self: &std::sync::Arc<Self>, address: Option<IpAddr>, why: &str) {
        let minute = now_ms() / 60_000;
        let key = address.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let first = {
            let mut f = self.failures.lock().expect("audit failures lock");
            if f.len() > 100_000 {
                f.clear();
            }
            let entry = f.entry(key).or_insert((minute, 0));
            if entry.0 != minute {
                *entry = (minute, 0);
            }
            entry.1 += 1;
            entry.1 == 1
        };
        if first {
            self.record(Event::new(
                format!("address:{key}"),
                "auth.failed",
                None,
                serde_json::json!({"reason": why}),
            ));
        }
    }

    /// Rows matching `q`, oldest first.
    pub async fn read(&self, q: &Query) -> Result<Vec<Row>, StoreError> {
        let order = if q.order.as_deref() == Some("desc") {
            "DESC"
        } else {
            "ASC"
        };
        let sql = format!(
            "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log \
             WHERE seq > $1 AND seq < $7 AND at >= $2 AND at <= $3 AND ($4 = '' OR actor = $4) \
             AND ($5 = '' OR action = $5) ORDER BY seq {order} LIMIT $6"
        );
        let rows: Vec<RowTuple> = on_pool!(&self.store, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(q.after.unwrap_or(0)).bind(q.since_ms.unwrap_or(0)).bind(q.until_ms.unwrap_or(i64::MAX))
            .bind(q.actor.clone().unwrap_or_default()).bind(q.action.clone().unwrap_or_default())
            .bind(q.limit.unwrap_or(1000).clamp(1, 100_000))
            .bind(q.before.unwrap_or(i64::MAX))
            .fetch_all(p).await)?;
        Ok(rows.into_iter().map(from_tuple).collect())
    }
}

/// The chain checked from the first row: `Ok(rows)`, or the first row that does not hold.
pub async fn verify(store: &Store) -> Result<Result<u64, (i64, String)>, StoreError> {
    let mut prev = GENESIS.to_string();
    let mut expect_seq = 1;
    let mut after = 0i64;
    let mut n = 0u64;
    loop {
        let rows: Vec<RowTuple> = on_pool!(store, p => sqlx::query_as(
            "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT 5000")
            .bind(after).fetch_all(p).await)?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        for t in rows {
            let (seq, at, actor, action, target, detail, prev_hash, hash) = t;
            if seq != expect_seq {
                return Ok(Err((expect_seq, format!("row {expect_seq} is missing"))));
            }
            if prev_hash != prev {
                return Ok(Err((
                    seq,
                    "its previous hash is not the previous row's".into(),
                )));
            }
            let e = Event {
                actor,
                action,
                target,
                detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
            };
            if row_hash(&prev, seq, at, &e) != hash {
                return Ok(Err((seq, "its contents do not match its hash".into())));
            }
            prev = hash;
            expect_seq += 1;
            n += 1;
        }
    }
    Ok(Ok(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_cover_every_field() {
        let e = Event::new(
            "admin",
            "key.revoke",
            Some("key_1".into()),
            serde_json::json!({"a": 1}),
        );
        let h = row_hash(GENESIS, 1, 5, &e);
        assert_eq!(h.len(), 64);
        assert_ne!(h, row_hash(GENESIS, 2, 5, &e));
        assert_ne!(h, row_hash(GENESIS, 1, 6, &e));
        let moved = Event::new(
            "adminkey.revoke",
            "",
            Some("key_1".into()),
            serde_json::json!({"a": 1}),
        );
        assert_ne!(
            h,
            row_hash(GENESIS, 1, 5, &moved),
            "text moved between fields"
        );
    }

    /// Rows in `audit_log` and forward jobs queued.
    async fn counts(store: &Store) -> (i64, i64) {
        on_pool!(store, p => async {
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log").fetch_one(p).await?;
            let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE kind = $1")
                .bind(JOB_FORWARD).fetch_one(p).await?;
            Ok::<_, sqlx::Error>((rows, jobs))
        }.await)
        .unwrap()
    }

    /// The row and its forward commit with the caller's transaction, or not at all; the chain
    /// holds either way.
    #[tokio::test]
    async fn a_row_in_the_callers_transaction_commits_or_rolls_back_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let queue = crate::jobs::JobQueue::new(store.clone(), Default::default());
        let audit = AuditLog::new(store.clone(), Some(queue));
        audit
            .append(Event::new(
                "admin",
                "key.create",
                None,
                serde_json::json!({}),
            ))
            .await
            .unwrap();
        assert_eq!(counts(&store).await, (1, 1));
        let event = Event::new(
            "system",
            "user.delete.requested",
            None,
            serde_json::json!({}),
        );
        for commit in [false, true] {
            on_pool!(&store, p => async {
                let mut tx = p.begin_with(sqlx::AssertSqlSafe("BEGIN IMMEDIATE")).await?;
                let row = audit_in_tx!(&audit, tx, &event)?;
                assert_eq!(row.seq, 2);
                if commit {
                    tx.commit().await?;
                } else {
                    tx.rollback().await?;
                }
                Ok::<_, sqlx::Error>(())
            }.await)
            .unwrap();
            let expected = if commit { (2, 2) } else { (1, 1) };
            assert_eq!(counts(&store).await, expected, "commit: {commit}");
        }
        assert_eq!(verify(&store).await.unwrap(), Ok(2));
    }
}
