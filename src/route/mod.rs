//! Tiered routing: which models may answer a request, in what order.
//!
//! `model: "auto"` (or another alias) is routed: rules first (an explicit tier hint, tools,
//! a long prompt, code or math), then a learned decision (a logistic-regression classifier
//! over the local embeddings, trained at start from labeled examples kept in the repo, in the
//! style of RouteLLM; one threshold trades cost for quality), else the default tier. A tier is
//! an ordered list of models with a fallback tier. An explicit model bypasses routing.
//! Circuit breakers per model skip upstreams that keep failing.

mod attempts;
mod breakers;
pub mod classifier;
pub mod live;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

pub use attempts::{Attempts, Exhausted, note_upstream_error};
pub use breakers::Breakers;
pub use classifier::Classifier;
pub use live::Live;

use crate::types::ChatCompletionRequest;

/// The header a client uses to ask for a tier.
pub const TIER_HEADER: &str = "x-quartermaster-tier";
/// The response header with the decision: `tier=strong; reason=classifier; p_hard=0.81`.
pub const ROUTE_HEADER: &str = "x-quartermaster-route";
/// The response header naming the model that answered.
pub const MODEL_HEADER: &str = "x-quartermaster-model";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Model names that mean "choose for me".
    pub aliases: Vec<String>,
    /// Labeled examples (`{"prompt", "label": "easy"|"hard"}` per line) the classifier is
    /// trained on at start (and on reload, when the file changed).
    pub examples_path: String,
    /// Labeled prompts (same format) the trained classifier is scored on, for the admin
    /// API's and the console's threshold curve; none by default.
    pub eval_path: Option<String>,
    /// P(hard) at or above this goes to `hard_tier`: lower sends more to the strong tier.
    pub threshold: f32,
    pub easy_tier: String,
    pub hard_tier: String,
    /// Used when no rule applies and the classifier is unavailable (embeddings off, still
    /// training).
    pub default_tier: String,
    /// Requests with `tools` go here (rule).
    pub tools_tier: Option<String>,
    /// Prompts estimated above this many tokens go to `hard_tier` (rule); 0 disables.
    pub long_prompt_tokens: u64,
    /// Prompts with a code block or mathematical notation go to `hard_tier` (rule).
    pub code_math_rule: bool,
    /// Retries on the same model (timeouts, 5xx, 429) before failing over.
    pub max_retries_per_target: u32,
    /// No new attempt starts after this much time since the request arrived.
    pub retry_budget_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Consecutive failures that open a model's circuit...
    pub breaker_failures: u32,
    /// ...for this long; then one trial request decides.
    pub breaker_open_secs: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            aliases: vec!["auto".into()],
            examples_path: "prompts/router_examples.jsonl".into(),
            eval_path: None,
            threshold: 0.5,
            easy_tier: "cheap".into(),
            hard_tier: "strong".into(),
            default_tier: "cheap".into(),
            tools_tier: Some("strong".into()),
            long_prompt_tokens: 3000,
            code_math_rule: true,
            max_retries_per_target: 1,
            retry_budget_ms: 10_000,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            breaker_failures: 5,
            breaker_open_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Model names (keys of `[models]`, or the local model), tried in order.
    pub models: Vec<String>,
    /// The tier tried when every model of this one failed.
    #[serde(default)]
    pub fallback: Option<String>,
}

/// Why a request went where it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub tier: Option<String>,
    /// `explicit`, `hint`, `tools`, `long_prompt`, `code_math`, `classifier`, `default`.
    pub reason: &'static str,
    pub p_hard: Option<f32>,
    /// Models to try, in order (the tier's, then its fallbacks').
    pub models: Vec<String>,
}

impl Decision {
    pub fn header_value(&self) -> String {
        let mut v = format!(
            "tier={}; reason={}",
            self.tier.as_deref().unwrap_or("none"),
            self.reason
        );
        if let Some(p) = self.p_hard {
            v.push_str(&format!("; p_hard={p:.3}"));
        }
        v
    }
}

/// Whether the text carries a code block or mathematical notation.
pub fn has_code_or_math(text: &str) -> bool {
    const MARKERS: &[&str] = &[
        "```", "\\frac", "\\int", "\\sum", "\\sqrt", "\\begin{", "$$", "∫", "∑", "√", "≤", "≥",
    ];
    if MARKERS.iter().any(|m| text.contains(m)) {
        return true;
    }
    // Several lines that look like code: ending in `;`, `{` or `}`, or starting with a
    // definition keyword.
    let code_lines = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.ends_with(';')
                || l.ends_with('{')
                || l == &"}"
                || [
                    "def ",
                    "fn ",
                    "class ",
                    "import ",
                    "#include",
                    "SELECT ",
                    "function ",
                ]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .count();
    code_lines >= 2
}

