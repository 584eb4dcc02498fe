//! PostHog's batch capture API: `POST {host}/batch/` with the project key in the body.

use serde_json::{Value, json};

use super::{Event, Sink, SinkError};

pub struct PostHog {
    url: String,
    api_key: String,
    http: reqwest::Client,
}

impl PostHog {
    pub fn new(host: &str, api_key: String, http: reqwest::Client) -> Self {
        Self {
            url: format!("{}/batch/", host.trim_end_matches('/')),
            api_key,
            http,
        }
    }
}

#[async_trait::async_trait]
impl Sink for PostHog {
    async fn send(&self, events: &[Event]) -> Result<(), SinkError> {
        let batch: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({
                    "event": e.name,
                    "distinct_id": e.distinct_id,
                    "properties": e.properties,
                    "timestamp": e.timestamp(),
                    "uuid": e.uuid,
                })
            })
            .collect();
        let body = json!({"api_key": self.api_key, "historical_migration": false, "batch": batch});
        super::http::post(&self.http, &self.url, None, &body).await
    }
}
