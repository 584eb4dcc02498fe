//! Stored Responses API responses: saved once a response has finished, read back (by
//! `GET /v1/responses/{id}` and `previous_response_id`) and deleted, always within one
//! tenant. JSON columns are text, the same in both dialects.

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, on_pool};
use crate::clock::now_ms;

/// One stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// The `response` object as it was returned.
    pub response: Value,
    /// The request's input items, with their ids.
    pub input_items: Vec<Value>,
    /// The conversation up to and including this response, as chat messages.
    pub history: Vec<Value>,
    /// The end user it was made for (deleted with the user).
    pub user: Option<String>,
}

/// A response as it is written: serialized once, off the writer task.
struct ResponseRow {
    id: String,
    tenant: String,
    user: Option<String>,
    response: String,
    items: String,
    history: String,
    /// Every input and output item with an id, as JSON.
    by_id: Vec<(String, String)>,
}

impl ResponseRow {
    fn new(id: &str, tenant: &str, stored: &StoredResponse, output: &[Value]) -> Self {
        Self {
            id: id.to_string(),
            tenant: tenant.to_string(),
            user: stored.user.clone(),
            response: stored.response.to_string(),
            items: Value::Array(stored.input_items.clone()).to_string(),
            history: Value::Array(stored.history.clone()).to_string(),
            by_id: stored
                .input_items
                .iter()
                .chain(output)
                .filter_map(|i| Some((i.get("id")?.as_str()?.to_string(), i.to_string())))
                .collect(),
        }
    }
}

type Waiting = (ResponseRow, oneshot::Sender<Result<(), StoreError>>);

/// Stores responses as they finish, several in one transaction when they finish together
/// (a group commit: each caller still returns only once its own response is committed).
/// At 1,000 stored responses a second, one transaction each made every request wait its
/// turn for SQLite's write lock; now a transaction takes whatever queued while the last one
/// ran, with no added wait when requests are few.
#[derive(Clone)]
pub struct ResponseSaver {
    tx: mpsc::Sender<Waiting>,
}

/// Most responses in one transaction.
const GROUP_MAX: usize = 64;

