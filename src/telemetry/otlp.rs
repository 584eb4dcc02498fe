//! The OTLP/HTTP trace exporter (`[tracing]`): finished spans queue in a bounded channel
//! (a full queue drops spans and counts them, never slowing a request), a task sends them
//! in batches as protobuf `ExportTraceServiceRequest`s to `endpoint`, retrying what the
//! spec calls retryable (429, 502, 503, 504, connection errors) on the next round, and
//! flushes at shutdown. The messages below are the OTLP protos' (opentelemetry-proto,
//! `trace/v1`, `common/v1`, `resource/v1`) field for field.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::trace::{FinishedSpan, Kind, SpanSink, Tracer, Value};

/// `[tracing]`: OpenTelemetry traces over OTLP/HTTP (protobuf); off without an endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: Option<String>,
    /// Extra request headers (an API key a hosted collector wants).
    pub headers: BTreeMap<String, String>,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Share of new traces recorded; a request with a `traceparent` follows its sampled flag.
    pub sample_ratio: f64,
    /// Spans per export request.
    pub batch_size: usize,
    /// Spans waiting beyond this are dropped (counted in `qm_trace_spans_dropped_total`).
    pub queue_size: usize,
    /// The longest a span waits before it is sent.
    pub export_interval_ms: u64,
    pub export_timeout_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            headers: BTreeMap::new(),
            service_name: "quartermaster".into(),
            sample_ratio: 1.0,
            batch_size: 512,
            queue_size: 8192,
            export_interval_ms: 1000,
            export_timeout_ms: 10_000,
        }
    }
}

impl TracingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(e) = &self.otlp_endpoint {
            let url = reqwest::Url::parse(e).map_err(|e| format!("otlp_endpoint: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err("otlp_endpoint: must be an http(s) URL".into());
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err("sample_ratio: must be between 0 and 1".into());
        }
        if self.batch_size == 0 || self.queue_size < self.batch_size {
            return Err("batch_size must be at least 1 and queue_size at least batch_size".into());
        }
        if self.export_timeout_ms == 0 {
            return Err("export_timeout_ms must be above 0".into());
        }
        for (k, v) in &self.headers {
            reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("headers: `{k}` is not a header name"))?;
            reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| format!("headers.{k}: not a valid header value"))?;
        }
        Ok(())
    }
}

/// The running exporter: the tracer to hand out and the task to flush at shutdown.
pub struct Exporter {
    pub tracer: Tracer,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

struct Queue(mpsc::Sender<FinishedSpan>);

impl SpanSink for Queue {
    fn finish(&self, span: FinishedSpan) {
        if self.0.try_send(span).is_err() {
            metrics::counter!("qm_trace_spans_dropped_total").increment(1);
        }
    }
}

/// Starts the exporter when an endpoint is configured.
pub fn start(config: &TracingConfig) -> Option<Exporter> {
    let endpoint = config.otlp_endpoint.clone()?;
    let (tx, rx) = mpsc::channel(config.queue_size);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.export_timeout_ms))
        .build()
        .ok()?;
    let sender = Sender {
        client,
        endpoint,
        headers: config.headers.clone(),
        resource: resource(&config.service_name),
    };
    let task = tokio::spawn(run(
        sender,
        rx,
        stopped,
        config.batch_size,
        Duration::from_millis(config.export_interval_ms.max(10)),
        config.queue_size,
    ));
    Some(Exporter {
        tracer: Tracer::new(Arc::new(Queue(tx)), config.sample_ratio),
        task,
        stop,
    })
}

impl Exporter {
    /// Sends what is queued, waiting at most `deadline`.
    pub async fn shutdown(self, deadline: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            tracing::warn!("trace export did not finish before the shutdown deadline");
        }
    }
}

struct Sender {
    client: reqwest::Client,
    endpoint: String,
    headers: BTreeMap<String, String>,
    resource: pb::Resource,
}

enum Sent {
    Done,
    Retry,
}

impl Sender {
    async fn send(&self, spans: &[FinishedSpan]) -> Sent {
        let body = encode(&self.resource, spans);
        let mut request = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/x-protobuf")
            .body(body);
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                metrics::counter!("qm_trace_spans_exported_total").increment(spans.len() as u64);
                Sent::Done
            }
            Ok(r) if matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => Sent::Retry,
            Ok(r) => {
                tracing::warn!(status = %r.status(), "the trace collector refused a batch; dropped");
                metrics::counter!("qm_trace_spans_dropped_total").increment(spans.len() as u64);
                Sent::Done
            }
            Err(e) => {
                tracing::debug!(error = %e, "trace export failed; retried on the next round");
                Sent::Retry
            }
        }
    }
}

