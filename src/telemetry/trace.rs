//! Request traces (OpenTelemetry's data model, exported over OTLP by `otlp.rs`): one server
//! span per request, continuing an incoming W3C `traceparent`, and child spans for the
//! steps worth seeing (cache lookup, embedding, retrieval, each upstream attempt), with the
//! GenAI semantic conventions' attributes. A [`Span`] is a cheap handle; the span ends
//! when its last handle is dropped, so a streamed answer's spans end with the stream.
//! With tracing off (the default) every handle is empty and each call is a branch.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rand::RngCore;

/// A span's identity, as `traceparent` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl SpanContext {
    /// Parses a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); `None` for anything
    /// else, including the all-zero ids the spec calls invalid. A later version's header
    /// is read by its first four fields, as the spec asks.
    pub fn from_traceparent(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let version = u8::from_str_radix(version, 16)
            .ok()
            .filter(|_| version.len() == 2)?;
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        if flags.len() != 2 || trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(SpanContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    Server,
    Client,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    F64(f64),
    Bool(bool),
    StrList(Vec<String>),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Value::StrList(v)
    }
}

/// A span that has ended, on its way to the exporter.
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    pub context: SpanContext,
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub kind: Kind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// An error's description (status ERROR), if the span failed.
    pub error: Option<String>,
}

/// Where finished spans go (the OTLP exporter's queue; a test's vector).
pub trait SpanSink: Send + Sync {
    fn finish(&self, span: FinishedSpan);
}

/// Starts root spans; empty when tracing is off.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<TracerInner>>,
}

struct TracerInner {
    sink: Arc<dyn SpanSink>,
    /// Share of new traces recorded (a continued trace follows its parent's decision).
    sample_ratio: f64,
}

impl Tracer {
    pub fn new(sink: Arc<dyn SpanSink>, sample_ratio: f64) -> Self {
        Tracer {
            inner: Some(Arc::new(TracerInner {
                sink,
                sample_ratio: sample_ratio.clamp(0.0, 1.0),
            })),
        }
    }

    pub fn disabled() -> Self {
        Tracer::default()
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A request's span: a child of `parent` (an incoming `traceparent`) or a new trace.
    pub fn root(&self, name: impl Into<String>, kind: Kind, parent: Option<SpanContext>) -> Span {
        let Some(inner) = &self.inner else {
            return Span::none();
        };
        let sampled = match parent {
            Some(p) => p.sampled,
            None => inner.sample_ratio >= 1.0 || rand::random::<f64>() < inner.sample_ratio,
        };
        if !sampled {
            return Span::none();
        }
        let trace_id = parent.map_or_else(
            || {
                let mut id = [0u8; 16];
                rand::rng().fill_bytes(&mut id);
                id
            },
            |p| p.trace_id,
        );
        Span::start(
            inner.clone(),
            trace_id,
            parent.map(|p| p.span_id),
            name.into(),
            kind,
        )
    }
}

/// A handle on a recording span, or nothing (tracing off, not sampled).
#[derive(Clone, Default)]
pub struct Span(Option<Arc<Recording>>);

struct Recording {
    tracer: Arc<TracerInner>,
    context: SpanContext,
    parent: Option<[u8; 8]>,
    name: String,
    kind: Kind,
    start_unix_nanos: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    attributes: Vec<(&'static str, Value)>,
    error: Option<String>,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Span {
    pub fn none() -> Self {
        Span(None)
    }

    fn start(
        tracer: Arc<TracerInner>,
        trace_id: [u8; 16],
        parent: Option<[u8; 8]>,
        name: String,
        kind: Kind,
    ) -> Self {
        let mut span_id = [0u8; 8];
        while span_id == [0; 8] {
            rand::rng().fill_bytes(&mut span_id);
        }
        Span(Some(Arc::new(Recording {
            tracer,
            context: SpanContext {
                trace_id,
                span_id,
                sampled: true,
            },
            parent,
            name,
            kind,
            start_unix_nanos: unix_nanos(),
            state: Mutex::new(State::default()),
        })))
    }

    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// A child span (empty if this one is).
    pub fn child(&self, name: impl Into<String>, kind: Kind) -> Span {
        match &self.0 {
            Some(r) => Span::start(
                r.tracer.clone(),
                r.context.trace_id,
                Some(r.context.span_id),
                name.into(),
                kind,
            ),
            None => Span::none(),
        }
    }

    /// Sets an attribute (a later value for the same key replaces the earlier one).
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(r) = &self.0 {
            let value = value.into();
            let mut state = r.state.lock();
            match state.attributes.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => state.attributes.push((key, value)),
            }
        }
    }

    /// Marks the span failed, with a description (and `error.type`).
    pub fn error(&self, error_type: &str, message: impl Into<String>) {
        if let Some(r) = &self.0 {
            self.set("error.type", error_type);
            r.state.lock().error = Some(message.into());
        }
    }

    pub fn context(&self) -> Option<SpanContext> {
        self.0.as_ref().map(|r| r.context)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let state = std::mem::take(&mut *self.state.lock());
        self.tracer.sink.finish(FinishedSpan {
            context: self.context,
            parent: self.parent,
            name: std::mem::take(&mut self.name),
            kind: self.kind,
            start_unix_nanos: self.start_unix_nanos,
            end_unix_nanos: unix_nanos().max(self.start_unix_nanos),
            attributes: state.attributes,
            error: state.error,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    pub struct Collect(pub Mutex<Vec<FinishedSpan>>);
    impl SpanSink for Collect {
        fn finish(&self, span: FinishedSpan) {
            self.0.lock().push(span);
        }
    }

    #[test]
    fn traceparent_round_trips_and_rejects_invalid_ids() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = SpanContext::from_traceparent(h).unwrap();
        assert!(c.sampled);
        assert_eq!(c.traceparent(), h);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(SpanContext::from_traceparent(bad).is_none(), "{bad}");
        }
        // A later version may carry more fields.
        assert!(
            SpanContext::from_traceparent(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more"
            )
            .is_some_and(|c| !c.sampled)
        );
    }

    #[test]
    fn spans_end_with_their_last_handle_and_keep_their_parent() {
        let sink = Arc::new(Collect::default());
        let tracer = Tracer::new(sink.clone(), 1.0);
        let parent = SpanContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let root = tracer.root("POST /v1/chat/completions", Kind::Server, parent);
        let child = root.child("cache lookup", Kind::Internal);
        child.set("k", 1i64);
        child.set("k", 2i64);
        child.error("timeout", "too slow");
        let held = root.clone();
        drop(child);
        drop(root);
        assert_eq!(sink.0.lock().len(), 1, "the root is still held");
        drop(held);
        let spans = sink.0.lock().clone();
        assert_eq!(spans.len(), 2);
        let (c, r) = (&spans[0], &spans[1]);
        assert_eq!(r.context.trace_id, parent.unwrap().trace_id);
        assert_eq!(r.parent, Some(parent.unwrap().span_id));
        assert_eq!(c.parent, Some(r.context.span_id));
        assert_eq!(c.attributes[0], ("k", Value::Int(2)));
        assert_eq!(c.error.as_deref(), Some("too slow"));
        // An unsampled parent is followed: nothing is recorded.
        let off = SpanContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        );
        assert!(!tracer.root("x", Kind::Server, off).is_recording());
        assert!(
            !Tracer::disabled()
                .root("x", Kind::Server, None)
                .is_recording()
        );
    }
}