/// The routing decision for an aliased request. `hint` is the tier header's value.
pub fn decide(
    config: &RoutingConfig,
    tiers: &BTreeMap<String, TierConfig>,
    request: &ChatCompletionRequest,
    hint: Option<&str>,
    p_hard: Option<f32>,
) -> Result<Decision, String> {
    let tier_models = |tier: &str| -> Vec<String> {
        let mut out = vec![];
        let mut seen = vec![];
        let mut next = Some(tier.to_string());
        while let Some(t) = next.take() {
            if seen.contains(&t) {
                break;
            }
            if let Some(cfg) = tiers.get(&t) {
                for m in &cfg.models {
                    if !out.contains(m) {
                        out.push(m.clone());
                    }
                }
                next = cfg.fallback.clone();
            }
            seen.push(t);
        }
        out
    };
    let make = |tier: &str, reason: &'static str, p: Option<f32>| Decision {
        tier: Some(tier.to_string()),
        reason,
        p_hard: p,
        models: tier_models(tier),
    };
    if let Some(hint) = hint {
        if !tiers.contains_key(hint) {
            let known: Vec<&str> = tiers.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown tier `{hint}` in {TIER_HEADER}; configured tiers: {}",
                known.join(", ")
            ));
        }
        return Ok(make(hint, "hint", None));
    }
    if let Some(tier) = &config.tools_tier {
        if request.extra.get("tools").is_some_and(|t| !t.is_null()) {
            return Ok(make(tier, "tools", None));
        }
    }
    if config.long_prompt_tokens > 0 && request.estimate_prompt_tokens() > config.long_prompt_tokens
    {
        return Ok(make(&config.hard_tier, "long_prompt", None));
    }
    if config.code_math_rule && request.messages.iter().any(|m| has_code_or_math(&m.text())) {
        return Ok(make(&config.hard_tier, "code_math", None));
    }
    if let Some(p) = p_hard {
        let tier = if p >= config.threshold {
            &config.hard_tier
        } else {
            &config.easy_tier
        };
        return Ok(make(tier, "classifier", Some(p)));
    }
    Ok(make(&config.default_tier, "default", None))
}

/// The text the classifier sees: the last user message.
pub fn classifier_input(request: &ChatCompletionRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == crate::types::Role::User)
        .or(request.messages.last())
        .map(|m| m.text())
        .unwrap_or_default()
}

/// Full-jitter backoff before retry `attempt` (1-based).
pub fn backoff(config: &RoutingConfig, attempt: u32) -> Duration {
    let cap = config
        .backoff_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(config.backoff_max_ms);
    Duration::from_millis(rand::random_range(0..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> BTreeMap<String, TierConfig> {
        let mut t = BTreeMap::new();
        t.insert(
            "cheap".into(),
            TierConfig {
                models: vec!["a".into(), "b".into()],
                fallback: None,
            },
        );
        t.insert(
            "strong".into(),
            TierConfig {
                models: vec!["s".into()],
                fallback: Some("cheap".into()),
            },
        );
        t
    }

    fn request(text: &str) -> ChatCompletionRequest {
        serde_json::from_value(
            serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": text}]}),
        )
        .unwrap()
    }

    #[test]
    fn rules_then_classifier_then_default() {
        let c = RoutingConfig::default();
        let t = tiers();
        let d = decide(&c, &t, &request("hi"), Some("strong"), Some(0.1)).unwrap();
        assert_eq!((d.tier.as_deref(), d.reason), (Some("strong"), "hint"));
        assert_eq!(d.models, vec!["s", "a", "b"], "tier then its fallback");
        assert!(decide(&c, &t, &request("hi"), Some("nope"), None).is_err());
        let mut tools = request("hi");
        tools
            .extra
            .insert("tools".into(), serde_json::json!([{"type": "function"}]));
        assert_eq!(
            decide(&c, &t, &tools, None, Some(0.0)).unwrap().reason,
            "tools"
        );
        let long = request(&"word ".repeat(20_000));
        assert_eq!(
            decide(&c, &t, &long, None, Some(0.0)).unwrap().reason,
            "long_prompt"
        );
        let code = request("Why does this fail?\n```rust\nfn main() {}\n```");
        assert_eq!(
            decide(&c, &t, &code, None, Some(0.0)).unwrap().reason,
            "code_math"
        );
        let d = decide(&c, &t, &request("hi"), None, Some(0.7)).unwrap();
        assert_eq!(
            (d.tier.as_deref(), d.reason),
            (Some("strong"), "classifier")
        );
        let d = decide(&c, &t, &request("hi"), None, Some(0.2)).unwrap();
        assert_eq!((d.tier.as_deref(), d.reason), (Some("cheap"), "classifier"));
        assert!(d.header_value().contains("p_hard=0.200"));
        let d = decide(&c, &t, &request("hi"), None, None).unwrap();
        assert_eq!((d.tier.as_deref(), d.reason), (Some("cheap"), "default"));
    }

    #[test]
    fn code_and_math_detection() {
        assert!(has_code_or_math("```\nx\n```"));
        assert!(has_code_or_math("solve $$x^2 = 4$$"));
        assert!(has_code_or_math("int x = 1;\nreturn x;"));
        assert!(!has_code_or_math("What is the capital of Peru?"));
        assert!(!has_code_or_math("Write a haiku; make it short."));
    }

    #[test]
    fn breaker_opens_after_failures_and_half_opens() {
        let b = Breakers::default();
        let open_for = Duration::from_millis(30);
        assert!(b.allow("m"));
        assert!(!b.failure("m", 3, open_for));
        assert!(!b.failure("m", 3, open_for));
        assert!(b.failure("m", 3, open_for), "third failure opens");
        assert!(!b.allow("m") && b.is_open("m"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow("m"), "one trial after the open period");
        assert!(!b.allow("m"), "only one");
        assert!(
            b.failure("m", 3, open_for),
            "a failed trial re-opens at once"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow("m"));
        b.success("m");
        assert!(b.allow("m") && b.allow("m"), "closed again");
    }

    #[test]
    fn backoff_is_capped() {
        let c = RoutingConfig {
            backoff_base_ms: 10,
            backoff_max_ms: 50,
            ..Default::default()
        };
        for attempt in 1..30 {
            assert!(backoff(&c, attempt) <= Duration::from_millis(50));
        }
    }
}