async fn run(
    sender: Sender,
    mut rx: mpsc::Receiver<FinishedSpan>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    batch: usize,
    interval: Duration,
    keep: usize,
) {
    let mut pending: Vec<FinishedSpan> = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // After a failed export, nothing is sent before this (doubling up to a minute): a
    // collector that is down is not hammered by every span that arrives.
    let mut retry_at: Option<(tokio::time::Instant, Duration)> = None;
    loop {
        let stopping = tokio::select! {
            span = rx.recv() => match span {
                Some(s) => {
                    pending.push(s);
                    // A batch that is not full waits for the tick.
                    if pending.len() < batch {
                        continue;
                    }
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
            _ = stopped.changed() => true,
        };
        if stopping {
            while let Ok(s) = rx.try_recv() {
                pending.push(s);
            }
        }
        let waiting = retry_at.is_some_and(|(at, _)| tokio::time::Instant::now() < at);
        while !pending.is_empty() && (stopping || !waiting) {
            let n = pending.len().min(batch);
            match sender.send(&pending[..n]).await {
                Sent::Done => {
                    pending.drain(..n);
                    retry_at = None;
                }
                Sent::Retry if stopping => return,
                Sent::Retry => {
                    let wait =
                        retry_at.map_or(interval, |(_, w)| (w * 2).min(Duration::from_secs(60)));
                    retry_at = Some((tokio::time::Instant::now() + wait, wait));
                    break;
                }
            }
        }
        // Spans kept for a retry are bounded like the queue: the oldest go first.
        if pending.len() > keep {
            let over = pending.len() - keep;
            pending.drain(..over);
            metrics::counter!("qm_trace_spans_dropped_total").increment(over as u64);
        }
        if stopping {
            return;
        }
    }
}

fn resource(service_name: &str) -> pb::Resource {
    pb::Resource {
        attributes: vec![
            kv("service.name", &Value::Str(service_name.to_string())),
            kv(
                "service.version",
                &Value::Str(env!("CARGO_PKG_VERSION").into()),
            ),
            kv("telemetry.sdk.name", &Value::Str("quartermaster".into())),
            kv("telemetry.sdk.language", &Value::Str("rust".into())),
        ],
    }
}

fn kv(key: &str, value: &Value) -> pb::KeyValue {
    use pb::any_value::Value as V;
    let value = match value {
        Value::Str(s) => V::StringValue(s.clone()),
        Value::Int(i) => V::IntValue(*i),
        Value::F64(f) => V::DoubleValue(*f),
        Value::Bool(b) => V::BoolValue(*b),
        Value::StrList(items) => V::ArrayValue(pb::ArrayValue {
            values: items
                .iter()
                .map(|s| pb::AnyValue {
                    value: Some(V::StringValue(s.clone())),
                })
                .collect(),
        }),
    };
    pb::KeyValue {
        key: key.to_string(),
        value: Some(pb::AnyValue { value: Some(value) }),
    }
}

/// One export request's protobuf bytes.
pub fn encode(resource: &pb::Resource, spans: &[FinishedSpan]) -> Vec<u8> {
    let spans = spans
        .iter()
        .map(|s| pb::Span {
            trace_id: s.context.trace_id.to_vec(),
            span_id: s.context.span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 0x100 | u32::from(s.context.sampled),
            name: s.name.clone(),
            kind: match s.kind {
                Kind::Internal => 1,
                Kind::Server => 2,
                Kind::Client => 3,
            },
            start_time_unix_nano: s.start_unix_nanos,
            end_time_unix_nano: s.end_unix_nanos,
            attributes: s.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
            status: Some(match &s.error {
                Some(message) => pb::Status {
                    message: message.clone(),
                    code: 2,
                },
                None => pb::Status {
                    message: String::new(),
                    code: 0,
                },
            }),
        })
        .collect();
    pb::ExportTraceServiceRequest {
        resource_spans: vec![pb::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![pb::ScopeSpans {
                scope: Some(pb::InstrumentationScope {
                    name: "quartermaster".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.37.0".into(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// The OTLP messages this exporter sends (a subset of each message's fields, with the
/// protos' own field numbers; fields left out are empty on the wire).
pub mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
        #[prost(string, tag = "3")]
        pub schema_url: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
        #[prost(string, tag = "3")]
        pub schema_url: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(fixed32, tag = "16")]
        pub flags: u32,
        #[prost(string, tag = "5")]
        pub name: String,
        /// 1 internal, 2 server, 3 client.
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        /// 0 unset, 1 ok, 2 error.
        #[prost(int32, tag = "3")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5")]
        pub value: Option<any_value::Value>,
    }

    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            #[prost(int64, tag = "3")]
            IntValue(i64),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
            #[prost(message, tag = "5")]
            ArrayValue(super::ArrayValue),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace::SpanContext;

    #[test]
    fn encodes_spans_that_decode_with_their_fields() {
        let span = FinishedSpan {
            context: SpanContext {
                trace_id: [7; 16],
                span_id: [9; 8],
                sampled: true,
            },
            parent: Some([3; 8]),
            name: "chat gpt-4o".into(),
            kind: Kind::Client,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            attributes: vec![
                ("gen_ai.request.model", Value::Str("gpt-4o".into())),
                ("gen_ai.usage.input_tokens", Value::Int(12)),
                (
                    "gen_ai.response.finish_reasons",
                    Value::StrList(vec!["stop".into()]),
                ),
            ],
            error: Some("boom".into()),
        };
        let bytes = encode(&resource("qm"), &[span]);
        let back = pb::ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let s = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!((s.kind, s.flags), (3, 0x101));
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        assert_eq!(s.attributes.len(), 3);
        assert_eq!(
            back.resource_spans[0].resource.as_ref().unwrap().attributes[0].key,
            "service.name"
        );
    }
}
