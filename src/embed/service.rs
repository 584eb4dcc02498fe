//! The async face of the model: one worker thread runs forward passes, and a scheduler in
//! front of it decides what goes into each pass so that no caller can hold the model for
//! long.
//!
//! Every request has an owner (the tenant) and a priority. Interactive work (the chat path's
//! cache lookup and routing, retrieval queries, small `/v1/embeddings` calls) is served
//! before bulk work (large `/v1/embeddings` calls, document ingestion); within a priority,
//! owners take turns one input at a time. Bulk requests are cut into slices of about
//! `slice_tokens`, and between the layers of a pass that carries bulk work the worker serves
//! any interactive work that arrived meanwhile in a short pass of its own: an interactive
//! request waits for one encoder layer of one slice, not for someone's 2,048 inputs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{EmbedConfig, EmbedError, EmbedModel, Embedding, TokenEncoding};

/// Who waits for an embedding, and how urgently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// A person is waiting on it (a chat's cache lookup, a retrieval query).
    Interactive,
    /// Throughput matters, not latency (ingestion, large embedding requests).
    Bulk,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Bulk => "bulk",
        }
    }
}

struct Job {
    owner: Arc<str>,
    priority: Priority,
    texts: Vec<String>,
    /// Texts before this index have been put into a pass.
    next: usize,
    results: Vec<Option<Embedding>>,
    remaining: usize,
    reply: oneshot::Sender<Result<Vec<Embedding>, EmbedError>>,
    enqueued: Instant,
    /// Frees the job's place in the queue when the job is dropped, answered or not.
    _slot: QueueSlot,
}

struct QueueSlot(Arc<AtomicUsize>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The async handle; cheap to clone.
#[derive(Clone)]
pub struct EmbedService {
    tx: mpsc::UnboundedSender<Job>,
    /// Requests submitted and not yet answered (bounded by `queue_capacity`).
    pending: Arc<AtomicUsize>,
    capacity: usize,
    pub model_name: String,
    pub dimensions: usize,
    pub max_seq_length: usize,
    /// How token-id inputs are decoded.
    pub token_encoding: TokenEncoding,
}

/// Estimated tokens in a text before tokenizing (about 4 characters a token), capped at the
/// model's window: enough to size passes.
fn estimate_tokens(text: &str, cap: usize) -> usize {
    (text.len() / 4 + 2).min(cap)
}

impl EmbedService {
    pub fn start(config: &EmbedConfig) -> Result<Self, EmbedError> {
        let model = Arc::new(EmbedModel::load(
            &config.model_dir,
            config.backend,
            config.threads,
            config.max_seq_length,
        )?);
        let (tx, rx) = mpsc::unbounded_channel();
        let service = Self {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
            capacity: config.queue_capacity.max(1),
            model_name: config.model_name.clone(),
            dimensions: model.dimensions,
            max_seq_length: model.max_seq_length,
            token_encoding: config.token_encoding,
        };
        let limits = PassLimits {
            max_tokens: config.max_batch_tokens.max(model.max_seq_length),
            slice_tokens: config.slice_tokens.max(1),
            seq_cap: model.max_seq_length,
        };
        std::thread::Builder::new()
            .name("qm-embed".into())
            .spawn(move || worker(model, rx, limits))
            .map_err(|e| EmbedError::Model(format!("starting the embedding thread: {e}")))?;
        tracing::info!(model = %config.model_name, backend = ?config.backend, "embedding model loaded");
        Ok(service)
    }

    /// Embeds `texts` as bulk work of no particular owner (start-up training, tools).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, EmbedError> {
        self.embed_for("", Priority::Bulk, texts).await
    }

    /// Embeds `texts` for `owner` (the tenant) at `priority`. Cancel-safe: dropping the
    /// future abandons the work not yet started.
    pub async fn embed_for(
        &self,
        owner: &str,
        priority: Priority,
        texts: Vec<String>,
    ) -> Result<Vec<Embedding>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let slot = QueueSlot(self.pending.clone());
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            metrics::counter!("qm_embed_rejected_total").increment(1);
            return Err(EmbedError::Overloaded);
        }
        let (reply, rx) = oneshot::channel();
        let n = texts.len();
        let job = Job {
            owner: Arc::from(owner),
            priority,
            texts,
            next: 0,
            results: (0..n).map(|_| None).collect(),
            remaining: n,
            reply,
            enqueued: Instant::now(),
            _slot: slot,
        };
        if self.tx.send(job).is_err() {
            return Err(EmbedError::Stopped);
        }
        rx.await.map_err(|_| EmbedError::Stopped)?
    }

    /// The priority for a request of `texts`: a few short inputs are interactive, the rest
    /// bulk.
    pub fn priority_for(&self, texts: &[String]) -> Priority {
        let tokens: usize = texts
            .iter()
            .map(|t| estimate_tokens(t, self.max_seq_length))
            .sum();
        if texts.len() <= 8 && tokens <= 512 {
            Priority::Interactive
        } else {
            Priority::Bulk
        }
    }
}

