//! A generic HTTP collector in Segment's batch shape (`POST /v1/batch`, the write key as
//! Basic auth's user): Segment itself, RudderStack, or any service that takes it.

use serde_json::{Value, json};

use super::{Event, Sink, SinkError};

pub struct Collector {
    url: String,
    write_key: String,
    http: reqwest::Client,
}

impl Collector {
    pub fn new(url: &str, write_key: String, http: reqwest::Client) -> Self {
        Self {
            url: url.to_string(),
            write_key,
            http,
        }
    }
}

#[async_trait::async_trait]
impl Sink for Collector {
    async fn send(&self, events: &[Event]) -> Result<(), SinkError> {
        let batch: Vec<Value> = events
            .iter()
            .map(|e| {
                let mut m = json!({
                    "type": "track",
                    "event": e.name,
                    "properties": e.properties,
                    "timestamp": e.timestamp(),
                    "messageId": e.uuid,
                });
                let who = if e.anonymous { "anonymousId" } else { "userId" };
                m[who] = json!(e.distinct_id);
                m
            })
            .collect();
        post(
            &self.http,
            &self.url,
            Some(&self.write_key),
            &json!({"batch": batch}),
        )
        .await
    }
}

/// POSTs a JSON batch: 2xx taken; 429 and 5xx (and no answer) worth a retry; any other 4xx
/// refused for good.
pub(super) async fn post(
    http: &reqwest::Client,
    url: &str,
    basic_user: Option<&str>,
    body: &Value,
) -> Result<(), SinkError> {
    let mut req = http.post(url).json(body);
    if let Some(user) = basic_user {
        req = req.basic_auth(user, Some(""));
    }
    let response = req
        .send()
        .await
        .map_err(|e| SinkError::Retry(e.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.as_u16() == 429 || status.is_server_error() {
        Err(SinkError::Retry(format!("{url} answered {status}")))
    } else {
        Err(SinkError::Rejected(format!("{url} answered {status}")))
    }
}
