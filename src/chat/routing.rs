//! The pipeline's routing step: an explicit model, or (for an alias) the tier rules, then
//! the classifier over the question's embedding (the one the cache computed, when it did).

use super::{ChatError, Pipeline};
use crate::embed::Priority;
use crate::route::{Decision, Live};
use crate::types::ChatCompletionRequest;

/// Control: the tier to use (`x-quartermaster-tier`).
pub const TIER_HEADER: &str = crate::route::TIER_HEADER;

fn bad(message: String) -> ChatError {
    ChatError::Invalid {
        message,
        param: Some(TIER_HEADER.to_string()),
    }
}

/// The tier hint must name a configured tier whatever the model (an unknown tier is a
/// 400, also when no tiers are configured at all). Checked before the cache: a malformed
/// control is never ignored.
pub(super) fn tier_hint(live: &Live, hint: Option<&str>) -> Result<(), ChatError> {
    let Some(hint) = hint else {
        return Ok(());
    };
    if live.tiers.contains_key(hint) {
        return Ok(());
    }
    let known: Vec<&str> = live.tiers.keys().map(String::as_str).collect();
    Err(bad(if known.is_empty() {
        format!("unknown tier `{hint}` in {TIER_HEADER}: no tiers are configured")
    } else {
        format!(
            "unknown tier `{hint}` in {TIER_HEADER}; configured tiers: {}",
            known.join(", ")
        )
    }))
}

/// The routing decision for `request`.
pub(super) async fn decide(
    pipeline: &Pipeline,
    live: &Live,
    request: &ChatCompletionRequest,
    hint: Option<&str>,
    query_vector: Option<&[f32]>,
    tenant: &str,
) -> Result<Decision, ChatError> {
    tier_hint(live, hint)?;
    if !live.is_alias(&request.model) {
        return Ok(Decision {
            tier: None,
            reason: "explicit",
            p_hard: None,
            models: vec![request.model.clone()],
        });
    }
    if live.tiers.is_empty() {
        // No tiers configured: the alias means the built-in local model.
        let Some(local) = &pipeline.local_model else {
            return Err(ChatError::ModelNotFound(request.model.clone()));
        };
        return Ok(Decision {
            tier: None,
            reason: "no_tiers",
            p_hard: None,
            models: vec![local.clone()],
        });
    }
    let decide =
        |p| crate::route::decide(&live.routing, &live.tiers, request, hint, p).map_err(bad);
    let first = decide(None)?;
    if first.reason != "default" {
        return Ok(first);
    }
    let (Some(classifier), Some(embedder)) = (&live.classifier, &pipeline.embedder) else {
        return Ok(first);
    };
    // The cache embedded the last user message already: the classifier reads the same.
    if let Some(v) = query_vector {
        return decide(Some(classifier.p_hard(v)));
    }
    let text = crate::route::classifier_input(request);
    match embedder
        .embed_for(tenant, Priority::Interactive, vec![text])
        .await
    {
        Ok(mut e) if !e.is_empty() => {
            let p = classifier.p_hard(&e.remove(0).vector);
            decide(Some(p))
        }
        Ok(_) => Ok(first),
        Err(e) => {
            tracing::warn!(error = %e, "router: embedding failed; default tier");
            Ok(first)
        }
    }
}