#[derive(Clone, Copy)]
struct PassLimits {
    /// Most tokens in one pass.
    max_tokens: usize,
    /// Most bulk tokens in one pass.
    slice_tokens: usize,
    /// The model's window (estimates are capped at it).
    seq_cap: usize,
}

/// Jobs waiting, by priority, owners in turn.
#[derive(Default)]
struct Lanes {
    jobs: HashMap<u64, Job>,
    next_id: u64,
    /// Per priority: owners in turn order, each with its jobs' ids in arrival order (only
    /// jobs with texts not yet put into a pass).
    turns: [VecDeque<(Arc<str>, VecDeque<u64>)>; 2],
}

impl Lanes {
    fn lane(priority: Priority) -> usize {
        match priority {
            Priority::Interactive => 0,
            Priority::Bulk => 1,
        }
    }

    fn push(&mut self, job: Job) {
        let id = self.next_id;
        self.next_id += 1;
        let lane = &mut self.turns[Self::lane(job.priority)];
        match lane.iter_mut().find(|(o, _)| *o == job.owner) {
            Some((_, ids)) => ids.push_back(id),
            None => lane.push_back((job.owner.clone(), VecDeque::from([id]))),
        }
        self.jobs.insert(id, job);
    }

    fn is_idle(&self) -> bool {
        self.turns.iter().all(VecDeque::is_empty)
    }

    /// The inputs of the next pass: interactive ones first, owners taking turns one input
    /// at a time, then (unless `interactive_only`) at most a slice of bulk work the same way.
    fn take_pass(&mut self, limits: PassLimits, interactive_only: bool) -> Vec<(u64, usize)> {
        let mut picks = Vec::new();
        let mut tokens = 0;
        let lanes: &[(usize, usize)] = if interactive_only {
            &[(0, limits.max_tokens)]
        } else {
            &[(0, limits.max_tokens), (1, limits.slice_tokens)]
        };
        for &(lane, budget) in lanes {
            let mut used = 0;
            while let Some((owner, mut ids)) = self.turns[lane].pop_front() {
                // Skip (and forget) jobs whose caller has gone away.
                while let Some(&id) = ids.front() {
                    if self.jobs.get(&id).is_some_and(|j| j.reply.is_closed()) {
                        ids.pop_front();
                        self.jobs.remove(&id);
                    } else {
                        break;
                    }
                }
                let Some(&id) = ids.front() else { continue };
                let job = self.jobs.get_mut(&id).expect("queued job exists");
                let t = estimate_tokens(&job.texts[job.next], limits.seq_cap);
                if !picks.is_empty() && (used + t > budget || tokens + t > limits.max_tokens) {
                    self.turns[lane].push_front((owner, ids));
                    break;
                }
                picks.push((id, job.next));
                job.next += 1;
                used += t;
                tokens += t;
                if job.next == job.texts.len() {
                    ids.pop_front();
                }
                if !ids.is_empty() {
                    self.turns[lane].push_back((owner, ids));
                }
            }
        }
        picks
    }
}

fn worker(model: Arc<EmbedModel>, mut rx: mpsc::UnboundedReceiver<Job>, limits: PassLimits) {
    let mut lanes = Lanes::default();
    loop {
        if lanes.is_idle() {
            match rx.blocking_recv() {
                Some(job) => lanes.push(job),
                None => break,
            }
        }
        while let Ok(job) = rx.try_recv() {
            lanes.push(job);
        }
        let picks = lanes.take_pass(limits, false);
        if picks.is_empty() {
            continue; // only abandoned jobs were left: they were dropped while choosing
        }
        let with_bulk = picks
            .iter()
            .any(|(id, _)| lanes.jobs[id].priority == Priority::Bulk);
        let texts = lanes.texts_of(&picks);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        // Between the layers of a pass that carries bulk work, interactive work that arrived
        // meanwhile is served at once in a short pass of its own: it waits for one layer,
        // not for the whole pass.
        let mut between_layers = || {
            if !with_bulk {
                return;
            }
            while let Ok(job) = rx.try_recv() {
                lanes.push(job);
            }
            if lanes.has_interactive() {
                let urgent = lanes.take_pass(limits, true);
                if !urgent.is_empty() {
                    metrics::counter!("qm_embed_preemptions_total").increment(1);
                    let texts = lanes.texts_of(&urgent);
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    let result = timed(|| model.embed(&refs, limits.max_tokens), refs.len());
                    lanes.deliver(urgent, result);
                }
            }
        };
        let result = timed(
            || model.embed_yielding(&refs, limits.max_tokens, &mut between_layers),
            refs.len(),
        );
        lanes.deliver(picks, result);
    }
}

