//! Counting a request's input tokens before it is answered (the Messages API's
//! `count_tokens`): the upstream's own count where its provider can give one, otherwise an
//! estimate with OpenAI's `cl100k_base` encoding over the text the model would read.

use serde_json::Value;

use super::{ChatError, Pipeline};
use crate::embed::TokenEncoding;
use crate::types::{ChatCompletionRequest, MessageContent};

/// Tokens a chat template adds around each message (role markers), as OpenAI counts them.
const PER_MESSAGE: usize = 3;

impl Pipeline {
    /// The input tokens of `request` for its model (an alias is estimated).
    pub async fn count_tokens(&self, request: &ChatCompletionRequest) -> Result<u64, ChatError> {
        let live = self.live.load();
        match self.models.get(&request.model) {
            Some(route) => {
                let mut upstream = request.clone();
                upstream.model = route.upstream_model.clone();
                match route.provider.count_tokens(&upstream).await {
                    Some(counted) => counted.map_err(ChatError::Upstream),
                    None => Ok(estimate(request)),
                }
            }
            None if live.is_alias(&request.model) => Ok(estimate(request)),
            None => Err(ChatError::ModelNotFound(request.model.clone())),
        }
    }
}

/// The estimate: every message's text and every tool's definition, in `cl100k_base`.
pub fn estimate(request: &ChatCompletionRequest) -> u64 {
    let enc = TokenEncoding::Cl100kBase;
    let mut n = 0;
    for m in &request.messages {
        n += PER_MESSAGE;
        match &m.content {
            Some(MessageContent::Text(t)) => n += enc.count(t),
            Some(MessageContent::Parts(parts)) => {
                for p in parts {
                    n += p.text.as_deref().map_or(0, |t| enc.count(t));
                }
            }
            None => {}
        }
        if let Some(calls) = m.extra.get("tool_calls") {
            n += enc.count(&calls.to_string());
        }
    }
    if let Some(tools) = request.extra.get("tools").filter(|t| !t.is_null()) {
        n += enc.count(&tools.to_string());
    }
    if let Some(Value::String(s)) = request.extra.get("tool_choice") {
        n += enc.count(s);
    }
    n as u64 + PER_MESSAGE as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_counts_text_and_tools() {
        let r: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "Hello world"}]}))
        .unwrap();
        // "Hello world" is 2 tokens in cl100k_base; 3 per message and 3 for the reply.
        assert_eq!(estimate(&r), 8);
        let with_tools: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "Hello world"}],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}]}))
        .unwrap();
        assert!(estimate(&with_tools) > 8);
    }
}
