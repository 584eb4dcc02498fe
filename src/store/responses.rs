//! Stored Responses API responses: saved once a response has finished, read back (by
//! `GET /v1/responses/{id}` and `previous_response_id`) and deleted, always within one
//! tenant. JSON columns are text, the same in both dialects.

use serde_json::Value;

use super::{Store, StoreError, now_ms, on_pool};

/// One stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// The `response` object as it was returned.
    pub response: Value,
    /// The request's input items, with their ids.
    pub input_items: Vec<Value>,
    /// The conversation up to and including this response, as chat messages.
    pub history: Vec<Value>,
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
        let response = stored.response.to_string();
        let items = Value::Array(stored.input_items.clone()).to_string();
        let history = Value::Array(stored.history.clone()).to_string();
        let now = now_ms();
        let by_id: Vec<(&str, String)> = stored
            .input_items
            .iter()
            .chain(output)
            .filter_map(|i| Some((i.get("id")?.as_str()?, i.to_string())))
            .collect();
        let result: Result<(), sqlx::Error> = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO responses (id, tenant_id, created_at, response, input_items, history) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(id).bind(tenant).bind(now).bind(&response).bind(&items).bind(&history)
                .execute(&mut *tx).await?;
            for (item_id, item) in &by_id {
                sqlx::query(
                    "INSERT INTO response_items (tenant_id, id, response_id, created_at, item) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, id) DO NOTHING")
                    .bind(tenant).bind(item_id).bind(id).bind(now).bind(item)
                    .execute(&mut *tx).await?;
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
        let row: Option<(String, String, String)> = on_pool!(self, p => sqlx::query_as(
            "SELECT response, input_items, history FROM responses WHERE id = $1 AND tenant_id = $2")
            .bind(id).bind(tenant).fetch_optional(p).await)?;
        let Some((response, items, history)) = row else {
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
