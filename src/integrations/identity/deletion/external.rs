//! The deletion's steps in external systems: the Stripe customer, the analytics provider's
//! person (PostHog), the email provider's contact (Resend). Each is skipped when the system
//! is not configured; a 404 from Stripe or Resend counts as already deleted.

use serde_json::{Value, json};

use super::{DeletionJob, Outcome};

impl DeletionJob {
    /// Deletes the Stripe customers whose `metadata['user_id']` is the user.
    pub(super) async fn stripe(&self, user: &str) -> Outcome {
        let (Some((base, key)), true) = (&self.stripe_api, self.config.stripe) else {
            return Ok(None);
        };
        let query = format!("metadata['user_id']:'{}'", user.replace('\'', "\\'"));
        let r = self
            .http
            .get(format!("{base}/v1/customers/search"))
            .bearer_auth(key)
            .query(&[("query", query.as_str())])
            .send()
            .await
            .map_err(|x| format!("Stripe: {x}"))?;
        let found: Value = checked(r, "Stripe search").await?;
        let ids: Vec<String> = found["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect();
        for id in &ids {
            let r = self
                .http
                .delete(format!("{base}/v1/customers/{id}"))
                .bearer_auth(key)
                .send()
                .await
                .map_err(|x| format!("Stripe: {x}"))?;
            // Already gone counts as deleted.
            if r.status() != 404 {
                checked(r, "Stripe delete").await?;
            }
        }
        Ok(Some(format!("{} customers", ids.len())))
    }

    /// Deletes the PostHog person (and its events) whose distinct id is the user.
    pub(super) async fn posthog(&self, user: &str) -> Outcome {
        let c = &self.config;
        let (Some(url), Some(project), Some(var)) =
            (&c.posthog_url, &c.posthog_project_id, &c.posthog_key_env)
        else {
            return Ok(None);
        };
        let key = std::env::var(var).map_err(|_| format!("{var} is not set"))?;
        let r = self
            .http
            .post(format!(
                "{}/api/projects/{project}/persons/bulk_delete/",
                url.trim_end_matches('/')
            ))
            .bearer_auth(key)
            .json(&json!({"distinct_ids": [user], "delete_events": true}))
            .send()
            .await
            .map_err(|x| format!("PostHog: {x}"))?;
        checked(r, "PostHog").await?;
        Ok(Some("person deleted".into()))
    }

    /// Removes the user's contact from the Resend audience.
    pub(super) async fn resend(&self, email: Option<&str>) -> Outcome {
        let c = &self.config;
        let (Some(url), Some(audience), Some(var)) =
            (&c.resend_url, &c.resend_audience_id, &c.resend_key_env)
        else {
            return Ok(None);
        };
        let Some(email) = email else {
            return Ok(Some("no email known".into()));
        };
        let key = std::env::var(var).map_err(|_| format!("{var} is not set"))?;
        let r = self
            .http
            .delete(format!(
                "{}/audiences/{audience}/contacts/{email}",
                url.trim_end_matches('/')
            ))
            .bearer_auth(key)
            .send()
            .await
            .map_err(|x| format!("Resend: {x}"))?;
        if r.status() != 404 {
            checked(r, "Resend").await?;
        }
        Ok(Some("contact removed".into()))
    }
}

/// A successful answer's JSON, or the failure as a step's detail.
async fn checked(r: reqwest::Response, what: &str) -> Result<Value, String> {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        let short: String = text.chars().take(200).collect();
        return Err(format!("{what} answered {status}: {short}"));
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}
