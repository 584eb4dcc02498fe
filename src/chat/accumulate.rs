//! One answer accumulator for both answer paths: it watches a stream's events (or reads a
//! whole completion) and knows, at the end, the usage to account (the upstream's, else an
//! estimate), whether the answer finished, and the answer to store in the cache (only a
//! plain-text answer of one choice that finished with `stop` or `length`).

use super::events::DeltaEvent;
use crate::cache::StoredAnswer;
use crate::types::{ChatCompletion, Usage};

#[derive(Debug)]
pub struct Accumulator {
    /// The model the answer came from (the upstream's name once it says one).
    pub model: String,
    prompt_estimate: u64,
    usage: Option<Usage>,
    completion_chars: usize,
    finished: bool,
    /// The text of choice 0, while the answer can still be stored.
    cacheable: Option<String>,
    finish_reason: Option<String>,
    /// The text of choice 0, when analytics takes the answer's content.
    captured: Option<String>,
}

impl Accumulator {
    /// For an answer to a prompt estimated at `prompt_estimate` tokens; `cache` when the
    /// answer may be stored.
    pub fn new(model: &str, prompt_estimate: u64, cache: bool) -> Self {
        Self {
            model: model.to_string(),
            prompt_estimate,
            usage: None,
            completion_chars: 0,
            finished: false,
            cacheable: cache.then(String::new),
            finish_reason: None,
            captured: None,
        }
    }

    /// Keeps choice 0's text (for analytics that take content), cacheable or not.
    pub fn capture_text(&mut self) {
        self.captured = Some(String::new());
    }

    /// Choice 0's finish reason, once the upstream said it.
    pub fn finish_reason(&self) -> Option<&str> {
        self.finish_reason.as_deref()
    }

    /// The kept text, once.
    pub fn take_text(&mut self) -> Option<String> {
        self.captured.take()
    }

    /// Notes the upstream's reported usage (its last word counts).
    pub fn usage_reported(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    pub fn delta(&mut self, event: &DeltaEvent) {
        if let Some(m) = &event.model {
            self.model.clone_from(m);
        }
        for choice in &event.choices {
            self.completion_chars += choice.text.as_ref().map_or(0, String::len);
            if let (Some(kept), 0) = (self.captured.as_mut(), choice.index) {
                kept.push_str(choice.text.as_deref().unwrap_or(""));
            }
            self.finished |= choice.finish_reason.is_some();
            if let Some(text) = self.cacheable.as_mut() {
                if choice.index == 0 && choice.is_text_only() {
                    text.push_str(choice.text.as_deref().unwrap_or(""));
                    if choice.finish_reason.is_some() {
                        self.finish_reason.clone_from(&choice.finish_reason);
                    }
                } else {
                    self.cacheable = None;
                }
            }
        }
    }

    /// Whether any choice finished (a stream that ends before is cut off).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The usage to account: the upstream's, else ~4 characters a token of the output.
    pub fn usage(&self) -> Usage {
        self.usage.unwrap_or_else(|| {
            let out = (self.completion_chars as u64).div_ceil(4);
            Usage::new(self.prompt_estimate, out)
        })
    }

    /// The answer to store, if it can be.
    pub fn stored_answer(self) -> Option<StoredAnswer> {
        let usage = self.usage();
        let content = self.cacheable?;
        let finish_reason = self.finish_reason?;
        matches!(finish_reason.as_str(), "stop" | "length").then(|| StoredAnswer {
            model: self.model,
            content,
            finish_reason,
            usage,
            message_extra: Default::default(),
            citations: None,
        })
    }

    /// Reads a whole completion: its usage (or an estimate from its messages' size), and
    /// the answer to store when it is one cacheable choice.
    pub fn whole(
        completion: &ChatCompletion,
        prompt_estimate: u64,
        cache: bool,
    ) -> (Usage, Option<StoredAnswer>) {
        let usage = completion.usage.unwrap_or_else(|| {
            let out: usize = completion
                .choices
                .iter()
                .map(|c| c.message.to_string().len())
                .sum();
            let out = (out as u64).div_ceil(4);
            Usage::new(prompt_estimate, out)
        });
        let stored = match (cache, completion.choices.as_slice()) {
            (true, [choice])
                if StoredAnswer::cacheable(choice.finish_reason.as_deref(), &choice.message) =>
            {
                let mut message_extra = choice.message.as_object().cloned().unwrap_or_default();
                let content = message_extra
                    .remove("content")
                    .and_then(|c| c.as_str().map(str::to_string))
                    .unwrap_or_default();
                message_extra.remove("role");
                Some(StoredAnswer {
                    model: completion.model.clone(),
                    content,
                    finish_reason: choice.finish_reason.clone().unwrap_or_default(),
                    usage,
                    message_extra,
                    citations: None,
                })
            }
            _ => None,
        };
        (usage, stored)
    }
}

#[cfg(test)]
mod tests {
    use super::super::events::ChoiceDelta;
    use super::*;

    fn text(t: &str, finish: Option<&str>) -> DeltaEvent {
        DeltaEvent::single(ChoiceDelta {
            text: Some(t.into()),
            finish_reason: finish.map(str::to_string),
            ..Default::default()
        })
    }

    #[test]
    fn a_finished_text_answer_is_stored_with_estimated_usage() {
        let mut a = Accumulator::new("m", 10, true);
        a.delta(&text("Hello, ", None));
        a.delta(&text("world!", Some("stop")));
        assert!(a.finished());
        assert_eq!(a.usage().completion_tokens, 4); // 13 characters
        let stored = a.stored_answer().unwrap();
        assert_eq!(stored.content, "Hello, world!");
        assert_eq!(stored.usage.prompt_tokens, 10);
    }

    #[test]
    fn tool_calls_or_a_cut_answer_are_not_stored() {
        let mut a = Accumulator::new("m", 1, true);
        a.delta(&text("partial", None));
        assert!(!a.finished());
        assert!(a.stored_answer().is_none());
        let mut a = Accumulator::new("m", 1, true);
        a.delta(&DeltaEvent::single(ChoiceDelta {
            tool_calls: vec![Default::default()],
            finish_reason: Some("tool_calls".into()),
            ..Default::default()
        }));
        assert!(a.finished());
        assert!(a.stored_answer().is_none());
        let mut a = Accumulator::new("m", 1, true);
        a.delta(&text("x", Some("content_filter")));
        assert!(a.stored_answer().is_none());
    }

    #[test]
    fn reported_usage_wins() {
        let mut a = Accumulator::new("m", 1, false);
        a.delta(&text("abc", Some("stop")));
        let u = Usage::new(7, 3);
        a.usage_reported(u);
        assert_eq!(a.usage(), u);
        assert!(a.stored_answer().is_none(), "not asked to store");
    }
}