/// Runs one pass, recording its duration and size.
fn timed<T>(pass: impl FnOnce() -> T, inputs: usize) -> T {
    let started = Instant::now();
    let out = pass();
    metrics::histogram!("qm_embed_batch_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("qm_embed_batch_inputs").record(inputs as f64);
    out
}

impl Lanes {
    fn has_interactive(&self) -> bool {
        !self.turns[0].is_empty()
    }

    /// The texts of a pass's picks (owned: a pass may run while the lanes change).
    fn texts_of(&self, picks: &[(u64, usize)]) -> Vec<String> {
        for &(id, i) in picks {
            if i == 0 {
                let job = &self.jobs[&id];
                metrics::histogram!("qm_embed_queue_wait_seconds", "priority" => job.priority.as_str())
                    .record(job.enqueued.elapsed().as_secs_f64());
            }
        }
        picks
            .iter()
            .map(|&(id, i)| self.jobs[&id].texts[i].clone())
            .collect()
    }

    /// Files a pass's results; answers the jobs it completed (or every job it touched,
    /// with the error, if it failed).
    fn deliver(&mut self, picks: Vec<(u64, usize)>, result: Result<Vec<Embedding>, EmbedError>) {
        match result {
            Ok(vectors) => {
                for ((id, i), e) in picks.into_iter().zip(vectors) {
                    let finished = {
                        let job = self.jobs.get_mut(&id).expect("picked job exists");
                        job.results[i] = Some(e);
                        job.remaining -= 1;
                        job.remaining == 0
                    };
                    if finished {
                        let job = self.jobs.remove(&id).expect("picked job exists");
                        let out = job
                            .results
                            .into_iter()
                            .map(|e| e.expect("every input embedded"))
                            .collect();
                        let _ = job.reply.send(Ok(out));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedding pass failed");
                let mut failed: Vec<u64> = picks.iter().map(|&(id, _)| id).collect();
                failed.dedup();
                for id in failed {
                    if let Some(job) = self.jobs.remove(&id) {
                        for lane in &mut self.turns {
                            for (_, ids) in lane.iter_mut() {
                                ids.retain(|x| *x != id);
                            }
                            lane.retain(|(_, ids)| !ids.is_empty());
                        }
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(
        owner: &str,
        priority: Priority,
        texts: &[&str],
    ) -> (Job, oneshot::Receiver<Result<Vec<Embedding>, EmbedError>>) {
        let (reply, rx) = oneshot::channel();
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let n = texts.len();
        (
            Job {
                owner: Arc::from(owner),
                priority,
                texts,
                next: 0,
                results: (0..n).map(|_| None).collect(),
                remaining: n,
                reply,
                enqueued: Instant::now(),
                _slot: {
                    let pending = Arc::new(AtomicUsize::new(1));
                    QueueSlot(pending)
                },
            },
            rx,
        )
    }

    const LIMITS: PassLimits = PassLimits {
        max_tokens: 1000,
        slice_tokens: 30,
        seq_cap: 256,
    };

    #[test]
    fn interactive_work_goes_first_and_bulk_is_sliced() {
        let mut lanes = Lanes::default();
        // ~27 tokens each (100 characters).
        let long = "x".repeat(100);
        let bulk: Vec<&str> = (0..50).map(|_| long.as_str()).collect();
        let (a, _ra) = job("tenant-a", Priority::Bulk, &bulk);
        lanes.push(a);
        let (b, _rb) = job("tenant-b", Priority::Interactive, &["a short question"]);
        lanes.push(b);
        let pass = lanes.take_pass(LIMITS, false);
        // The interactive input first, then one slice (one ~27-token input) of the bulk job.
        assert_eq!(pass, vec![(1, 0), (0, 0)]);
        let pass = lanes.take_pass(LIMITS, false);
        assert_eq!(pass, vec![(0, 1)]);
    }

    #[test]
    fn owners_take_turns_within_a_priority() {
        let mut lanes = Lanes::default();
        let (a, _ra) = job("a", Priority::Interactive, &["1", "2", "3"]);
        let (b, _rb) = job("b", Priority::Interactive, &["1"]);
        let (a2, _ra2) = job("a", Priority::Interactive, &["4"]);
        lanes.push(a);
        lanes.push(b);
        lanes.push(a2);
        let pass = lanes.take_pass(
            PassLimits {
                max_tokens: 1000,
                slice_tokens: 1000,
                seq_cap: 256,
            },
            false,
        );
        assert_eq!(pass, vec![(0, 0), (1, 0), (0, 1), (0, 2), (2, 0)]);
    }

    #[test]
    fn abandoned_jobs_are_dropped_before_a_pass() {
        let mut lanes = Lanes::default();
        let (a, ra) = job("a", Priority::Bulk, &["1", "2"]);
        let (b, _rb) = job("b", Priority::Bulk, &["1"]);
        lanes.push(a);
        lanes.push(b);
        drop(ra);
        let pass = lanes.take_pass(LIMITS, false);
        assert_eq!(pass, vec![(1, 0)]);
        assert!(!lanes.jobs.contains_key(&0));
    }
}
