//! Golden streams: every door (chat completions, Responses, the UI message stream, Messages)
//! × every upstream kind (OpenAI-compatible, Anthropic) × each scenario of
//! `common/scenario.rs` (plain text, a tool call with its arguments split across many
//! deltas, two parallel calls, the turn after a tool result, a max-tokens cut-off, a
//! mid-stream failure). Both mock upstreams play the same script in their own wire format,
//! so a door must send the same bytes whichever upstream answered: each stream, with its
//! generated ids, times and model names replaced by placeholders, is compared with
//! `tests/golden/{door}.txt`. `QM_UPDATE_GOLDEN=1` rewrites the files from the OpenAI
//! upstream's streams (review the diff); the Anthropic upstream's are always compared.

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::mock_anthropic::MockAnthropic;
use common::{Options, TestApp};
use serde_json::{Value, json};

const SCENARIOS: &[&str] = &[
    "gold-text",
    "gold-tool",
    "gold-parallel",
    "gold-tool-result",
    "gold-max",
    "gold-fail",
];

/// The upstream model a scenario asks for (the tool-result turn is `gold-tool`'s second).
fn upstream_model(scenario: &str) -> &str {
    if scenario == "gold-tool-result" {
        "gold-tool"
    } else {
        scenario
    }
}

fn openai_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

/// The request each door sends for a scenario, and its path.
fn request(door: &str, scenario: &str, model: &str) -> (&'static str, Value) {
    let tools = !matches!(scenario, "gold-text" | "gold-max" | "gold-fail");
    let after_tool = scenario == "gold-tool-result";
    let max = if scenario == "gold-max" { 5 } else { 256 };
    match door {
        "chat_completions" => {
            let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
            if after_tool {
                messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                    "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}));
                messages
                    .push(json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}));
            }
            let mut body = json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
                "messages": messages, "max_tokens": max});
            if tools {
                body["tools"] = json!([openai_tool()]);
            }
            ("/v1/chat/completions", body)
        }
        "responses" => {
            let mut input = vec![json!({"role": "user", "content": "Weather in Paris?"})];
            if after_tool {
                input.push(
                    json!({"type": "function_call", "call_id": "call_1", "name": "get_weather",
                    "arguments": "{\"city\":\"Paris\"}"}),
                );
                input.push(
                    json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny"}),
                );
            }
            let mut body = json!({"model": model, "stream": true, "store": false, "input": input,
                "max_output_tokens": max});
            if tools {
                let f = &openai_tool()["function"];
                body["tools"] = json!([{"type": "function", "name": f["name"], "description": f["description"],
                    "parameters": f["parameters"]}]);
            }
            ("/v1/responses", body)
        }
        "ui_chat" => {
            let mut messages = vec![json!({"id": "u1", "role": "user",
                "parts": [{"type": "text", "text": "Weather in Paris?"}]})];
            if after_tool {
                messages.push(json!({"id": "a1", "role": "assistant", "parts": [{"type": "step-start"},
                    {"type": "tool-get_weather", "toolCallId": "call_1", "state": "output-available",
                     "input": {"city": "Paris"}, "output": "sunny"}]}));
            }
            let mut body = json!({"id": format!("chat-{scenario}-{model}"), "trigger": "submit-message",
                "messages": messages, "model": model, "max_tokens": max});
            if tools {
                body["tools"] = json!([openai_tool()]);
            }
            ("/api/chat", body)
        }
        "messages" => {
            let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
            if after_tool {
                messages.push(
                    json!({"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                    "name": "get_weather", "input": {"city": "Paris"}}]}),
                );
                messages.push(json!({"role": "user", "content": [{"type": "tool_result",
                    "tool_use_id": "toolu_1", "content": "sunny"}]}));
            }
            let mut body =
                json!({"model": model, "stream": true, "max_tokens": max, "messages": messages});
            if tools {
                let f = &openai_tool()["function"];
                body["tools"] = json!([{"name": f["name"], "description": f["description"],
                    "input_schema": f["parameters"]}]);
            }
            ("/v1/messages", body)
        }
        _ => unreachable!(),
    }
}

/// Replaces what differs from run to run or upstream to upstream by design: ids the gateway
/// or the upstream made (numbered in order of first appearance), times, model names.
struct Normalizer {
    ids: BTreeMap<String, String>,
    models: Vec<String>,
}

const ID_KEYS: &[&str] = &[
    "id",
    "item_id",
    "call_id",
    "toolCallId",
    "messageId",
    "tool_use_id",
];

