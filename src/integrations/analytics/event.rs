//! One analytics event: a closed request as PostHog's `$ai_generation`.

use serde_json::{Map, Value, json};

use crate::store::RequestLogRecord;
use crate::usage::TapContext;

/// An event, provider-neutral: PostHog's property names (`$ai_*`), which the HTTP collector
/// sink passes on as they are.
#[derive(Debug, Clone)]
pub struct Event {
    pub uuid: String,
    pub name: &'static str,
    pub timestamp_ms: i64,
    /// The end user; for a request without one (or an anonymous event), a stand-in.
    pub distinct_id: String,
    /// No person behind it (an anonymous event, or the tenant's own request).
    pub anonymous: bool,
    pub properties: Map<String, Value>,
}

impl Event {
    /// The generation event of a closed request. `anonymous`: without the user, the
    /// request's ids, the key or any content.
    pub fn generation(r: &RequestLogRecord, context: TapContext, anonymous: bool) -> Self {
        let cache = match r.route_reason {
            Some("cache_exact") => "exact",
            Some("cache_semantic") => "semantic",
            _ => "miss",
        };
        let mut p = Map::new();
        let mut put = |k: &str, v: Value| {
            p.insert(k.to_string(), v);
        };
        put("$ai_model", json!(r.model));
        put("$ai_provider", json!(r.provider));
        put("$ai_input_tokens", json!(r.tokens_in));
        put("$ai_output_tokens", json!(r.tokens_out));
        put("$ai_latency", json!(r.latency_ms / 1e3));
        if let Some(t) = r.ttft_ms {
            put("$ai_time_to_first_token", json!(t / 1e3));
        }
        put("$ai_total_cost_usd", json!(r.cost_usd));
        put("$ai_http_status", json!(r.http_status));
        put(
            "$ai_is_error",
            json!(r.status == "error" || r.http_status >= 400),
        );
        if let Some(e) = &r.error_code {
            put("$ai_error", json!(e));
        }
        put("$ai_stream", json!(r.stream));
        put("qm_cache", json!(cache));
        put("qm_saved_usd", json!(r.saved_usd));
        put("qm_route_tier", json!(r.route_tier));
        put("qm_route_reason", json!(r.route_reason));
        put("qm_status", json!(r.status));
        put("qm_tenant", json!(r.tenant_id));
        let distinct_id = if anonymous {
            put("$process_person_profile", json!(false));
            "anonymous".to_string()
        } else {
            put("$ai_trace_id", json!(r.request_id));
            put("qm_request_id", json!(r.request_id));
            put("qm_key", json!(r.key_id));
            if let Some(input) = context.input {
                put("$ai_input", input);
            }
            if let Some(output) = context.output {
                put(
                    "$ai_output_choices",
                    json!([{"role": "assistant", "content": output}]),
                );
            }
            match &r.user_id {
                Some(u) => u.clone(),
                None => {
                    put("$process_person_profile", json!(false));
                    format!("tenant:{}", r.tenant_id.as_deref().unwrap_or("unknown"))
                }
            }
        };
        Event {
            uuid: uuid::Uuid::now_v7().to_string(),
            name: "$ai_generation",
            timestamp_ms: r.created_at,
            anonymous: anonymous || r.user_id.is_none(),
            distinct_id,
            properties: p,
        }
    }

    /// RFC 3339 (PostHog and Segment both take it).
    pub fn timestamp(&self) -> String {
        let secs = crate::clock::rfc3339(self.timestamp_ms.div_euclid(1000));
        format!(
            "{}.{:03}Z",
            secs.trim_end_matches('Z'),
            self.timestamp_ms.rem_euclid(1000)
        )
    }
}
