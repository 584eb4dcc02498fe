//! Scripted answers that both mock upstreams speak, each in its own wire format, for the
//! `gold-*` models: the same text, tool calls (arguments split across many deltas), finish
//! reason, usage and mid-stream failure from an OpenAI-compatible upstream and from an
//! Anthropic one. The golden-stream tests (tests/it/golden.rs) ask every door for each
//! scenario through each upstream kind and expect the same bytes back either way.
//!
//! | model | answer |
//! | --- | --- |
//! | `gold-text` | `Hello from the upstream.` in 4 deltas, stop |
//! | `gold-tool` | one call of the first offered tool, `{"city":"Paris"}` in 4 argument deltas, tool calls; once the conversation holds a tool result, `It is sunny in Paris.` in 3 deltas, stop |
//! | `gold-parallel` | two calls of the first offered tool (Paris, Berlin), tool calls |
//! | `gold-max` | `Once upon a time` in 2 deltas, cut off at the token limit |
//! | `gold-fail` | 2 text deltas, then an `overloaded_error` mid-stream |
#![allow(dead_code)]

use serde_json::Value;

/// One piece of an answer.
pub enum Step {
    Text(&'static str),
    /// A tool call: its ordinal, id suffix, the tool's name and its arguments in pieces.
    Tool {
        ordinal: u32,
        name: String,
        pieces: Vec<&'static str>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
    /// The stream fails after the steps (`overloaded_error`, "Overloaded").
    FailMid,
}

pub struct Scenario {
    pub steps: Vec<Step>,
    pub finish: Finish,
}

pub const PROMPT_TOKENS: u64 = 11;

impl Scenario {
    /// Output tokens the upstream reports: one per text piece, 10 per tool call.
    pub fn output_tokens(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Text(_) => 1,
                Step::Tool { .. } => 10,
            })
            .sum()
    }

    /// The whole text of the answer.
    pub fn text(&self) -> String {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Text(t) => Some(*t),
                Step::Tool { .. } => None,
            })
            .collect()
    }
}

/// The scenario a `gold-*` model plays, given the request (OpenAI's or Anthropic's shape).
pub fn for_request(model: &str, request: &Value) -> Option<Scenario> {
    let tool = request["tools"][0]["function"]["name"]
        .as_str()
        .or(request["tools"][0]["name"].as_str())
        .unwrap_or("get_weather")
        .to_string();
    let answered = request["messages"].as_array().is_some_and(|messages| {
        messages.iter().any(|m| {
            m["role"] == "tool"
                || m["content"]
                    .as_array()
                    .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
        })
    });
    let call = |ordinal, city: &'static str| Step::Tool {
        ordinal,
        name: tool.clone(),
        pieces: match city {
            "Paris" => vec!["{\"ci", "ty\":", "\"Par", "is\"}"],
            _ => vec!["{\"ci", "ty\":", "\"Ber", "lin\"}"],
        },
    };
    let text = |pieces: &[&'static str]| pieces.iter().map(|p| Step::Text(p)).collect();
    Some(match model {
        "gold-text" => Scenario {
            steps: text(&["Hello", " from", " the", " upstream."]),
            finish: Finish::Stop,
        },
        "gold-tool" if answered => Scenario {
            steps: text(&["It is ", "sunny ", "in Paris."]),
            finish: Finish::Stop,
        },
        "gold-tool" => Scenario {
            steps: vec![call(0, "Paris")],
            finish: Finish::ToolCalls,
        },
        "gold-parallel" => Scenario {
            steps: vec![call(0, "Paris"), call(1, "Berlin")],
            finish: Finish::ToolCalls,
        },
        "gold-max" => Scenario {
            steps: text(&["Once upon", " a time"]),
            finish: Finish::Length,
        },
        "gold-fail" => Scenario {
            steps: text(&["Hello", " from"]),
            finish: Finish::FailMid,
        },
        _ => return None,
    })
}

