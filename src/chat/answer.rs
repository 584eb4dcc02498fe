//! The answer paths: a whole completion, a stream of events, and a cache hit replayed as
//! either. Each accounts for the request exactly once (its ledger) and stores a complete
//! answer in the cache in the background.

use std::sync::Arc;

use futures::StreamExt;

use super::accumulate::Accumulator;
use super::cache_step::CacheWriter;
use super::events::{ChatEvent, ChoiceDelta, DeltaEvent};
use super::{CacheOutcome, ChatBody, ChatError, ChatResponse, Meta, Pipeline};
use crate::cache::Hit;
use crate::clock::unix_now;
use crate::providers::{ChunkStream, ModelRoute, ProviderError};
use crate::route::{Attempts, Exhausted, Live, note_upstream_error};
use crate::types::{ChatChunk, ChatCompletion, ChatCompletionRequest, CompletionChoice};
use crate::usage::Ledger;

/// What an answer path needs once the request is admitted.
pub(super) struct Run<'a> {
    pub pipeline: &'a Pipeline,
    pub live: Arc<Live>,
    pub routes: Vec<ModelRoute>,
    pub started: std::time::Instant,
    pub prompt_estimate: u64,
    pub ledger: Ledger,
    pub writer: Option<CacheWriter>,
    /// The request's span (each upstream attempt is a child).
    pub trace: crate::telemetry::trace::Span,
}

impl Run<'_> {
    fn attempts(&self) -> Attempts<'_> {
        Attempts {
            routes: self.routes.clone(),
            config: &self.live.routing,
            breakers: &self.pipeline.breakers,
            started: self.started,
            trace: &self.trace,
        }
    }
}

fn exhausted(e: Exhausted) -> ChatError {
    match e {
        Exhausted::Upstream(p) => ChatError::Upstream(p),
        Exhausted::AllOpen => ChatError::NoUpstream,
    }
}

/// Asks the upstreams for a whole completion.
pub(super) async fn whole(
    run: Run<'_>,
    request: ChatCompletionRequest,
    mut meta: Meta,
) -> Result<ChatResponse, ChatError> {
    let result = run
        .attempts()
        .run(|route| {
            let mut upstream_request = request.clone();
            upstream_request.model = route.upstream_model.clone();
            async move { route.provider.complete(upstream_request).await }
        })
        .await;
    let Run {
        live,
        prompt_estimate,
        mut ledger,
        writer,
        ..
    } = run;
    match result {
        Ok((completion, route, attempt)) => {
            ledger.use_model(&route.name, route.provider.name(), live.price(&route.name));
            ledger.answered_in(attempt);
            if ledger.traced() {
                let reasons: Vec<&str> = completion
                    .choices
                    .iter()
                    .filter_map(|c| c.finish_reason.as_deref())
                    .collect();
                ledger.finish_reasons(&reasons);
            }
            if ledger.wants_output()
                && let Some(text) = completion
                    .choices
                    .first()
                    .and_then(|c| c.message.get("content"))
                    .and_then(|v| v.as_str())
            {
                ledger.set_output(text.to_string());
            }
            let (usage, stored) =
                Accumulator::whole(&completion, prompt_estimate, writer.is_some());
            ledger.finish_ok(usage).await;
            if let (Some(w), Some(answer)) = (writer, stored) {
                w.store(answer, ledger.cost_usd());
            }
            meta.answered_by = route.name;
            Ok(ChatResponse {
                meta,
                body: ChatBody::Whole(completion),
            })
        }
        Err(e) => {
            let err = exhausted(e);
            ledger.finish_err(&err).await;
            Err(err)
        }
    }
}

/// Opens a stream: until its first chunk arrives nothing has reached the client, so a
/// failure is still retried or failed over; after it, failures are error events.
pub(super) async fn stream(
    run: Run<'_>,
    request: ChatCompletionRequest,
    mut meta: Meta,
) -> Result<ChatResponse, ChatError> {
    let result = run
        .attempts()
        .run(|route| open_upstream(route, request.clone()))
        .await;
    let Run {
        pipeline,
        live,
        prompt_estimate,
        mut ledger,
        writer,
        ..
    } = run;
    let ((first, mut upstream), route, attempt) = match result {
        Ok(v) => v,
        Err(e) => {
            let err = exhausted(e);
            ledger.finish_err(&err).await;
            return Err(err);
        }
    };
    ledger.use_model(&route.name, route.provider.name(), live.price(&route.name));
    ledger.answered_in(attempt);
    meta.answered_by = route.name.clone();
    let grace_over = pipeline.grace_over.clone();
    let mut acc = Accumulator::new(&request.model, prompt_estimate, writer.is_some());
    if ledger.wants_output() {
        acc.capture_text();
    }
    let events = async_stream::stream! {
        // `ledger` moves in here: if the client goes away, the stream is dropped mid-way
        // and the ledger's drop records the request as abandoned. Dropping `upstream` with
        // it cancels the upstream request.
        let mut ledger = ledger;
        let mut pending = Some(Ok(first));
        loop {
            let item = if let Some(item) = pending.take() {
                Some(item)
            } else {
                tokio::select! {
                    biased;
                    _ = grace_over.cancelled() => {
                        let err = ChatError::ShuttingDown;
                        ledger.finish_err(&err).await;
                        yield ChatEvent::Error(err);
                        return;
                    }
                    item = upstream.next() => item,
                }
            };
            let Some(item) = item else { break };
            match item {
                Ok(chunk) => {
                    if let Some(event) = take_chunk(&mut acc, chunk) {
                        ledger.first_token();
                        yield ChatEvent::Delta(event);
                    }
                }
                Err(e) => {
                    note_upstream_error(&route, &e);
                    let err = ChatError::Upstream(e);
                    ledger.finish_err(&err).await;
                    yield ChatEvent::Error(err);
                    return;
                }
            }
        }
        if !acc.finished() {
            let e = ProviderError::Connection("the upstream closed the stream before it finished".into());
            note_upstream_error(&route, &e);
            let err = ChatError::Upstream(e);
            ledger.finish_err(&err).await;
            yield ChatEvent::Error(err);
            return;
        }
        let usage = acc.usage();
        yield ChatEvent::Usage { usage, model: Some(acc.model.clone()) };
        if let Some(text) = acc.take_text() {
            ledger.set_output(text);
        }
        if let Some(reason) = acc.finish_reason() {
            ledger.finish_reasons(&[reason]);
        }
        ledger.finish_ok(usage).await;
        if let (Some(w), Some(answer)) = (writer, acc.stored_answer()) {
            w.store(answer, ledger.cost_usd());
        }
    };
    Ok(ChatResponse {
        meta,
        body: ChatBody::Stream(Box::pin(events)),
    })
}

