//! The pipeline's answer as a Responses API `response` object, or as its event stream:
//! `response.created`, `response.in_progress`, per output item `output_item.added`, its
//! content part or function-call arguments in deltas, `.done` events, then
//! `response.completed` / `response.incomplete`; a failure after the stream began is an
//! `error` event and `response.failed`. Every event carries `type` and `sequence_number`.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::response::sse::Event;
use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::decode::ResponsesRequest;
use super::new_id;
use crate::api::error::ApiError;
use crate::chat::{ChatEvent, EventStream};
use crate::types::{ChatCompletion, Usage};

/// What every `response` object of one request repeats: its id, time and the request's
/// settings, echoed as OpenAI does.
#[derive(Debug, Clone)]
pub struct Shell {
    pub id: String,
    pub created_at: i64,
    pub model: String,
    settings: Map<String, Value>,
    /// A grounded answer's citations, as `file_citation` annotations of its text
    /// (`url_citation` for a document with a `url`).
    pub citations: Option<Value>,
}

impl Shell {
    pub fn new(req: &ResponsesRequest, citations: Option<Value>) -> Self {
        let mut s = Map::new();
        s.insert("instructions".into(), json!(req.instructions));
        s.insert("max_output_tokens".into(), json!(req.max_output_tokens));
        s.insert(
            "metadata".into(),
            json!(req.metadata.clone().unwrap_or_default()),
        );
        s.insert(
            "parallel_tool_calls".into(),
            json!(req.parallel_tool_calls.unwrap_or(true)),
        );
        s.insert(
            "previous_response_id".into(),
            json!(req.previous_response_id),
        );
        s.insert("store".into(), json!(req.stores()));
        s.insert("temperature".into(), json!(req.temperature.unwrap_or(1.0)));
        s.insert(
            "text".into(),
            req.text
                .clone()
                .unwrap_or_else(|| json!({"format": {"type": "text"}})),
        );
        s.insert(
            "tool_choice".into(),
            req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        );
        s.insert("tools".into(), json!(req.tools.clone().unwrap_or_default()));
        s.insert("top_p".into(), json!(req.top_p.unwrap_or(1.0)));
        s.insert("truncation".into(), json!("disabled"));
        s.insert("user".into(), json!(req.user));
        Shell {
            id: new_id("resp"),
            created_at: crate::clock::unix_now(),
            model: req.model.clone(),
            settings: s,
            citations,
        }
    }

    /// The `response` object in a given state.
    pub fn object(&self, status: &str, output: &[Value], usage: Option<Usage>, end: &End) -> Value {
        let mut o = Map::new();
        o.insert("id".into(), json!(self.id));
        o.insert("object".into(), json!("response"));
        o.insert("created_at".into(), json!(self.created_at));
        o.insert("status".into(), json!(status));
        o.insert("error".into(), end.error.clone().unwrap_or(Value::Null));
        o.insert(
            "incomplete_details".into(),
            end.incomplete.map_or(Value::Null, |r| json!({"reason": r})),
        );
        o.insert("model".into(), json!(self.model));
        o.insert("output".into(), Value::Array(output.to_vec()));
        o.extend(self.settings.clone());
        o.insert("usage".into(), usage.map_or(Value::Null, usage_json));
        Value::Object(o)
    }

    /// The annotations of the answer's text (empty unless grounded).
    fn annotations(&self, text_len: usize) -> Value {
        let Some(Value::Array(cites)) = &self.citations else {
            return json!([]);
        };
        Value::Array(
            cites
                .iter()
                .map(|c| {
                    let doc = c.get("document_id").cloned().unwrap_or(Value::Null);
                    let name = c
                        .get("title")
                        .filter(|t| !t.is_null())
                        .cloned()
                        .unwrap_or(doc.clone());
                    match c.get("url").and_then(Value::as_str) {
                        // A document on the web: OpenAI's own annotation for a linked source.
                        Some(url) => json!({"type": "url_citation", "url": url, "title": name,
                            "start_index": 0, "end_index": text_len}),
                        None => json!({"type": "file_citation", "file_id": doc, "filename": name,
                            "index": text_len}),
                    }
                })
                .collect(),
        )
    }

