//! The three providers' wire formats.

use serde_json::{Value, json};

use super::{Email, EmailProvider, SendError, Stream, classify};

/// Makes a provider call: on a 2xx its headers and body, otherwise the answer classified
/// (no answer at all is worth a retry).
async fn call(req: reqwest::RequestBuilder) -> Result<(http::HeaderMap, String), SendError> {
    let r = req.send().await.map_err(|e| SendError::Retry {
        message: e.without_url().to_string(),
        retry_after_secs: None,
    })?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    if (200..300).contains(&status) {
        Ok((headers, text))
    } else {
        let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok());
        Err(classify(status, retry_after, &text))
    }
}

/// A call whose answer is JSON.
async fn post(req: reqwest::RequestBuilder) -> Result<Value, SendError> {
    let (_, text) = call(req).await?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `Name <a@b.c>` as (`Name`, `a@b.c`); a bare address as (None, it).
pub(crate) fn split_address(from: &str) -> (Option<&str>, &str) {
    match (from.find('<'), from.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            let name = from[..open].trim().trim_matches('"').trim();
            (
                (!name.is_empty()).then_some(name),
                from[open + 1..close].trim(),
            )
        }
        _ => (None, from.trim()),
    }
}

/// Resend (`POST /emails`).
pub struct Resend {
    pub base: String,
    pub api_key: String,
    pub http: reqwest::Client,
}

#[async_trait::async_trait]
impl EmailProvider for Resend {
    fn name(&self) -> &'static str {
        "resend"
    }

    async fn send(&self, email: &Email) -> Result<String, SendError> {
        let body = json!({"from": email.from, "to": [email.to], "subject": email.subject,
                          "html": email.html, "text": email.text,
                          "tags": [{"name": "outbox_id", "value": email.id}]});
        let v = post(
            self.http
                .post(format!("{}/emails", self.base.trim_end_matches('/')))
                .bearer_auth(&self.api_key)
                .header("Idempotency-Key", &email.id)
                .json(&body),
        )
        .await?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }
}

/// Postmark (`POST /email`), a message stream per kind.
pub struct Postmark {
    pub base: String,
    pub server_token: String,
    pub transactional_stream: String,
    pub broadcast_stream: String,
    pub http: reqwest::Client,
}

#[async_trait::async_trait]
impl EmailProvider for Postmark {
    fn name(&self) -> &'static str {
        "postmark"
    }

    async fn find_sent(&self, email_id: &str) -> Result<Option<String>, SendError> {
        self.search(email_id).await
    }

    async fn send(&self, email: &Email) -> Result<String, SendError> {
        let stream = match email.stream {
            Stream::Transactional => &self.transactional_stream,
            Stream::Broadcast => &self.broadcast_stream,
        };
        let body = json!({"From": email.from, "To": email.to, "Subject": email.subject,
                          "HtmlBody": email.html, "TextBody": email.text, "MessageStream": stream,
                          "Metadata": {"outbox_id": email.id}});
        let v = post(
            self.http
                .post(format!("{}/email", self.base.trim_end_matches('/')))
                .header("X-Postmark-Server-Token", &self.server_token)
                .header("Accept", "application/json")
                .json(&body),
        )
        .await?;
        // Postmark refuses with 422 and an `ErrorCode` (e.g. 406: inactive recipient),
        // classified above; a 200 that carries a non-zero `ErrorCode` is a refusal too.
        match v["ErrorCode"].as_i64() {
            Some(0) | None => Ok(v["MessageID"].as_str().unwrap_or_default().to_string()),
            Some(code) => Err(SendError::Rejected(format!(
                "Postmark error {code}: {}",
                v["Message"].as_str().unwrap_or("")
            ))),
        }
    }
}

impl Postmark {
    /// `GET /messages/outbound?metadata_outbox_id=ID`: the message an earlier attempt sent.
    pub async fn search(&self, email_id: &str) -> Result<Option<String>, SendError> {
        let v = post(
            self.http
                .get(format!(
                    "{}/messages/outbound",
                    self.base.trim_end_matches('/')
                ))
                .query(&[
                    ("count", "1"),
                    ("offset", "0"),
                    ("metadata_outbox_id", email_id),
                ])
                .header("X-Postmark-Server-Token", &self.server_token)
                .header("Accept", "application/json"),
        )
        .await?;
        Ok(v["Messages"][0]["MessageID"].as_str().map(str::to_string))
    }
}

/// SendGrid (`POST /v3/mail/send`).
pub struct SendGrid {
    pub base: String,
    pub api_key: String,
    pub http: reqwest::Client,
}

#[async_trait::async_trait]
impl EmailProvider for SendGrid {
    fn name(&self) -> &'static str {
        "sendgrid"
    }

    async fn send(&self, email: &Email) -> Result<String, SendError> {
        let (name, address) = split_address(&email.from);
        let mut from = json!({"email": address});
        if let Some(name) = name {
            from["name"] = json!(name);
        }
        let body = json!({
            "personalizations": [{"to": [{"email": email.to}], "custom_args": {"outbox_id": email.id}}],
            "from": from,
            "subject": email.subject,
            "content": [{"type": "text/plain", "value": email.text}, {"type": "text/html", "value": email.html}],
        });
        let (headers, _) = call(
            self.http
                .post(format!("{}/v3/mail/send", self.base.trim_end_matches('/')))
                .bearer_auth(&self.api_key)
                .json(&body),
        )
        .await?;
        // 202 with the message id in a header, no body.
        Ok(headers
            .get("x-message-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::split_address;

    #[test]
    fn statuses_are_retried_or_refused() {
        assert!(matches!(
            classify(429, Some("7"), ""),
            SendError::Retry {
                retry_after_secs: Some(7),
                ..
            }
        ));
        assert!(matches!(
            classify(503, None, ""),
            SendError::Retry {
                retry_after_secs: None,
                ..
            }
        ));
        assert!(matches!(
            classify(422, None, "bad address"),
            SendError::Rejected(_)
        ));
        // Resend: the same idempotency key while the first request is still running.
        assert!(matches!(classify(409, None, ""), SendError::Retry { .. }));
        assert_eq!(
            split_address("\"Acme Billing\" <billing@acme.dev>"),
            (Some("Acme Billing"), "billing@acme.dev")
        );
        assert_eq!(split_address("a@b.io"), (None, "a@b.io"));
    }
}