/// Opens one upstream's stream and waits for its first chunk.
async fn open_upstream(
    route: ModelRoute,
    mut request: ChatCompletionRequest,
) -> Result<(ChatChunk, ChunkStream), ProviderError> {
    request.model = route.upstream_model.clone();
    let mut s = route.provider.stream(request).await?;
    match s.next().await {
        Some(Ok(first)) => Ok((first, s)),
        Some(Err(e)) => Err(e),
        None => Err(ProviderError::Connection(
            "the upstream closed the stream before the first chunk".into(),
        )),
    }
}

/// One upstream chunk into the accumulator: the event to pass on, or none for the
/// upstream's usage chunk (usage follows as its own event; its model still names the
/// answer).
fn take_chunk(acc: &mut Accumulator, mut chunk: ChatChunk) -> Option<DeltaEvent> {
    if let Some(u) = chunk.usage.take() {
        acc.usage_reported(u);
    }
    if chunk.choices.is_empty() {
        if !chunk.model.is_empty() {
            acc.model.clone_from(&chunk.model);
        }
        return None;
    }
    let event = DeltaEvent::from_chunk(chunk);
    acc.delta(&event);
    Some(event)
}

/// A cache hit, as the same answer a live one would be (streamed or not). It costs nothing
/// and is logged as a cache hit with what it saved.
pub(super) fn replay(
    request: &ChatCompletionRequest,
    hit: Hit,
    mut ledger: Ledger,
    chunk_chars: usize,
) -> ChatResponse {
    ledger.record.saved_usd = hit.cost_usd;
    if ledger.wants_output() {
        ledger.set_output(hit.answer.content.clone());
    }
    ledger.record.route_reason = Some(match hit.kind {
        crate::cache::HitKind::Exact => "cache_exact",
        crate::cache::HitKind::Semantic => "cache_semantic",
    });
    let meta = Meta {
        requested_model: request.model.clone(),
        answered_by: hit.answer.model.clone(),
        route: None,
        cache: CacheOutcome::Hit {
            kind: hit.kind,
            similarity: hit.similarity,
            entry_id: hit.entry_id.clone(),
        },
        grounded: None,
        citations: hit.answer.citations.clone(),
    };
    let answer = hit.answer;
    let body = if request.is_stream() {
        let events = async_stream::stream! {
            let mut ledger = ledger;
            ledger.first_token();
            let mut first = DeltaEvent::single(ChoiceDelta {
                role: Some("assistant".into()),
                text: Some(String::new()),
                ..Default::default()
            });
            first.model = Some(answer.model.clone());
            yield ChatEvent::Delta(first);
            for piece in crate::cache::replay_pieces(&answer.content, chunk_chars) {
                yield ChatEvent::Delta(DeltaEvent::single(ChoiceDelta {
                    text: Some(piece.to_string()),
                    ..Default::default()
                }));
            }
            yield ChatEvent::Delta(DeltaEvent::single(ChoiceDelta {
                finish_reason: Some(answer.finish_reason.clone()),
                ..Default::default()
            }));
            yield ChatEvent::Usage { usage: answer.usage, model: Some(answer.model.clone()) };
            ledger.finish_cache_hit().await;
        };
        ChatBody::Stream(Box::pin(events))
    } else {
        let completion = ChatCompletion {
            id: String::new(),
            object: "chat.completion".into(),
            created: unix_now(),
            model: answer.model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                message: answer.message(),
                finish_reason: Some(answer.finish_reason.clone()),
                extra: Default::default(),
            }],
            usage: Some(answer.usage),
            extra: Default::default(),
        };
        tokio::spawn(async move { ledger.finish_cache_hit().await });
        ChatBody::Whole(completion)
    };
    ChatResponse { meta, body }
}