    /// A whole chat completion as the finished `response`.
    pub fn from_completion(&self, completion: &ChatCompletion) -> (Value, Vec<Value>) {
        let mut output = Vec::new();
        let choice = completion.choices.first();
        let message = choice.map(|c| &c.message);
        if let Some(text) = message
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            && !text.is_empty()
        {
            output.push(self.message_item(new_id("msg"), text, "completed"));
        }
        if let Some(Value::Array(calls)) = message.and_then(|m| m.get("tool_calls")) {
            for c in calls {
                let f = &c["function"];
                output.push(function_call_item(
                    new_id("fc"),
                    c["id"].as_str().unwrap_or_default(),
                    f["name"].as_str().unwrap_or_default(),
                    f["arguments"].as_str().unwrap_or_default(),
                    "completed",
                ));
            }
        }
        let end = End::from_finish(choice.and_then(|c| c.finish_reason.as_deref()));
        let status = end.status();
        (self.object(status, &output, completion.usage, &end), output)
    }

    fn message_item(&self, id: String, text: &str, status: &str) -> Value {
        json!({
            "type": "message", "id": id, "status": status, "role": "assistant",
            "content": [self.text_part(text)],
        })
    }

    fn text_part(&self, text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": self.annotations(text.len())})
    }
}

fn function_call_item(
    id: String,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({
        "type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status,
    })
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens()},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    })
}

/// How a response ended.
#[derive(Debug, Clone, Default)]
pub struct End {
    /// `incomplete_details.reason`.
    pub incomplete: Option<&'static str>,
    pub error: Option<Value>,
}

impl End {
    /// From chat's finish reason: `length` is `max_output_tokens`, `content_filter` itself.
    pub fn from_finish(reason: Option<&str>) -> Self {
        let incomplete = match reason {
            Some("length") => Some("max_output_tokens"),
            Some("content_filter") => Some("content_filter"),
            _ => None,
        };
        End {
            incomplete,
            error: None,
        }
    }

    pub fn status(&self) -> &'static str {
        match (&self.error, self.incomplete) {
            (Some(_), _) => "failed",
            (None, Some(_)) => "incomplete",
            _ => "completed",
        }
    }
}

/// The text item being streamed.
struct OpenText {
    id: String,
    index: usize,
    text: String,
}

/// A function call being streamed.
struct OpenCall {
    id: String,
    index: usize,
    call_id: String,
    name: String,
    arguments: String,
}

/// Stores a finished response (`store: true`) before the stream says it completed.
pub type Saver = Box<
    dyn FnOnce(Value, Vec<Value>) -> futures::future::BoxFuture<'static, Result<(), ApiError>>
        + Send,
>;

/// Pipeline events as Responses API events.
pub struct StreamEncoder {
    shell: Shell,
    seq: u64,
    next_index: usize,
    /// Finished items, in output order.
    done: Vec<(usize, Value)>,
    text: Option<OpenText>,
    calls: BTreeMap<u32, OpenCall>,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new(shell: Shell) -> Self {
        StreamEncoder {
            shell,
            seq: 0,
            next_index: 0,
            done: Vec::new(),
            text: None,
            calls: BTreeMap::new(),
            finish: None,
            usage: None,
        }
    }

    fn event(&mut self, kind: &str, mut body: Value) -> Event {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Event::default().event(kind).data(body.to_string())
    }

