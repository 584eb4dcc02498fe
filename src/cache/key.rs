//! What makes two chat requests "the same": the exact key (every output-changing byte of the
//! request), the parameter fingerprint (everything but the last user message) and the
//! conversation key (the text the semantic cache embeds).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::types::{ChatCompletionRequest, ChatMessage, Role};

/// Request fields that never change the answer, so they are left out of every key.
const IGNORED_FIELDS: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls_hint",
];

/// The keys of one cacheable request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKeys {
    /// SHA-256 (hex) of tenant + fingerprint + the last user message, whitespace-normalised.
    pub exact: String,
    /// SHA-256 (hex) of model, output-changing parameters and every message before the last
    /// user message (system prompt, earlier turns). Semantic hits require it to be equal.
    pub fingerprint: String,
    /// The last user message, whitespace-normalised: what the semantic cache embeds.
    pub query: String,
}

/// Why a request is not cached at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCacheable {
    /// The last message is not the user's (a tool result, an assistant prefill).
    NoTrailingUserMessage,
    /// `n` > 1 asks for several different samples.
    SeveralChoices,
    /// Non-text content (images, audio) is not part of the key.
    NonTextContent,
}

impl NotCacheable {
    pub fn as_str(self) -> &'static str {
        match self {
            NotCacheable::NoTrailingUserMessage => "no_trailing_user_message",
            NotCacheable::SeveralChoices => "n_gt_1",
            NotCacheable::NonTextContent => "non_text_content",
        }
    }
}

/// Collapses runs of whitespace and trims: "How  do I\n\tsort?" and "How do I sort?" are one
/// request. Case and punctuation are kept: they can change the answer.
pub fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// JSON with object keys sorted at every level, so equal values always hash equal whatever
/// the client's key order.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // serde_json may preserve insertion order (a dependency can enable `preserve_order`):
    // writing by hand in sorted order is correct either way.
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(&sorted(value), &mut out);
    out
}

fn message_value(m: &ChatMessage) -> Value {
    let mut extra = m.extra.clone();
    extra.insert(
        "role".into(),
        serde_json::to_value(m.role).unwrap_or(Value::Null),
    );
    extra.insert("content".into(), Value::String(normalise(&m.text())));
    Value::Object(extra)
}

fn has_non_text(m: &ChatMessage) -> bool {
    match &m.content {
        Some(crate::types::MessageContent::Parts(parts)) => parts.iter().any(|p| p.kind != "text"),
        _ => false,
    }
}

/// SHA-256 (hex) of length-prefixed parts.
pub(crate) fn sha256_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixed so ("ab","c") and ("a","bc") differ.
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The keys for `request` from `tenant`, or why it is not cacheable.
pub fn cache_keys(
    tenant: &str,
    request: &ChatCompletionRequest,
) -> Result<CacheKeys, NotCacheable> {
    let Some(last) = request.messages.last() else {
        return Err(NotCacheable::NoTrailingUserMessage);
    };
    if last.role != Role::User {
        return Err(NotCacheable::NoTrailingUserMessage);
    }
    if request.n.is_some_and(|n| n > 1) {
        return Err(NotCacheable::SeveralChoices);
    }
    if request.messages.iter().any(has_non_text) {
        return Err(NotCacheable::NonTextContent);
    }
    let mut params = Map::new();
    params.insert("model".into(), Value::String(request.model.clone()));
    let opt_f = |v: Option<f64>| v.map(Value::from).unwrap_or(Value::Null);
    params.insert("temperature".into(), opt_f(request.temperature));
    params.insert("top_p".into(), opt_f(request.top_p));
    // max_tokens and max_completion_tokens are one limit under two names.
    let max = request.max_completion_tokens.or(request.max_tokens);
    params.insert(
        "max_tokens".into(),
        max.map(Value::from).unwrap_or(Value::Null),
    );
    params.insert(
        "stop".into(),
        request
            .stop
            .as_ref()
            .map(|s| Value::from(s.as_vec()))
            .unwrap_or(Value::Null),
    );
    params.insert(
        "seed".into(),
        request.seed.map(Value::from).unwrap_or(Value::Null),
    );
    for (k, v) in &request.extra {
        if !IGNORED_FIELDS.contains(&k.as_str()) {
            params.insert(format!("x.{k}"), v.clone());
        }
    }
    let earlier: Vec<Value> = request.messages[..request.messages.len() - 1]
        .iter()
        .map(message_value)
        .collect();
    params.insert("earlier_messages".into(), Value::Array(earlier));
    // The last message's own extras (a `name`, say) are part of the context too.
    let mut last_extra = last.extra.clone();
    last_extra.insert("role".into(), Value::String("user".into()));
    params.insert("last_message_fields".into(), Value::Object(last_extra));
    let fingerprint = sha256_hex(&[&canonical_json(&Value::Object(params))]);
    let query = normalise(&last.text());
    let exact = sha256_hex(&[tenant, &fingerprint, &query]);
    Ok(CacheKeys {
        exact,
        fingerprint,
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> ChatCompletionRequest {
        serde_json::from_str(body).unwrap()
    }

    fn keys(tenant: &str, body: &str) -> CacheKeys {
        cache_keys(tenant, &req(body)).unwrap()
    }

    #[test]
    fn whitespace_and_key_order_do_not_matter() {
        let a = keys(
            "t",
            r#"{"model":"m","messages":[{"role":"user","content":"How  do I\n sort?"}],"response_format":{"type":"json_object","x":1}}"#,
        );
        let b = keys(
            "t",
            r#"{"response_format":{"x":1,"type":"json_object"},"messages":[{"content":" How do I sort? ","role":"user"}],"model":"m","stream":true,"user":"u1"}"#,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn every_output_changing_field_changes_the_keys() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let k0 = keys("t", base);
        let variants = [
            r#"{"model":"m2","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"x"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi","name":"bob"}]}"#,
        ];
        for v in variants {
            let k = keys("t", v);
            assert_ne!(k.fingerprint, k0.fingerprint, "{v}");
            assert_ne!(k.exact, k0.exact, "{v}");
            assert_eq!(k.query, "hi");
        }
        // Same request, another tenant: another exact key, same fingerprint.
        let other = keys("u", base);
        assert_ne!(other.exact, k0.exact);
        assert_eq!(other.fingerprint, k0.fingerprint);
        // max_completion_tokens is max_tokens under its new name.
        assert_eq!(
            keys(
                "t",
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#
            ),
            keys(
                "t",
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":5}"#
            )
        );
    }

    #[test]
    fn a_follow_up_is_keyed_by_its_conversation() {
        let a = keys(
            "t",
            r#"{"model":"m","messages":[{"role":"user","content":"largest city in France?"},{"role":"assistant","content":"Paris"},{"role":"user","content":"and the second largest?"}]}"#,
        );
        let b = keys(
            "t",
            r#"{"model":"m","messages":[{"role":"user","content":"largest city in Spain?"},{"role":"assistant","content":"Madrid"},{"role":"user","content":"and the second largest?"}]}"#,
        );
        assert_eq!(a.query, b.query);
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn what_is_not_cacheable() {
        let r = |b| cache_keys("t", &req(b));
        assert_eq!(
            r(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}"#),
            Err(NotCacheable::SeveralChoices)
        );
        assert_eq!(
            r(
                r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"x"}]}"#
            ),
            Err(NotCacheable::NoTrailingUserMessage)
        );
        assert_eq!(
            r(
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#
            ),
            Err(NotCacheable::NonTextContent)
        );
    }
}