impl ResponseSaver {
    pub fn spawn(store: Store) -> Self {
        let (tx, mut rx) = mpsc::channel::<Waiting>(1024);
        tokio::spawn(async move {
            let mut group: Vec<Waiting> = Vec::with_capacity(GROUP_MAX);
            while rx.recv_many(&mut group, GROUP_MAX).await > 0 {
                let (rows, waiters): (Vec<ResponseRow>, Vec<_>) = group.drain(..).unzip();
                match store.save_response_rows(&rows).await {
                    Ok(()) => {
                        for w in waiters {
                            let _ = w.send(Ok(()));
                        }
                    }
                    Err(e) if rows.len() == 1 => {
                        if let Some(w) = waiters.into_iter().next() {
                            let _ = w.send(Err(e));
                        }
                    }
                    // One bad row must not fail the others: each alone, with its own result.
                    Err(_) => {
                        for (row, w) in rows.iter().zip(waiters) {
                            let _ =
                                w.send(store.save_response_rows(std::slice::from_ref(row)).await);
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Stores one response; returns once it is committed.
    pub async fn save(
        &self,
        id: &str,
        tenant: &str,
        stored: &StoredResponse,
        output: &[Value],
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let row = ResponseRow::new(id, tenant, stored, output);
        self.tx
            .send((row, done))
            .await
            .map_err(|_| StoreError::Unavailable("the response writer has stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Unavailable("the response writer has stopped".into()))?
    }
}

fn parse(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Conflict(format!("a stored response is not JSON: {e}")))
}

impl Store {
    /// Stores a response with its items (each item once per tenant: a later request may
    /// repeat an earlier item's id), in one transaction.
    pub async fn save_response(
        &self,
        id: &str,
        tenant: &str,
        stored: &StoredResponse,
        output: &[Value],
    ) -> Result<(), StoreError> {
        let row = ResponseRow::new(id, tenant, stored, output);
        self.save_response_rows(std::slice::from_ref(&row)).await
    }

    /// Stores several responses in one transaction (the group commit of [`ResponseSaver`]).
    async fn save_response_rows(&self, rows: &[ResponseRow]) -> Result<(), StoreError> {
        let now = now_ms();
        let result: Result<(), sqlx::Error> = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            for r in rows {
                sqlx::query(
                    "INSERT INTO responses (id, tenant_id, created_at, response, input_items, history, user_id) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(&r.id).bind(&r.tenant).bind(now).bind(&r.response).bind(&r.items).bind(&r.history).bind(&r.user)
                    .execute(&mut *tx).await?;
                for (item_id, item) in &r.by_id {
                    sqlx::query(
                        "INSERT INTO response_items (tenant_id, id, response_id, created_at, item) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (tenant_id, id) DO NOTHING")
                        .bind(&r.tenant).bind(item_id).bind(&r.id).bind(now).bind(item)
                        .execute(&mut *tx).await?;
                }
            }
            tx.commit().await
        }.await);
        self.observe(result.map_err(StoreError::from))
    }

    /// The tenant's stored item with this id (an `item_reference`).
    pub async fn load_response_item(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Value>, StoreError> {
        let row: Option<String> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT item FROM response_items WHERE tenant_id = $1 AND id = $2")
            .bind(tenant).bind(id).fetch_optional(p).await)?;
        row.as_deref().map(parse).transpose()
    }

    /// The tenant's response with this id (another tenant's is `None`).
    pub async fn load_response(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let row: Option<(String, String, String, Option<String>)> = on_pool!(self, p => sqlx::query_as(
            "SELECT response, input_items, history, user_id FROM responses WHERE id = $1 AND tenant_id = $2")
            .bind(id).bind(tenant).fetch_optional(p).await)?;
        let Some((response, items, history, user)) = row else {
            return Ok(None);
        };
        let array = |t: &str| -> Result<Vec<Value>, StoreError> {
            match parse(t)? {
                Value::Array(v) => Ok(v),
                _ => Err(StoreError::Conflict(
                    "a stored response's list is not a list".into(),
                )),
            }
        };
        Ok(Some(StoredResponse {
            response: parse(&response)?,
            input_items: array(&items)?,
            history: array(&history)?,
            user,
        }))
    }

    /// Deletes the tenant's response and its items; false if it had none with this id.
    pub async fn delete_response(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let result: Result<u64, sqlx::Error> = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let n = sqlx::query("DELETE FROM responses WHERE id = $1 AND tenant_id = $2")
                .bind(id).bind(tenant).execute(&mut *tx).await?.rows_affected();
            sqlx::query("DELETE FROM response_items WHERE response_id = $1 AND tenant_id = $2")
                .bind(id).bind(tenant).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(n)
        }.await);
        Ok(self.observe(result.map_err(StoreError::from))? > 0)
    }

    /// Deletes a user's stored responses and their items (the user's deletion).
    pub async fn delete_user_responses(&self, tenant: &str, user: &str) -> Result<u64, StoreError> {
        let result: Result<u64, sqlx::Error> = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            sqlx::query("DELETE FROM response_items WHERE tenant_id = $1 AND response_id IN \
                         (SELECT id FROM responses WHERE tenant_id = $1 AND user_id = $2)")
                .bind(tenant).bind(user).execute(&mut *tx).await?;
            let n = sqlx::query("DELETE FROM responses WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant).bind(user).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(n)
        }.await);
        self.observe(result.map_err(StoreError::from))
    }

    /// Deletes responses (and their items) stored before `before_ms` (housekeeping).
    pub async fn purge_responses(&self, before_ms: i64) -> Result<u64, StoreError> {
        on_pool!(self, p => sqlx::query("DELETE FROM response_items WHERE created_at < $1")
            .bind(before_ms).execute(p).await.map(|_| ()))?;
        Ok(
            on_pool!(self, p => sqlx::query("DELETE FROM responses WHERE created_at < $1")
            .bind(before_ms).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Concurrent saves share transactions; each caller learns its own outcome: a response
    /// whose id is taken fails alone, the others of its group are committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_saver_commits_in_groups_and_fails_one_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(
            &format!("sqlite://{}", dir.path().join("g.db").display()),
            2,
        )
        .await
        .unwrap();
        let saver = ResponseSaver::spawn(store.clone());
        let stored = |i: usize| StoredResponse {
            response: json!({"id": format!("resp_{i}")}),
            input_items: vec![json!({"id": format!("msg_{i}"), "type": "message"})],
            history: vec![],
            user: None,
        };
        saver.save("resp_dup", "t1", &stored(0), &[]).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..60 {
            let saver = saver.clone();
            let id = if i == 30 {
                "resp_dup".to_string()
            } else {
                format!("resp_{i}")
            };
            let s = stored(i);
            tasks.push(tokio::spawn(
                async move { saver.save(&id, "t1", &s, &[]).await },
            ));
        }
        let results: Vec<_> = futures::future::join_all(tasks).await;
        for (i, r) in results.into_iter().enumerate() {
            let r = r.unwrap();
            assert_eq!(r.is_err(), i == 30, "response {i}: {r:?}");
        }
        for i in (0..60).filter(|i| *i != 30) {
            assert!(
                store
                    .load_response("t1", &format!("resp_{i}"))
                    .await
                    .unwrap()
                    .is_some(),
                "resp_{i} committed"
            );
        }
    }

    #[tokio::test]
    async fn responses_are_kept_per_tenant_and_purged_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(
            &format!("sqlite://{}", dir.path().join("r.db").display()),
            1,
        )
        .await
        .unwrap();
        let stored = StoredResponse {
            response: json!({"id": "resp_1", "object": "response"}),
            input_items: vec![json!({"id": "msg_1", "type": "message"})],
            history: vec![json!({"role": "user", "content": "hi"})],
            user: None,
        };
        let output = [json!({"id": "fc_1", "type": "function_call"})];
        store
            .save_response("resp_1", "t1", &stored, &output)
            .await
            .unwrap();
        assert_eq!(
            store.load_response_item("t1", "fc_1").await.unwrap(),
            Some(output[0].clone())
        );
        assert_eq!(
            store.load_response_item("t1", "msg_1").await.unwrap(),
            Some(stored.input_items[0].clone())
        );
        assert_eq!(store.load_response_item("t2", "fc_1").await.unwrap(), None);
        assert_eq!(
            store.load_response("t1", "resp_1").await.unwrap(),
            Some(stored.clone())
        );
        assert_eq!(store.load_response("t2", "resp_1").await.unwrap(), None);
        assert!(!store.delete_response("t2", "resp_1").await.unwrap());
        // Saved just now: a cut-off in the past keeps it, one in the future removes it.
        assert_eq!(store.purge_responses(now_ms() - 60_000).await.unwrap(), 0);
        assert_eq!(store.purge_responses(now_ms() + 60_000).await.unwrap(), 1);
        assert_eq!(store.load_response("t1", "resp_1").await.unwrap(), None);
        assert_eq!(store.load_response_item("t1", "fc_1").await.unwrap(), None);
        // A repeated item id (a later request sending an earlier item again) is kept once.
        store
            .save_response("resp_2", "t1", &stored, &output)
            .await
            .unwrap();
        store
            .save_response("resp_3", "t1", &stored, &output)
            .await
            .unwrap();
        assert!(store.delete_response("t1", "resp_3").await.unwrap());
        assert!(store.delete_response("t1", "resp_2").await.unwrap());
        assert!(!store.delete_response("t1", "resp_2").await.unwrap());
    }
}