/// The scenario as OpenAI's SSE body (`data:` chunks, a usage chunk, `[DONE]`).
pub fn openai_sse(model: &str, s: &Scenario) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        serde_json::json!({"id": "chatcmpl-gold", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut out = vec![chunk(serde_json::json!({"role": "assistant"}), Value::Null)];
    for step in &s.steps {
        match step {
            Step::Text(t) => out.push(chunk(serde_json::json!({"content": t}), Value::Null)),
            Step::Tool {
                ordinal,
                name,
                pieces,
            } => {
                out.push(chunk(
                    serde_json::json!({"tool_calls": [{"index": ordinal, "id": format!("call_gold{}", ordinal + 1),
                        "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ));
                for p in pieces {
                    out.push(chunk(
                        serde_json::json!({"tool_calls": [{"index": ordinal, "function": {"arguments": p}}]}),
                        Value::Null,
                    ));
                }
            }
        }
    }
    let mut events: Vec<String> = out.iter().map(|c| format!("data: {c}\n\n")).collect();
    let finish = match s.finish {
        Finish::FailMid => {
            events.push(
                "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\",\"code\":\"overloaded_error\"}}\n\n"
                    .into(),
            );
            return events;
        }
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
    };
    events.push(format!(
        "data: {}\n\n",
        chunk(serde_json::json!({}), Value::from(finish))
    ));
    let n = s.output_tokens();
    let usage = serde_json::json!({"id": "chatcmpl-gold", "object": "chat.completion.chunk", "created": 1700000000,
        "model": model, "choices": [], "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n,
            "total_tokens": PROMPT_TOKENS + n, "prompt_tokens_details": {"cached_tokens": 0}}});
    events.push(format!("data: {usage}\n\n"));
    events.push("data: [DONE]\n\n".into());
    events
}

/// The scenario as Anthropic's typed SSE events (`event:` + `data:`).
pub fn anthropic_sse(model: &str, id: &str, s: &Scenario) -> Vec<String> {
    let mut out = vec![
        serde_json::json!({"type": "message_start", "message": {"id": id, "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        serde_json::json!({"type": "ping"}),
    ];
    let mut block = 0;
    let mut open_text = false;
    for step in &s.steps {
        match step {
            Step::Text(t) => {
                if !open_text {
                    out.push(
                        serde_json::json!({"type": "content_block_start", "index": block,
                        "content_block": {"type": "text", "text": ""}}),
                    );
                    open_text = true;
                }
                out.push(
                    serde_json::json!({"type": "content_block_delta", "index": block,
                    "delta": {"type": "text_delta", "text": t}}),
                );
            }
            Step::Tool {
                ordinal,
                name,
                pieces,
            } => {
                if open_text {
                    out.push(serde_json::json!({"type": "content_block_stop", "index": block}));
                    block += 1;
                    open_text = false;
                }
                out.push(serde_json::json!({"type": "content_block_start", "index": block,
                    "content_block": {"type": "tool_use", "id": format!("toolu_gold{}", ordinal + 1),
                        "name": name, "input": {}}}));
                // The real API often starts with an empty piece.
                for p in std::iter::once(&"").chain(pieces.iter()) {
                    out.push(
                        serde_json::json!({"type": "content_block_delta", "index": block,
                        "delta": {"type": "input_json_delta", "partial_json": p}}),
                    );
                }
                out.push(serde_json::json!({"type": "content_block_stop", "index": block}));
                block += 1;
            }
        }
    }
    let stop = match s.finish {
        Finish::FailMid => {
            out.push(serde_json::json!({"type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"}}));
            return out.iter().map(anthropic_event).collect();
        }
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
    };
    if open_text {
        out.push(serde_json::json!({"type": "content_block_stop", "index": block}));
    }
    out.push(serde_json::json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": s.output_tokens()}}));
    out.push(serde_json::json!({"type": "message_stop"}));
    out.iter().map(anthropic_event).collect()
}

fn anthropic_event(data: &Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or("message")
    )
}