    fn output(&self) -> Vec<Value> {
        let mut done = self.done.clone();
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, v)| v).collect()
    }

    fn open_text(&mut self, out: &mut Vec<Event>) {
        let (id, index) = (new_id("msg"), self.next_index);
        self.next_index += 1;
        let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        let part = json!({"type": "output_text", "text": "", "annotations": []});
        out.push(self.event(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
        ));
        self.text = Some(OpenText {
            id,
            index,
            text: String::new(),
        });
    }

    fn close_text(&mut self, out: &mut Vec<Event>) {
        let Some(t) = self.text.take() else { return };
        let (id, index) = (t.id.clone(), t.index);
        out.push(self.event(
            "response.output_text.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "text": t.text, "logprobs": []}),
        ));
        let part = self.shell.text_part(&t.text);
        out.push(self.event(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
        ));
        let item = self.shell.message_item(id, &t.text, "completed");
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item.clone()}),
        ));
        self.done.push((index, item));
    }

    fn close_calls(&mut self, out: &mut Vec<Event>) {
        for (_, c) in std::mem::take(&mut self.calls) {
            out.push(self.event(
                "response.function_call_arguments.done",
                json!({"item_id": c.id, "output_index": c.index, "arguments": c.arguments, "name": c.name}),
            ));
            let item = function_call_item(c.id, &c.call_id, &c.name, &c.arguments, "completed");
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": c.index, "item": item.clone()}),
            ));
            self.done.push((c.index, item));
        }
    }

    /// The events for one pipeline delta (choice 0; Responses has one answer).
    fn delta(&mut self, event: crate::chat::DeltaEvent) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(m) = event.model {
            self.shell.model = m;
        }
        for choice in event.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.text.filter(|t| !t.is_empty()) {
                if self.text.is_none() {
                    self.open_text(&mut out);
                }
                let t = self.text.as_mut().expect("opened above");
                t.text.push_str(&text);
                let (id, index) = (t.id.clone(), t.index);
                out.push(self.event(
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
                ));
            }
            for call in choice.tool_calls {
                if !self.calls.contains_key(&call.index) {
                    self.close_text(&mut out);
                    let (id, index) = (new_id("fc"), self.next_index);
                    self.next_index += 1;
                    let call_id = call.id.clone().unwrap_or_else(|| new_id("call"));
                    let name = call.name.clone().unwrap_or_default();
                    let item = function_call_item(id.clone(), &call_id, &name, "", "in_progress");
                    out.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    ));
                    self.calls.insert(
                        call.index,
                        OpenCall {
                            id,
                            index,
                            call_id,
                            name,
                            arguments: String::new(),
                        },
                    );
                }
                if let Some(args) = call.arguments.filter(|a| !a.is_empty()) {
                    let c = self.calls.get_mut(&call.index).expect("inserted above");
                    c.arguments.push_str(&args);
                    let (id, index) = (c.id.clone(), c.index);
                    out.push(self.event(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": args}),
                    ));
                }
            }
            if let Some(f) = choice.finish_reason {
                self.finish = Some(f);
            }
        }
        out
    }

    /// The response's SSE events, from `response.created` to its last event.
    pub fn encode(
        mut self,
        mut events: EventStream,
        saver: Option<Saver>,
    ) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send + 'static {
        async_stream::stream! {
            let start = self.shell.object("in_progress", &[], None, &End::default());
            yield Ok(self.event("response.created", json!({"response": start.clone()})));
            yield Ok(self.event("response.in_progress", json!({"response": start})));
            while let Some(event) = events.next().await {
                match event {
                    ChatEvent::Delta(d) => {
                        for e in self.delta(d) {
                            yield Ok(e);
                        }
                    }
                    ChatEvent::Usage { usage, model } => {
                        self.usage = Some(usage);
                        if let Some(m) = model {
                            self.shell.model = m;
                        }
                    }
                    ChatEvent::Error(e) => {
                        let e = ApiError::from(e);
                        for ev in self.fail(&e) {
                            yield Ok(ev);
                        }
                        return;
                    }
                }
            }
            let mut out = Vec::new();
            self.close_text(&mut out);
            self.close_calls(&mut out);
            for e in out {
                yield Ok(e);
            }
            let end = End::from_finish(self.finish.as_deref());
            let output = self.output();
            let response = self.shell.object(end.status(), &output, self.usage, &end);
            if let Some(save) = saver
                && let Err(e) = save(response.clone(), output).await
            {
                for ev in self.fail(&e) {
                    yield Ok(ev);
                }
                return;
            }
            let kind = if end.incomplete.is_some() { "response.incomplete" } else { "response.completed" };
            yield Ok(self.event(kind, json!({"response": response})));
        }
    }

    /// An `error` event, then `response.failed`.
    fn fail(&mut self, e: &ApiError) -> Vec<Event> {
        let env = e.envelope().error;
        let body = serde_json::to_value(&env).unwrap_or_default();
        let code = body.get("code").cloned().unwrap_or(Value::Null);
        let message = body.get("message").cloned().unwrap_or(Value::Null);
        let error = json!({"code": code, "message": message, "param": body.get("param").cloned().unwrap_or(Value::Null)});
        let first = self.event("error", error.clone());
        let end = End {
            incomplete: None,
            error: Some(json!({"code": code, "message": message})),
        };
        let output = self.output();
        let response = self.shell.object("failed", &output, self.usage, &end);
        let second = self.event("response.failed", json!({"response": response}));
        vec![first, second]
    }
}