impl Normalizer {
    fn new(models: &[&str]) -> Self {
        Self {
            ids: BTreeMap::new(),
            models: models.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn id(&mut self, s: &str) -> Value {
        let n = self.ids.len() + 1;
        Value::String(
            self.ids
                .entry(s.to_string())
                .or_insert_with(|| format!("ID{n}"))
                .clone(),
        )
    }

    fn value(&mut self, key: Option<&str>, v: &mut Value) {
        match v {
            Value::Object(o) => {
                for (k, child) in o.iter_mut() {
                    self.value(Some(k), child);
                }
            }
            Value::Array(a) => {
                for child in a {
                    self.value(key, child);
                }
            }
            Value::String(s) => {
                if key.is_some_and(|k| ID_KEYS.contains(&k)) {
                    *v = self.id(&s.clone());
                } else if key == Some("model") || self.models.iter().any(|m| m == s) {
                    *v = json!("MODEL");
                }
            }
            Value::Number(_) if matches!(key, Some("created" | "created_at")) => *v = json!(0),
            _ => {}
        }
    }

    /// The SSE body as `event:`/`data:` lines with normalised JSON, comments dropped.
    fn stream(&mut self, body: &str) -> String {
        let mut out = String::new();
        for event in body.split("\n\n").filter(|e| !e.trim().is_empty()) {
            for line in event.lines() {
                if line.starts_with(':') {
                    continue;
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    match serde_json::from_str::<Value>(d) {
                        Ok(mut v) => {
                            self.value(None, &mut v);
                            out.push_str(&format!("data: {v}\n"));
                        }
                        Err(_) => out.push_str(&format!("{line}\n")),
                    }
                } else {
                    out.push_str(&format!("{line}\n"));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// The first line where `got` departs from `want`, with its neighbours.
fn first_difference(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let i = (0..w.len().max(g.len()))
        .find(|&i| w.get(i) != g.get(i))
        .unwrap_or(0);
    format!(
        "line {}:\n  expected: {}\n  got:      {}",
        i + 1,
        w.get(i).unwrap_or(&"(end)"),
        g.get(i).unwrap_or(&"(end)")
    )
}

fn golden_path(door: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{door}.txt"))
}

/// The file's sections: `## scenario` then the normalised stream.
fn parse_golden(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for section in text.split("## ").filter(|s| !s.trim().is_empty()) {
        let (name, body) = section.split_once('\n').unwrap_or((section, ""));
        out.insert(name.trim().to_string(), body.to_string());
    }
    out
}

/// A gateway with each scenario's model on both upstreams (`oa-*` on the OpenAI-compatible
/// mock the harness starts, `an-*` on the Anthropic mock, whose provider is `claude`), and
/// `more` config.
pub async fn spawn(more: &str) -> (MockAnthropic, TestApp) {
    let anthropic = MockAnthropic::start().await;
    let server = if more.contains("[server]") {
        ""
    } else {
        "[server]\nshutdown_grace_secs = 2\n"
    };
    let mut extra = format!(
        "[rate_limit]\nenabled = false\n{server}\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-test\"\n",
        anthropic.url
    );
    for s in SCENARIOS {
        let up = upstream_model(s);
        extra.push_str(&format!(
            "[models.\"oa-{s}\"]\nprovider = \"mock\"\nupstream_model = \"{up}\"\n\
             [models.\"an-{s}\"]\nprovider = \"claude\"\nupstream_model = \"{up}\"\n"
        ));
    }
    extra.push_str(more);
    let app = TestApp::spawn_with(Options::extra(&extra)).await;
    (anthropic, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_says_the_same_whichever_upstream_answered() {
    let (_anthropic, mut app) = spawn("").await;
    let update = std::env::var("QM_UPDATE_GOLDEN").as_deref() == Ok("1");
    let mut failures = Vec::new();
    for door in ["chat_completions", "responses", "ui_chat", "messages"] {
        let mut produced: BTreeMap<String, String> = BTreeMap::new();
        let golden = if update {
            None
        } else {
            let path = golden_path(door);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (QM_UPDATE_GOLDEN=1 writes it)", path.display())
            });
            Some(parse_golden(&text))
        };
        for scenario in SCENARIOS {
            for kind in ["oa", "an"] {
                let model = format!("{kind}-{scenario}");
                let (path, body) = request(door, scenario, &model);
                let response = app.post(path).json(&body).send().await.unwrap();
                assert_eq!(
                    response.status(),
                    200,
                    "{door} {model}: {}",
                    response.text().await.unwrap_or_default()
                );
                let text = response.text().await.unwrap();
                let upstream = upstream_model(scenario);
                let normalised = Normalizer::new(&[&model, upstream]).stream(&text);
                match (&golden, kind) {
                    (None, "oa") => {
                        produced.insert(scenario.to_string(), normalised);
                    }
                    (None, _) => {
                        let want = produced.get(*scenario).map_or("", String::as_str);
                        if want != normalised {
                            failures.push(format!(
                                "{door} {scenario}: the Anthropic upstream's stream differs from the OpenAI upstream's:\n{}",
                                first_difference(want, &normalised)
                            ));
                        }
                    }
                    (Some(g), _) => {
                        let want = g.get(*scenario).map_or("", String::as_str);
                        if want != normalised {
                            failures.push(format!(
                                "{door} {scenario} through {kind}: differs from tests/golden/{door}.txt:\n{}",
                                first_difference(want, &normalised)
                            ));
                        }
                    }
                }
            }
        }
        if update {
            let text: String = SCENARIOS
                .iter()
                .map(|s| format!("## {s}\n{}", produced[*s]))
                .collect();
            std::fs::create_dir_all(golden_path(door).parent().unwrap()).unwrap();
            std::fs::write(golden_path(door), text).unwrap();
        }
    }
    app.shutdown().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
