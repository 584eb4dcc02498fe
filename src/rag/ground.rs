//! Grounded chat: the prompt template (loaded at start), the retrieved chunks placed into
//! it as a system message, and the citations and cache tags that tie an answer to the
//! documents it drew on. Apart from retrieval because it shapes the chat request, not the
//! ranking.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::{GroundingConfig, Hit, Rag, RagError};
use crate::types::{ChatCompletionRequest, ChatMessage, MessageContent, Role};

/// The grounding template shipped with the gateway (used when the configured file is the
/// default one and is absent, e.g. an installed binary run outside the repository).
const BUILTIN_TEMPLATE: &str = include_str!("../../prompts/grounded.txt");
pub(super) const DEFAULT_TEMPLATE_PATH: &str = "prompts/grounded.txt";

/// Reads the configured template (the built-in one stands in for a missing default file)
/// and compiles it once, so a broken template fails the start, not a request.
pub(super) fn load_template(
    config: &GroundingConfig,
) -> anyhow::Result<minijinja::Environment<'static>> {
    let source = match std::fs::read_to_string(&config.template) {
        Ok(s) => s,
        Err(_) if config.template == PathBuf::from(DEFAULT_TEMPLATE_PATH) => {
            BUILTIN_TEMPLATE.to_string()
        }
        Err(e) => anyhow::bail!(
            "reading the grounding template {}: {e}",
            config.template.display()
        ),
    };
    let mut template = minijinja::Environment::new();
    template
        .add_template_owned("grounded", source)
        .map_err(|e| anyhow::anyhow!("the grounding template: {e}"))?;
    Ok(template)
}

/// The cache tag of answers grounded on a document.
pub fn doc_tag(id: &str) -> String {
    format!("doc:{id}")
}

/// The text of the last user message: what a grounded request retrieves for.
pub fn last_user_text(request: &ChatCompletionRequest) -> Option<String> {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(ChatMessage::text)
        .filter(|t| !t.trim().is_empty())
}

impl Rag {
    /// Puts the hits into the prompt template as a system message (after the request's own
    /// leading system messages) and returns the citations: the chunks actually placed,
    /// numbered as the prompt numbers them.
    pub fn ground(
        &self,
        request: &mut ChatCompletionRequest,
        hits: &[Hit],
    ) -> Result<Value, RagError> {
        let mut budget = self.config.grounding.max_context_tokens;
        let mut sources = Vec::new();
        let mut citations = Vec::new();
        for h in hits {
            let tokens = self.count_tokens(&h.chunk.text);
            if tokens > budget && !sources.is_empty() {
                break;
            }
            budget = budget.saturating_sub(tokens);
            let n = sources.len() + 1;
            // A chunk cannot close the tags it sits in.
            let text = h
                .chunk
                .text
                .replace("</source", "< /source")
                .replace("</context", "< /context");
            sources.push(json!({
                "n": n,
                "document_id": h.chunk.document_id,
                "chunk_id": h.chunk.chunk_id,
                "title": h.chunk.title,
                "heading": h.chunk.heading,
                "text": text,
            }));
            let mut citation = json!({
                "index": n,
                "chunk_id": h.chunk.chunk_id,
                "document_id": h.chunk.document_id,
                "title": h.chunk.title,
                "heading": h.chunk.heading,
                "score": h.chunk.score,
            });
            if let Some(url) = source_url(&h.chunk.metadata) {
                citation["url"] = json!(url);
            }
            citations.push(citation);
        }
        let question = last_user_text(request).unwrap_or_default();
        let rendered = self
            .template
            .get_template("grounded")
            .and_then(|t| t.render(json!({ "sources": sources, "question": question })))
            .map_err(|e| RagError::Template(e.to_string()))?;
        let at = request
            .messages
            .iter()
            .take_while(|m| matches!(m.role, Role::System | Role::Developer))
            .count();
        request.messages.insert(
            at,
            ChatMessage {
                role: Role::System,
                content: Some(MessageContent::Text(rendered)),
                extra: Default::default(),
            },
        );
        Ok(Value::Array(citations))
    }
}

/// Where a document lives on the web, if its metadata says (`url`, an http(s) address): a
/// citation carries it so a frontend can link the source.
fn source_url(metadata: &crate::rag::Metadata) -> Option<&str> {
    metadata
        .get("url")
        .and_then(serde_json::Value::as_str)
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
}
